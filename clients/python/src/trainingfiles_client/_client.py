"""The synchronous client: the methods of `BaseClient`, returning their results."""

from __future__ import annotations

from typing import Any

import grpc

from ._base import BaseClient
from ._calls import Prepared, Sync
from ._exceptions import translated
from ._operations import TrainingFileOperation
from ._pagers import Pager

__all__ = ["TrainingFilesClient"]


class TrainingFilesClient(BaseClient[Sync]):
    """A client of the Training File Service, for synchronous code.

    Target, token and TLS come from the arguments, else from ``TRAININGFILES_TARGET``,
    ``TRAININGFILES_TOKEN`` and ``TRAININGFILES_TLS``, else the defaults (see
    `AsyncTrainingFilesClient` for the same client in asyncio code). Every method takes
    the request's fields or ``request=``, and per call ``timeout``, ``metadata`` and
    ``retry``; every failure raises a `TrainingFilesError` subclass.

    Example:
        >>> from trainingfiles_client import TrainingFilesClient
        >>> with TrainingFilesClient("127.0.0.1:50051", token=token) as client:
        ...     training_file = client.get_training_file(file_id)
    """

    asynchronous = False
    _grpc = grpc

    def close(self) -> None:
        """Close the channels; running calls are cancelled. ``with`` does it for you.

        Example:
            >>> client = TrainingFilesClient()
            >>> try:
            ...     client.get_training_file(file_id)
            ... finally:
            ...     client.close()
        """
        for channel in self._channels.values():
            channel.close()

    def __enter__(self) -> TrainingFilesClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _unary(self, call: Prepared) -> Any:
        with translated():
            return call.send()

    def _paged(self, call: Prepared) -> Pager[Any, Any]:
        return Pager(lambda token: self._unary(call.page(token)), call.items, call.start)

    def _stream(self, call: Prepared) -> TrainingFileOperation:
        with translated():
            return TrainingFileOperation(call.send())
