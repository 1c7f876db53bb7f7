"""The ``trainingfiles`` command: the Training File Service from a terminal.

A thin consumer of the public client API (``trainingfiles_client``) plus `rich` for
tables and progress bars, installed with the ``cli`` extra. Results go to standard
output, progress bars, warnings and errors to standard error, so that ``> file`` and
pipes capture only data. ``--json`` turns every command's result into one JSON document
(the proto3 JSON mapping with the proto's field names), and the progress of ``create``
and ``add`` into JSON lines, one per event, flushed as they arrive.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import ipaddress
import itertools
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

import trainingfiles_client as tfc
from trainingfiles.v1 import resources_pb2, service_pb2

try:
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        ProgressColumn,
        SpinnerColumn,
        Task,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
        TransferSpeedColumn,
    )
    from rich.table import Table
    from rich.text import Text
except ModuleNotFoundError as missing:  # pragma: no cover - only without the extra
    raise SystemExit(
        "trainingfiles: the command-line tool needs rich: pip install 'trainingfiles-client[cli]'"
    ) from missing

PROG = "trainingfiles"
UNARY_TIMEOUT = 30.0
CHUNK = 256 * 1024

ProgressEvent = service_pb2.TrainingFileProgress


# ----------------------------------------------------------------- exit codes


class Exit:
    """The exit codes; `--help` lists them (see `_EXIT_HELP`)."""

    OK = 0
    ERROR = 1
    USAGE = 2
    INVALID_ARGUMENT = 3
    NOT_FOUND = 4
    ALREADY_EXISTS = 5
    FAILED_PRECONDITION = 6
    RESOURCE_EXHAUSTED = 7
    UNAUTHENTICATED = 8
    PERMISSION_DENIED = 9
    UNAVAILABLE = 10
    DEADLINE_EXCEEDED = 11
    DOWNLOAD_FAILED = 12
    INTERRUPTED = 130


_EXIT_HELP: tuple[tuple[int, str], ...] = (
    (Exit.OK, "success"),
    (Exit.ERROR, "any other error (INTERNAL, CANCELLED by the server, ...)"),
    (Exit.USAGE, "usage error: bad options, no ids, unreadable --ids-file"),
    (Exit.INVALID_ARGUMENT, "INVALID_ARGUMENT: malformed or repeated ids, bad name, ..."),
    (Exit.NOT_FOUND, "NOT_FOUND: no such training file"),
    (Exit.ALREADY_EXISTS, "ALREADY_EXISTS: the name is taken"),
    (Exit.FAILED_PRECONDITION, "FAILED_PRECONDITION: ineligible conversations, file not active"),
    (Exit.RESOURCE_EXHAUSTED, "RESOURCE_EXHAUSTED: too many ids, file too large"),
    (Exit.UNAUTHENTICATED, "UNAUTHENTICATED: missing, expired or invalid token"),
    (Exit.PERMISSION_DENIED, "PERMISSION_DENIED"),
    (Exit.UNAVAILABLE, "UNAVAILABLE: server (or its database or storage) unreachable"),
    (Exit.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED: --timeout passed"),
    (Exit.DOWNLOAD_FAILED, "download failed or its byte count differs from the stored size"),
    (Exit.INTERRUPTED, "interrupted (Ctrl-C); a running create/add was cancelled on the server"),
)

_EXIT_BY_ERROR: tuple[tuple[type[tfc.TrainingFilesError], int], ...] = (
    (tfc.InvalidArgument, Exit.INVALID_ARGUMENT),
    (tfc.OutOfRange, Exit.INVALID_ARGUMENT),
    (tfc.NotFound, Exit.NOT_FOUND),
    (tfc.AlreadyExists, Exit.ALREADY_EXISTS),
    (tfc.FailedPrecondition, Exit.FAILED_PRECONDITION),
    (tfc.ResourceExhausted, Exit.RESOURCE_EXHAUSTED),
    (tfc.Unauthenticated, Exit.UNAUTHENTICATED),
    (tfc.PermissionDenied, Exit.PERMISSION_DENIED),
    (tfc.Unavailable, Exit.UNAVAILABLE),
    (tfc.DeadlineExceeded, Exit.DEADLINE_EXCEEDED),
)


def exit_code(error: tfc.TrainingFilesError) -> int:
    for kind, code in _EXIT_BY_ERROR:
        if isinstance(error, kind):
            return code
    return Exit.ERROR


class UsageError(Exception):
    """A problem with the command line that argparse cannot see (ids, files)."""


class DownloadError(Exception):
    """The object could not be fetched completely."""


# ----------------------------------------------------------------- output


@dataclass
class Output:
    """Where things go: data to stdout, progress and diagnostics to stderr."""

    json: bool
    out: Console
    err: Console

    @classmethod
    def create(cls, as_json: bool) -> Output:
        # Off a terminal, tables keep their natural width instead of being cut at 80.
        out = Console() if sys.stdout.isatty() else Console(width=1000)
        return cls(as_json, out, Console(stderr=True))

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


def as_dict(message: Message) -> dict[str, Any]:
    """The proto3 JSON mapping, with the proto's field names and every field present."""
    value: dict[str, Any] = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return value


def status_name(status: int) -> str:
    name: str = resources_pb2.TrainingFileStatus.Name(status)  # type: ignore[arg-type]
    return name.removeprefix("TRAINING_FILE_STATUS_").lower()


def stage_name(stage: int) -> str:
    name: str = ProgressEvent.Stage.Name(stage)  # type: ignore[arg-type]
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


# ----------------------------------------------------------------- conversation ids

_SEPARATORS = re.compile(r"[\s,]+")


def _tokens(lines: Iterable[str]) -> Iterator[str]:
    """Ids separated by newlines, spaces or commas; `#` starts a comment."""
    for line in lines:
        yield from (token for token in _SEPARATORS.split(line.split("#", 1)[0]) if token)


def read_ids(values: Sequence[str] | None, files: Sequence[str] | None) -> list[str]:
    """Ids from ``--ids`` (``-``: standard input) then from each ``--ids-file``, in order."""
    ids: list[str] = []
    for value in values or ():
        ids.extend(_tokens(sys.stdin) if value == "-" else _tokens([value]))
    for name in files or ():
        if name == "-":
            ids.extend(_tokens(sys.stdin))
            continue
        try:
            with open(name, encoding="utf-8") as lines:
                ids.extend(_tokens(lines))
        except OSError as error:
            raise UsageError(f"cannot read --ids-file {name}: {error.strerror}") from error
    if not ids:
        raise UsageError("no conversation ids: pass --ids ID ..., --ids-file FILE or --ids -")
    return ids


# ----------------------------------------------------------------- errors


_INDEXED = re.compile(r"^conversation_ids\[(\d+)\]$")


def _every_violation(
    error: tfc.TrainingFilesError,
    validate: Callable[[], service_pb2.ValidateConversationsResponse] | None,
) -> Sequence[tfc.Violation] | None:
    """All of the error's violations when its details were cut, else None (use its own)."""
    if not error.violations_cut or validate is None:
        return None
    try:
        problems = validate().problems
    except tfc.TrainingFilesError:
        return None  # the first ones, as the error listed them, will have to do
    # Argument problems name request fields; eligibility problems name conversations.
    arguments = error.code == grpc.StatusCode.INVALID_ARGUMENT
    found = [
        tfc.Violation(p.subject, p.reason, p.description)
        for p in problems
        if p.subject.startswith("conversation_ids") == arguments
    ]
    others = [v for v in error.violations if not v.subject.startswith("conversation_ids")]
    return [*others, *found] if arguments else found


def report_error(
    output: Output,
    error: tfc.TrainingFilesError,
    ids: Sequence[str] = (),
    target: str = "",
    every: Sequence[tfc.Violation] | None = None,
) -> int:
    """Print the error and every violation it carries (or `every`); returns the exit code."""
    code = exit_code(error)
    violations = []
    for violation in error.violations if every is None else every:
        # A BadRequest names `conversation_ids[3]`: show the id the user typed too.
        match = _INDEXED.match(violation.subject)
        value = ids[int(match[1])] if match and int(match[1]) < len(ids) else None
        violations.append((violation, value))
    if output.json:
        output.error_document(
            {
                "error": {
                    "code": error.code.name,
                    "message": error.message,
                    "reason": error.reason,
                    "exit_code": code,
                    "violations": [
                        {
                            "subject": v.subject,
                            "reason": v.reason,
                            "description": v.description,
                            **({"value": value} if value is not None else {}),
                        }
                        for v, value in violations
                    ],
                }
            }
        )
        return code
    reason = f" ({error.reason})" if error.reason and error.reason != error.code.name else ""
    message = error.message
    if violations and ": " in message:
        # The server's message goes on to repeat the violations listed below.
        message = message.split(": ", 1)[0]
    lines = [f"error: {error.code.name}{reason}: {message}"]
    rows = [
        (value, v.reason, f"{v.description} ({v.subject})")
        if value is not None
        else (v.subject, v.reason, v.description)
        for v, value in violations
    ]
    widths = [max((len(row[i]) for row in rows), default=0) for i in (0, 1)]
    for subject, why, description in rows:
        lines.append(f"  {subject:<{widths[0]}}  {why:<{widths[1]}}  {description}".rstrip())
    hint = _HINTS.get(code)
    if hint:
        lines.append("hint: " + hint.format(target=target or "the target"))
    for line in lines:
        print(line, file=sys.stderr)
    return code


_HINTS = {
    Exit.UNAUTHENTICATED: "pass --token or set TRAININGFILES_TOKEN (make run prints one)",
    Exit.UNAVAILABLE: "is the server running at {target}? (make run; --target or "
    "TRAININGFILES_TARGET)",
    Exit.DEADLINE_EXCEEDED: "no answer within --timeout; is the server running at {target}?",
}


def fail(output: Output, message: str, code: int) -> int:
    if output.json:
        output.error_document({"error": {"code": None, "message": message, "exit_code": code}})
    else:
        print(f"error: {message}", file=sys.stderr)
    return code


# ----------------------------------------------------------------- progress


class _CountColumn(ProgressColumn):
    """``done/total``, blank for stages that are not counted per conversation."""

    def render(self, task: Task) -> Text:
        if not task.fields.get("counted") or not task.total:
            return Text("")
        return Text(f"{int(task.completed)}/{int(task.total)}", style="progress.download")


class _RateColumn(ProgressColumn):
    """Conversations per second over the stage so far (steadier than a moving window)."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed
        if not task.fields.get("counted") or not elapsed or not task.completed:
            return Text("")
        return Text(f"{task.completed / elapsed:,.1f} conv/s", style="progress.data.speed")


class StageProgress:
    """One progress line per stage of a Create or Add, fed by the stream's events."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            SpinnerColumn(finished_text="[green]✓[/]"),
            TextColumn("{task.description:<12}"),
            BarColumn(),
            _CountColumn(),
            _RateColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self._tasks: dict[int, TaskID] = {}
        self._current: int | None = None

    def __enter__(self) -> StageProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        # Started by the first event only: a rejected request leaves no empty display.
        if self._tasks:
            if exc_info[0] is None:
                self._finish_current()
            self.progress.stop()

    def _finish_current(self) -> None:
        if self._current is not None:
            task = self._tasks[self._current]
            total = self.progress.tasks[task].total or 1
            self.progress.update(task, total=total, completed=total)

    def update(self, event: ProgressEvent) -> None:
        if not self._tasks:
            self.progress.start()
        if event.stage != self._current:
            self._finish_current()
            self._current = event.stage
            self._tasks[event.stage] = self.progress.add_task(
                stage_name(event.stage), total=event.total or None, counted=bool(event.total)
            )
        self.progress.update(
            self._tasks[event.stage], completed=event.done, total=event.total or None
        )
        for warning in event.warnings:
            self.progress.console.print(
                f"[yellow]warning[/] {escape(warning.code)}: {escape(warning.message)}"
            )


def follow(
    output: Output,
    target: str,
    operation: tfc.TrainingFileOperation,
    ids: Sequence[str],
    describe: Callable[[resources_pb2.TrainingFile], str],
    on_cancel: Callable[[str | None], str],
    validate: Callable[[], service_pb2.ValidateConversationsResponse] | None = None,
) -> int:
    """Show a Create/Add stream until its end; Ctrl-C cancels the call on the server.

    When the error's details list only the first violations (the server keeps them
    under gRPC's metadata limit), `validate` fetches every one to show.
    """
    try:
        try:
            if output.json:
                for event in operation:
                    output.document(as_dict(event))
            else:
                with StageProgress(output.err) as view:
                    for event in operation:
                        view.update(event)
            training_file = operation.result()
        except KeyboardInterrupt:
            operation.cancel()
            file_id = operation.training_file_id
            message = f"interrupted: the call was cancelled on the server; {on_cancel(file_id)}"
            if output.json:
                output.error_document(
                    {
                        "error": {
                            "code": "CANCELLED",
                            "message": message,
                            "exit_code": Exit.INTERRUPTED,
                            "training_file_id": file_id,
                        }
                    }
                )
            else:
                print(message, file=sys.stderr)
            return Exit.INTERRUPTED
    except tfc.TrainingFilesError as error:
        code = report_error(output, error, ids, target, _every_violation(error, validate))
        if operation.training_file_id and not output.json:
            print(f"training file: {operation.training_file_id}", file=sys.stderr)
        return code
    if not output.json:
        output.out.print(describe(training_file), highlight=False)
    return Exit.OK


# ----------------------------------------------------------------- commands


def _summary(training_file: resources_pb2.TrainingFile) -> str:
    return (
        f"{training_file.conversation_count} conversations, "
        f"{training_file.total_training_pairs} training pairs, "
        f"version {training_file.version}"
    )


def cmd_create(args: argparse.Namespace, client: tfc.TrainingFilesClient, output: Output) -> int:
    ids = read_ids(args.ids, args.ids_file)
    operation = client.create_training_file(args.name, ids, args.description, timeout=args.timeout)
    return follow(
        output,
        client.target,
        operation,
        ids,
        lambda f: f"[green]✓[/] created {escape(f.name)} {f.id}: {_summary(f)}",
        lambda file_id: (
            f"training file {file_id} ends FAILED" if file_id else "no training file was created"
        ),
        lambda: client.validate_conversations(ids, timeout=args.timeout),
    )


def cmd_add(args: argparse.Namespace, client: tfc.TrainingFilesClient, output: Output) -> int:
    ids = read_ids(args.ids, args.ids_file)
    operation = client.add_conversations(args.file_id, ids, timeout=args.timeout)
    return follow(
        output,
        client.target,
        operation,
        ids,
        lambda f: f"[green]✓[/] added {len(ids)} to {escape(f.name)} {f.id}: {_summary(f)}",
        lambda file_id: f"training file {args.file_id} keeps its previous content",
        lambda: client.validate_conversations(ids, args.file_id, timeout=args.timeout),
    )


def _limited(items: Iterable[Any], limit: int | None) -> list[Any]:
    return list(itertools.islice(items, limit) if limit else items)


def _page_size(limit: int | None) -> int:
    return min(limit, 1000) if limit else 1000


def _table(*columns: str, right: Sequence[str] = ()) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:
        if column in _ID_COLUMNS:  # a cut id is useless: ids never shrink
            table.add_column(column, no_wrap=True, min_width=36)
        elif column in right:
            table.add_column(column, justify="right", overflow="fold")
        else:
            table.add_column(column, overflow="fold")
    return table


_ID_COLUMNS = frozenset({"ID", "CONVERSATION", "OWNER"})


def cmd_list(args: argparse.Namespace, client: tfc.TrainingFilesClient, output: Output) -> int:
    status = (
        _STATUSES[args.status] if args.status else resources_pb2.TRAINING_FILE_STATUS_UNSPECIFIED
    )
    pager = client.list_training_files(
        status, args.all, _page_size(args.limit), timeout=args.timeout
    )
    files: list[resources_pb2.TrainingFile] = _limited(pager, args.limit)
    if output.json:
        output.document({"training_files": [as_dict(f) for f in files]})
        return Exit.OK
    table = _table(
        "ID", "NAME", "STATUS", "CONVS", "PAIRS", "QUALITY", "VER", "CREATED",
        right=("CONVS", "PAIRS", "QUALITY", "VER"),
    )  # fmt: skip
    for f in files:
        quality = (
            f"{f.quality_summary.avg_quality_score:.2f}" if f.HasField("quality_summary") else ""
        )
        table.add_row(
            f.id,
            f.name,
            status_name(f.status),
            str(f.conversation_count),
            str(f.total_training_pairs),
            quality,
            str(f.version),
            when(f.created_at),
        )
    _print_table(output, table, len(files), "training file")
    return Exit.OK


def cmd_conversations(
    args: argparse.Namespace, client: tfc.TrainingFilesClient, output: Output
) -> int:
    pager = client.list_training_file_conversations(
        args.file_id, _page_size(args.limit), timeout=args.timeout
    )
    members: list[resources_pb2.TrainingFileConversation] = _limited(pager, args.limit)
    if output.json:
        output.document({"conversations": [as_dict(m) for m in members]})
        return Exit.OK
    table = _table(
        "CONVERSATION", "ADDED", "PAIRS", "QUALITY", "REVIEWED", "PERSONA", "ARC", "TOPIC",
        right=("PAIRS", "QUALITY"),
    )  # fmt: skip
    for m in members:
        table.add_row(
            m.conversation_id,
            when(m.added_at),
            str(m.training_pair_count),
            f"{m.quality_score:.2f}",
            "yes" if m.human_reviewed else "",
            m.persona_key,
            m.emotional_arc_key,
            m.training_topic_key,
        )
    _print_table(output, table, len(members), "conversation")
    return Exit.OK


def cmd_eligible(args: argparse.Namespace, client: tfc.TrainingFilesClient, output: Output) -> int:
    pager = client.list_eligible_conversations(
        args.exclude or "", _page_size(args.limit), timeout=args.timeout
    )
    conversations: list[resources_pb2.EligibleConversation] = _limited(pager, args.limit)
    if output.json:
        output.document({"conversations": [as_dict(c) for c in conversations]})
        return Exit.OK
    if args.ids_only:
        for conversation in conversations:
            print(conversation.conversation_id)
        return Exit.OK
    table = _table("CONVERSATION", "CREATED", "OWNER")
    for c in conversations:
        table.add_row(c.conversation_id, when(c.created_at), c.created_by)
    _print_table(output, table, len(conversations), "conversation")
    return Exit.OK


def _print_table(output: Output, table: Table, count: int, noun: str) -> None:
    if count:
        output.print(table)
    output.err.print(f"[dim]{count} {noun}{'' if count == 1 else 's'}[/]", highlight=False)


def cmd_show(args: argparse.Namespace, client: tfc.TrainingFilesClient, output: Output) -> int:
    f = client.get_training_file(args.file_id, timeout=args.timeout)
    if output.json:
        output.document(as_dict(f))
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
    if f.json_file_path:
        grid.add_row("json", f"{f.storage_bucket}/{f.json_file_path} ({size(f.json_file_size)})")
        grid.add_row("jsonl", f"{f.storage_bucket}/{f.jsonl_file_path} ({size(f.jsonl_file_size)})")
    grid.add_row(
        "created", f"{when(f.created_at)}" + (f" by {f.created_by}" if f.created_by else "")
    )
    grid.add_row("updated", when(f.updated_at))
    if f.HasField("quality_summary"):
        q = f.quality_summary
        grid.add_row(
            "quality",
            f"avg {q.avg_quality_score:.2f}, min {q.min_quality_score:.2f}, "
            f"max {q.max_quality_score:.2f}; human reviewed {q.human_reviewed_count}",
        )
    output.print(grid)
    if f.HasField("scaffolding_distribution"):
        d = f.scaffolding_distribution
        table = _table("SCAFFOLDING", "KEY", "CONVERSATIONS", right=("CONVERSATIONS",))
        for kind, counts in (
            ("persona", d.personas),
            ("emotional arc", d.emotional_arcs),
            ("training topic", d.training_topics),
        ):
            for key, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
                table.add_row(kind, escape(key), str(count))
                kind = ""
        output.print("")
        output.print(table)
    return Exit.OK


def cmd_archive(args: argparse.Namespace, client: tfc.TrainingFilesClient, output: Output) -> int:
    f = client.archive_training_file(args.file_id, timeout=args.timeout)
    if output.json:
        output.document(as_dict(f))
    else:
        output.out.print(f"[green]✓[/] archived {escape(f.name)} {f.id}", highlight=False)
    return Exit.OK


def cmd_url(args: argparse.Namespace, client: tfc.TrainingFilesClient, output: Output) -> int:
    link = client.get_download_url(
        args.file_id, _FORMATS[args.format], args.expires, timeout=args.timeout
    )
    if output.json:
        output.document(as_dict(link))
        return Exit.OK
    # The URL alone on stdout, so that `$(trainingfiles url ...)` works.
    print(link.url)
    output.err.print(
        f"[dim]{link.file_name}, {size(link.size_bytes)}, expires {when(link.expire_time)}[/]",
        highlight=False,
    )
    return Exit.OK


def _opener(url: str) -> urllib.request.OpenerDirector:
    """Environment proxies apply, except for loopback hosts (the embedded object store)."""
    host = urllib.parse.urlsplit(url).hostname or ""
    loopback = host == "localhost"
    with contextlib.suppress(ValueError):
        loopback = loopback or ipaddress.ip_address(host).is_loopback
    handlers = [urllib.request.ProxyHandler({})] if loopback else []
    return urllib.request.build_opener(*handlers)


def download(
    url: str, expected: int, sink: IO[bytes], on_chunk: Callable[[int], None], timeout: float
) -> int:
    """Copy the object at `url` into `sink`; the byte count must equal `expected`."""
    received = 0
    try:
        with _opener(url).open(url, timeout=timeout) as response:
            while chunk := response.read(CHUNK):
                sink.write(chunk)
                received += len(chunk)
                on_chunk(len(chunk))
    except urllib.error.HTTPError as error:
        raise DownloadError(
            f"the object store answered HTTP {error.code} {error.reason}"
        ) from error
    except (urllib.error.URLError, OSError) as error:
        raise DownloadError(f"download failed: {error}") from error
    if received != expected:
        raise DownloadError(f"received {received} bytes, but the stored object has {expected}")
    return received


def cmd_download(args: argparse.Namespace, client: tfc.TrainingFilesClient, output: Output) -> int:
    link = client.get_download_url(args.file_id, _FORMATS[args.format], timeout=args.timeout)
    timeout = args.timeout or UNARY_TIMEOUT
    if args.output == "-":
        download(link.url, link.size_bytes, sys.stdout.buffer, lambda n: None, timeout)
        sys.stdout.buffer.flush()
        return Exit.OK
    path = Path(args.output or link.file_name)
    if args.output and args.output.endswith(("/", os.sep)) and not path.is_dir():
        raise UsageError(f"-o {args.output}: no such directory")
    if path.is_dir():
        path = path / link.file_name
    partial = path.with_name(path.name + ".part")
    try:
        with open(partial, "wb") as sink:
            if output.json or not output.err.is_terminal:  # a bar is only for a person
                received = download(link.url, link.size_bytes, sink, lambda n: None, timeout)
            else:
                with Progress(
                    TextColumn("{task.description}"),
                    BarColumn(),
                    DownloadColumn(),
                    TransferSpeedColumn(),
                    console=output.err,
                    transient=True,
                ) as progress:
                    task = progress.add_task(link.file_name, total=link.size_bytes)
                    received = download(
                        link.url,
                        link.size_bytes,
                        sink,
                        lambda n: progress.advance(task, n),
                        timeout,
                    )
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    if output.json:
        output.document(
            {
                "training_file_id": args.file_id,
                "format": args.format,
                "path": str(path),
                "size_bytes": received,
            }
        )
    else:
        output.out.print(f"[green]✓[/] {escape(str(path))} ({size(received)})", highlight=False)
    return Exit.OK


_STATUSES = {
    "processing": resources_pb2.TRAINING_FILE_STATUS_PROCESSING,
    "active": resources_pb2.TRAINING_FILE_STATUS_ACTIVE,
    "archived": resources_pb2.TRAINING_FILE_STATUS_ARCHIVED,
    "failed": resources_pb2.TRAINING_FILE_STATUS_FAILED,
}
_FORMATS = {"json": resources_pb2.FILE_FORMAT_JSON, "jsonl": resources_pb2.FILE_FORMAT_JSONL}


# ----------------------------------------------------------------- parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def _common(defaults: bool) -> argparse.ArgumentParser:
    """The options every command takes, before or after its name.

    Subcommands get them without defaults (SUPPRESS), so a value given before the
    command name is not overwritten by the subcommand's default.
    """
    default: Any = None if defaults else argparse.SUPPRESS
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection and output")
    group.add_argument(
        "--target",
        default=default,
        help="server address (env TRAININGFILES_TARGET; default 127.0.0.1:50051)",
    )
    group.add_argument(
        "--token",
        default=default,
        help="bearer token (env TRAININGFILES_TOKEN, preferred: flags show in `ps`)",
    )
    # Not a mutually exclusive group: argparse would move it out of this group when it
    # copies the parent; the last of the two wins.
    group.add_argument(
        "--tls",
        dest="tls",
        action="store_const",
        const=True,
        default=default,
        help="use TLS (default for non-loopback targets; env TRAININGFILES_TLS=1)",
    )
    group.add_argument(
        "--plaintext",
        dest="tls",
        action="store_const",
        const=False,
        default=default,
        help="no TLS (default for loopback targets; env TRAININGFILES_TLS=0)",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=False if defaults else argparse.SUPPRESS,
        help="print JSON: one document, or one line per progress event",
    )
    group.add_argument(
        "--timeout",
        type=_seconds,
        default=default,
        metavar="SECONDS",
        help=f"deadline per call (default {UNARY_TIMEOUT:g} s; none for create and add)",
    )
    return common


def _ids_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ids",
        nargs="+",
        metavar="ID",
        help="conversation ids (spaces or commas between them); - reads standard input",
    )
    parser.add_argument(
        "--ids-file",
        action="append",
        metavar="FILE",
        help="a file of conversation ids, one per line (# comments); - is standard input",
    )


def _epilog() -> str:
    lines = ["exit codes:"]
    lines.extend(f"  {code:<4} {meaning}" for code, meaning in _EXIT_HELP)
    lines.append("")
    lines.append("examples:")
    lines.extend(
        f"  {PROG} {example}"
        for example in (
            "eligible --limit 5",
            "create demo --ids 5795833f-20da-45aa-9b56-d4b07e575bcc "
            "9c41aecb-e43a-4af7-9751-862e7009fb08",
            "eligible --limit 20 --ids-only | trainingfiles create twenty --ids -",
            "download FILE_ID --format jsonl -o demo.jsonl",
        )
    )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Build, inspect and download LoRA training files "
        "(Training File Service, trainingfiles.v1).",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_common(defaults=True)],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = _common(defaults=False)

    def command(name: str, help: str, handler: Callable[..., int]) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=help,
            description=help,
            parents=[common],
            epilog=_epilog(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.set_defaults(handler=handler)
        return sub

    create = command("create", "create a training file, with live progress", cmd_create)
    create.add_argument("name", help="1-128 characters of [A-Za-z0-9_.-], not starting with .")
    create.add_argument("--description", help="free text, at most 2000 characters")
    _ids_options(create)

    add = command("add", "add conversations to an active training file", cmd_add)
    add.add_argument("file_id", metavar="FILE_ID")
    _ids_options(add)

    listing = command("list", "list training files, newest first", cmd_list)
    listing.add_argument("--status", choices=sorted(_STATUSES), help="only files in this status")
    listing.add_argument("--all", action="store_true", help="include archived files")
    listing.add_argument("--limit", type=_positive, help="at most this many (default: all)")

    conversations = command(
        "conversations", "list the conversations in a training file", cmd_conversations
    )
    conversations.add_argument("file_id", metavar="FILE_ID")
    conversations.add_argument("--limit", type=_positive, help="at most this many")

    eligible = command("eligible", "list conversations that can be added", cmd_eligible)
    eligible.add_argument("--exclude", metavar="FILE_ID", help="leave out those in this file")
    eligible.add_argument("--limit", type=_positive, help="at most this many (default: all)")
    eligible.add_argument("--ids-only", action="store_true", help="print only the ids")

    show = command("show", "a training file's metadata, quality and distribution", cmd_show)
    show.add_argument("file_id", metavar="FILE_ID")

    fetch = command("download", "download the JSON or JSONL file", cmd_download)
    fetch.add_argument("file_id", metavar="FILE_ID")
    fetch.add_argument("--format", choices=sorted(_FORMATS), default="jsonl")
    fetch.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        help="file or directory (default: the file's name); - is stdout",
    )

    archive = command("archive", "archive a training file", cmd_archive)
    archive.add_argument("file_id", metavar="FILE_ID")

    url = command("url", "print a presigned download URL", cmd_url)
    url.add_argument("file_id", metavar="FILE_ID")
    url.add_argument("--format", choices=sorted(_FORMATS), default="jsonl")
    url.add_argument(
        "--expires",
        type=int,
        metavar="SECONDS",
        help="validity, 60 to 604800 seconds (default 3600)",
    )
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("trainingfiles-client")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


# ----------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (see ``--help``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    output = Output.create(args.json)
    if args.timeout is None and args.command not in ("create", "add"):
        args.timeout = UNARY_TIMEOUT
    target = ""
    try:
        with tfc.TrainingFilesClient(args.target, token=args.token, tls=args.tls) as client:
            target = client.target
            handler: Callable[[argparse.Namespace, tfc.TrainingFilesClient, Output], int]
            handler = args.handler
            return handler(args, client, output)
    except UsageError as error:
        return _usage(parser, output, str(error))
    except ValueError as error:  # configuration from the environment
        return _usage(parser, output, str(error))
    except tfc.TrainingFilesError as error:
        return report_error(output, error, target=target)
    except DownloadError as error:
        return fail(output, str(error), Exit.DOWNLOAD_FAILED)
    except KeyboardInterrupt:
        return fail(output, "interrupted", Exit.INTERRUPTED)
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep Python from
        # complaining again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return Exit.ERROR


def _usage(parser: argparse.ArgumentParser, output: Output, message: str) -> int:
    if output.json:
        return fail(output, message, Exit.USAGE)
    parser.print_usage(sys.stderr)
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return Exit.USAGE


if __name__ == "__main__":
    sys.exit(main())
