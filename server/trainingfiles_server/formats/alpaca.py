"""Placeholder: being written."""

from __future__ import annotations

from .base import Format

ALPACA = Format(
    name="alpaca",
    proto_value=7,
    extension="jsonl",
    content_type="application/x-ndjson",
    summary="",
    new_renderer=None,
)
