"""OpenAI chat fine-tuning JSONL: one ``{"messages": [...]}`` example per training pair.

The convention of OpenAI's fine-tuning API (supervised, chat models): the system prompt
(left out when empty), the history and the current input as user and assistant messages
(`messages.dialogue`), then the target response. Only the target is learned: every
history assistant message carries ``"weight": 0`` and the target ``"weight": 1``, stated
rather than left to the default so that each assistant message says whether it is
trained on. Messages only use the keys role, content and weight, roles
system/user/assistant, and non-empty string content, so every example passes the checks
of OpenAI's cookbook "Data preparation and analysis for chat model fine-tuning".
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import Format, Pair, Renderer, Turn
from .messages import ASSISTANT, JsonLines, Record, system_prompt


def record(pair: Pair, turns: Sequence[Turn]) -> Record:
    """The example of a pair whose `dialogue` is `turns`."""
    messages: list[dict[str, object]] = []
    system = system_prompt(pair)
    if system:
        messages.append({"role": "system", "content": system})
    for role, content in turns:
        if role == ASSISTANT:
            messages.append({"role": role, "content": content, "weight": 0})
        else:
            messages.append({"role": role, "content": content})
    messages.append({"role": ASSISTANT, "content": pair["target_response"], "weight": 1})
    return {"messages": messages}


def new_renderer() -> Renderer:
    return JsonLines(record)


OPENAI_CHAT = Format(
    name="openai_chat",
    proto_value=3,
    extension="jsonl",
    content_type="application/x-ndjson",
    summary="OpenAI chat fine-tuning JSONL: messages per pair, only the target response weighted",
    new_renderer=new_renderer,
    # `weight` is null on system and user messages (they have none).
    features=[
        {
            "name": "messages",
            "list": [
                {"name": "role", "dtype": "string"},
                {"name": "content", "dtype": "string"},
                {"name": "weight", "dtype": "int64"},
            ],
        }
    ],
)
