"""Synthetic enriched conversations for the tests, `make run`'s demo data and benchmarks.

Everything is a pure function of ``(seed, index)``: conversation ``i`` draws from its own
``random.Random`` seeded with ``f"{seed}:{i}"``, so the same arguments give byte-identical
documents and rows, and any conversation can be rebuilt on its own (`generate_one`) — by
a test, or by a benchmark worker process. Which indices get a special `Kind` is drawn once
per run from a separate stream; a conversation's ids, owner and scaffolding do not depend
on its kind (so without special kinds, a shorter run is a prefix of a longer one).

Documents follow the enriched schema v4 (docs/formats.md, "The enriched document"),
compact orjson output of ~38 KiB on average (22–60 KiB: 5–9 pairs, a system prompt
repeated in every pair, a history that grows turn by turn, text in several scripts with
emoji, a raw U+2028 now and then).
Scaffolding comes from a fixed catalogue whose ids are UUIDv5s of the keys, so they are
stable across runs and machines. Roughly 8,000 documents a second on one core.

`generate` is lazy — 50,000 conversations never sit in memory — and `load` streams them
into a bucket and the ``conversations`` table with bounded concurrency.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import random
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

import orjson

if TYPE_CHECKING:
    import asyncpg
    from types_aiobotocore_s3 import S3Client

__all__ = [
    "CONVERSATIONS_BUCKET",
    "EMOTIONAL_ARCS",
    "EXTRA_METADATA_FIELD",
    "EXTRA_PAIR_FIELD",
    "EXTRA_TOP_LEVEL_FIELD",
    "INSERT_CONVERSATIONS",
    "OTHER_VERTICAL",
    "PERSONAS",
    "TRAINING_TOPICS",
    "VERTICAL",
    "Awkward",
    "GeneratedConversation",
    "Kind",
    "LoadResult",
    "Scaffold",
    "consultant_profile",
    "generate",
    "generate_one",
    "load",
]

CONVERSATIONS_BUCKET: Final = "conversation-files"
VERTICAL: Final = "financial_planning_consultant"
#: The vertical of `Kind.OTHER_VERTICAL` documents.
OTHER_VERTICAL: Final = "retirement_income_specialist"
#: Unknown fields that `Kind.EXTRA_FIELDS` documents carry: at the top level, in every
#: pair, and in every pair's ``training_metadata``.
EXTRA_TOP_LEVEL_FIELD: Final = "x_generation_trace"
EXTRA_PAIR_FIELD: Final = "response_strategy"
EXTRA_METADATA_FIELD: Final = "variation_guidance"

#: Listing order must be stable: conversation ``i`` is created at base + ``i`` minutes.
_CREATED_AT_BASE: Final = dt.datetime(2025, 1, 6, 9, 0, tzinfo=dt.UTC)
_CREATED_AT_STEP: Final = dt.timedelta(minutes=1)


class Kind(StrEnum):
    """What is special about a generated conversation.

    The first four are usable: the row is ready and the document valid. The rest are the
    cases the service must refuse or survive.
    """

    ELIGIBLE = "eligible"
    EXTRA_FIELDS = "extra_fields"  # unknown fields that the aggregate must keep
    OTHER_VERTICAL = "other_vertical"  # disagrees with the others: a warning, not an error
    OTHER_PROFILE = "other_profile"  # another consultant_profile: likewise
    NOT_STARTED = "not_started"  # enrichment_status 'not_started', no path
    IN_PROGRESS = "in_progress"  # enrichment_status 'enrichment_in_progress', no path
    NULL_PATH = "null_path"  # 'completed' but enriched_file_path is null
    MISSING_OBJECT = "missing_object"  # the row names a key that is never uploaded
    MALFORMED_JSON = "malformed_json"  # truncated, not UTF-8, or not an object
    MALFORMED_SCHEMA = "malformed_schema"  # valid JSON, one field of the wrong type

    @property
    def row_ready(self) -> bool:
        """Passes the database checks: status 'completed' and a non-null path."""
        return self not in _ROW_NOT_READY

    @property
    def document_valid(self) -> bool:
        """The object exists and validates: the conversation can be aggregated."""
        return self.row_ready and self not in _DOCUMENT_INVALID


_ROW_NOT_READY: Final = frozenset({Kind.NOT_STARTED, Kind.IN_PROGRESS, Kind.NULL_PATH})
_DOCUMENT_INVALID: Final = frozenset(
    {Kind.MISSING_OBJECT, Kind.MALFORMED_JSON, Kind.MALFORMED_SCHEMA}
)


@dataclass(frozen=True, slots=True)
class Awkward:
    """How many conversations of each special `Kind` a run contains (the rest: ELIGIBLE).

    Counts rather than fractions so tests can assert exact numbers; for a large run pass
    e.g. ``count // 100``. Positions are spread at random over the run and depend on its
    ``count``: to take the first conversations of a run, ``islice`` it rather than asking
    for a smaller count.
    """

    extra_fields: int = 0
    other_vertical: int = 0
    other_profile: int = 0
    not_started: int = 0
    in_progress: int = 0
    null_path: int = 0
    missing_object: int = 0
    malformed_json: int = 0
    malformed_schema: int = 0

    def counts(self) -> dict[Kind, int]:
        return {Kind(f.name): getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class Scaffold:
    """A persona, emotional arc or training topic of the fixed catalogue."""

    id: uuid.UUID
    key: str
    name: str


@dataclass(frozen=True, slots=True)
class GeneratedConversation:
    """One ``conversations`` row plus the object to upload for it."""

    index: int
    kind: Kind
    conversation_id: uuid.UUID
    created_by: uuid.UUID
    created_at: dt.datetime
    enrichment_status: str
    file_path: str
    raw_response_path: str
    #: Key in bucket ``conversation-files``: ``<user_id>/<conversation_id>/enriched.json``.
    enriched_file_path: str | None
    persona_id: uuid.UUID
    emotional_arc_id: uuid.UUID
    training_topic_id: uuid.UUID
    #: What to upload at `enriched_file_path`; None means upload nothing.
    document: bytes | None
    #: For malformed kinds, text that the `DocumentError` reason contains (a field path
    #: such as ``training_pairs.2.training_metadata.quality_score``, or ``not UTF-8``).
    defect: str | None = None

    @property
    def label(self) -> str:
        """The human-ish id the document's pairs carry before aggregation."""
        return _label(self.index)

    def row(self) -> tuple[object, ...]:
        """Values for `INSERT_CONVERSATIONS`, in its column order."""
        return (
            self.conversation_id,
            self.file_path,
            self.raw_response_path,
            self.enriched_file_path,
            self.enrichment_status,
            self.persona_id,
            self.emotional_arc_id,
            self.training_topic_id,
            self.created_by,
            self.created_at,
        )


def generate(
    seed: int,
    count: int,
    *,
    owners: Sequence[uuid.UUID],
    awkward: Awkward = Awkward(),  # frozen, so sharing the default is safe
) -> Iterator[GeneratedConversation]:
    """Lazily yield conversations ``0 .. count-1`` for ``seed``.

    Each conversation belongs to one of ``owners`` (drawn per conversation). Arguments are
    checked here, not on the first ``next()``.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if not owners:
        raise ValueError("owners must not be empty")
    counts = awkward.counts()
    if any(n < 0 for n in counts.values()):
        raise ValueError(f"awkward counts must be >= 0, got {awkward}")
    special = sum(counts.values())
    if special > count:
        raise ValueError(f"awkward asks for {special} special conversations out of {count}")
    # One sample of `special` positions; range() keeps it O(special), not O(count).
    positions = random.Random(f"{seed}:placement").sample(range(count), special)
    placement: dict[int, Kind] = {}
    for kind, n in counts.items():
        placement.update(dict.fromkeys(positions[:n], kind))
        positions = positions[n:]
    owners = tuple(owners)
    return (
        generate_one(seed, i, owners=owners, kind=placement.get(i, Kind.ELIGIBLE))
        for i in range(count)
    )


def generate_one(
    seed: int, index: int, *, owners: Sequence[uuid.UUID], kind: Kind = Kind.ELIGIBLE
) -> GeneratedConversation:
    """Conversation ``index`` of ``seed``, as `generate` yields it when it has ``kind``."""
    rng = random.Random(f"{seed}:{index}")
    # Identity first, so ids and scaffolding do not depend on the kind.
    conversation_id = uuid.UUID(int=rng.getrandbits(128), version=4)
    owner = owners[rng.randrange(len(owners))]
    persona = rng.randrange(len(PERSONAS))
    arc = rng.randrange(len(EMOTIONAL_ARCS))
    topic = rng.randrange(len(TRAINING_TOPICS))
    created_at = _CREATED_AT_BASE + index * _CREATED_AT_STEP
    prefix = f"{owner}/{conversation_id}"

    status = "completed"
    enriched_path: str | None = f"{prefix}/enriched.json"
    document: bytes | None = None
    defect: str | None = None
    if kind in (Kind.NOT_STARTED, Kind.IN_PROGRESS, Kind.NULL_PATH):
        enriched_path = None
        if kind is Kind.NOT_STARTED:
            status = "not_started"
        elif kind is Kind.IN_PROGRESS:
            status = "enrichment_in_progress"
    elif kind is not Kind.MISSING_OBJECT:
        doc = _build_document(
            rng, index, created_at, persona, arc, topic, extras=kind is Kind.EXTRA_FIELDS
        )
        if kind is Kind.OTHER_VERTICAL:
            doc["dataset_metadata"]["vertical"] = OTHER_VERTICAL
        elif kind is Kind.OTHER_PROFILE:
            doc["consultant_profile"] = _OTHER_PROFILE
        elif kind is Kind.MALFORMED_SCHEMA:
            defect = _break_schema(rng, doc)
        document = orjson.dumps(doc)
        if kind is Kind.MALFORMED_JSON:
            document, defect = _break_json(rng, document)

    return GeneratedConversation(
        index=index,
        kind=kind,
        conversation_id=conversation_id,
        created_by=owner,
        created_at=created_at,
        enrichment_status=status,
        file_path=f"{prefix}/conversation.json",
        raw_response_path=f"raw/{prefix}/response.json",
        enriched_file_path=enriched_path,
        persona_id=PERSONAS[persona].id,
        emotional_arc_id=EMOTIONAL_ARCS[arc].id,
        training_topic_id=TRAINING_TOPICS[topic].id,
        document=document,
        defect=defect,
    )


def consultant_profile(*, other: bool = False) -> dict[str, Any]:
    """A copy of the profile every document carries (``other``: `Kind.OTHER_PROFILE`'s)."""
    return copy.deepcopy(_OTHER_PROFILE if other else _PROFILE)


# --- loading ------------------------------------------------------------------------

#: Idempotent: re-loading the same run inserts nothing. One statement per batch; unnest()
#: is far cheaper than executemany's round trip per row.
INSERT_CONVERSATIONS: Final = """
INSERT INTO conversations (
    conversation_id, file_path, raw_response_path, enriched_file_path, enrichment_status,
    persona_id, emotional_arc_id, training_topic_id, created_by, created_at
)
SELECT * FROM unnest(
    $1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
    $6::uuid[], $7::uuid[], $8::uuid[], $9::uuid[], $10::timestamptz[]
)
ON CONFLICT (conversation_id) DO NOTHING
"""


@dataclass(frozen=True, slots=True)
class LoadResult:
    conversations: int
    rows_inserted: int  # fewer than `conversations` when some already existed
    objects_uploaded: int
    bytes_uploaded: int


async def load(
    db: asyncpg.Pool[Any] | asyncpg.Connection[Any],
    s3: S3Client,
    bucket: str,
    conversations: Iterable[GeneratedConversation],
    *,
    concurrency: int = 16,
    batch_size: int = 500,
) -> LoadResult:
    """Upload the documents to ``bucket`` and insert the rows into ``conversations``.

    The bucket and the table must exist. A row is inserted only after its object is
    stored, as in production. Memory stays bounded whatever the length of
    ``conversations``: ``concurrency`` uploader tasks read from a queue of that size, and
    one inserter writes ``batch_size`` rows per statement. Re-running is harmless:
    objects are overwritten with the same bytes and existing rows are skipped.
    """
    if concurrency < 1 or batch_size < 1:
        raise ValueError("concurrency and batch_size must be >= 1")
    to_upload: asyncio.Queue[GeneratedConversation | None] = asyncio.Queue(concurrency)
    to_insert: asyncio.Queue[tuple[object, ...] | None] = asyncio.Queue(batch_size)
    uploaded = [0, 0]  # objects, bytes
    inserted = 0

    async def upload() -> None:
        while (conv := await to_upload.get()) is not None:
            if conv.document is not None and conv.enriched_file_path is not None:
                await s3.put_object(
                    Bucket=bucket,
                    Key=conv.enriched_file_path,
                    Body=conv.document,
                    ContentType="application/json",
                )
                uploaded[0] += 1
                uploaded[1] += len(conv.document)
            await to_insert.put(conv.row())

    async def insert() -> None:
        nonlocal inserted
        batch: list[tuple[object, ...]] = []
        while True:
            row = await to_insert.get()
            if row is not None:
                batch.append(row)
            if batch and (row is None or len(batch) >= batch_size):
                columns = list(zip(*batch, strict=True))
                status = await db.execute(INSERT_CONVERSATIONS, *columns)
                inserted += int(status.rsplit(" ", 1)[1])  # "INSERT 0 <n>"
                batch = []
            if row is None:
                return

    total = 0
    try:
        async with asyncio.TaskGroup() as tasks:
            inserter = tasks.create_task(insert())
            uploaders = [tasks.create_task(upload()) for _ in range(concurrency)]
            for conv in conversations:
                total += 1
                await to_upload.put(conv)
            for _ in uploaders:
                await to_upload.put(None)
            await asyncio.wait(uploaders)
            await to_insert.put(None)
            await inserter
    except ExceptionGroup as group:
        # The first failure cancels the rest, so there is one cause worth showing (a
        # missing bucket or table, a refused connection): raise it as itself.
        raise group.exceptions[0] from None
    return LoadResult(total, inserted, uploaded[0], uploaded[1])


# --- documents ----------------------------------------------------------------------


def _label(index: int) -> str:
    return f"conv_{index:05d}"


def _build_document(
    rng: random.Random,
    index: int,
    created_at: dt.datetime,
    persona_index: int,
    arc_index: int,
    topic_index: int,
    *,
    extras: bool,
) -> dict[str, Any]:
    persona, (archetype, background) = PERSONAS[persona_index], _PERSONA_DETAILS[persona_index]
    arc, (start, middle, end) = EMOTIONAL_ARCS[arc_index], _ARC_EMOTIONS[arc_index]
    topic, (difficulty, objective) = TRAINING_TOPICS[topic_index], _TOPIC_DETAILS[topic_index]
    label = _label(index)
    facts = {
        "amount": f"${rng.randrange(8, 400) * 1000:,}",
        "debt": f"${rng.randrange(3, 90) * 1000:,}",
        "rate": f"{rng.randrange(35, 289) / 10:.1f}%",
        "years": str(rng.randrange(3, 30)),
        "age": str(rng.randrange(26, 71)),
        "monthly": f"${rng.randrange(150, 2500):,}",
    }
    turns = rng.randint(5, 9)
    base_quality = rng.uniform(1.3, 4.9)
    reviewed = rng.random() < 0.3
    system_prompt = "\n\n".join(
        (
            _SYSTEM_PROMPT,
            f"## Client\n{persona.name} ({archetype}). {background}",
            f"## Emotional arc: {arc.name}\nFrom {start} through {middle} to {end}.",
            f"## Topic: {topic.name}\nComplexity: {difficulty}. Learning objective: {objective}.",
            rng.choice(_PROMPT_VARIANTS),
        )
    )
    session_context = rng.choice(_SESSION_CONTEXTS)
    expected_outcome = f"Client feels {end} and leaves with one concrete next step on {topic.name}"
    conversation_metadata: dict[str, Any] = {
        "client_persona": f"{persona.name} - {archetype}",
        "persona_archetype": archetype,
        "client_background": background,
        "emotional_arc": arc.name,
        "emotional_arc_key": arc.key,
        "training_topic": topic.name,
        "training_topic_key": topic.key,
        "session_context": session_context,
        "conversation_phase": "",
        "expected_outcome": expected_outcome,
    }
    history: list[dict[str, Any]] = []
    pairs: list[dict[str, Any]] = []
    for turn in range(1, turns + 1):
        progress = (turn - 1) / (turns - 1)
        primary = start if progress < 0.34 else middle if progress < 0.67 else end
        secondary = rng.choice(_SECONDARY_EMOTIONS)
        intensity = round(0.9 - 0.5 * progress + rng.uniform(-0.05, 0.05), 2)
        user_input = _message(rng, _CLIENT_SENTENCES, 1, 3, facts)
        response = _message(rng, _ADVISOR_SENTENCES, 2, 4, facts)
        score = round(min(5.0, max(1.0, base_quality + rng.uniform(-0.4, 0.4))), 1)
        human_reviewed = reviewed and (turn == 1 or rng.random() < 0.5)
        pair: dict[str, Any] = {
            "id": f"{label}_turn{turn}",
            "conversation_id": label,
            "turn_number": turn,
            "conversation_metadata": conversation_metadata
            | {"conversation_phase": _PHASES[min(int(progress * 4), 3)]},
            "system_prompt": system_prompt,
            "conversation_history": list(history),
            "current_user_input": user_input,
            "emotional_context": {
                "detected_emotions": {
                    "primary": primary,
                    "primary_confidence": round(rng.uniform(0.6, 0.95), 2),
                    "secondary": secondary,
                    "secondary_confidence": round(rng.uniform(0.4, 0.8), 2),
                    "intensity": intensity,
                    "valence": "negative"
                    if progress < 0.5
                    else "mixed"
                    if progress < 0.8
                    else "positive",
                },
                "emotional_indicators": rng.sample(_INDICATORS, 3),
            },
            # The pipeline writes null when the turn had no advisor reply.
            "target_response": None if rng.random() < 0.03 else response,
            "training_metadata": {
                "difficulty_level": f"{difficulty}_turn_{turn}",
                "key_learning_objective": objective,
                "demonstrates_skills": rng.sample(_SKILLS, rng.randint(2, 5)),
                "conversation_turn": turn,
                "emotional_progression_target": f"{start}(0.8) → {end}(0.8)",
                "quality_score": score,
                "quality_criteria": {
                    name: round(min(5.0, max(1.0, score + rng.uniform(-0.5, 0.5))), 1)
                    for name in _CRITERIA
                },
                "human_reviewed": human_reviewed,
                "reviewer_notes": rng.choice(_REVIEWER_NOTES) if human_reviewed else None,
                "use_as_seed_example": human_reviewed and score >= 4.5,
                "generate_variations_count": rng.randrange(0, 20) if score >= 4.0 else 0,
            },
        }
        if extras:
            pair[EXTRA_PAIR_FIELD] = {
                "primary_technique": rng.choice(_SKILLS),
                "rationale": "Acknowledge the feeling first; one number, one next step.",
                "weights": [0.5, 0.3, 0.2],
            }
            pair["training_metadata"][EXTRA_METADATA_FIELD] = "Vary the client's wording 🔁"
        pairs.append(pair)
        history.append(
            {
                "turn": turn,
                "role": "user",
                "content": user_input,
                "emotional_state": {"primary": primary, "intensity": intensity},
            }
        )
        history.append({"turn": turn, "role": "assistant", "content": response})

    mean_quality = sum(p["training_metadata"]["quality_score"] for p in pairs) / turns
    document: dict[str, Any] = {
        "dataset_metadata": {
            "dataset_name": f"fp_{label}",
            "version": "4.0.0",
            "created_date": created_at.date().isoformat(),
            "vertical": VERTICAL,
            "consultant_persona": f"{_PROFILE['name']} - {_PROFILE['business']}",
            "target_use": "LoRA fine-tuning for emotionally intelligent chatbot",
            "conversation_source": "synthetic_platform_generated",
            "quality_tier": "seed_dataset"
            if mean_quality >= 4.5
            else "production"
            if mean_quality >= 3.5
            else "experimental",
            "total_conversations": 1,
            "total_turns": turns,
        },
        "consultant_profile": _PROFILE,
        "input_parameters": {
            "persona_id": str(persona.id),
            "persona_key": persona.key,
            "persona_name": persona.name,
            "emotional_arc_id": str(arc.id),
            "emotional_arc_key": arc.key,
            "emotional_arc_name": arc.name,
            "training_topic_id": str(topic.id),
            "training_topic_key": topic.key,
            "training_topic_name": topic.name,
        },
        "training_pairs": pairs,
    }
    if extras:
        document[EXTRA_TOP_LEVEL_FIELD] = {
            "model": "claude-sonnet-4-5",
            "request_id": f"req_{rng.getrandbits(64):016x}",
            "latency_ms": rng.randrange(800, 30000),
            "mixed": [1, 2.5, None, True, "ünïcødé ✓", {"nested": []}],
        }
        document["input_parameters"]["template_id"] = str(uuid.UUID(int=rng.getrandbits(128)))
    return document


def _message(
    rng: random.Random, pool: Sequence[str], low: int, high: int, facts: dict[str, str]
) -> str:
    parts = rng.choices(pool, k=rng.randint(low, high))
    if rng.random() < 0.15:
        parts.append(rng.choice(_MULTILINGUAL))
    if rng.random() < 0.35:
        parts.append(rng.choice(_EMOJI))
    return " ".join(parts).format_map(facts)


def _break_schema(rng: random.Random, doc: dict[str, Any]) -> str:
    """Introduce one wrong type or missing field; return its path as pydantic names it."""
    pairs = doc["training_pairs"]
    i = rng.randrange(len(pairs))
    match rng.randrange(5):
        case 0:
            metadata = pairs[i]["training_metadata"]
            metadata["quality_score"] = str(metadata["quality_score"])
            return f"training_pairs.{i}.training_metadata.quality_score"
        case 1:
            pairs[i]["training_metadata"]["human_reviewed"] = "yes"
            return f"training_pairs.{i}.training_metadata.human_reviewed"
        case 2:
            pairs[i]["turn_number"] = float(pairs[i]["turn_number"])
            return f"training_pairs.{i}.turn_number"
        case 3:
            del doc["input_parameters"]
            return "input_parameters"
        case _:
            doc["training_pairs"] = []
            return "training_pairs"


def _break_json(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    """Make the bytes undecodable; return the start of the reason `DocumentError` gives."""
    match rng.randrange(3):
        case 0:
            return data[: rng.randrange(len(data) // 4, len(data) // 2)], "not valid JSON"
        case 1:
            marker = b'"system_prompt":"'
            cut = data.index(marker) + len(marker)  # inside a string
            return data[:cut] + b"\xff\xfe" + data[cut:], "not UTF-8"
        case _:
            return b"[" + data + b"]", "top level is an array"


# --- catalogue and text -------------------------------------------------------------

_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "urn:trainingfiles:dev:scaffolding")


def _scaffolds(kind: str, entries: Sequence[tuple[str, str]]) -> tuple[Scaffold, ...]:
    return tuple(Scaffold(uuid.uuid5(_NAMESPACE, f"{kind}:{k}"), k, n) for k, n in entries)


PERSONAS: Final = _scaffolds(
    "persona",
    [
        ("overwhelmed_avoider", "Marcus Chen"),
        ("anxious_planner", "Jennifer Martínez"),
        ("pragmatic_optimist", "David Okonkwo"),
        ("recent_widow", "Margaret Thompson"),
        ("new_immigrant_professional", "Priya Raghunathan (प्रिया)"),
        ("gig_economy_worker", "Lukáš Novák"),
        ("sandwich_caregiver", "Ana Lucía Ferreira"),
        ("late_career_catch_up", "Hiroshi Tanaka (田中 浩)"),
    ],
)
_PERSONA_DETAILS: Final = (
    (
        "The Overwhelmed Avoider",
        "Software engineer, 37, high income but has not opened a brokerage statement in "
        "four years; feels that everyone else figured money out in their twenties.",
    ),
    (
        "The Anxious Planner",
        "Pediatric nurse, 44, two children, keeps seven spreadsheets and still lies awake "
        "over whether the family would survive a layoff.",
    ),
    (
        "The Pragmatic Optimist",
        "Owns a small logistics company, 52, comfortable with risk in business, unsure "
        "whether the same instincts belong in a retirement account.",
    ),
    (
        "The Grieving Decision-Maker",
        "Retired teacher, 68, recently widowed; her husband handled every account and she "
        "is meeting the paperwork for the first time.",
    ),
    (
        "The Cross-Border Builder",
        "Data scientist, 31, moved from Bengaluru three years ago, supports parents abroad "
        "and is unsure which country's rules apply to her savings.",
    ),
    (
        "The Irregular Earner",
        "Freelance designer and delivery driver, 29, income swings month to month; has "
        "never had a budget survive more than two weeks.",
    ),
    (
        "The Sandwich Caregiver",
        "Operations manager, 47, paying for a parent's care and a teenager's tuition at the "
        "same time, with her own retirement last in line.",
    ),
    (
        "The Late Starter",
        "Restaurant owner, 58, put everything into the business and has almost nothing in "
        "retirement accounts; ashamed to say the number out loud.",
    ),
)

EMOTIONAL_ARCS: Final = _scaffolds(
    "emotional_arc",
    [
        ("shame_to_acceptance", "Shame → Acceptance"),
        ("anxiety_to_confidence", "Anxiety → Confidence"),
        ("confusion_to_clarity", "Confusion → Clarity"),
        ("fear_to_empowerment", "Fear → Empowerment"),
        ("overwhelm_to_focus", "Overwhelm → Focus"),
        ("grief_to_stability", "Grief → Stability"),
    ],
)
_ARC_EMOTIONS: Final = (
    ("shame", "tentative_openness", "acceptance"),
    ("anxiety", "cautious_hope", "confidence"),
    ("confusion", "curiosity", "clarity"),
    ("fear", "determination", "empowerment"),
    ("overwhelm", "relief", "focus"),
    ("grief", "steadiness", "stability"),
)

TRAINING_TOPICS: Final = _scaffolds(
    "training_topic",
    [
        ("emergency_fund", "Building an Emergency Fund"),
        ("retirement_catch_up", "Retirement Catch-Up Contributions"),
        ("debt_payoff_strategy", "Debt Payoff: Avalanche vs. Snowball"),
        ("mortgage_vs_invest", "Pay Down the Mortgage or Invest?"),
        ("college_savings_529", "College Savings and 529 Plans"),
        ("estate_planning_basics", "Estate Planning Basics"),
        ("tax_efficient_investing", "Tax-Efficient Investing"),
        ("insurance_needs", "Right-Sizing Insurance"),
        ("career_change_finances", "Financing a Career Change"),
        ("inheritance_windfall", "Managing an Inheritance"),
    ],
)
_TOPIC_DETAILS: Final = (
    ("beginner", "explain why three to six months of expenses buys freedom, not just safety"),
    ("intermediate", "show how catch-up contributions change the retirement math after 50"),
    ("intermediate", "compare avalanche and snowball honestly, including the psychology"),
    ("advanced", "weigh a guaranteed return against expected market returns and liquidity"),
    ("intermediate", "connect 529 plan rules to the family's actual timeline and values"),
    ("beginner", "demystify wills, beneficiaries and powers of attorney without fear"),
    ("advanced", "explain asset location and tax-loss harvesting in plain language"),
    ("beginner", "size life and disability cover to real obligations, not sales targets"),
    ("intermediate", "build a runway budget that makes a career change a plan, not a leap"),
    ("advanced", "slow down windfall decisions and separate grief from allocation"),
)

_PROFILE: Final[dict[str, Any]] = {
    "name": "Marisol Adeyemi, CFP®",
    "business": "Northbridge Financial Planning",
    "expertise": "fee-only planning for mid-career professionals and families in transition",
    "years_experience": 16,
    "core_philosophy": {
        "principle_1": "Money is emotional — acknowledge feelings before facts",
        "principle_2": "Create a judgment-free space and normalise struggle explicitly",
        "principle_3": "Education first: teach the why, not just the what",
        "principle_4": "Progress over perfection: celebrate small wins",
        "principle_5": "Decisions follow the client's values, not generic rules",
    },
    "communication_style": {
        "tone": "warm, professional, never condescending",
        "techniques": [
            "name emotions explicitly",
            "use stories and metaphors for complex ideas",
            "give specific numbers instead of abstractions",
            "ask permission before teaching",
        ],
        "avoid": [
            "jargon without explanation",
            "assumptions about what the client knows",
            "judging past decisions",
            "too many options at once",
        ],
    },
}
_OTHER_PROFILE: Final[dict[str, Any]] = {
    "name": "Theo Vasquez-Lindqvist, RICP",
    "business": "Harbor Lane Retirement Advisors",
    "expertise": "retirement income sequencing",
    "years_experience": 22,
    "communication_style": {"tone": "calm and direct", "techniques": [], "avoid": []},
}

_SYSTEM_PROMPT: Final = """\
You are an AI financial planning assistant who responds the way Marisol Adeyemi, CFP®, \
of Northbridge Financial Planning, talks with her clients. Money is emotional: people \
decide with their history, fears and hopes, not with a spreadsheet.

## Principles
1. Acknowledge the feeling before the fact; name shame, fear or grief gently.
2. Judgment-free: normalise struggle, never call a past decision foolish.
3. Ask permission before teaching; explain the why in plain language.
4. Progress over perfection: one small next step the client will actually take.
5. Values first, generic rules of thumb second.

## Boundaries
- Not a substitute for a licensed professional; say so for individual tax or legal advice.
- Never recommend securities, promise returns or pressure.
- In a crisis, pause the financial discussion and point to appropriate help."""

_PROMPT_VARIANTS: Final = (
    "## Reminder\nThe client may switch languages mid-sentence; answer in the language "
    "they used last, and keep numbers in their original currency.",
    "## Reminder\nIf the client's numbers do not add up, do not correct them bluntly; ask "
    "a question that lets them notice it themselves.",
    "## Reminder\nThis client responds well to written summaries. End longer answers with "
    "a three-line recap.",
    "## Reminder\nKeep the tone steady even if the client becomes frustrated. Frustration "
    "is usually fear in disguise.",
)
_SESSION_CONTEXTS: Final = (
    "Evening chat session after the client read an article about retirement shortfalls",
    "Follow-up session two weeks after an initial consultation",
    "First contact through the website's chat widget, late at night",
    "Scheduled video call; the client's partner may join later",
    "Client reached out after receiving an unexpected bill",
)
_PHASES: Final = ("opening", "exploration", "education", "action_planning")
_SECONDARY_EMOTIONS: Final = (
    "embarrassment",
    "frustration",
    "hope",
    "skepticism",
    "relief",
    "guilt",
    "curiosity",
    "fatigue",
)
_INDICATORS: Final = (
    "self-deprecating language",
    "hedging ('I guess', 'maybe')",
    "apologising for asking",
    "specific numbers shared voluntarily",
    "question about next steps",
    "longer, more detailed messages",
    "humour returning",
    "mentions of family responsibilities",
    "comparison with peers",
)
_SKILLS: Final = (
    "emotional_validation",
    "normalising",
    "permission_to_educate",
    "plain_language_explanation",
    "concrete_next_step",
    "values_clarification",
    "scenario_comparison",
    "celebrating_progress",
    "reflective_listening",
    "boundary_setting",
)
_CRITERIA: Final = (
    "empathy_score",
    "clarity_score",
    "appropriateness_score",
    "brand_voice_alignment",
)
_REVIEWER_NOTES: Final = (
    "Strong validation before any numbers; the next step is concrete and small.",
    "Good explanation, but the second option could be cut to keep focus.",
    "Excellent use of the client's own numbers. Tone exactly on brand.",
    "Slightly long; the metaphor works. Consider as a seed example.",
)
# Sentences may use {amount}, {debt}, {rate}, {years}, {age}, {monthly}; no other braces.
_CLIENT_SENTENCES: Final = (
    "I honestly don't even know where to start with this.",
    "I'm {age} and I feel like I'm already too late for everything.",
    "We have about {amount} sitting in a savings account earning basically nothing.",
    "There's still {debt} on the credit cards at {rate}, and it keeps creeping up.",
    "My brother keeps telling me to just buy index funds, but I don't really know what that means.",
    "Every time I open the statement I close it again within a minute.",
    "I'm embarrassed to say this out loud, but I've never actually had a budget.",
    "We could probably set aside {monthly} a month if nothing goes wrong, which it always does.",
    "Is it stupid that I'm more scared of making the wrong move than of doing nothing?",
    "My mom needs more help every month and I can't say no to her.",
    "I keep reading conflicting advice online and it makes me freeze.",
    "What happens if I lose my job in the next {years} years?",
    "I don't want to be the reason my kids have to take out huge loans.",
    "My partner and I argue about money more than anything else.",
    "Okay, that actually makes sense. Can you say a bit more about the first part?",
    "I think I've been avoiding this because I'm afraid of what the numbers will say.",
    'Someone at work said "just max out your 401(k)" like it was obvious.',
    "I got a letter about the account and I don't understand half of the words in it.",
    "Honestly it helps just to hear that other people feel this way.",
    "Would it be crazy to use some of the {amount} to pay off the cards?",
    "I've got maybe {years} years until I want to slow down, if I'm lucky.",
    "Sorry, I know this is probably a basic question.",
    "I tried one of those budgeting apps and deleted it after a week.",
    "The spreadsheet is somewhere in C:\\Users\\me\\Documents\\budget_FINAL_v3.xlsx.",
    "Do I need a will if I don't really own anything fancy?",
    "My income was great in March and terrible in April; that's how it always goes.",
    "When my husband was alive he took care of all of this\u2028and now it's just me.",
)
_ADVISOR_SENTENCES: Final = (
    "Thank you for telling me that; it takes courage to say it out loud.",
    "What you're feeling is incredibly common, and it says nothing about your intelligence.",
    "Let's slow down and take this one piece at a time, there's no rush today.",
    "Before I share any numbers, can I check that I understood what matters most to you?",
    "With {debt} at {rate}, every month that balance costs you real money, and that's worth "
    "attacking first.",
    "Keeping part of the {amount} as an emergency cushion is not wasted money; it's what "
    "lets you sleep at night.",
    "Would it help if I walked through how an index fund works, in plain language?",
    "Think of an emergency fund as a shock absorber: it doesn't make the road smoother, it "
    "makes the bumps survivable.",
    "If you set aside {monthly} a month for {years} years, the arithmetic is more encouraging "
    "than it feels right now.",
    "At {age}, you have more options than the headlines suggest, including catch-up contributions.",
    "None of this requires you to get everything right at once.",
    "You've already done the hardest part, which is looking at it directly.",
    "There are two reasonable paths here, and I'll lay out the trade-offs of each honestly.",
    "The first path pays off the highest-rate balance first, which saves the most interest.",
    "The second path clears the smallest balance first, which gives you momentum and a "
    "visible win.",
    "Neither choice is wrong; the best plan is the one you'll actually stick with.",
    "I'd like to suggest one small step for this week, not a whole overhaul.",
    "Could you find the latest statement and just write down the balance, nothing more?",
    "I'm not able to give individual tax advice here, but I can explain how the rule "
    "generally works.",
    "A licensed professional who sees your whole situation can confirm the details.",
    "It makes complete sense that supporting your family comes first for you.",
    "Let's build the plan around that value instead of around a generic rule of thumb.",
    "How does that land for you, does it feel doable?",
    "If it helps, I can summarise what we've covered in three short lines at the end.",
    "You're not behind; you're starting from where you are, which is the only place anyone "
    "can start.",
    "Progress here is measured in months, not days, and every month counts.",
    "Let's make sure the plan still works in a bad month, not just a good one.",
)
_MULTILINGUAL: Final = (
    "La verdad es que me da vergüenza hablar de dinero, incluso con mi familia.",
    "我父母一直说要存钱，但从来没有人教过我怎么投资。",
    "日本では老後の資金について話すのはまだタブーのような気がします。",
    "أشعر بالقلق من أنني لن أتمكن من التقاعد أبدًا.",
    "Мне кажется, что все вокруг уже разобрались с деньгами, кроме меня.",
    "मुझे समझ नहीं आता कि पहले कर्ज चुकाऊँ या बचत शुरू करूँ।",
    "돈 이야기를 하면 항상 긴장돼요.",
    "Ich weiß nicht, ob ich zuerst die Schulden abbezahlen oder sparen soll.",
    "Η σύνταξή μου μου φαίνεται πολύ μακρινή, αλλά ξέρω ότι δεν είναι.",
    "אני לא בטוחה שאני מבינה את כל המונחים האלה.",
    "Tôi muốn tiết kiệm cho con nhưng không biết bắt đầu từ đâu.",
    "Ninajaribu kuweka akiba kila mwezi lakini ni vigumu.",
)
_EMOJI: Final = (
    "😅",
    "🙏",
    "😬💸",
    "👩‍👩‍👧",
    "🤷🏽‍♀️",
    "📉😰",
    "✅",
    "🌱",
    "👍🏿",
    "🇧🇷",
    "❤️",
    "𝔖𝔬𝔯𝔯𝔶!",
)
