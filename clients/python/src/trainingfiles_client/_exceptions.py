"""The client's errors: one class per gRPC status code, with the parsed `google.rpc` details.

::

    TrainingFilesError                base: .code, .message, .reason, .details, .violations
    ├── Cancelled                     CANCELLED (also after Operation.cancel())
    ├── Unknown                       UNKNOWN (the server promises never to send it)
    ├── InvalidArgument               INVALID_ARGUMENT    + BadRequest field violations
    ├── DeadlineExceeded              DEADLINE_EXCEEDED
    ├── NotFound                      NOT_FOUND           + ResourceInfo
    ├── AlreadyExists                 ALREADY_EXISTS      + ResourceInfo
    ├── PermissionDenied              PERMISSION_DENIED
    ├── ResourceExhausted             RESOURCE_EXHAUSTED  + QuotaFailure violations
    ├── FailedPrecondition            FAILED_PRECONDITION + PreconditionFailure violations
    ├── Aborted                       ABORTED
    ├── OutOfRange                    OUT_OF_RANGE
    ├── Unimplemented                 UNIMPLEMENTED
    ├── Internal                      INTERNAL (also: the server broke the protocol)
    ├── Unavailable                   UNAVAILABLE (reads were already retried)
    ├── DataLoss                      DATA_LOSS
    └── Unauthenticated               UNAUTHENTICATED

`from_rpc_error` is the one place where a `grpc.RpcError` becomes one of these; every
call of the clients goes through `translated()`, so no bare `grpc.RpcError` reaches a
caller. The details come from the `grpc-status-details-bin` trailer (a serialized
`google.rpc.Status`), parsed here rather than with `grpcio-status` so that the client
needs nothing beyond grpcio, protobuf and googleapis-common-protos.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2

_DETAILS_KEY = "grpc-status-details-bin"

# The `google.rpc` detail types the client unpacks; others stay packed in `details`.
_DETAIL_TYPES: tuple[type[Message], ...] = (
    error_details_pb2.ErrorInfo,
    error_details_pb2.BadRequest,
    error_details_pb2.PreconditionFailure,
    error_details_pb2.QuotaFailure,
    error_details_pb2.ResourceInfo,
    error_details_pb2.RetryInfo,
    error_details_pb2.DebugInfo,
    error_details_pb2.Help,
    error_details_pb2.LocalizedMessage,
    error_details_pb2.RequestInfo,
)

D = TypeVar("D", bound=Message)


@dataclass(frozen=True, slots=True)
class Violation:
    """One offending input, from a BadRequest, PreconditionFailure or QuotaFailure detail.

    `subject` names it: a request field path such as ``conversation_ids[3]`` for a
    BadRequest, a conversation or training file id for a PreconditionFailure. `reason` is
    the machine-readable kind (``MALFORMED_ID``, ``CONVERSATION_NOT_ENRICHED``, ...).
    """

    subject: str
    reason: str
    description: str


class TrainingFilesError(Exception):
    """Base of every error the client raises; the subclass says which status code ended
    the call.

    Example:
        >>> try:
        ...     client.get_training_file(file_id)
        ... except trainingfiles_client.NotFound as error:
        ...     print(error.code, error.reason, error.resource_name)
    """

    status_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        details: Iterable[Message] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code: grpc.StatusCode = code if code is not None else self.status_code
        self.details: tuple[Message, ...] = tuple(details)
        info = self.detail(error_details_pb2.ErrorInfo)
        self.error_info: error_details_pb2.ErrorInfo | None = info
        # The stable, machine-readable cause (`ErrorInfo.reason`); "" when none was sent.
        self.reason: str = info.reason if info is not None else ""
        self.domain: str = info.domain if info is not None else ""
        self.violations: tuple[Violation, ...] = tuple(_violations(self.details, self.reason))
        # How many violations there are in all: more than `violations` holds when the
        # server listed only the first ones (to fit gRPC's metadata limits); then
        # `validate_conversations` returns every one.
        total = info.metadata.get("violations_total", "") if info is not None else ""
        self.violations_total: int = int(total) if total.isdigit() else len(self.violations)
        resource = self.detail(error_details_pb2.ResourceInfo)
        self.resource_type: str = resource.resource_type if resource is not None else ""
        self.resource_name: str = resource.resource_name if resource is not None else ""

    @property
    def violations_cut(self) -> bool:
        """True when the details list only the first of `violations_total` violations."""
        return self.violations_total > len(self.violations)

    def detail(self, kind: type[D]) -> D | None:
        """The first detail of type `kind`, if any: the raw `google.rpc` message.

        Example:
            >>> from google.rpc import error_details_pb2
            >>> bad_request = error.detail(error_details_pb2.BadRequest)
            >>> [v.field for v in bad_request.field_violations]
            ['conversation_ids[0]']
        """
        for detail in self.details:
            if isinstance(detail, kind):
                return detail
        return None

    def __str__(self) -> str:
        name = self.code.name if hasattr(self.code, "name") else str(self.code)
        return f"{name}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, reason={self.reason!r})"


class Cancelled(TrainingFilesError):
    """The call was cancelled, by the caller (`Operation.cancel()`) or the server."""

    status_code = grpc.StatusCode.CANCELLED


class Unknown(TrainingFilesError):
    """UNKNOWN: the server promises never to send it; seen only from other peers."""

    status_code = grpc.StatusCode.UNKNOWN


class InvalidArgument(TrainingFilesError):
    """The request is malformed; `violations` has one entry per bad field or id."""

    status_code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(TrainingFilesError):
    """The call's `timeout` passed before it finished."""

    status_code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(TrainingFilesError):
    """No such training file (or one the caller may not see), or no such version of it
    (`reason` ``VERSION_NOT_FOUND``): see `resource_name`."""

    status_code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(TrainingFilesError):
    """A training file that has not failed already has this name: see `resource_name`."""

    status_code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(TrainingFilesError):
    """The token is valid but its role may not do this."""

    status_code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(TrainingFilesError):
    """A limit would be exceeded (ids per request, bytes per object): see `violations`."""

    status_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(TrainingFilesError):
    """Conversations or the file are not in a usable state (an output the version lacks,
    ``OUTPUT_NOT_PRODUCED``; a pruned version, ``VERSION_PRUNED``); `violations` lists
    each one."""

    status_code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(TrainingFilesError):
    status_code = grpc.StatusCode.ABORTED


class OutOfRange(TrainingFilesError):
    status_code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(TrainingFilesError):
    """The server does not offer this rpc (an older server version)."""

    status_code = grpc.StatusCode.UNIMPLEMENTED


class Internal(TrainingFilesError):
    """A server fault, or a server that broke the protocol (a stream without its file)."""

    status_code = grpc.StatusCode.INTERNAL


class Unavailable(TrainingFilesError):
    """The server, or its database or storage, cannot be reached. Idempotent reads have
    already been retried with backoff when this is raised."""

    status_code = grpc.StatusCode.UNAVAILABLE


class DataLoss(TrainingFilesError):
    status_code = grpc.StatusCode.DATA_LOSS


class Unauthenticated(TrainingFilesError):
    """The token is missing, malformed, expired or wrongly signed."""

    status_code = grpc.StatusCode.UNAUTHENTICATED


_BY_CODE: dict[Any, type[TrainingFilesError]] = {
    cls.status_code: cls
    for cls in (
        Cancelled,
        Unknown,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        OutOfRange,
        Unimplemented,
        Internal,
        Unavailable,
        DataLoss,
        Unauthenticated,
    )
}


def error_class(code: grpc.StatusCode) -> type[TrainingFilesError]:
    """The class for a status code; the base class for a code this client does not know."""
    return _BY_CODE.get(code, TrainingFilesError)


def from_rpc_error(error: grpc.RpcError) -> TrainingFilesError:
    """The one translation of a `grpc.RpcError` (sync or asyncio) into the client's tree."""
    code = _call(error, "code") or grpc.StatusCode.UNKNOWN
    message = _call(error, "details") or ""
    details: list[Message] = []
    status = _rich_status(_call(error, "trailing_metadata") or ())
    if status is not None:
        details = [_unpack(packed) for packed in status.details]
        # The rich status is authoritative, but only if it agrees with the call's status.
        if status.message and status.code == code.value[0]:
            message = status.message
    return error_class(code)(message, code=code, details=details)


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Raise any `grpc.RpcError` of the block as the client's error (cause kept)."""
    try:
        yield
    except grpc.RpcError as error:
        raise from_rpc_error(error) from error


def _call(error: grpc.RpcError, method: str) -> Any:
    """`error.<method>()`, or None: an RpcError need not be a Call (e.g. a bare one)."""
    function = getattr(error, method, None)
    return function() if callable(function) else None


def _rich_status(metadata: Iterable[Any]) -> status_pb2.Status | None:
    for key, value in metadata:
        if key == _DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except DecodeError:
                return None
    return None


def _unpack(packed: any_pb2.Any) -> Message:
    for kind in _DETAIL_TYPES:
        if packed.TypeName() == kind.DESCRIPTOR.full_name:
            message = kind()
            packed.Unpack(message)
            return message
    return packed


def _violations(details: Iterable[Message], default_reason: str) -> Iterator[Violation]:
    """Every violation in order; a quota violation without `quota_id` takes the error's."""
    for detail in details:
        if isinstance(detail, error_details_pb2.BadRequest):
            for field in detail.field_violations:
                yield Violation(field.field, field.reason, field.description)
        elif isinstance(detail, error_details_pb2.PreconditionFailure):
            for condition in detail.violations:
                yield Violation(condition.subject, condition.type, condition.description)
        elif isinstance(detail, error_details_pb2.QuotaFailure):
            for quota in detail.violations:
                yield Violation(quota.subject, quota.quota_id or default_reason, quota.description)
