"""Files larger than one upload part: multipart Creates, Add's server-side copy, the
whole-file size limit, downloads during an Add, and the FETCHING progress cadence.

The conversations here are the generator's, with every training pair padded by an
unknown field (`x_padding`, kept in the output like any unknown field) so that a file of
40 conversations is ~16.6 MiB per object: more than three of S3's 5 MiB minimum parts,
with a short last part. Sizes are chosen against that minimum, which is also the
service's default part size; nothing here reads the service's part-size constant or
assumes exactly where a part is cut. Everything goes through the real server, PostgreSQL
and SeaweedFS.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import random
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import orjson
import pytest

from tests.conftest import Stack, authorized_channel, stack_settings
from tests.e2e.forwarder import HoldingForwarder
from tests.e2e.helpers import (
    ACTIVE,
    FAILED,
    FETCHING,
    JSON,
    JSONL,
    PROCESSING,
    TIMEOUT,
    VALIDATING,
    Calls,
    Progress,
    Stub,
    create,
    create_ok,
    download,
    download_url,
    error_reason,
    get,
    http_get,
    intent_count,
    jsonl_records,
    object_keys,
    open_uploads,
    output_keys,
    stream_error,
    unique_name,
)
from trainingfiles.v1 import resources_pb2, service_pb2, service_pb2_grpc
from trainingfiles_dev.generator import GeneratedConversation, generate, load
from trainingfiles_server.app import RunningServer, running_server
from trainingfiles_server.storage import Storage

MIB = 1024 * 1024
# S3's minimum size of every part but the last; the service's parts are at least this.
MIN_PART = 5 * MIB

SEED = 51_515
OWNER = uuid.UUID("00000000-0000-4000-8000-0000000001a7")
COUNT = 40
# Padding per conversation, spread over its pairs: with the pairs' own ~45 KiB, each
# conversation adds ~425 KiB to each object.
PADDING_PER_CONVERSATION = 360 * 1024
PADDING_FIELD = "x_padding"
# Characters that JSON must escape or that are several bytes long, in every padding.
_AWKWARD_TAIL = ' "quoted" back\\slash new\nline tab\t é 😅 \u2028 end'

# The Add test: a base of BASE conversations is stored (> 2 parts, so both objects have
# more than a part left to copy after the JSON's first part), then the rest is added.
BASE = 30

# Progress: at least every 5 % of the conversations or every second. Receive times can
# be squeezed by delivery jitter, hence a little slack on the second.
PROGRESS_FRACTION = 0.05
PROGRESS_SECONDS = 1.0
RECEIVE_SLACK = 0.1

PAIRS_KEY = b',"training_pairs":['
_VOLATILE = re.compile(
    rb'^\{"dataset_metadata":\{"dataset_name":"[^"]*","version":"4\.0\.0",'
    rb'"created_date":"[^"]*",'
)


# ----------------------------------------------------------------- data


def _padded(conversation: GeneratedConversation) -> GeneratedConversation:
    """The conversation with `PADDING_FIELD` in every pair: distinct text per pair."""
    assert conversation.document is not None
    document = orjson.loads(conversation.document)
    pairs = document["training_pairs"]
    rng = random.Random(f"{SEED}:padding:{conversation.index}")
    size = PADDING_PER_CONVERSATION // len(pairs)
    for pair in pairs:
        head = f"{conversation.conversation_id}/turn{pair['turn_number']}:"
        pair[PADDING_FIELD] = head + rng.randbytes(size // 2).hex() + _AWKWARD_TAIL
    return dataclasses.replace(conversation, document=orjson.dumps(document))


def expected_pairs(conversation: GeneratedConversation) -> list[dict[str, Any]]:
    """The conversation's pairs as the aggregation rules turn them into training pairs:
    in turn order, every field kept, `id` `<uuid>_turn<N>`, `conversation_id` the UUID,
    the scaffolding keys set in `conversation_metadata` and `input_parameters` added."""
    assert conversation.document is not None
    document = orjson.loads(conversation.document)
    parameters = document["input_parameters"]
    keys = {
        key: parameters[key] for key in ("persona_key", "emotional_arc_key", "training_topic_key")
    }
    conversation_id = str(conversation.conversation_id)
    return [
        {
            **pair,
            "id": f"{conversation_id}_turn{pair['turn_number']}",
            "conversation_id": conversation_id,
            "conversation_metadata": {**pair["conversation_metadata"], **keys},
            "input_parameters": parameters,
        }
        for pair in sorted(document["training_pairs"], key=lambda p: p["turn_number"])
    ]


@dataclass(frozen=True)
class BigData:
    conversations: list[GeneratedConversation]

    @property
    def ids(self) -> list[str]:
        return [str(c.conversation_id) for c in self.conversations]

    def expected(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        by_id = {str(c.conversation_id): c for c in self.conversations}
        return [pair for i in ids for pair in expected_pairs(by_id[i])]

    def jsonl_size(self, ids: Sequence[str]) -> int:
        """The JSONL's size: one compact line per pair (key order does not change it)."""
        return sum(len(orjson.dumps(pair)) + 1 for pair in self.expected(ids))


@pytest.fixture(scope="session")
async def big(server: RunningServer, storage: Storage) -> BigData:
    """COUNT padded conversations of one owner, loaded once per session."""
    conversations = [_padded(c) for c in generate(SEED, COUNT, owners=[OWNER])]
    data = BigData(conversations)
    size = data.jsonl_size(data.ids)
    # More than three minimum parts and a short last one; base and rest as planned.
    assert 3.1 * MIN_PART < size < 3.6 * MIN_PART, size / MIB
    assert data.jsonl_size(data.ids[:BASE]) > 2.2 * MIN_PART
    assert max(len(c.document or b"") for c in conversations) < MIB
    await load(server.database.pool, storage.client, storage.conversations_bucket, conversations)
    return data


# ----------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Timed:
    """A stream's messages with the monotonic time each one was received."""

    messages: list[tuple[float, Progress]]
    error: grpc.aio.AioRpcError | None

    @property
    def training_file(self) -> resources_pb2.TrainingFile:
        assert self.error is None, f"the stream failed: {self.error}"
        last = self.messages[-1][1]
        assert last.HasField("training_file"), last
        return last.training_file


async def collect_timed(call: Any) -> Timed:
    messages: list[tuple[float, Progress]] = []
    error: grpc.aio.AioRpcError | None = None
    try:
        while (message := await call.read()) is not grpc.aio.EOF:
            messages.append((time.monotonic(), message))
    except grpc.aio.AioRpcError as failure:
        error = failure
    return Timed(messages, error)


async def object_parts(server: RunningServer, key: str) -> list[int]:
    """The sizes of a stored object's multipart parts, in order; [] for a single PUT.

    The ETag's `-N` suffix must agree with the number of parts listed.
    """
    client = server.storage.client
    bucket = server.storage.training_bucket
    head = await client.head_object(Bucket=bucket, Key=key)
    etag = head["ETag"].strip('"')
    if "-" not in etag:
        return []
    attributes = await client.get_object_attributes(
        Bucket=bucket, Key=key, ObjectAttributes=["ObjectParts"], MaxParts=1000
    )
    parts = attributes["ObjectParts"]
    sizes = [int(part["Size"]) for part in sorted(parts["Parts"], key=lambda p: p["PartNumber"])]
    assert int(etag.rsplit("-", 1)[1]) == parts["TotalPartsCount"] == len(sizes), (etag, parts)
    assert sum(sizes) == int(head["ContentLength"])
    return sizes


def part_boundaries(sizes: Sequence[int]) -> set[int]:
    """The offsets at which a part ends."""
    ends, position = set(), 0
    for size in sizes:
        position += size
        ends.add(position)
    return ends


def normalised(json_document: bytes) -> bytes:
    """The JSON document with its name and creation date blanked out."""
    blanked, count = _VOLATILE.subn(
        b'{"dataset_metadata":{"dataset_name":"","version":"4.0.0","created_date":"",',
        json_document,
    )
    assert count == 1, json_document[:200]
    return blanked


def assert_json_is_the_jsonl(json_document: bytes, jsonl: bytes) -> dict[str, Any]:
    """The JSON's training pairs are the JSONL's lines, byte for byte; returns the JSON."""
    pairs = jsonl[:-1].replace(b"\n", b",") + b"]}"
    assert json_document.endswith(PAIRS_KEY + pairs)
    decoded: dict[str, Any] = orjson.loads(json_document)
    return decoded


# ----------------------------------------------------------------- one Create of every conversation


@dataclass(frozen=True)
class BigCreate:
    stream: Timed
    json: bytes
    jsonl: bytes
    json_parts: list[int]
    jsonl_parts: list[int]

    @property
    def file(self) -> resources_pb2.TrainingFile:
        return self.stream.training_file


@pytest.fixture(scope="session")
async def big_create(stub: Stub, server: RunningServer, big: BigData) -> BigCreate:
    request = service_pb2.CreateTrainingFileRequest(
        name=unique_name("large-create"), conversation_ids=big.ids
    )
    stream = await collect_timed(stub.CreateTrainingFile(request, timeout=TIMEOUT))
    file = stream.training_file
    return BigCreate(
        stream,
        await download(stub, file.id, JSON),
        await download(stub, file.id, JSONL),
        await object_parts(server, file.json_file_path),
        await object_parts(server, file.jsonl_file_path),
    )


def test_a_large_create_stores_both_objects_in_several_parts(big_create: BigCreate) -> None:
    file = big_create.file
    assert (file.json_file_size, file.jsonl_file_size) == (
        len(big_create.json),
        len(big_create.jsonl),
    )
    for parts in (big_create.json_parts, big_create.jsonl_parts):
        assert len(parts) >= 2, "stored with a single PUT, not a multipart upload"
        assert all(size >= MIN_PART for size in parts[:-1]), parts
        assert parts[-1] < parts[-2], f"no short last part: {parts}"


def test_a_large_create_holds_every_pair_exactly(big_create: BigCreate, big: BigData) -> None:
    expected = big.expected(big.ids)
    lines = jsonl_records(big_create.jsonl)

    assert len(big_create.jsonl) == big.jsonl_size(big.ids)
    assert len(lines) == len(expected) == big_create.file.total_training_pairs
    for index, (line, pair) in enumerate(zip(lines, expected, strict=True)):
        assert line == pair, f"pair {index} ({pair['id']}) differs"
    document = assert_json_is_the_jsonl(big_create.json, big_create.jsonl)
    assert document["training_pairs"] == lines
    metadata = document["dataset_metadata"]
    assert metadata["dataset_name"] == big_create.file.name
    assert (metadata["total_conversations"], metadata["total_turns"]) == (COUNT, len(expected))


def test_fetching_progress_comes_every_5_percent_or_every_second(
    big_create: BigCreate,
) -> None:
    messages = big_create.stream.messages
    first_at, first = messages[0]
    assert first.stage == VALIDATING and first.total == COUNT
    fetching = [(at, m) for at, m in messages if m.stage == FETCHING]
    assert fetching
    assert all(m.total == COUNT for _, m in fetching)
    step = max(1.0, PROGRESS_FRACTION * COUNT)
    previous_at, previous_done = first_at, 0  # nothing was fetched when VALIDATING came
    for at, message in fetching:
        jump, waited = message.done - previous_done, at - previous_at
        assert jump >= 0, "done went back"
        assert jump <= step or waited >= PROGRESS_SECONDS - RECEIVE_SLACK, (
            f"done jumped from {previous_done} to {message.done} after {waited:.3f} s"
        )
        previous_at, previous_done = at, message.done
    assert fetching[-1][1].done == COUNT


# ----------------------------------------------------------------- Add: the server-side copy


async def test_a_large_add_copies_the_stored_content_and_equals_a_fresh_create(
    stub: Stub, server: RunningServer, big: BigData, big_create: BigCreate
) -> None:
    base, rest = big.ids[:BASE], big.ids[BASE:]
    created = await create_ok(stub, unique_name("large-add"), base)
    stored_jsonl = await download(stub, created.id, JSONL)
    stored_json = await download(stub, created.id, JSON)
    assert len(stored_jsonl) > 2 * MIN_PART

    added = await collect_timed(
        stub.AddConversations(
            service_pb2.AddConversationsRequest(training_file_id=created.id, conversation_ids=rest),
            timeout=TIMEOUT,
        )
    )

    file = added.training_file
    assert (file.status, file.version, file.conversation_count) == (ACTIVE, 2, COUNT)
    jsonl = await download(stub, file.id, JSONL)
    json_document = await download(stub, file.id, JSON)
    assert jsonl == big_create.jsonl
    assert normalised(json_document) == normalised(big_create.json)
    assert (file.json_file_size, file.jsonl_file_size) == (len(json_document), len(jsonl))
    # The stored pairs went in by a server-side copy: the JSONL's first part is the whole
    # stored JSONL (streamed, it would have been cut at the part size), and in both
    # objects a part ends exactly where the stored pairs end.
    jsonl_parts = await object_parts(server, file.jsonl_file_path)
    json_parts = await object_parts(server, file.json_file_path)
    assert jsonl_parts and jsonl_parts[0] == len(stored_jsonl), (jsonl_parts, len(stored_jsonl))
    header = json_document[: json_document.index(PAIRS_KEY) + len(PAIRS_KEY)]
    stored_pairs = len(stored_json) - stored_json.index(PAIRS_KEY) - len(PAIRS_KEY) - 2
    assert len(header) + stored_pairs in part_boundaries(json_parts), json_parts


# ----------------------------------------------------------------- Remove: kept ranges copied


async def test_a_large_remove_copies_kept_ranges_and_equals_a_fresh_create(
    stub: Stub, server: RunningServer, big: BigData
) -> None:
    """Two adjacent conversations and a spread one leave a file with a trainer format:
    the v4 objects and the format are a fresh Create's byte for byte, their checksums
    those of the stored bytes. Parts below 5 MiB are refused by this store, so the
    store copies what can be a part of at least 5 MiB (the middle run, ~7.6 MiB, from
    where the parts written before it end) and the rest streams through."""
    formats = [resources_pb2.FILE_FORMAT_OPENAI_CHAT]
    request = service_pb2.CreateTrainingFileRequest(
        name=unique_name("large-remove"), conversation_ids=big.ids, formats=formats
    )
    created = (await collect_timed(stub.CreateTrainingFile(request, timeout=TIMEOUT))).training_file
    gone = [*big.ids[10:12], big.ids[30]]
    remaining = [i for i in big.ids if i not in gone]
    calls = Calls()
    calls.attach(server.storage.client)

    removed = await collect_timed(
        stub.RemoveConversations(
            service_pb2.RemoveConversationsRequest(
                training_file_id=created.id, conversation_ids=gone
            ),
            timeout=TIMEOUT,
        )
    )

    file = removed.training_file
    assert not await server.storage.accepts_small_parts()
    fresh_request = service_pb2.CreateTrainingFileRequest(
        name=unique_name("large-remove-fresh"), conversation_ids=remaining, formats=formats
    )
    fresh = (
        await collect_timed(stub.CreateTrainingFile(fresh_request, timeout=TIMEOUT))
    ).training_file
    for fmt in (JSON, JSONL, resources_pb2.FILE_FORMAT_OPENAI_CHAT):
        link = await download_url(stub, file.id, fmt)
        body = (await http_get(link.url)).body
        assert hashlib.sha256(body).hexdigest() == link.sha256, fmt
        expected = await download(stub, fresh.id, fmt)
        if fmt == JSON:
            body, expected = normalised(body), normalised(expected)
        assert body == expected, fmt
    jsonl = await download(stub, file.id, JSONL)
    assert [r["conversation_id"] for r in jsonl_records(jsonl)] == [
        p["conversation_id"] for p in big.expected(remaining)
    ]
    for key in (file.json_file_path, file.jsonl_file_path):
        assert calls("UploadPartCopy", key) == 1, key
        parts = await object_parts(server, key)
        assert all(size >= MIN_PART for size in parts[:-1]), parts


# ----------------------------------------------------------------- the whole-file size limit


@pytest.mark.parametrize("where", ["while_fetching", "json_only"])
async def test_a_file_above_max_object_bytes_is_refused_and_leaves_nothing_behind(
    where: str,
    stack: Stack,
    token: str,
    server: RunningServer,
    big: BigData,
    big_create: BigCreate,
) -> None:
    """Every document is far below the limit; the file is not. `while_fetching`: the
    JSONL crosses the limit once multipart uploads of both objects have sent parts;
    `json_only`: the JSONL fits exactly and only the JSON, a header longer, is too
    large, which is found once every part but the JSON's first has been sent (and
    every member staged: the failed build's staged rows are deleted too)."""
    limit = int(2.4 * MIN_PART) if where == "while_fetching" else len(big_create.jsonl)
    assert limit < len(big_create.json)
    settings = stack_settings(stack.postgres, stack.seaweed, max_object_bytes=limit)
    async with (
        running_server(settings) as small,
        authorized_channel(small.port, token) as channel,
    ):
        small_stub = service_pb2_grpc.TrainingFileServiceStub(channel)
        result = await create(small_stub, unique_name(f"large-limit-{where}"), big.ids)

        error = stream_error(result)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
        assert error_reason(error) == "OBJECT_TOO_LARGE"
        file_id = result.training_file_id
        failed = await get(small_stub, file_id)
        assert failed.status == FAILED
        assert str(limit) in failed.error_message
    assert await object_keys(server, f"{file_id}/") == set()
    assert await open_uploads(server, f"{file_id}/") == set()
    assert await intent_count(server, file_id) == 0
    assert await staged_count(server, file_id) == 0


async def staged_count(server: RunningServer, file_id: str) -> int:
    count: int = await server.database.pool.fetchval(
        "SELECT count(*) FROM staged_members WHERE training_file_id = $1", uuid.UUID(file_id)
    )
    return count


# ----------------------------------------------------------------- downloads during an Add


async def test_the_file_stays_downloadable_with_its_previous_content_during_an_add(
    stack: Stack, token: str, big: BigData, big_create: BigCreate
) -> None:
    """The Add runs on a server whose object store is reached through a forwarder that
    holds the GET of the last added document: once it is held, the Add is under way and
    cannot finish until it is released. Meanwhile every download gives the previous
    content, complete and valid."""
    base, rest = big.ids[:BASE], big.ids[BASE:]
    by_id = {str(c.conversation_id): c for c in big.conversations}
    last_key = by_id[rest[-1]].enriched_file_path
    assert last_key is not None
    async with HoldingForwarder(stack.seaweed.endpoint_url, f"/{last_key}".encode()) as store:
        settings = stack_settings(stack.postgres, stack.seaweed, s3_endpoint_url=store.endpoint_url)
        async with (
            running_server(settings) as held_server,
            authorized_channel(held_server.port, token) as channel,
        ):
            stub = service_pb2_grpc.TrainingFileServiceStub(channel)
            created = await create_ok(stub, unique_name("large-during-add"), base)
            before = {JSON: await download(stub, created.id, JSON)}
            before[JSONL] = await download(stub, created.id, JSONL)
            assert_json_is_the_jsonl(before[JSON], before[JSONL])
            assert not store.held.is_set()

            call = stub.AddConversations(
                service_pb2.AddConversationsRequest(
                    training_file_id=created.id, conversation_ids=rest
                ),
                timeout=TIMEOUT,
            )
            first = await call.read()
            assert first is not grpc.aio.EOF and first.stage == VALIDATING
            await asyncio.wait_for(store.held.wait(), TIMEOUT)
            for file_format, body in before.items():
                url = await download_url(stub, created.id, file_format)
                fetched = (await http_get(url.url)).body
                assert url.size_bytes == len(fetched) == len(body)
                assert fetched == body
            during = await get(stub, created.id)
            assert (during.version, during.jsonl_file_path) == (1, created.jsonl_file_path)

            store.release.set()
            added = await collect_timed(call)
            assert added.training_file.version == 2
            assert await download(stub, created.id, JSONL) == big_create.jsonl


# ----------------------------------------------------------------- an Add above the size limit


async def test_an_add_above_max_object_bytes_is_refused_and_changes_nothing(
    stack: Stack, token: str, stub: Stub, server: RunningServer, big: BigData
) -> None:
    """The stored file fits the limit, the rebuilt one would not: found before anything
    is made current, and the file is exactly as it was."""
    base, rest = big.ids[:BASE], big.ids[BASE:]
    created = await create_ok(stub, unique_name("large-add-limit"), base)
    limit = 14 * MIB
    assert max(created.json_file_size, created.jsonl_file_size) < limit < big.jsonl_size(big.ids)
    prefix = f"{created.id}/"
    settings = stack_settings(stack.postgres, stack.seaweed, max_object_bytes=limit)
    async with (
        running_server(settings) as small,
        authorized_channel(small.port, token) as channel,
    ):
        small_stub = service_pb2_grpc.TrainingFileServiceStub(channel)
        result = await collect_timed(
            small_stub.AddConversations(
                service_pb2.AddConversationsRequest(
                    training_file_id=created.id, conversation_ids=rest
                ),
                timeout=TIMEOUT,
            )
        )

    assert result.error is not None, "the Add succeeded"
    assert result.error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, result.error.details()
    assert error_reason(result.error) == "OBJECT_TOO_LARGE"
    assert await get(stub, created.id) == created
    assert await object_keys(server, prefix) == output_keys(created)
    assert await open_uploads(server, prefix) == set()
    assert await intent_count(server, created.id) == 0
    assert await staged_count(server, created.id) == 0
    listed = await stub.ListTrainingFileConversations(
        service_pb2.ListTrainingFileConversationsRequest(training_file_id=created.id, page_size=100)
    )
    assert [c.conversation_id for c in listed.conversations] == base


# ----------------------------------------------------------------- a file being created


async def test_a_file_being_created_is_processing_without_content_and_holds_its_name(
    stack: Stack, token: str, big: BigData
) -> None:
    """While a Create runs (held on its last document), the file is PROCESSING with no
    content: no paths, version 0, no summaries, nothing to download; its name is taken."""
    last_key = big.conversations[-1].enriched_file_path
    assert last_key is not None
    name = unique_name("large-processing")
    async with HoldingForwarder(stack.seaweed.endpoint_url, f"/{last_key}".encode()) as store:
        settings = stack_settings(stack.postgres, stack.seaweed, s3_endpoint_url=store.endpoint_url)
        async with (
            running_server(settings) as held_server,
            authorized_channel(held_server.port, token) as channel,
        ):
            stub = service_pb2_grpc.TrainingFileServiceStub(channel)
            call = stub.CreateTrainingFile(
                service_pb2.CreateTrainingFileRequest(name=name, conversation_ids=big.ids),
                timeout=TIMEOUT,
            )
            file_id = (await call.read()).training_file_id
            await asyncio.wait_for(store.held.wait(), TIMEOUT)

            during = await get(stub, file_id)
            assert during.status == PROCESSING
            assert (during.json_file_path, during.jsonl_file_path, during.version) == ("", "", 0)
            assert not during.HasField("quality_summary")
            assert not during.HasField("scaffolding_distribution")
            assert during.error_message == ""
            listed = await stub.ListTrainingFiles(
                service_pb2.ListTrainingFilesRequest(status=PROCESSING, page_size=1000)
            )
            assert file_id in {f.id for f in listed.training_files}
            with pytest.raises(grpc.aio.AioRpcError) as no_content:
                await download_url(stub, file_id, JSONL)
            assert no_content.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert error_reason(no_content.value) == "TRAINING_FILE_NOT_ACTIVE"
            taken = await create(stub, name, big.ids[:1])
            assert stream_error(taken).code() == grpc.StatusCode.ALREADY_EXISTS

            store.release.set()
            finished = await collect_timed(call)
            assert finished.training_file.status == ACTIVE
