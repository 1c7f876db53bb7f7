"""The v4.0 outputs (docs/formats.md, `v4_json` and `v4_jsonl`): the JSON document and its
JSONL, one pair per line.

Both are written by the build itself (`outputs.py`): the JSON document's header needs
every conversation's metrics, and an Add has the store copy the stored pairs.
"""

from __future__ import annotations

from .base import Format

V4_JSON = Format(
    name="v4_json",
    proto_value=1,
    extension="json",
    content_type="application/json",
    summary="the v4.0.0 aggregated JSON document: metadata, consultant profile, every pair",
    new_renderer=None,
    features=None,
    splittable=False,
)

V4_JSONL = Format(
    name="v4_jsonl",
    proto_value=2,
    extension="jsonl",
    content_type="application/x-ndjson",
    summary="the v4.0.0 training pairs, one complete JSON object per line",
    new_renderer=None,
    features=None,
    splittable=False,
)
