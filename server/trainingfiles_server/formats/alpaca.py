"""Alpaca JSONL: one ``{"instruction", "input", "output"}`` record per pair.

The instruction-tuning convention of Stanford Alpaca, read by Axolotl (``type: alpaca``)
and LLaMA-Factory (``"formatting": "alpaca"``, default columns). ``instruction`` is the
system prompt ("" when there is none), ``output`` the target response, and ``input`` the
conversation so far as text, from `messages.dialogue`:

- no history: the current user input, as it is;
- with history: each turn as ``User: <content>`` or ``Assistant: <content>``; an
  assistant turn follows its user turn after one newline, and each user turn after the
  first starts after a blank line. The current user input is the last ``User:`` turn::

      User: first question
      Assistant: first answer

      User: the current input

The record has exactly these three keys (no ``system`` or ``history`` column).
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import Format, Pair, Renderer, Turn
from .messages import USER, JsonLines, Record, system_prompt


def fold(turns: Sequence[Turn]) -> str:
    """The ``input`` text of a pair whose `dialogue` is `turns` (see the module doc)."""
    if len(turns) == 1 and turns[0][0] == USER:
        return turns[0][1]
    parts: list[str] = []
    for role, content in turns:
        if parts:
            parts.append("\n\nUser: " if role == USER else "\nAssistant: ")
        else:
            parts.append("User: " if role == USER else "Assistant: ")
        parts.append(content)
    return "".join(parts)


def record(pair: Pair, turns: Sequence[Turn]) -> Record:
    return {
        "instruction": system_prompt(pair),
        "input": fold(turns),
        "output": pair["target_response"],
    }


def new_renderer() -> Renderer:
    return JsonLines(record)


ALPACA = Format(
    name="alpaca",
    proto_value=7,
    extension="jsonl",
    content_type="application/x-ndjson",
    summary="Alpaca JSONL: instruction (system prompt), input (the chat as text), output",
    new_renderer=new_renderer,
    features=[
        {"name": "instruction", "dtype": "string"},
        {"name": "input", "dtype": "string"},
        {"name": "output", "dtype": "string"},
    ],
)
