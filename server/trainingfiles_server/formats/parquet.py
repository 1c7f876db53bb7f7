"""Placeholder: being written."""

from __future__ import annotations

from .base import Format

PARQUET = Format(
    name="parquet",
    proto_value=8,
    extension="parquet",
    content_type="application/x-ndjson",
    summary="",
    new_renderer=None,
)
