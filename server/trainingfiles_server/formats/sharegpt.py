"""ShareGPT JSONL: one ``{"conversations": [{"from", "value"}, ...]}`` record per pair.

The convention Axolotl (``type: chat_template`` with ``field_messages: conversations``
and ``message_property_mappings: {role: from, content: value}``) and LLaMA-Factory
(``"formatting": "sharegpt"``, default tags) read: ``from`` is ``system``, ``human`` or
``gpt``. The system prompt comes first (left out when empty), then the history and the
current input (`messages.dialogue`: user → ``human``, assistant → ``gpt``), then the
target response as the last ``gpt`` turn. LLaMA-Factory takes a leading ``system`` turn
as the system prompt and needs human/gpt to alternate from a human turn, which
`dialogue` ensures for every history that starts with the client.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from .base import Format, Pair, Renderer, Turn
from .messages import ASSISTANT, USER, JsonLines, Record, system_prompt

_FROM: Final = {USER: "human", ASSISTANT: "gpt"}


def record(pair: Pair, turns: Sequence[Turn]) -> Record:
    system = system_prompt(pair)
    out = [{"from": "system", "value": system}] if system else []
    out.extend({"from": _FROM[role], "value": content} for role, content in turns)
    out.append({"from": "gpt", "value": pair["target_response"]})
    return {"conversations": out}


def new_renderer() -> Renderer:
    return JsonLines(record)


SHAREGPT = Format(
    name="sharegpt",
    proto_value=6,
    extension="jsonl",
    content_type="application/x-ndjson",
    summary="ShareGPT JSONL (Axolotl, LLaMA-Factory): from/value turns per pair, system/human/gpt",
    new_renderer=new_renderer,
    features=[
        {
            "name": "conversations",
            "list": [{"name": "from", "dtype": "string"}, {"name": "value", "dtype": "string"}],
        }
    ],
)
