"""PostgreSQL and S3 for the benchmark: the embedded pair under `.bench/`, or configured ones.

The embedded servers keep their data between runs (so generated conversations are loaded
once), run durably (fsync on, as a real deployment would) and are stopped on exit
whatever happens; they also get a signal if this process dies.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiobotocore.session
from aiobotocore.config import AioConfig
from types_aiobotocore_s3 import S3Client

from trainingfiles_dev.bootstrap import PROJECT_ROOT, apply_migrations
from trainingfiles_dev.embedded import running
from trainingfiles_server.storage import speak_every_dialect

BENCH_DIR = PROJECT_ROOT / ".bench"
CONVERSATIONS_BUCKET = "conversation-files"
TRAINING_BUCKET = "training-files"


@dataclass(frozen=True)
class Stack:
    """Where the data lives; `pids` are the embedded servers' (empty when configured)."""

    database_url: str
    s3_endpoint_url: str
    s3_access_key: str | None
    s3_secret_key: str | None
    s3_region: str
    embedded: bool
    postgres_pid: int | None = None
    seaweed_pid: int | None = None

    def server_env(self) -> dict[str, str]:
        """The service's environment variables for this stack."""
        env = {
            "DATABASE_URL": self.database_url,
            "S3_ENDPOINT_URL": self.s3_endpoint_url,
            "S3_REGION": self.s3_region,
            "S3_CONVERSATIONS_BUCKET": CONVERSATIONS_BUCKET,
            "S3_TRAINING_BUCKET": TRAINING_BUCKET,
        }
        if self.s3_access_key and self.s3_secret_key:
            env["S3_ACCESS_KEY_ID"] = self.s3_access_key
            env["S3_SECRET_ACCESS_KEY"] = self.s3_secret_key
        return env


@contextlib.contextmanager
def open_stack(data_dir: Path = BENCH_DIR / "stack") -> Iterator[Stack]:
    """The configured servers if `DATABASE_URL` and `S3_ENDPOINT_URL` are set, else embedded."""
    database_url = os.environ.get("DATABASE_URL")
    endpoint = os.environ.get("S3_ENDPOINT_URL")
    if database_url and endpoint:
        # The service's migrations only: the `conversations` table must already exist.
        apply_migrations(database_url, development=False)
        yield Stack(
            database_url=database_url,
            s3_endpoint_url=endpoint,
            s3_access_key=os.environ.get("S3_ACCESS_KEY_ID"),
            s3_secret_key=os.environ.get("S3_SECRET_ACCESS_KEY"),
            s3_region=os.environ.get("S3_REGION", "us-east-1"),
            embedded=False,
        )
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    with running(data_dir, durable=True) as (postgres, seaweed):
        url = postgres.url("trainingfiles")
        apply_migrations(url, development=True)
        yield Stack(
            database_url=url,
            s3_endpoint_url=seaweed.endpoint_url,
            s3_access_key=seaweed.access_key,
            s3_secret_key=seaweed.secret_key,
            s3_region="us-east-1",
            embedded=True,
            postgres_pid=postgres.process.pid,
            seaweed_pid=seaweed.process.pid,
        )


def s3_config(concurrency: int) -> AioConfig:
    """What the service uses (SigV4, path style, standard retries), sized for `concurrency`."""
    return AioConfig(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        retries={"mode": "standard", "max_attempts": 4},
        max_pool_connections=max(10, concurrency),
        connect_timeout=5,
        read_timeout=60,
    )


@contextlib.asynccontextmanager
async def s3_client(stack: Stack, concurrency: int = 16) -> AsyncIterator[S3Client]:
    session = aiobotocore.session.get_session()
    async with session.create_client(
        "s3",
        endpoint_url=stack.s3_endpoint_url,
        region_name=stack.s3_region,
        aws_access_key_id=stack.s3_access_key,
        aws_secret_access_key=stack.s3_secret_key,
        config=s3_config(concurrency),
    ) as client:
        speak_every_dialect(client)  # as the service does: Supabase Storage needs it
        yield client
