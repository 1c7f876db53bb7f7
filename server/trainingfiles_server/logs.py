"""Structured logging: one JSON object per line on standard error.

Log records carry their structured fields in `extra={"fields": {...}}`; the formatter
merges them into the line. Nothing here ever receives a token or a secret: callers log
method names, codes, durations and ids only. While tracing is on, a line written within
a span carries its `trace_id` and `span_id` (hex, as trace back ends show them).
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

from . import tracing


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update(tracing.log_ids())
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure(level: str) -> None:
    """Route the service's and libraries' logging through the JSON formatter."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # botocore logs request details (including signed headers) at DEBUG: keep it quiet.
    for noisy in ("botocore", "aiobotocore", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
