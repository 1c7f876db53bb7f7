"""Configuration: every setting is documented, and empty variables mean the default."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from trainingfiles_server.config import Settings

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"


def test_every_setting_is_documented_in_env_example() -> None:
    documented = set(re.findall(r"^([A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.MULTILINE))
    assert documented == {name.upper() for name in Settings.model_fields}


def test_env_example_values_are_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in re.findall(r"^([A-Z0-9_]+)=(.*)$", ENV_EXAMPLE.read_text(), re.MULTILINE):
        monkeypatch.setenv(name, value)
    assert Settings(_env_file=None) == Settings.model_construct()  # type: ignore[call-arg]


def test_secrets_never_appear_in_the_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3_SECRET_ACCESS_KEY", "very-secret-value")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:db-password@h/d")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert "very-secret-value" not in repr(settings)
    assert "db-password" not in repr(settings)


@pytest.mark.parametrize(
    ("name", "largest"),
    [("JWT_LEEWAY_SECONDS", 300), ("JWT_JWKS_CACHE_SECONDS", 86_400)],
)
def test_identity_timings_have_an_upper_bound(
    monkeypatch: pytest.MonkeyPatch, name: str, largest: int
) -> None:
    """The clock skew is at most 300 s and the JWKS is trusted for at most a day."""
    monkeypatch.setenv(name, str(largest))
    assert getattr(Settings(_env_file=None), name.lower()) == largest  # type: ignore[call-arg]
    monkeypatch.setenv(name, str(largest + 1))
    with pytest.raises(ValidationError, match=name.lower()):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_a_dot_env_file_in_the_working_directory_is_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The environment wins over `.env`, which wins over the defaults."""
    (tmp_path / ".env").write_text("LOG_LEVEL=DEBUG\nFETCH_CONCURRENCY=3\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LOG_LEVEL", raising=False)
    monkeypatch.setenv("FETCH_CONCURRENCY", "5")

    settings = Settings()

    assert (settings.log_level, settings.fetch_concurrency) == ("DEBUG", 5)
