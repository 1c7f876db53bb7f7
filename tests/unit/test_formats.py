"""The trainer formats: exact bytes, one record per pair, and the real loaders read them.

Golden files under `tests/unit/golden/<format>.jsonl` hold the exact output for
`GOLDEN_PAIRS` (checked by hand; see docs/formats.md for the rules they follow). The
property test feeds generated pairs; the loader tests write the formats of generated
conversations and read them back with `datasets` and `pyarrow`, and the OpenAI checks are
those of OpenAI's cookbook "Data preparation and analysis for chat model fine-tuning".
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

# Untyped; `unused-ignore` keeps this right if pyproject lists them under the overrides.
import datasets  # type: ignore[import-untyped, unused-ignore]
import orjson
import pyarrow.json as pa_json  # type: ignore[import-untyped, unused-ignore]
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from trainingfiles_dev.generator import generate
from trainingfiles_server.aggregate import transform_conversation
from trainingfiles_server.documents import decode_json_object, validate_enriched_document
from trainingfiles_server.formats import FORMATS, Format, Pair, by_name, by_proto, trainable
from trainingfiles_server.formats.alpaca import ALPACA
from trainingfiles_server.formats.chat import CHAT_MESSAGES, PROMPT_COMPLETION
from trainingfiles_server.formats.messages import dialogue
from trainingfiles_server.formats.openai_chat import OPENAI_CHAT
from trainingfiles_server.formats.sharegpt import SHAREGPT

# Hypothesis would otherwise keep a cache in `.hypothesis/` of the working directory.
if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
    _HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="trainingfiles-hypothesis-")
    atexit.register(shutil.rmtree, _HYPOTHESIS_HOME, ignore_errors=True)
    set_hypothesis_home_dir(_HYPOTHESIS_HOME)

TRAINER_FORMATS = (OPENAI_CHAT, CHAT_MESSAGES, PROMPT_COMPLETION, SHAREGPT, ALPACA)
GOLDEN = Path(__file__).parent / "golden"

SYSTEM = "You are Marisol, a CFP®.\nAcknowledge the feeling first."
_METADATA = {
    "client_persona": "Lukáš Novák - The Irregular Earner",
    "persona_key": "irregular_earner",
    "emotional_arc_key": "overwhelm_to_focus",
    "training_topic_key": "college_savings",
}
_TRAINING_METADATA = {
    "difficulty_level": "intermediate_turn_3",
    "quality_score": 4.2,
    "human_reviewed": False,
    "demonstrates_skills": ["validation"],
}
_INPUT_PARAMETERS = {"persona_key": "irregular_earner", "training_topic_key": "college_savings"}


def _pair(
    turn: int, history: list[Any], user: str, target: str | None, system: str
) -> dict[str, Any]:
    conversation = "2f1e0c9a-6b1d-4c55-9d0e-5a8f3b7c2e11"
    return {
        "id": f"{conversation}_turn{turn}",
        "conversation_id": conversation,
        "turn_number": turn,
        "conversation_metadata": _METADATA,
        "system_prompt": system,
        "conversation_history": history,
        "current_user_input": user,
        "emotional_context": {"detected_emotions": {"primary": "overwhelm", "intensity": 0.8}},
        "target_response": target,
        "training_metadata": _TRAINING_METADATA,
        "input_parameters": _INPUT_PARAMETERS,
    }


# A third turn as the pipeline writes it: Unicode in every script it meets, a raw U+2028,
# an unknown extra field (ignored by every trainer format).
PAIR_THREE_TURNS = _pair(
    3,
    [
        {
            "turn": 1,
            "role": "user",
            "content": "I earn €2,400 one month and €600 the next 😩",
            "emotional_state": {"primary": "overwhelm", "intensity": 0.85},
        },
        {"turn": 1, "role": "assistant", "content": "That swing is exhausting.\nLet's look."},
        {
            "turn": 2,
            "role": "user",
            "content": "学费 is coming in 12 years\u2028and I have nothing saved.",
            "emotional_state": {"primary": "fear", "intensity": 0.7},
        },
        {
            "turn": 2,
            "role": "assistant",
            "content": 'Twelve years is real time. "Nothing" is a start.',
        },
    ],
    "Where do I even begin? Ça me dépasse.",
    "Begin with one number: your lowest month. 🙂 We plan from there.",
    SYSTEM,
) | {"response_strategy": {"primary_technique": "validation", "weights": [0.5, 0.5]}}

# A first turn without a system prompt: no system message, Alpaca's input as it is.
PAIR_FIRST_TURN = _pair(1, [], "Is a 529 plan worth it?", "It can be — let's see why.", "")

# A history that is not the pipeline's: other role names, a non-dict item, an empty
# turn, and a lost reply (two client turns in a row, then the current input).
PAIR_AWKWARD_HISTORY = _pair(
    4,
    [
        {"turn": 1, "role": "client", "content": "Hello?"},
        "not a turn",
        {"turn": 1, "role": "consultant", "content": "Hi, I'm here."},
        {"turn": 2, "role": "assistant", "content": ""},
        {"turn": 2, "speaker": "user", "content": "My rate is 24.9%."},
        {"turn": 3, "role": "user", "content": "Still there?"},
    ],
    "Should I pay it first?",
    "Yes: 24.9% is the most expensive money you have.",
    SYSTEM,
)

GOLDEN_PAIRS = (PAIR_THREE_TURNS, PAIR_FIRST_TURN, PAIR_AWKWARD_HISTORY)


def render(fmt: Format, pairs: Iterable[Pair]) -> bytes:
    assert fmt.new_renderer is not None
    renderer = fmt.new_renderer()
    out = b"".join(renderer.feed(pair) for pair in pairs)
    return out + renderer.close()


# --- the registry ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", TRAINER_FORMATS, ids=lambda f: f.name)
def test_each_format_is_registered_as_jsonl_with_card_features(fmt: Format) -> None:
    assert FORMATS[fmt.name] is fmt
    assert by_name(fmt.name) is fmt
    assert by_proto(fmt.proto_value) is fmt
    assert (fmt.extension, fmt.content_type) == ("jsonl", "application/x-ndjson")
    assert fmt.splittable
    assert fmt.summary
    assert "\n" not in fmt.summary
    assert fmt.features is not None
    # What the card's `dataset_info.features` says parses back, and means the same.
    features = datasets.Features._from_yaml_list(fmt.features)
    assert features._to_yaml_list() == fmt.features


def test_proto_values_are_the_briefed_ones() -> None:
    assert {f.name: f.proto_value for f in TRAINER_FORMATS} == {
        "openai_chat": 3,
        "chat_messages": 4,
        "prompt_completion": 5,
        "sharegpt": 6,
        "alpaca": 7,
    }


# --- exact bytes -----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", TRAINER_FORMATS, ids=lambda f: f.name)
def test_golden_bytes(fmt: Format) -> None:
    expected = (GOLDEN / f"{fmt.name}.jsonl").read_bytes()
    assert render(fmt, GOLDEN_PAIRS) == expected
    assert not expected.startswith(b"\xef\xbb\xbf")
    assert expected.count(b"\n") == len(GOLDEN_PAIRS)


def test_the_awkward_history_follows_the_documented_rules() -> None:
    # Written out: "client" is the user, "consultant" the assistant, the string and the
    # empty turn are dropped, a missing role is the user's, and consecutive user turns
    # (with the current input) become one, joined by a blank line.
    assert dialogue(PAIR_AWKWARD_HISTORY) == [
        ("user", "Hello?"),
        ("assistant", "Hi, I'm here."),
        ("user", "My rate is 24.9%.\n\nStill there?\n\nShould I pay it first?"),
    ]
    assert orjson.loads(render(ALPACA, [PAIR_AWKWARD_HISTORY]))["input"] == (
        "User: Hello?\nAssistant: Hi, I'm here.\n\n"
        "User: My rate is 24.9%.\n\nStill there?\n\nShould I pay it first?"
    )


def test_openai_weights_only_the_target() -> None:
    messages = orjson.loads(render(OPENAI_CHAT, [PAIR_THREE_TURNS]))["messages"]
    assert [(m["role"], m.get("weight")) for m in messages] == [
        ("system", None),
        ("user", None),
        ("assistant", 0),
        ("user", None),
        ("assistant", 0),
        ("user", None),
        ("assistant", 1),
    ]


def test_prompt_completion_splits_before_the_target() -> None:
    record = orjson.loads(render(PROMPT_COMPLETION, [PAIR_THREE_TURNS]))
    chat = orjson.loads(render(CHAT_MESSAGES, [PAIR_THREE_TURNS]))["messages"]
    assert record["prompt"] + record["completion"] == chat
    assert record["completion"] == [
        {"role": "assistant", "content": PAIR_THREE_TURNS["target_response"]}
    ]


def test_close_adds_nothing_and_renderers_are_independent() -> None:
    for fmt in TRAINER_FORMATS:
        assert fmt.new_renderer is not None
        first, second = fmt.new_renderer(), fmt.new_renderer()
        assert first.feed(PAIR_FIRST_TURN) == second.feed(PAIR_FIRST_TURN)
        assert first.close() == b""


# --- every pair, one line --------------------------------------------------------------

_text = st.text(st.characters(codec="utf-8"), max_size=40)
_history_item = st.one_of(
    st.fixed_dictionaries(
        {
            "turn": st.integers(1, 20),
            "role": st.sampled_from(["user", "assistant", "client", "consultant", "system"]),
            "content": _text,
        },
        optional={"emotional_state": st.just({"primary": "calm", "intensity": 0.5})},
    ),
    st.dictionaries(st.sampled_from(["role", "content", "x"]), st.none() | _text, max_size=3),
    st.none() | st.integers() | _text,
)
_pairs = st.lists(
    st.fixed_dictionaries(
        {
            "id": _text,
            "conversation_id": _text,
            "turn_number": st.integers(1, 50),
            "conversation_metadata": st.just(_METADATA),
            "system_prompt": _text,
            "conversation_history": st.lists(_history_item, max_size=8),
            "current_user_input": _text,
            "emotional_context": st.just({}),
            "target_response": _text.filter(bool),
            "training_metadata": st.just(_TRAINING_METADATA),
            "input_parameters": st.just(_INPUT_PARAMETERS),
        },
        optional={"x_unknown": st.none() | _text | st.lists(st.integers(), max_size=3)},
    ),
    max_size=6,
)

_TARGET_OF = {
    "openai_chat": lambda r: r["messages"][-1]["content"],
    "chat_messages": lambda r: r["messages"][-1]["content"],
    "prompt_completion": lambda r: r["completion"][0]["content"],
    "sharegpt": lambda r: r["conversations"][-1]["value"],
    "alpaca": lambda r: r["output"],
}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pairs=_pairs)
def test_every_format_writes_one_line_per_pair_in_order(pairs: list[dict[str, Any]]) -> None:
    for fmt in TRAINER_FORMATS:
        data = render(fmt, pairs)
        assert data.endswith(b"\n") or not pairs
        lines = data.split(b"\n")[:-1] if data else []
        assert len(lines) == len(pairs)
        records = [orjson.loads(line) for line in lines]
        assert [_TARGET_OF[fmt.name](r) for r in records] == [p["target_response"] for p in pairs]
        if fmt is OPENAI_CHAT:
            assert dict(cookbook_format_errors(records)) == {}
        if fmt is SHAREGPT:
            for record in records:
                assert {t["from"] for t in record["conversations"]} <= {"system", "human", "gpt"}


# --- OpenAI's cookbook checks ------------------------------------------------------------


def cookbook_format_errors(dataset: Iterable[Any]) -> Mapping[str, int]:
    """The format checks of OpenAI's "Data preparation and analysis for chat model
    fine-tuning", as the cookbook writes them (weight included among the keys)."""
    format_errors: defaultdict[str, int] = defaultdict(int)
    for ex in dataset:
        if not isinstance(ex, dict):
            format_errors["data_type"] += 1
            continue
        messages = ex.get("messages", None)
        if not messages:
            format_errors["missing_messages_list"] += 1
            continue
        for message in messages:
            if "role" not in message or "content" not in message:
                format_errors["message_missing_key"] += 1
            if any(
                k not in ("role", "content", "name", "function_call", "weight") for k in message
            ):
                format_errors["message_unrecognized_key"] += 1
            if message.get("role", None) not in ("system", "user", "assistant", "function"):
                format_errors["unrecognized_role"] += 1
            content = message.get("content", None)
            function_call = message.get("function_call", None)
            if (not content and not function_call) or not isinstance(content, str):
                format_errors["missing_content"] += 1
        if not any(message.get("role", None) == "assistant" for message in messages):
            format_errors["example_missing_assistant_message"] += 1
    return format_errors


def test_the_cookbook_checks_catch_what_they_should() -> None:
    bad = [
        [],
        {"messages": []},
        {"messages": [{"role": "user", "content": "", "weight": 1, "extra": 1}]},
        {"messages": [{"role": "tool", "content": "x"}, {"content": "y"}]},
    ]
    assert dict(cookbook_format_errors(bad)) == {
        "data_type": 1,
        "missing_messages_list": 1,
        "message_unrecognized_key": 1,
        "missing_content": 1,
        "unrecognized_role": 2,
        "message_missing_key": 1,
        "example_missing_assistant_message": 2,
    }


def test_openai_output_passes_the_cookbook_checks() -> None:
    records = [orjson.loads(line) for line in render(OPENAI_CHAT, v4_pairs()).splitlines()]
    records += [orjson.loads(render(OPENAI_CHAT, [p])) for p in GOLDEN_PAIRS]
    assert dict(cookbook_format_errors(records)) == {}


# --- the real loaders -------------------------------------------------------------------


@cache
def v4_pairs() -> tuple[dict[str, Any], ...]:
    """The trainable v4 JSONL pairs of a few generated conversations (about 20 pairs)."""
    pairs: list[dict[str, Any]] = []
    for conv in generate(4242, 4, owners=[uuid.UUID(int=1)]):
        assert conv.document is not None
        raw = decode_json_object(conv.document)
        transformed = transform_conversation(
            str(conv.conversation_id), raw, validate_enriched_document(raw)
        )
        pairs.extend(orjson.loads(line) for line in transformed.lines.split(b"\n")[:-1])
    trainable_pairs = tuple(p for p in pairs if trainable(p))
    assert len(trainable_pairs) >= 20
    return trainable_pairs[:20]


@pytest.fixture(scope="module", autouse=True)
def _quiet_datasets() -> None:
    datasets.disable_progress_bars()


def _write(fmt: Format, directory: Path) -> Path:
    path = directory / f"golden-file.{fmt.name}.train.jsonl"
    path.write_bytes(render(fmt, v4_pairs()))
    return path


def _first_record_checks(fmt: Format, row: Mapping[str, Any], pair: Pair) -> None:
    """A few field values of the first record, as read back by a loader."""
    target = pair["target_response"]
    if fmt is ALPACA:
        assert (row["instruction"], row["input"], row["output"]) == (
            pair["system_prompt"],
            pair["current_user_input"],  # the first turn: no history
            target,
        )
        return
    column = {"prompt_completion": "prompt", "sharegpt": "conversations"}.get(fmt.name, "messages")
    first = row[column][0]
    key = "value" if fmt is SHAREGPT else "content"
    assert first[key] == pair["system_prompt"]
    assert row[column][1][key] == pair["current_user_input"]
    assert _TARGET_OF[fmt.name](row) == target


@pytest.mark.parametrize("fmt", TRAINER_FORMATS, ids=lambda f: f.name)
def test_datasets_loads_each_format(fmt: Format, tmp_path: Path) -> None:
    pairs = v4_pairs()
    assert pairs[0]["turn_number"] == 1
    path = _write(fmt, tmp_path)
    cache_dir = str(tmp_path / "cache")

    inferred = datasets.load_dataset(
        "json", data_files=str(path), split="train", cache_dir=cache_dir
    )
    assert inferred.num_rows == len(pairs)
    _first_record_checks(fmt, inferred[0], pairs[0])
    assert [_TARGET_OF[fmt.name](row) for row in inferred] == [p["target_response"] for p in pairs]

    features = datasets.Features._from_yaml_list(fmt.features or [])
    if fmt is OPENAI_CHAT:
        # `weight` on some messages only: without the card, `datasets` reads each message
        # as JSON (a dict per message, the key absent where there is none).
        assert inferred.features == {"messages": datasets.List(datasets.Json())}
        assert "weight" not in inferred[0]["messages"][0]
    else:
        assert inferred.features == features

    # With the card's features: the schema is what the card says (for openai_chat,
    # `weight` is a nullable int64, null on system and user messages).
    typed = datasets.load_dataset(
        "json", data_files=str(path), split="train", cache_dir=cache_dir, features=features
    )
    assert typed.features == features
    assert typed.num_rows == len(pairs)
    _first_record_checks(fmt, typed[0], pairs[0])
    if fmt is OPENAI_CHAT:
        last = typed[len(pairs) - 1]["messages"]
        assert [m["weight"] for m in last if m["role"] == "assistant"][-1] == 1
        assert {m["weight"] for m in last if m["role"] == "assistant"} == {0, 1}
        assert {m["weight"] for m in last if m["role"] != "assistant"} == {None}


@pytest.mark.parametrize("fmt", TRAINER_FORMATS, ids=lambda f: f.name)
def test_a_dataset_card_with_the_features_is_read_back(fmt: Format, tmp_path: Path) -> None:
    # A repository as the Hub holds it: README.md whose YAML states the features, and the
    # data. `datasets` reads the features from the card and casts the data to them.
    _write(fmt, tmp_path)
    card = yaml.safe_dump({"dataset_info": {"features": fmt.features}}, sort_keys=False)
    (tmp_path / "README.md").write_text(f"---\n{card}---\n\n# golden-file\n", encoding="utf-8")
    loaded = datasets.load_dataset(str(tmp_path), split="train", cache_dir=str(tmp_path / "cache"))
    assert loaded.features == datasets.Features._from_yaml_list(fmt.features or [])
    assert loaded.num_rows == len(v4_pairs())


@pytest.mark.parametrize("fmt", TRAINER_FORMATS, ids=lambda f: f.name)
def test_pyarrow_reads_each_format(fmt: Format, tmp_path: Path) -> None:
    pairs = v4_pairs()
    table = pa_json.read_json(_write(fmt, tmp_path))
    assert table.num_rows == len(pairs)
    assert table.column_names == [f["name"] for f in fmt.features or []]
    _first_record_checks(fmt, table.slice(0, 1).to_pylist()[0], pairs[0])
    rows = table.to_pylist()
    assert [_TARGET_OF[fmt.name](row) for row in rows] == [p["target_response"] for p in pairs]


# --- docs/formats.md ----------------------------------------------------------------------

DOC = Path(__file__).parents[2] / "docs" / "formats.md"


def _first_json_block(doc: str, heading: str) -> Any:
    """The first ```json block after `heading` (a whole line of the document)."""
    after = doc.split(f"\n{heading}\n", 1)[1]
    return orjson.loads(after.split("```json\n", 1)[1].split("\n```", 1)[0])


@pytest.mark.parametrize("fmt", TRAINER_FORMATS, ids=lambda f: f.name)
def test_the_documented_example_is_what_the_renderer_writes(fmt: Format) -> None:
    doc = DOC.read_text(encoding="utf-8")
    pair = _first_json_block(doc, "### The example pair")
    shown = _first_json_block(doc, f"## {fmt.name}")
    # Pretty-printed in the document; the same keys, order and values as the real line.
    assert orjson.dumps(shown) + b"\n" == render(fmt, [pair])


def test_the_document_has_a_section_per_format() -> None:
    headings = {
        line[3:] for line in DOC.read_text(encoding="utf-8").splitlines() if line.startswith("## ")
    }
    assert {*FORMATS, "dataset_card"} <= headings
