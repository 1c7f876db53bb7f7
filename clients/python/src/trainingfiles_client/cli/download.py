"""Streaming a stored object from its presigned URL, checked before it is kept.

The HTTP client is the standard library's (`urllib.request`): the client distribution
needs nothing beyond grpcio and protobuf (and `rich` and `click` for this command), and
one GET of a presigned URL is all there is to do. It streams in chunks, verifies TLS
against the system's roots, and honours the environment's proxies except for loopback
hosts (the embedded object store of `make run`). aiohttp, which the server uses, would
bring an event loop and seven packages into a synchronous command; httpx five more
packages and a CA bundle of its own.

What is kept is checked: the byte count must be the stored size, and the SHA-256 the
stored one when the service reports it (`expected_sha256`: the contract has no such
field yet; the digest is computed and shown all the same). A download goes to
``NAME.part`` and is renamed once checked; a ``.part`` left by an earlier run is started
over, never resumed, since nothing could vouch for its bytes.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
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

from trainingfiles.v1 import service_pb2
from trainingfiles_client._config import is_loopback

from .exits import DownloadError

CHUNK = 256 * 1024
# Below this, a download is over before a progress bar is worth drawing.
PROGRESS_FROM = 1024 * 1024
# Seconds without a byte from the object store before giving up (--timeout overrides).
READ_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class Fetched:
    size: int
    sha256: str


def expected_sha256(link: service_pb2.GetDownloadUrlResponse) -> str | None:
    """The object's SHA-256 (hex) when the service reports one, else None."""
    if "sha256" not in link.DESCRIPTOR.fields_by_name:
        return None  # not in the contract (yet): only the size can be checked
    digest: str = getattr(link, "sha256")  # noqa: B009 - a field newer code may have
    return digest.lower() or None


def _opener(url: str) -> urllib.request.OpenerDirector:
    """Environment proxies apply, except for loopback hosts (the embedded object store)."""
    host = urllib.parse.urlsplit(url).hostname or ""
    handlers = [urllib.request.ProxyHandler({})] if is_loopback(host) else []
    return urllib.request.build_opener(*handlers)


def stream(
    link: service_pb2.GetDownloadUrlResponse,
    sink: IO[bytes],
    on_chunk: Callable[[int], object],
    timeout: float | None,
) -> Fetched:
    """Copy the object into `sink`; its size (and SHA-256, if known) must match."""
    digest = hashlib.sha256()
    received = 0
    try:
        with _opener(link.url).open(link.url, timeout=timeout or READ_TIMEOUT) as response:
            while chunk := response.read(CHUNK):
                sink.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                on_chunk(len(chunk))
    except urllib.error.HTTPError as error:
        raise DownloadError(
            f"the object store answered HTTP {error.code} {error.reason}"
        ) from error
    except (urllib.error.URLError, OSError) as error:
        raise DownloadError(f"download failed: {error}") from error
    if received != link.size_bytes:
        raise DownloadError(
            f"received {received} bytes, but the stored object has {link.size_bytes}"
        )
    expected = expected_sha256(link)
    if expected is not None and digest.hexdigest() != expected:
        raise DownloadError(f"the SHA-256 is {digest.hexdigest()}, the stored one {expected}")
    return Fetched(received, digest.hexdigest())


def save(
    link: service_pb2.GetDownloadUrlResponse,
    path: Path,
    console: Console | None,
    timeout: float | None,
) -> Fetched:
    """Download to `path` by way of ``path.part``; a progress bar on `console` if given
    and the object is large enough to want one."""
    partial = path.with_name(path.name + ".part")
    try:
        with open(partial, "wb") as sink:
            if console is None or link.size_bytes < PROGRESS_FROM:
                fetched = stream(link, sink, lambda n: None, timeout)
            else:
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
                    advance = progress.advance
                    fetched = stream(link, sink, lambda n: advance(task, n), timeout)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return fetched
