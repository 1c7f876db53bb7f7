"""Outputs: every format and split of a build, checksums, duplicates, untrainable pairs,
exports and download links per output, through the real server and store.

Each trainer format is checked against the v4 JSONL it was rendered from: it holds exactly
the trainable pairs of its side of the split, in file order. The formats' own shapes are
checked byte for byte by tests/unit/test_formats.py; here it is what the build does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
import uuid
from collections.abc import Sequence
from typing import Any

import grpc
import orjson
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]
import pytest

from tests.e2e.conftest import OWNER, Dataset
from tests.e2e.helpers import (
    JSONL,
    StreamResult,
    Stub,
    add,
    assert_nothing_written,
    collect,
    expect_error,
    field_violations,
    get,
    http_get,
    jsonl_records,
    object_keys,
    output_keys,
    precondition_violations,
    snapshot,
    stream_error,
    unique_name,
)
from trainingfiles.v1 import resources_pb2, service_pb2
from trainingfiles_dev.generator import GeneratedConversation, generate, load
from trainingfiles_server.app import RunningServer
from trainingfiles_server.storage import Storage

TIMEOUT = 60.0
TRAINER = [
    resources_pb2.FILE_FORMAT_OPENAI_CHAT,
    resources_pb2.FILE_FORMAT_CHAT_MESSAGES,
    resources_pb2.FILE_FORMAT_PROMPT_COMPLETION,
    resources_pb2.FILE_FORMAT_SHAREGPT,
    resources_pb2.FILE_FORMAT_ALPACA,
    resources_pb2.FILE_FORMAT_PARQUET,
]
NAMES: dict[int, str] = {
    resources_pb2.FILE_FORMAT_JSON: "v4_json",
    resources_pb2.FILE_FORMAT_JSONL: "v4_jsonl",
    resources_pb2.FILE_FORMAT_OPENAI_CHAT: "openai_chat",
    resources_pb2.FILE_FORMAT_CHAT_MESSAGES: "chat_messages",
    resources_pb2.FILE_FORMAT_PROMPT_COMPLETION: "prompt_completion",
    resources_pb2.FILE_FORMAT_SHAREGPT: "sharegpt",
    resources_pb2.FILE_FORMAT_ALPACA: "alpaca",
    resources_pb2.FILE_FORMAT_PARQUET: "parquet",
    resources_pb2.FILE_FORMAT_DATASET_CARD: "dataset_card",
}
ALL, TRAIN, VALIDATION = (
    resources_pb2.SPLIT_ALL,
    resources_pb2.SPLIT_TRAIN,
    resources_pb2.SPLIT_VALIDATION,
)
RENDERING = service_pb2.TrainingFileProgress.STAGE_RENDERING


async def _create(
    stub: Stub,
    ids: Sequence[str],
    formats: Sequence[int] = (),
    split: resources_pb2.SplitOptions | None = None,
    drop_duplicates: bool = False,
    name: str | None = None,
) -> Any:
    request = service_pb2.CreateTrainingFileRequest(
        name=name or unique_name("outputs"),
        conversation_ids=list(ids),
        formats=list(formats),  # type: ignore[arg-type]
        drop_duplicates=drop_duplicates,
    )
    if split is not None:
        request.split.CopyFrom(split)
    return await collect(stub.CreateTrainingFile(request, timeout=TIMEOUT))


async def _create_ok(stub: Stub, ids: Sequence[str], **kwargs: Any) -> resources_pb2.TrainingFile:
    result = await _create(stub, ids, **kwargs)
    assert result.error is None, f"{result.error.code()}: {result.error.details()}"
    file: resources_pb2.TrainingFile = result.training_file
    return file


async def _fetch(
    stub: Stub, file_id: str, file_format: int, split: int = 0
) -> tuple[service_pb2.GetDownloadUrlResponse, bytes]:
    response = await stub.GetDownloadUrl(
        service_pb2.GetDownloadUrlRequest(
            training_file_id=file_id,
            format=file_format,  # type: ignore[arg-type]
            split=split,  # type: ignore[arg-type]
        ),
        timeout=TIMEOUT,
    )
    return response, (await http_get(response.url)).body


def _records(file_format: int, body: bytes) -> list[dict[str, Any]]:
    if file_format == resources_pb2.FILE_FORMAT_PARQUET:
        rows: list[dict[str, Any]] = pq.read_table(io.BytesIO(body)).to_pylist()
        return rows
    return jsonl_records(body) if body else []


def _target(file_format: int, record: dict[str, Any]) -> str:
    """The response a record teaches, whatever its format."""
    name = NAMES[file_format]
    if name in ("openai_chat", "chat_messages", "parquet"):
        assert record["messages"][-1]["role"] == "assistant"
        return str(record["messages"][-1]["content"])
    if name == "prompt_completion":
        return str(record["completion"][0]["content"])
    if name == "sharegpt":
        assert record["conversations"][-1]["from"] == "gpt"
        return str(record["conversations"][-1]["value"])
    assert name == "alpaca"
    return str(record["output"])


def _trainable(pair: dict[str, Any]) -> bool:
    return isinstance(pair.get("target_response"), str) and pair["target_response"] != ""


def _outputs(file: resources_pb2.TrainingFile) -> dict[tuple[str, int], Any]:
    return {(NAMES[o.format], o.split): o for o in file.outputs}


def _split(fraction: float = 0.0, count: int = 0, seed: int = 0) -> resources_pb2.SplitOptions:
    options = resources_pb2.SplitOptions(seed=seed)
    if count:
        options.validation_count = count
    else:
        options.validation_fraction = fraction
    return options


@pytest.fixture(scope="module")
async def every_format(stub: Stub, dataset: Dataset) -> resources_pb2.TrainingFile:
    """Twelve conversations in every format with a quarter of them for validation."""
    return await _create_ok(stub, dataset.ids()[:12], formats=TRAINER, split=_split(0.25, seed=7))


async def test_a_create_with_every_format_and_a_split_stores_each_output_with_its_checksum(
    every_format: resources_pb2.TrainingFile, stub: Stub, server: RunningServer
) -> None:
    outputs = _outputs(every_format)
    expected = {("v4_json", ALL), ("v4_jsonl", ALL), ("dataset_card", ALL)} | {
        (NAMES[f], side) for f in TRAINER for side in (TRAIN, VALIDATION)
    }
    assert set(outputs) == expected
    assert await object_keys(server, f"{every_format.id}/") == output_keys(every_format)
    assert outputs[("v4_jsonl", ALL)].object_key == every_format.jsonl_file_path
    assert outputs[("v4_json", ALL)].size_bytes == every_format.json_file_size
    for (name, side), output in outputs.items():
        file_format = next(f for f, n in NAMES.items() if n == name)
        response, body = await _fetch(stub, every_format.id, file_format, side)
        assert (response.format, response.split) == (file_format, side)
        assert response.file_name == output.file_name
        assert len(body) == output.size_bytes == response.size_bytes, name
        assert hashlib.sha256(body).hexdigest() == output.sha256 == response.sha256, name
        if name == "dataset_card":
            assert output.file_name == "README.md" and body.startswith(b"---\n")
        elif name != "v4_json":
            assert len(_records(file_format, body)) == output.record_count, name
        else:
            assert len(orjson.loads(body)["training_pairs"]) == output.record_count
    assert every_format.split.validation_fraction == 0.25 and every_format.split.seed == 7


async def test_every_format_holds_exactly_the_trainable_pairs_of_its_side_in_file_order(
    every_format: resources_pb2.TrainingFile, stub: Stub
) -> None:
    _, jsonl = await _fetch(stub, every_format.id, JSONL)
    pairs = jsonl_records(jsonl)
    assert len(pairs) == every_format.total_training_pairs
    sides: dict[int, set[str]] = {}
    for side in (TRAIN, VALIDATION):
        _, body = await _fetch(stub, every_format.id, resources_pb2.FILE_FORMAT_PARQUET, side)
        sides[side] = {
            row["conversation_id"] for row in _records(resources_pb2.FILE_FORMAT_PARQUET, body)
        }
    assert sides[TRAIN].isdisjoint(sides[VALIDATION])
    assert sides[TRAIN] | sides[VALIDATION] == {p["conversation_id"] for p in pairs}
    assert len(sides[VALIDATION]) == 3  # a quarter of twelve
    for file_format in TRAINER:
        for side in (TRAIN, VALIDATION):
            _, body = await _fetch(stub, every_format.id, file_format, side)
            expected = [
                p["target_response"]
                for p in pairs
                if _trainable(p) and p["conversation_id"] in sides[side]
            ]
            assert [_target(file_format, r) for r in _records(file_format, body)] == expected


async def test_the_split_depends_on_the_seed_and_the_ids_not_on_the_request_order(
    stub: Stub, dataset: Dataset
) -> None:
    ids = dataset.ids()[12:32]

    async def validation_side(order: Sequence[str], seed: int) -> set[str]:
        file = await _create_ok(
            stub,
            order,
            formats=[resources_pb2.FILE_FORMAT_PARQUET],
            split=_split(count=5, seed=seed),
        )
        _, body = await _fetch(stub, file.id, resources_pb2.FILE_FORMAT_PARQUET, VALIDATION)
        return {r["conversation_id"] for r in _records(resources_pb2.FILE_FORMAT_PARQUET, body)}

    first = await validation_side(ids, 1)
    assert len(first) == 5
    assert await validation_side(list(reversed(ids)), 1) == first
    others = [await validation_side(ids, seed) for seed in (2, 3)]
    assert any(side != first for side in others), "three seeds chose the same five of twenty"


async def test_a_split_that_leaves_a_side_empty_is_refused_before_anything_is_written(
    stub: Stub, dataset: Dataset, server: RunningServer
) -> None:
    before = await snapshot(server)
    result = await _create(stub, dataset.ids()[:3], split=_split(0.1))
    error = stream_error(result)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations(error)] == ["split.validation_fraction"]
    result = await _create(stub, dataset.ids()[:3], split=_split(count=3))
    assert [f for f, _ in field_violations(stream_error(result))] == ["split.validation_count"]
    result = await _create(stub, dataset.ids()[:3], split=resources_pb2.SplitOptions(seed=1))
    assert stream_error(result).code() == grpc.StatusCode.INVALID_ARGUMENT
    await assert_nothing_written(server, before)


async def test_bad_formats_are_invalid_argument_naming_each_one(
    stub: Stub, dataset: Dataset, server: RunningServer
) -> None:
    before = await snapshot(server)
    result = await _create(
        stub,
        dataset.ids()[:2],
        formats=[
            resources_pb2.FILE_FORMAT_UNSPECIFIED,
            99,
            resources_pb2.FILE_FORMAT_DATASET_CARD,
            resources_pb2.FILE_FORMAT_ALPACA,
            resources_pb2.FILE_FORMAT_ALPACA,
        ],
    )
    error = stream_error(result)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations(error)] == [
        "formats[0]",
        "formats[1]",
        "formats[2]",
        "formats[4]",
    ]
    await assert_nothing_written(server, before)


@dataclasses.dataclass(frozen=True)
class Awkward:
    """Conversations whose pairs repeat others', and one with a pair without a target."""

    originals: list[str]
    copies: list[str]
    copied_pairs: int
    untargeted: str


@pytest.fixture(scope="module")
async def awkward(server: RunningServer, storage: Storage) -> Awkward:
    base = list(generate(9101, 4, owners=[OWNER]))
    copies = [
        _renamed(base[0], uuid.uuid4()),
        _renamed(base[1], uuid.uuid4()),
    ]
    document = orjson.loads(base[2].document or b"")
    document["training_pairs"][0]["target_response"] = None
    untargeted = dataclasses.replace(
        _renamed(base[2], uuid.uuid4()), document=orjson.dumps(document)
    )
    await load(
        server.database.pool,
        storage.client,
        storage.conversations_bucket,
        [*base, *copies, untargeted],
    )
    copied = sum(len(orjson.loads(c.document or b"")["training_pairs"]) for c in copies)
    return Awkward(
        [str(c.conversation_id) for c in base],
        [str(c.conversation_id) for c in copies],
        copied,
        str(untargeted.conversation_id),
    )


def _renamed(conversation: GeneratedConversation, new_id: uuid.UUID) -> GeneratedConversation:
    path = f"{conversation.created_by}/{new_id}/enriched.json"
    return dataclasses.replace(conversation, conversation_id=new_id, enriched_file_path=path)


async def test_duplicates_are_counted_and_reported_and_dropped_only_when_asked(
    stub: Stub, awkward: Awkward
) -> None:
    ids = [*awkward.originals, *awkward.copies]
    kept = await _create(stub, ids, formats=[resources_pb2.FILE_FORMAT_OPENAI_CHAT])
    file = kept.training_file
    assert file.duplicate_pair_count == awkward.copied_pairs and not file.duplicates_dropped
    codes = [w.code for w in kept.warnings()]
    assert codes.count("DUPLICATE_PAIRS") == 1
    _, v4 = await _fetch(stub, file.id, JSONL)
    trainable = [p for p in jsonl_records(v4) if _trainable(p)]
    outputs = _outputs(file)
    assert outputs[("openai_chat", ALL)].record_count == len(trainable)

    dropped = await _create_ok(
        stub, ids, formats=[resources_pb2.FILE_FORMAT_OPENAI_CHAT], drop_duplicates=True
    )
    assert dropped.duplicate_pair_count == awkward.copied_pairs and dropped.duplicates_dropped
    _, body = await _fetch(stub, dropped.id, resources_pb2.FILE_FORMAT_OPENAI_CHAT)
    originals = [p for p in trainable if p["conversation_id"] in awkward.originals]
    assert [_target(resources_pb2.FILE_FORMAT_OPENAI_CHAT, r) for r in jsonl_records(body)] == [
        p["target_response"] for p in originals
    ]
    _, v4 = await _fetch(stub, dropped.id, JSONL)
    assert len(jsonl_records(v4)) == dropped.total_training_pairs  # the file of record keeps all
    # Rendered again from the stored file (its stored digests), the duplicates stay out.
    again = await collect(
        stub.ExportTrainingFile(
            service_pb2.ExportTrainingFileRequest(
                training_file_id=dropped.id, formats=[resources_pb2.FILE_FORMAT_OPENAI_CHAT]
            ),
            timeout=TIMEOUT,
        )
    )
    assert again.error is None, again.error
    _, rendered = await _fetch(stub, dropped.id, resources_pb2.FILE_FORMAT_OPENAI_CHAT)
    assert rendered == body


def _first_duplicates(result: StreamResult) -> str:
    """The pair ids a DUPLICATE_PAIRS warning names (the first ones, in file order)."""
    (warning,) = [w for w in result.warnings() if w.code == "DUPLICATE_PAIRS"]
    return warning.message.rsplit("(first: ", 1)[1]


async def test_duplicates_counted_from_the_staged_digests_agree_with_the_counter(
    stub: Stub, awkward: Awkward
) -> None:
    """A build that drops no duplicate from a trainer format counts them in the database
    from its staged digests (after the file's members, for an Add): the same count and
    the same first pairs as the in-memory counter of a build that drops them."""
    ids = [*awkward.originals, *awkward.copies]
    in_memory = await _create(
        stub, ids, formats=[resources_pb2.FILE_FORMAT_OPENAI_CHAT], drop_duplicates=True
    )
    in_database = await _create(stub, ids)  # v4 only
    assert in_memory.error is None and in_database.error is None
    expected = awkward.copied_pairs
    assert in_memory.training_file.duplicate_pair_count == expected > 5
    assert in_database.training_file.duplicate_pair_count == expected
    assert _first_duplicates(in_database) == _first_duplicates(in_memory)
    assert all(c in _first_duplicates(in_memory) for c in awkward.copies[:1])

    base = await _create_ok(stub, awkward.originals)
    assert base.duplicate_pair_count == 0
    added = await add(stub, base.id, awkward.copies)
    assert added.error is None, added.error
    assert added.training_file.duplicate_pair_count == expected
    assert _first_duplicates(added) == _first_duplicates(in_memory)


async def _remove_ok(stub: Stub, file_id: str, ids: Sequence[str]) -> Any:
    request = service_pb2.RemoveConversationsRequest(
        training_file_id=file_id, conversation_ids=list(ids)
    )
    result = await collect(stub.RemoveConversations(request, timeout=TIMEOUT))
    assert result.error is None, f"{result.error.code()}: {result.error.details()}"
    return result


def _content_warnings(result: Any) -> list[tuple[str, str]]:
    return [
        (w.code, w.message)
        for w in result.warnings()
        if w.code in ("DUPLICATE_PAIRS", "PAIRS_WITHOUT_TARGET")
    ]


async def test_a_remove_without_trainer_formats_counts_pairs_as_a_create_does(
    stub: Stub, awkward: Awkward, server: RunningServer
) -> None:
    """A v4-only Remove decodes only the lines of what leaves the file: the duplicates
    (the first ones named in the warning) and the pairs without a target are counted
    as a Create of the remaining conversations counts them, and the v4 objects are a
    Create's byte for byte. So they are when the members' digests were never stored
    (their lines are then decoded to find them)."""
    remaining = [*awkward.originals, *awkward.copies, awkward.untargeted]
    created = await _create_ok(stub, remaining)
    assert created.duplicate_pair_count >= awkward.copied_pairs
    assert created.untrainable_pair_count >= 1
    steps = [[awkward.originals[0]], [awkward.untargeted, awkward.originals[3]], "no digests"]
    for step in steps:
        if step == "no digests":
            await server.database.pool.execute(
                "UPDATE training_file_conversations SET pair_digests = NULL "
                "WHERE training_file_id = $1",
                uuid.UUID(created.id),
            )
            step = [awkward.originals[2]]
        removed = await _remove_ok(stub, created.id, step)
        remaining = [c for c in remaining if c not in step]
        fresh = await _create(stub, remaining)
        after, expected = removed.training_file, fresh.training_file
        assert (after.duplicate_pair_count, after.untrainable_pair_count) == (
            expected.duplicate_pair_count,
            expected.untrainable_pair_count,
        ), step
        assert _content_warnings(removed) == _content_warnings(fresh), step
        assert any(code == "DUPLICATE_PAIRS" for code, _ in _content_warnings(fresh))
        for fmt in (JSONL, resources_pb2.FILE_FORMAT_JSON):
            link, body = await _fetch(stub, after.id, fmt)
            assert hashlib.sha256(body).hexdigest() == link.sha256
            _, reference = await _fetch(stub, expected.id, fmt)
            if fmt != JSONL:
                body, reference = (b[b.index(b'"training_pairs":') :] for b in (body, reference))
            assert body == reference, (step, fmt)
    # What left took untrainable pairs and duplicates with it.
    assert after.untrainable_pair_count < created.untrainable_pair_count
    assert after.duplicate_pair_count < created.duplicate_pair_count


async def test_a_pair_without_a_target_stays_in_v4_and_is_left_out_of_trainer_formats(
    stub: Stub, awkward: Awkward
) -> None:
    result = await _create(stub, [awkward.untargeted], formats=[resources_pb2.FILE_FORMAT_SHAREGPT])
    file = result.training_file
    assert file.untrainable_pair_count == 1
    assert "PAIRS_WITHOUT_TARGET" in [w.code for w in result.warnings()]
    assert _outputs(file)[("sharegpt", ALL)].record_count == file.total_training_pairs - 1
    _, v4 = await _fetch(stub, file.id, JSONL)
    assert [p["target_response"] for p in jsonl_records(v4)].count(None) == 1


async def test_an_export_renders_a_format_from_the_stored_file_without_fetching_documents(
    stub: Stub, server: RunningServer, storage: Storage
) -> None:
    conversations = list(generate(9102, 3, owners=[OWNER]))
    await load(server.database.pool, storage.client, storage.conversations_bucket, conversations)
    ids = [str(c.conversation_id) for c in conversations]
    plain = await _create_ok(stub, ids)
    assert {NAMES[o.format] for o in plain.outputs} == {"v4_json", "v4_jsonl", "dataset_card"}
    reference = await _create_ok(stub, ids, formats=[resources_pb2.FILE_FORMAT_ALPACA])
    # The documents are gone: an export that fetched one would fail.
    await storage.delete(
        storage.conversations_bucket, [c.enriched_file_path or "" for c in conversations]
    )
    result = await collect(
        stub.ExportTrainingFile(
            service_pb2.ExportTrainingFileRequest(
                training_file_id=plain.id, formats=[resources_pb2.FILE_FORMAT_ALPACA]
            ),
            timeout=TIMEOUT,
        )
    )
    assert result.error is None, result.error
    rendering = [m for m in result.messages if m.stage == RENDERING]
    assert rendering and rendering[-1].done == rendering[-1].total == plain.total_training_pairs
    exported = result.training_file
    assert exported.version == plain.version
    assert {NAMES[o.format] for o in exported.outputs} == {
        "v4_json",
        "v4_jsonl",
        "dataset_card",
        "alpaca",
    }
    _, body = await _fetch(stub, exported.id, resources_pb2.FILE_FORMAT_ALPACA)
    _, expected = await _fetch(stub, reference.id, resources_pb2.FILE_FORMAT_ALPACA)
    assert body == expected
    card = _outputs(exported)[("dataset_card", ALL)]
    assert card.object_key != _outputs(plain)[("dataset_card", ALL)].object_key
    _, card_text = await _fetch(stub, exported.id, resources_pb2.FILE_FORMAT_DATASET_CARD)
    assert b"alpaca" in card_text


async def test_an_add_keeps_the_formats_and_the_split_and_renders_them_again(
    stub: Stub, dataset: Dataset, server: RunningServer
) -> None:
    ids = dataset.ids()[40:52]
    created = await _create_ok(
        stub,
        ids[:6],
        formats=[resources_pb2.FILE_FORMAT_CHAT_MESSAGES],
        split=_split(count=2, seed=3),
    )
    result = await collect(
        stub.AddConversations(
            service_pb2.AddConversationsRequest(
                training_file_id=created.id,
                conversation_ids=ids[6:],
                formats=[resources_pb2.FILE_FORMAT_SHAREGPT],
            ),
            timeout=TIMEOUT,
        )
    )
    added = result.training_file
    assert added.split.validation_count == 2 and added.split.seed == 3
    outputs = _outputs(added)
    assert {name for name, _ in outputs} == {
        "v4_json",
        "v4_jsonl",
        "dataset_card",
        "chat_messages",
        "sharegpt",
    }
    for name in ("chat_messages", "sharegpt"):
        assert (
            outputs[(name, TRAIN)].record_count + outputs[(name, VALIDATION)].record_count
            == added.total_training_pairs - added.untrainable_pair_count
        )
    _, jsonl = await _fetch(stub, added.id, JSONL)
    assert hashlib.sha256(jsonl).hexdigest() == outputs[("v4_jsonl", ALL)].sha256
    assert await object_keys(server, f"{created.id}/") == output_keys(added)
    again = await get(stub, created.id)
    assert output_keys(again) == output_keys(added)


async def test_a_link_to_an_output_the_version_does_not_have_is_output_not_produced(
    stub: Stub, every_format: resources_pb2.TrainingFile, dataset: Dataset
) -> None:
    plain = await _create_ok(stub, dataset.ids()[60:62])
    error = await expect_error(_fetch(stub, plain.id, resources_pb2.FILE_FORMAT_PARQUET))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert precondition_violations(error) == [("OUTPUT_NOT_PRODUCED", "parquet/all")]
    error = await expect_error(
        _fetch(stub, every_format.id, resources_pb2.FILE_FORMAT_PARQUET, ALL)
    )
    assert precondition_violations(error) == [("OUTPUT_NOT_PRODUCED", "parquet/all")]
    # Unset split on a split version: the train side.
    response, _ = await _fetch(stub, every_format.id, resources_pb2.FILE_FORMAT_PARQUET)
    assert response.split == TRAIN


async def test_export_arguments_are_checked(
    stub: Stub, every_format: resources_pb2.TrainingFile
) -> None:
    async def export(file_id: str, formats: Sequence[int]) -> grpc.aio.AioRpcError:
        result = await collect(
            stub.ExportTrainingFile(
                service_pb2.ExportTrainingFileRequest(
                    training_file_id=file_id,
                    formats=list(formats),  # type: ignore[arg-type]
                ),
                timeout=TIMEOUT,
            )
        )
        return stream_error(result)

    error = await export(every_format.id, [])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations(error)] == ["formats"]
    error = await export(
        every_format.id, [resources_pb2.FILE_FORMAT_JSONL, resources_pb2.FILE_FORMAT_DATASET_CARD]
    )
    assert [f for f, _ in field_violations(error)] == ["formats[0]", "formats[1]"]
    error = await export("not-a-uuid", [resources_pb2.FILE_FORMAT_ALPACA])
    assert [f for f, _ in field_violations(error)] == ["training_file_id"]
    error = await export(str(uuid.uuid4()), [resources_pb2.FILE_FORMAT_ALPACA])
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_a_list_leaves_outputs_out_unless_asked_for_the_full_view(
    stub: Stub, every_format: resources_pb2.TrainingFile
) -> None:
    async def listed(view: int) -> resources_pb2.TrainingFile:
        request = service_pb2.ListTrainingFilesRequest(page_size=1000, view=view)  # type: ignore[arg-type]
        response = await stub.ListTrainingFiles(request, timeout=TIMEOUT)
        found: resources_pb2.TrainingFile = next(
            f for f in response.training_files if f.id == every_format.id
        )
        return found

    basic = await listed(resources_pb2.TRAINING_FILE_VIEW_UNSPECIFIED)
    assert list(basic.outputs) == [] and basic.version == every_format.version
    assert list((await listed(resources_pb2.TRAINING_FILE_VIEW_BASIC)).outputs) == []
    full = await listed(resources_pb2.TRAINING_FILE_VIEW_FULL)
    assert list(full.outputs) == list(every_format.outputs)
    error = await expect_error(
        stub.ListTrainingFiles(service_pb2.ListTrainingFilesRequest(view=7), timeout=TIMEOUT)  # type: ignore[arg-type]
    )
    assert [f for f, _ in field_violations(error)] == ["view"]


async def test_an_export_racing_an_add_on_the_same_file_loses_neither(
    stub: Stub, dataset: Dataset, server: RunningServer
) -> None:
    """Exports and Adds of one file are serialised: whichever commits second sees the
    other's result, so the exported format ends up holding every pair of the new version."""
    ids = dataset.ids()[70:82]
    created = await _create_ok(stub, ids[:6])
    add = collect(
        stub.AddConversations(
            service_pb2.AddConversationsRequest(
                training_file_id=created.id, conversation_ids=ids[6:]
            ),
            timeout=TIMEOUT,
        )
    )
    export = collect(
        stub.ExportTrainingFile(
            service_pb2.ExportTrainingFileRequest(
                training_file_id=created.id, formats=[resources_pb2.FILE_FORMAT_ALPACA]
            ),
            timeout=TIMEOUT,
        )
    )
    added, exported = await asyncio.gather(add, export)
    assert added.error is None and exported.error is None, (added.error, exported.error)
    final = await get(stub, created.id)
    assert final.version == created.version + 1 and final.conversation_count == 12
    alpaca = _outputs(final)[("alpaca", ALL)]
    _, v4 = await _fetch(stub, final.id, JSONL)
    assert alpaca.record_count == len([p for p in jsonl_records(v4) if _trainable(p)])
    assert await object_keys(server, f"{final.id}/") == output_keys(final)
