"""Automatic refresh: a file that opted in is refreshed once per burst of changes, by one
replica of two, also when the change happened while no server ran; a refresh that fails
is shown on the file and tried again after a back-off."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from prometheus_client import REGISTRY

from tests.conftest import Stack, authorized_channel, mint, stack_settings
from tests.e2e.conftest import OWNER
from tests.e2e.helpers import Stub, get, unique_name
from tests.e2e.test_refresh import Setup, _ids, _reenrich_at_new_key, _reenrich_in_place
from trainingfiles.v1 import resources_pb2, service_pb2, service_pb2_grpc
from trainingfiles_dev.generator import GeneratedConversation, generate, load
from trainingfiles_server.app import RunningServer, running_server
from trainingfiles_server.storage import Storage

TIMEOUT = 60
DEBOUNCE = 0.5


@contextlib.asynccontextmanager
async def replica(stack: Stack, **settings: object) -> AsyncIterator[tuple[RunningServer, Stub]]:
    """A server whose refresher acts within a second of a change."""
    configured = stack_settings(
        stack.postgres,
        stack.seaweed,
        **{"version_retention": 3, "refresh_debounce_seconds": DEBOUNCE, **settings},
    )
    async with (
        running_server(configured) as running,
        authorized_channel(running.port, mint("service_role")) as channel,
    ):
        yield running, service_pb2_grpc.TrainingFileServiceStub(channel)


@pytest.fixture(scope="module")
async def conversations(server: RunningServer, storage: Storage) -> list[GeneratedConversation]:
    made = list(generate(9305, 12, owners=[OWNER]))
    await load(server.database.pool, storage.client, storage.conversations_bucket, made)
    return made


def _setup(server: RunningServer, stub: Stub, storage: Storage) -> Setup:
    return Setup(stub, server, storage, [])


async def _create(stub: Stub, ids: list[str]) -> resources_pb2.TrainingFile:
    request = service_pb2.CreateTrainingFileRequest(
        name=unique_name("auto"), conversation_ids=ids, auto_refresh=True
    )
    last = None
    async for message in stub.CreateTrainingFile(request, timeout=TIMEOUT):
        last = message
    assert last is not None and last.training_file.auto_refresh
    created: resources_pb2.TrainingFile = last.training_file
    return created


async def _until(condition: Callable[[], Awaitable[bool]], timeout: float = 30) -> None:
    """Poll (bounded): the refresher announces nothing."""
    async with asyncio.timeout(timeout):
        while not await condition():  # noqa: ASYNC110
            await asyncio.sleep(0.1)


async def _versions(stub: Stub, file_id: str) -> list[resources_pb2.TrainingFileVersion]:
    page = await stub.ListTrainingFileVersions(
        service_pb2.ListTrainingFileVersionsRequest(training_file_id=file_id), timeout=TIMEOUT
    )
    return list(page.versions)


def _refreshes(outcome: str) -> float:
    """This process's automatic refreshes with `outcome`, as its metrics count them."""
    found = REGISTRY.get_sample_value("trainingfiles_refreshes_total", {"outcome": outcome})
    return found or 0.0


async def test_a_burst_of_changes_makes_one_refresh_on_one_replica_of_two(
    stack: Stack, storage: Storage, conversations: list[GeneratedConversation]
) -> None:
    chosen = conversations[:4]
    async with replica(stack) as (a, stub), replica(stack) as (b, _):
        created = await _create(stub, _ids(chosen))
        setup = _setup(a, stub, storage)
        # A burst: three changes of two conversations within a fraction of the debounce.
        await _reenrich_in_place(setup, chosen[0])
        await _reenrich_at_new_key(setup, chosen[2])

        async def refreshed() -> bool:
            return (await get(stub, created.id)).version == 2

        await _until(refreshed)
        # Settled: no second refresh follows, from either replica.
        await asyncio.sleep(4 * DEBOUNCE)
        file = await get(stub, created.id)
        assert (file.version, file.stale_conversation_count, file.refresh_attempts) == (2, 0, 0)
        newest = (await _versions(stub, created.id))[0]
        assert (newest.reason, newest.change_count) == (
            resources_pb2.VERSION_REASON_REFRESHED,
            2,
        )
        # Exactly one of the two replicas refreshed it, once.
        assert a.refresher is not None and b.refresher is not None
        by_either = [*a.refresher.refreshed, *b.refresher.refreshed]
        assert by_either.count(uuid.UUID(created.id)) == 1


async def test_a_change_made_while_no_server_ran_is_refreshed_at_start_up(
    stack: Stack, storage: Storage, conversations: list[GeneratedConversation]
) -> None:
    chosen = conversations[4:7]
    async with replica(stack) as (_, stub):
        created = await _create(stub, _ids(chosen))
    # No refreshing server runs now (the suite's own waits an hour): the change is only
    # recorded. The next server refreshes at start-up.
    async with replica(stack, refresh_debounce_seconds=3600) as (idle, stub):
        await _reenrich_at_new_key(_setup(idle, stub, storage), chosen[1])
    async with replica(stack) as (_, stub):

        async def refreshed() -> bool:
            return (await get(stub, created.id)).version == 2

        await _until(refreshed)


async def test_a_failed_refresh_is_shown_and_tried_again_after_a_back_off(
    stack: Stack, storage: Storage, conversations: list[GeneratedConversation]
) -> None:
    chosen = conversations[7:10]
    counted = {outcome: _refreshes(outcome) for outcome in ("failed", "refreshed")}
    async with replica(stack, refresh_retry_seconds=1.0) as (running, stub):
        created = await _create(stub, _ids(chosen))
        pool = running.database.pool
        # Re-enrichment starts and stays unfinished: the conversation cannot be used.
        await pool.execute(
            "UPDATE conversations SET enrichment_status = 'enrichment_in_progress' "
            "WHERE conversation_id = $1",
            chosen[0].conversation_id,
        )

        async def failed() -> bool:
            return (await get(stub, created.id)).refresh_attempts >= 1

        await _until(failed)
        file = await get(stub, created.id)
        assert file.version == 1
        assert "cannot be used" in file.refresh_error
        assert file.HasField("next_refresh_time")
        started = time.monotonic()
        await pool.execute(
            "UPDATE conversations SET enrichment_status = 'completed' WHERE conversation_id = $1",
            chosen[0].conversation_id,
        )

        async def recovered() -> bool:
            return (await get(stub, created.id)).version == 2

        await _until(recovered)
        file = await get(stub, created.id)
        assert (file.refresh_attempts, file.refresh_error) == (0, "")
        assert not file.HasField("next_refresh_time")
        assert time.monotonic() - started < 30
        # The metrics count the failures and the one refresh (docs/operations.md).
        assert _refreshes("failed") - counted["failed"] >= 1
        assert _refreshes("refreshed") - counted["refreshed"] == 1

        # Turned off, a change leaves the file stale.
        off = await stub.SetAutoRefresh(
            service_pb2.SetAutoRefreshRequest(training_file_id=created.id, enabled=False),
            timeout=TIMEOUT,
        )
        assert not off.auto_refresh
        await _reenrich_at_new_key(_setup(running, stub, storage), chosen[2])
        await asyncio.sleep(4 * DEBOUNCE)
        file = await get(stub, created.id)
        assert (file.version, file.stale_conversation_count) == (2, 1)
