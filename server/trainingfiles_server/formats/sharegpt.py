"""Placeholder: being written."""

from __future__ import annotations

from .base import Format

SHAREGPT = Format(
    name="sharegpt",
    proto_value=6,
    extension="jsonl",
    content_type="application/x-ndjson",
    summary="",
    new_renderer=None,
)
