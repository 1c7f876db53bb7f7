"""The compatibility suite: what touches storage, against every supported object store.

Each test runs once per store (`leg`, see `conftest.py`): the embedded SeaweedFS and real
Supabase Storage. Creates and Adds at multipart sizes (several parts; the JSON's first
part goes up last), byte for byte; presigned downloads with the attachment name; a
failed Create with its uploads open; whether the store takes parts below 5 MiB, asked
and checked, and Remove and Refresh copying their kept ranges accordingly; deleted and
swept objects; a missing bucket told
from a missing object; bucket bootstrap and `make run` on a first and a later start; a
Create → Add → failed Create → killed Creates → restart → sweep that leaves no orphan
object, no intent and no open upload; and cleanup failures that are never fatal.
Nothing is mocked: the servers, PostgreSQL and both stores are real.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import re
import signal
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path

import grpc
import orjson
import pytest
from botocore.exceptions import ClientError
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.compat.conftest import BIG, CONVERSATIONS, TRAINING, Leg
from tests.conftest import TEST_JWT_SECRET, authorized_channel, mint
from tests.crash.harness import Observer, server_process
from tests.e2e.helpers import (
    ACTIVE,
    FAILED,
    JSON,
    JSONL,
    TIMEOUT,
    Calls,
    Stub,
    add_ok,
    collect,
    create,
    create_ok,
    download_url,
    get,
    http_get,
    object_keys,
    open_uploads,
    output_keys,
    stream_error,
    unique_name,
)
from tests.e2e.test_refresh import refresh
from tests.e2e.test_remove import remove_ok
from trainingfiles.v1 import resources_pb2, service_pb2, service_pb2_grpc
from trainingfiles_dev.bootstrap import ensure_buckets
from trainingfiles_dev.generator import GeneratedConversation
from trainingfiles_server import aggregate
from trainingfiles_server.app import running_server
from trainingfiles_server.documents import decode_json_object, validate_enriched_document
from trainingfiles_server.health import CLEANUP
from trainingfiles_server.storage import (
    MIN_PART_SIZE,
    PROBE_PREFIX,
    BucketMissing,
    ObjectMissing,
    Storage,
    UploadVanished,
    _xml_body_content_type,
)

PAIRS_KEY = b',"training_pairs":['
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


# ----------------------------------------------------------------- helpers


def expected_jsonl(conversations: Sequence[GeneratedConversation]) -> bytes:
    """The JSONL of these conversations, in this order, as the aggregation writes it."""
    lines = []
    for conversation in conversations:
        assert conversation.document is not None
        raw = decode_json_object(conversation.document)
        document = validate_enriched_document(raw)
        lines.append(
            aggregate.transform_conversation(str(conversation.conversation_id), raw, document).lines
        )
    return b"".join(lines)


def assert_json_holds_the_jsonl(json_document: bytes, jsonl: bytes, conversations: int) -> None:
    """The JSON's pairs are the JSONL's lines joined by commas, after a valid header."""
    assert json_document.endswith(PAIRS_KEY + jsonl[:-1].replace(b"\n", b",") + b"]}")
    metadata = orjson.loads(json_document)["dataset_metadata"]
    assert metadata["total_conversations"] == conversations


async def fetch(stub: service_pb2_grpc.TrainingFileServiceStub, file_id: str, fmt: int) -> bytes:
    """Download through a presigned URL, which names the attachment after the file."""
    file = await get(stub, file_id)
    response = await download_url(stub, file_id, fmt)
    downloaded = await http_get(response.url)
    extension = "json" if fmt == JSON else "jsonl"
    disposition = downloaded.headers["Content-Disposition"]
    assert disposition == f'attachment; filename="{file.name}.{extension}"', disposition
    assert len(downloaded.body) == response.size_bytes
    return downloaded.body


async def intents(leg: Leg, file_id: str) -> int:
    count: int = await leg.server.database.pool.fetchval(
        "SELECT count(*) FROM storage_intents WHERE training_file_id = $1", uuid.UUID(file_id)
    )
    return count


async def assert_clean(leg: Leg, file_id: str, keys: set[str]) -> None:
    """Under the file's prefix: exactly `keys`, no open upload, and no intent left."""
    assert await object_keys(leg.server, f"{file_id}/") == keys
    assert await open_uploads(leg.server, f"{file_id}/") == set()
    assert await intents(leg, file_id) == 0


async def health(port: int, service: str = "") -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        status: int = reply.status
        return status


async def wait_for_health(port: int, service: str, status: int) -> None:
    async with asyncio.timeout(TIMEOUT):
        while await health(port, service) != status:  # noqa: ASYNC110 (polled: no push)
            await asyncio.sleep(0.05)


# ----------------------------------------------------------------- Create and Add


async def test_every_output_format_is_stored_as_its_row_says(leg: Leg) -> None:
    """Trainer formats per split, Parquet and the Markdown card go up (single PUTs and
    multipart) and come back through presigned links with the checksums their rows say."""
    request = service_pb2.CreateTrainingFileRequest(
        name=unique_name("compat-formats"),
        conversation_ids=leg.ids(leg.small[:4]),
        formats=[3, 4, 5, 6, 7, 8],  # type: ignore[list-item]  # every trainer format
    )
    request.split.validation_count = 1
    result = await collect(leg.stub.CreateTrainingFile(request, timeout=TIMEOUT))
    file = result.training_file
    assert len(file.outputs) == 3 + 6 * 2
    for output in file.outputs:
        response = await leg.stub.GetDownloadUrl(
            service_pb2.GetDownloadUrlRequest(
                training_file_id=file.id, format=output.format, split=output.split
            ),
            timeout=TIMEOUT,
        )
        body = (await http_get(response.url)).body
        assert hashlib.sha256(body).hexdigest() == output.sha256, output.file_name
        assert len(body) == output.size_bytes
    await assert_clean(leg, file.id, output_keys(file))


async def test_a_create_at_multipart_size_stores_every_byte_in_part_order(leg: Leg) -> None:
    """Both objects go up in several parts, the JSON's first part last (it waits for the
    header); the store must assemble them by part number, not in the order they came."""
    file = await create_ok(leg.stub, unique_name("compat-create"), leg.ids(leg.big))

    for key in (file.json_file_path, file.jsonl_file_path):
        assert leg.calls("UploadPart", key) >= 3, f"{key} did not go up in several parts"
        assert leg.calls("CompleteMultipartUpload", key) == 1
    await assert_clean(leg, file.id, output_keys(file))
    jsonl = await fetch(leg.stub, file.id, JSONL)
    json_document = await fetch(leg.stub, file.id, JSON)
    assert jsonl == expected_jsonl(leg.big)
    assert_json_holds_the_jsonl(json_document, jsonl, BIG)
    assert (file.json_file_size, file.jsonl_file_size) == (len(json_document), len(jsonl))


async def test_an_add_at_multipart_size_is_copied_by_the_store_and_equals_a_create(
    leg: Leg,
) -> None:
    """The stored content is copied by the store (UploadPartCopy), the new documents are
    uploaded behind it, and the objects of version 1 are deleted at once (no download
    link was handed out for them)."""
    base, rest = leg.big[:30], leg.big[30:]
    created = await create_ok(leg.stub, unique_name("compat-add"), leg.ids(base))

    added = await add_ok(leg.stub, created.id, leg.ids(rest))

    assert (added.status, added.version, added.conversation_count) == (ACTIVE, 2, BIG)
    for key in (added.json_file_path, added.jsonl_file_path):
        assert leg.calls("UploadPartCopy", key) >= 1, f"{key} was not copied by the store"
    await assert_clean(leg, created.id, output_keys(added))
    jsonl = await fetch(leg.stub, added.id, JSONL)
    json_document = await fetch(leg.stub, added.id, JSON)
    assert jsonl == expected_jsonl(leg.big)
    assert_json_holds_the_jsonl(json_document, jsonl, BIG)


async def test_objects_an_add_replaced_are_deleted_by_the_sweeper_once_due(leg: Leg) -> None:
    """A download link to version 1 keeps its objects (and the link working) after an
    Add; once the link's time is over the sweeper deletes them on the store."""
    created = await create_ok(leg.stub, unique_name("compat-due"), leg.ids(leg.small[:2]))
    link = await download_url(leg.stub, created.id, JSONL)
    added = await add_ok(leg.stub, created.id, leg.ids(leg.small[2:3]))

    old = output_keys(created)
    new = output_keys(added)
    assert await object_keys(leg.server, f"{created.id}/") == old | new
    assert (await http_get(link.url)).body == expected_jsonl(leg.small[:2])
    assert await intents(leg, created.id) == len(old)
    # The link's hour, cut short: its objects are due now.
    await leg.server.database.pool.execute(
        "UPDATE storage_intents SET delete_after = now() WHERE training_file_id = $1",
        uuid.UUID(created.id),
    )

    report = await leg.server.sweeper.sweep()

    assert report.deleted_objects >= 2 and not report.failures, report
    await assert_clean(leg, created.id, new)


# ----------------------------------------------------------------- parts below 5 MiB


async def _small_part_upload(storage: Storage, key: str, parts: Sequence[bytes]) -> bytes | None:
    """A multipart upload of `parts` (all but the last small): the stored bytes, or None
    if the store refused it (the upload then aborted)."""
    client = storage.client
    upload_id = (await client.create_multipart_upload(Bucket=TRAINING, Key=key))["UploadId"]
    try:
        listed = []
        for number, body in enumerate(parts, 1):
            reply = await client.upload_part(
                Bucket=TRAINING, Key=key, UploadId=upload_id, PartNumber=number, Body=body
            )
            listed.append({"PartNumber": number, "ETag": reply["ETag"]})
        await client.complete_multipart_upload(
            Bucket=TRAINING, Key=key, UploadId=upload_id, MultipartUpload={"Parts": listed}
        )
    except ClientError:
        await storage.abort_upload(TRAINING, key, upload_id)
        return None
    response = await client.get_object(Bucket=TRAINING, Key=key)
    async with response["Body"] as body:
        stored: bytes = await body.read()
    await storage.delete(TRAINING, [key])
    return stored


async def test_the_small_parts_probe_answers_what_the_store_does(
    leg: Leg, caplog: pytest.LogCaptureFixture
) -> None:
    """The probe (`Storage.accepts_small_parts`) says yes exactly when a multipart
    upload with parts far below 5 MiB completes and is assembled byte for byte; it
    leaves no object and no open upload under its reserved prefix, and its answer is
    logged once."""
    caplog.set_level(logging.INFO, logger="trainingfiles")
    storage = Storage(leg.storage.client, CONVERSATIONS, TRAINING)
    answer = await storage.accepts_small_parts()

    parts = [os.urandom(1000), os.urandom(70_000), b"last"]
    key = f"compat-small-parts-{uuid.uuid4().hex[:12]}/object"
    stored = await _small_part_upload(leg.storage, key, parts)

    assert stored in (None, b"".join(parts)), "completed with other bytes"
    assert answer is (stored is not None), (leg.name, answer)
    # What the README says of each: SeaweedFS refuses them as S3 does (EntityTooSmall),
    # Supabase Storage's file backend assembles them.
    assert answer is {"seaweedfs": False, "supabase": True}[leg.name]
    assert storage.small_parts is answer
    listed = await leg.storage.client.list_objects_v2(Bucket=TRAINING, Prefix=PROBE_PREFIX)
    assert listed.get("KeyCount", 0) == 0
    assert all(not u.key.startswith(PROBE_PREFIX) for u in await storage.open_uploads(TRAINING))
    # Asked once per process.
    assert await storage.accepts_small_parts() is answer
    said = "accepts" if answer else "refuses"
    logged = [r.getMessage() for r in caplog.records if "parts below 5 MiB" in r.getMessage()]
    assert logged == [f"object storage {said} parts below 5 MiB"]


async def _kept_writes(
    storage: Storage, source_key: str, source: bytes, plan: Sequence[tuple[str, int, int]]
) -> tuple[str, bytes]:
    """Write an object with a held first part: ("write", a, b) writes source[a:b] as new
    bytes, ("keep", a, b) keeps that range of the stored source, streamed in 64 KiB
    chunks as a Remove streams it. Returns the key and the bytes expected."""
    key = f"compat-kept-{uuid.uuid4().hex[:12]}/object"
    small = await storage.accepts_small_parts()
    writer = storage.writer(TRAINING, key, "application/octet-stream", hold_first=True)
    expected = bytearray(b"HEADER")
    try:
        for what, low, high in plan:
            expected += source[low:high]
            if what == "write":
                await writer.write(source[low:high])
                continue
            writer.start_range(source_key, low, small_parts=small)
            for at in range(low, high, 64 * 1024):
                await writer.keep(memoryview(source)[at : min(high, at + 64 * 1024)])
            await writer.end_range()
        assert await writer.close(b"HEADER") == len(expected)
    except BaseException:
        await writer.abort()
        raise
    return key, bytes(expected)


async def test_a_writer_keeping_many_ranges_stores_exactly_the_expected_bytes(
    leg: Leg,
) -> None:
    """Ranges of a stored object kept between written bytes, behind a held first part:
    where the store accepts small parts each range of 256 KiB or more is copied by the
    store as a part of its own (the shorter ones are written), else only a range that
    can start a part of 5 MiB is; either way the object holds exactly the bytes asked."""
    source = os.urandom(14 * 1024 * 1024)
    source_key = f"compat-kept-{uuid.uuid4().hex[:12]}/source"
    await leg.storage.client.put_object(Bucket=TRAINING, Key=source_key, Body=source)
    kib = 1024
    plan = [
        ("keep", 0, 300 * kib),  # copied first: the held part is the header alone
        ("write", 300 * kib, 310 * kib),
        ("keep", 400 * kib, 700 * kib),
        ("keep", 800 * kib, 900 * kib),  # too short to copy: written
        ("keep", 1000 * kib, 1300 * kib),
        ("keep", 1300 * kib, 1600 * kib),  # right behind another copy
        ("write", 0, 1),
        ("keep", 2000 * kib, 13000 * kib),  # long enough for a 5 MiB part past the head
        ("keep", 13100 * kib, 13101 * kib),
        ("write", 5, 4000),
    ]
    calls = Calls()
    calls.attach(leg.storage.client)
    small = await leg.storage.accepts_small_parts()
    try:
        key, expected = await _kept_writes(leg.storage, source_key, source, plan)
        stored = await leg.storage.client.get_object(Bucket=TRAINING, Key=key)
        async with stored["Body"] as body:
            assert await body.read() == expected
        copies = calls("UploadPartCopy", key)
        assert copies == (5 if small else 1), (leg.name, small, copies)

        leg.storage.small_parts = False  # as on a store that refuses them
        refused_key, expected = await _kept_writes(leg.storage, source_key, source, plan)
        stored = await leg.storage.client.get_object(Bucket=TRAINING, Key=refused_key)
        async with stored["Body"] as body:
            assert await body.read() == expected
        # Only the long range, from where the 5 MiB held first part ends.
        assert calls("UploadPartCopy", refused_key) == 1
        await leg.storage.delete(TRAINING, [key, refused_key])
    finally:
        leg.storage.small_parts = small
        await leg.storage.delete(TRAINING, [source_key])


async def _reenrich(leg: Leg, conversation: GeneratedConversation) -> None:
    """What the enrichment pipeline does: in progress, the conversation's document
    written at its key, completed."""
    assert conversation.document is not None and conversation.enriched_file_path
    pool = leg.server.database.pool
    update = "UPDATE conversations SET enrichment_status = $2 WHERE conversation_id = $1"
    await pool.execute(update, conversation.conversation_id, "enrichment_in_progress")
    await leg.storage.client.put_object(
        Bucket=CONVERSATIONS, Key=conversation.enriched_file_path, Body=conversation.document
    )
    await pool.execute(update, conversation.conversation_id, "completed")


def _revised(conversation: GeneratedConversation) -> GeneratedConversation:
    """The conversation with every target response rewritten: new content."""
    assert conversation.document is not None
    document = orjson.loads(conversation.document)
    for pair in document["training_pairs"]:
        pair["target_response"] = f"Revised: {pair['target_response']}"
    return dataclasses.replace(conversation, document=orjson.dumps(document))


async def _refresh_ok(stub: Stub, file_id: str) -> resources_pb2.TrainingFile:
    result = await refresh(stub, file_id)
    assert result.error is None, f"{result.error.code()}: {result.error.details()}"
    return result.training_file


async def _stored_as_expected(
    leg: Leg, file: resources_pb2.TrainingFile, conversations: Sequence[GeneratedConversation]
) -> None:
    """Both v4 objects hold exactly these conversations, and their recorded checksums
    are those of the stored bytes."""
    jsonl = await fetch(leg.stub, file.id, JSONL)
    json_document = await fetch(leg.stub, file.id, JSON)
    assert jsonl == expected_jsonl(conversations)
    assert_json_holds_the_jsonl(json_document, jsonl, len(conversations))
    for fmt, body in ((JSON, json_document), (JSONL, jsonl)):
        link = await download_url(leg.stub, file.id, fmt)
        assert link.sha256 == hashlib.sha256(body).hexdigest()


def _copied(leg: Leg, file: resources_pb2.TrainingFile) -> tuple[int, int]:
    """How many ranges the store copied into the version's JSON and JSONL."""
    return (
        leg.calls("UploadPartCopy", file.json_file_path),
        leg.calls("UploadPartCopy", file.jsonl_file_path),
    )


async def test_remove_and_refresh_at_multipart_size_copy_the_kept_ranges(leg: Leg) -> None:
    """A Remove spread over the file (runs of three conversations, ~1.3 MiB: no run is a
    5 MiB part), a Refresh of spread members, and a Remove of adjacent ones (two runs
    above 5 MiB) store exactly a Create's pairs with their checksums. Where the store
    accepts small parts every kept run is copied by the store; where it does not, only
    what can be a 5 MiB part is (the JSONL's two long runs), the rest streams through.
    Forcing the refusal on a store that accepts them stores the same bytes."""
    server = leg.server
    small = await server.storage.accepts_small_parts()
    conversations = list(leg.big)
    ids = leg.ids(conversations)
    created = await create_ok(leg.stub, unique_name("compat-splice"), ids)

    gone = set(ids[3::4])
    removed = await remove_ok(leg.stub, created.id, sorted(gone))
    conversations = [c for c in conversations if str(c.conversation_id) not in gone]
    await _stored_as_expected(leg, removed.training_file, conversations)
    assert _copied(leg, removed.training_file) == ((10, 10) if small else (0, 0))

    stale = [1, 10, 20, 29]  # kept runs: 1, 8, 9 and 8 conversations
    try:
        for index in stale:
            conversations[index] = _revised(conversations[index])
            await _reenrich(leg, conversations[index])
        refreshed = await _refresh_ok(leg.stub, created.id)
        assert refreshed.version == 3
        await _stored_as_expected(leg, refreshed, conversations)
        assert _copied(leg, refreshed) == ((4, 4) if small else (0, 0))
    finally:
        by_id = {c.conversation_id: c for c in leg.big}
        for index in stale:
            await _reenrich(leg, by_id[conversations[index].conversation_id])

    adjacent = leg.ids(conversations[14:16])
    pair = (await remove_ok(leg.stub, created.id, adjacent)).training_file
    conversations = conversations[:14] + conversations[16:]
    await _stored_as_expected(leg, pair, conversations)
    assert _copied(leg, pair) == ((2, 2) if small else (0, 2))

    server.storage.small_parts = False  # as a store that refuses them
    try:
        last = leg.ids(conversations[5::6])
        forced = (await remove_ok(leg.stub, created.id, last)).training_file
    finally:
        server.storage.small_parts = small
    conversations = [c for c in conversations if str(c.conversation_id) not in last]
    await _stored_as_expected(leg, forced, conversations)
    assert _copied(leg, forced) == (0, 0)


# ----------------------------------------------------------------- failures


async def test_a_create_that_fails_with_its_uploads_open_leaves_nothing(leg: Leg) -> None:
    """The last document is missing from the store (a 404 the service must read as "no
    such object", also where the store says NoSuchKey for everything). One document at a
    time is fetched, so the uploads are open, with parts sent, when it is reached."""
    settings = leg.settings_with(fetch_concurrency=1)
    async with (
        running_server(settings) as server,
        authorized_channel(server.port, mint("service_role")) as channel,
    ):
        calls = Calls()
        calls.attach(server.storage.client)
        stub = service_pb2_grpc.TrainingFileServiceStub(channel)
        missing = str(leg.missing.conversation_id)
        result = await create(stub, unique_name("compat-fail"), [*leg.ids(leg.big[:30]), missing])

        error = stream_error(result)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
        assert "missing from storage" in (error.details() or "") and missing in error.details()
        file_id = result.training_file_id
        assert calls.under("CreateMultipartUpload", f"{file_id}/") >= 1
        assert calls.under("UploadPart", f"{file_id}/") >= 1
        file = await get(stub, file_id)
    assert file.status == FAILED and missing in file.error_message
    await assert_clean(leg, file_id, set())


async def test_an_upload_aborted_under_a_writer_is_told_as_a_lost_lease(leg: Leg) -> None:
    """The sweeper aborts the multipart upload of a build whose lease expired while the
    build, stalled, still runs: its next part (or its completion) must read as a lost
    lease (ABORTED, LEASE_LOST), never as an unexpected store error."""
    uploads: list[str] = []

    async def recorded(key: str, upload_id: str) -> None:
        uploads.append(upload_id)

    key = f"compat-vanished-{uuid.uuid4().hex[:12]}/data.jsonl"
    writer = leg.storage.writer(TRAINING, key, "application/jsonl", on_upload=recorded)
    part = b"x" * MIN_PART_SIZE
    await writer.write(part)
    await writer.write(part)  # the upload is open, with parts sent
    assert len(uploads) == 1
    await leg.storage.abort_upload(TRAINING, key, uploads[0])

    async def go_on() -> None:  # the parts after the abort, then the completion
        await writer.write(part)
        await writer.close(b"")

    with pytest.raises(UploadVanished) as vanished:
        await go_on()
    assert vanished.value.reason == "LEASE_LOST"
    await writer.abort()
    listed = await leg.storage.client.list_objects_v2(Bucket=TRAINING, Prefix=key)
    assert listed.get("KeyCount", 0) == 0
    assert all(u.key != key for u in await leg.storage.open_uploads(TRAINING))


async def test_the_service_signs_document_urls_as_the_client_does(leg: Leg) -> None:
    """`Storage.get_url` signs with botocore's SigV4 query signer directly: for keys with
    spaces and `+!()&=@,` (characters both stores accept in a key and a URL path must
    escape), its URL is the client's `generate_presigned_url`
    but for the moment of signing, and the store serves the object on it."""
    client = leg.storage.client
    for name in ("plain.json", "with space.json", "a+b!(1)&c=d@e,f.json"):
        key = f"compat-signed-{uuid.uuid4().hex[:8]}/{name}"
        body = f'{{"key": {orjson.dumps(key).decode()}}}'.encode()
        await client.put_object(Bucket=CONVERSATIONS, Key=key, Body=body)
        ours = await leg.storage.get_url(CONVERSATIONS, key)
        theirs = await client.generate_presigned_url(
            "get_object", Params={"Bucket": CONVERSATIONS, "Key": key}, ExpiresIn=300
        )
        moment = re.compile(r"X-Amz-(Date|Signature)=[^&]*")
        assert moment.sub("", ours) == moment.sub("", theirs)
        assert (await http_get(ours)).body == body
        await client.delete_object(Bucket=CONVERSATIONS, Key=key)


async def test_a_missing_bucket_is_told_apart_from_a_missing_object(leg: Leg) -> None:
    """Through both ways documents are read (presigned GET, client GET), and health's ping."""
    absent = f"compat-absent-{uuid.uuid4().hex[:12]}"
    client = leg.storage.client
    for http in (leg.storage.http, None):
        present = Storage(client, CONVERSATIONS, TRAINING, http=http)
        with pytest.raises(ObjectMissing):
            await present.get_document(f"{uuid.uuid4()}/enriched.json", 1024)
        nowhere = Storage(client, absent, TRAINING, http=http)
        with pytest.raises(BucketMissing, match=absent):
            await nowhere.get_document(f"{uuid.uuid4()}/enriched.json", 1024)
    with pytest.raises(BucketMissing, match=absent):
        await Storage(client, absent, TRAINING).ping()
    with pytest.raises(BucketMissing, match=absent):
        await leg.storage.size(absent, "anything")
    with pytest.raises(ObjectMissing):
        await leg.storage.size(TRAINING, f"{uuid.uuid4()}/nothing.json")


async def test_a_delete_that_fails_at_start_up_is_retried_and_never_fatal(
    leg: Leg, caplog: pytest.LogCaptureFixture
) -> None:
    """An intent names an object in a bucket that does not exist, so deleting it fails on
    every sweep. A server still starts (its first sweep runs then) and serves, the
    failure is logged once, and the same sweep deletes everything else that is due."""
    file = await create_ok(leg.stub, unique_name("compat-ghost"), leg.ids(leg.small[:1]))
    file_id = uuid.UUID(file.id)
    absent = f"compat-absent-{uuid.uuid4().hex[:12]}"
    stray = f"{file.id}/stray.json"
    await leg.storage.client.put_object(Bucket=TRAINING, Key=stray, Body=b"{}")
    database = leg.server.database
    await database.condemn(absent, file_id, ["ghost.json"])
    await database.condemn(TRAINING, file_id, [stray])
    caplog.set_level(logging.WARNING, logger="trainingfiles")
    try:
        async with running_server(leg.settings) as server:
            async with asyncio.timeout(TIMEOUT):
                while server.sweeper.sweeps < 1:  # noqa: ASYNC110 (the start-up sweep)
                    await asyncio.sleep(0.02)
            assert await health(server.port) == SERVING
            assert await object_keys(server, f"{file.id}/") == output_keys(file), (
                "the start-up sweep did not delete the due object beside the failing one"
            )
            report = await server.sweeper.sweep()
            assert report.failures == 1 and report.failure is not None, report
            assert absent in report.failure and "does not exist" in report.failure
            assert await intents(leg, file.id) == 1
            async with authorized_channel(server.port, mint("service_role")) as channel:
                stub = service_pb2_grpc.TrainingFileServiceStub(channel)
                assert (await get(stub, file.id)).status == ACTIVE
        warnings = [r for r in caplog.records if "could not remove everything" in r.getMessage()]
        assert len(warnings) == 1, "logged once, not once per sweep"
    finally:
        await database.clear_intents(absent, ["ghost.json"])


async def test_a_store_that_refuses_deletes_is_reported_once_and_nothing_is_fatal(
    supabase_leg: Leg, caplog: pytest.LogCaptureFixture
) -> None:
    """Supabase Storage refuses DeleteObjects sent as botocore sends it (no XML
    Content-Type): the storage module's hook is taken off a server's client to see it.
    The Add still succeeds, its replaced objects wait for the sweeper, every sweep goes
    on, health's `storage-cleanup` says NOT_SERVING while the service stays SERVING, and
    the refusal is logged once. With the hook back, the next sweep deletes them.

    Only Supabase Storage refuses the call, so this runs on its leg alone."""
    leg = supabase_leg
    caplog.set_level(logging.INFO, logger="trainingfiles")
    async with (
        running_server(leg.settings) as server,
        authorized_channel(server.port, mint("service_role")) as channel,
    ):
        stub = service_pb2_grpc.TrainingFileServiceStub(channel)
        events = server.storage.client.meta.events
        events.unregister("before-call.s3", _xml_body_content_type)
        try:
            created = await create_ok(stub, unique_name("compat-refused"), leg.ids(leg.small[:1]))
            added = await add_ok(stub, created.id, leg.ids(leg.small[1:2]))
            old = output_keys(created)
            new = output_keys(added)
            assert await object_keys(server, f"{created.id}/") == old | new
            assert await intents(leg, created.id) == len(old)

            first = await server.sweeper.sweep()
            second = await server.sweeper.sweep()

            for report in (first, second):
                assert report.swept and report.failures >= 2, report
                assert report.failure is not None and "refuses DeleteObjects" in report.failure
                assert "HTTP 400" in report.failure
            assert server.storage.rejections["DeleteObjects"].startswith("HTTP 400")
            await wait_for_health(server.port, CLEANUP, NOT_SERVING)
            assert await health(server.port) == SERVING
            assert await object_keys(server, f"{created.id}/") == old | new
            assert (await get(stub, created.id)).version == 2
        finally:
            events.register("before-call.s3", _xml_body_content_type)

        report = await server.sweeper.sweep()

        assert report.deleted_objects >= 2 and not report.failures, report
        assert not server.storage.rejections
        await wait_for_health(server.port, CLEANUP, SERVING)
    await assert_clean(leg, created.id, new)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("rejects a cleanup call" in m for m in messages) == 1, messages
    assert sum("accepts a cleanup call again" in m for m in messages) == 1


# ----------------------------------------------------------------- the sweeper across restarts


async def _drive(call: object) -> str:
    """Read a stream to its end; returns the status code's name."""
    try:
        async for _ in call:  # type: ignore[attr-defined]
            pass
    except grpc.aio.AioRpcError as error:
        return str(error.code().name)
    return "OK"


async def test_create_add_failed_create_restart_and_sweep_leave_nothing_behind(
    leg: Leg, tmp_path: Path
) -> None:
    """Real server processes, as production runs them: a Create, an Add, a Create that
    fails; then a Create killed with its uploads open (and recorded), another killed
    right after starting an upload (not recorded); then a restart. Its sweeps leave no
    orphan object, no intent and no open multipart upload. The Add prunes the version
    it replaces (`VERSION_RETENTION=1`): its objects too must go."""
    backend, env = leg.backend(), {**leg.store_env(), "VERSION_RETENTION": "1"}
    token = mint("service_role")
    log = tmp_path / "servers.log"
    observer = Observer(leg.server.database.pool, leg.storage)
    async with (
        server_process(backend, log, extra_env=env) as first,
        authorized_channel(first.port, token) as channel,
    ):
        stub = service_pb2_grpc.TrainingFileServiceStub(channel)
        created = await create_ok(stub, unique_name("compat-life"), leg.ids(leg.big[:10]))
        added = await add_ok(stub, created.id, leg.ids(leg.big[10:14]))
        failed = await create(
            stub,
            unique_name("compat-life-fail"),
            [*leg.ids(leg.big[14:30]), str(leg.missing.conversation_id)],
        )
        assert stream_error(failed).code() == grpc.StatusCode.FAILED_PRECONDITION
    killed: list[uuid.UUID] = []
    for point in ("build.fetched:20", "build.upload_started"):
        name = unique_name("compat-life-killed")
        async with server_process(backend, log, failpoint=point, extra_env=env) as dying:
            async with authorized_channel(dying.port, token) as channel:
                stub = service_pb2_grpc.TrainingFileServiceStub(channel)
                request = service_pb2.CreateTrainingFileRequest(
                    name=name, conversation_ids=leg.ids(leg.big[:30])
                )
                assert await _drive(stub.CreateTrainingFile(request, timeout=TIMEOUT)) != "OK"
            assert await dying.wait_exit() == -signal.SIGKILL
        found = await observer.file_id_by_name(name)
        assert found is not None
        # Left behind (until a sweep): an open upload, recorded or not.
        assert await open_uploads(leg.server, f"{found}/"), f"no upload open at {point}"
        killed.append(found)
    files = [uuid.UUID(created.id), uuid.UUID(failed.training_file_id), *killed]

    async with (
        server_process(backend, log, extra_env=env) as restarted,
        authorized_channel(restarted.port, token) as channel,
    ):
        for file_id in files:
            await observer.repaired(file_id)
        stub = service_pb2_grpc.TrainingFileServiceStub(channel)
        statuses = [(await get(stub, str(file_id))).status for file_id in files]
    assert statuses == [ACTIVE, FAILED, FAILED, FAILED]
    await assert_clean(leg, created.id, output_keys(added))
    for file_id in files[1:]:
        await assert_clean(leg, str(file_id), set())


# ----------------------------------------------------------------- bucket bootstrap and make run


async def test_bucket_bootstrap_creates_the_buckets_then_finds_them(leg: Leg) -> None:
    """The first start creates the buckets; a later one is answered "already exists"
    (409, in each store's words) and goes on."""
    names = [f"compat-boot-{uuid.uuid4().hex[:10]}-{n}" for n in ("a", "b")]
    for name in names:
        assert not await leg.storage.bucket_exists(name)

    await ensure_buckets(leg.storage.client, *names)
    await ensure_buckets(leg.storage.client, *names)

    for name in names:
        assert await leg.storage.bucket_exists(name)


_READY = re.compile(r"ready on (127\.0\.0\.1:\d+)")
_CONSOLE = re.compile(r"Web console: (http://127\.0\.0\.1:\d+)")


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as error:
        return error.code


async def _make_run(env: dict[str, str], cwd: Path) -> None:
    """`make run` against configured servers: wait until it serves, check health, Ctrl-C."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "trainingfiles_dev.run",
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        async with asyncio.timeout(60):
            while not (ready := _READY.search((await process.stdout.readline()).decode())):
                assert not process.stdout.at_eof(), (await process.stderr.read()).decode()
            console = _CONSOLE.search((await process.stdout.readline()).decode())
        port = int(ready.group(1).rsplit(":", 1)[1])
        await wait_for_health(port, "", SERVING)
        # The web console serves beside it, and without a development secret it offers
        # no sign-in link.
        assert console is not None
        assert await asyncio.to_thread(_status, f"{console.group(1)}/signin") == 200
        assert await asyncio.to_thread(_status, f"{console.group(1)}/signin/link?token=x") == 404
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            output, errors = await process.communicate()
        assert process.returncode == 0, errors.decode()
        assert b"Stopped." in output
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_make_run_against_the_store_starts_twice_in_a_row(leg: Leg, tmp_path: Path) -> None:
    """With DATABASE_URL and S3_ENDPOINT_URL set, `make run` applies the migrations,
    creates the buckets (the first time) or finds them (the second) and serves."""
    suffix = uuid.uuid4().hex[:10]
    buckets = {
        "S3_CONVERSATIONS_BUCKET": f"compat-run-{suffix}-conversations",
        "S3_TRAINING_BUCKET": f"compat-run-{suffix}-training",
    }
    inherited = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("S3_", "DATABASE_", "JWT_", "LISTEN_", "TRAININGFILES_"))
    }
    env = {
        **inherited,
        **leg.store_env(),
        **buckets,
        "DATABASE_URL": leg.database_url,
        "LISTEN_ADDRESS": "127.0.0.1:0",
        "WEB_LISTEN_ADDRESS": "127.0.0.1:0",
        "JWT_SECRET": TEST_JWT_SECRET,
    }
    for _ in range(2):
        await _make_run(env, tmp_path)  # no `.env` there
    for bucket in buckets.values():
        assert await leg.storage.bucket_exists(bucket)
