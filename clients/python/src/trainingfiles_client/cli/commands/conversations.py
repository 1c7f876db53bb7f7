"""Conversations: those in a file (``conversations``) and those that can be added
(``eligible``)."""

from __future__ import annotations

import click

import trainingfiles_client as tfc

from ..exits import Exit
from ..output import table, when
from ..selectors import selector_options
from ..session import (
    Session,
    command,
    file_id_argument,
    limit_option,
    page_size,
    version_option,
)


@command(
    "conversations",
    examples=[
        "conversations FILE_ID",
        "conversations FILE_ID --json",
        "conversations FILE_ID --version 1",
    ],
)
@file_id_argument
@limit_option
@version_option
def conversations(session: Session, file_id: str, limit: int | None, version: int | None) -> int:
    """List the conversations in a training file, in the order they were added.

    With --version, the members of that version.
    """
    pager = session.client.list_training_file_conversations(
        file_id, page_size(limit), version=version, **session.options()
    )
    members = session.listed(pager, limit, "conversations")
    if members is None:
        return Exit.OK
    rows = table(
        "CONVERSATION", "ADDED", "PAIRS", "QUALITY", "REVIEWED", "PERSONA", "ARC", "TOPIC",
        right=("PAIRS", "QUALITY"),
    )  # fmt: skip
    for m in members:
        rows.add_row(
            m.conversation_id,
            when(m.added_at),
            str(m.training_pair_count),
            f"{m.quality_score:.2f}",
            "yes" if m.human_reviewed else "",
            m.persona_key,
            m.emotional_arc_key,
            m.training_topic_key,
        )
    session.output.listing(rows, len(members), "conversation")
    return Exit.OK


@command(
    "eligible",
    examples=[
        "eligible --limit 5",
        "eligible --exclude FILE_ID --limit 20 --ids-only > ids.txt",
        "eligible --persona PERSONA_ID --created-after 2026-11-01 --json",
    ],
)
@click.option("--exclude", metavar="FILE_ID", help="leave out those in this file")
@limit_option
@selector_options(limit=False)
@click.option("--ids-only", is_flag=True, help="print only the ids")
def eligible(
    session: Session,
    exclude: str | None,
    limit: int | None,
    selector: tfc.Selector | None,
    ids_only: bool,
) -> int:
    """List conversations that can be added to a training file, newest first.

    The selector options (as for `create`) list only those they match: what `create`
    with the same options would take. QUALITY and PAIRS are shown once a build of a file
    without a pair filter has read the conversation's current document.
    """
    pager = session.client.list_eligible_conversations(
        exclude or "", page_size(limit), selector, **session.options()
    )
    found = session.listed(pager, limit, "conversations")
    if found is None:
        return Exit.OK
    if ids_only:
        click.echo("".join(f"{c.conversation_id}\n" for c in found), nl=False)
        return Exit.OK
    # Quality and pairs are known once a build has read the current document ("-": not).
    rows = table("CONVERSATION", "CREATED", "OWNER", "QUALITY", "PAIRS")
    for c in found:
        quality = f"{c.quality_score:.2f}" if c.HasField("quality_score") else "-"
        pairs = str(c.training_pair_count) if c.HasField("training_pair_count") else "-"
        rows.add_row(c.conversation_id, when(c.created_at), c.created_by, quality, pairs)
    session.output.listing(rows, len(found), "conversation")
    return Exit.OK


COMMANDS = [conversations, eligible]
