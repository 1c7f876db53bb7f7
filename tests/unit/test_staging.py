"""What a build holds per conversation: its targets (fetching.Targets) and the figures
fed one member at a time (staging.Figures), against what they replace."""

from __future__ import annotations

import random
import tracemalloc
import uuid
from collections.abc import Callable
from typing import Any

from trainingfiles_server import aggregate, analytics
from trainingfiles_server.aggregate import ConversationSummary
from trainingfiles_server.fetching import Targets, TargetsBuilder
from trainingfiles_server.models import CandidateConversation
from trainingfiles_server.staging import Figures


def _candidate(conversation_id: uuid.UUID, path: str | None) -> CandidateConversation:
    return CandidateConversation(conversation_id, True, "completed", path, None, False)


def test_targets_give_back_every_id_and_key_whatever_its_shape() -> None:
    rng = random.Random(5)
    owners = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(3)]
    expected: list[tuple[str, str]] = []
    candidates = []
    for i in range(3_000):
        cid = uuid.UUID(int=rng.getrandbits(128))
        shape = i % 6
        if shape == 0:
            path = f"odd/{i}.json"  # no id in it: kept whole
        elif shape == 1:
            path = f"{cid}/{cid}/enriched.json"  # the id twice
        elif shape == 2:
            path = f"{owners[0]}/{str(cid).upper()}/enriched.json"  # not its spelling
        elif shape == 3:
            path = ""
        else:
            path = f"{rng.choice(owners)}/{cid}/enriched.json"  # the SPEC's
        expected.append((str(cid), path))
        candidates.append(_candidate(cid, path))
    targets = Targets(candidates, selected_from=1_000)
    assert len(targets) == len(expected)
    assert [targets.take(i) for i in range(len(targets))] == expected
    assert [targets.selected(i) for i in (0, 999, 1_000, 2_999)] == [False, False, True, True]


def test_targets_beyond_the_templates_are_kept_whole() -> None:
    builder = TargetsBuilder()
    ids = [uuid.uuid4() for _ in range(TargetsBuilder.MAX_TEMPLATES + 10)]
    for i, cid in enumerate(ids):
        builder.add(cid, f"owner{i}/{cid}/enriched.json")  # a template each
    builder.selecting()
    targets = builder.build()
    assert [targets.take(i)[1] for i in range(len(ids))] == [
        f"owner{i}/{cid}/enriched.json" for i, cid in enumerate(ids)
    ]
    assert not targets.selected(len(ids) - 1)


def _cost(make: Callable[[], Any]) -> int:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = make()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert kept is not None
    return after - before


def test_targets_of_the_specs_keys_cost_at_most_24_bytes_a_conversation() -> None:
    """What a selector Create keeps of each conversation it chose until the build ends:
    16 bytes of id and 4 of template (keys `<user_id>/<conversation_id>/enriched.json`)."""
    owner = uuid.uuid4()
    ids = [uuid.uuid4() for _ in range(100_000)]

    def build() -> Targets:
        builder = TargetsBuilder()
        for cid in ids:
            builder.add(cid, f"{owner}/{cid}/enriched.json")
        return builder.build()

    assert _cost(build) / len(ids) <= 24


def _summaries(count: int) -> list[ConversationSummary]:
    rng = random.Random(count)
    summaries = []
    for _ in range(count):
        pairs = rng.randint(1, 9)
        prompt = tuple(rng.randint(10, 3_000) for _ in range(pairs))
        summaries.append(
            ConversationSummary(
                str(uuid.UUID(int=rng.getrandbits(128))),
                pairs,
                rng.choice([1.0, 2.5, 3.25, 4.0, 4.75, 5.0]) + rng.random() / 10,
                rng.random() < 0.3,
                rng.choice("abc"),
                rng.choice("de"),
                rng.choice("fgh"),
                emotions=tuple(rng.choice(["joy", "", "fear"]) for _ in range(pairs)),
                tokenizer="cl100k_base",
                prompt_tokens=prompt,
                completion_tokens=tuple(rng.randint(1, 900) for _ in range(pairs)),
            )
        )
    return summaries


def test_figures_fed_one_member_at_a_time_equal_the_figures_of_the_list() -> None:
    summaries = _summaries(2_000)
    validation = frozenset(uuid.UUID(s.conversation_id) for s in summaries[::7])
    figures = Figures(2_048, validation).extend(summaries)
    assert figures.file_metrics() == aggregate.summarize(summaries)
    assert figures.analytics.result() == analytics.compute(summaries, 2_048)
    sides = figures.sides()
    assert sides is not None
    chosen = [s for s in summaries if uuid.UUID(s.conversation_id) in validation]
    assert (sides.validation_conversations, sides.validation_pairs) == (
        len(chosen),
        sum(s.training_pair_count for s in chosen),
    )
    assert sides.train_conversations == len(summaries) - len(chosen)
    over = [s.conversation_id for s in summaries if max(s.pair_tokens() or [0]) > 2_048]
    assert over and figures.over_context == over
    assert Figures(2_048, None).extend(summaries).sides() is None


def test_figures_do_not_grow_with_the_members_fed() -> None:
    """Counters only: 20,000 members cost the figures no more than 2,000 did (within a
    few kilobytes), where the summaries they replace cost ~60 bytes a member even packed."""
    few, many = _summaries(2_000), _summaries(20_000)

    def fed(summaries: list[ConversationSummary]) -> Callable[[], Figures]:
        return lambda: Figures(1_000_000, None).extend(summaries)

    assert _cost(fed(many)) - _cost(fed(few)) < 64 * 1024
