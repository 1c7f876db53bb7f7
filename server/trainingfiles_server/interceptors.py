"""The one place where domain errors become gRPC statuses, and where calls are logged.

Every unary-unary and unary-stream handler, and every bidirectional one written as an
async generator (reflection), is wrapped so that:

* a `ServiceError` aborts the call with its code, message and typed `google.rpc` details
  (sent as `grpc-status-details-bin`, readable with `grpc_status.rpc_status.from_call`);
* any other exception is logged with its traceback and answered `INTERNAL` with a generic
  message: never `UNKNOWN`, never a stack trace to the caller;
* a request whose bytes do not parse as the method's message (corrupt wire format, a
  string that is not UTF-8) is answered `INVALID_ARGUMENT` before anything else runs,
  authentication included, instead of grpc's own `UNKNOWN`;
* exactly one structured log line records method, status code and duration, and the
  call's metrics (`metrics.py`) count it;
* the call runs in its span when tracing is on (`tracing.py`), continuing the trace of
  the caller's `traceparent` metadata; its log lines carry the trace and span ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import status_pb2
from grpc_status import rpc_status

from . import metrics, tracing
from .auth import Authenticator, current_caller
from .errors import InvalidArgument, ServiceError

log = logging.getLogger("trainingfiles.rpc")

_Handler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Any]


# The status travels in the trailers, base64-encoded in `grpc-status-details-bin` beside
# `grpc-message`; C-core clients (Python, C++, Ruby, PHP, ...) refuse trailers above 8 KiB
# by default and then see RESOURCE_EXHAUSTED with no details at all. These budgets keep
# the whole trailer under 8 KiB: ~5.5 KiB of base64 and 1.5 KiB of percent-encoded text.
DETAILS_BUDGET = 4096
MESSAGE_BUDGET = 1500


def to_rpc_status(error: ServiceError) -> status_pb2.Status:
    """The `google.rpc.Status` for a domain error, details packed as `Any`.

    When the violations do not all fit `DETAILS_BUDGET`, the first ones that do are
    listed (found by bisection) and the message and ErrorInfo say how many there are.
    """
    status = _status(error)
    total = len(error.violations)
    if status.ByteSize() > DETAILS_BUDGET and total:
        low, high = 0, total - 1  # the largest count that fits lies in [low, high]
        while low < high:
            error.listed = (low + high + 1) // 2
            if _status(error).ByteSize() <= DETAILS_BUDGET:
                low = error.listed
            else:
                high = error.listed - 1
        error.listed = low
        note = (
            f" (the details list the first {low} of {total} problems; "
            "ValidateConversations returns every one)"
        )
        status = _status(error, note)
    return status


def _status(error: ServiceError, note: str = "") -> status_pb2.Status:
    details = []
    for detail in error.details():
        packed = any_pb2.Any()
        packed.Pack(detail)
        details.append(packed)
    message = error.message
    if _encoded_size(message + note) > MESSAGE_BUDGET:
        # The details hold the full story; the message is cut where the budget ends.
        while _encoded_size(message + "…" + note) > MESSAGE_BUDGET:
            message = message[: len(message) * 9 // 10]
        message += "…"
    return status_pb2.Status(code=error.code, message=message + note, details=details)


def _encoded_size(text: str) -> int:
    """The size of `text` in `grpc-message`: bytes outside printable ASCII and `%` take 3."""
    return sum(3 if b < 0x20 or b > 0x7E or b == 0x25 else 1 for b in text.encode())


async def _abort(context: grpc.aio.ServicerContext[Any, Any], error: ServiceError) -> NoReturn:
    await context.abort_with_status(rpc_status.to_status(to_rpc_status(error)))
    raise AssertionError("abort_with_status returned")  # pragma: no cover


class _Call:
    """Bookkeeping for one call: the code it ends with, its log line and its metrics."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.code = grpc.StatusCode.OK
        self.labels = metrics.split_method(method)
        metrics.CALLS_IN_FLIGHT.labels(*self.labels).inc()
        self.started = time.perf_counter()

    async def fail(self, context: grpc.aio.ServicerContext[Any, Any], exc: Exception) -> NoReturn:
        if isinstance(exc, grpc.aio.AbortError):
            self.code = context.code() or grpc.StatusCode.UNKNOWN
            raise exc
        if isinstance(exc, ServiceError) and type(exc) is not ServiceError:
            error = exc
        else:
            log.error(
                "unhandled error",
                exc_info=exc,
                extra={"fields": {"method": self.method}},
            )
            error = ServiceError("internal error; it has been logged")
        self.code = _STATUS_CODES[error.code]
        await _abort(context, error)

    def finish(self, span: Any = None) -> None:
        seconds = time.perf_counter() - self.started
        fields = {
            "method": self.method,
            "code": self.code.name,
            "duration_ms": round(seconds * 1000, 2),
        }
        log.info("rpc", extra={"fields": fields})
        metrics.CALLS_IN_FLIGHT.labels(*self.labels).dec()
        metrics.CALLS_HANDLED.labels(*self.labels, self.code.name).inc()
        metrics.CALL_SECONDS.labels(*self.labels).observe(seconds)
        tracing.end_call_span(span, self.code.name, self.code.value[0])


_STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}


class _Unparsable:
    """Stands in for a request whose bytes are not a valid message of the method."""

    def __init__(self, message_type: str) -> None:
        self.message_type = message_type

    def error(self) -> InvalidArgument:
        return InvalidArgument(
            f"the request is not a valid {self.message_type} message "
            "(corrupt protobuf encoding, or a string field that is not UTF-8)",
            reason="MALFORMED_REQUEST",
        )


def _lenient(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """A request deserializer that returns `_Unparsable` instead of raising.

    grpc answers a deserializer's exception with `UNKNOWN` (and the exception's text);
    this way the wrapped handler answers `INVALID_ARGUMENT` through the usual path.
    """
    if deserializer is None:
        return None
    descriptor = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    message_type = getattr(descriptor, "full_name", "request")

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:
            return _Unparsable(message_type)

    return deserialize


def _wrap_unary(method: str, inner: _Handler) -> _Handler:
    async def behavior(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        call = _Call(method)
        with tracing.call_span(method, context.invocation_metadata()) as span:
            try:
                if isinstance(request, _Unparsable):
                    raise request.error()
                result = inner(request, context)
                return await result if inspect.isawaitable(result) else result
            except asyncio.CancelledError:
                call.code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:
                await call.fail(context, exc)
            finally:
                call.finish(span)

    return behavior


def _wrap_stream(method: str, inner: _Handler) -> _Handler:
    if not inspect.isasyncgenfunction(inner):
        # Handlers that write with `context.write` (the health service's Watch).
        return _wrap_unary(method, inner)

    async def behavior(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        def opened() -> AsyncGenerator[Any, None]:
            if isinstance(request, _Unparsable):
                raise request.error()
            return inner(request, context)  # type: ignore[no-any-return]

        async with contextlib.aclosing(_served(method, context, opened)) as messages:
            async for message in messages:
                yield message

    return behavior


def _wrap_bidi(method: str, inner: _Handler) -> _Handler | None:
    """A bidirectional-streaming handler (reflection) under the same rules, or None."""
    if not inspect.isasyncgenfunction(inner):
        return None

    async def behavior(
        requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        async def checked() -> AsyncIterator[Any]:
            async for request in requests:
                if isinstance(request, _Unparsable):
                    raise request.error()
                yield request

        served = _served(method, context, lambda: inner(checked(), context))
        async with contextlib.aclosing(served):
            async for message in served:
                yield message

    return behavior


async def _served(
    method: str,
    context: grpc.aio.ServicerContext[Any, Any],
    opened: Callable[[], AsyncGenerator[Any, None]],
) -> AsyncGenerator[Any, None]:
    """A streaming call's messages under the rules of every call: one span, errors
    mapped to their status (`_Call.fail`), cancellation recorded, the call logged and
    counted once it ends."""
    call = _Call(method)
    with tracing.call_span(method, context.invocation_metadata()) as span:
        try:
            async with contextlib.aclosing(opened()) as messages:
                async for message in messages:
                    yield message
        except (asyncio.CancelledError, GeneratorExit):
            # GeneratorExit: the call ended while a message was being sent.
            call.code = grpc.StatusCode.CANCELLED
            raise
        except Exception as exc:
            await call.fail(context, exc)
        finally:
            call.finish(span)


class ServiceInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Error mapping and call logging for every unary, server-streaming and (async
    generator) bidirectional-streaming method."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(method, handler.unary_unary),
                request_deserializer=_lenient(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(method, handler.unary_stream),
                request_deserializer=_lenient(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            bidi = _wrap_bidi(method, handler.stream_stream)
            if bidi is not None:
                return grpc.stream_stream_rpc_method_handler(
                    bidi,
                    request_deserializer=_lenient(handler.request_deserializer),
                    response_serializer=handler.response_serializer,
                )
        return handler


SERVICE_PREFIX = "/trainingfiles.v1.TrainingFileService/"


def _with_caller(authenticator: Authenticator, inner: _Handler) -> _Handler:
    """Authenticate before the handler runs and make the caller its `current_caller`.

    Each call runs in its own task with its own context, so the value never leaks from
    one call to another.
    """
    if inspect.isasyncgenfunction(inner):

        async def stream(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            current_caller.set(await authenticator.authenticate(context.invocation_metadata()))
            async with contextlib.aclosing(inner(request, context)) as messages:
                async for message in messages:
                    yield message

        return stream

    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        current_caller.set(await authenticator.authenticate(context.invocation_metadata()))
        return await inner(request, context)

    return unary


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Bearer-token authentication for every TrainingFileService call.

    Health and reflection stay open. Installed inside `ServiceInterceptor`, so its
    `Unauthenticated` / `PermissionDenied` errors become statuses in the one usual place.
    """

    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or not handler_call_details.method.startswith(SERVICE_PREFIX):
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _with_caller(self._authenticator, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _with_caller(self._authenticator, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
