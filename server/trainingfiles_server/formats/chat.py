"""Hugging Face TRL's conversational formats: chat messages, and prompt-completion.

`CHAT_MESSAGES` is TRL's "conversational language modeling" record,
``{"messages": [{"role", "content"}, ...]}``: the system prompt (left out when empty),
the history and the current input as user and assistant turns (`messages.dialogue`),
then the target response. TRL's SFTTrainer and Axolotl's ``type: chat_template``
(``field_messages: messages``) read it as it is. The format has no per-message weight:
which tokens are learned is the trainer's setting (by default SFTTrainer learns the
whole conversation; with ``assistant_only_loss`` every assistant turn, history included).

`PROMPT_COMPLETION` is TRL's "conversational prompt-completion" record,
``{"prompt": [...], "completion": [{"role": "assistant", ...}]}``: the same messages up
to and including the current user input as the prompt, the target response as the
completion. SFTTrainer learns only the completion by default (``completion_only_loss``),
so only the target response is learned.
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import Format, Pair, Renderer, Turn
from .messages import ASSISTANT, JsonLines, Record, system_prompt


def _message_features() -> list[dict[str, str]]:
    # A fresh list each time: a YAML dump of the card would turn a shared one into an alias.
    return [{"name": "role", "dtype": "string"}, {"name": "content", "dtype": "string"}]


def _prompt(pair: Pair, turns: Sequence[Turn]) -> list[dict[str, str]]:
    system = system_prompt(pair)
    messages = [{"role": "system", "content": system}] if system else []
    messages.extend({"role": role, "content": content} for role, content in turns)
    return messages


def messages_record(pair: Pair, turns: Sequence[Turn]) -> Record:
    messages = _prompt(pair, turns)
    messages.append({"role": ASSISTANT, "content": pair["target_response"]})
    return {"messages": messages}


def prompt_completion_record(pair: Pair, turns: Sequence[Turn]) -> Record:
    return {
        "prompt": _prompt(pair, turns),
        "completion": [{"role": ASSISTANT, "content": pair["target_response"]}],
    }


def new_messages_renderer() -> Renderer:
    return JsonLines(messages_record)


def new_prompt_completion_renderer() -> Renderer:
    return JsonLines(prompt_completion_record)


CHAT_MESSAGES = Format(
    name="chat_messages",
    proto_value=4,
    extension="jsonl",
    content_type="application/x-ndjson",
    summary="TRL conversational JSONL (SFTTrainer, Axolotl chat_template): messages per pair",
    new_renderer=new_messages_renderer,
    features=[{"name": "messages", "list": _message_features()}],
)

PROMPT_COMPLETION = Format(
    name="prompt_completion",
    proto_value=5,
    extension="jsonl",
    content_type="application/x-ndjson",
    summary="TRL conversational prompt-completion JSONL: the chat so far, the target response",
    new_renderer=new_prompt_completion_renderer,
    features=[
        {"name": "prompt", "list": _message_features()},
        {"name": "completion", "list": _message_features()},
    ],
)
