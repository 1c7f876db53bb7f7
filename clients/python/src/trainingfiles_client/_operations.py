"""Operations: the handle a streaming call (Create, Add, Remove, Refresh, Export)
returns.

The server streams progress events and ends the stream with the finished training file
in its last event. An operation is that stream seen from the caller's side: iterate it
for the events, call `result()` for the file (it reads whatever events are left), or
`cancel()` it, which cancels the call on the server (a Create's file then ends FAILED;
an Add, a Remove, a Refresh or an Export changes nothing). Events are read once: an
event consumed by `result()` is not seen by a later iteration.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc

from trainingfiles.v1 import resources_pb2, service_pb2

from ._exceptions import Cancelled, Internal, TrainingFilesError, from_rpc_error

__all__ = ["AsyncTrainingFileOperation", "TrainingFileOperation"]

Progress = service_pb2.TrainingFileProgress
TrainingFile = resources_pb2.TrainingFile


class _State:
    """What both kinds of operation remember about their stream."""

    def __init__(self) -> None:
        self.training_file_id: str | None = None
        self.training_file: TrainingFile | None = None
        self.error: TrainingFilesError | None = None
        self.finished = False
        self.cancel_requested = False

    def observe(self, event: Progress) -> None:
        if event.training_file_id:
            self.training_file_id = event.training_file_id
        if event.HasField("training_file"):
            self.training_file = event.training_file

    def fail(self, error: TrainingFilesError) -> TrainingFilesError:
        self.finished = True
        self.error = error
        return error

    def cancelled(self) -> Cancelled:
        return Cancelled("the call was cancelled by the client")

    def failed(self, error: grpc.RpcError) -> TrainingFilesError:
        """The call ended with `error`: Cancelled if we cancelled it, else its own."""
        return self.fail(self.cancelled() if self.cancel_requested else from_rpc_error(error))

    def end(self) -> None:
        """The stream ended with OK: it must have carried the finished file."""
        self.finished = True
        if self.training_file is None:
            self.error = Internal("the stream ended without the finished training file")
            raise self.error

    def outcome(self) -> TrainingFile:
        if self.error is not None:
            raise self.error
        assert self.training_file is not None
        return self.training_file


class _Operation:
    """What both kinds of operation share: the call, its state, and cancelling it."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self._state = _State()

    @property
    def training_file_id(self) -> str | None:
        """The id of the file being built, from the first event on; None before it."""
        return self._state.training_file_id

    def done(self) -> bool:
        """Whether the stream has ended (successfully or not).

        Example:
            >>> operation.done()
            False
        """
        return self._state.finished

    def cancel(self) -> bool:
        """Cancel the call on the server; False if the stream had already ended.

        `result()` then raises `Cancelled`.

        Example:
            >>> operation = client.create_training_file("big", ids)
            >>> first = next(operation)  # or, on the asyncio client: await anext(operation)
            >>> operation.cancel()
            True
        """
        if self._state.finished:
            return False
        # Set first: the reader may see the cancellation before cancel() returns.
        self._state.cancel_requested = True
        cancelled: bool = self._call.cancel()
        if not cancelled:  # it had already ended; its own outcome stands
            self._state.cancel_requested = False
        return cancelled

    def __repr__(self) -> str:
        return f"<{type(self).__name__} training_file_id={self.training_file_id!r}>"


class TrainingFileOperation(_Operation):
    """A running CreateTrainingFile, AddConversations, RemoveConversations,
    RefreshTrainingFile or ExportTrainingFile call (sync client).

    Example:
        >>> operation = client.create_training_file("advisors-q3", conversation_ids)
        >>> for event in operation:
        ...     print(event.stage, event.done, event.total, list(event.warnings))
        >>> training_file = operation.result()

    As a context manager it cancels the call if the block exits before the stream ended
    (an exception, Ctrl-C).
    """

    def __iter__(self) -> Iterator[Progress]:
        return self

    def __next__(self) -> Progress:
        state = self._state
        if state.finished:
            raise StopIteration
        try:
            event: Progress = next(self._call)
        except StopIteration:
            state.end()
            raise
        except grpc.RpcError as error:
            raise state.failed(error) from error
        state.observe(event)
        return event

    def result(self) -> TrainingFile:
        """Wait for the end of the stream and return the finished training file.

        Raises the call's error (e.g. `FailedPrecondition`, `Cancelled`) if it failed.

        Example:
            >>> training_file = client.add_conversations(file_id, more_ids).result()
            >>> training_file.version
            2
        """
        for _ in self:
            pass
        return self._state.outcome()

    def __enter__(self) -> TrainingFileOperation:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._state.finished:
            self.cancel()


class AsyncTrainingFileOperation(_Operation):
    """A running CreateTrainingFile, AddConversations, RemoveConversations,
    RefreshTrainingFile or ExportTrainingFile call (asyncio).

    Example:
        >>> operation = client.create_training_file("advisors-q3", conversation_ids)
        >>> async for event in operation:
        ...     print(event.stage, event.done, event.total)
        >>> training_file = await operation.result()

    Cancelling the task that awaits it cancels the call on the server too; so does
    leaving an ``async with`` block before the stream ended.
    """

    def __aiter__(self) -> AsyncIterator[Progress]:
        return self

    async def __anext__(self) -> Progress:
        state = self._state
        if state.finished:
            raise StopAsyncIteration
        try:
            event = await self._call.read()
        except asyncio.CancelledError:
            # grpc.aio raises CancelledError from read() once the call is cancelled;
            # only a cancel() of ours becomes Cancelled, a cancelled task stays cancelled.
            if state.cancel_requested:
                raise state.fail(state.cancelled()) from None
            raise
        except grpc.RpcError as error:
            raise state.failed(error) from error
        if event is grpc.aio.EOF:
            state.end()
            raise StopAsyncIteration
        state.observe(event)
        progress: Progress = event
        return progress

    async def result(self) -> TrainingFile:
        """Wait for the end of the stream and return the finished training file.

        Raises the call's error (e.g. `FailedPrecondition`, `Cancelled`) if it failed.

        Example:
            >>> training_file = await client.add_conversations(file_id, more_ids).result()
        """
        async for _ in self:
            pass
        return self._state.outcome()

    async def __aenter__(self) -> AsyncTrainingFileOperation:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if not self._state.finished:
            self.cancel()
