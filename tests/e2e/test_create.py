"""CreateTrainingFile, successful: the progress stream, the stored files and their metadata."""

from __future__ import annotations

import urllib.error
import urllib.parse
import uuid
from dataclasses import dataclass
from datetime import UTC, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import orjson
import pytest

from tests.e2e.conftest import Dataset
from tests.e2e.helpers import (
    ACTIVE,
    AGGREGATING,
    FETCHING,
    JSON,
    JSONL,
    SAVING,
    UPLOADING,
    VALIDATING,
    Download,
    StreamResult,
    Stub,
    conversations_by_id,
    create,
    create_ok,
    document,
    download,
    download_url,
    file_conversations,
    file_row,
    get,
    http_get,
    jsonl_records,
    key_moment,
    object_keys,
    output_keys,
    quality,
    unique_name,
)
from trainingfiles.v1 import resources_pb2, service_pb2
from trainingfiles_dev.generator import (
    EXTRA_METADATA_FIELD,
    EXTRA_PAIR_FIELD,
    VERTICAL,
    Kind,
    consultant_profile,
)
from trainingfiles_server.app import RunningServer


@dataclass(frozen=True)
class Created:
    ids: list[str]
    name: str
    result: StreamResult
    json_url: service_pb2.GetDownloadUrlResponse
    jsonl_url: service_pb2.GetDownloadUrlResponse
    json: Download
    jsonl: Download
    members: list[resources_pb2.TrainingFileConversation]

    @property
    def file(self) -> resources_pb2.TrainingFile:
        return self.result.training_file

    @property
    def document(self) -> dict[str, Any]:
        decoded: dict[str, Any] = orjson.loads(self.json.body)
        return decoded

    @property
    def lines(self) -> list[dict[str, Any]]:
        return jsonl_records(self.jsonl.body)


@pytest.fixture(scope="module")
async def created(stub: Stub, dataset: Dataset) -> Created:
    """One Create of 2 eligible and 2 EXTRA_FIELDS conversations, both files downloaded."""
    eligible, extra = dataset.ids(Kind.ELIGIBLE), dataset.ids(Kind.EXTRA_FIELDS)
    ids = [eligible[0], extra[0], eligible[1], extra[1]]
    name = unique_name("create-happy")
    result = await create(stub, name, ids, description="two plain, two with extra fields")
    assert result.error is None, result.error
    file_id = result.training_file.id
    json_url = await download_url(stub, file_id, JSON)
    jsonl_url = await download_url(stub, file_id, JSONL)
    return Created(
        ids,
        name,
        result,
        json_url,
        jsonl_url,
        await http_get(json_url.url),
        await http_get(jsonl_url.url),
        await file_conversations(stub, file_id),
    )


def _rounded(value: float) -> float:
    return float(Decimal(str(value)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


# ----------------------------------------------------------------- the progress stream


def test_first_message_is_validating_with_the_file_id_and_every_conversation(
    created: Created,
) -> None:
    first = created.result.messages[0]

    assert first.stage == VALIDATING
    assert uuid.UUID(first.training_file_id)
    assert first.done == first.total == len(created.ids)


def test_every_message_carries_the_same_training_file_id(created: Created) -> None:
    assert {m.training_file_id for m in created.result.messages} == {created.file.id}


def test_fetching_messages_count_up_to_the_total_without_going_back(created: Created) -> None:
    fetching = [m for m in created.result.messages if m.stage == FETCHING]

    assert fetching
    assert all(m.total == len(created.ids) and 0 <= m.done <= m.total for m in fetching)
    dones = [m.done for m in fetching]
    assert dones == sorted(dones)
    assert dones[-1] == len(created.ids)


def test_stages_run_in_order_and_end_with_saving(created: Created) -> None:
    stages = [m.stage for m in created.result.messages]
    order = [VALIDATING, FETCHING, AGGREGATING, UPLOADING, SAVING]

    assert stages == sorted(stages, key=order.index)
    assert stages[0] == VALIDATING
    assert stages[-1] == SAVING


def test_only_the_last_message_carries_the_training_file(created: Created) -> None:
    *before, last = created.result.messages

    assert not any(m.HasField("training_file") for m in before)
    assert last.HasField("training_file")


def test_last_message_has_the_active_file_with_its_counts(
    created: Created, dataset: Dataset
) -> None:
    by_id = conversations_by_id(dataset.conversations)
    pairs = sum(len(document(by_id[i])["training_pairs"]) for i in created.ids)
    file = created.file

    assert file.status == ACTIVE
    assert file.name == created.name
    assert file.description == "two plain, two with extra fields"
    assert file.conversation_count == len(created.ids)
    assert file.total_training_pairs == pairs
    assert file.version == 1
    assert file.storage_bucket == "training-files"
    assert file.error_message == ""


async def test_get_returns_what_the_stream_ended_with(created: Created, stub: Stub) -> None:
    assert await get(stub, created.file.id) == created.file


async def test_object_keys_are_under_the_file_id_and_named_after_the_file(
    created: Created, server: RunningServer
) -> None:
    file = created.file
    stem = f"{file.id}/{created.name}_"

    assert file.json_file_path.startswith(stem) and file.json_file_path.endswith(".json")
    assert file.jsonl_file_path == file.json_file_path + "l"
    assert await object_keys(server, f"{file.id}/") == output_keys(file)


# ----------------------------------------------------------------- the stored files


async def test_sizes_agree_between_bytes_url_message_and_row(
    created: Created, server: RunningServer
) -> None:
    row = await file_row(server, created.file.id)

    assert (
        len(created.json.body)
        == created.json_url.size_bytes
        == created.file.json_file_size
        == row["json_file_size"]
    )
    assert (
        len(created.jsonl.body)
        == created.jsonl_url.size_bytes
        == created.file.jsonl_file_size
        == row["jsonl_file_size"]
    )


def test_jsonl_has_one_line_per_training_pair(created: Created) -> None:
    body = created.jsonl.body

    assert body.count(b"\n") == created.file.total_training_pairs
    assert len(created.lines) == created.file.total_training_pairs


def test_json_training_pairs_equal_the_jsonl_lines_in_order(created: Created) -> None:
    assert created.document["training_pairs"] == created.lines


def test_json_dataset_metadata_matches_the_training_file(created: Created) -> None:
    metadata = created.document["dataset_metadata"]
    file = created.file

    assert metadata["dataset_name"] == created.name
    assert metadata["version"] == "4.0.0"
    assert metadata["vertical"] == VERTICAL
    assert metadata["total_conversations"] == file.conversation_count
    assert metadata["total_turns"] == file.total_training_pairs
    assert metadata["quality_summary"] == {
        "avg_quality_score": file.quality_summary.avg_quality_score,
        "min_quality_score": file.quality_summary.min_quality_score,
        "max_quality_score": file.quality_summary.max_quality_score,
        "human_reviewed_count": file.quality_summary.human_reviewed_count,
    }
    distribution = file.scaffolding_distribution
    assert metadata["scaffolding_distribution"] == {
        "personas": dict(distribution.personas),
        "emotional_arcs": dict(distribution.emotional_arcs),
        "training_topics": dict(distribution.training_topics),
    }
    assert created.document["consultant_profile"] == consultant_profile()


def test_quality_summary_is_over_conversations_rounded_half_up(
    created: Created, dataset: Dataset
) -> None:
    by_id = conversations_by_id(dataset.conversations)
    scores = [quality(by_id[i]) for i in created.ids]
    reviewed = sum(
        any(p["training_metadata"]["human_reviewed"] for p in document(by_id[i])["training_pairs"])
        for i in created.ids
    )
    summary = created.file.quality_summary

    assert summary.avg_quality_score == _rounded(sum(scores) / len(scores))
    assert summary.min_quality_score == _rounded(min(scores))
    assert summary.max_quality_score == _rounded(max(scores))
    assert summary.human_reviewed_count == reviewed


def test_scaffolding_distribution_counts_conversations_by_key(
    created: Created, dataset: Dataset
) -> None:
    by_id = conversations_by_id(dataset.conversations)
    expected: dict[str, dict[str, int]] = {"personas": {}, "arcs": {}, "topics": {}}
    for i in created.ids:
        params = document(by_id[i])["input_parameters"]
        for group, key in (
            ("personas", "persona_key"),
            ("arcs", "emotional_arc_key"),
            ("topics", "training_topic_key"),
        ):
            expected[group][params[key]] = expected[group].get(params[key], 0) + 1
    distribution = created.file.scaffolding_distribution

    assert dict(distribution.personas) == expected["personas"]
    assert dict(distribution.emotional_arcs) == expected["arcs"]
    assert dict(distribution.training_topics) == expected["topics"]


def test_content_disposition_names_the_file(created: Created) -> None:
    assert created.json_url.file_name == f"{created.name}.json"
    assert created.jsonl_url.file_name == f"{created.name}.jsonl"
    assert (
        created.json.headers["Content-Disposition"] == f'attachment; filename="{created.name}.json"'
    )
    assert (
        created.jsonl.headers["Content-Disposition"]
        == f'attachment; filename="{created.name}.jsonl"'
    )


def test_pairs_are_named_by_conversation_uuid_and_turn_in_request_order(
    created: Created, dataset: Dataset
) -> None:
    by_id = conversations_by_id(dataset.conversations)
    expected = [
        f"{i}_turn{p['turn_number']}"
        for i in created.ids
        for p in sorted(document(by_id[i])["training_pairs"], key=lambda p: p["turn_number"])
    ]

    assert [line["id"] for line in created.lines] == expected
    assert [line["conversation_id"] for line in created.lines] == [
        name.split("_turn")[0] for name in expected
    ]


def test_each_pair_carries_input_parameters_and_scaffolding_keys(
    created: Created, dataset: Dataset
) -> None:
    by_id = conversations_by_id(dataset.conversations)
    for line in created.lines:
        params = document(by_id[line["conversation_id"]])["input_parameters"]
        assert line["input_parameters"] == params
        metadata = line["conversation_metadata"]
        assert metadata["persona_key"] == params["persona_key"]
        assert metadata["emotional_arc_key"] == params["emotional_arc_key"]
        assert metadata["training_topic_key"] == params["training_topic_key"]


def test_pairs_keep_every_field_of_the_enriched_document(
    created: Created, dataset: Dataset
) -> None:
    """Apart from the rewritten id/conversation_id, a pair is its source, extras included."""
    by_id = conversations_by_id(dataset.conversations)
    extra_ids = set(dataset.ids(Kind.EXTRA_FIELDS)) & set(created.ids)
    assert len(extra_ids) == 2
    for line in created.lines:
        source = {
            p["turn_number"]: p for p in document(by_id[line["conversation_id"]])["training_pairs"]
        }[line["turn_number"]]
        for key, value in source.items():
            if key not in ("id", "conversation_id", "conversation_metadata"):
                assert line[key] == value, key
        assert source["conversation_metadata"].items() <= line["conversation_metadata"].items()
        if line["conversation_id"] in extra_ids:
            assert line[EXTRA_PAIR_FIELD] == source[EXTRA_PAIR_FIELD]
            assert EXTRA_METADATA_FIELD in line["training_metadata"]
            assert "template_id" in line["input_parameters"]


# ----------------------------------------------------------------- warnings


async def test_other_vertical_and_profile_are_warned_about_naming_the_conversation(
    stub: Stub, dataset: Dataset
) -> None:
    eligible = dataset.ids(Kind.ELIGIBLE)
    (other_vertical,) = dataset.ids(Kind.OTHER_VERTICAL)
    (other_profile,) = dataset.ids(Kind.OTHER_PROFILE)
    ids = [eligible[2], other_vertical, eligible[3], other_profile]

    result = await create(stub, unique_name("create-warn"), ids)

    assert result.error is None, result.error
    warnings = [(w.code, list(w.conversation_ids)) for w in result.mismatch_warnings()]
    assert sorted(warnings) == [
        ("CONSULTANT_PROFILE_MISMATCH", [other_profile]),
        ("VERTICAL_MISMATCH", [other_vertical]),
    ]
    assert all(w.message for w in result.warnings())
    assert result.training_file.conversation_count == 4


async def test_the_file_keeps_the_first_conversations_vertical_and_profile(
    stub: Stub, dataset: Dataset
) -> None:
    eligible = dataset.ids(Kind.ELIGIBLE)
    ids = [eligible[4], *dataset.ids(Kind.OTHER_VERTICAL), *dataset.ids(Kind.OTHER_PROFILE)]
    file = await create_ok(stub, unique_name("create-first-wins"), ids)

    url = await download_url(stub, file.id, JSON)
    body = orjson.loads((await http_get(url.url)).body)

    assert body["dataset_metadata"]["vertical"] == VERTICAL
    assert body["consultant_profile"] == consultant_profile()


async def test_consistent_conversations_produce_no_mismatch_warning(
    stub: Stub, dataset: Dataset
) -> None:
    result = await create(stub, unique_name("create-no-warn"), dataset.ids(Kind.ELIGIBLE)[5:8])

    assert result.error is None, result.error
    assert result.mismatch_warnings() == []


# ----------------------------------------------------------------- boundaries


async def test_name_of_128_characters_and_description_of_2000_are_accepted(
    stub: Stub, dataset: Dataset
) -> None:
    name = (unique_name("b") + "x" * 128)[:128]
    description = "é" * 2000
    assert (len(name), len(description)) == (128, 2000)

    file = await create_ok(stub, name, dataset.ids()[8:9], description)

    assert (file.name, file.description) == (name, description)


async def test_name_may_use_every_allowed_character_class(stub: Stub, dataset: Dataset) -> None:
    name = f"_Aa0.-{uuid.uuid4().hex[:8]}.v2"

    file = await create_ok(stub, name, dataset.ids()[9:10])

    assert file.name == name
    assert file.json_file_path.startswith(f"{file.id}/{name}_")


# ----------------------------------------------------------------- the stream's counts


def test_every_message_counts_within_its_total_and_uncounted_stages_send_zero(
    created: Created,
) -> None:
    messages = created.result.messages
    count = len(created.ids)

    assert all(0 <= m.done <= m.total for m in messages)
    assert [m.stage for m in messages].count(VALIDATING) == 1
    aggregating = [m for m in messages if m.stage == AGGREGATING]
    assert aggregating and all(m.total == count for m in aggregating)
    assert aggregating[-1].done == count
    uncounted = [m for m in messages if m.stage in (UPLOADING, SAVING)]
    assert {m.stage for m in uncounted} == {UPLOADING, SAVING}
    assert all((m.done, m.total) == (0, 0) for m in uncounted)


# ----------------------------------------------------------------- what the file records


def test_each_file_conversation_carries_its_summary(created: Created, dataset: Dataset) -> None:
    """ListTrainingFileConversations: per conversation, its pairs, quality (mean of its
    pairs' scores, rounded half-up to 2 places), review flag and scaffolding keys."""
    by_id = conversations_by_id(dataset.conversations)

    listed = created.members

    assert [m.conversation_id for m in listed] == created.ids
    for member in listed:
        source = document(by_id[member.conversation_id])
        pairs = source["training_pairs"]
        params = source["input_parameters"]
        assert member.training_pair_count == len(pairs)
        assert member.quality_score == _rounded(quality(by_id[member.conversation_id]))
        assert member.human_reviewed == any(p["training_metadata"]["human_reviewed"] for p in pairs)
        assert (member.persona_key, member.emotional_arc_key, member.training_topic_key) == (
            params["persona_key"],
            params["emotional_arc_key"],
            params["training_topic_key"],
        )
        assert member.added_by == ""  # a service acting for the system
    # Added together, by the Create's commit.
    added_at = {m.added_at.ToDatetime(tzinfo=UTC) for m in listed}
    assert len(added_at) == 1
    file = created.file
    assert file.created_at.ToDatetime(tzinfo=UTC) <= added_at.pop()


def test_a_file_created_by_a_service_has_no_owner(created: Created) -> None:
    assert created.file.created_by == ""


async def test_a_description_is_unset_when_none_was_given_and_kept_when_empty(
    stub: Stub, dataset: Dataset
) -> None:
    without = await create_ok(stub, unique_name("no-description"), dataset.ids()[10:11])
    empty = await create_ok(stub, unique_name("empty-description"), dataset.ids()[10:11], "")

    assert not without.HasField("description")
    assert not (await get(stub, without.id)).HasField("description")
    assert empty.HasField("description") and empty.description == ""
    assert (await get(stub, empty.id)).HasField("description")


async def test_ids_in_any_spelling_come_back_in_canonical_form(
    stub: Stub, dataset: Dataset
) -> None:
    """UUIDs are answered lower-case and hyphenated, whatever spelling the request used."""
    ids = dataset.ids()[11:13]
    spelled = [ids[0].upper(), ids[1].replace("-", "")]

    file = await create_ok(stub, unique_name("spelling"), spelled)

    assert file.id == str(uuid.UUID(file.id))
    listed = await file_conversations(stub, file.id)
    assert [m.conversation_id for m in listed] == ids
    lines = jsonl_records(await download(stub, file.id, JSONL))
    assert list(dict.fromkeys(line["conversation_id"] for line in lines)) == ids
    assert (await get(stub, file.id.upper())).id == file.id


def test_object_keys_carry_the_utc_moment_the_create_began(created: Created) -> None:
    file = created.file
    file_id, name, moment = key_moment(file.json_file_path)

    assert (file_id, name) == (file.id, created.name)
    assert key_moment(file.jsonl_file_path) == (file_id, name, moment)
    # Stamped as the Create began: just before its row was written.
    recorded = file.created_at.ToDatetime(tzinfo=UTC)
    assert recorded - timedelta(seconds=5) <= moment <= recorded + timedelta(seconds=1)


async def test_the_stored_objects_are_private_without_a_signed_url(created: Created) -> None:
    """The bucket is private: the object's plain URL, without a signature, is refused."""
    plain = created.jsonl_url.url.split("?")[0]
    assert plain.endswith(urllib.parse.quote(created.file.jsonl_file_path))

    with pytest.raises(urllib.error.HTTPError) as refused:
        await http_get(plain)

    refused.value.close()
    assert refused.value.code == 403
