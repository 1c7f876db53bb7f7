"""Where results go and how they look: data on stdout, progress and diagnostics on stderr.

``--json`` turns every result into one JSON document (the proto3 JSON mapping with the
proto's field names) and the progress of a build (``create``, ``add``, ``remove``,
``refresh``, ``export``) into JSON lines.
"""

from __future__ import annotations

import datetime
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from rich.console import Console
from rich.table import Table

from trainingfiles.v1 import resources_pb2, service_pb2


@dataclass
class Output:
    """Where things go: data to stdout, progress and diagnostics to stderr."""

    json: bool
    out: Console
    err: Console
    # Each warning of a build on a line of its own, not only each kind's total.
    verbose: bool = False

    @classmethod
    def create(cls, as_json: bool, verbose: bool = False) -> Output:
        # Off a terminal, tables keep their natural width instead of being cut at 80.
        out = Console() if sys.stdout.isatty() else Console(width=1000)
        return cls(as_json, out, Console(stderr=True), verbose)

    def print(self, renderable: Any) -> None:
        """A table or grid on stdout; off a terminal without the cells' trailing padding."""
        if self.out.is_terminal:
            self.out.print(renderable, highlight=False)
            return
        with self.out.capture() as captured:
            self.out.print(renderable, highlight=False)
        sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))
        sys.stdout.flush()

    def document(self, value: Any) -> None:
        """One JSON document (or one JSON line) on stdout, flushed at once."""
        sys.stdout.write(json.dumps(value, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    def error_document(self, value: Any) -> None:
        sys.stderr.write(json.dumps(value, ensure_ascii=False) + "\n")
        sys.stderr.flush()

    def listing(self, table: Table, count: int, noun: str) -> None:
        """A table of results, then their count on stderr."""
        if count:
            self.print(table)
        self.err.print(f"[dim]{count} {noun}{'' if count == 1 else 's'}[/]", highlight=False)


def as_dict(message: Message) -> dict[str, Any]:
    """The proto3 JSON mapping, with the proto's field names and every field present."""
    value: dict[str, Any] = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return value


def status_name(status: int) -> str:
    name: str = resources_pb2.TrainingFileStatus.Name(status)  # type: ignore[arg-type]
    return name.removeprefix("TRAINING_FILE_STATUS_").lower()


def reason_name(reason: int) -> str:
    """A version's reason: ``created``, ``added``, ``recorded``, ``removed``,
    ``refreshed`` (or its number, if newer than this client)."""
    try:
        name: str = resources_pb2.VersionReason.Name(reason)  # type: ignore[arg-type]
    except ValueError:
        return str(reason)
    return name.removeprefix("VERSION_REASON_").lower()


def stage_name(stage: int) -> str:
    name: str = service_pb2.TrainingFileProgress.Stage.Name(stage)  # type: ignore[arg-type]
    return name.removeprefix("STAGE_").lower()


def when(timestamp: Any) -> str:
    """A protobuf Timestamp as ``2026-01-31 12:00:00Z``; empty when unset."""
    if not timestamp.seconds and not timestamp.nanos:
        return ""
    moment: datetime.datetime = timestamp.ToDatetime(tzinfo=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def size(count: int) -> str:
    if count < 1024:
        return f"{count:,} B"
    value = count / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


_ID_COLUMNS = frozenset({"ID", "CONVERSATION", "OWNER"})


def table(*columns: str, right: Sequence[str] = ()) -> Table:
    """A borderless table; id columns are never cut (a cut id is useless)."""
    result = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:
        if column in _ID_COLUMNS:
            result.add_column(column, no_wrap=True, min_width=36)
        elif column in right:
            result.add_column(column, justify="right", overflow="fold")
        else:
            result.add_column(column, overflow="fold")
    return result
