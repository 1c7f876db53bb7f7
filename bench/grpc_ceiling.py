"""What grpcio's asyncio server can answer on this machine when the answer costs nothing.

`python -m bench.grpc_ceiling` (not part of `make bench`) serves `GetTrainingFile` from a
bare `grpc.aio` server that returns one prepared `TrainingFile` (a v4-only file's size:
three outputs, quality summary, distributions) with no database, with and without the
service's interceptors (error mapping, the log line, metrics, the span, the token
check), and calls it exactly as `make bench` reads do: one channel, 32 callers, 10 s.
It is the ceiling of the Get figures on this machine: the service adds its work to
this. `--processes 2` runs two such servers on one port (`SO_REUSEPORT`, as gRPC's
guidance for Python suggests) with callers spread over 4 connections a process: the
kernel spreads connections, not calls, so one channel always reaches one process.

The results go to `bench/results/ceiling-<run>.json` unless `--no-save`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import socket
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

from trainingfiles.v1 import resources_pb2, service_pb2, service_pb2_grpc
from trainingfiles_dev.token import mint_token

from .procstat import CpuMeter

RESULTS = Path(__file__).parent / "results"


def _prepared_file() -> resources_pb2.TrainingFile:
    """A file as a v4-only Create of 1,000 conversations leaves it (sizes, not content)."""
    message = resources_pb2.TrainingFile(
        id="8f45c85d-dda3-4f28-b4e6-dcf44dc597ce",
        name="bench-1000",
        status=resources_pb2.TRAINING_FILE_STATUS_ACTIVE,
        storage_bucket="training-files",
        json_file_path="8f45c85d-dda3-4f28-b4e6-dcf44dc597ce/v1/training.json",
        jsonl_file_path="8f45c85d-dda3-4f28-b4e6-dcf44dc597ce/v1/training.jsonl",
        conversation_count=1000,
        total_training_pairs=7005,
        json_file_size=41_220_145,
        jsonl_file_size=41_219_941,
        created_by="1b4e28ba-2fa1-11d2-883f-0016d3cca427",
        version=1,
    )
    message.created_at.GetCurrentTime()
    message.updated_at.GetCurrentTime()
    for fmt, name in (
        (resources_pb2.FILE_FORMAT_JSON, "training.json"),
        (resources_pb2.FILE_FORMAT_JSONL, "training.jsonl"),
        (resources_pb2.FILE_FORMAT_DATASET_CARD, "README.md"),
    ):
        message.outputs.add(
            format=fmt,
            object_key=f"{message.id}/v1/{name}",
            size_bytes=41_220_145,
            record_count=7005,
            content_type="application/json",
            sha256="ab" * 32,
            file_name=f"bench-1000.{name}",
        )
    message.quality_summary.avg_quality_score = 3.87
    message.quality_summary.human_reviewed_count = 412
    for field in ("personas", "emotional_arcs", "training_topics"):
        counts = getattr(message.scaffolding_distribution, field)
        for i in range(6):
            counts[f"{field}-{i}"] = 150 + i
    return message


def _handlers() -> grpc.GenericRpcHandler:
    """GetTrainingFile alone, answering the prepared file (no servicer class: the
    generated one would make every other rpc abstract)."""
    prepared = _prepared_file()

    async def get_training_file(
        request: service_pb2.GetTrainingFileRequest, context: Any
    ) -> resources_pb2.TrainingFile:
        return prepared

    return grpc.method_handlers_generic_handler(
        "trainingfiles.v1.TrainingFileService",
        {
            "GetTrainingFile": grpc.unary_unary_rpc_method_handler(
                get_training_file,
                request_deserializer=service_pb2.GetTrainingFileRequest.FromString,
                response_serializer=resources_pb2.TrainingFile.SerializeToString,
            )
        },
    )


# The service's own interceptors (`--interceptors`) check this secret's tokens.
_SECRET = "ceiling-" + "s" * 40


def _interceptors() -> list[Any]:
    from pydantic import SecretStr

    from trainingfiles_server.auth import Authenticator
    from trainingfiles_server.config import Settings
    from trainingfiles_server.interceptors import AuthInterceptor, ServiceInterceptor

    settings = Settings(jwt_secret=SecretStr(_SECRET))
    return [ServiceInterceptor(), AuthInterceptor(Authenticator(settings))]


def _serve(port: int, ready: Any, interceptors: bool) -> None:
    async def main() -> None:
        server = grpc.aio.server(
            interceptors=_interceptors() if interceptors else None,
            options=[("grpc.so_reuseport", 1)],
        )
        server.add_generic_rpc_handlers((_handlers(),))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        ready.set()
        await server.wait_for_termination()

    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    asyncio.run(main())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def _load(port: int, callers: int, seconds: float, channels: int) -> dict[str, Any]:
    """`callers` loops over `channels` connections (a local subchannel pool each)."""
    opened = [
        grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
        )
        for _ in range(channels)
    ]
    stubs = [service_pb2_grpc.TrainingFileServiceStub(ch) for ch in opened]
    request = service_pb2.GetTrainingFileRequest(
        training_file_id="8f45c85d-dda3-4f28-b4e6-dcf44dc597ce"
    )
    # As the benchmark's callers do, whether or not the server checks it.
    token = mint_token(_SECRET, user_id=uuid.uuid4(), role="service_role")
    metadata = (("authorization", f"Bearer {token}"),)
    for stub in stubs:
        for _ in range(20):
            await stub.GetTrainingFile(request, metadata=metadata, timeout=10)
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def caller(stub: Any) -> None:
        while (started := time.perf_counter()) < stop_at:
            await stub.GetTrainingFile(request, metadata=metadata, timeout=10)
            latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(caller(stubs[i % channels]) for i in range(callers)))
    elapsed = time.perf_counter() - began
    for ch in opened:
        await ch.close()
    latencies.sort()
    return {
        "calls": len(latencies),
        "seconds": round(elapsed, 2),
        "calls_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
    }


def measure(processes: int, callers: int, seconds: float, interceptors: bool) -> dict[str, Any]:
    port = _free_port()
    context = multiprocessing.get_context("spawn")
    servers = []
    try:
        for _ in range(processes):
            ready = context.Event()
            server = context.Process(target=_serve, args=(port, ready, interceptors), daemon=True)
            server.start()
            if not ready.wait(30):
                raise RuntimeError("a ceiling server did not start")
            servers.append(server)
        pids: dict[str, int | None] = {f"server{i}": s.pid for i, s in enumerate(servers)}
        meter = CpuMeter({**pids, "bench": os.getpid()})
        meter.start()
        # SO_REUSEPORT spreads connections, not calls: one channel reaches one process.
        channels = 1 if processes == 1 else 4 * processes
        result = asyncio.run(_load(port, callers, seconds, channels))
        result["channels"] = channels
        result["cpu_s"] = meter.stop()
    finally:
        for server in servers:
            server.terminate()
            server.join(10)
            if server.is_alive():
                server.kill()
    result["processes"] = processes
    result["interceptors"] = interceptors
    result["callers"] = callers
    result["cpu_ms_per_call"] = {
        name: round(1000 * cpu / result["calls"], 3) for name, cpu in result["cpu_s"].items()
    }
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.grpc_ceiling", description=__doc__)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--interceptors",
        choices=("without", "with", "both"),
        default="both",
        help="serve through the service's own interceptors (errors, log line, metrics, "
        "span, token check), without them, or each in turn",
    )
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    run = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results: dict[str, Any] = {
        "run": run,
        "load_average_before": os.getloadavg()[0],
        "cpus": os.cpu_count(),
        "results": [
            measure(p, args.callers, args.seconds, wrapped)
            for p in args.processes
            for wrapped in {"without": (False,), "with": (True,), "both": (False, True)}[
                args.interceptors
            ]
        ],
    }
    for r in results["results"]:
        print(
            f"{r['processes']} server process(es)"
            f"{' with the interceptors' if r['interceptors'] else ''}, {r['callers']} callers: "
            f"{r['calls_per_s']:,.0f}/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
            f"CPU per call {r['cpu_ms_per_call']}"
        )
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"ceiling-{run}.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
