"""The compatibility suite's stores: the embedded SeaweedFS and real Supabase Storage.

Every test here takes the `leg` fixture, parametrised over the supported stores, so the
same test function runs against each (test ids `[seaweedfs]` and `[supabase]`). A leg is
one store with buckets of its own, a service database of its own (both databases on the
session's PostgreSQL), a server on it (in-process, port 0) and the conversations the
tests use. The SeaweedFS leg uses the session's SeaweedFS; the Supabase leg starts
Supabase Storage from its source (`tests/compat/supabase.py`), with a PostgreSQL
database of its own too.

The Supabase leg runs when the source is found (`SUPABASE_STORAGE_SRC`, by default
`../shared/supabase-storage`); otherwise its tests are skipped with the reason, and the
terminal summary says so. Under CI (`CI` set) a missing source is an error: CI must run
both legs. Installing it (the first time only; minutes) happens once collection is done,
outside any test's timeout, and only when a selected test needs it.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import Stack, authorized_channel, mint, stack_settings
from tests.crash.harness import Backend, padded
from tests.e2e.helpers import Calls, Stub
from trainingfiles.v1 import service_pb2_grpc
from trainingfiles_dev.bootstrap import apply_migrations, ensure_buckets
from trainingfiles_dev.generator import GeneratedConversation, Kind, generate_one, load
from trainingfiles_server.app import RunningServer, running_server
from trainingfiles_server.config import Settings
from trainingfiles_server.storage import Storage, open_storage

from . import supabase

STORES = ("seaweedfs", "supabase")
# Buckets of the legs: apart from the rest of the session's, so no other server's
# sweeper ever lists or touches them.
CONVERSATIONS = "compat-conversations"
TRAINING = "compat-training"
OWNER = uuid.UUID("00000000-0000-4000-8000-0000000c0a71")
SEED = 17_017
BIG = 40  # ~400 KiB each: a file of all of them is ~16 MiB per object, four 5 MiB parts
SMALL = 4


class _Status:
    """What the terminal summary says about the Supabase leg."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.install: supabase.Install | BaseException | None = None


STATUS = _Status()


def _wants_supabase(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    params = callspec.params if callspec is not None else {}
    fixtures = getattr(item, "fixturenames", ())
    return params.get("leg") == "supabase" or "supabase_leg" in fixtures


def pytest_collection_finish(session: pytest.Session) -> None:
    """Install Supabase Storage now (if a selected test needs it), outside any timeout."""
    if not any(_wants_supabase(item) for item in session.items):
        return
    src = supabase.source()
    if supabase.missing_source_reason(src) is not None:
        return  # the fixture skips (or, under CI, fails) with the reason
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and not supabase.installed(src):
        reporter.write_line(
            f"compatibility suite: installing Supabase Storage's node_modules into "
            f"{supabase.cache_root()} (once per lock file: a few minutes)"
        )
    try:
        STATUS.install = supabase.install(src)
    except Exception as exc:  # reported by every test that needs it
        STATUS.install = exc


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if STATUS.lines:
        terminalreporter.section("compatibility suite")
        for line in STATUS.lines:
            terminalreporter.write_line(line)


# ----------------------------------------------------------------- legs


@dataclass
class Leg:
    """One supported store, with everything the compatibility tests use on it."""

    name: str
    stack: Stack
    settings: Settings
    storage: Storage  # the tests' own client, to look at the buckets from outside
    server: RunningServer
    stub: Stub
    calls: Calls
    big: list[GeneratedConversation]
    small: list[GeneratedConversation]
    missing: GeneratedConversation  # its row names an object that was never stored

    @property
    def database_url(self) -> str:
        return self.settings.database_url.get_secret_value()

    def ids(self, conversations: list[GeneratedConversation]) -> list[str]:
        return [str(c.conversation_id) for c in conversations]

    def store_env(self) -> dict[str, str]:
        """The S3 settings of this leg, as a server process's environment."""
        assert self.settings.s3_endpoint_url is not None
        keys = (self.settings.s3_access_key_id, self.settings.s3_secret_access_key)
        assert keys[0] is not None and keys[1] is not None
        return {
            "S3_ENDPOINT_URL": self.settings.s3_endpoint_url,
            "S3_REGION": self.settings.s3_region,
            "S3_ACCESS_KEY_ID": keys[0].get_secret_value(),
            "S3_SECRET_ACCESS_KEY": keys[1].get_secret_value(),
            "S3_CONVERSATIONS_BUCKET": self.settings.s3_conversations_bucket,
            "S3_TRAINING_BUCKET": self.settings.s3_training_bucket,
        }

    def backend(self) -> Backend:
        """For the crash harness's server processes (the buckets go in `store_env`)."""
        env = self.store_env()
        return Backend(
            self.database_url,
            env["S3_ENDPOINT_URL"],
            env["S3_ACCESS_KEY_ID"],
            env["S3_SECRET_ACCESS_KEY"],
        )

    def settings_with(self, **overrides: object) -> Settings:
        return self.settings.model_copy(update=overrides)


def _conversations() -> tuple[
    list[GeneratedConversation], list[GeneratedConversation], GeneratedConversation
]:
    owners = [OWNER]
    big = [padded(generate_one(SEED, i, owners=owners)) for i in range(BIG)]
    missing = generate_one(SEED, BIG, owners=owners, kind=Kind.MISSING_OBJECT)
    small = [generate_one(SEED, BIG + 1 + i, owners=owners) for i in range(SMALL)]
    return big, small, missing


@contextlib.asynccontextmanager
async def _leg(
    name: str,
    stack: Stack,
    *,
    endpoint_url: str,
    region: str,
    access_key: str,
    secret_key: str,
) -> AsyncIterator[Leg]:
    database = f"compat_{name}"
    stack.postgres.create_database(database)
    apply_migrations(stack.postgres.url(database), development=True)
    settings = stack_settings(
        stack.postgres,
        stack.seaweed,
        database_url=stack.postgres.url(database),
        s3_endpoint_url=endpoint_url,
        s3_region=region,
        s3_access_key_id=access_key,
        s3_secret_access_key=secret_key,
        s3_conversations_bucket=CONVERSATIONS,
        s3_training_bucket=TRAINING,
    )
    async with open_storage(settings) as storage:
        await ensure_buckets(storage.client, CONVERSATIONS, TRAINING)
        async with running_server(settings) as server:
            calls = Calls()
            calls.attach(server.storage.client)
            async with authorized_channel(server.port, mint("service_role")) as channel:
                big, small, missing = _conversations()
                await load(
                    server.database.pool, storage.client, CONVERSATIONS, [*big, missing, *small]
                )
                yield Leg(
                    name,
                    stack,
                    settings,
                    storage,
                    server,
                    service_pb2_grpc.TrainingFileServiceStub(channel),
                    calls,
                    big,
                    small,
                    missing,
                )


@pytest.fixture(scope="session")
async def seaweedfs_leg(stack: Stack) -> AsyncIterator[Leg]:
    async with _leg(
        "seaweedfs",
        stack,
        endpoint_url=stack.seaweed.endpoint_url,
        region="us-east-1",
        access_key=stack.seaweed.access_key,
        secret_key=stack.seaweed.secret_key,
    ) as leg:
        yield leg


@pytest.fixture(scope="session")
def supabase_storage(stack: Stack) -> Iterator[supabase.SupabaseStorage]:
    """Supabase Storage, started from its source with a database of its own."""
    src = supabase.source()
    reason = supabase.missing_source_reason(src)
    if reason is not None:
        if os.environ.get("CI"):
            STATUS.lines.append(f"Supabase Storage leg FAILED (CI must run it): {reason}")
            pytest.fail(f"{reason}; CI must run the Supabase Storage leg", pytrace=False)
        STATUS.lines.append(f"Supabase Storage leg SKIPPED: {reason}")
        pytest.skip(reason)
    install = STATUS.install if STATUS.install is not None else supabase.install(src)
    if isinstance(install, BaseException):
        STATUS.lines.append(f"Supabase Storage leg FAILED to install: {install}")
        raise install
    how = "installed" if install.installed else "found installed"
    STATUS.lines.append(
        f"Supabase Storage leg ran: node_modules {how} in {install.directory} "
        f"({install.seconds:.1f} s)"
    )
    stack.postgres.create_database("supabase_storage")
    with supabase.running(
        src, stack.directory / "supabase", stack.postgres.url("supabase_storage"), install
    ) as server:
        yield server


@pytest.fixture(scope="session")
async def supabase_leg(
    stack: Stack, supabase_storage: supabase.SupabaseStorage
) -> AsyncIterator[Leg]:
    async with _leg(
        "supabase",
        stack,
        endpoint_url=supabase_storage.endpoint_url,
        region=supabase_storage.region,
        access_key=supabase_storage.access_key,
        secret_key=supabase_storage.secret_key,
    ) as leg:
        yield leg


@pytest.fixture(params=STORES)
def leg(request: pytest.FixtureRequest) -> Leg:
    """The store under test: each test runs once per supported store."""
    found: Leg = request.getfixturevalue(f"{request.param}_leg")
    return found
