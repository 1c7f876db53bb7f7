"""Object storage over the S3 protocol: one aiobotocore client per process.

Path-style addressing and SigV4, as Supabase Storage's S3 endpoint requires. Transient
errors (throttling, 5xx, connection resets) are retried by botocore's standard retry mode
with exponential backoff; what still fails is translated into the domain's errors here.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import aiobotocore.session
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError
from types_aiobotocore_s3 import S3Client

from .config import Settings
from .errors import Unavailable


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Turn connectivity and server-side failures into `Unavailable`."""
    try:
        yield
    except (BotoCoreError, OSError, TimeoutError) as exc:
        raise Unavailable("object storage is unavailable; retry later") from exc
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if status >= 500:
            raise Unavailable("object storage is unavailable; retry later") from exc
        raise


class Storage:
    """The two buckets the service uses, behind one shared client."""

    def __init__(self, client: S3Client, conversations_bucket: str, training_bucket: str) -> None:
        self.client = client
        self.conversations_bucket = conversations_bucket
        self.training_bucket = training_bucket

    async def ping(self) -> None:
        """Both buckets answer (HEAD bucket)."""
        with translate_errors():
            await self.client.head_bucket(Bucket=self.conversations_bucket)
            await self.client.head_bucket(Bucket=self.training_bucket)


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
