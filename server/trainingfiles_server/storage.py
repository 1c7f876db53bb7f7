"""Object storage over the S3 protocol: one aiobotocore client per process.

Path-style addressing and SigV4, as Supabase Storage's S3 endpoint requires. Transient
errors (throttling, 5xx, connection resets) are retried by botocore's standard retry mode
with exponential backoff; what still fails is translated into the domain's errors here.
Uploads stream: objects larger than one part go up as multipart uploads, part by part,
and a failed multipart upload is aborted so no invisible parts are left behind.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import aiobotocore.session
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from .config import Settings
from .errors import Unavailable

# S3's minimum part size is 5 MiB (except the last part); 8 MiB keeps the part count low
# and the memory per upload bounded.
PART_SIZE = 8 * 1024 * 1024
_MISSING = ("NoSuchKey", "404", "NotFound")


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


class Storage:
    """The two buckets the service uses, behind one shared client."""

    def __init__(self, client: Any, conversations_bucket: str, training_bucket: str) -> None:
        self.client = client
        self.conversations_bucket = conversations_bucket
        self.training_bucket = training_bucket

    async def ping(self) -> None:
        """Both buckets answer (HEAD bucket)."""
        with translate_errors():
            await self.client.head_bucket(Bucket=self.conversations_bucket)
            await self.client.head_bucket(Bucket=self.training_bucket)

    async def get_document(self, key: str, max_bytes: int) -> bytes:
        """An enriched document; `ObjectTooLarge` is raised before reading the body."""
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
        buffer = bytearray()
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        size = 0
        with translate_errors():
            try:
                async for chunk in chunks:
                    buffer += chunk
                    size += len(chunk)
                    while len(buffer) >= PART_SIZE:
                        if upload_id is None:
                            created = await self.client.create_multipart_upload(
                                Bucket=bucket, Key=key, ContentType=content_type
                            )
                            upload_id = created["UploadId"]
                        part = bytes(buffer[:PART_SIZE])
                        del buffer[:PART_SIZE]
                        parts.append(
                            await self._upload_part(bucket, key, upload_id, len(parts) + 1, part)
                        )
                if upload_id is None:
                    await self.client.put_object(
                        Bucket=bucket, Key=key, Body=bytes(buffer), ContentType=content_type
                    )
                    return size
                if buffer:
                    parts.append(
                        await self._upload_part(
                            bucket, key, upload_id, len(parts) + 1, bytes(buffer)
                        )
                    )
                await self.client.complete_multipart_upload(
                    Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
                return size
            except BaseException:
                if upload_id is not None:
                    with contextlib.suppress(Exception):
                        await self.client.abort_multipart_upload(
                            Bucket=bucket, Key=key, UploadId=upload_id
                        )
                raise

    async def _upload_part(
        self, bucket: str, key: str, upload_id: str, number: int, data: bytes
    ) -> dict[str, Any]:
        response = await self.client.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
        )
        return {"PartNumber": number, "ETag": response["ETag"]}

    async def delete(self, bucket: str, keys: Iterable[str]) -> None:
        """Delete objects; missing ones are fine (deleting is idempotent)."""
        objects = [{"Key": key} for key in keys]
        with translate_errors():
            for start in range(0, len(objects), 1000):
                await self.client.delete_objects(
                    Bucket=bucket, Delete={"Objects": objects[start : start + 1000], "Quiet": True}
                )

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
        yield Storage(client, settings.s3_conversations_bucket, settings.s3_training_bucket)
