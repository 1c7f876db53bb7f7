"""`python -m bench [--sizes 1000 10000]`: run the benchmark and write its results."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from trainingfiles.v1 import resources_pb2, service_pb2
from trainingfiles_dev.bootstrap import PROJECT_ROOT, ensure_buckets
from trainingfiles_server.config import Settings

from . import report, workload
from .dataset import Dataset, ensure_loaded
from .floor import FloorRun, measure_floor, objects_of, read_all, v4_objects
from .procstat import load_average
from .server import MAX_OBJECT_BYTES, Service, running_service, service_settings
from .stack import BENCH_DIR, CONVERSATIONS_BUCKET, TRAINING_BUCKET, Stack, open_stack, s3_client

DEFAULT_SIZES = (1_000, 10_000)
DEFAULT_SEED = 20261127
FLOOR_CONCURRENCY = (8, 16, 32)
NAME_PREFIX = "trainingfiles-bench-"
LIST_FILLERS = 100  # files in the table besides the benchmark's own, so List fills a page
# Service logs kept under .bench/logs: up to five per N and run (one server each), the
# one with the read phases up to ~25 MB.
KEEP_LOGS = 30
VALIDATION_FRACTION = 0.1  # the all-formats Create's split
# Several clients at once: this many v4-only Creates of this many conversations together,
# against one such Create on the same server.
CONCURRENT_CREATES, CONCURRENT_EACH = 8, 1_000
# Formats exported from the v4-only file, one ExportTrainingFile each.
EXPORTED = (
    ("openai_chat", resources_pb2.FILE_FORMAT_OPENAI_CHAT),
    ("parquet", resources_pb2.FILE_FORMAT_PARQUET),
)


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES), help="values of N"
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="generator seed")
    parser.add_argument(
        "--fetch-concurrency",
        type=int,
        default=None,
        help="the service's FETCH_CONCURRENCY (default: the service's default)",
    )
    parser.add_argument(
        "--floor-concurrency",
        type=int,
        nargs="+",
        default=list(FLOOR_CONCURRENCY),
        help="concurrency settings tried for the floor (the service's is added)",
    )
    parser.add_argument("--callers", type=int, default=32, help="concurrent readers")
    parser.add_argument("--read-seconds", type=float, default=10.0, help="per read method")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="record the server with py-spy during each Create, Add, Export and read phase "
        "(.bench/profiles/*.folded; `python -m bench.profiles FILE` summarises one)",
    )
    parser.add_argument(
        "--server-path",
        type=Path,
        default=None,
        help="run the service from this directory's trainingfiles_server (another "
        "checkout's server/, to compare a baseline); the results record it",
    )
    parser.add_argument("--skip-floor", action="store_true", help="no floor (quick checks)")
    parser.add_argument("--skip-reads", action="store_true", help="no Get/List load")
    parser.add_argument(
        "--skip-formats",
        action="store_true",
        help="no all-formats Create and no exports (v4 only, as before the formats)",
    )
    parser.add_argument(
        "--skip-statistics",
        action="store_true",
        help="no Create with COUNT_TOKENS=false (the token statistics' CPU)",
    )
    parser.add_argument(
        "--skip-concurrent",
        action="store_true",
        help=f"no {CONCURRENT_CREATES} concurrent Creates of {CONCURRENT_EACH:,} conversations",
    )
    parser.add_argument(
        "--selector",
        action="store_true",
        help="also a v4-only Create of the N conversations chosen by a selector (no id "
        "list), on a fresh server: its RSS above idle is reported as the selector's",
    )
    parser.add_argument(
        "--no-save", action="store_true", help="print only; do not touch bench/results/"
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="measure nothing: redraw latest.md and latest.png from bench/results/",
    )
    args = parser.parse_args(argv)
    if any(n < 1 for n in args.sizes):
        parser.error("sizes must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    if args.report_only:
        print(_publish())
        return
    # Ctrl-C, and SIGTERM alike, cancel the run; every server started is then stopped.
    # (SIGINT is restored in case it was inherited as ignored, as by background jobs.)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    started = time.perf_counter()
    load_before = load_average()
    print(
        f"Benchmark {run_id}: N = {', '.join(f'{n:,}' for n in sorted(args.sizes))}; "
        f"load average {load_before[0]:.2f} on {os.cpu_count()} cores.",
        flush=True,
    )
    try:
        with open_stack() as stack:
            run = asyncio.run(_run(args, stack, run_id))
    except KeyboardInterrupt:
        print("\nInterrupted: every server the benchmark started is stopped.", file=sys.stderr)
        raise SystemExit(130) from None
    run["machine"]["load_before"] = list(load_before)
    run["machine"]["load_after"] = list(load_average())
    run["duration_s"] = round(time.perf_counter() - started, 1)
    if args.no_save:
        print(report.console([(run, size) for size in run["sizes"]]))
        return
    path = report.write_run(run)
    print("\n" + _publish())
    print(
        f"Results: {path.relative_to(PROJECT_ROOT)}; table bench/results/latest.md; chart "
        f"bench/results/latest.png. Took {run['duration_s'] / 60:.1f} min.",
        flush=True,
    )


def _publish() -> str:
    """latest.md and latest.png from the newest result of each N; returns the markdown."""
    rows = report.latest_per_size()
    markdown = report.markdown(rows)
    (report.RESULTS_DIR / "latest.md").write_text(markdown)
    report.chart(rows, report.RESULTS_DIR / "latest.png")
    return markdown


async def _run(args: argparse.Namespace, stack: Stack, run_id: str) -> dict[str, Any]:
    sizes = sorted(set(args.sizes))
    extra = {n: max(1, n // 100) for n in sizes}
    needed = max(n + extra[n] for n in sizes)
    async with s3_client(stack) as s3:
        await ensure_buckets(s3, CONVERSATIONS_BUCKET, TRAINING_BUCKET)
    dataset = await ensure_loaded(stack, args.seed, needed)
    if dataset.loaded_now:
        print(f"Loaded in {dataset.load_seconds:.0f} s.", flush=True)
    await _remove_bench_files(stack)
    _prune_logs(BENCH_DIR / "logs")
    fetch_concurrency = args.fetch_concurrency or int(
        Settings.model_fields["fetch_concurrency"].default
    )
    settings = service_settings(args.fetch_concurrency, needed)
    if args.server_path is not None:
        settings["PYTHONPATH"] = str(args.server_path.resolve())
    results: list[dict[str, Any]] = []
    try:
        for n in sizes:
            results.append(
                await _one_size(
                    args, stack, dataset, n, extra[n], run_id, settings, fetch_concurrency
                )
            )
    finally:
        await _remove_bench_files(stack)
    return {
        "run_id": run_id,
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "machine": _machine(),
        "stack": "embedded" if stack.embedded else "configured",
        "seed": args.seed,
        "service_settings": {**settings, "FETCH_CONCURRENCY": str(fetch_concurrency)},
        "max_object_bytes": MAX_OBJECT_BYTES,
        "floor_concurrency": sorted({*args.floor_concurrency, fetch_concurrency}),
        "read_callers": args.callers,
        "read_seconds": args.read_seconds,
        "profiled": args.profile,
        "sizes": results,
    }


async def _one_size(
    args: argparse.Namespace,
    stack: Stack,
    dataset: Dataset,
    n: int,
    extra: int,
    run_id: str,
    settings: dict[str, str],
    fetch_concurrency: int,
) -> dict[str, Any]:
    ids, paths = dataset.ids[:n], dataset.paths[:n]
    pids = {"seaweedfs": stack.seaweed_pid, "postgres": stack.postgres_pid}
    print(f"\n— N = {n:,} —", flush=True)
    # Same starting point for the service and the floor: the objects read once already.
    input_bytes, seconds = await read_all(stack, paths, 32)
    print(f"  warm-up: read {input_bytes / 1e6:,.0f} MB in {seconds:.1f} s", flush=True)
    log_path = BENCH_DIR / "logs" / f"{run_id}-service-{n}.log"
    profiles = BENCH_DIR / "profiles"
    reads: dict[str, Any] = {}
    exports: dict[str, Any] = {}
    name = f"{NAME_PREFIX}{run_id}-{n}"
    async with running_service(stack, settings, log_path) as service:
        async with _profiled(args.profile, service, profiles / f"{run_id}-create-{n}"):
            create = await workload.create(service, name, ids, pids)
        print(f"  Create (v4 only): {_stream_line(create)}", flush=True)
        added = dataset.ids[n : n + extra]
        async with _profiled(args.profile, service, profiles / f"{run_id}-add-{n}"):
            add = await workload.add(service, create.training_file_id, added, pids)
        print(f"  Add of {extra:,}: {add.wall_s:.2f} s", flush=True)
        # Versions, on the v4-only file (N + 1 %): 1 % of N removed, spread over the file
        # (every 100th); then 1 % re-enriched (in place: the pipeline's status updates,
        # which the trigger records) and refreshed.
        gone = ids[::100][: max(1, n // 100)]
        async with _profiled(args.profile, service, profiles / f"{run_id}-remove-{n}"):
            remove = await workload.remove(service, create.training_file_id, gone, pids)
        print(f"  Remove of {len(gone):,}: {_stream_line(remove)}", flush=True)
        stale = ids[50::100][: max(1, n // 100)]
        await _reenrich(stack, stale)
        async with _profiled(args.profile, service, profiles / f"{run_id}-refresh-{n}"):
            refresh = await workload.refresh(service, create.training_file_id, pids)
        print(f"  Refresh of {len(stale):,} stale: {_stream_line(refresh)}", flush=True)
        if not args.skip_reads:
            await _fill_list(stack, create.training_file_id, name)
            for method, request in (
                (
                    "GetTrainingFile",
                    service_pb2.GetTrainingFileRequest(training_file_id=create.training_file_id),
                ),
                ("ListTrainingFiles", service_pb2.ListTrainingFilesRequest(page_size=50)),
            ):
                key = "get" if method.startswith("Get") else "list"
                async with _profiled(args.profile, service, profiles / f"{run_id}-{key}-{n}"):
                    result = await workload.reads(
                        service, method, request, args.callers, args.read_seconds, pids
                    )
                reads[key] = asdict(result)
                print(
                    f"  {method}: {result.calls_per_s:,.0f}/s, p50 {result.p50_ms:.1f} ms, "
                    f"p99 {result.p99_ms:.1f} ms ({result.errors} errors)",
                    flush=True,
                )
        if not args.skip_formats:
            # From the v4-only file, after its Add (it has no trainer format before: the
            # Add must not re-render any), so of N + 1 % conversations.
            for fmt_name, fmt in EXPORTED:
                async with _profiled(
                    args.profile, service, profiles / f"{run_id}-export-{fmt_name}-{n}"
                ):
                    exported = await workload.export(service, create.training_file_id, [fmt], pids)
                exports[fmt_name] = asdict(exported)
                print(f"  Export {fmt_name}: {_stream_line(exported)}", flush=True)
    create_formats: workload.StreamResult | None = None
    if not args.skip_formats:
        # Its own server process, so its memory is measured from the same start as the
        # v4-only Create's.
        formats_log = BENCH_DIR / "logs" / f"{run_id}-service-{n}-formats.log"
        async with (
            running_service(stack, settings, formats_log) as service,
            _profiled(args.profile, service, profiles / f"{run_id}-create-formats-{n}"),
        ):
            create_formats = await workload.create(
                service,
                f"{name}-formats",
                ids,
                pids,
                workload.TRAINER_FORMATS,
                VALIDATION_FRACTION,
                args.seed,
            )
        print(f"  Create (all formats, split): {_stream_line(create_formats)}", flush=True)
    by_selector: workload.StreamResult | None = None
    if args.selector:
        # A fresh server, as the v4-only Create's: the same N, chosen by the database.
        assert dataset.owner is not None
        selector_log = BENCH_DIR / "logs" / f"{run_id}-service-{n}-selector.log"
        async with (
            running_service(stack, settings, selector_log) as service,
            _profiled(args.profile, service, profiles / f"{run_id}-create-selector-{n}"),
        ):
            by_selector = await workload.create_by_selector(
                service,
                f"{name}-selector",
                str(dataset.owner),
                dataset.created_before(n),
                n,
                pids,
            )
        print(f"  Create (v4 only, by selector): {_stream_line(by_selector)}", flush=True)
    uncounted: workload.StreamResult | None = None
    if not args.skip_statistics:
        # The same v4-only Create on a fresh server that counts no tokens: what the token
        # statistics add is the default Create's server CPU against this one's.
        uncounted_log = BENCH_DIR / "logs" / f"{run_id}-service-{n}-uncounted.log"
        async with (
            running_service(stack, {**settings, "COUNT_TOKENS": "false"}, uncounted_log) as service,
            _profiled(args.profile, service, profiles / f"{run_id}-create-uncounted-{n}"),
        ):
            uncounted = await workload.create(service, f"{name}-uncounted", ids, pids)
        print(f"  Create (v4 only, COUNT_TOKENS=false): {_stream_line(uncounted)}", flush=True)
    concurrent: dict[str, Any] | None = None
    if not args.skip_concurrent:
        # On a fresh server: one Create of the first 1,000 (as a lone client's, cold like
        # the v4-only Create above), then 8 Creates of the same 1,000 started together.
        each = ids[:CONCURRENT_EACH]
        concurrent_log = BENCH_DIR / "logs" / f"{run_id}-service-{n}-concurrent.log"
        async with running_service(stack, settings, concurrent_log) as service:
            single = await workload.create(service, f"{name}-single", each, pids)
            async with _profiled(args.profile, service, profiles / f"{run_id}-concurrent-{n}"):
                together = await workload.concurrent_creates(
                    service, f"{name}-together", each, CONCURRENT_CREATES, pids
                )
        concurrent = {"single": asdict(single), "together": asdict(together)}
        print(
            f"  Create of {len(each):,}: {_stream_line(single)}; {CONCURRENT_CREATES} together: "
            f"{together.wall_s:.2f} s ({together.conversations_per_s:,.0f} conversations/s "
            f"against {len(each) / single.wall_s:,.0f}/s alone), "
            f"RSS +{max(together.peak_rss_above_idle_mb, together.hwm_above_idle_mb):.0f} MB, "
            f"CPU {together.cpu_s}",
            flush=True,
        )
    floors: list[FloorRun] = []
    lean_floor: dict[str, Any] | None = None
    formats_floor: dict[str, Any] | None = None
    if not args.skip_floor:
        v4 = v4_objects(create.json_size, create.jsonl_size)
        for concurrency in sorted({*args.floor_concurrency, fetch_concurrency}):
            floor = await measure_floor(stack, paths, v4, concurrency)
            floors.append(floor)
            print(
                f"  floor at {concurrency}: GET {floor.get_s:.2f} s + PUT {floor.put_s:.2f} s, "
                f"CPU {floor.cpu_s}",
                flush=True,
            )
        lean = await measure_floor(stack, paths, v4, fetch_concurrency, lean=True)
        print(
            f"  lean floor (presigned GETs) at {fetch_concurrency}: GET {lean.get_s:.2f} s + "
            f"PUT {lean.put_s:.2f} s, CPU {lean.cpu_s}",
            flush=True,
        )
        lean_floor = {**asdict(lean), "total_s": round(lean.total_s, 3)}
        if create_formats is not None:
            every = objects_of(create_formats.outputs)
            lean = await measure_floor(stack, paths, every, fetch_concurrency, lean=True)
            print(
                f"  lean floor of the all-formats Create ({len(every)} objects, "
                f"{lean.bytes_put / 1e6:,.0f} MB): GET {lean.get_s:.2f} s + "
                f"PUT {lean.put_s:.2f} s, CPU {lean.cpu_s}",
                flush=True,
            )
            formats_floor = {**asdict(lean), "total_s": round(lean.total_s, 3)}
    best = min(floors, key=lambda f: f.total_s) if floors else None
    same = next((f for f in floors if f.concurrency == fetch_concurrency), None)
    return {
        "n": n,
        "added": extra,
        "input_bytes": input_bytes,
        "create": asdict(create),
        "add": asdict(add),
        "remove": asdict(remove),
        "refresh": asdict(refresh),
        "versions_changed": {"removed": len(gone), "refreshed": len(stale)},
        "create_formats": asdict(create_formats) if create_formats is not None else None,
        "create_formats_settings": {
            "formats": [workload.format_name(f) for f in workload.TRAINER_FORMATS],
            "validation_fraction": VALIDATION_FRACTION,
            "seed": args.seed,
        },
        "exports": exports,
        "create_uncounted": asdict(uncounted) if uncounted is not None else None,
        "create_selector": asdict(by_selector) if by_selector is not None else None,
        "concurrent": concurrent,
        "export_source_conversations": n + extra,
        "floor": {
            "runs": [{**asdict(f), "total_s": round(f.total_s, 3)} for f in floors],
            "best": {**asdict(best), "total_s": round(best.total_s, 3)} if best else None,
            "at_fetch_concurrency": asdict(same) if same else None,
            "lean": lean_floor,
            "formats_lean": formats_floor,
        },
        "create_vs_floor": round(create.wall_s / best.total_s, 3) if best else None,
        "reads": reads,
        "service_log": str(log_path.relative_to(PROJECT_ROOT)),
    }


def _stream_line(result: workload.StreamResult) -> str:
    rss = max(result.peak_rss_above_idle_mb, result.hwm_above_idle_mb)
    return (
        f"{result.wall_s:.2f} s, first message {result.first_progress_s:.3f} s, "
        f"RSS +{rss:.0f} MB, CPU {result.cpu_s}"
    )


@contextlib.asynccontextmanager
async def _profiled(enabled: bool, service: Service, path: Path) -> AsyncIterator[None]:
    """py-spy samples the server while the block runs.

    The samples go to `path`.folded as collapsed stacks (open with speedscope.app, or
    make an SVG with flamegraph.pl).
    """
    if not enabled:
        yield
        return
    spy = _spawn_py_spy(service.pid, path)
    try:
        await asyncio.sleep(0.5)  # attached
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait(5)


def _spawn_py_spy(pid: int, path: Path) -> subprocess.Popen[bytes]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            f"{path}.folded",
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _fill_list(stack: Stack, file_id: str, name: str) -> None:
    """Copies of the new file's row and its outputs' rows (fake keys), so a List page
    holds 50 realistic files: each file comes with its outputs."""
    conn = await asyncpg.connect(stack.database_url)
    try:
        await conn.execute(
            """
            WITH fillers AS (
                INSERT INTO training_files (
                    name, description, json_file_path, jsonl_file_path, storage_bucket,
                    conversation_count, total_training_pairs, json_file_size, jsonl_file_size,
                    avg_quality_score, min_quality_score, max_quality_score,
                    human_reviewed_count, scaffolding_distribution, status, vertical,
                    consultant_profile, version, created_by, output_formats, split_spec,
                    drop_duplicates, duplicate_pair_count, untrainable_pair_count)
                SELECT $2 || '-list-' || g, description, 'bench-list/' || g || '.json',
                       'bench-list/' || g || '.jsonl', storage_bucket, conversation_count,
                       total_training_pairs, json_file_size, jsonl_file_size,
                       avg_quality_score, min_quality_score, max_quality_score,
                       human_reviewed_count, scaffolding_distribution, 'active', vertical,
                       consultant_profile, version, created_by, output_formats, split_spec,
                       drop_duplicates, duplicate_pair_count, untrainable_pair_count
                FROM training_files, generate_series(1, $3::int) AS g
                WHERE id = $1::uuid
                RETURNING id
            )
            INSERT INTO training_file_outputs (
                training_file_id, version, format, split, object_key, size_bytes,
                record_count, content_type, sha256)
            SELECT f.id, o.version, o.format, o.split,
                   'bench-list/' || f.id || '/' || o.format || '.' || o.split,
                   o.size_bytes, o.record_count, o.content_type, o.sha256
            FROM fillers f CROSS JOIN training_file_outputs o
            JOIN training_files t ON t.id = o.training_file_id AND t.version = o.version
            WHERE o.training_file_id = $1::uuid
            """,
            file_id,
            name,
            LIST_FILLERS,
        )
    finally:
        await conn.close()


async def _reenrich(stack: Stack, ids: Sequence[str]) -> None:
    """What the pipeline does when it re-enriches conversations in place."""
    conn = await asyncpg.connect(stack.database_url)
    try:
        for status in ("enrichment_in_progress", "completed"):
            await conn.execute(
                "UPDATE conversations SET enrichment_status = $2 "
                "WHERE conversation_id = ANY($1::uuid[])",
                [uuid.UUID(i) for i in ids],
                status,
            )
    finally:
        await conn.close()


async def _remove_bench_files(stack: Stack) -> None:
    """Delete the benchmark's training files: every output object, then their rows."""
    conn = await asyncpg.connect(stack.database_url)
    try:
        rows = await conn.fetch(
            """
            SELECT key FROM (
                SELECT unnest(ARRAY[f.json_file_path, f.jsonl_file_path]) AS key
                FROM training_files f WHERE f.name LIKE $1 AND f.status <> 'failed'
                UNION
                SELECT o.object_key FROM training_file_outputs o
                JOIN training_files f ON f.id = o.training_file_id
                WHERE f.name LIKE $1
            ) AS keys
            WHERE key IS NOT NULL AND key NOT LIKE 'bench-list/%'
            """,
            NAME_PREFIX + "%",
        )
        keys = [row["key"] for row in rows]
        if keys:
            async with s3_client(stack) as s3:
                for start in range(0, len(keys), 1000):
                    await s3.delete_objects(
                        Bucket=TRAINING_BUCKET,
                        Delete={"Objects": [{"Key": k} for k in keys[start : start + 1000]]},
                    )
        await conn.execute("DELETE FROM training_files WHERE name LIKE $1", NAME_PREFIX + "%")
    finally:
        await conn.close()


def _prune_logs(directory: Path) -> None:
    """Keep the newest service logs only: each read phase logs ~25,000 calls."""
    logs = sorted(directory.glob("*-service-*.log"), key=lambda p: p.stat().st_mtime)
    for old in logs[:-KEEP_LOGS]:
        old.unlink(missing_ok=True)


def _git(*args: str) -> str:
    result = subprocess.run(
        ["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, check=False
    )
    return result.stdout.strip()


def _machine() -> dict[str, Any]:
    memory = 0
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) * 1024
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "memory_gb": round(memory / 1024**3, 1),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
