"""Placeholder: being written."""

from __future__ import annotations

from .base import Format

CHAT_MESSAGES = Format(
    name="chat_messages",
    proto_value=4,
    extension="jsonl",
    content_type="application/x-ndjson",
    summary="",
    new_renderer=None,
)

PROMPT_COMPLETION = Format(
    name="prompt_completion",
    proto_value=5,
    extension="jsonl",
    content_type="application/x-ndjson",
    summary="",
    new_renderer=None,
)
