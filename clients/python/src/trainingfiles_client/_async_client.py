"""The asyncio client: the methods of `BaseClient`, the unary ones awaited."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from ._base import BaseClient
from ._calls import Async, Prepared
from ._exceptions import translated
from ._operations import AsyncTrainingFileOperation
from ._pagers import AsyncPager

__all__ = ["AsyncTrainingFilesClient"]


class AsyncTrainingFilesClient(BaseClient[Async]):
    """A client of the Training File Service, for asyncio code.

    The same methods as `TrainingFilesClient`: unary ones are awaited, list calls return
    pagers for ``async for``, streaming calls return an operation to ``async for`` over
    and ``await .result()``.

    Example:
        >>> from trainingfiles_client import AsyncTrainingFilesClient
        >>> async with AsyncTrainingFilesClient("127.0.0.1:50051", token=token) as client:
        ...     training_file = await client.get_training_file(file_id)

    Create it inside a running event loop: its channels belong to that loop.
    """

    asynchronous = True
    _grpc = grpc.aio

    async def close(self, grace: float | None = None) -> None:
        """Close the channels; running calls get `grace` seconds, then are cancelled.

        Example:
            >>> client = AsyncTrainingFilesClient()
            >>> try:
            ...     await client.get_training_file(file_id)
            ... finally:
            ...     await client.close(grace=5)
        """
        channels = list(self._channels.values())
        await asyncio.gather(*(channel.close(grace) for channel in channels))

    async def __aenter__(self) -> AsyncTrainingFilesClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _unary(self, call: Prepared) -> Any:
        with translated():
            return await call.send()

    def _paged(self, call: Prepared) -> AsyncPager[Any, Any]:
        return AsyncPager(lambda token: self._unary(call.page(token)), call.items, call.start)

    def _stream(self, call: Prepared) -> AsyncTrainingFileOperation:
        with translated():
            return AsyncTrainingFileOperation(call.send())
