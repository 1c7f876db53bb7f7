"""What the benchmark asks of the service over gRPC: Create, Add, Export, reads under load."""

from __future__ import annotations

import asyncio
import datetime
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from trainingfiles.v1 import resources_pb2, service_pb2, service_pb2_grpc

from .procstat import MIB, CpuMeter, RssSampler, peak_rss_bytes, rss_bytes
from .server import Service

# Largest message the benchmark accepts (a List page, a finished Create).
_CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 * MIB)]

# Every trainer format (FileFormat 3..8), as the all-formats Create asks for them.
TRAINER_FORMATS: tuple[resources_pb2.FileFormat.ValueType, ...] = (
    resources_pb2.FILE_FORMAT_OPENAI_CHAT,
    resources_pb2.FILE_FORMAT_CHAT_MESSAGES,
    resources_pb2.FILE_FORMAT_PROMPT_COMPLETION,
    resources_pb2.FILE_FORMAT_SHAREGPT,
    resources_pb2.FILE_FORMAT_ALPACA,
    resources_pb2.FILE_FORMAT_PARQUET,
)


def channel(service: Service) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(service.target, options=_CHANNEL_OPTIONS)


@dataclass
class StreamResult:
    """One Create, Add or Export: its timings and what the server process used meanwhile."""

    conversations: int
    wall_s: float
    first_progress_s: float
    messages: int
    stages: dict[str, float]  # stage name -> seconds from the request to its first message
    peak_rss_above_idle_mb: float
    hwm_above_idle_mb: float
    idle_rss_mb: float
    cpu_s: dict[str, float]
    training_file_id: str
    json_size: int
    jsonl_size: int
    rss_samples: int
    warnings: int = 0
    pairs: int = 0  # the file's training pairs afterwards
    members: int = 0  # the file's conversations afterwards
    duplicate_pairs: int = 0
    # The file's outputs afterwards: format, split, size_bytes, records (file order).
    outputs: list[dict[str, Any]] = field(default_factory=list)


async def _stream(
    stub: service_pb2_grpc.TrainingFileServiceStub,
    call: Callable[[], Any],
    count: int,
    service: Service,
    other_pids: dict[str, int | None],
) -> StreamResult:
    idle = rss_bytes(service.pid)
    hwm_before = peak_rss_bytes(service.pid)
    meter = CpuMeter({"service": service.pid, **other_pids}, trees=frozenset({"postgres"}))
    stages: dict[str, float] = {}
    messages = 0
    warnings = 0
    last: service_pb2.TrainingFileProgress | None = None
    with RssSampler(service.pid) as sampler:
        meter.start()
        started = time.perf_counter()
        stream: AsyncIterator[service_pb2.TrainingFileProgress] = call()
        async for message in stream:
            now = time.perf_counter() - started
            messages += 1
            warnings += len(message.warnings)
            name = service_pb2.TrainingFileProgress.Stage.Name(message.stage)
            stages.setdefault(name.removeprefix("STAGE_"), round(now, 3))
            last = message
        wall = time.perf_counter() - started
        cpu = meter.stop()
    hwm = peak_rss_bytes(service.pid)
    if last is None or not last.HasField("training_file"):
        raise RuntimeError("the stream ended without the training file")
    first = min(stages.values())
    peak = max(sampler.result().peak_rss, idle)
    return StreamResult(
        conversations=count,
        wall_s=round(wall, 3),
        first_progress_s=first,
        messages=messages,
        stages=stages,
        peak_rss_above_idle_mb=round((peak - idle) / MIB, 1),
        # The kernel's high-water mark also catches spikes between samples, but only when
        # this call set a new record for the process.
        hwm_above_idle_mb=round((max(hwm, hwm_before) - idle) / MIB, 1),
        idle_rss_mb=round(idle / MIB, 1),
        cpu_s=cpu,
        training_file_id=last.training_file.id,
        json_size=last.training_file.json_file_size,
        jsonl_size=last.training_file.jsonl_file_size,
        rss_samples=sampler.result().samples,
        warnings=warnings,
        pairs=last.training_file.total_training_pairs,
        members=last.training_file.conversation_count,
        duplicate_pairs=last.training_file.duplicate_pair_count,
        outputs=[
            {
                "format": format_name(o.format),
                "split": resources_pb2.Split.Name(o.split).removeprefix("SPLIT_").lower(),
                "size_bytes": o.size_bytes,
                "records": o.record_count,
            }
            for o in last.training_file.outputs
        ],
    )


def format_name(value: resources_pb2.FileFormat.ValueType) -> str:
    """The service's name of a `FileFormat` value: "v4_json", "openai_chat", …"""
    name = resources_pb2.FileFormat.Name(value).removeprefix("FILE_FORMAT_").lower()
    return {"json": "v4_json", "jsonl": "v4_jsonl"}.get(name, name)


async def create(
    service: Service,
    name: str,
    ids: Sequence[str],
    other_pids: dict[str, int | None],
    formats: Sequence[resources_pb2.FileFormat.ValueType] = (),
    validation_fraction: float | None = None,
    seed: int = 0,
) -> StreamResult:
    """A Create of `ids`: v4 only, or with trainer `formats` and a validation split."""
    split = (
        resources_pb2.SplitOptions(validation_fraction=validation_fraction, seed=seed)
        if validation_fraction is not None
        else None
    )
    async with channel(service) as ch:
        stub = service_pb2_grpc.TrainingFileServiceStub(ch)
        request = service_pb2.CreateTrainingFileRequest(
            name=name,
            description="benchmark",
            conversation_ids=list(ids),
            formats=list(formats),
            split=split,
        )
        return await _stream(
            stub,
            lambda: stub.CreateTrainingFile(request, metadata=service.metadata),
            len(ids),
            service,
            other_pids,
        )


async def create_by_selector(
    service: Service,
    name: str,
    owner: str,
    created_before: datetime.datetime,
    count: int,
    other_pids: dict[str, int | None],
) -> StreamResult:
    """A v4-only Create of `owner`'s conversations created before `created_before` (the
    first `count` of the seed), chosen by a selector: no id in the request."""
    before = timestamp_pb2.Timestamp()
    before.FromDatetime(created_before)
    async with channel(service) as ch:
        stub = service_pb2_grpc.TrainingFileServiceStub(ch)
        request = service_pb2.CreateTrainingFileRequest(
            name=name,
            description="benchmark",
            on_behalf_of=owner,
            selector=service_pb2.ConversationSelector(created_before=before),
        )
        result = await _stream(
            stub,
            lambda: stub.CreateTrainingFile(request, metadata=service.metadata),
            count,
            service,
            other_pids,
        )
    if result.members != count:
        raise RuntimeError(f"the selector chose {result.members} conversations, not {count}")
    return result


async def _build(
    service: Service, rpc: str, request: Any, counted: int, other_pids: dict[str, int | None]
) -> StreamResult:
    """One streaming build rpc of the service (`rpc` names the stub's method)."""
    async with channel(service) as ch:
        stub = service_pb2_grpc.TrainingFileServiceStub(ch)
        method = getattr(stub, rpc)
        return await _stream(
            stub,
            lambda: method(request, metadata=service.metadata),
            counted,
            service,
            other_pids,
        )


async def add(
    service: Service, file_id: str, ids: Sequence[str], other_pids: dict[str, int | None]
) -> StreamResult:
    request = service_pb2.AddConversationsRequest(
        training_file_id=file_id, conversation_ids=list(ids)
    )
    return await _build(service, "AddConversations", request, len(ids), other_pids)


async def remove(
    service: Service, file_id: str, ids: Sequence[str], other_pids: dict[str, int | None]
) -> StreamResult:
    """RemoveConversations: `ids` out of the file, from its stored JSONL."""
    request = service_pb2.RemoveConversationsRequest(
        training_file_id=file_id, conversation_ids=list(ids)
    )
    return await _build(service, "RemoveConversations", request, 0, other_pids)


async def refresh(
    service: Service, file_id: str, other_pids: dict[str, int | None]
) -> StreamResult:
    """RefreshTrainingFile: the file's stale conversations fetched again."""
    request = service_pb2.RefreshTrainingFileRequest(training_file_id=file_id)
    return await _build(service, "RefreshTrainingFile", request, 0, other_pids)


async def export(
    service: Service,
    file_id: str,
    formats: Sequence[resources_pb2.FileFormat.ValueType],
    other_pids: dict[str, int | None],
) -> StreamResult:
    """ExportTrainingFile: `formats` rendered from the file's stored v4 JSONL."""
    request = service_pb2.ExportTrainingFileRequest(training_file_id=file_id, formats=list(formats))
    return await _build(service, "ExportTrainingFile", request, 0, other_pids)


@dataclass
class ReadResult:
    method: str
    callers: int
    seconds: float
    calls: int
    errors: int
    calls_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    cpu_s: dict[str, float] = field(default_factory=dict)


def _percentile(sorted_values: Sequence[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


async def reads(
    service: Service,
    method: str,
    request: Any,
    callers: int,
    seconds: float,
    other_pids: dict[str, int | None],
) -> ReadResult:
    """`callers` concurrent loops calling `method` for `seconds` on one shared channel.

    One channel, as a client service would use; calls go out as HTTP/2 streams on it.
    """
    async with channel(service) as ch:
        stub = service_pb2_grpc.TrainingFileServiceStub(ch)
        rpc = getattr(stub, method)
        for _ in range(20):  # warm up: connection, server-side caches, statement cache
            await rpc(request, metadata=service.metadata, timeout=10)
        latencies: list[float] = []
        errors = 0
        stop_at = 0.0

        async def caller() -> None:
            nonlocal errors
            while True:
                started = time.perf_counter()
                if started >= stop_at:
                    return
                try:
                    await rpc(request, metadata=service.metadata, timeout=10)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - started)

        meter = CpuMeter(
            {"service": service.pid, "bench": os.getpid(), **other_pids},
            trees=frozenset({"postgres"}),
        )
        meter.start()
        began = time.perf_counter()
        stop_at = began + seconds
        await asyncio.gather(*(caller() for _ in range(callers)))
        elapsed = time.perf_counter() - began
        cpu = meter.stop()
    latencies.sort()
    return ReadResult(
        method=method,
        callers=callers,
        seconds=round(elapsed, 2),
        calls=len(latencies),
        errors=errors,
        calls_per_s=round(len(latencies) / elapsed, 1),
        p50_ms=round(_percentile(latencies, 0.50) * 1000, 2),
        p99_ms=round(_percentile(latencies, 0.99) * 1000, 2),
        max_ms=round(latencies[-1] * 1000, 2) if latencies else float("nan"),
        cpu_s=cpu,
    )


@dataclass
class ConcurrentResult:
    """Creates started together: their wall time as a whole, and the server's use of it."""

    creates: int
    conversations_each: int
    wall_s: float  # from the requests to the last message of the last Create
    conversations_per_s: float
    peak_rss_above_idle_mb: float
    hwm_above_idle_mb: float
    idle_rss_mb: float
    cpu_s: dict[str, float]
    each_wall_s: list[float]


async def concurrent_creates(
    service: Service,
    name: str,
    ids: Sequence[str],
    copies: int,
    other_pids: dict[str, int | None],
) -> ConcurrentResult:
    """`copies` v4-only Creates of the same `ids` at once, each on its own channel (as
    separate clients would call), measured together."""
    idle = rss_bytes(service.pid)
    hwm_before = peak_rss_bytes(service.pid)
    meter = CpuMeter({"service": service.pid, **other_pids}, trees=frozenset({"postgres"}))
    with RssSampler(service.pid) as sampler:
        meter.start()
        started = time.perf_counter()
        results = await asyncio.gather(
            *(create(service, f"{name}-{i}", ids, {}) for i in range(copies))
        )
        wall = time.perf_counter() - started
        cpu = meter.stop()
    hwm = peak_rss_bytes(service.pid)
    peak = max(sampler.result().peak_rss, idle)
    return ConcurrentResult(
        creates=copies,
        conversations_each=len(ids),
        wall_s=round(wall, 3),
        conversations_per_s=round(copies * len(ids) / wall, 1),
        peak_rss_above_idle_mb=round((peak - idle) / MIB, 1),
        hwm_above_idle_mb=round((max(hwm, hwm_before) - idle) / MIB, 1),
        idle_rss_mb=round(idle / MIB, 1),
        cpu_s=cpu,
        each_wall_s=[r.wall_s for r in results],
    )
