"""Conversations chosen by the database: a build's or a listing's selector.

The contract's `ConversationSelector` filters the ``conversations`` table: personas,
emotional arcs, training topics (their ids), a creation window, an owner and a limit;
and, judged by a build on each chosen conversation's document, a minimum average
quality, human-reviewed only and emotions.
`Selector` is that message with Python's types: lists of ids (strings or `uuid.UUID`),
`datetime`s for the window. Every method argument that fills a `ConversationSelector`
field takes a `Selector` or the message itself: `_calls` converts it through
`_outputs.CONVERTERS`, keyed by the message's type.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeAlias

from trainingfiles.v1 import resources_pb2, service_pb2

__all__ = ["PairFilter", "Selector", "pair_filter_message", "selector_message"]

IdLike: TypeAlias = str | uuid.UUID
"""An id: its text, or a `uuid.UUID`."""


def _ids(name: str, values: Iterable[IdLike]) -> tuple[str, ...]:
    if isinstance(values, str | bytes | uuid.UUID):
        raise TypeError(f"{name} must be a list, not a single id")
    return tuple(str(value) for value in values)


def _moment(name: str, value: Any) -> datetime.datetime | None:
    if value is None or isinstance(value, datetime.datetime):
        return value
    raise TypeError(f"{name} must be a datetime, not {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class Selector:
    """Conversations the database chooses (the contract's `ConversationSelector`).

    A conversation matches when it matches every field given (and any id of a list):
    `persona_ids`, `emotional_arc_ids`, `training_topic_ids` (the ``conversations``
    table's ids), created at or after `created_after` and before `created_before` (a
    naive datetime is UTC), of `owner` (only for a ``service_role`` caller building a
    system file; a user's selection is always their own, a file's its owner's), at most
    `limit` of them, the oldest (None or 0: no cap but the server's, 100,000 by
    default). Only enriched conversations are chosen, oldest first, after any ids
    listed beside the selector. The server checks the values (INVALID_ARGUMENT naming
    ``selector.persona_ids[0]`` and the like); nothing matched and no id listed is
    FAILED_PRECONDITION (``NO_CONVERSATIONS_SELECTED``); more than the server's cap
    matched, RESOURCE_EXHAUSTED (``TOO_MANY_CONVERSATIONS``); an `owner` not allowed,
    PERMISSION_DENIED (``SELECTOR_OWNER_NOT_ALLOWED``).

    Document filters, judged by a Create or an Add on each selected conversation's
    document once it is read (never on listed ids; a listing refuses them,
    INVALID_ARGUMENT ``DOCUMENT_FILTER_NOT_LISTABLE``): `min_average_quality` (the mean
    of its pairs' quality scores), `human_reviewed_only` (some pair reviewed) and
    `emotions` (some pair's primary emotion is one of them). A conversation failing
    them is left out and counted (``CONVERSATIONS_FILTERED_OUT``).

    Example:
        >>> recent = Selector(persona_ids=[persona], created_after=datetime(2026, 11, 1))
        >>> client.create_training_file("advisors-nov", selector=recent).result()
        >>> client.add_conversations(file_id, selector=Selector(training_topic_ids=[t]))
        >>> Selector(persona_ids=[persona], limit=50).proto().limit
        50
        >>> Selector(min_average_quality=4, human_reviewed_only=True, emotions=["hope"])
    """

    persona_ids: Iterable[IdLike] = ()
    emotional_arc_ids: Iterable[IdLike] = ()
    training_topic_ids: Iterable[IdLike] = ()
    created_after: datetime.datetime | None = None
    created_before: datetime.datetime | None = None
    owner: IdLike | None = None
    limit: int | None = None
    min_average_quality: float | None = None
    human_reviewed_only: bool | None = None
    emotions: Iterable[str] = ()

    def __post_init__(self) -> None:
        # Kept as tuples of strings: equal selectors compare equal, and hash.
        for name in ("persona_ids", "emotional_arc_ids", "training_topic_ids"):
            object.__setattr__(self, name, _ids(name, getattr(self, name)))
        if isinstance(self.emotions, str | bytes):
            raise TypeError("emotions must be a list, not a single string")
        object.__setattr__(self, "emotions", tuple(self.emotions))
        for name in ("created_after", "created_before"):
            _moment(name, getattr(self, name))

    def proto(self) -> service_pb2.ConversationSelector:
        """The contract's message (fields left None are not set).

        Example:
            >>> Selector(created_before=datetime(2026, 1, 1, tzinfo=UTC)).proto().created_before
            seconds: 1767225600
        """
        message = service_pb2.ConversationSelector(
            persona_ids=_ids("persona_ids", self.persona_ids),
            emotional_arc_ids=_ids("emotional_arc_ids", self.emotional_arc_ids),
            training_topic_ids=_ids("training_topic_ids", self.training_topic_ids),
            owner="" if self.owner is None else str(self.owner),
            limit=self.limit or 0,
            min_average_quality=self.min_average_quality or 0.0,
            human_reviewed_only=bool(self.human_reviewed_only),
            emotions=list(self.emotions),
        )
        if self.created_after is not None:
            message.created_after.FromDatetime(self.created_after)
        if self.created_before is not None:
            message.created_before.FromDatetime(self.created_before)
        return message


def selector_message(value: Any) -> Any:
    """A `Selector` as the message; anything else (the message, a dict) as it is."""
    return value.proto() if isinstance(value, Selector) else value


@dataclass(frozen=True, slots=True)
class PairFilter:
    """Which pairs of each document go into a file (the contract's `PairFilter`).

    A pair is kept when its quality score is at least `min_quality` (None or 0: any)
    and, with `reviewed_only`, it is marked human-reviewed; the others are left out of
    every output and counted (`excluded_pair_count`). A conversation left with no pair
    is not a member. Set on a Create, it applies to every later version of the file
    (Add and Refresh); an Add may name it again, but not another one
    (FAILED_PRECONDITION, ``PAIR_FILTER_MISMATCH``).

    Example:
        >>> client.create_training_file("best", ids, pair_filter=PairFilter(min_quality=4))
        >>> PairFilter(reviewed_only=True).proto().reviewed_only
        True
    """

    min_quality: float | None = None
    reviewed_only: bool | None = None

    def proto(self) -> resources_pb2.PairFilter:
        """The contract's message (fields left None are not set).

        Example:
            >>> PairFilter(min_quality=4).proto().min_quality
            4.0
        """
        return resources_pb2.PairFilter(
            min_quality=self.min_quality or 0.0, reviewed_only=bool(self.reviewed_only)
        )


def pair_filter_message(value: Any) -> Any:
    """A `PairFilter` as the message; anything else (the message, a dict) as it is."""
    return value.proto() if isinstance(value, PairFilter) else value
