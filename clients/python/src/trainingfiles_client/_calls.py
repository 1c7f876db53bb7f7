"""How one method, written once on `BaseClient`, becomes a method of both clients.

A method of the base is a *builder*: it carries the public signature and the docstring,
checks and converts its arguments, and returns a `Call` (the request, or its fields, and
the per-call options). `rpc` turns it into a method of each client: it finds the rpc by
the method's name (``get_download_url`` is ``GetDownloadUrl``), resolves the call
against the table of defaults, and hands it to the client's face, which sends it the
only way that differs: awaited or not.

For the type checker, `Call`'s two parameters say what the call returns on each face:
`Unary` (the response, or an awaitable of it), `Listed` (a `Pager` or an `AsyncPager`),
`Streamed` (an operation of either kind).

A method that is more than one rpc (`download_outputs`) is written once too, as a
generator decorated with `helper`: each ``yield`` hands the face a call of the client's
own methods (a result on the synchronous face, an awaitable on the asyncio one) or a
`Blocking` step (HTTP, files: run as is, or in a worker thread), and gets its outcome
back. The faces only drive it (`_drive`, `_adrive`).
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import inspect
import types
from collections.abc import Callable, Coroutine, Generator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import (
    Any,
    Concatenate,
    Final,
    Generic,
    ParamSpec,
    TypeAlias,
    TypedDict,
    TypeVar,
    overload,
)

from google.protobuf import duration_pb2
from google.protobuf.message import Message

from ._methods import METHODS, Kind, Method, Retry, repeated
from ._operations import AsyncTrainingFileOperation, TrainingFileOperation
from ._outputs import CONVERTERS
from ._pagers import AsyncPager, Pager

P = ParamSpec("P")
R = TypeVar("R")
SyncT = TypeVar("SyncT")
AsyncT = TypeVar("AsyncT")
ResponseT = TypeVar("ResponseT")
ItemT = TypeVar("ItemT")
RequestT = TypeVar("RequestT", bound=Message)

FaceT = TypeVar("FaceT")

Metadata: TypeAlias = Sequence[tuple[str, str | bytes]]


class Sync:
    """The face whose methods return their results."""


class Async:
    """The face whose unary methods return awaitables."""


class Faced(Generic[FaceT]):
    """A client with a face, `Sync` or `Async`: what its `rpc` methods return."""


class CallOptions(TypedDict, Generic[RequestT], total=False):
    """The keyword arguments every method takes besides the request's fields.

    Declared once here; each method's public signature shows them as keyword-only
    parameters, with that method's defaults. `request` is the whole request instead of
    the fields. Left out, an option takes the method's row of the table (`_methods`);
    given, it overrides it for this call.
    """

    request: RequestT | Mapping[str, Any] | None  # the message, or a dict of its fields
    timeout: float | None  # seconds for the call (each page's, for a list); None: no deadline
    metadata: Metadata | None  # extra metadata; an `authorization` entry replaces the token
    retry: Retry | None  # the channel's retry policy for this call; None: no retries


class Call(Generic[SyncT, AsyncT]):
    """What a builder asks for: a request (or its fields) and the per-call options."""

    __slots__ = ("fields", "options", "request")

    def __init__(self, options: CallOptions[Any], fields: Mapping[str, Any]) -> None:
        self.request = options.get("request")
        self.options, self.fields = options, fields

    @classmethod
    def of(cls, arguments: Mapping[str, Any]) -> Call[SyncT, AsyncT]:
        """The call a builder was asked for, from its arguments (its ``locals()``): the
        request's fields by name, and the keyword ``options``."""
        fields = {k: v for k, v in arguments.items() if k not in ("self", "options")}
        return cls(arguments["options"], fields)


Unary: TypeAlias = Call[R, Coroutine[Any, Any, R]]
Listed: TypeAlias = Call[Pager[ResponseT, ItemT], AsyncPager[ResponseT, ItemT]]
Streamed: TypeAlias = Call[TrainingFileOperation, AsyncTrainingFileOperation]


@dataclass(frozen=True, slots=True)
class Prepared:
    """A call ready to send: the message, the deadline, the metadata and the stub to use."""

    method: Method
    request: Message
    timeout: float | None
    metadata: list[tuple[str, str | bytes]]
    send_with: Any  # the channel's multi-callable for this method

    def send(self) -> Any:
        """Start the call: the response (or the awaitable, or the stream) of the channel."""
        return self.send_with(self.request, timeout=self.timeout, metadata=self.metadata)

    def page(self, token: str) -> Prepared:
        """The same call for the page after `token`."""
        request = type(self.request)()
        request.CopyFrom(self.request)
        request.page_token = token  # type: ignore[attr-defined]
        return replace(self, request=request)

    @property
    def start(self) -> str:
        """The first page's token: the request's own, if it came with one."""
        token: str = getattr(self.request, "page_token", "")
        return token

    def items(self, page: Message) -> Sequence[Any]:
        items: Sequence[Any] = getattr(page, self.method.items)
        return items


def options(method: Method, call: Call[Any, Any]) -> tuple[float | None, Metadata, Any]:
    """The call's timeout, metadata and retry policy: its own, else the method's."""
    unknown = sorted(set(call.options) - set(CallOptions.__annotations__))
    if unknown:
        raise TypeError(f"{method.name}: unexpected keyword argument {unknown[0]!r}")
    given = call.options
    timeout = given.get("timeout", method.timeout)
    return timeout, given.get("metadata") or (), given.get("retry", method.retry)


def request(method: Method, call: Call[Any, Any]) -> Message:
    """The request message: `request` (copied, or built from a dict) or the fields given.

    As in every generated Google client, a call takes either `request` or the flattened
    fields, never both; a field left None is not set. Values are checked and converted
    by the field they fill, from the descriptor (see `_value`).
    """
    given = {name: value for name, value in call.fields.items() if value is not None}
    if call.request is not None and given:
        raise ValueError(
            f"{method.name}: pass either request or the fields ({', '.join(given)}), not both"
        )
    if isinstance(call.request, method.request):
        message = method.request()
        message.CopyFrom(call.request)
        return message
    if call.request is not None and not isinstance(call.request, Mapping):
        raise TypeError(
            f"{method.name}: request must be a {method.request.__name__} or a dict, "
            f"not {type(call.request).__name__}"
        )
    fields = method.request.DESCRIPTOR.fields_by_name
    values = given if call.request is None else call.request
    return method.request(
        **{name: _value(fields.get(name), name, value) for name, value in values.items()}
    )


def _value(field: Any, name: str, value: Any) -> Any:
    """A field's value as the message takes it: a list for a repeated field (never a lone
    string, which would be a list of characters), a Duration from seconds or a timedelta,
    a format or split from its name, a SplitOptions message from `SplitOptions`, a
    ConversationSelector from `Selector`."""
    if field is None:
        return value  # the message's constructor names the unknown field
    kind = field.enum_type or field.message_type
    convert = CONVERTERS.get(kind.full_name) if kind is not None else None
    if repeated(field):
        if isinstance(value, str | bytes):
            raise TypeError(f"{name} must be a list, not a single string")
        return [convert(item) for item in value] if convert else list(value)
    if convert is not None:
        return convert(value)
    if field.message_type is _DURATION and isinstance(value, int | float | datetime.timedelta):
        duration = duration_pb2.Duration()
        if isinstance(value, datetime.timedelta):
            duration.FromTimedelta(value)
        else:
            duration.FromNanoseconds(round(value * 1e9))
        return duration
    return value


_DURATION: Final = duration_pb2.Duration.DESCRIPTOR


def rpc_name(python_name: str) -> str:
    """The rpc a method calls: ``get_download_url`` calls ``GetDownloadUrl``."""
    return "".join(word.capitalize() for word in python_name.split("_"))


class rpc(Generic[P, SyncT, AsyncT]):
    """Decorate a builder of `BaseClient` to make it a method of both clients."""

    def __init__(self, build: Callable[Concatenate[Any, P], Call[SyncT, AsyncT]]) -> None:
        self.method = method = METHODS[rpc_name(build.__name__)]
        self._faces: dict[bool, Callable[..., Any]] = {}
        for asynchronous in (False, True):
            make = _awaiting if asynchronous and method.kind is Kind.UNARY else _blocking
            face = functools.update_wrapper(make(method, build), build)
            face.__signature__ = _signature(method, build, asynchronous)  # type: ignore[attr-defined]
            self._faces[asynchronous] = face

    @overload
    def __get__(self, client: None, owner: type[Any]) -> Callable[..., Any]: ...
    @overload
    def __get__(self, client: Faced[Sync], owner: type[Any]) -> Callable[P, SyncT]: ...
    @overload
    def __get__(self, client: Faced[Async], owner: type[Any]) -> Callable[P, AsyncT]: ...
    def __get__(self, client: Any, owner: type[Any]) -> Any:
        face = self._faces[owner.asynchronous]
        return face if client is None else types.MethodType(face, client)


def _blocking(method: Method, build: Callable[..., Call[Any, Any]]) -> Callable[..., Any]:
    def face(client: Any, *args: Any, **kwargs: Any) -> Any:
        return client._invoke(method, build(client, *args, **kwargs))

    return face


def _awaiting(method: Method, build: Callable[..., Call[Any, Any]]) -> Callable[..., Any]:
    async def face(client: Any, *args: Any, **kwargs: Any) -> Any:
        return await client._invoke(method, build(client, *args, **kwargs))

    return face


def _text(annotation: Any) -> Any:
    """An annotation as its source text (TypedDict keeps them as forward references)."""
    return getattr(annotation, "__forward_arg__", annotation)


def _signature(method: Method, build: Callable[..., Any], asynchronous: bool) -> inspect.Signature:
    """A face's public signature (`help()`, `inspect`): the builder's, with the options
    spelled out as keyword-only parameters with this method's defaults, and what the
    face returns."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    defaults = {"request": None, "timeout": method.timeout, "metadata": None, "retry": method.retry}
    annotations = {
        **CallOptions.__annotations__,
        "request": f"{method.request.__name__} | dict | None",
    }
    parameters = [
        p for p in inspect.signature(build).parameters.values() if p.kind != p.VAR_KEYWORD
    ]
    parameters += [
        inspect.Parameter(name, keyword, default=default, annotation=_text(annotations[name]))
        for name, default in defaults.items()
    ]
    if method.kind is Kind.PAGED:
        returns: Any = AsyncPager if asynchronous else Pager
    elif method.kind is Kind.STREAMING:
        returns = AsyncTrainingFileOperation if asynchronous else TrainingFileOperation
    else:
        returns = method.response
    return inspect.Signature(parameters, return_annotation=returns)


# ------------------------------------------------------------------ helpers


class Blocking(Generic[R]):
    """A step of a helper that blocks (HTTP, files): run as is on the synchronous face,
    in a worker thread on the asyncio one."""

    __slots__ = ("run",)

    def __init__(self, run: Callable[[], R]) -> None:
        self.run = run


Steps: TypeAlias = Generator[Any, Any, R]
"""A helper's body: yields calls of the client and `Blocking` steps, returns its result."""


class helper(Generic[P, R]):
    """Decorate a generator method of `BaseClient` to make it a method of both clients:
    its result on the synchronous face, a coroutine of it on the asyncio one."""

    def __init__(self, build: Callable[Concatenate[Any, P], Steps[R]]) -> None:
        signature = inspect.signature(build)
        returns = _text(signature.return_annotation)
        if isinstance(returns, str) and returns.startswith("Steps["):
            signature = signature.replace(return_annotation=returns[len("Steps[") : -1])
        self._faces: dict[bool, Callable[..., Any]] = {}
        for asynchronous, drive in ((False, _drive), (True, _adrive)):
            face = functools.update_wrapper(drive(build), build)
            face.__signature__ = signature  # type: ignore[attr-defined]
            self._faces[asynchronous] = face

    @overload
    def __get__(self, client: None, owner: type[Any]) -> Callable[..., Any]: ...
    @overload
    def __get__(self, client: Faced[Sync], owner: type[Any]) -> Callable[P, R]: ...
    @overload
    def __get__(
        self, client: Faced[Async], owner: type[Any]
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...
    def __get__(self, client: Any, owner: type[Any]) -> Any:
        face = self._faces[owner.asynchronous]
        return face if client is None else types.MethodType(face, client)


def _drive(build: Callable[..., Steps[Any]]) -> Callable[..., Any]:
    def face(client: Any, *args: Any, **kwargs: Any) -> Any:
        steps = build(client, *args, **kwargs)
        value: Any = None
        failed = False
        while True:
            try:
                step = steps.throw(value) if failed else steps.send(value)
            except StopIteration as stop:
                return stop.value
            try:
                value, failed = (step.run() if isinstance(step, Blocking) else step), False
            except BaseException as error:  # into the helper, which may clean up
                value, failed = error, True

    return face


def _adrive(build: Callable[..., Steps[Any]]) -> Callable[..., Any]:
    async def face(client: Any, *args: Any, **kwargs: Any) -> Any:
        steps = build(client, *args, **kwargs)
        value: Any = None
        failed = False
        while True:
            try:
                step = steps.throw(value) if failed else steps.send(value)
            except StopIteration as stop:
                return stop.value
            try:
                if isinstance(step, Blocking):
                    value = await asyncio.to_thread(step.run)
                else:
                    value = await step
                failed = False
            except BaseException as error:  # into the helper, which may clean up
                value, failed = error, True

    return face
