"""Object storage over the S3 protocol: one aiobotocore client per process.

Path-style addressing and SigV4, as Supabase Storage's S3 endpoint requires. Transient
errors (throttling, 5xx, connection resets) are retried by botocore's standard retry mode
with exponential backoff; what still fails is translated into the domain's errors here.
Uploads stream: an `ObjectWriter` sends each part as soon as it is complete, a few at a
time, while later bytes are still being produced; bytes of a stored object are appended
by a server-side copy (UploadPartCopy) where the store supports it. A failed multipart
upload is aborted so no invisible parts are left behind.

Enriched documents, read by the thousand, are fetched with presigned GETs on a plain
aiohttp session instead of `get_object`: signing a URL and sending one request cost about
0.27 ms of CPU, where `get_object` costs about 0.67 ms (botocore's event hooks, response
parsing, retry and checksum handlers) — at 10,000 documents that was 40 % of a Create's
CPU (docs/bench.md). Retries follow the client's: the same attempt count, botocore's
standard backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import ssl
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiobotocore.session
import aiohttp
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError
from botocore.httpsession import get_cert_path
from yarl import URL

from .config import Settings
from .errors import ServiceError, Unavailable

# S3's minimum size of every part but the last.
MIN_PART_SIZE = 5 * 1024 * 1024
# Parts are cut at this size (plus the rest of the chunk that crosses it). The minimum is
# right: with parts in flight on two objects at once, larger parts only cost memory (8
# MiB: +30 MB RSS, 16 MiB: +55 MB at 10,000 conversations) and were no faster (`make
# bench`). S3 allows 10,000 parts, so objects up to ~48 GiB.
PART_SIZE = MIN_PART_SIZE
# Parts sent at once per object: the store works on one while the next is produced and
# sent; memory stays bounded (each part in flight is held until the store has it).
PARTS_IN_FLIGHT = 2
# Largest range one server-side copy moves (S3 allows 5 GiB per part).
COPY_PART_SIZE = 256 * 1024 * 1024
_READ_SIZE = 1024 * 1024
log = logging.getLogger("trainingfiles.storage")

_MISSING = ("NoSuchKey", "404", "NotFound")
# Presigned document GETs: how long a URL is valid (it is used at once), which answers
# are retried, and the longest pause between attempts (botocore's standard mode).
_DOCUMENT_URL_SECONDS = 300
_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
_MAX_BACKOFF_SECONDS = 20.0
# Like botocore: the stored bytes, never a compressed rendition of them.
_IDENTITY = {"Accept-Encoding": "identity"}


class ObjectMissing(Exception):
    """The object does not exist."""


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
        error = exc.response.get("Error", {})
        if error.get("Code") in _MISSING:
            raise ObjectMissing(error.get("Key", "")) from exc
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if status >= 500 or status in (401, 403):
            raise Unavailable("object storage is unavailable; retry later") from exc
        raise


def _copy_unsupported(exc: ClientError) -> bool:
    """The store does not implement UploadPartCopy (S3 answers 501 NotImplemented)."""
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return bool(status == 501 or error.get("Code") == "NotImplemented")


class ObjectWriter:
    """One object, stored while its bytes are still being produced.

    Every complete part goes up at once, up to `PARTS_IN_FLIGHT` at a time; `write` waits
    while that many are in flight, so a slow store slows the producer instead of growing
    memory. With `hold_first`, the first part (the first chunks written, at least
    `PART_SIZE` bytes) is held back and sent by `close` behind a prefix known only at the
    end (the JSON document's header, whose metrics depend on every conversation): the
    parts of a multipart upload may be sent in any order. An object of at most one part
    is stored with one PUT by `close`. Until `close` returns nothing is visible; `abort`
    (or a failure) leaves nothing behind.
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
    ) -> None:
        self._storage = storage
        self._client = storage.client
        self._part_size = storage.part_size
        self._on_upload = on_upload
        self.bucket = bucket
        self.key = key
        self._content_type = content_type
        # Written chunks are kept as they are and joined once per part: one copy per byte.
        # Parts are therefore at least (not exactly) PART_SIZE, which S3 allows.
        self._hold_first = hold_first
        self._head: list[bytes] = []  # the held first part, with hold_first
        self._head_size = 0
        self._pending: list[bytes] = []  # the part being filled
        self._pending_size = 0
        self._upload_id: str | None = None
        self._next_part = 2 if hold_first else 1
        self._etags: dict[int, str] = {}
        self._slots = asyncio.Semaphore(PARTS_IN_FLIGHT)
        self._sending: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None
        self._aborted = False
        self.size = 0  # bytes written or appended so far (the prefix aside)

    async def write(self, data: bytes) -> None:
        self._raise_failure()
        if not data:
            return
        self.size += len(data)
        if self._hold_first and self._head_size < self._part_size:
            self._head.append(data)
            self._head_size += len(data)
            return
        self._pending.append(data)
        self._pending_size += len(data)
        if self._pending_size >= self._part_size:
            part = b"".join(self._pending)
            self._pending.clear()
            self._pending_size = 0
            await self._send(self._take_number(), part)

    async def append_object(self, key: str, start: int, end: int) -> None:
        """Append bytes `start` to `end` (exclusive) of object `key` in the same bucket.

        The store copies them itself (UploadPartCopy) when they are at least a part long;
        only the few bytes needed to reach a part boundary are read and written here. A
        store without server-side copy gets them streamed through instead.
        """
        align = 0
        if self._hold_first and self._head_size < self._part_size:
            align = self._part_size - self._head_size
        elif self._pending:
            align = self._part_size - self._pending_size
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
        head = [prefix, *self._head]
        with translate_errors():
            if self._upload_id is None:
                body = b"".join([*head, *self._pending])
                await self._client.put_object(
                    Bucket=self.bucket, Key=self.key, Body=body, ContentType=self._content_type
                )
                return len(body)
            if self._pending:
                await self._send(self._take_number(), b"".join(self._pending))
                self._pending.clear()
            if self._hold_first:
                await self._send(1, b"".join(head))
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
        """Stop sending and drop the parts already sent; never raises."""
        self._aborted = True
        for task in self._sending:
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)
        if self._upload_id is not None:
            with contextlib.suppress(Exception):
                await self._client.abort_multipart_upload(
                    Bucket=self.bucket, Key=self.key, UploadId=self._upload_id
                )
            self._upload_id = None

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
            with translate_errors():
                created = await self._client.create_multipart_upload(
                    Bucket=self.bucket, Key=self.key, ContentType=self._content_type
                )
            upload_id: str = created["UploadId"]
            self._upload_id = upload_id
            if self._on_upload is not None:
                # Recorded before any part goes up; `abort` drops it if recording fails.
                await self._on_upload(self.key, upload_id)
            return upload_id
        return self._upload_id

    async def _send(self, number: int, body: bytes) -> None:
        """Upload one part in the background once a slot is free."""
        upload_id = await self._start()
        await self._slots.acquire()
        try:
            self._raise_failure()
        except BaseException:
            self._slots.release()
            raise

        async def send() -> None:
            try:
                with translate_errors():
                    reply = await self._client.upload_part(
                        Bucket=self.bucket,
                        Key=self.key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=body,
                    )
                self._etags[number] = reply["ETag"]
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                self._failure = self._failure or exc
            finally:
                self._slots.release()

        task = asyncio.create_task(send())
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _copy(self, key: str, start: int, end: int) -> None:
        """Server-side copies of `start`..`end`, in equal ranges of at most COPY_PART_SIZE."""
        upload_id = await self._start()
        count = -(-(end - start) // COPY_PART_SIZE)
        bounds = [start + (end - start) * i // count for i in range(count + 1)]
        numbers = [self._take_number() for _ in range(count)]

        async def copy(number: int, low: int, high: int) -> None:
            async with self._slots:
                try:
                    reply = await self._client.upload_part_copy(
                        Bucket=self.bucket,
                        Key=self.key,
                        UploadId=upload_id,
                        PartNumber=number,
                        CopySource={"Bucket": self.bucket, "Key": key},
                        CopySourceRange=f"bytes={low}-{high - 1}",
                    )
                except ClientError as exc:
                    if _copy_unsupported(exc):
                        raise _CopyUnsupported from exc
                    raise
            self._etags[number] = reply["CopyPartResult"]["ETag"]

        with translate_errors():
            try:
                await asyncio.gather(
                    *(copy(n, bounds[i], bounds[i + 1]) for i, n in enumerate(numbers))
                )
            except _CopyUnsupported:
                # Nothing was copied (a store either copies or does not): forget the numbers.
                for number in numbers:
                    self._etags.pop(number, None)
                raise
        self.size += end - start

    async def _write_range(self, key: str, start: int, end: int) -> None:
        if end <= start:
            return
        with translate_errors():
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

    def writer(
        self,
        bucket: str,
        key: str,
        content_type: str,
        *,
        hold_first: bool = False,
        on_upload: UploadHook | None = None,
    ) -> ObjectWriter:
        """An `ObjectWriter` for `key`; see there."""
        return ObjectWriter(
            self, bucket, key, content_type, hold_first=hold_first, on_upload=on_upload
        )

    async def ping(self) -> None:
        """Both buckets answer (HEAD bucket)."""
        with translate_errors():
            await self.client.head_bucket(Bucket=self.conversations_bucket)
            await self.client.head_bucket(Bucket=self.training_bucket)

    async def get_document(self, key: str, max_bytes: int) -> bytes:
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
                url = await self.client.generate_presigned_url(
                    "get_object",
                    Params={"Bucket": self.conversations_bucket, "Key": key},
                    ExpiresIn=_DOCUMENT_URL_SECONDS,
                )
            try:
                async with self.http.get(URL(url, encoded=True), headers=_IDENTITY) as response:
                    status = response.status
                    if status == 200:
                        if (response.content_length or 0) > max_bytes:
                            raise ObjectTooLarge(response.content_length or 0)
                        data = await response.read()
                        if len(data) > max_bytes:
                            raise ObjectTooLarge(len(data))
                        return data
                    if status == 404:
                        if b"NoSuchBucket" in await response.read():
                            raise ServiceError(
                                f"bucket {self.conversations_bucket!r} does not exist"
                            )
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
            log.info(
                "document GET retried",
                extra={"fields": {"attempt": attempt, "problem": problem}},
            )
            if pause:
                await asyncio.sleep(
                    random.random() * min(_MAX_BACKOFF_SECONDS, 2.0 ** (attempt - 1))
                )
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _get_document_with_client(self, key: str, max_bytes: int) -> bytes:
        with translate_errors():
            response = await self.client.get_object(Bucket=self.conversations_bucket, Key=key)
            async with response["Body"] as body:
                if response["ContentLength"] > max_bytes:
                    raise ObjectTooLarge(response["ContentLength"])
                data: bytes = await body.read()
        return data

    async def stream(
        self, bucket: str, key: str, chunk_size: int = 1024 * 1024
    ) -> AsyncIterator[bytes]:
        """An object's bytes in chunks, never all of it in memory."""
        with translate_errors():
            response = await self.client.get_object(Bucket=bucket, Key=key)
            async with response["Body"] as body:
                while chunk := await body.read(chunk_size):
                    yield chunk

    async def upload(
        self, bucket: str, key: str, chunks: AsyncIterator[bytes], content_type: str
    ) -> int:
        """Store the chunks as one object, multipart when above one part; returns its size."""
        writer = self.writer(bucket, key, content_type)
        try:
            async for chunk in chunks:
                await writer.write(chunk)
            return await writer.close()
        except BaseException:
            await writer.abort()
            raise

    async def delete(self, bucket: str, keys: Iterable[str]) -> None:
        """Delete objects; missing ones are fine (deleting is idempotent)."""
        objects = [{"Key": key} for key in keys]
        with translate_errors():
            for start in range(0, len(objects), 1000):
                await self.client.delete_objects(
                    Bucket=bucket, Delete={"Objects": objects[start : start + 1000], "Quiet": True}
                )

    async def abort_upload(self, bucket: str, key: str, upload_id: str) -> None:
        """Drop a multipart upload and its parts; one that is already gone is fine."""
        with translate_errors():
            try:
                await self.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in ("NoSuchUpload", "404"):
                    raise

    async def open_uploads(self, bucket: str) -> list[OpenUpload]:
        """Every multipart upload in `bucket` that was started and not completed or aborted."""
        uploads: list[OpenUpload] = []
        markers: dict[str, str] = {}
        with translate_errors():
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
        with translate_errors():
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
        s3={"addressing_style": "path"},
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
