"""Downloads: a stored object streamed from its presigned URL, checked before it is kept.

The HTTP client is the standard library's (`urllib.request`): the distribution needs
nothing beyond grpcio and protobuf, and one GET of a presigned URL is all there is to do.
It streams in chunks (memory stays bounded whatever the size), verifies TLS against the
system's roots, and honours the environment's proxies except for loopback hosts (the
embedded object store of `make run`). aiohttp would bring an event loop and seven
packages, httpx five more packages and a CA bundle of its own.

What is kept is checked: the byte count must be the stored size, and the SHA-256 the
stored one when the service reports it. A download to a path goes to ``PATH.part``,
which is renamed once checked; a ``.part`` left by an earlier run is started over, never
resumed, since nothing could vouch for its bytes.
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
from typing import IO, Final, Protocol

from ._config import is_loopback
from ._outputs import Format, Split

__all__ = ["DownloadError", "Downloaded", "download"]

CHUNK: Final = 256 * 1024
# Seconds without a byte from the object store before giving up (`timeout` overrides).
READ_TIMEOUT: Final = 60.0


class DownloadError(Exception):
    """An object could not be fetched completely, or is not the stored one.

    Raised for an HTTP error of the object store (an expired URL answers 403), a broken
    connection, and a byte count or SHA-256 that differs from the stored object's. No
    partial file is left behind.

    Example:
        >>> try:
        ...     client.download_outputs(file_id, "dataset/")
        ... except trainingfiles_client.DownloadError as error:
        ...     print(error)
    """


@dataclass(frozen=True, slots=True)
class Downloaded:
    """One object fetched and checked: where it went, its size and SHA-256 (hex), and,
    for an output of `download_outputs`, its format and split."""

    path: Path | None  # None when written to a file object
    size: int
    sha256: str
    format: Format | None = None
    split: Split | None = None


class Link(Protocol):
    """What a download needs of a `GetDownloadUrlResponse`."""

    @property
    def url(self) -> str: ...
    @property
    def size_bytes(self) -> int: ...
    @property
    def sha256(self) -> str: ...


def _opener(url: str) -> urllib.request.OpenerDirector:
    """Environment proxies apply, except for loopback hosts (the embedded object store)."""
    host = urllib.parse.urlsplit(url).hostname or ""
    handlers = [urllib.request.ProxyHandler({})] if is_loopback(host) else []
    return urllib.request.build_opener(*handlers)


def _stream(
    link: Link, sink: IO[bytes], on_chunk: Callable[[int], object], timeout: float | None
) -> tuple[int, str]:
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
    expected = (link.sha256 or "").lower()
    if expected and digest.hexdigest() != expected:
        raise DownloadError(f"the SHA-256 is {digest.hexdigest()}, the stored one {expected}")
    return received, digest.hexdigest()


def download(
    link: Link,
    destination: str | os.PathLike[str] | IO[bytes],
    *,
    timeout: float | None = None,
    on_chunk: Callable[[int], object] | None = None,
) -> Downloaded:
    """Fetch the object a `get_download_url` response points at, checked.

    To a path: streamed to ``PATH.part``, checked (size, and SHA-256 when reported), then
    renamed over PATH; on any failure nothing is left. To a binary file object: written
    as it arrives, checked at the end. `timeout` bounds each wait for the object store
    (default 60 s); `on_chunk` is called with each chunk's size. Raises `DownloadError`.

    Example:
        >>> link = client.get_download_url(file_id, "parquet", split="validation")
        >>> download(link, link.file_name).size == link.size_bytes
        True
    """
    progress = on_chunk or (lambda n: None)
    if not isinstance(destination, str | os.PathLike):
        size, sha256 = _stream(link, destination, progress, timeout)
        return Downloaded(None, size, sha256)
    path = Path(destination)
    partial = path.with_name(path.name + ".part")
    try:
        with open(partial, "wb") as sink:
            size, sha256 = _stream(link, sink, progress, timeout)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return Downloaded(path, size, sha256)


def safe_name(name: str) -> str:
    """`name` if it is a plain file name (the service sends only such), else DownloadError."""
    if not name or name in (".", "..") or Path(name).name != name or "\\" in name:
        raise DownloadError(f"refusing to save under {name!r}: not a plain file name")
    return name
