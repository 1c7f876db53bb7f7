"""The stored objects: ``download`` them, or print a presigned ``url``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
from rich.markup import escape

from trainingfiles.v1 import resources_pb2

from ..download import save, stream
from ..exits import Exit, UsageError
from ..output import as_dict, size, when
from ..session import Session, command, file_id_argument

FORMATS = {"json": resources_pb2.FILE_FORMAT_JSON, "jsonl": resources_pb2.FILE_FORMAT_JSONL}

format_option = click.option(
    "--format", "file_format", type=click.Choice(sorted(FORMATS)), default="jsonl",
    show_default=True, help="which of the file's two objects",
)  # fmt: skip


@command(
    "download",
    examples=[
        "download FILE_ID --format jsonl -o demo.jsonl",
        "download FILE_ID --format json -o downloads/",
        "download FILE_ID -o - | head",
    ],
)
@file_id_argument
@format_option
@click.option(
    "-o", "--output", "destination", metavar="PATH",
    help="file or directory (default: the file's name); - is stdout",
)  # fmt: skip
def download(session: Session, file_id: str, file_format: str, destination: str | None) -> int:
    """Download the JSON or JSONL file, checked against the stored size.

    It streams to PATH.part, renamed once complete; a progress bar shows for large files.
    """
    timeout = session.settings.timeout
    link = session.client.get_download_url(file_id, FORMATS[file_format], **session.options())
    if destination == "-":
        stream(link, sys.stdout.buffer, lambda n: None, timeout)
        sys.stdout.buffer.flush()
        return Exit.OK
    path = Path(destination or link.file_name)
    if destination and destination.endswith(("/", os.sep)) and not path.is_dir():
        raise UsageError(f"-o {destination}: no such directory")
    if path.is_dir():
        path = path / link.file_name
    output = session.output
    # A bar is only for a person: not with --json, not off a terminal.
    console = output.err if output.err.is_terminal and not output.json else None
    fetched = save(link, path, console, timeout)
    if output.json:
        output.document(
            {
                "training_file_id": file_id,
                "format": file_format,
                "path": str(path),
                "size_bytes": fetched.size,
                "sha256": fetched.sha256,
            }
        )
    else:
        output.out.print(f"[green]✓[/] {escape(str(path))} ({size(fetched.size)})", highlight=False)
    return Exit.OK


@command(
    "url",
    examples=["url FILE_ID --format json --expires 600", "url FILE_ID | xargs curl -sO"],
)
@file_id_argument
@format_option
@click.option(
    "--expires", type=int, metavar="SECONDS",
    help="how long the URL stays valid (default: the server's); the server says what it allows",
)  # fmt: skip
def url(session: Session, file_id: str, file_format: str, expires: int | None) -> int:
    """Print a presigned download URL (alone on stdout, for `$(...)`)."""
    link = session.client.get_download_url(
        file_id, FORMATS[file_format], expires, **session.options()
    )
    if session.output.json:
        session.output.document(as_dict(link))
        return Exit.OK
    click.echo(link.url)
    session.output.err.print(
        f"[dim]{link.file_name}, {size(link.size_bytes)}, expires {when(link.expire_time)}[/]",
        highlight=False,
    )
    return Exit.OK


COMMANDS = [download, url]
