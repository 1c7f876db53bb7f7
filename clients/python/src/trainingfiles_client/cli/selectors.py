"""Conversations the database chooses, on the command line: the selector options of
``create``, ``add`` and ``eligible``."""

from __future__ import annotations

import datetime
import functools
from collections.abc import Callable
from typing import Any

import click

import trainingfiles_client as tfc

Decorator = Callable[[Callable[..., int]], Callable[..., int]]

# The options that make a selector, as the command line spells them.
FILTERS = ("--persona", "--arc", "--topic", "--created-after", "--created-before", "--owner")

# The handler's parameters they fill (besides `limit` and the document filters), which
# become its `selector`.
_NAMES = ["persona", "arc", "topic", "created_after", "created_before", "owner"]

# A build's document filters (not a listing's: it reads no document).
_DOCUMENT_NAMES = ["min_quality", "reviewed_only", "emotion"]

# What a refused selector can try next, by the error's reason.
HINTS = {
    "NO_CONVERSATIONS_SELECTED": "`trainingfiles eligible` with the same options lists what "
    "they match",
    "TOO_MANY_CONVERSATIONS": "narrow the selector, or take the oldest with --limit N",
    "SELECTOR_OWNER_NOT_ALLOWED": "--owner needs a service_role token and a file without "
    "an owner; a user's selection is always their own",
    "ALL_CONVERSATIONS_FILTERED_OUT": "loosen --min-quality, --reviewed-only, --emotion, "
    "--min-pair-quality or --reviewed-pairs-only",
    "PAIR_FILTER_MISMATCH": "the file's pair filter is fixed by its create; leave "
    "--min-pair-quality and --reviewed-pairs-only out (the file's applies)",
}


def iso_time(ctx: click.Context, param: click.Parameter, value: Any) -> datetime.datetime | None:
    """An ISO 8601 date or time (``2026-11-01``, ``2026-11-01T09:30:00+02:00``, ``…Z``);
    without a zone, UTC. (A callback, not a `click.ParamType`: that class is generic
    only in the newer click releases the command accepts.)"""
    if value is None:
        return None
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 date or time, such as 2026-11-01 or "
            "2026-11-01T09:30:00Z",
            ctx,
            param,
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def selector_options(*, limit: bool = True) -> Decorator:
    """Declare the selector's options (``--limit`` and the document filters too, unless
    `limit` is False: a listing's own ``--limit`` counts what it shows, and it reads no
    document); the handler receives them as one `selector`, a `Selector`, or None when
    none is given."""
    options = [
        click.option(
            "--persona", multiple=True, metavar="ID", help="select: of this persona (repeatable)"
        ),
        click.option(
            "--arc", multiple=True, metavar="ID",
            help="select: of this emotional arc (repeatable)",
        ),
        click.option(
            "--topic", multiple=True, metavar="ID",
            help="select: of this training topic (repeatable)",
        ),
        click.option(
            "--created-after", metavar="TIME", callback=iso_time,
            help="select: created at or after this ISO 8601 time (no zone: UTC)",
        ),
        click.option(
            "--created-before", metavar="TIME", callback=iso_time,
            help="select: created before this time",
        ),
        click.option(
            "--owner", metavar="ID",
            help="select: this user's conversations (service_role tokens only)",
        ),
    ]  # fmt: skip
    if limit:
        options += [
            click.option("--limit", type=int, metavar="N", help="select: at most N, the oldest"),
            click.option(
                "--min-quality", type=float, metavar="SCORE",
                help="select: whose mean pair quality is at least SCORE (judged on the document)",
            ),
            click.option(
                "--reviewed-only", is_flag=True, default=None,
                help="select: with at least one human-reviewed pair",
            ),
            click.option(
                "--emotion", multiple=True, metavar="NAME",
                help="select: where some pair's primary emotion is NAME (repeatable)",
            ),
        ]  # fmt: skip

    names = [*_NAMES, "limit", *_DOCUMENT_NAMES] if limit else _NAMES

    def decorate(handler: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(handler)
        def selecting(*args: Any, **params: Any) -> int:
            chosen = {name: params.pop(name) for name in names}
            return handler(*args, selector=selector_of(**chosen), **params)

        for option in reversed(options):
            selecting = option(selecting)
        return selecting

    return decorate


def selector_of(
    persona: tuple[str, ...],
    arc: tuple[str, ...],
    topic: tuple[str, ...],
    created_after: datetime.datetime | None,
    created_before: datetime.datetime | None,
    owner: str | None,
    limit: int | None = None,
    min_quality: float | None = None,
    reviewed_only: bool | None = None,
    emotion: tuple[str, ...] = (),
) -> tfc.Selector | None:
    """The selector the options ask for; None when none of them is given."""
    given = persona or arc or topic or owner is not None or limit is not None
    documents = min_quality is not None or reviewed_only or emotion
    if not given and not documents and created_after is None and created_before is None:
        return None
    return tfc.Selector(
        persona_ids=persona,
        emotional_arc_ids=arc,
        training_topic_ids=topic,
        created_after=created_after,
        created_before=created_before,
        owner=owner,
        limit=limit,
        min_average_quality=min_quality,
        human_reviewed_only=reviewed_only,
        emotions=emotion,
    )


def pair_filter_options(handler: Callable[..., int]) -> Callable[..., int]:
    """``--min-pair-quality`` and ``--reviewed-pairs-only``, given to the handler as one
    `pair_filter` (a `PairFilter`, or None when neither is given)."""

    @functools.wraps(handler)
    def filtering(*args: Any, **params: Any) -> int:
        minimum, reviewed = params.pop("min_pair_quality"), params.pop("reviewed_pairs_only")
        chosen = None
        if minimum is not None or reviewed:
            chosen = tfc.PairFilter(min_quality=minimum, reviewed_only=reviewed)
        return handler(*args, pair_filter=chosen, **params)

    filtering = click.option(
        "--reviewed-pairs-only", is_flag=True, default=None,
        help="keep only human-reviewed pairs (the file keeps this filter)",
    )(filtering)  # fmt: skip
    return click.option(
        "--min-pair-quality", type=float, metavar="SCORE",
        help="keep only pairs whose quality score is at least SCORE (the file keeps this filter)",
    )(filtering)  # fmt: skip
