"""Placeholder: being written."""

from __future__ import annotations

from .base import Format

OPENAI_CHAT = Format(
    name="openai_chat",
    proto_value=3,
    extension="jsonl",
    content_type="application/x-ndjson",
    summary="",
    new_renderer=None,
)
