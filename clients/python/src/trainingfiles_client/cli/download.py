"""Saving a stored object from its presigned URL, with a progress bar for large ones.

The streaming and its checks are the client's (`trainingfiles_client.download`: the
standard library's HTTP client, the size and SHA-256 checked, ``NAME.part`` renamed once
complete, never resumed); this module adds the bar a person sees.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import IO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

import trainingfiles_client as tfc
from trainingfiles.v1 import service_pb2

# Below this, a download is over before a progress bar is worth drawing.
PROGRESS_FROM = 1024 * 1024

Fetched = tfc.Downloaded


def expected_sha256(link: service_pb2.GetDownloadUrlResponse) -> str | None:
    """The object's SHA-256 (hex) when the service reports one, else None."""
    return link.sha256.lower() or None


def stream(
    link: service_pb2.GetDownloadUrlResponse,
    sink: IO[bytes],
    on_chunk: Callable[[int], object],
    timeout: float | None,
) -> Fetched:
    """Copy the object into `sink`; its size (and SHA-256, if known) must match."""
    return tfc.download(link, sink, timeout=timeout, on_chunk=on_chunk)


def save(
    link: service_pb2.GetDownloadUrlResponse,
    path: Path,
    console: Console | None,
    timeout: float | None,
) -> Fetched:
    """Download to `path` by way of ``path.part``; a progress bar on `console` if given
    and the object is large enough to want one."""
    if console is None or link.size_bytes < PROGRESS_FROM:
        return tfc.download(link, path, timeout=timeout)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(link.file_name, total=link.size_bytes)
        return tfc.download(
            link, path, timeout=timeout, on_chunk=lambda n: progress.advance(task, n)
        )
