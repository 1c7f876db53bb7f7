"""Object storage over the S3 protocol: one aiobotocore client per process.

Path-style addressing and SigV4, as Supabase Storage's S3 endpoint requires. Transient
errors (throttling, 5xx, connection resets) are retried by botocore's standard retry mode
with exponential backoff; what still fails is translated into the domain's errors here.

Uploads stream: an `ObjectWriter` sends each part as soon as it is complete, a few at a
time, while later bytes are still being produced; bytes of a stored object are appended
by a server-side copy (UploadPartCopy) where the store supports it, and a writer keeps
ranges of a stored object whose bytes stream through (a Remove, a Refresh) by copying
those that can be parts of their own: parts below 5 MiB only where the store accepts
them, which it is asked once per process (`Storage.accepts_small_parts`). A failed
multipart upload is aborted so no invisible parts are left behind.

Enriched documents, read by the thousand, are fetched with presigned GETs on a plain
aiohttp session instead of `get_object`: signing a URL and sending one request cost about
0.27 ms of CPU, where `get_object` costs about 0.67 ms (botocore's event hooks, response
parsing, retry and checksum handlers) — at 10,000 documents that was 40 % of a Create's
CPU (docs/bench.md). The URLs are signed by botocore's SigV4 query signer itself, not
through the client's `generate_presigned_url` (endpoint resolution and event hooks for
every URL): the same URL for ~45 instead of ~140 µs. Retries follow the client's: the
same attempt count, botocore's standard backoff.

Every supported store's dialect is spoken here, with botocore's own event hooks
(`speak_every_dialect`) and nowhere else (README: "Supported object stores"):

* an XML request body (DeleteObjects, CompleteMultipartUpload, CreateBucket with a
  configuration) goes with `Content-Type: application/xml`: Supabase Storage parses a body
  only when its type says XML, and answers DeleteObjects without one with 400;
* an error body whose `<Error>` root carries a namespace (Supabase Storage writes
  `<Error xmlns="http://s3.amazonaws.com/doc/2006-03-01/">`) yields its Code and Message,
  which botocore would otherwise read as empty; a code still missing is judged by the
  HTTP status;
* a missing object and a missing bucket are told apart by asking for the bucket when an
  object is reported missing: Supabase Storage answers NoSuchKey for both;
* nothing relies on CompleteMultipartUpload honouring the part list: a store may assemble
  every part uploaded (Supabase Storage does when it cannot read the list), so a writer
  uploads exactly the parts it lists, numbered in the order of their bytes.

Cleanup calls (DeleteObjects, AbortMultipartUpload, ListMultipartUploads) that the store
refuses outright — a 4xx that is not about a missing thing, or 501 — are remembered in
`Storage.rejections`: logged once, clearly, and reported by health (`health.py`), while
the callers log, keep the work for the sweeper and go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import io
import itertools
import logging
import os
import random
import ssl
import tempfile
import urllib.request
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
)
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from xml.etree import ElementTree

import aiobotocore.session
import aiohttp
from aiobotocore.config import AioConfig
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import BotoCoreError, ClientError
from botocore.httpsession import get_cert_path
from botocore.utils import percent_encode
from yarl import URL

from . import metrics, tracing
from .config import Settings
from .errors import Aborted, ServiceError, Unavailable

# S3's minimum size of every part but the last.
MIN_PART_SIZE = 5 * 1024 * 1024
# Parts are cut at this size (plus the rest of the chunk that crosses it). The minimum is
# right: with parts in flight on two objects at once, larger parts only cost memory (8
# MiB: +30 MB RSS, 16 MiB: +55 MB at 10,000 conversations) and were no faster (`make
# bench`). S3 allows 10,000 parts, so objects up to ~48 GiB.
PART_SIZE = MIN_PART_SIZE
# Parts sent at once per object: the store works on one while the next is produced and
# sent; memory stays bounded (each part in flight is held until the store has it). The
# objects of one build share a budget instead (`parts_in_flight`): a build with a dozen
# outputs must not hold a dozen times the parts.
PARTS_IN_FLIGHT = 2


def parts_in_flight(count: int) -> asyncio.Semaphore:
    """A budget of parts in flight that several writers share."""
    return asyncio.Semaphore(count)


# Largest range one server-side copy moves (S3 allows 5 GiB per part).
COPY_PART_SIZE = 256 * 1024 * 1024
# How long an abort lets the parts in flight finish before it drops the upload.
ABORT_SETTLE_SECONDS = 10.0
# S3 allows this many parts per multipart upload.
MAX_PARTS = 10_000
# Where a store accepts parts below MIN_PART_SIZE (`Storage.small_parts`), a kept range
# of a stored object at least this long is copied by the store rather than written from
# the bytes streaming through: each copy is one more request and one more part (of the
# 10,000 allowed), which for a few hundred KiB costs about what sending them does, while
# a removal spread over a file keeps runs of a few MiB that are worth copying.
SMALL_COPY_MIN = 256 * 1024
# The probe of `Storage.small_parts`: an object under this reserved prefix of the
# training bucket, assembled from 1-byte parts, then deleted (one the process died
# before deleting is 3 bytes; the next probe's key differs).
PROBE_PREFIX = ".probes/"
_READ_SIZE = 1024 * 1024
log = logging.getLogger("trainingfiles.storage")

_MISSING = ("NoSuchKey", "404", "NotFound")
_NO_BUCKET = "NoSuchBucket"
# Refusals of a cleanup call that mean "not like this, not ever": not a missing thing
# (404), a conflict (409), a failed precondition (412) or throttling (429). 401 and 403
# stay `Unavailable` (credentials), like everywhere else.
_NOT_REJECTIONS = frozenset({401, 403, 404, 408, 409, 412, 429})
# Presigned document GETs: how long a URL is valid (it is used at once), which answers
# are retried, and the longest pause between attempts (botocore's standard mode).
_DOCUMENT_URL_SECONDS = 300
_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
_MAX_BACKOFF_SECONDS = 20.0
# Like botocore: the stored bytes, never a compressed rendition of them.
_IDENTITY = {"Accept-Encoding": "identity"}


@dataclass(frozen=True, slots=True)
class StoredDocument:
    """An enriched document's bytes, and which version of the object they were."""

    data: bytes
    etag: str | None  # as the store sent it, quotes removed
    modified: datetime | None  # Last-Modified: when the enrichment wrote it


def _identity(headers: Mapping[str, str]) -> tuple[str | None, datetime | None]:
    etag = headers.get("ETag")
    modified = headers.get("Last-Modified")
    moment = None
    if modified:
        with contextlib.suppress(TypeError, ValueError):
            moment = email.utils.parsedate_to_datetime(modified)
    return (etag.strip('"') if etag else None), moment


class ObjectMissing(Exception):
    """The object does not exist (its bucket does)."""


class BucketMissing(Exception):
    """A bucket the service uses does not exist: a configuration error, never a caller's."""

    def __init__(self, bucket: str) -> None:
        super().__init__(f"object storage bucket {bucket!r} does not exist")
        self.bucket = bucket


class StoreRejected(ServiceError):
    """The store refused a cleanup call outright (see `Storage.rejections`)."""

    def __init__(self, operation: str, reason: str) -> None:
        super().__init__(f"object storage refuses {operation}: {reason}")
        self.operation = operation


class UploadVanished(Aborted):
    """A multipart upload of a build's was aborted by someone else. Only the sweeper
    does that, and only to an upload whose build's lease had expired: the build lost its
    lease while it was stalled (see `Builds._guarded`)."""

    def __init__(self) -> None:
        super().__init__(
            "the build's upload was cleaned up after its lease expired; nothing was "
            "changed, retry the call",
            reason="LEASE_LOST",
        )


class ObjectTooLarge(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Turn connectivity and server-side failures into `Unavailable`."""
    try:
        yield
    except (BotoCoreError, OSError, TimeoutError) as exc:
        raise Unavailable("object storage is unavailable; retry later") from exc
    except ClientError as exc:
        code, status = _code(exc), _status(exc)
        if code == _NO_BUCKET:
            raise BucketMissing(exc.response.get("Error", {}).get("BucketName", "")) from exc
        if code in _MISSING:
            raise ObjectMissing(exc.response.get("Error", {}).get("Key", "")) from exc
        if code == "NoSuchUpload":
            raise UploadVanished from exc
        if status >= 500 or status in (401, 403):
            raise Unavailable("object storage is unavailable; retry later") from exc
        raise


def _status(exc: ClientError) -> int:
    status: int = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return status


def _code(exc: ClientError) -> str:
    """The error's code, or its HTTP status where the store sent none (HEAD has no body)."""
    code: str = exc.response.get("Error", {}).get("Code") or str(_status(exc))
    return code


def _rejection(exc: ClientError) -> str | None:
    """Why the store refused a call outright, or None if that is not what happened."""
    status = _status(exc)
    if status == 501 or (400 <= status < 500 and status not in _NOT_REJECTIONS):
        message = exc.response.get("Error", {}).get("Message", "")
        code = _code(exc)
        named = f"HTTP {status}" + (f" {code}" if code != str(status) else "")
        return named + (f": {message.strip()}" if message.strip() else "")
    return None


def _copy_unsupported(exc: ClientError) -> bool:
    """The store does not implement UploadPartCopy (S3 answers 501 NotImplemented)."""
    return _status(exc) == 501 or _code(exc) == "NotImplemented"


# ----------------------------------------------------------------- dialects


def _xml_body_content_type(model: Any, params: dict[str, Any], **_: Any) -> None:
    """`before-call.s3`: an XML request body is sent as `application/xml`.

    botocore sends such bodies without a Content-Type; S3 and SeaweedFS do not mind, but
    Supabase Storage then ignores the body (CompleteMultipartUpload's part list) or
    refuses the call (DeleteObjects: 400 "must have required property 'Body'"). The
    operation's model says which bodies are XML: a payload that is a structure.
    """
    shape = model.input_shape
    payload = shape.serialization.get("payload") if shape is not None else None
    if payload is None or shape.members[payload].type_name != "structure":
        return
    headers: dict[str, str] = params["headers"]
    if params.get("body") and not any(name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = "application/xml"


def _namespaced_error(
    operation_model: Any,
    response_dict: dict[str, Any],
    customized_response_dict: dict[str, Any],
    **_: Any,
) -> None:
    """`before-parse.s3`: read an `<Error>` whose root element carries a namespace.

    botocore's parser finds Code and Message only under a bare `<Error>` root and leaves
    both empty otherwise; what this returns in `customized_response_dict` replaces its
    `Error`. Like botocore, a 200 answer that is an error (possible for non-streaming
    operations) is turned into a 500, which the retry mode retries.
    """
    status = response_dict["status_code"]
    body = response_dict.get("body")
    if not isinstance(body, bytes) or b"<Error" not in body[:512]:
        return
    if status < 300 and operation_model.has_streaming_output:
        return
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return
    namespace, _brace, name = root.tag.rpartition("}")
    if not namespace or name != "Error":
        return
    error = {
        child.tag.rpartition("}")[2]: (child.text or "")
        for child in root
        if child.tag.rpartition("}")[2] not in ("RequestId", "HostId")
    }
    error.setdefault("Code", "")
    error.setdefault("Message", "")
    customized_response_dict["Error"] = error
    if status < 300:
        response_dict["status_code"] = 500


def _count_retry(request: Any, event_name: str = "", **_: Any) -> None:
    """Each attempt after a request's first is a retry (botocore's standard retry mode)."""
    if request.context.get("retries", {}).get("attempt", 1) > 1:
        metrics.STORAGE_RETRIES.labels(event_name.rpartition(".")[2]).inc()


def _start_span(model: Any, context: dict[str, Any], **_: Any) -> None:
    span = tracing.start_storage_span(model.name)
    if span is not None:
        context["trainingfiles_span"] = span


def _end_span(
    context: dict[str, Any],
    exception: BaseException | None = None,
    http_response: Any = None,
    **_: Any,
) -> None:
    span = context.pop("trainingfiles_span", None)
    if span is None:
        return
    if exception is not None:
        problem: str | None = type(exception).__name__
    else:
        status = getattr(http_response, "status_code", 200)
        problem = f"HTTP {status}" if status >= 300 else None
    tracing.end_storage_span(span, problem)


def _observe(client: Any) -> None:
    """Retries counted, and a span per S3 call while tracing is on (`tracing.py`)."""
    client.meta.events.register("before-send.s3", _count_retry)
    client.meta.events.register("before-call.s3", _start_span)
    client.meta.events.register("after-call.s3", _end_span)
    client.meta.events.register("after-call-error.s3", _end_span)


def speak_every_dialect(client: Any) -> None:
    """Register the hooks above on the client's events (module docstring)."""
    client.meta.events.register("before-call.s3", _xml_body_content_type)
    client.meta.events.register("before-parse.s3", _namespaced_error)


class _MemoryPart:
    """A part being filled, in memory: written chunks are copied once, into the part."""

    def __init__(self) -> None:
        # A `BytesIO` that owns its bytes: made from a `bytes` (what botocore does with
        # one) it would be copied again by the HTTP client, which needs a writable view
        # of it, for as long as the part is in flight.
        self._buffer = io.BytesIO()

    @property
    def size(self) -> int:
        return self._buffer.tell()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._buffer.write(data)

    def take(self) -> io.BytesIO:
        """The part's bytes, to send; the part starts empty again."""
        body, self._buffer = self._buffer, io.BytesIO()
        body.seek(0)
        return body

    def close(self) -> None:
        self._buffer = io.BytesIO()


class _SpooledPart(_MemoryPart):
    """A part being filled in an unnamed temporary file, read into memory when it is sent.

    For the outputs of a build beyond the v4 pair: a dozen parts filling at once would
    hold a dozen times PART_SIZE; spooled, only the parts in flight are in memory. The
    file lives in the page cache (the kernel writes it back, or not, as it likes) and
    is gone when closed, also if the process dies.
    """

    def __init__(self) -> None:
        self._file: io.BufferedRandom | None = None
        self._size = 0

    @property
    def size(self) -> int:
        return self._size

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._file is None:
            self._file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by `close`
        self._file.write(data)
        self._size += len(data)

    def take(self) -> io.BytesIO:
        body = io.BytesIO()
        if self._file is None or not self._size:
            return body
        body.seek(self._size - 1)
        body.write(b"\0")  # sized, and owning its buffer
        self._file.seek(0)
        with body.getbuffer() as view:
            self._file.readinto(view)
        self._file.seek(0)
        self._file.truncate()
        self._size = 0
        body.seek(0)
        return body

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._size = 0


class ObjectWriter:
    """One object, stored while its bytes are still being produced.

    Every complete part goes up at once, up to `PARTS_IN_FLIGHT` at a time (or as many as
    a budget shared with other writers allows); `write` waits
    while that many are in flight, so a slow store slows the producer instead of growing
    memory. With `hold_first`, the first part (the first chunks written, at least
    `PART_SIZE` bytes) is held back and sent by `close` behind a prefix known only at the
    end (the JSON document's header, whose metrics depend on every conversation): the
    parts of a multipart upload may be sent in any order, and every supported store
    assembles them by part number (the compatibility suite checks it byte for byte). An
    object of at most one part is stored with one PUT by `close`. Until `close` returns
    nothing is visible; `abort` (or a failure) leaves nothing behind.

    The part list sent with CompleteMultipartUpload is every part uploaded, so a store
    that assembles what was uploaded instead of what is listed stores the same bytes: a
    part number is only used for a part that goes up, and a failed part fails the
    object.

    A range of a stored object whose bytes also stream through the process (a Remove
    keeps most of the stored file) is given with `start_range`, `keep` and `end_range`:
    the writer copies it with the store (UploadPartCopy, in the background, its part
    numbers reserved in order) when it can be a part of its own, and writes the streamed
    bytes otherwise, so nothing is read twice. A part of its own means, on a store that
    accepts small parts, at least `SMALL_COPY_MIN` bytes (what is pending goes up first
    as a part, however small); on one that does not, at least `MIN_PART_SIZE` bytes
    starting where the parts written so far end.
    """

    def __init__(
        self,
        storage: Storage,
        bucket: str,
        key: str,
        content_type: str,
        *,
        hold_first: bool,
        on_upload: UploadHook | None = None,
        slots: asyncio.Semaphore | None = None,
        spool: bool = False,
    ) -> None:
        self._storage = storage
        self._client = storage.client
        self._part_size = storage.part_size
        self._on_upload = on_upload
        self.bucket = bucket
        self.key = key
        self._content_type = content_type
        # Parts are at least (not exactly) PART_SIZE, which S3 allows.
        self._hold_first = hold_first
        # The held first part waits for the whole build: spooled, it costs no memory.
        self._head = _SpooledPart()
        # The head stops growing once a copy follows it (it is then part 1 as it is).
        self._head_closed = False
        self._pending = _SpooledPart() if spool else _MemoryPart()  # the part being filled
        self._range: _KeptRange | None = None
        self._upload_id: str | None = None
        self._creating: asyncio.Future[Any] | None = None
        self._next_part = 2 if hold_first else 1
        self._etags: dict[int, str] = {}
        self._slots = slots or asyncio.Semaphore(PARTS_IN_FLIGHT)
        self._sending: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None
        self._aborted = False
        self.size = 0  # bytes written or appended so far (the prefix aside)

    async def write(self, data: bytes | memoryview) -> None:
        self._raise_failure()
        if not data:
            return
        self.size += len(data)
        await self._put(data)

    async def _put(self, data: bytes | bytearray | memoryview) -> None:
        """`data` into the head or the pending part (already counted in `size`)."""
        if self._holding:
            self._head.write(data)
            return
        self._pending.write(data)
        if self._pending.size >= self._part_size:
            await self._send(self._take_number(), self._pending.take())

    @property
    def _holding(self) -> bool:
        """Written bytes still go to the held first part."""
        return self._hold_first and not self._head_closed and self._head.size < self._part_size

    # ---------------------------------------------------------- kept ranges

    def start_range(self, key: str, start: int, *, small_parts: bool) -> None:
        """Bytes of object `key` (same bucket) from `start` on follow, through `keep`.

        `small_parts`: the store accepts parts below MIN_PART_SIZE (`Storage.small_parts`)
        and the object may have a part per kept range (the caller counts them against
        MAX_PARTS).
        """
        assert self._range is None, "ranges do not nest"
        threshold = SMALL_COPY_MIN if small_parts else MIN_PART_SIZE
        self._range = _KeptRange(key, start, small_parts, threshold)

    async def keep(self, data: bytes | memoryview) -> None:
        """The next bytes of the range, as they stream: held until the writer knows
        whether the store copies them, else written."""
        self._raise_failure()
        kept = self._range
        assert kept is not None, "keep outside a range"
        if not data:
            return
        self.size += len(data)
        kept.end += len(data)
        if kept.copying:
            return
        if kept.held is None:
            if not self._may_copy_from_here(kept):
                await self._put(data)
                return
            kept.held, kept.held_size, kept.copy_start = [], 0, kept.end - len(data)
        kept.held.append(data)
        kept.held_size += len(data)
        if kept.held_size >= kept.threshold:
            kept.copying, kept.held = True, None  # the store copies them at `end_range`

    async def end_range(self) -> None:
        """The range is complete: copied by the store, or its held bytes written."""
        kept, self._range = self._range, None
        assert kept is not None, "no range to end"
        if kept.copying:
            await self._copy_kept(kept.key, kept.copy_start, kept.end)
        else:
            for data in kept.held or ():
                await self._put(data)

    def _may_copy_from_here(self, kept: _KeptRange) -> bool:
        """Whether what follows may start a copied part."""
        if not self._storage.copy_supported:
            return False
        if kept.small_parts:
            return True
        # Every part but the last is at least MIN_PART_SIZE: a copy must start where the
        # parts written so far end.
        return not self._holding and self._pending.size == 0

    async def _copy_kept(self, key: str, start: int, end: int) -> None:
        """Copies of `start`..`end` of `key` as parts of their own, in the background."""
        await self._start()
        if self._pending.size:  # only where small parts are accepted
            await self._send(self._take_number(), self._pending.take())
        self._head_closed = True
        for low, high in _copy_ranges(start, end):
            await self._send_copy(self._take_number(), key, low, high)

    async def _send_copy(self, number: int, key: str, start: int, end: int) -> None:
        """Like `_send`, for a server-side copy of `start`..`end` of `key`."""

        async def copy(upload_id: str) -> str:
            try:
                return await self._copy_part(upload_id, number, key, start, end)
            except ClientError as exc:
                if not _copy_unsupported(exc):
                    raise
                # The bytes streamed past; the next build streams them instead.
                self._storage.copy_supported = False
                raise Unavailable("object storage stopped copying stored bytes; retry") from exc

        await self._in_background(number, copy)

    async def _copy_part(self, upload_id: str, number: int, key: str, start: int, end: int) -> str:
        """Part `number`: bytes `start`..`end` of `key` (this bucket), copied by the store;
        answers the part's ETag. A refusal is the caller's to judge (`_copy_unsupported`)."""
        reply = await self._client.upload_part_copy(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=upload_id,
            PartNumber=number,
            CopySource={"Bucket": self.bucket, "Key": key},
            CopySourceRange=f"bytes={start}-{end - 1}",
        )
        etag: str = reply["CopyPartResult"]["ETag"]
        return etag

    async def append_object(self, key: str, start: int, end: int) -> None:
        """Append bytes `start` to `end` (exclusive) of object `key` in the same bucket.

        The store copies them itself (UploadPartCopy) when they are at least a part long;
        only the few bytes needed to reach a part boundary are read and written here. A
        store without server-side copy gets them streamed through instead.
        """
        align = 0
        if self._holding:
            align = self._part_size - self._head.size
        elif self._pending.size:
            align = self._part_size - self._pending.size
        align = min(align, end - start)
        await self._write_range(key, start, start + align)
        start += align
        if end - start >= self._part_size and self._storage.copy_supported:
            try:
                await self._copy(key, start, end)
                return
            except _CopyUnsupported:
                self._storage.copy_supported = False
        await self._write_range(key, start, end)

    async def close(self, prefix: bytes = b"") -> int:
        """Store the object; returns its size. `prefix` goes before the held first bytes."""
        self._raise_failure()
        head = io.BytesIO()
        head.write(prefix)
        with self._head.take().getbuffer() as held:
            head.write(held)
        rest_size, rest = self._pending.size, self._pending.take()
        self._release()
        with translate_errors():
            if self._upload_id is None:
                with rest.getbuffer() as view:
                    head.write(view)
                size = head.tell()
                head.seek(0)
                await self._client.put_object(
                    Bucket=self.bucket, Key=self.key, Body=head, ContentType=self._content_type
                )
                return size
            if rest_size:
                await self._send(self._take_number(), rest)
            if self._hold_first:
                head.seek(0)
                await self._send(1, head)
            await asyncio.gather(*self._sending, return_exceptions=True)
            self._raise_failure()
            parts = [{"PartNumber": n, "ETag": self._etags[n]} for n in sorted(self._etags)]
            await self._client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": parts},
            )
        return len(prefix) + self.size

    async def abort(self) -> None:
        """Stop sending and drop the parts already sent; never raises.

        Parts in flight are let finish first (for at most `ABORT_SETTLE_SECONDS`): a
        request cancelled on this side may still land in the store after the abort, and
        a store that keeps an upload's parts as files (SeaweedFS) then lists the upload
        as open again."""
        self._aborted = True
        self._release()
        if self._sending:
            _, late = await asyncio.wait(set(self._sending), timeout=ABORT_SETTLE_SECONDS)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._upload_id is None and self._creating is not None:
            with contextlib.suppress(Exception):
                self._upload_id = (await self._creating)["UploadId"]
        if self._upload_id is not None:
            with contextlib.suppress(Exception):
                await self._client.abort_multipart_upload(
                    Bucket=self.bucket, Key=self.key, UploadId=self._upload_id
                )
            self._upload_id = None

    def _release(self) -> None:
        """Close the part buffers (a spooled one's file)."""
        self._head.close()
        self._pending.close()

    def _take_number(self) -> int:
        number = self._next_part
        self._next_part += 1
        return number

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._aborted:
            raise RuntimeError(f"the upload of {self.key!r} was aborted")

    async def _start(self) -> str:
        """The multipart upload, created (and announced to `on_upload`) on first use."""
        self._raise_failure()
        if self._upload_id is None:
            # Shielded: a build cancelled while the store creates the upload must still
            # learn its id, so that `abort` drops it (else it stays open until the
            # sweeper's orphan pass, a lease later).
            self._creating = asyncio.ensure_future(
                self._client.create_multipart_upload(
                    Bucket=self.bucket, Key=self.key, ContentType=self._content_type
                )
            )
            with translate_errors():
                created = await asyncio.shield(self._creating)
            upload_id: str = created["UploadId"]
            self._upload_id = upload_id
            if self._on_upload is not None:
                # Recorded before any part goes up; `abort` drops it if recording fails.
                await self._on_upload(self.key, upload_id)
            return upload_id
        return self._upload_id

    async def _send(self, number: int, body: io.BytesIO) -> None:
        """Upload one part (`body` from its position on) in the background once a slot
        is free."""

        async def send(upload_id: str) -> str:
            reply = await self._client.upload_part(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=upload_id,
                PartNumber=number,
                Body=body,
            )
            etag: str = reply["ETag"]
            return etag

        await self._in_background(number, send)

    async def _in_background(self, number: int, request: Callable[[str], Awaitable[str]]) -> None:
        """Part `number`, sent by `request` (given the upload id, answering the part's
        ETag) in the background once a slot is free; a failure fails the object."""
        upload_id = await self._start()
        await self._slots.acquire()
        try:
            self._raise_failure()
        except BaseException:
            self._slots.release()
            raise

        async def part() -> None:
            try:
                with translate_errors():
                    self._etags[number] = await request(upload_id)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                self._failure = self._failure or exc
            finally:
                self._slots.release()

        task = asyncio.create_task(part())
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _copy(self, key: str, start: int, end: int) -> None:
        """Server-side copies of `start`..`end`, in equal ranges of at most COPY_PART_SIZE."""
        upload_id = await self._start()
        ranges = _copy_ranges(start, end)
        numbers = [self._take_number() for _ in ranges]

        async def copy(number: int, low: int, high: int) -> None:
            async with self._slots:
                try:
                    etag = await self._copy_part(upload_id, number, key, low, high)
                except ClientError as exc:
                    if _copy_unsupported(exc):
                        raise _CopyUnsupported from exc
                    raise
            self._etags[number] = etag

        with translate_errors():
            # Every copy settles before its outcome is judged, so none is left running.
            outcomes = await asyncio.gather(
                *(copy(n, low, high) for n, (low, high) in zip(numbers, ranges, strict=True)),
                return_exceptions=True,
            )
            failures = [o for o in outcomes if isinstance(o, BaseException)]
            if failures and all(isinstance(f, _CopyUnsupported) for f in failures):
                if any(number in self._etags for number in numbers):
                    # A part that went up would be assembled by a store that ignores the
                    # part list, so it cannot be forgotten: fail the object instead.
                    raise ServiceError("object storage copied some ranges and refused others")
                # Nothing was copied (a store either copies or does not): the numbers
                # were never used, and the bytes are streamed instead.
                raise _CopyUnsupported
            for failure in failures:
                if not isinstance(failure, _CopyUnsupported):
                    raise failure
        self.size += end - start

    async def _write_range(self, key: str, start: int, end: int) -> None:
        if end <= start:
            return
        async with self._storage.reading(self.bucket):
            response = await self._client.get_object(
                Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end - 1}"
            )
            async with response["Body"] as body:
                while chunk := await body.read(_READ_SIZE):
                    await self.write(chunk)


UploadHook = Callable[[str, str], Awaitable[None]]
"""Called with (key, upload id) when a writer starts a multipart upload."""


@dataclass(frozen=True, slots=True)
class OpenUpload:
    key: str
    upload_id: str
    initiated: datetime


class _CopyUnsupported(Exception):
    """The store refused a server-side copy as not implemented."""


def _copy_ranges(start: int, end: int) -> list[tuple[int, int]]:
    """`start`..`end` in equal ranges of at most COPY_PART_SIZE, one copied part each."""
    count = -(-(end - start) // COPY_PART_SIZE)
    bounds = [start + (end - start) * i // count for i in range(count + 1)]
    return list(itertools.pairwise(bounds))


@dataclass(slots=True)
class _KeptRange:
    """A range of a stored object being kept by an `ObjectWriter`."""

    key: str
    end: int  # the source offset after the bytes kept so far
    small_parts: bool
    threshold: int  # held bytes from which the range is copied
    held: list[bytes | memoryview] | None = None  # since `copy_start`, until the decision
    held_size: int = 0
    copy_start: int = 0
    copying: bool = False


class DeleteFailed(ServiceError):
    """Some objects were not deleted; `failures` maps each key to the store's reason."""

    def __init__(self, failures: dict[str, str]) -> None:
        first = next(iter(failures.items()))
        super().__init__(
            f"object storage did not delete {len(failures)} object(s), e.g. {first[0]!r} "
            f"({first[1]})"
        )
        self.failures = failures


class Storage:
    """The two buckets the service uses, behind one shared client."""

    def __init__(
        self,
        client: Any,
        conversations_bucket: str,
        training_bucket: str,
        http: aiohttp.ClientSession | None = None,
        max_attempts: int = 4,
        part_size: int = PART_SIZE,
    ) -> None:
        self.client = client
        self.part_size = part_size
        # Documents are read through `http` with presigned URLs when it is given.
        self.http = http
        self.max_attempts = max_attempts
        self.conversations_bucket = conversations_bucket
        self.training_bucket = training_bucket
        # Turned off for the process the first time the store refuses UploadPartCopy.
        self.copy_supported = True
        # Whether the store accepts parts below MIN_PART_SIZE (S3 and SeaweedFS do not,
        # Supabase Storage's file backend does): learned by `accepts_small_parts` on
        # first use, None until then.
        self.small_parts: bool | None = None
        self._probing = asyncio.Lock()
        # Cleanup calls the store refuses outright, by operation: why (health reports it).
        self.rejections: dict[str, str] = {}

    def writer(
        self,
        bucket: str,
        key: str,
        content_type: str,
        *,
        hold_first: bool = False,
        on_upload: UploadHook | None = None,
        slots: asyncio.Semaphore | None = None,
        spool: bool = False,
    ) -> ObjectWriter:
        """An `ObjectWriter` for `key`; see there."""
        return ObjectWriter(
            self,
            bucket,
            key,
            content_type,
            hold_first=hold_first,
            on_upload=on_upload,
            slots=slots,
            spool=spool,
        )

    async def accepts_small_parts(self) -> bool:
        """Whether the store accepts multipart parts below MIN_PART_SIZE, uploaded and
        copied; asked of the store once per process (`_probe_small_parts`)."""
        if self.small_parts is None:
            async with self._probing:
                if self.small_parts is None:
                    self.small_parts = await self._probe_small_parts()
                    log.info(
                        "object storage %s parts below 5 MiB",
                        "accepts" if self.small_parts else "refuses",
                        extra={"fields": {"small_parts": self.small_parts}},
                    )
        return self.small_parts

    async def _probe_small_parts(self) -> bool:
        """Store "abc" under a reserved key as three 1-byte parts, the middle one copied
        from the object the key held ("b"), read it back and delete it.

        S3 refuses the completion (EntityTooSmall: every part but the last is at least
        5 MiB); a store that completes it and gives back exactly "abc" accepts small
        parts. A store without UploadPartCopy has no use for them. Anything refused on
        the way (a 4xx) means no; a store that does not answer is `Unavailable`.
        """
        bucket, key = self.training_bucket, f"{PROBE_PREFIX}small-parts-{os.urandom(8).hex()}"
        with translate_errors():
            await self.client.put_object(Bucket=bucket, Key=key, Body=b"b")
            upload_id: str | None = None
            try:
                upload_id = (await self.client.create_multipart_upload(Bucket=bucket, Key=key))[
                    "UploadId"
                ]
                parts = []
                for number, body in ((1, b"a"), (2, None), (3, b"c")):
                    if body is None:
                        reply = await self.client.upload_part_copy(
                            Bucket=bucket,
                            Key=key,
                            UploadId=upload_id,
                            PartNumber=number,
                            CopySource={"Bucket": bucket, "Key": key},
                            CopySourceRange="bytes=0-0",
                        )
                        etag = reply["CopyPartResult"]["ETag"]
                    else:
                        reply = await self.client.upload_part(
                            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
                        )
                        etag = reply["ETag"]
                    parts.append({"PartNumber": number, "ETag": etag})
                await self.client.complete_multipart_upload(
                    Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
                upload_id = None
                response = await self.client.get_object(Bucket=bucket, Key=key)
                async with response["Body"] as stored:
                    return bool(await stored.read() == b"abc")
            except ClientError as exc:
                if _copy_unsupported(exc):
                    self.copy_supported = False
                elif not 400 <= _status(exc) < 500 or _status(exc) in (401, 403):
                    raise
                return False
            finally:
                if upload_id is not None:
                    with contextlib.suppress(Exception):
                        await self.client.abort_multipart_upload(
                            Bucket=bucket, Key=key, UploadId=upload_id
                        )
                with contextlib.suppress(Exception):
                    await self.client.delete_object(Bucket=bucket, Key=key)

    async def ping(self) -> None:
        """Both buckets answer (HEAD bucket); `BucketMissing` if one does not exist."""
        for bucket in (self.conversations_bucket, self.training_bucket):
            if not await self.bucket_exists(bucket):
                raise BucketMissing(bucket)

    async def bucket_exists(self, bucket: str) -> bool:
        """HEAD the bucket: False only when the store says it does not exist."""
        with translate_errors():
            try:
                await self.client.head_bucket(Bucket=bucket)
            except ClientError as exc:
                if _status(exc) == 404:
                    return False
                raise
        return True

    @contextlib.asynccontextmanager
    async def reading(self, bucket: str) -> AsyncIterator[None]:
        """Like `translate_errors`, for reads from `bucket`: a missing object is
        `ObjectMissing` only if the bucket exists, `BucketMissing` otherwise.

        Stores differ in what a read from a missing bucket answers: S3 and SeaweedFS say
        NoSuchBucket, Supabase Storage says NoSuchKey, so the bucket is asked for itself.
        """
        try:
            with translate_errors():
                yield
        except ObjectMissing:
            if not await self.bucket_exists(bucket):
                raise BucketMissing(bucket) from None
            raise
        except BucketMissing as exc:
            raise BucketMissing(bucket) from exc.__cause__

    @contextlib.contextmanager
    def _cleanup(self, operation: str, bucket: str) -> Iterator[None]:
        """A cleanup call on `bucket`: an outright refusal is `StoreRejected`, remembered
        and logged once; the next success of the operation forgets it (and says so)."""
        try:
            with translate_errors():
                try:
                    yield
                except ClientError as exc:
                    reason = _rejection(exc)
                    if reason is None:
                        raise
                    if self.rejections.get(operation) != reason:
                        log.error(
                            "object storage rejects a cleanup call; what it should remove "
                            "stays until it accepts it",
                            extra={"fields": {"operation": operation, "reason": reason}},
                        )
                    self.rejections[operation] = reason
                    raise StoreRejected(operation, reason) from exc
        except BucketMissing as exc:
            raise BucketMissing(bucket) from exc.__cause__
        # Reached only when the call succeeded.
        if self.rejections.pop(operation, None) is not None:
            log.warning(
                "object storage accepts a cleanup call again",
                extra={"fields": {"operation": operation}},
            )

    async def get_url(self, bucket: str, key: str) -> str:
        """A presigned GET of `key` valid for `_DOCUMENT_URL_SECONDS`, for this process's
        own reads: what `generate_presigned_url` makes (path-style, SigV4 in the query),
        signed by botocore's signer directly (module docstring). Without credentials
        (an anonymous client) the client signs it as usual."""
        credentials = getattr(getattr(self.client, "_request_signer", None), "_credentials", None)
        if credentials is None:
            url: str = await self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": bucket, "Key": key},
                ExpiresIn=_DOCUMENT_URL_SECONDS,
            )
            return url
        # Refreshable credentials renew themselves here when they are about to expire.
        frozen = await credentials.get_frozen_credentials()
        meta = self.client.meta
        request = AWSRequest(
            method="GET",
            url=f"{meta.endpoint_url.rstrip('/')}/{bucket}/{percent_encode(key, safe='/~')}",
        )
        S3SigV4QueryAuth(frozen, "s3", meta.region_name, expires=_DOCUMENT_URL_SECONDS).add_auth(
            request
        )
        signed: str = request.url
        return signed

    async def get_document(self, key: str, max_bytes: int) -> StoredDocument:
        """An enriched document; `ObjectTooLarge` is raised before reading the body.

        A presigned GET on the aiohttp session (see the module's docstring). Connection
        errors, timeouts, 429 and 5xx answers are retried, `max_attempts` in all, after
        a pause of up to 2^(attempt-1) seconds (random, at most 20 s; none for a first
        dropped keep-alive connection); then, like a refusal (401/403), they are
        `Unavailable`. A 404 is `ObjectMissing`.
        """
        if self.http is None:
            return await self._get_document_with_client(key, max_bytes)
        for attempt in range(1, self.max_attempts + 1):
            final = attempt == self.max_attempts
            with translate_errors():
                url = await self.get_url(self.conversations_bucket, key)
            try:
                async with self.http.get(URL(url, encoded=True), headers=_IDENTITY) as response:
                    status = response.status
                    if status == 200:
                        if (response.content_length or 0) > max_bytes:
                            raise ObjectTooLarge(response.content_length or 0)
                        data = await response.read()
                        if len(data) > max_bytes:
                            raise ObjectTooLarge(len(data))
                        return StoredDocument(data, *_identity(response.headers))
                    if status == 404:
                        missing = await response.read()
                        if b"NoSuchBucket" in missing or not await self.bucket_exists(
                            self.conversations_bucket
                        ):
                            raise BucketMissing(self.conversations_bucket)
                        raise ObjectMissing(key)
                    retryable = status in _RETRYABLE_STATUS
                    if retryable and not final:
                        problem, pause = f"HTTP {status}", True
                    elif retryable or status >= 500 or status in (401, 403):
                        raise Unavailable("object storage is unavailable; retry later")
                    else:
                        raise ServiceError(f"object storage answered {status} to a GET")
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                if final:
                    raise Unavailable("object storage is unavailable; retry later") from exc
                # A kept-alive connection the store has closed meanwhile fails at once:
                # the first such failure is retried without a pause.
                problem = type(exc).__name__
                pause = attempt > 1 or not isinstance(exc, aiohttp.ServerDisconnectedError)
            metrics.STORAGE_RETRIES.labels("GetDocument").inc()
            log.info(
                "document GET retried",
                extra={"fields": {"attempt": attempt, "problem": problem}},
            )
            if pause:
                await asyncio.sleep(
                    random.random() * min(_MAX_BACKOFF_SECONDS, 2.0 ** (attempt - 1))
                )
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _get_document_with_client(self, key: str, max_bytes: int) -> StoredDocument:
        async with self.reading(self.conversations_bucket):
            response = await self.client.get_object(Bucket=self.conversations_bucket, Key=key)
            async with response["Body"] as body:
                if response["ContentLength"] > max_bytes:
                    raise ObjectTooLarge(response["ContentLength"])
                data: bytes = await body.read()
        etag = response.get("ETag")
        return StoredDocument(data, etag.strip('"') if etag else None, response.get("LastModified"))

    async def stream(
        self, bucket: str, key: str, chunk_size: int = 1024 * 1024
    ) -> AsyncGenerator[bytes, None]:
        """An object's bytes in chunks, never all of it in memory.

        A presigned GET on the aiohttp session where there is one, as for documents: a
        stored file is read whole (a checksum, an export), and the S3 client's body
        reader costs several times the CPU per byte. Not retried: a failure part-way
        cannot be resumed by the caller's consumer, so it is `Unavailable` at once.
        """
        if self.http is not None:
            chunks = self._stream_presigned(bucket, key, chunk_size)
            async with contextlib.aclosing(chunks):
                async for chunk in chunks:
                    yield chunk
            return
        async with self.reading(bucket):
            response = await self.client.get_object(Bucket=bucket, Key=key)
            async with response["Body"] as body:
                while chunk := await body.read(chunk_size):
                    yield chunk

    async def sha256(self, bucket: str, key: str) -> str:
        """Hex SHA-256 of an object as stored, read in chunks."""
        digest = hashlib.sha256()
        chunks = self.stream(bucket, key)
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                digest.update(chunk)
        return digest.hexdigest()

    async def _stream_presigned(
        self, bucket: str, key: str, chunk_size: int
    ) -> AsyncGenerator[bytes, None]:
        assert self.http is not None
        with translate_errors():
            url = await self.get_url(bucket, key)
        try:
            async with self.http.get(URL(url, encoded=True), headers=_IDENTITY) as response:
                if response.status == 404:
                    if not await self.bucket_exists(bucket):
                        raise BucketMissing(bucket)
                    raise ObjectMissing(key)
                if response.status != 200:
                    raise Unavailable("object storage is unavailable; retry later")
                async for chunk in response.content.iter_chunked(chunk_size):
                    yield chunk
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise Unavailable("object storage is unavailable; retry later") from exc

    async def upload(
        self, bucket: str, key: str, chunks: AsyncGenerator[bytes, None], content_type: str
    ) -> int:
        """Store the chunks as one object, multipart when above one part; returns its size."""
        writer = self.writer(bucket, key, content_type)
        try:
            async with contextlib.aclosing(chunks):
                async for chunk in chunks:
                    await writer.write(chunk)
            return await writer.close()
        except BaseException:
            await writer.abort()
            raise

    async def delete(self, bucket: str, keys: Iterable[str]) -> None:
        """Delete objects; missing ones are fine (deleting is idempotent).

        Raises `DeleteFailed` naming the keys the store did not delete (a DeleteObjects
        answer lists them one by one) once every batch has been sent, and `StoreRejected`
        at once if the store refuses the call itself.
        """
        objects = [{"Key": key} for key in keys]
        failed: dict[str, str] = {}
        for start in range(0, len(objects), 1000):
            with self._cleanup("DeleteObjects", bucket):
                reply = await self.client.delete_objects(
                    Bucket=bucket, Delete={"Objects": objects[start : start + 1000], "Quiet": True}
                )
            for error in reply.get("Errors", []):
                if error.get("Code") not in _MISSING:
                    failed[error.get("Key", "")] = f"{error.get('Code')}: {error.get('Message')}"
        if failed:
            raise DeleteFailed(failed)

    async def abort_upload(self, bucket: str, key: str, upload_id: str) -> None:
        """Drop a multipart upload and its parts; one that is already gone is fine."""
        with self._cleanup("AbortMultipartUpload", bucket):
            try:
                await self.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            except ClientError as exc:
                # NoSuchUpload, or a bare 404: gone either way.
                if _status(exc) != 404 and _code(exc) != "NoSuchUpload":
                    raise

    async def open_uploads(self, bucket: str) -> list[OpenUpload]:
        """Every multipart upload in `bucket` that was started and not completed or aborted."""
        uploads: list[OpenUpload] = []
        markers: dict[str, str] = {}
        with self._cleanup("ListMultipartUploads", bucket):
            while True:
                page = await self.client.list_multipart_uploads(Bucket=bucket, **markers)
                uploads.extend(
                    OpenUpload(item["Key"], item["UploadId"], item["Initiated"])
                    for item in page.get("Uploads", [])
                )
                if not page.get("IsTruncated"):
                    return uploads
                markers = {
                    "KeyMarker": page["NextKeyMarker"],
                    "UploadIdMarker": page["NextUploadIdMarker"],
                }

    async def size(self, bucket: str, key: str) -> int:
        async with self.reading(bucket):
            head = await self.client.head_object(Bucket=bucket, Key=key)
        return int(head["ContentLength"])

    async def presign(self, bucket: str, key: str, file_name: str, expires_in: int) -> str:
        """A GET URL that makes browsers save the object as `file_name`."""
        url: str = await self.client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": bucket,
                "Key": key,
                "ResponseContentDisposition": f'attachment; filename="{file_name}"',
            },
            ExpiresIn=expires_in,
        )
        return url


def _environment_proxy(endpoint_url: str) -> str | None:
    """The HTTP(S)_PROXY the environment sets for the endpoint, honouring NO_PROXY."""
    url = URL(endpoint_url)
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy is None or urllib.request.proxy_bypass(url.host or ""):
        return None
    return proxy


def client_config(settings: Settings) -> AioConfig:
    return AioConfig(
        signature_version="s3v4",
        # Bodies go up as UNSIGNED-PAYLOAD with a CRC32 header the store checks (what
        # botocore does over HTTPS anyway): signing them would hash every byte twice
        # more, once here and once in the store, for no integrity CRC32 lacks.
        s3={"addressing_style": "path", "payload_signing_enabled": False},
        retries={"mode": "standard", "max_attempts": settings.s3_max_attempts},
        max_pool_connections=settings.s3_max_pool_connections,
        connect_timeout=5,
        read_timeout=60,
    )


@contextlib.asynccontextmanager
async def open_storage(settings: Settings) -> AsyncIterator[Storage]:
    """Open the process's one S3 client and close it on exit."""
    session = aiobotocore.session.get_session()
    access_key = settings.s3_access_key_id
    secret_key = settings.s3_secret_access_key
    async with session.create_client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        aws_access_key_id=access_key.get_secret_value() if access_key else None,
        aws_secret_access_key=secret_key.get_secret_value() if secret_key else None,
        config=client_config(settings),
    ) as client:
        speak_every_dialect(client)
        _observe(client)
        # Verifies TLS with the CA bundle botocore uses (AWS_CA_BUNDLE, else its default);
        # loading it blocks, hence the thread.
        cafile = os.environ.get("AWS_CA_BUNDLE") or get_cert_path(True)
        tls = await asyncio.to_thread(ssl.create_default_context, cafile=cafile)
        connector = aiohttp.TCPConnector(limit=settings.s3_max_pool_connections, ssl=tls)
        timeout = aiohttp.ClientTimeout(sock_connect=5, sock_read=60)
        async with aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            auto_decompress=False,
            # Chosen once here: aiohttp's trust_env would look the environment (and
            # ~/.netrc) up again on a thread for every request.
            proxy=_environment_proxy(client.meta.endpoint_url),
        ) as http:
            yield Storage(
                client,
                settings.s3_conversations_bucket,
                settings.s3_training_bucket,
                http=http,
                max_attempts=settings.s3_max_attempts,
                part_size=settings.s3_part_size_bytes,
            )
