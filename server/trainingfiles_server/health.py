"""The standard `grpc.health.v1` service, fed by a background probe.

The overall status ("") and the service's status are SERVING only while PostgreSQL and
both buckets answer within the probe timeout, NOT_SERVING otherwise. The probe runs on a
fixed interval so that a health check never waits on a dead dependency.

`CLEANUP` ("storage-cleanup") is NOT_SERVING also while the object store refuses a
cleanup call outright (`Storage.rejections`: deletes, aborts or listings of uploads):
the service still serves, but what it should delete stays. That never takes the service
itself out of rotation; the "health" log line names the refused calls and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from grpc_health.v1 import health, health_pb2

from .db import Database
from .storage import BucketMissing, Storage

log = logging.getLogger("trainingfiles.health")

SERVICE_NAME = "trainingfiles.v1.TrainingFileService"
CLEANUP = "storage-cleanup"


async def _probe(database: Database, storage: Storage, timeout: float) -> dict[str, str]:
    """Problems found, by dependency; empty when everything answers."""
    problems: dict[str, str] = {}
    for name, check in (("database", database.ping), ("storage", storage.ping)):
        try:
            async with asyncio.timeout(timeout):
                await check()
        except BucketMissing as exc:
            problems[name] = str(exc)
        except Exception as exc:  # any failure means "not serving"; the reason is logged
            problems[name] = type(exc).__name__
    return problems


async def _set_all(servicer: health.aio.HealthServicer, status: int) -> None:
    for service in ("", SERVICE_NAME):
        await servicer.set(service, status)


@contextlib.asynccontextmanager
async def monitored(
    servicer: health.aio.HealthServicer,
    database: Database,
    storage: Storage,
    *,
    interval: float,
    timeout: float,
) -> AsyncIterator[None]:
    """Probe once (so the first check is accurate), then keep probing until exit."""
    last: tuple[dict[str, str], dict[str, str]] | None = None

    async def probe_once() -> None:
        nonlocal last
        problems = await _probe(database, storage, timeout)
        rejections = dict(storage.rejections)
        if (problems, rejections) != last:
            fields: dict[str, object] = {"serving": not problems, **problems}
            if rejections:
                fields["storage_rejects"] = rejections
            level = logging.WARNING if problems or rejections else logging.INFO
            log.log(level, "health", extra={"fields": fields})
            last = (problems, rejections)
        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        await _set_all(servicer, not_serving if problems else serving)
        await servicer.set(CLEANUP, not_serving if problems or rejections else serving)

    async def loop() -> None:
        while True:
            await asyncio.sleep(interval)
            await probe_once()

    await probe_once()
    task = asyncio.create_task(loop(), name="health-probe")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
