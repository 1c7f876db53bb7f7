"""Filters: a selector's document filters (minimum average quality, human-reviewed only,
emotions) and a file's pair filter (minimum pair quality, reviewed pairs only) keep
exactly what a recomputation from the documents says, count what they leave out, and
keep applying to the file's later versions."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import grpc
import orjson
import pytest

from tests.e2e.helpers import (
    JSONL,
    Stub,
    collect,
    document,
    download,
    error_reason,
    expect_error,
    file_row,
    intent_count,
    jsonl_records,
    object_keys,
    stream_error,
    unique_name,
)
from tests.e2e.test_refresh import Setup, _reenrich_in_place, refresh
from tests.e2e.test_remove import _members
from trainingfiles.v1 import resources_pb2, service_pb2
from trainingfiles_dev.generator import GeneratedConversation, generate, load
from trainingfiles_server.app import RunningServer
from trainingfiles_server.splits import SplitSpec, assign
from trainingfiles_server.storage import Storage

TIMEOUT = 60
JSON = resources_pb2.FILE_FORMAT_JSON
FAILED = resources_pb2.TRAINING_FILE_STATUS_FAILED
# Conversations of an owner of this module only, so a selector sees no other test's.
FILTER_OWNER = uuid.UUID("00000000-0000-4000-8000-0000000f1175")
REFRESH_OWNER = uuid.UUID("00000000-0000-4000-8000-0000000f1176")


@pytest.fixture(scope="module")
async def owned(server: RunningServer, storage: Storage) -> list[GeneratedConversation]:
    """The owner's conversations, oldest first (the order a selector takes them in)."""
    made = list(generate(9431, 40, owners=[FILTER_OWNER]))
    await load(server.database.pool, storage.client, storage.conversations_bucket, made)
    return sorted(made, key=lambda c: (c.created_at, str(c.conversation_id)))


# ------------------------------------------------------------------ the oracle


def _pairs(conversation: GeneratedConversation) -> list[dict[str, Any]]:
    pairs: list[dict[str, Any]] = document(conversation)["training_pairs"]
    return sorted(pairs, key=lambda p: p["turn_number"])


def _mean_quality(pairs: Sequence[dict[str, Any]]) -> float:
    return float(sum(p["training_metadata"]["quality_score"] for p in pairs) / len(pairs))


def _reviewed(pairs: Sequence[dict[str, Any]]) -> bool:
    return any(p["training_metadata"]["human_reviewed"] for p in pairs)


def _emotions(pairs: Sequence[dict[str, Any]]) -> set[str]:
    return {p["emotional_context"]["detected_emotions"]["primary"] for p in pairs}


def _kept_pairs(
    conversation: GeneratedConversation, min_quality: float, reviewed_only: bool
) -> list[dict[str, Any]]:
    return [
        p
        for p in _pairs(conversation)
        if p["training_metadata"]["quality_score"] >= min_quality
        and (p["training_metadata"]["human_reviewed"] or not reviewed_only)
    ]


def _rounded(value: float) -> float:
    return float(Decimal(repr(value)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def _ids(conversations: Sequence[GeneratedConversation]) -> list[str]:
    return [str(c.conversation_id) for c in conversations]


def _warning(
    messages: Sequence[service_pb2.TrainingFileProgress], code: str
) -> service_pb2.ProgressWarning:
    found = [w for m in messages for w in m.warnings if w.code == code]
    assert len(found) == 1, f"{code}: {found}"
    return found[0]


async def _versions(stub: Stub, file_id: str) -> list[resources_pb2.TrainingFileVersion]:
    page = await stub.ListTrainingFileVersions(
        service_pb2.ListTrainingFileVersionsRequest(training_file_id=file_id), timeout=TIMEOUT
    )
    return list(page.versions)


# ------------------------------------------------------------------ document filters


async def test_document_filters_keep_exactly_what_the_documents_say(
    stub: Stub, server: RunningServer, owned: list[GeneratedConversation]
) -> None:
    minimum = 3.0
    expected = [c for c in owned if _mean_quality(_pairs(c)) >= minimum and _reviewed(_pairs(c))]
    assert 0 < len(expected) < len(owned) - 1  # the filters leave some out
    # A listed conversation is never judged by the document filters.
    failing = next(c for c in owned if not _reviewed(_pairs(c)))
    request = service_pb2.CreateTrainingFileRequest(
        name=unique_name("doc-filtered"),
        on_behalf_of=str(FILTER_OWNER),
        conversation_ids=[str(failing.conversation_id)],
        selector=service_pb2.ConversationSelector(
            min_average_quality=minimum, human_reviewed_only=True
        ),
    )
    result = await collect(stub.CreateTrainingFile(request, timeout=TIMEOUT))
    assert result.error is None, result.error
    created = result.training_file
    assert await _members(stub, created.id) == _ids([failing, *expected])
    left_out = [c for c in owned if c not in expected and c is not failing]
    warning = _warning(result.messages, "CONVERSATIONS_FILTERED_OUT")
    assert list(warning.conversation_ids) == _ids(left_out)
    assert f"{len(left_out)} conversation(s)" in warning.message
    assert created.filtered_out_conversation_count == len(left_out)
    assert created.excluded_pair_count == 0
    [version] = await _versions(stub, created.id)
    assert version.filtered_out_conversation_count == len(left_out)
    row = await file_row(server, created.id)
    assert row["filtered_out_conversation_count"] == len(left_out)
    assert created.conversation_count == len(expected) + 1

    # Emotions: a conversation matches when some pair's primary emotion is named.
    emotion = sorted(_emotions(_pairs(owned[0])))[0]
    matching = [c for c in owned if emotion in _emotions(_pairs(c))]
    assert 0 < len(matching) < len(owned)
    by_emotion = service_pb2.CreateTrainingFileRequest(
        name=unique_name("emotion"),
        on_behalf_of=str(FILTER_OWNER),
        selector=service_pb2.ConversationSelector(emotions=[emotion, "no-such-emotion"]),
    )
    result = await collect(stub.CreateTrainingFile(by_emotion, timeout=TIMEOUT))
    assert result.error is None, result.error
    assert await _members(stub, result.training_file.id) == _ids(matching)
    assert result.training_file.filtered_out_conversation_count == len(owned) - len(matching)


async def test_filters_that_leave_nothing_fail_cleanly(
    stub: Stub, server: RunningServer, owned: list[GeneratedConversation]
) -> None:
    assert all(_mean_quality(_pairs(c)) < 5.0 for c in owned)
    request = service_pb2.CreateTrainingFileRequest(
        name=unique_name("nothing-left"),
        on_behalf_of=str(FILTER_OWNER),
        selector=service_pb2.ConversationSelector(min_average_quality=5.0),
    )
    result = await collect(stub.CreateTrainingFile(request, timeout=TIMEOUT))
    error = stream_error(result)
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(error) == "ALL_CONVERSATIONS_FILTERED_OUT"
    file_id = result.training_file_id
    assert (await file_row(server, file_id))["status"] == "failed"
    assert await object_keys(server, f"{file_id}/") == set()
    assert await intent_count(server, file_id) == 0

    # An Add of nothing that passes changes nothing.
    base = await collect(
        stub.CreateTrainingFile(
            service_pb2.CreateTrainingFileRequest(
                name=unique_name("base"), conversation_ids=_ids(owned[:1])
            ),
            timeout=TIMEOUT,
        )
    )
    before = base.training_file
    add = service_pb2.AddConversationsRequest(
        training_file_id=before.id,
        selector=service_pb2.ConversationSelector(owner=str(FILTER_OWNER), min_average_quality=5.0),
    )
    error = stream_error(await collect(stub.AddConversations(add, timeout=TIMEOUT)))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(error) == "ALL_CONVERSATIONS_FILTERED_OUT"
    assert await _members(stub, before.id) == _ids(owned[:1])
    assert len(await _versions(stub, before.id)) == 1
    assert await object_keys(server, f"{before.id}/") == {o.object_key for o in before.outputs}

    # A listing does not read documents: it refuses their filters.
    listing = await expect_error(
        stub.ListEligibleConversations(
            service_pb2.ListEligibleConversationsRequest(
                selector=service_pb2.ConversationSelector(
                    owner=str(FILTER_OWNER), human_reviewed_only=True
                )
            ),
            timeout=TIMEOUT,
        )
    )
    assert listing.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(listing) == "DOCUMENT_FILTER_NOT_LISTABLE"

    bad = service_pb2.CreateTrainingFileRequest(
        name=unique_name("bad-filter"),
        conversation_ids=_ids(owned[:1]),
        pair_filter=resources_pb2.PairFilter(min_quality=-1),
    )
    error = stream_error(await collect(stub.CreateTrainingFile(bad, timeout=TIMEOUT)))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT


# ------------------------------------------------------------------ the pair filter


def _check_pairs(
    body_jsonl: bytes,
    body_json: bytes,
    members: Sequence[GeneratedConversation],
    min_quality: float,
    reviewed_only: bool,
) -> None:
    expected = [
        (str(c.conversation_id), p["turn_number"])
        for c in members
        for p in _kept_pairs(c, min_quality, reviewed_only)
    ]
    lines = jsonl_records(body_jsonl)
    assert [(r["conversation_id"], r["id"].rsplit("_turn", 1)[1]) for r in lines] == [
        (c, str(t)) for c, t in expected
    ]
    whole = orjson.loads(body_json)
    assert [p["id"] for p in whole["training_pairs"]] == [r["id"] for r in lines]
    kept = [_kept_pairs(c, min_quality, reviewed_only) for c in members]
    qualities = [_mean_quality(k) for k in kept]
    summary = whole["dataset_metadata"]["quality_summary"]
    assert summary["avg_quality_score"] == _rounded(sum(qualities) / len(qualities))
    assert summary["min_quality_score"] == _rounded(min(qualities))
    assert summary["max_quality_score"] == _rounded(max(qualities))
    assert summary["human_reviewed_count"] == sum(_reviewed(k) for k in kept)
    assert whole["dataset_metadata"]["total_turns"] == len(expected)
    assert whole["dataset_metadata"]["total_conversations"] == len(members)


async def test_a_pair_filter_leaves_out_exactly_the_pairs_below_it(
    stub: Stub, server: RunningServer, owned: list[GeneratedConversation]
) -> None:
    minimum = 3.5
    listed = owned[:20]
    members = [c for c in listed if _kept_pairs(c, minimum, False)]
    emptied = [c for c in listed if c not in members]
    assert emptied and len(members) > 2  # some lose every pair, some keep a few
    excluded = sum(len(_pairs(c)) - len(_kept_pairs(c, minimum, False)) for c in listed)
    request = service_pb2.CreateTrainingFileRequest(
        name=unique_name("pair-filtered"),
        conversation_ids=_ids(listed),
        pair_filter=resources_pb2.PairFilter(min_quality=minimum),
    )
    result = await collect(stub.CreateTrainingFile(request, timeout=TIMEOUT))
    assert result.error is None, result.error
    created = result.training_file
    assert await _members(stub, created.id) == _ids(members)
    assert created.excluded_pair_count == excluded
    assert created.filtered_out_conversation_count == len(emptied)
    assert created.pair_filter == resources_pb2.PairFilter(min_quality=minimum)
    assert str(excluded) in _warning(result.messages, "PAIRS_EXCLUDED").message
    assert list(_warning(result.messages, "CONVERSATIONS_FILTERED_OUT").conversation_ids) == (
        _ids(emptied)
    )
    _check_pairs(
        await download(stub, created.id, JSONL),
        await download(stub, created.id, JSON),
        members,
        minimum,
        False,
    )
    # The row and the stored files agree.
    row = await file_row(server, created.id)
    kept_total = sum(len(_kept_pairs(c, minimum, False)) for c in members)
    assert row["total_training_pairs"] == created.total_training_pairs == kept_total
    assert row["excluded_pair_count"] == excluded

    # An Add applies the file's filter; another filter is refused.
    more = owned[20:26]
    mismatch = await collect(
        stub.AddConversations(
            service_pb2.AddConversationsRequest(
                training_file_id=created.id,
                conversation_ids=_ids(more),
                pair_filter=resources_pb2.PairFilter(min_quality=minimum, reviewed_only=True),
            ),
            timeout=TIMEOUT,
        )
    )
    error = stream_error(mismatch)
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(error) == "PAIR_FILTER_MISMATCH"
    added = await collect(
        stub.AddConversations(
            service_pb2.AddConversationsRequest(
                training_file_id=created.id, conversation_ids=_ids(more)
            ),
            timeout=TIMEOUT,
        )
    )
    assert added.error is None, added.error
    more_members = [c for c in more if _kept_pairs(c, minimum, False)]
    everyone = [*members, *more_members]
    assert await _members(stub, created.id) == _ids(everyone)
    _check_pairs(
        await download(stub, created.id, JSONL),
        await download(stub, created.id, JSON),
        everyone,
        minimum,
        False,
    )
    added_excluded = sum(len(_pairs(c)) - len(_kept_pairs(c, minimum, False)) for c in more)
    newest, first = await _versions(stub, created.id)
    assert (newest.excluded_pair_count, first.excluded_pair_count) == (added_excluded, excluded)
    assert newest.filtered_out_conversation_count == len(more) - len(more_members)


async def test_reviewed_pairs_only_and_an_add_by_selector_keep_the_filter(
    stub: Stub, owned: list[GeneratedConversation]
) -> None:
    reviewed = [c for c in owned if _reviewed(_pairs(c))]
    assert len(reviewed) > 3
    first = reviewed[0]
    request = service_pb2.CreateTrainingFileRequest(
        name=unique_name("reviewed-pairs"),
        on_behalf_of=str(FILTER_OWNER),
        conversation_ids=_ids([first]),
        pair_filter=resources_pb2.PairFilter(reviewed_only=True),
    )
    created = (await collect(stub.CreateTrainingFile(request, timeout=TIMEOUT))).training_file
    add = service_pb2.AddConversationsRequest(
        training_file_id=created.id,
        selector=service_pb2.ConversationSelector(human_reviewed_only=True),
        pair_filter=resources_pb2.PairFilter(reviewed_only=True),  # the file's: accepted
    )
    added = await collect(stub.AddConversations(add, timeout=TIMEOUT))
    assert added.error is None, added.error
    # Every unreviewed conversation fails the selector; the reviewed ones keep only
    # their reviewed pairs.
    assert await _members(stub, created.id) == _ids(reviewed)
    records = jsonl_records(await download(stub, created.id, JSONL))
    assert len(records) == sum(len(_kept_pairs(c, 0, True)) for c in reviewed)
    assert all(r["training_metadata"]["human_reviewed"] for r in records)
    unreviewed = len(owned) - len(reviewed)
    assert added.training_file.filtered_out_conversation_count == unreviewed


# ------------------------------------------------------------------ refresh


@pytest.fixture(scope="module")
async def refreshing(stub: Stub, server: RunningServer, storage: Storage) -> Setup:
    """Conversations of this test only (it re-enriches one), of an owner of their own."""
    made = list(generate(9433, 4, owners=[REFRESH_OWNER]))
    await load(server.database.pool, storage.client, storage.conversations_bucket, made)
    return Setup(stub, server, storage, made)


async def test_a_refresh_applies_the_files_pair_filter(refreshing: Setup) -> None:
    setup = refreshing
    stub, chosen = setup.stub, setup.conversations
    minimum = 2.0
    members = [c for c in chosen if _kept_pairs(c, minimum, False)]
    assert len(members) > 2
    request = service_pb2.CreateTrainingFileRequest(
        name=unique_name("refresh-filtered"),
        conversation_ids=_ids(members),
        pair_filter=resources_pb2.PairFilter(min_quality=minimum),
    )
    created = (await collect(stub.CreateTrainingFile(request, timeout=TIMEOUT))).training_file
    target, emptied = members[0], members[1]
    await _reenrich_in_place(setup, target)
    # Re-enriched with every pair below the filter: it leaves the file.
    lowered = document(emptied)
    for pair in lowered["training_pairs"]:
        pair["training_metadata"]["quality_score"] = 1.0
    key = f"{emptied.created_by}/{emptied.conversation_id}/enriched-low.json"
    await setup.storage.client.put_object(
        Bucket=setup.storage.conversations_bucket, Key=key, Body=orjson.dumps(lowered)
    )
    await setup.server.database.pool.execute(
        "UPDATE conversations SET enriched_file_path = $2 WHERE conversation_id = $1",
        emptied.conversation_id,
        key,
    )
    result = await refresh(stub, created.id)
    assert result.error is None, result.error
    remaining = [c for c in members if c is not emptied]
    assert await _members(stub, created.id) == _ids(remaining)
    assert result.training_file.filtered_out_conversation_count == 1
    warning = _warning(result.messages, "CONVERSATIONS_FILTERED_OUT")
    assert list(warning.conversation_ids) == _ids([emptied])
    records = jsonl_records(await download(stub, created.id, JSONL))
    assert len(records) == sum(len(_kept_pairs(c, minimum, False)) for c in remaining)
    assert all(r["training_metadata"]["quality_score"] >= minimum for r in records)
    refreshed = [r for r in records if r["conversation_id"] == str(target.conversation_id)]
    assert refreshed and all(r["target_response"].startswith("Reworded:") for r in refreshed)
    newest = (await _versions(stub, created.id))[0]
    assert newest.reason == resources_pb2.VERSION_REASON_REFRESHED
    assert newest.excluded_pair_count == len(_pairs(target)) - len(
        _kept_pairs(target, minimum, False)
    ) + len(_pairs(emptied))


async def test_a_split_is_drawn_before_the_filters(
    stub: Stub, owned: list[GeneratedConversation]
) -> None:
    minimum = 3.5
    listed = owned[:20]
    members = [c for c in listed if _kept_pairs(c, minimum, False)]
    spec = SplitSpec(validation_count=6, seed=7)
    drawn = assign([(c.conversation_id, None) for c in listed], spec)
    validation = [c for c in members if c.conversation_id in drawn]
    assert 0 < len(validation) < len(drawn)  # the filter left some of the side out
    request = service_pb2.CreateTrainingFileRequest(
        name=unique_name("split-filtered"),
        conversation_ids=_ids(listed),
        pair_filter=resources_pb2.PairFilter(min_quality=minimum),
        formats=[resources_pb2.FILE_FORMAT_OPENAI_CHAT],
        split=resources_pb2.SplitOptions(validation_count=6, seed=7),
    )
    created = (await collect(stub.CreateTrainingFile(request, timeout=TIMEOUT))).training_file
    [output] = [
        o
        for o in created.outputs
        if (o.format, o.split)
        == (resources_pb2.FILE_FORMAT_OPENAI_CHAT, resources_pb2.SPLIT_VALIDATION)
    ]
    trainable = [
        p
        for c in validation
        for p in _kept_pairs(c, minimum, False)
        if p["target_response"] is not None
    ]
    assert output.record_count == len(trainable)


LISTED_OWNER = uuid.UUID("00000000-0000-4000-8000-0000000f1177")


async def test_a_listing_gives_the_quality_a_build_found_in_the_current_document(
    stub: Stub, server: RunningServer, storage: Storage
) -> None:
    made = sorted(
        generate(9439, 4, owners=[LISTED_OWNER]),
        key=lambda c: (c.created_at, str(c.conversation_id)),
    )
    await load(server.database.pool, storage.client, storage.conversations_bucket, made)
    plain, reenriched, pair_filtered, never_built = made
    for ids, kept in (([plain, reenriched], None), ([pair_filtered], 1.0)):
        request = service_pb2.CreateTrainingFileRequest(
            name=unique_name("listed"), conversation_ids=_ids(ids)
        )
        if kept is not None:
            request.pair_filter.min_quality = kept
        result = await collect(stub.CreateTrainingFile(request, timeout=TIMEOUT))
        assert result.error is None, result.error
    # Re-enriched at a new key: what the build found is no longer its document.
    key = f"{reenriched.created_by}/{reenriched.conversation_id}/enriched-v2.json"
    assert reenriched.document is not None
    await storage.client.put_object(
        Bucket=storage.conversations_bucket, Key=key, Body=reenriched.document
    )
    await server.database.pool.execute(
        "UPDATE conversations SET enriched_file_path = $2 WHERE conversation_id = $1",
        reenriched.conversation_id,
        key,
    )
    page = await stub.ListEligibleConversations(
        service_pb2.ListEligibleConversationsRequest(
            selector=service_pb2.ConversationSelector(owner=str(LISTED_OWNER))
        ),
        timeout=TIMEOUT,
    )
    listed = {c.conversation_id: c for c in page.conversations}
    assert set(listed) == set(_ids(made))
    known = listed[str(plain.conversation_id)]
    assert known.HasField("quality_score") and known.HasField("training_pair_count")
    assert known.quality_score == _rounded(_mean_quality(_pairs(plain)))
    assert known.training_pair_count == len(_pairs(plain))
    for unknown in (reenriched, pair_filtered, never_built):
        shown = listed[str(unknown.conversation_id)]
        assert not shown.HasField("quality_score"), unknown
        assert not shown.HasField("training_pair_count"), unknown
