"""A training pair as a chat: the one place that reads `conversation_history`.

Every trainer format is built from `dialogue(pair)`: the history, then the current user
input, as ``(role, content)`` turns whose role is ``"user"`` or ``"assistant"``. The
system prompt and the target response are added by each format, as its convention wants.

History items are dicts such as ``{"turn": 2, "role": "assistant", "content": "…"}``
(the enrichment pipeline also adds ``emotional_state`` to the client's turns; any other
key is ignored). The rules, applied in order:

1. An item that is not a dict, or whose ``content`` is not a non-empty string, is left
   out: it has nothing to say, and OpenAI rejects empty messages.
2. ``role`` (compared exactly) ``"assistant"``, ``"consultant"``, ``"advisor"``,
   ``"gpt"``, ``"bot"`` or ``"model"`` is the assistant; any other value, or none, is the
   user: whoever is not the consultant is talking to it.
3. The current user input follows the history as a user turn (left out when empty).
4. Consecutive turns of one role are joined into one, separated by a blank line, so the
   roles alternate: LLaMA-Factory skips examples that do not, and several chat templates
   raise. (A history that lost a reply, then the current input, becomes one user turn.)

For the pipeline's histories (user, assistant, user, assistant, …) this is the identity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

import orjson

from .base import Pair, Turn

USER: Final = "user"
ASSISTANT: Final = "assistant"

_ASSISTANT_ROLES: Final = frozenset({"assistant", "consultant", "advisor", "gpt", "bot", "model"})
_OPTIONS: Final = orjson.OPT_APPEND_NEWLINE

Record = dict[str, Any]
# A format's record of a pair, given the pair and its `dialogue`.
RecordOf = Callable[[Pair, Sequence[Turn]], Record]


def dialogue(pair: Pair) -> list[Turn]:
    """The history and the current user input as alternating turns (see the module doc)."""
    turns: list[Turn] = []
    last = None  # the role of turns[-1]
    history = pair.get("conversation_history")
    if isinstance(history, list):
        for item in history:
            if not isinstance(item, dict):
                continue
            content = item.get("content")
            if not content or not isinstance(content, str):
                continue
            role = ASSISTANT if item.get("role") in _ASSISTANT_ROLES else USER
            if role is last:  # rule 4: joined to the turn before
                turns[-1] = (role, f"{turns[-1][1]}\n\n{content}")
            else:
                turns.append((role, content))
                last = role
    current = pair.get("current_user_input")
    if current and isinstance(current, str):
        if last is USER:
            turns[-1] = (USER, f"{turns[-1][1]}\n\n{current}")
        else:
            turns.append((USER, current))
    return turns


def system_prompt(pair: Pair) -> str:
    """The system prompt, or "" when there is none (formats then leave the message out)."""
    prompt = pair.get("system_prompt")
    return prompt if isinstance(prompt, str) else ""


class JsonLines:
    """A renderer writing one orjson line per pair: ``record(pair, dialogue(pair))`` plus
    a newline.

    The build feeds only `trainable` pairs, so ``pair["target_response"]`` is a non-empty
    string here.
    """

    __slots__ = ("_record",)

    def __init__(self, record: RecordOf) -> None:
        self._record = record

    def feed(self, pair: Pair, turns: Sequence[Turn] | None = None) -> bytes:
        record = self._record(pair, dialogue(pair) if turns is None else turns)
        # Copied into an object of its own size: orjson's result keeps the capacity it
        # reserved while writing (~32 KiB for a 3.5 KB line; ~9 times the text of its
        # longest string), and the build holds up to a part's worth of lines per output
        # (5 MiB of lines took ~26 MB).
        return bytes(memoryview(orjson.dumps(record, option=_OPTIONS)))

    def close(self) -> bytes:
        return b""
