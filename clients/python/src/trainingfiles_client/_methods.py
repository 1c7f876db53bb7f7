"""The service's methods and their defaults: one table, derived from the service descriptor.

What the clients know about an rpc comes from here. Its path, request and response
classes, and whether it streams or pages come from the generated descriptor of the
service; its default deadline and retry policy from the one table below (`_DEFAULTS`).
The channel's gRPC service config is built from the same table, so the retries the
channel performs and the defaults the methods document cannot drift apart.

Retries are the channel's (gRPC service config), never a loop of the client's: gRPC
retries with jittered backoff, honours the call's deadline across attempts, and stops
once a streaming call has received its first message.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message

from trainingfiles.v1 import service_pb2

__all__ = ["DEFAULT", "METHODS", "SERVICE", "Kind", "Method", "Policy", "Retry", "service_config"]

SERVICE: Final = service_pb2.DESCRIPTOR.services_by_name["TrainingFileService"]


class _Default(enum.Enum):
    DEFAULT = "DEFAULT"

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Final = _Default.DEFAULT
"""The policy of a method's own row in the table (the main channel's)."""


@dataclass(frozen=True, slots=True)
class Retry:
    """A retry policy, carried out by the gRPC channel itself (gRPC service config).

    `attempts` counts the first call (gRPC allows 2 to 5); the pauses between attempts
    grow from `initial_backoff` by `multiplier` up to `max_backoff` seconds (gRPC adds
    ±20 % jitter); only the status codes named in `on` are retried. The call's `timeout`
    bounds all attempts together.

    Example:
        >>> patient = Retry(attempts=5, initial_backoff=1.0, max_backoff=8.0)
        >>> client.get_training_file(file_id, retry=patient)
        >>> client.get_training_file(file_id, retry=None)  # one attempt, no retry
    """

    attempts: int = 5
    initial_backoff: float = 0.5
    max_backoff: float = 4.0
    multiplier: float = 2.0
    on: tuple[str, ...] = ("UNAVAILABLE", "DEADLINE_EXCEEDED")

    def __post_init__(self) -> None:
        if not 2 <= self.attempts <= 5:
            raise ValueError(f"attempts must be 2 to 5 (gRPC's range), not {self.attempts}")
        if not 0 < self.initial_backoff <= self.max_backoff or self.multiplier <= 0:
            raise ValueError("backoffs must be positive, initial_backoff <= max_backoff")
        codes = set(grpc.StatusCode.__members__) - {"OK"}
        if not self.on or not set(self.on) <= codes:
            raise ValueError(f"on must name status codes, such as UNAVAILABLE: {self.on}")

    def policy(self) -> dict[str, Any]:
        """This policy as a service config `retryPolicy`."""
        return {
            "maxAttempts": self.attempts,
            "initialBackoff": _seconds(self.initial_backoff),
            "maxBackoff": _seconds(self.max_backoff),
            "backoffMultiplier": self.multiplier,
            "retryableStatusCodes": list(self.on),
        }


# Five attempts (gRPC's cap), 0.5 s, 1 s, 2 s, 4 s apart (±20 % jitter): about 7.5 s,
# enough to ride out a server restart, short enough to fail while a person waits. A read
# answered DEADLINE_EXCEEDED by the server is retried too (the call's own deadline still
# bounds all attempts).
READ: Final = Retry()
UNARY_TIMEOUT: Final = 30.0

# The one table of per-method defaults: (deadline in seconds, retry policy); None is
# none. Reads are retried. Writes never are: a retried Create or Add could build a second
# file or race the first attempt, and although archiving twice, exporting again or
# setting auto refresh to the state it has is harmless (the same content is rendered
# again), a caller should see that its Archive, Export or SetAutoRefresh failed and
# decide for itself; a retried Export would also queue behind the first attempt, which
# may still hold the file, as would a retried Remove or Refresh (and a Remove retried
# after a first attempt that succeeded fails: the conversations are no longer in the
# file). Create, Add, Remove, Refresh and Export stream for as long as the build runs,
# so they have no deadline of their own. An rpc of the contract missing here gets
# neither (the surface test insists on a row for each).
_DEFAULTS: Final[Mapping[str, tuple[float | None, Retry | None]]] = {
    "CreateTrainingFile": (None, None),
    "AddConversations": (None, None),
    "RemoveConversations": (None, None),
    "RefreshTrainingFile": (None, None),
    "ExportTrainingFile": (None, None),
    "ArchiveTrainingFile": (UNARY_TIMEOUT, None),
    "SetAutoRefresh": (UNARY_TIMEOUT, None),
    "GetTrainingFile": (UNARY_TIMEOUT, READ),
    "ListTrainingFiles": (UNARY_TIMEOUT, READ),
    "ListTrainingFileConversations": (UNARY_TIMEOUT, READ),
    "ListTrainingFileVersions": (UNARY_TIMEOUT, READ),
    "GetDownloadUrl": (UNARY_TIMEOUT, READ),
    "GetTrainingFileAnalytics": (UNARY_TIMEOUT, READ),
    "ListEligibleConversations": (UNARY_TIMEOUT, READ),
    "ValidateConversations": (UNARY_TIMEOUT, READ),
}


Policy: TypeAlias = Retry | Literal[_Default.DEFAULT] | None
"""What a channel's retries follow: a policy for every method, none, or the table."""


class Kind(enum.Enum):
    UNARY = "unary"
    PAGED = "paged"  # unary, with page_token in and next_page_token out
    STREAMING = "streaming"  # one request, a stream of responses


@dataclass(frozen=True, slots=True)
class Method:
    """One rpc of the service, as the clients call it."""

    name: str
    path: str
    request: type[Message]
    response: type[Message]
    kind: Kind
    items: str  # a paged response's repeated field of results; "" for the others
    timeout: float | None
    retry: Retry | None

    @classmethod
    def of(cls, descriptor: MethodDescriptor) -> Method:
        request = message_factory.GetMessageClass(descriptor.input_type)
        response = message_factory.GetMessageClass(descriptor.output_type)
        fields = descriptor.output_type.fields_by_name
        paged = "page_token" in descriptor.input_type.fields_by_name and (
            "next_page_token" in fields
        )
        kind = Kind.STREAMING if descriptor.server_streaming else Kind.UNARY
        items = ""
        if paged:
            kind = Kind.PAGED
            items = next(f.name for f in descriptor.output_type.fields if repeated(f))
        timeout, retry = _DEFAULTS.get(descriptor.name, (None, None))
        path = f"/{SERVICE.full_name}/{descriptor.name}"
        return cls(descriptor.name, path, request, response, kind, items, timeout, retry)


def repeated(field: Any) -> bool:
    # `is_repeated` is the newer spelling; `label` the one older protobuf releases have.
    repeated = getattr(field, "is_repeated", None)
    if repeated is not None:
        return bool(repeated)
    return bool(field.label == field.LABEL_REPEATED)


METHODS: Final[Mapping[str, Method]] = {m.name: Method.of(m) for m in SERVICE.methods}


def service_config(override: Retry | _Default | None = DEFAULT) -> dict[str, Any]:
    """The gRPC service config of a channel.

    By default, each method's own policy from the table (none for the writes). With an
    `override`, that one policy for every method (None: no retries at all): the channel
    a call with its own `retry` goes through.
    """
    if override is DEFAULT:
        policies: dict[Retry, list[str]] = {}
        for method in METHODS.values():
            if method.retry is not None:
                policies.setdefault(method.retry, []).append(method.name)
        return {
            "methodConfig": [
                {"name": _names(names), "retryPolicy": policy.policy()}
                for policy, names in policies.items()
            ]
        }
    if override is None:
        return {"methodConfig": []}
    every = [{"service": SERVICE.full_name}]
    return {"methodConfig": [{"name": every, "retryPolicy": override.policy()}]}


def _names(methods: Sequence[str]) -> list[dict[str, str]]:
    return [{"service": SERVICE.full_name, "method": method} for method in methods]


def _seconds(value: float) -> str:
    """A service config duration: decimal seconds with an `s`, at most 9 decimals."""
    if not math.isfinite(value):
        raise ValueError(f"not a duration: {value}")
    return f"{value:.9f}".rstrip("0").rstrip(".") + "s"
