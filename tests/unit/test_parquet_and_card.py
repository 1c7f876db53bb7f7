"""The Parquet output and the dataset card, read back as their users read them.

Parquet: the exact schema and rows of three hand-written pairs (pyarrow), bounded row
groups, and `datasets.load_dataset("parquet", ...)`. The card: a folder laid out as
`trainingfiles download --all DIR` writes it (the v4 outputs, trainer outputs per split,
README.md) loads with `datasets.load_dataset(DIR)` and with every config the card lists.
Everything `datasets` does here is offline, with its caches under the test's tmp_path.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from trainingfiles_dev.generator import generate
from trainingfiles_server.aggregate import (
    ConversationSummary,
    json_document,
    json_header,
    summarize,
    transform_conversation,
)
from trainingfiles_server.card import CardInfo, CardOutput, CardSplit, render_card
from trainingfiles_server.documents import decode_json_object, validate_enriched_document
from trainingfiles_server.formats import FORMATS, Format, Pair, file_name, trainable
from trainingfiles_server.formats.parquet import FEATURES, PARQUET, SCHEMA, ParquetRenderer
from trainingfiles_server.formats.v4 import V4_JSON, V4_JSONL

CONV = "5b0f3c1e-2d4a-4e6b-8c9d-0e1f2a3b4c5d"
CREATED = datetime(2026, 11, 30, 8, 15, 42, tzinfo=UTC)


@pytest.fixture
def hf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The `datasets` module, offline, its caches in tmp_path (never the home directory).

    The variables are set before the import, which reads them, and the module's config is
    patched as well in case another test module imported it first.
    """
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(home / "datasets"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", home / "datasets")
    monkeypatch.setattr(datasets.config, "HF_MODULES_CACHE", home / "modules")
    datasets.disable_progress_bars()
    return datasets


def render(fmt: Format, pairs: Iterable[Pair]) -> bytes:
    assert fmt.new_renderer is not None
    renderer = fmt.new_renderer()
    chunks = [renderer.feed(pair) for pair in pairs]
    chunks.append(renderer.close())
    return b"".join(chunks)


# --- Parquet: schema and rows -------------------------------------------------------------


def _pair(turn: int, **fields: Any) -> dict[str, Any]:
    pair: dict[str, Any] = {
        "id": f"{CONV}_turn{turn}",
        "conversation_id": CONV,
        "turn_number": turn,
        "conversation_metadata": {
            "client_persona": "Dana Reyes - The Anxious Avoider",
            "persona_key": "anxious_avoider",
            "emotional_arc_key": "shame_to_acceptance",
            "training_topic_key": "emergency_fund",
        },
        "system_prompt": "You are a warm planner.",
        "conversation_history": [],
        "current_user_input": "Where do I start?",
        "emotional_context": {"detected_emotions": {"primary": "shame"}},
        "target_response": f"reply {turn}",
        "training_metadata": {
            "difficulty_level": f"beginner_turn_{turn}",
            "quality_score": 4.5,
            "human_reviewed": True,
        },
        "input_parameters": {
            "persona_key": "anxious_avoider",
            "emotional_arc_key": "shame_to_acceptance",
            "training_topic_key": "emergency_fund",
        },
    }
    pair.update(fields)
    return pair


HISTORY = [
    {"turn": 1, "role": "user", "content": "J'ai honte 😬", "emotional_state": {"primary": "x"}},
    {"turn": 1, "role": "assistant", "content": "Thank you for saying it.\u2028Let's look."},
]

THREE_PAIRS = (
    _pair(1),
    # History, an unknown field (ignored), an integer score.
    _pair(
        2,
        conversation_history=HISTORY,
        current_user_input="¿Y ahora?",
        response_strategy={"weights": [0.5]},
        training_metadata={"quality_score": 4, "human_reviewed": False},
    ),
    # No system prompt, no input_parameters (the keys come from conversation_metadata),
    # no difficulty.
    _pair(
        3,
        system_prompt="",
        input_parameters=None,
        training_metadata={"quality_score": 3.25, "human_reviewed": False, "x": 1},
    ),
)

EXPECTED_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("conversation_id", pa.string()),
        ("turn_number", pa.int64()),
        ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("quality_score", pa.float64()),
        ("human_reviewed", pa.bool_()),
        ("persona_key", pa.string()),
        ("emotional_arc_key", pa.string()),
        ("training_topic_key", pa.string()),
        ("difficulty_level", pa.string()),
    ]
)

KEYS = {
    "persona_key": "anxious_avoider",
    "emotional_arc_key": "shame_to_acceptance",
    "training_topic_key": "emergency_fund",
}
EXPECTED_ROWS = [
    {
        "id": f"{CONV}_turn1",
        "conversation_id": CONV,
        "turn_number": 1,
        "messages": [
            {"role": "system", "content": "You are a warm planner."},
            {"role": "user", "content": "Where do I start?"},
            {"role": "assistant", "content": "reply 1"},
        ],
        "quality_score": 4.5,
        "human_reviewed": True,
        **KEYS,
        "difficulty_level": "beginner_turn_1",
    },
    {
        "id": f"{CONV}_turn2",
        "conversation_id": CONV,
        "turn_number": 2,
        "messages": [
            {"role": "system", "content": "You are a warm planner."},
            {"role": "user", "content": "J'ai honte 😬"},
            {"role": "assistant", "content": "Thank you for saying it.\u2028Let's look."},
            {"role": "user", "content": "¿Y ahora?"},
            {"role": "assistant", "content": "reply 2"},
        ],
        "quality_score": 4.0,
        "human_reviewed": False,
        **KEYS,
        "difficulty_level": None,
    },
    {
        "id": f"{CONV}_turn3",
        "conversation_id": CONV,
        "turn_number": 3,
        "messages": [
            {"role": "user", "content": "Where do I start?"},
            {"role": "assistant", "content": "reply 3"},
        ],
        "quality_score": 3.25,
        "human_reviewed": False,
        **KEYS,
        "difficulty_level": None,
    },
]


def test_parquet_schema_and_rows() -> None:
    data = render(PARQUET, THREE_PAIRS)
    assert data[:4] == b"PAR1"
    assert data[-4:] == b"PAR1"
    table = pq.read_table(io.BytesIO(data))
    assert table.schema.equals(EXPECTED_SCHEMA)  # no pandas/huggingface metadata needed
    assert SCHEMA.equals(EXPECTED_SCHEMA)
    assert table.to_pylist() == EXPECTED_ROWS
    metadata = pq.ParquetFile(io.BytesIO(data)).metadata
    assert metadata.num_row_groups == 1
    assert metadata.row_group(0).column(0).compression == "ZSTD"


def test_parquet_format_entry() -> None:
    assert FORMATS["parquet"] is PARQUET
    assert (PARQUET.proto_value, PARQUET.extension) == (8, "parquet")
    assert PARQUET.content_type == "application/vnd.apache.parquet"
    assert PARQUET.splittable
    assert file_name("fp", PARQUET, "validation") == "fp.parquet.validation.parquet"


def test_parquet_features_are_what_datasets_reads_from_the_schema(hf: Any) -> None:
    assert hf.Features.from_arrow_schema(SCHEMA)._to_yaml_list() == FEATURES
    assert hf.Features._from_yaml_list(FEATURES).arrow_schema.remove_metadata().equals(SCHEMA)


def test_an_empty_parquet_output_is_a_valid_file() -> None:
    table = pq.read_table(io.BytesIO(render(PARQUET, [])))
    assert table.num_rows == 0
    assert table.schema.equals(EXPECTED_SCHEMA)


# --- Parquet: row groups ------------------------------------------------------------------


def _many(count: int) -> Iterator[dict[str, Any]]:
    for i in range(count):
        yield _pair(i + 1, target_response=f"reply {i} " + "·" * (i % 50))


def test_parquet_row_groups_are_written_as_they_fill() -> None:
    renderer = ParquetRenderer()
    chunks: list[bytes] = []
    early: list[int] = []  # the pairs after which feed returned bytes
    for index, pair in enumerate(_many(2500)):
        chunk = renderer.feed(pair)
        if chunk:
            early.append(index)
        chunks.append(chunk)
    assert early == [999, 1999]  # one row group at a time, never the whole file
    before_close = sum(map(len, chunks))
    chunks.append(renderer.close())
    data = b"".join(chunks)
    assert 0 < before_close < len(data)

    parquet = pq.ParquetFile(io.BytesIO(data))
    sizes = [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)]
    assert sizes == [1000, 1000, 500]
    table = parquet.read()
    assert table.column("turn_number").to_pylist() == list(range(1, 2501))
    assert table.column("messages")[2499].as_py()[-1]["content"] == "reply 2499 " + "·" * 49


def test_parquet_row_groups_are_bounded_by_text_size() -> None:
    # ~3,000 characters of text per pair and a 10,000 budget: a row group every 4 pairs.
    renderer = ParquetRenderer(row_group_bytes=10_000)
    chunks = [renderer.feed(_pair(i + 1, system_prompt="s" * 3000)) for i in range(10)]
    assert [bool(c) for c in chunks] == [False, False, False, True] * 2 + [False, False]
    data = b"".join([*chunks, renderer.close()])
    metadata = pq.ParquetFile(io.BytesIO(data)).metadata
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [4, 4, 2]


def test_datasets_loads_the_parquet_output(hf: Any, tmp_path: Path) -> None:
    path = tmp_path / "fp.parquet.train.parquet"
    path.write_bytes(render(PARQUET, THREE_PAIRS))
    loaded = hf.load_dataset(
        "parquet", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache")
    )
    assert loaded.features == hf.Features._from_yaml_list(FEATURES)
    assert loaded.num_rows == 3
    assert loaded.to_list() == EXPECTED_ROWS


# --- the card over a downloaded folder ----------------------------------------------------


@dataclass(frozen=True)
class Conversation:
    id: str
    summary: ConversationSummary
    lines: bytes
    pairs: list[dict[str, Any]]
    vertical: str
    profile: bytes


def conversations(count: int) -> list[Conversation]:
    out = []
    for conv in generate(20261130, count, owners=[uuid.UUID(int=7)]):
        assert conv.document is not None
        raw = decode_json_object(conv.document)
        cid = str(conv.conversation_id)
        t = transform_conversation(cid, raw, validate_enriched_document(raw))
        pairs = [orjson.loads(line) for line in t.lines.split(b"\n")[:-1]]
        out.append(Conversation(cid, t.summary, t.lines, pairs, t.vertical, t.consultant_profile))
    return out


def write_v4(folder: Path, name: str, convs: Sequence[Conversation]) -> list[CardOutput]:
    jsonl = b"".join(c.lines for c in convs)
    metrics = summarize(c.summary for c in convs)
    header = json_header(name, CREATED, convs[0].vertical, metrics, convs[0].profile)
    document = b"".join(json_document(header, [jsonl]))
    pairs = sum(len(c.pairs) for c in convs)
    out = []
    for fmt, data in ((V4_JSON, document), (V4_JSONL, jsonl)):
        path = folder / file_name(name, fmt, "all")
        path.write_bytes(data)
        out.append(CardOutput(fmt.name, "all", path.name, pairs, len(data)))
    return out


def write_trainer(
    folder: Path, name: str, fmt: Format, sides: Mapping[str, Sequence[Pair]]
) -> list[CardOutput]:
    out = []
    for side, pairs in sides.items():
        path = folder / file_name(name, fmt, side)
        path.write_bytes(render(fmt, pairs))
        out.append(CardOutput(fmt.name, side, path.name, len(pairs), path.stat().st_size))
    return out


def card_info(
    name: str,
    convs: Sequence[Conversation],
    outputs: Sequence[CardOutput],
    split: CardSplit | None = None,
) -> CardInfo:
    metrics = summarize(c.summary for c in convs)
    pairs = [p for c in convs for p in c.pairs]
    return CardInfo(
        name=name,
        training_file_id="9d2b7c4e-0f1a-4b3c-8d5e-6f7a8b9c0d1e",
        version=3,
        created=CREATED,
        vertical=convs[0].vertical,
        conversation_count=metrics.conversation_count,
        pair_count=metrics.total_training_pairs,
        avg_quality_score=metrics.avg_quality_score,
        min_quality_score=metrics.min_quality_score,
        max_quality_score=metrics.max_quality_score,
        human_reviewed_count=metrics.human_reviewed_count,
        scaffolding_distribution=metrics.scaffolding_distribution(),
        duplicate_pairs=0,
        duplicates_dropped=False,
        untrainable_pairs=sum(not trainable(p) for p in pairs),
        outputs=tuple(outputs),
        description="Synthetic coaching conversations | for the loader tests.",
        split=split,
        languages=("en",),
    )


def trainer_formats(first: Format) -> list[Format]:
    """`first` (the default config), then every other trainer format with a renderer."""
    others = [f for f in FORMATS.values() if f.splittable and f is not first and f.new_renderer]
    return [first, *others]


def front_matter(readme: bytes) -> dict[str, Any]:
    text = readme.decode()
    assert text.startswith("---\n")
    matter, body = text[4:].split("\n---\n", 1)
    assert body.startswith("\n# ")
    loaded = yaml.safe_load(matter)
    assert isinstance(loaded, dict)
    return loaded


@pytest.mark.parametrize("first", ["parquet", "openai_chat"])
def test_a_downloaded_folder_with_a_split_loads_with_its_card(
    first: str, hf: Any, tmp_path: Path
) -> None:
    name = "fp-coach.v2"
    folder = tmp_path / name
    folder.mkdir()
    convs = conversations(5)
    train_convs, validation_convs = convs[:4], convs[4:]  # a split is by conversation
    sides = {
        "train": [p for c in train_convs for p in c.pairs if trainable(p)],
        "validation": [p for c in validation_convs for p in c.pairs if trainable(p)],
    }
    pair_count = sum(len(c.pairs) for c in convs)
    assert 25 <= pair_count <= 45

    outputs = write_v4(folder, name, convs)
    fmts = trainer_formats(FORMATS[first])
    if FORMATS[first].new_renderer is None:
        pytest.skip(f"{first} has no renderer yet")
    for fmt in fmts:
        outputs += write_trainer(folder, name, fmt, sides)
    split = CardSplit(
        seed=42,
        train_conversations=4,
        train_pairs=sum(len(c.pairs) for c in train_convs),
        validation_conversations=1,
        validation_pairs=len(validation_convs[0].pairs),
        validation_fraction=0.2,
        stratify="persona",
    )
    readme = render_card(card_info(name, convs, outputs, split))
    (folder / "README.md").write_bytes(readme)

    # One builder reads every config of a repository: Parquet alone, or the JSONL ones.
    matter = front_matter(readme)
    configs = matter["configs"]
    jsonl = [f.name for f in fmts if f.extension == "jsonl"]
    expected = ["parquet"] if first == "parquet" else [*jsonl, "v4_jsonl"]
    assert [c["config_name"] for c in configs] == expected
    assert [i["config_name"] for i in matter["dataset_info"]] == expected
    assert configs[0]["default"] is True
    assert not any(c.get("default") for c in configs[1:])
    assert configs[0]["data_files"] == [
        {"split": "train", "path": f"fp-coach.v2.{first}.train.{FORMATS[first].extension}"},
        {
            "split": "validation",
            "path": f"fp-coach.v2.{first}.validation.{FORMATS[first].extension}",
        },
    ]
    assert matter["size_categories"] == ["n<1K"]
    assert matter["task_categories"] == ["text-generation"]

    # As it is: the default config, both splits.
    cache = str(tmp_path / "cache")
    loaded = hf.load_dataset(str(folder), cache_dir=cache)
    assert {s: loaded[s].num_rows for s in loaded} == {
        "train": len(sides["train"]),
        "validation": len(sides["validation"]),
    }
    first_features = hf.Features._from_yaml_list(FORMATS[first].features)
    assert loaded["train"].features == first_features
    if first == "parquet":
        assert loaded["validation"]["id"] == [p["id"] for p in sides["validation"]]

    # Every config the card lists, with the splits and features it states.
    infos = {i["config_name"]: i for i in matter["dataset_info"]}
    for config in configs:
        config_name = config["config_name"]
        data = hf.load_dataset(str(folder), config_name, cache_dir=cache)
        stated = {s["name"]: s["num_examples"] for s in infos[config_name]["splits"]}
        assert {s: data[s].num_rows for s in data} == stated, config_name
        if "features" in infos[config_name]:
            features = hf.Features._from_yaml_list(infos[config_name]["features"])
            assert data["train"].features == features, config_name
    if "v4_jsonl" in infos:
        v4 = hf.load_dataset(str(folder), "v4_jsonl", split="train", cache_dir=cache)
        assert v4.num_rows == pair_count  # every pair, those without a target included
        assert v4["id"] == [p["id"] for c in convs for p in c.pairs]

    body = readme.decode().split("\n---\n", 1)[1]
    assert "| Conversations | 5 |" in body
    assert f"| Training pairs | {pair_count} |" in body
    assert "Synthetic coaching conversations | for the loader tests." in body
    assert "seed 42), stratified by persona" in body
    assert "validation: 1 conversation, " in body
    assert "| `fp-coach.v2.json` | `v4_json` | all |" in body
    assert "created 2026-11-30T08:15:42Z" in body
    # The body's call for the JSON document works.
    call = 'v4_json = load_dataset("json", data_files={"train": "fp-coach.v2.json"}, '
    assert call + 'field="training_pairs")' in body
    document = hf.load_dataset(
        "json",
        data_files={"train": str(folder / "fp-coach.v2.json")},
        field="training_pairs",
        split="train",
        cache_dir=cache,
    )
    assert document["id"] == [p["id"] for c in convs for p in c.pairs]


def test_a_folder_without_a_split_has_one_train_split(hf: Any, tmp_path: Path) -> None:
    name = "coach"
    convs = conversations(3)
    trainable_pairs = [p for c in convs for p in c.pairs if trainable(p)]
    outputs = write_v4(tmp_path, name, convs)
    outputs += write_trainer(tmp_path, name, PARQUET, {"all": trainable_pairs})
    readme = render_card(card_info(name, convs, outputs))
    (tmp_path / "README.md").write_bytes(readme)

    matter = front_matter(readme)
    parquet_size = (tmp_path / "coach.parquet.parquet").stat().st_size
    n = len(trainable_pairs)
    assert matter == {
        "pretty_name": "coach",
        "language": ["en"],
        "tags": ["conversational", "sft", "financial-planning-consultant"],
        "task_categories": ["text-generation"],
        "size_categories": ["n<1K"],
        "configs": [
            {
                "config_name": "parquet",
                "data_files": [{"split": "train", "path": "coach.parquet.parquet"}],
                "default": True,
            },
        ],
        "dataset_info": [
            {
                "config_name": "parquet",
                "features": FEATURES,
                "splits": [{"name": "train", "num_bytes": parquet_size, "num_examples": n}],
                "download_size": parquet_size,
            },
        ],
    }
    cache = str(tmp_path / "cache")
    loaded = hf.load_dataset(str(tmp_path), cache_dir=cache)
    assert list(loaded) == ["train"]
    assert loaded["train"].num_rows == n
    assert "No train/validation split" in readme.decode()


def test_a_v4_only_card_loads_the_jsonl_even_when_a_field_appears_late(
    hf: Any, tmp_path: Path
) -> None:
    # The JSON loader infers its schema from its first chunk (10 MiB by default) and
    # refuses later chunks with other columns; the card reads `v4_jsonl` in one chunk.
    padding = "x" * 6000
    pairs = [_pair(i + 1, system_prompt=padding) for i in range(2000)]
    pairs[-1]["response_strategy"] = {"primary_technique": "validation"}
    data = b"".join(orjson.dumps(p, option=orjson.OPT_APPEND_NEWLINE) for p in pairs)
    assert len(data) > 10 << 20
    (tmp_path / "late.jsonl").write_bytes(data)
    convs = conversations(1)
    info = card_info("late", convs, [CardOutput("v4_jsonl", "all", "late.jsonl", 2000, len(data))])
    readme = render_card(info)
    (tmp_path / "README.md").write_bytes(readme)
    configs = front_matter(readme)["configs"]
    assert configs == [
        {
            "config_name": "v4_jsonl",
            "data_files": [{"split": "train", "path": "late.jsonl"}],
            "chunksize": len(data),
            "default": True,
        }
    ]
    loaded = hf.load_dataset(str(tmp_path), split="train", cache_dir=str(tmp_path / "cache"))
    assert loaded.num_rows == 2000
    assert loaded[1999]["response_strategy"] == {"primary_technique": "validation"}
    assert loaded[0]["response_strategy"] is None


def test_card_body_reports_duplicates_and_counts() -> None:
    convs = conversations(4)
    base = card_info("c", convs, [])
    dropped = render_card(
        replace(
            base,
            duplicate_pairs=3,
            duplicates_dropped=True,
            untrainable_pairs=2,
            avg_quality_score=Decimal("3.50"),
        )
    ).decode()
    assert "3 pairs repeat the content" in dropped
    assert "They are left out of the trainer formats" in dropped
    assert "| Pairs without a target response | 2 |" in dropped
    assert "| 3.50 |" in dropped
    kept = render_card(replace(base, duplicate_pairs=1)).decode()
    assert "1 pair repeats the content" in kept
    assert "They are kept in the trainer formats" in kept
    assert "No pair repeats an earlier one." in render_card(base).decode()
    # Every key of the distribution has its row: conversations and share.
    for counts in base.scaffolding_distribution.values():
        for key, count in counts.items():
            assert f"| {key} | {count} | {count / 4:.1%} |" in kept


def test_card_refuses_an_unknown_format() -> None:
    base = card_info("c", conversations(1), [CardOutput("csv", "all", "c.csv", 1, 1)])
    with pytest.raises(ValueError, match="unknown output format 'csv'"):
        render_card(base)


# --- docs/formats.md ----------------------------------------------------------------------


def _json_block_after(doc: str, heading: str) -> Any:
    after = doc.split(f"\n{heading}\n", 1)[1]
    return orjson.loads(after.split("```json\n", 1)[1].split("\n```", 1)[0])


def test_the_documented_parquet_row_is_what_the_renderer_writes() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "formats.md").read_text(encoding="utf-8")
    pair = _json_block_after(doc, "### The example pair")
    shown = _json_block_after(doc, "## parquet")
    assert pq.read_table(io.BytesIO(render(PARQUET, [pair]))).to_pylist() == [shown]
