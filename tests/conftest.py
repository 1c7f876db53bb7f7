"""Shared fixtures: real PostgreSQL and SeaweedFS on free ports, and a real gRPC server.

The session starts its own servers in a temporary directory and stops them when it ends,
also when tests fail or the run is interrupted (and, as a last resort, the servers get a
signal when this process dies). Nothing here mocks PostgreSQL, S3 or gRPC.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from trainingfiles.v1 import service_pb2_grpc
from trainingfiles_server.app import RunningServer, running_server
from trainingfiles_server.config import Settings
from trainingfiles_server.dev.bootstrap import apply_migrations, ensure_buckets
from trainingfiles_server.dev.embedded import EmbeddedPostgres, EmbeddedSeaweedFS, running
from trainingfiles_server.storage import Storage, open_storage


@dataclass(frozen=True)
class Stack:
    postgres: EmbeddedPostgres
    seaweed: EmbeddedSeaweedFS
    directory: Path

    @property
    def database_url(self) -> str:
        return self.postgres.url("trainingfiles")


def stack_settings(
    postgres: EmbeddedPostgres, seaweed: EmbeddedSeaweedFS, **overrides: object
) -> Settings:
    """Settings for a server on port 0 against the given servers; no `.env` file read."""
    values: dict[str, Any] = {
        "database_url": postgres.url("trainingfiles"),
        "s3_endpoint_url": seaweed.endpoint_url,
        "s3_access_key_id": seaweed.access_key,
        "s3_secret_access_key": seaweed.secret_key,
        "listen_address": "127.0.0.1:0",
        "health_check_interval_seconds": 0.2,
        "health_check_timeout_seconds": 1.0,
        "shutdown_grace_seconds": 2.0,
        "s3_max_attempts": 2,
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="trainingfiles-test-") as directory:
        root = Path(directory)
        with running(root, durable=False) as (postgres, seaweed):
            apply_migrations(postgres.url("trainingfiles"), development=True)
            yield Stack(postgres, seaweed, root)


@pytest.fixture(scope="session")
def settings(stack: Stack) -> Settings:
    return stack_settings(stack.postgres, stack.seaweed)


@pytest.fixture(scope="session")
async def storage(settings: Settings) -> AsyncIterator[Storage]:
    async with open_storage(settings) as storage:
        await ensure_buckets(
            storage.client, settings.s3_conversations_bucket, settings.s3_training_bucket
        )
        yield storage


@pytest.fixture(scope="session")
async def server(settings: Settings, storage: Storage) -> AsyncIterator[RunningServer]:
    async with running_server(settings) as running_:
        yield running_


@pytest.fixture(scope="session")
async def channel(server: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield channel


@pytest.fixture(scope="session")
def stub(channel: grpc.aio.Channel) -> service_pb2_grpc.TrainingFileServiceStub:
    return service_pb2_grpc.TrainingFileServiceStub(channel)
