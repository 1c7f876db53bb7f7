"""The domain's errors: each class knows its gRPC status code and carries typed details.

::

    ServiceError                      INTERNAL (never shown: the caller gets a generic message)
    ├── InvalidArgument               INVALID_ARGUMENT   + google.rpc.BadRequest
    ├── NotFound                      NOT_FOUND          + google.rpc.ResourceInfo
    ├── AlreadyExists                 ALREADY_EXISTS     + google.rpc.ResourceInfo
    ├── FailedPrecondition            FAILED_PRECONDITION + google.rpc.PreconditionFailure
    ├── ResourceExhausted             RESOURCE_EXHAUSTED + google.rpc.QuotaFailure
    ├── Unauthenticated               UNAUTHENTICATED
    ├── PermissionDenied              PERMISSION_DENIED
    ├── Unavailable                   UNAVAILABLE (database or storage unreachable)
    ├── Aborted                       ABORTED (a build lost its lease; retry)
    ├── DeadlineExceeded              DEADLINE_EXCEEDED
    ├── Cancelled                     CANCELLED
    └── Unimplemented                 UNIMPLEMENTED

The database and storage modules translate their libraries' errors into these; the
interceptor in `interceptors.py` is the one place that turns them into gRPC statuses.
Every error also carries a `google.rpc.ErrorInfo` with a stable machine-readable `reason`.
This module imports no gRPC runtime, only the `google.rpc` message types.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2

ERROR_DOMAIN = "trainingfiles.v1"


@dataclass(frozen=True, slots=True)
class Violation:
    """One offending input: `subject` names it (a field path or a conversation id)."""

    subject: str
    reason: str
    description: str


class ServiceError(Exception):
    """Base of the domain errors. Unexpected failures surface as INTERNAL."""

    code: int = code_pb2.INTERNAL
    default_reason: str = "INTERNAL"
    violations: tuple[Violation, ...] = ()
    # How many of the violations the details list (None: all). The interceptor lowers it
    # so the status fits the metadata limits of gRPC clients; ErrorInfo then says so.
    listed: int | None = None

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason

    @property
    def listed_violations(self) -> tuple[Violation, ...]:
        return self.violations if self.listed is None else self.violations[: self.listed]

    def details(self) -> list[Message]:
        """The typed `google.rpc` details sent with the status, ErrorInfo first."""
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=ERROR_DOMAIN)
        if self.listed is not None and self.listed < len(self.violations):
            info.metadata["violations_total"] = str(len(self.violations))
            info.metadata["violations_listed"] = str(self.listed)
        return [info]


class InvalidArgument(ServiceError):
    """The request itself is malformed: bad field values, malformed or repeated ids."""

    code = code_pb2.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"

    def __init__(
        self, message: str, violations: Sequence[Violation] = (), *, reason: str | None = None
    ) -> None:
        super().__init__(message, reason=reason)
        self.violations = tuple(violations)

    @classmethod
    def field(cls, field: str, description: str, reason: str = "INVALID_FIELD") -> InvalidArgument:
        """An error about one request field."""
        return cls(f"{field}: {description}", [Violation(field, reason, description)])

    def details(self) -> list[Message]:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.subject, description=v.description, reason=v.reason
                )
                for v in self.listed_violations
            ]
        )
        return [*super().details(), bad_request]


class NotFound(ServiceError):
    """The named resource does not exist (or the caller may not know that it does)."""

    code = code_pb2.NOT_FOUND
    default_reason = "NOT_FOUND"

    def __init__(
        self, resource_type: str, resource_name: str, *, reason: str | None = None
    ) -> None:
        super().__init__(f"{resource_type} {resource_name} not found", reason=reason)
        self.resource_type = resource_type
        self.resource_name = resource_name

    def details(self) -> list[Message]:
        info = error_details_pb2.ResourceInfo(
            resource_type=self.resource_type, resource_name=self.resource_name
        )
        return [*super().details(), info]


class AlreadyExists(ServiceError):
    """A resource with this identity already exists (a training file name in use)."""

    code = code_pb2.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"

    def __init__(self, resource_type: str, resource_name: str, message: str) -> None:
        super().__init__(message)
        self.resource_type = resource_type
        self.resource_name = resource_name

    def details(self) -> list[Message]:
        info = error_details_pb2.ResourceInfo(
            resource_type=self.resource_type, resource_name=self.resource_name
        )
        return [*super().details(), info]


class FailedPrecondition(ServiceError):
    """The system is not in a state that allows the operation (ineligible conversations,
    a file that is not active, a document that cannot be used)."""

    code = code_pb2.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"

    def __init__(
        self, message: str, violations: Iterable[Violation] = (), *, reason: str | None = None
    ) -> None:
        super().__init__(message, reason=reason)
        self.violations = tuple(violations)

    def details(self) -> list[Message]:
        failure = error_details_pb2.PreconditionFailure(
            violations=[
                error_details_pb2.PreconditionFailure.Violation(
                    type=v.reason, subject=v.subject, description=v.description
                )
                for v in self.listed_violations
            ]
        )
        return [*super().details(), failure]


class ResourceExhausted(ServiceError):
    """A configured limit would be exceeded (ids per request, bytes per object)."""

    code = code_pb2.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, subject: str, *, reason: str | None = None) -> None:
        super().__init__(message, reason=reason)
        self.subject = subject

    def details(self) -> list[Message]:
        quota = error_details_pb2.QuotaFailure(
            violations=[
                error_details_pb2.QuotaFailure.Violation(
                    subject=self.subject, description=self.message
                )
            ]
        )
        return [*super().details(), quota]


class Unauthenticated(ServiceError):
    code = code_pb2.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(ServiceError):
    code = code_pb2.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class Unavailable(ServiceError):
    """A dependency (database, object storage) cannot be reached; retrying may help."""

    code = code_pb2.UNAVAILABLE
    default_reason = "UNAVAILABLE"


class Aborted(ServiceError):
    """A build lost its lease (it stalled past it, or the file changed meanwhile).

    Nothing it did is visible; the caller may retry the whole call.
    """

    code = code_pb2.ABORTED
    default_reason = "ABORTED"


class DeadlineExceeded(ServiceError):
    code = code_pb2.DEADLINE_EXCEEDED
    default_reason = "DEADLINE_EXCEEDED"


class Cancelled(ServiceError):
    code = code_pb2.CANCELLED
    default_reason = "CANCELLED"


class Unimplemented(ServiceError):
    """An operation of the contract that this server does not offer yet."""

    code = code_pb2.UNIMPLEMENTED
    default_reason = "UNIMPLEMENTED"
