"""`make run`'s metrics: on at 127.0.0.1:9464 unless METRICS_ADDRESS says otherwise, and
the ready line says where."""

from __future__ import annotations

from typing import Any

import pytest

from trainingfiles_dev.run import ready_text, with_development_metrics
from trainingfiles_server.config import Settings


def _settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("environ", "address"),
    [
        ({}, "127.0.0.1:9464"),
        ({"METRICS_ADDRESS": "0.0.0.0:9100"}, "0.0.0.0:9100"),
        ({"METRICS_ADDRESS": ""}, None),
    ],
    ids=["default", "moved", "off"],
)
def test_make_run_serves_metrics_on_9464_unless_told_otherwise(
    environ: dict[str, str], address: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert with_development_metrics(_settings(), environ).metrics_address == address


def test_the_ready_line_gives_the_metrics_address() -> None:
    settings = _settings(metrics_address="127.0.0.1:9464")
    text = ready_text(settings, 50051, 9464, embedded=False)
    assert "ready on 127.0.0.1:50051" in text
    assert "curl -s http://127.0.0.1:9464/metrics" in text
    assert "/metrics" not in ready_text(_settings(), 50051, None, embedded=False)
