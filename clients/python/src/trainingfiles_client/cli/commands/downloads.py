"""The stored objects: ``download`` them (one, or ``--all`` into a folder), or print a
presigned ``url``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
from rich.markup import escape

import trainingfiles_client as tfc

from ..download import save, stream
from ..exits import Exit, UsageError
from ..output import as_dict, size, when
from ..outputs import DOWNLOADABLE, SPLITS, split_name
from ..session import Session, command, file_id_argument, version_option

format_option = click.option(
    "--format", "file_format", type=click.Choice(DOWNLOADABLE), default=None, metavar="NAME",
    help="the output's format (default v4_jsonl): " + ", ".join(DOWNLOADABLE[:-2])
    + " (json and jsonl name the v4 ones)",
)  # fmt: skip
split_option = click.option(
    "--split", type=click.Choice(SPLITS),
    help="the output's split (default: all, or train for a trainer format of a split file)",
)  # fmt: skip


@command(
    "download",
    examples=[
        "download FILE_ID --format v4_jsonl -o demo.jsonl",
        "download FILE_ID --format parquet --split validation -o downloads/",
        "download FILE_ID --all dataset/   # then datasets.load_dataset('dataset')",
        "download FILE_ID --all dataset-v1/ --version 1",
        "download FILE_ID -o - | head",
    ],
)
@file_id_argument
@format_option
@split_option
@version_option
@click.option(
    "-o", "--output", "destination", metavar="PATH",
    help="file or directory (default: the file's name); - is stdout",
)  # fmt: skip
@click.option(
    "--all", "folder", metavar="DIR",
    help="every output of the version and its card, into DIR",
)  # fmt: skip
def download(
    session: Session,
    file_id: str,
    file_format: str | None,
    split: str | None,
    version: int | None,
    destination: str | None,
    folder: str | None,
) -> int:
    """Download an output (or --all of them), checked against the stored size and SHA-256.

    It streams to PATH.part, renamed once complete; a progress bar shows for large files.
    A folder made with --all loads with Hugging Face `datasets.load_dataset(DIR)`. With
    --version, that version's outputs (a pruned version's are gone: exit code 6).
    """
    if folder is not None:
        if file_format or split or destination:
            raise UsageError("--all takes every output: no --format, --split or -o with it")
        return _download_all(session, file_id, folder, version)
    timeout = session.settings.timeout
    chosen = file_format or tfc.Format.V4_JSONL.value
    link = session.client.get_download_url(
        file_id, chosen, split=split, version=version, **session.options()
    )
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
                "format": tfc.Format.of(chosen).value,
                "split": split_name(link.split) if link.split else None,
                "version": link.version or None,
                "path": str(path),
                "size_bytes": fetched.size,
                "sha256": fetched.sha256,
            }
        )
    else:
        output.out.print(f"[green]✓[/] {escape(str(path))} ({size(fetched.size)})", highlight=False)
    return Exit.OK


def _download_all(session: Session, file_id: str, folder: str, version: int | None) -> int:
    output = session.output

    def saved(done: tfc.Downloaded) -> None:
        if not output.json:
            line = f"[green]✓[/] {escape(str(done.path))} ({size(done.size)})"
            output.out.print(line, highlight=False)

    files = session.client.download_outputs(
        file_id, folder, version=version, timeout=session.settings.timeout, on_saved=saved
    )
    if output.json:
        listed = [
            {
                "path": str(done.path),
                "format": done.format.value if done.format else None,
                "split": done.split.value if done.split else None,
                "size_bytes": done.size,
                "sha256": done.sha256,
            }
            for done in files
        ]
        output.document({"training_file_id": file_id, "directory": folder, "files": listed})
    else:
        total = sum(done.size for done in files)
        output.err.print(f"[dim]{len(files)} files, {size(total)} in {escape(folder)}[/]")
    return Exit.OK


@command(
    "url",
    examples=[
        "url FILE_ID --format v4_json --expires 600",
        "url FILE_ID --format openai_chat --split validation",
        "url FILE_ID | xargs curl -sO",
        "url FILE_ID --version 1",
    ],
)
@file_id_argument
@format_option
@split_option
@version_option
@click.option(
    "--expires", type=int, metavar="SECONDS",
    help="how long the URL stays valid (default: the server's); the server says what it allows",
)  # fmt: skip
def url(
    session: Session,
    file_id: str,
    file_format: str | None,
    split: str | None,
    version: int | None,
    expires: int | None,
) -> int:
    """Print a presigned download URL of an output (alone on stdout, for `$(...)`)."""
    chosen = file_format or tfc.Format.V4_JSONL.value
    link = session.client.get_download_url(
        file_id, chosen, expires, split, version=version, **session.options()
    )
    if session.output.json:
        session.output.document(as_dict(link))
        return Exit.OK
    click.echo(link.url)
    served = f", version {link.version}" if link.version else ""
    session.output.err.print(
        f"[dim]{escape(link.file_name)}, {size(link.size_bytes)}{served}, "
        f"expires {when(link.expire_time)}[/]",
        highlight=False,
    )
    return Exit.OK


COMMANDS = [download, url]
