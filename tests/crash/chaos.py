"""`make chaos`: many kill and stall points against real processes, and a table.

Starts its own PostgreSQL and SeaweedFS in a temporary directory, loads padded
conversations, then runs `--count` scenarios (100 by default), each a Create, Add,
Remove, Refresh or Export in turn, killed at a random failpoint it reaches (a random
document for `build.fetched`), some with the database or the store frozen (SIGSTOP of
its whole process tree) for one and a half leases while the build runs, some with a
stall only. After each, a fresh server process
must bring the file back to the invariants of `harness.py` within the deadline. Prints
a table and writes it to `docs/chaos.md` with `--write`; exits 1 on any violation.

    python -m tests.crash.chaos [--count N] [--seed S] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import random
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from tests.conftest import mint, stack_settings
from tests.crash.harness import (
    LEASE_SECONDS,
    REPAIR_DEADLINE,
    SWEEP_INTERVAL_SECONDS,
    Backend,
    Observer,
    Outcome,
    padded,
    run_add,
    run_create,
    run_export,
    run_refresh,
    run_remove,
    server_process,
)
from trainingfiles.v1 import resources_pb2, service_pb2, service_pb2_grpc
from trainingfiles_dev.bootstrap import apply_migrations, ensure_buckets
from trainingfiles_dev.embedded import running
from trainingfiles_dev.generator import generate, load
from trainingfiles_server.failpoints import POINTS
from trainingfiles_server.storage import open_storage

STALLS = (None, None, "postgres", "storage")
CONVERSATIONS = 200
OWNER = uuid.UUID("00000000-0000-4000-8000-0000000c4a05")
NEVER = "build.leased:999999"  # a failpoint no build reaches: a stall alone


OPERATIONS = ("create", "add", "remove", "refresh", "export")
# Documents each operation fetches, for a `build.fetched` point: Remove and Export fetch
# none; a Refresh fetches its two stale conversations.
FETCHES = {"create": 30, "add": 15, "remove": 0, "refresh": 2, "export": 0}
TRAINER = (
    resources_pb2.FILE_FORMAT_OPENAI_CHAT,
    resources_pb2.FILE_FORMAT_SHAREGPT,
    resources_pb2.FILE_FORMAT_PARQUET,
)


def scenarios(count: int, seed: int) -> list[tuple[str, str | None, str | None]]:
    """(operation, failpoint or None, stall or None), reproducible from the seed: the five
    build operations in turn, each at a failpoint it reaches."""
    rng = random.Random(seed)
    chosen = []
    for index in range(count):
        operation = OPERATIONS[index % len(OPERATIONS)]
        stall = rng.choice(STALLS)
        points = [
            p
            for p in POINTS
            if p.startswith("build.") and (p != "build.fetched" or FETCHES[operation])
        ]
        if operation == "export":  # its small renditions go up in single PUTs
            points = [p for p in points if not p.startswith("build.upload_")]
        point: str | None = rng.choice(points)
        if stall is not None and rng.random() < 0.25:
            point = None  # a stall alone: the build must survive it or fail cleanly
        if point == "build.fetched":
            point = f"build.fetched:{rng.randint(1, FETCHES[operation] - 1 or 1)}"
        chosen.append((operation, point, stall))
    return chosen


async def main(count: int, seed: int) -> tuple[str, bool]:
    with tempfile.TemporaryDirectory(prefix="trainingfiles-chaos-") as directory:
        root = Path(directory)
        with running(root, durable=False) as (postgres, seaweed):
            apply_migrations(postgres.url("trainingfiles"), development=True)
            settings = stack_settings(postgres, seaweed)
            backend = Backend(
                postgres.url("trainingfiles"),
                seaweed.endpoint_url,
                seaweed.access_key,
                seaweed.secret_key,
                postgres_pid=postgres.process.pid,
                seaweed_pid=seaweed.process.pid,
            )
            token = mint("service_role")
            async with open_storage(settings) as storage:
                await ensure_buckets(
                    storage.client, settings.s3_conversations_bucket, settings.s3_training_bucket
                )
                pool = await asyncpg.create_pool(backend.database_url, min_size=1, max_size=4)
                try:
                    conversations = [
                        padded(c) for c in generate(seed, CONVERSATIONS, owners=[OWNER])
                    ]
                    await load(pool, storage.client, storage.conversations_bucket, conversations)
                    ids = [str(c.conversation_id) for c in conversations]
                    observer = Observer(pool, storage)
                    outcomes = await _run(backend, observer, root, token, ids, count, seed)
                finally:
                    await pool.close()
    return render(outcomes, count, seed), all(o.ok for o in outcomes)


async def _run(
    backend: Backend,
    observer: Observer,
    root: Path,
    token: str,
    ids: list[str],
    count: int,
    seed: int,
) -> list[Outcome]:
    outcomes: list[Outcome] = []
    pool_of_ids = collections.deque(ids)
    for index, (operation, point, stall) in enumerate(scenarios(count, seed)):
        if len(pool_of_ids) < 45:
            pool_of_ids.extend(ids)  # conversations may be in many files
        take = [pool_of_ids.popleft() for _ in range(30 if operation == "create" else 35)]
        started = time.monotonic()
        fault = point or "none"
        armed = point or NEVER
        if operation == "create":
            outcome = await run_create(backend, observer, root, token, take, armed, stall)
        elif operation == "add":
            base = await _base_file(backend, root, token, take[:20])
            outcome = await run_add(backend, observer, root, token, base, take[20:], armed, stall)
        elif operation == "remove":
            base = await _base_file(backend, root, token, take[:20], TRAINER)
            gone = take[3:20:8]
            outcome = await run_remove(backend, observer, root, token, base, gone, armed, stall)
        elif operation == "refresh":
            base = await _base_file(backend, root, token, take[:12])
            await _reenrich(observer, take[2:12:7])
            outcome = await run_refresh(backend, observer, root, token, base, armed, stall)
        else:
            base = await _base_file(backend, root, token, take[:20])
            outcome = await run_export(backend, observer, root, token, base, TRAINER, armed, stall)
        outcome.fault = fault + (f" + {stall} stall" if stall else "")
        mark = "ok" if outcome.ok else "VIOLATION: " + "; ".join(outcome.problems)
        print(
            f"{index + 1:>4}/{count} {operation:<6} {outcome.fault:<40} "
            f"{outcome.call_code:<20} {outcome.final_status[21:]:<9} "
            f"repaired in {outcome.repair_seconds:4.1f} s  "
            f"({time.monotonic() - started:4.1f} s)  {mark}",
            file=sys.stderr,
            flush=True,
        )
        outcomes.append(outcome)
    return outcomes


async def _reenrich(observer: Observer, ids: list[str]) -> None:
    """Re-enrich `ids` in place, as the pipeline does: their members become stale."""
    for status in ("enrichment_in_progress", "completed"):
        await observer.pool.execute(
            "UPDATE conversations SET enrichment_status = $2 "
            "WHERE conversation_id = ANY($1::uuid[])",
            [uuid.UUID(i) for i in ids],
            status,
        )


async def _base_file(
    backend: Backend, root: Path, token: str, ids: list[str], formats: tuple[int, ...] = ()
) -> str:
    from tests.conftest import authorized_channel

    async with (
        server_process(backend, root / "base.log") as server,
        authorized_channel(server.port, token) as channel,
    ):
        stub = service_pb2_grpc.TrainingFileServiceStub(channel)
        last = None
        async for message in stub.CreateTrainingFile(
            service_pb2.CreateTrainingFileRequest(
                name=f"chaos-base-{time.monotonic_ns()}",
                conversation_ids=ids,
                formats=list(formats),  # type: ignore[arg-type]
            ),
            timeout=120,
        ):
            last = message
        assert last is not None and last.HasField("training_file")
        return str(last.training_file.id)


def render(outcomes: list[Outcome], count: int, seed: int) -> str:
    """The markdown table: per operation and fault kind, how it ended and how fast."""
    groups: dict[tuple[str, str], list[Outcome]] = collections.defaultdict(list)
    for outcome in outcomes:
        point = outcome.fault.split(" + ")[0].split(":")[0]
        stall = outcome.fault.split(" + ")[1] if " + " in outcome.fault else "—"
        groups[(f"{outcome.operation} at {point}", stall)].append(outcome)
    lines = [
        "# Chaos run",
        "",
        f"`make chaos` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {count} scenarios, seed "
        f"{seed}; lease {LEASE_SECONDS:g} s, sweep every {SWEEP_INTERVAL_SECONDS:g} s, "
        f"repair deadline {REPAIR_DEADLINE:g} s. Each scenario kills (SIGKILL, at a "
        "failpoint) or stalls (SIGSTOP of PostgreSQL's or SeaweedFS's process tree for "
        f"{LEASE_SECONDS * 1.5:g} s) a server process mid-build, starts a fresh one, and "
        "waits for the invariants of `tests/crash/harness.py`.",
        "",
        "| scenario | stall | runs | killed | call ended | file after | repaired in "
        "(max) | violations |",
        "|---|---|---:|---:|---|---|---:|---:|",
    ]
    for (scenario, stall), group in sorted(groups.items()):
        codes = collections.Counter(o.call_code or "—" for o in group)
        finals = collections.Counter(o.final_status[21:] or "none" for o in group)
        lines.append(
            f"| {scenario} | {stall} | {len(group)} | {sum(o.died for o in group)} | "
            + ", ".join(f"{c} ×{n}" for c, n in codes.most_common())
            + " | "
            + ", ".join(f"{c} ×{n}" for c, n in finals.most_common())
            + f" | {max(o.repair_seconds for o in group):.1f} s | "
            f"{sum(not o.ok for o in group)} |"
        )
    bad = [o for o in outcomes if not o.ok]
    lines += [
        "",
        f"**{len(outcomes)} scenarios, {len(bad)} invariant violations.**",
    ]
    for outcome in bad:
        lines.append(f"- {outcome.operation} {outcome.fault}: {'; '.join(outcome.problems)}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--seed", type=int, default=20261129)
    parser.add_argument("--write", action="store_true", help="write docs/chaos.md")
    arguments = parser.parse_args()
    table, clean = asyncio.run(main(arguments.count, arguments.seed))
    print(table)
    if arguments.write:
        Path("docs/chaos.md").write_text(table)
    sys.exit(0 if clean else 1)
