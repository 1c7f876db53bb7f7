"""Shared fixtures: real PostgreSQL and SeaweedFS on free ports, and a real gRPC server.

The session starts its own servers in a temporary directory and stops them when it ends,
also when tests fail or the run is interrupted (and, as a last resort, the servers get a
signal when this process dies). Nothing here mocks PostgreSQL, S3 or gRPC.
"""

from __future__ import annotations

import secrets
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from trainingfiles.v1 import service_pb2_grpc
from trainingfiles_dev.bootstrap import apply_migrations, ensure_buckets
from trainingfiles_dev.embedded import EmbeddedPostgres, EmbeddedSeaweedFS, running
from trainingfiles_dev.token import mint_token
from trainingfiles_server.app import RunningServer, running_server
from trainingfiles_server.config import Settings
from trainingfiles_server.models import Role
from trainingfiles_server.storage import Storage, open_storage


@dataclass(frozen=True)
class Stack:
    postgres: EmbeddedPostgres
    seaweed: EmbeddedSeaweedFS
    directory: Path

    @property
    def database_url(self) -> str:
        return self.postgres.url("trainingfiles")


# A fresh secret per test session: tokens minted here are valid for these servers only.
TEST_JWT_SECRET = secrets.token_urlsafe(48)


def mint(role: Role = "service_role", user_id: uuid.UUID | None = None, **kwargs: Any) -> str:
    """A token for the test servers; a random user unless `user_id` is given."""
    return mint_token(TEST_JWT_SECRET, user_id=user_id or uuid.uuid4(), role=role, **kwargs)


class _BearerToken:
    """Adds `authorization: Bearer <token>` to every call that does not carry one."""

    def __init__(self, token: str) -> None:
        self._metadata = ("authorization", f"Bearer {token}")

    def _details(self, details: Any) -> Any:
        metadata = list(details.metadata or ())
        if not any(key == "authorization" for key, _ in metadata):
            metadata.append(self._metadata)
        return details._replace(metadata=metadata)


# grpc.aio sorts interceptors by their first matching kind, so one class per kind.
class _UnaryBearer(_BearerToken, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _StreamBearer(_BearerToken, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


# Validation errors list every offending id in trailing metadata: up to ~1.3 MB for
# 10,000 ids, far above gRPC C-core's default 16 KiB limit for received metadata.
LARGE_METADATA = [
    ("grpc.max_metadata_size", 8 * 1024 * 1024),
    ("grpc.absolute_max_metadata_size", 8 * 1024 * 1024),
]


def authorized_channel(port: int, token: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        f"127.0.0.1:{port}",
        options=LARGE_METADATA,
        interceptors=[_UnaryBearer(token), _StreamBearer(token)],
    )


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
        "jwt_secret": TEST_JWT_SECRET,
        # The sweeper runs once at start-up, then only when a test calls it: tests that
        # snapshot the bucket must not see it act in the background. The crash suite
        # runs servers as processes with the production schedule.
        "sweep_interval_seconds": 3600,
        # An Add prunes the version before it, as before versions were kept: the suites
        # written then check that replaced objects go. tests/e2e/test_versions.py runs
        # servers that keep several.
        "version_retention": 1,
        # Automatic refresh off in practice (a debounce of an hour): files of other tests
        # must not be refreshed behind their backs. tests/e2e/test_auto_refresh.py runs
        # servers that refresh.
        "refresh_debounce_seconds": 3600,
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
def token() -> str:
    """A service_role token: acts for the system, sees every file."""
    return mint("service_role")


@pytest.fixture(scope="session")
async def channel(server: RunningServer, token: str) -> AsyncIterator[grpc.aio.Channel]:
    """A channel whose calls carry the service token unless they name another one."""
    async with authorized_channel(server.port, token) as channel:
        yield channel


@pytest.fixture(scope="session")
def stub(channel: grpc.aio.Channel) -> service_pb2_grpc.TrainingFileServiceStub:
    return service_pb2_grpc.TrainingFileServiceStub(channel)
