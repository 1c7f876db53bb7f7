"""`trainingfiles analytics`: tables and bar charts of what GetTrainingFileAnalytics
returns, `--json` for scripts, `--version` for an earlier version; run as a user would."""

from __future__ import annotations

import uuid

import pytest
from google.protobuf import json_format

from tests.e2e.cli_runner import Cli, cli_env
from tests.e2e.conftest import Dataset
from tests.e2e.helpers import Stub, add_ok, create_ok, unique_name
from tests.e2e.test_analytics import analytics_of
from trainingfiles_client.cli.commands.analytics import BAR_WIDTH, bar
from trainingfiles_server.app import RunningServer


@pytest.fixture(scope="module")
def cli(server: RunningServer, token: str) -> Cli:
    return Cli(cli_env(server, token))


def test_bars_are_proportional_in_eighths() -> None:
    assert bar(10, 10) == "█" * BAR_WIDTH
    assert bar(5, 10) == "█" * (BAR_WIDTH // 2)
    assert bar(1, 240) == "▏"  # never invisible
    assert bar(0, 10) == bar(3, 0) == ""


async def test_analytics_renders_tables_bars_and_json(
    cli: Cli, stub: Stub, dataset: Dataset
) -> None:
    ids = dataset.ids()[60:66]
    created = await create_ok(stub, unique_name("cli-analytics"), ids[:4])
    await add_ok(stub, created.id, ids[4:])
    figures = await analytics_of(stub, created.id)

    run = await cli("analytics", created.id)
    assert run.code == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == (
        f"version 2 of {created.id}: {figures.conversation_count} conversations, "
        f"{figures.total_training_pairs} training pairs"
    )
    for title in ("PERSONA", "EMOTIONAL ARC", "TRAINING TOPIC", "EMOTION (PAIRS)", "BALANCE"):
        assert any(line.split("  ")[0].strip() == title for line in lines), title
    persona = figures.distributions[0]
    top = persona.buckets[0]
    row = next(line for line in lines if line.startswith(top.key + " "))
    assert row.split()[1:3] == [str(top.count), f"{top.share:.1%}"]
    assert row.endswith("█" * BAR_WIDTH)  # the most frequent value has the full bar
    tokens = figures.tokens
    assert "TOKENS (tiktoken:cl100k_base)" in run.stdout
    total = next(line for line in lines if line.startswith("total "))
    assert total.split()[-1] == f"{tokens.total_tokens:,}"
    epoch = next(line for line in lines if line.startswith("training tokens per epoch"))
    assert epoch.split()[-1] == f"{tokens.training_tokens_per_epoch:,}"
    assert f"human reviewed: {figures.quality.reviewed_count}" in run.stdout

    as_json = await cli("analytics", created.id, "--json")
    assert as_json.code == 0, as_json.stderr
    assert as_json.json() == json_format.MessageToDict(
        figures, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    first = await cli("analytics", created.id, "--version", "1", "--json")
    assert first.json()["version"] == "1"
    assert first.json()["conversation_count"] == 4


async def test_analytics_errors_exit_with_their_codes(cli: Cli) -> None:
    missing = await cli("analytics", str(uuid.uuid4()))
    assert missing.code == 4, missing.stderr  # NOT_FOUND
    malformed = await cli("analytics", "not-an-id")
    assert malformed.code in (2, 3), malformed.stderr
