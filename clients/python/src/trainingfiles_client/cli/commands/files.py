"""Training files: ``list``, ``show``, ``versions``, ``auto-refresh`` and ``archive``."""

from __future__ import annotations

import click
from rich.markup import escape
from rich.table import Table

from trainingfiles.v1 import resources_pb2

from ..exits import Exit
from ..output import as_dict, reason_name, size, status_name, table, when
from ..outputs import outputs_table, quality_rows
from ..session import (
    Session,
    command,
    file_id_argument,
    limit_option,
    page_size,
    version_option,
)

STATUSES = {
    "processing": resources_pb2.TRAINING_FILE_STATUS_PROCESSING,
    "active": resources_pb2.TRAINING_FILE_STATUS_ACTIVE,
    "archived": resources_pb2.TRAINING_FILE_STATUS_ARCHIVED,
    "failed": resources_pb2.TRAINING_FILE_STATUS_FAILED,
}


@command("list", examples=["list", "list --status active --limit 10", "list --all --json"])
@click.option("--status", type=click.Choice(sorted(STATUSES)), help="only files in this status")
@click.option("--all", "include_archived", is_flag=True, help="include archived files")
@limit_option
def list_files(
    session: Session, status: str | None, include_archived: bool, limit: int | None
) -> int:
    """List training files, newest first."""
    chosen = STATUSES[status] if status else resources_pb2.TRAINING_FILE_STATUS_UNSPECIFIED
    pager = session.client.list_training_files(
        chosen, include_archived, page_size(limit), **session.options()
    )
    files = session.listed(pager, limit, "training_files")
    if files is None:
        return Exit.OK
    rows = table(
        "ID", "NAME", "STATUS", "CONVS", "PAIRS", "QUALITY", "VER", "CREATED",
        right=("CONVS", "PAIRS", "QUALITY", "VER"),
    )  # fmt: skip
    for f in files:
        quality = f.quality_summary.avg_quality_score if f.HasField("quality_summary") else None
        rows.add_row(
            f.id,
            f.name,
            status_name(f.status),
            str(f.conversation_count),
            str(f.total_training_pairs),
            "" if quality is None else f"{quality:.2f}",
            str(f.version),
            when(f.created_at),
        )
    session.output.listing(rows, len(files), "training file")
    return Exit.OK


@command("show", examples=["show FILE_ID", "show FILE_ID --json", "show FILE_ID --version 1"])
@file_id_argument
@version_option
def show(session: Session, file_id: str, version: int | None) -> int:
    """A training file's metadata, outputs, quality and distribution.

    Also how many of its conversations are stale (re-enriched since they were built;
    `refresh` rebuilds them), whether it is refreshed automatically, and the failures of
    the last automatic refreshes. With --version, that version's counts, quality, objects
    and outputs; name, status and build settings are the file's.
    """
    f = session.client.get_training_file(file_id, version=version, **session.options())
    if session.output.json:
        session.output.document(as_dict(f))
        return Exit.OK
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("id", f.id)
    grid.add_row("name", escape(f.name))
    if f.HasField("description"):
        grid.add_row("description", escape(f.description))
    grid.add_row("status", f"{status_name(f.status)} (version {f.version})")
    if f.error_message:
        grid.add_row("error", escape(f.error_message))
    grid.add_row("conversations", str(f.conversation_count))
    grid.add_row("training pairs", str(f.total_training_pairs))
    if f.HasField("stale_conversation_count"):  # the current version's only
        grid.add_row("stale conversations", str(f.stale_conversation_count))
    if f.json_file_path:
        grid.add_row("json", f"{f.storage_bucket}/{f.json_file_path} ({size(f.json_file_size)})")
        grid.add_row("jsonl", f"{f.storage_bucket}/{f.jsonl_file_path} ({size(f.jsonl_file_size)})")
    if f.outputs:
        for label, value in quality_rows(f):
            grid.add_row(label, value)
    for label, value in _refresh_rows(f):
        grid.add_row(label, value)
    by = f" by {f.created_by}" if f.created_by else ""
    grid.add_row("created", f"{when(f.created_at)}{by}")
    grid.add_row("updated", when(f.updated_at))
    if f.HasField("quality_summary"):
        q = f.quality_summary
        grid.add_row(
            "quality",
            f"avg {q.avg_quality_score:.2f}, min {q.min_quality_score:.2f}, "
            f"max {q.max_quality_score:.2f}; human reviewed {q.human_reviewed_count}",
        )
    session.output.print(grid)
    if f.outputs:
        session.output.print("")
        session.output.print(outputs_table(f))
    if f.HasField("scaffolding_distribution"):
        session.output.print("")
        session.output.print(_distribution(f.scaffolding_distribution))
    return Exit.OK


def _refresh_rows(f: resources_pb2.TrainingFile) -> list[tuple[str, str]]:
    """Automatic refresh: on or off, and the failures in a row of the last ones."""
    rows = [("auto refresh", "on" if f.auto_refresh else "off")]
    if f.refresh_attempts > 0:
        rows.append(("refresh attempts", f"{f.refresh_attempts} failed in a row"))
        if f.refresh_error:
            rows.append(("refresh error", escape(f.refresh_error)))
        if f.HasField("next_refresh_time"):
            rows.append(("next refresh", when(f.next_refresh_time)))
    return rows


def _distribution(d: resources_pb2.ScaffoldingDistribution) -> Table:
    rows = table("SCAFFOLDING", "KEY", "CONVERSATIONS", right=("CONVERSATIONS",))
    for kind, counts in (
        ("persona", d.personas),
        ("emotional arc", d.emotional_arcs),
        ("training topic", d.training_topics),
    ):
        for key, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
            rows.add_row(kind, escape(key), str(count))
            kind = ""
    return rows


@command("versions", examples=["versions FILE_ID", "versions FILE_ID --limit 5 --json"])
@file_id_argument
@limit_option
def versions(session: Session, file_id: str, limit: int | None) -> int:
    """List a training file's versions, newest first.

    Each create, add, remove and refresh makes one, kept as built; an export adds outputs
    to the current one. A pruned version's objects were deleted (retention); its metadata
    stays.
    """
    pager = session.client.list_training_file_versions(
        file_id, page_size(limit), **session.options()
    )
    found = session.listed(pager, limit, "versions")
    if found is None:
        return Exit.OK
    rows = table(
        "VER", "REASON", "CHANGED", "CONVS", "PAIRS", "QUALITY", "CREATED", "STATE",
        right=("VER", "CHANGED", "CONVS", "PAIRS", "QUALITY"),
    )  # fmt: skip
    for v in found:
        recorded = v.reason == resources_pb2.VERSION_REASON_RECORDED
        quality = v.avg_quality_score if v.HasField("avg_quality_score") else None
        state = ["current"] if v.current else []
        state += [f"pruned {when(v.prune_time)}".rstrip()] if v.pruned else []
        rows.add_row(
            str(v.version),
            reason_name(v.reason),
            "" if recorded else str(v.change_count),
            str(v.conversation_count),
            str(v.total_training_pairs),
            "" if quality is None else f"{quality:.2f}",
            when(v.create_time),
            ", ".join(state),
        )
    session.output.listing(rows, len(found), "version")
    return Exit.OK


@command(
    "auto-refresh",
    examples=["auto-refresh FILE_ID on", "auto-refresh FILE_ID off --json"],
)
@file_id_argument
@click.argument("state", type=click.Choice(["on", "off"]), metavar="on|off")
def auto_refresh(session: Session, file_id: str, state: str) -> int:
    """Turn automatic refresh of a training file on or off.

    While on, the service refreshes the file by itself (as `refresh` would) once
    re-enrichment of its conversations has settled; a refresh that fails is shown by
    `show` and tried again after a back-off. Switching clears the failures so far.
    """
    f = session.client.set_auto_refresh(file_id, state == "on", **session.options())
    if session.output.json:
        session.output.document(as_dict(f))
    else:
        state = "on" if f.auto_refresh else "off"
        session.output.out.print(
            f"[green]✓[/] auto refresh {state} for {escape(f.name)} {f.id}", highlight=False
        )
    return Exit.OK


@command("archive", examples=["archive FILE_ID"])
@file_id_argument
def archive(session: Session, file_id: str) -> int:
    """Archive a training file (kept and downloadable, no longer listed by default)."""
    f = session.client.archive_training_file(file_id, **session.options())
    if session.output.json:
        session.output.document(as_dict(f))
    else:
        session.output.out.print(f"[green]✓[/] archived {escape(f.name)} {f.id}", highlight=False)
    return Exit.OK


COMMANDS = [list_files, show, versions, auto_refresh, archive]
