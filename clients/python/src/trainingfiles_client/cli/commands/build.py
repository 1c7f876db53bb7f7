"""Building training files: ``create``, ``add``, ``remove``, ``refresh`` and ``export``,
with live progress."""

from __future__ import annotations

import click
from rich.markup import escape

import trainingfiles_client as tfc
from trainingfiles.v1 import resources_pb2, service_pb2

from ..ids import options as ids_options
from ..ids import read_ids
from ..outputs import brief, formats_option, split_of, split_options
from ..progress import follow
from ..selectors import FILTERS, HINTS, pair_filter_options, selector_options
from ..session import Session, command, file_id_argument

# What `create` and `add` take instead of ids.
_OR_SELECT = f", or select conversations with {', '.join(FILTERS)} or --limit"


@command(
    "create",
    examples=[
        "create demo --ids 5795833f-20da-45aa-9b56-d4b07e575bcc "
        "9c41aecb-e43a-4af7-9751-862e7009fb08",
        "create twenty --ids-file ids.txt --description 'first try'",
        "eligible --limit 20 --ids-only | trainingfiles create twenty --ids -",
        "create tuned --ids-file ids.txt --format openai_chat --format parquet "
        "--validation-fraction 0.1 --seed 7 --stratify persona --drop-duplicates",
        "create live --ids-file ids.txt --auto-refresh",
        "create november --persona PERSONA_ID --created-after 2026-11-01",
        "create system-q4 --owner USER_ID --topic TOPIC_ID --topic TOPIC_ID --limit 500",
        "create best --topic TOPIC_ID --min-quality 4 --reviewed-only --min-pair-quality 3.5",
    ],
)
@click.argument("name")
@click.option("--description", help="free text kept with the file")
@ids_options
@selector_options()
@pair_filter_options
@formats_option("a format to produce besides v4_json and v4_jsonl")
@split_options
@click.option(
    "--auto-refresh",
    is_flag=True,
    help="refresh the file by itself when its conversations are re-enriched",
)
def create(
    session: Session,
    name: str,
    description: str | None,
    ids: tuple[str, ...],
    ids_file: tuple[str, ...],
    selector: tfc.Selector | None,
    pair_filter: tfc.PairFilter | None,
    formats: tuple[str, ...],
    validation_fraction: float | None,
    validation_count: int | None,
    seed: int | None,
    stratify: str | None,
    drop_duplicates: bool,
    auto_refresh: bool,
) -> int:
    """Create a training file, with live progress.

    NAME is the new file's name; the server says what it accepts. Every offending id is
    listed with its reason; Ctrl-C cancels the build on the server. A split (by
    conversation) divides the trainer formats into train and validation outputs. With
    --auto-refresh the service refreshes the file by itself (see `refresh` and
    `auto-refresh`).

    With selector options (--persona, --arc, --topic, --created-after, --created-before,
    --owner, --limit) the server also takes the enriched conversations that match all of
    them, oldest first, after the ids given (which may then be left out); --owner is for
    service_role tokens. `eligible` with the same options lists them. --min-quality,
    --reviewed-only and --emotion judge each selected conversation's document (not the
    ids given). --min-pair-quality and --reviewed-pairs-only keep only the pairs that
    meet them, in this version and every later one.
    """
    split = split_of(validation_fraction, validation_count, seed, stratify)
    chosen = read_ids(ids, ids_file, required=selector is None, otherwise=_OR_SELECT)
    client = session.client
    operation = client.create_training_file(
        name,
        chosen,
        description,
        formats=formats or None,
        split=split,
        drop_duplicates=drop_duplicates or None,
        auto_refresh=auto_refresh or None,
        selector=selector,
        pair_filter=pair_filter,
        **session.options(),
    )
    return follow(
        session.output,
        client.target,
        operation,
        chosen,
        lambda f: f"[green]✓[/] created {escape(f.name)} {f.id}: {brief(f)}",
        lambda file_id: (
            f"training file {file_id} ends FAILED" if file_id else "no training file was created"
        ),
        (lambda: client.validate_conversations(chosen, **session.options())) if chosen else None,
        hints=HINTS,
    )


@command(
    "add",
    examples=[
        "add FILE_ID --ids e84503e0-3170-4096-a8a2-607a2fa003d6,"
        "168391b5-de40-4120-a198-cba11f065424",
        "eligible --exclude FILE_ID --limit 3 --ids-only | trainingfiles add FILE_ID --ids -",
        "add FILE_ID --ids-file more.txt --format sharegpt",
        "add FILE_ID --topic TOPIC_ID --created-after 2026-11-01T00:00:00Z",
        "add FILE_ID --topic TOPIC_ID --min-quality 4 --emotion hope",
    ],
)
@file_id_argument
@ids_options
@selector_options()
@pair_filter_options
@formats_option("a format to produce besides those the file has")
def add(
    session: Session,
    file_id: str,
    ids: tuple[str, ...],
    ids_file: tuple[str, ...],
    selector: tfc.Selector | None,
    pair_filter: tfc.PairFilter | None,
    formats: tuple[str, ...],
) -> int:
    """Add conversations to an active training file, with live progress.

    The file keeps its content until the rebuilt one replaces it (version + 1); on any
    failure, or Ctrl-C, it stays as it was. The new version keeps the file's formats,
    split and duplicate handling. With selector options (as for `create`), the matching
    conversations of the file's owner that it lacks are added too, after the ids given,
    which may then be left out. The file's pair filter applies to them;
    --min-pair-quality and --reviewed-pairs-only, if given, must be the file's.
    """
    chosen = read_ids(ids, ids_file, required=selector is None, otherwise=_OR_SELECT)
    client = session.client
    options = session.options()
    operation = client.add_conversations(
        file_id,
        chosen,
        formats=formats or None,
        selector=selector,
        pair_filter=pair_filter,
        **options,
    )
    # How many were added: VALIDATING counts the candidates (with a selector, the ids
    # given do not), less those the filters left out (on the new version).
    added = [len(chosen)]

    def count(event: service_pb2.TrainingFileProgress) -> None:
        if event.stage == service_pb2.TrainingFileProgress.STAGE_VALIDATING and event.total:
            added[0] = event.total

    return follow(
        session.output,
        client.target,
        operation,
        chosen,
        lambda f: (
            f"[green]✓[/] added {added[0] - f.filtered_out_conversation_count} to "
            f"{escape(f.name)} {f.id}: {brief(f)}"
        ),
        lambda _: f"training file {file_id} keeps its previous content",
        (
            (lambda: client.validate_conversations(chosen, file_id, **session.options()))
            if chosen
            else None
        ),
        hints=HINTS,
        on_event=count,
    )


@command(
    "remove",
    examples=[
        "remove FILE_ID --ids e84503e0-3170-4096-a8a2-607a2fa003d6",
        "remove FILE_ID --ids-file drop.txt",
        "remove FILE_ID --ids - --json < drop.txt",
    ],
)
@file_id_argument
@ids_options
def remove(session: Session, file_id: str, ids: tuple[str, ...], ids_file: tuple[str, ...]) -> int:
    """Remove conversations from an active training file, with live progress.

    The new version (version + 1) is built from the stored file, no document fetched
    again (rendering counts its pairs); it keeps the file's formats, split and duplicate
    handling. Every id must be in the file, and one must remain. On any failure, or
    Ctrl-C, the file stays as it was.
    """
    chosen = read_ids(ids, ids_file)
    client = session.client
    operation = client.remove_conversations(file_id, chosen, **session.options())
    return follow(
        session.output,
        client.target,
        operation,
        chosen,
        lambda f: f"[green]✓[/] removed {len(chosen)} from {escape(f.name)} {f.id}: {brief(f)}",
        lambda _: f"training file {file_id} keeps its previous content",
    )


@command(
    "refresh",
    examples=[
        "refresh FILE_ID",
        "refresh FILE_ID --remove-ineligible",
        "refresh FILE_ID --json",
    ],
)
@file_id_argument
@click.option(
    "--remove-ineligible",
    is_flag=True,
    help="leave out stale conversations that can no longer be used, instead of failing",
)
def refresh(session: Session, file_id: str, remove_ineligible: bool) -> int:
    """Rebuild the stale conversations of an active training file, with live progress.

    A conversation is stale once it was re-enriched after the file was built (`show`
    counts them). Only their documents are fetched again; each keeps its place, and the
    new version (version + 1) keeps the file's formats, split and duplicate handling.
    Nothing stale: the file stays as it is, same version. A stale conversation that can
    no longer be used fails the refresh (each listed with its reason) unless
    --remove-ineligible leaves it out. On any failure, or Ctrl-C, the file stays as it
    was.
    """
    client = session.client
    # The version before, to tell a refresh from "nothing stale" (with --json, the events
    # tell: nothing stale is VALIDATING, then the file as it was).
    before: resources_pb2.TrainingFile | None = None
    if not session.output.json:
        before = client.get_training_file(file_id, **session.options())
    operation = client.refresh_training_file(
        file_id, remove_ineligible=remove_ineligible or None, **session.options()
    )

    def describe(f: resources_pb2.TrainingFile) -> str:
        if before is not None and f.version == before.version:
            return f"[green]✓[/] nothing stale: {escape(f.name)} {f.id} unchanged, {brief(f)}"
        return f"[green]✓[/] refreshed {escape(f.name)} {f.id}: {brief(f)}"

    return follow(
        session.output,
        client.target,
        operation,
        (),
        describe,
        lambda _: f"training file {file_id} keeps its previous content",
        hints={
            "CONVERSATIONS_NOT_ELIGIBLE": "refresh with --remove-ineligible to leave them "
            "out, or remove them"
        },
    )


@command(
    "export",
    examples=[
        "export FILE_ID --format openai_chat",
        "export FILE_ID --format alpaca --format parquet --json",
    ],
)
@file_id_argument
@formats_option("a format to render", required=True)
def export(session: Session, file_id: str, formats: tuple[str, ...]) -> int:
    """Render formats of an active training file, with live progress.

    Rendered from the stored v4 JSONL with the version's split and duplicate handling;
    the version does not change. On any failure, or Ctrl-C, the file keeps its outputs.
    """
    client = session.client
    operation = client.export_training_file(file_id, formats, **session.options())
    return follow(
        session.output,
        client.target,
        operation,
        (),
        lambda f: (
            f"[green]✓[/] exported {', '.join(formats)} of {escape(f.name)} {f.id}: {brief(f)}"
        ),
        lambda _: f"training file {file_id} keeps its outputs",
    )


COMMANDS = [create, add, remove, refresh, export]
