"""The storage floor: how fast the bytes of a Create can move at all.

With plain aiobotocore, at a given concurrency: GET every enriched object (reading each
body to the end), then PUT two objects of the sizes the service wrote — JSONL and JSON,
as multipart uploads of 8 MiB parts with up to `concurrency` parts in flight. No parsing,
no validation, no database. The bytes PUT are real enriched documents (the first 8 MiB of
them, repeated), under the same key suffixes and content types as the service's, so the
object store does the same work per byte.

A second, "lean" variant reads the documents the way the service does — presigned GET
URLs on a plain aiohttp session, which costs a third of `get_object`'s CPU — and PUTs
alike. It is not the floor the targets are judged against (that is plain aiobotocore,
as the issue defines it), but it shows how close the service comes to its own technique.

`measure_floor` PUTs any list of objects: the two v4 objects of a v4-only Create, or every
object an all-formats Create stored (`objects_of`), for that Create's own floor.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from types_aiobotocore_s3 import S3Client
from yarl import URL

from .procstat import CpuMeter
from .stack import CONVERSATIONS_BUCKET, TRAINING_BUCKET, Stack, s3_client

PART = 8 * 1024 * 1024
_IDENTITY = {"Accept-Encoding": "identity"}


# (key suffix, size, content type) of one object to PUT.
FloorObject = tuple[str, int, str]


def v4_objects(json_size: int, jsonl_size: int) -> list[FloorObject]:
    """The two objects of a v4-only Create."""
    return [
        (".jsonl", jsonl_size, "application/x-ndjson"),
        (".json", json_size, "application/json"),
    ]


_CONTENT_TYPES = {
    "v4_json": "application/json",
    "parquet": "application/vnd.apache.parquet",
    "dataset_card": "text/markdown; charset=utf-8",
}


def objects_of(outputs: Sequence[dict[str, Any]]) -> list[FloorObject]:
    """Every object a build stored (a `StreamResult`'s outputs), one PUT each."""
    return [
        (
            f".{o['format']}.{o['split']}",
            int(o["size_bytes"]),
            _CONTENT_TYPES.get(o["format"], "application/x-ndjson"),
        )
        for o in outputs
    ]


@dataclass(frozen=True)
class FloorRun:
    concurrency: int
    get_s: float
    put_s: float
    bytes_got: int
    bytes_put: int
    cpu_s: dict[str, float]  # the benchmark process (the client) and the object store
    lean: bool = False  # GETs through presigned URLs (see the module's docstring)

    @property
    def total_s(self) -> float:
        return self.get_s + self.put_s


async def _get_all(
    client: S3Client, keys: Sequence[str], concurrency: int, http: aiohttp.ClientSession | None
) -> tuple[int, bytes]:
    """Fetch every object; returns the bytes read and an 8 MiB sample of their content.

    With `http`, each object is read with a presigned URL on that session instead.
    """
    position = iter(range(len(keys)))
    total = 0
    sample = bytearray()

    async def get(key: str) -> bytes:
        if http is None:
            response = await client.get_object(Bucket=CONVERSATIONS_BUCKET, Key=key)
            async with response["Body"] as body:
                data: bytes = await body.read()
                return data
        url = await client.generate_presigned_url(
            "get_object", Params={"Bucket": CONVERSATIONS_BUCKET, "Key": key}, ExpiresIn=300
        )
        async with http.get(URL(url, encoded=True), headers=_IDENTITY) as answer:
            answer.raise_for_status()
            return await answer.read()

    async def worker() -> None:
        nonlocal total
        for index in position:
            data = await get(keys[index])
            total += len(data)
            if len(sample) < PART:
                sample.extend(data + b"\n")

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    while len(sample) < PART:  # fewer documents than one part: repeat them
        sample.extend(sample or b"{}\n")
    return total, bytes(sample[:PART])


async def _put(
    client: S3Client,
    key: str,
    size: int,
    content_type: str,
    sample: bytes,
    slots: asyncio.Semaphore,
) -> None:
    if size <= PART:
        async with slots:
            await client.put_object(
                Bucket=TRAINING_BUCKET, Key=key, Body=sample[:size], ContentType=content_type
            )
        return
    created = await client.create_multipart_upload(
        Bucket=TRAINING_BUCKET, Key=key, ContentType=content_type
    )
    upload_id = created["UploadId"]

    async def part(number: int, body: bytes) -> dict[str, object]:
        async with slots:
            reply = await client.upload_part(
                Bucket=TRAINING_BUCKET, Key=key, UploadId=upload_id, PartNumber=number, Body=body
            )
        return {"PartNumber": number, "ETag": reply["ETag"]}

    full, rest = divmod(size, PART)
    bodies = [sample] * full + ([sample[:rest]] if rest else [])
    try:
        parts = await asyncio.gather(*(part(i + 1, b) for i, b in enumerate(bodies)))
        await client.complete_multipart_upload(
            Bucket=TRAINING_BUCKET,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
        )
    except BaseException:
        await client.abort_multipart_upload(Bucket=TRAINING_BUCKET, Key=key, UploadId=upload_id)
        raise


async def read_all(stack: Stack, keys: Sequence[str], concurrency: int) -> tuple[int, float]:
    """Read every object once (bytes, seconds): the service and the floor then start alike."""
    async with s3_client(stack, concurrency) as client:
        started = time.perf_counter()
        got, _ = await _get_all(client, keys, concurrency, None)
        return got, time.perf_counter() - started


async def measure_floor(
    stack: Stack,
    keys: Sequence[str],
    objects: Sequence[FloorObject],
    concurrency: int,
    *,
    lean: bool = False,
) -> FloorRun:
    """One floor measurement at one concurrency; the objects PUT are deleted afterwards."""
    meter = CpuMeter({"client": os.getpid(), "seaweedfs": stack.seaweed_pid})
    connector = aiohttp.TCPConnector(limit=max(10, concurrency))
    async with (
        s3_client(stack, concurrency) as client,
        aiohttp.ClientSession(connector=connector, auto_decompress=False) as http,
    ):
        meter.start()
        started = time.perf_counter()
        got, sample = await _get_all(client, keys, concurrency, http if lean else None)
        fetched = time.perf_counter()
        base = f"bench-floor/{uuid.uuid4()}"
        slots = asyncio.Semaphore(concurrency)
        try:
            await asyncio.gather(
                *(
                    _put(client, f"{base}{suffix}", size, content_type, sample, slots)
                    for suffix, size, content_type in objects
                )
            )
            stored = time.perf_counter()
            cpu = meter.stop()
        finally:
            await client.delete_objects(
                Bucket=TRAINING_BUCKET,
                Delete={"Objects": [{"Key": f"{base}{suffix}"} for suffix, _, _ in objects]},
            )
    return FloorRun(
        concurrency=concurrency,
        get_s=round(fetched - started, 3),
        put_s=round(stored - fetched, 3),
        bytes_got=got,
        bytes_put=sum(size for _, size, _ in objects),
        cpu_s=cpu,
        lean=lean,
    )
