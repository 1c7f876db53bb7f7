"""The `trainingfiles` command driven as a user would: a subprocess against a real server.

Every command, with and without `--json`, its help, its exit codes and its shell
completion, run through the installed entry point. The server runs on this process's
event loop, so every command runs in a thread (`asyncio.to_thread`); waiting for it on
the loop would stall the server it talks to.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest

import trainingfiles_client as tfc
from tests.conftest import authorized_channel, mint
from tests.e2e.cli_runner import Cli, cli_env, command
from tests.e2e.conftest import OWNER, Dataset
from tests.e2e.test_refresh import Setup, _reenrich_at_new_key
from tests.e2e.test_selectors import ORACLE
from trainingfiles.v1 import resources_pb2, service_pb2_grpc
from trainingfiles_dev.generator import Awkward, GeneratedConversation, Kind, generate, load
from trainingfiles_server.app import RunningServer
from trainingfiles_server.storage import Storage

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TIMEOUT = 60.0
# Conversations of this module's refresh test only: it re-enriches them.
REFRESH_SEED = 9411
# Conversations of this module's selector test only, of an owner of its own: whatever the
# selector's filter matches in the table is exactly what the command must take.
SELECT_SEED = 9419
SELECT_OWNER = uuid.UUID("00000000-0000-4000-8000-00000000c5e1")
# Conversations of this module's filter test only, of an owner of its own.
FILTER_SEED = 9437
FILTER_OWNER = uuid.UUID("00000000-0000-4000-8000-00000000f11e")
# Conversations of the warning summary's test: 11 with another consultant profile.
WARNED_SEED = 9423


# Runs the command that follows with SIGINT's default disposition, as in a terminal: a
# test run started as a background job (`make test &`) ignores SIGINT, and the commands
# it starts would inherit that and never see the Ctrl-C.
WITH_DEFAULT_SIGINT = [
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])",
]


def names(directory: Path) -> list[str]:
    return sorted(entry.name for entry in directory.iterdir())


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def cli(server: RunningServer, token: str) -> Cli:
    return Cli(cli_env(server, token))


@pytest.fixture(scope="module")
async def aclient(server: RunningServer, token: str) -> AsyncIterator[tfc.AsyncTrainingFilesClient]:
    async with tfc.AsyncTrainingFilesClient(f"127.0.0.1:{server.port}", token=token) as client:
        yield client


async def test_create_shows_progress_then_the_file(cli: Cli, dataset: Dataset) -> None:
    name = unique("cli")
    ids = dataset.ids()[:3]
    run = await cli("create", name, "--ids", *ids, "--description", "from the cli")
    assert run.code == 0, run.stderr
    for stage in ("validating", "fetching", "aggregating", "uploading", "saving"):
        assert stage in run.stderr
    assert "3/3" in run.stderr and "conv/s" in run.stderr
    assert f"created {name}" in run.stdout and "3 conversations" in run.stdout
    file_id = UUID.findall(run.stdout)[0]

    show = await cli("show", file_id)
    assert show.code == 0, show.stderr
    assert name in show.stdout and "from the cli" in show.stdout
    assert "quality" in show.stdout and "avg" in show.stdout
    assert "persona" in show.stdout and "training topic" in show.stdout

    listed = await cli("list", "--limit", "1")
    assert listed.code == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 2 and lines[0].split()[:3] == ["ID", "NAME", "STATUS"]
    assert lines[1].split()[:3] == [file_id, name, "active"]  # newest first
    assert all(line == line.rstrip() for line in lines)  # no padding off a terminal

    members = await cli("conversations", file_id)
    assert UUID.findall(members.stdout) == ids


async def test_json_output_parses(cli: Cli, dataset: Dataset) -> None:
    name = unique("json")
    ids = dataset.ids()[3:6]
    run = await cli("--json", "create", name, "--ids", ",".join(ids))
    assert run.code == 0, run.stderr
    events = run.json_lines()
    stages = list(dict.fromkeys(event["stage"] for event in events))
    assert stages == [
        "STAGE_VALIDATING",
        "STAGE_FETCHING",
        "STAGE_AGGREGATING",
        "STAGE_UPLOADING",
        "STAGE_SAVING",
    ]
    created = events[-1]["training_file"]
    assert (created["name"], created["status"]) == (name, "TRAINING_FILE_STATUS_ACTIVE")
    file_id = created["id"]
    assert all(event["training_file_id"] == file_id for event in events)

    # --json is accepted after the command name too.
    shown = await cli("show", file_id, "--json")
    assert shown.json()["conversation_count"] == 3
    listed = (await cli("list", "--json")).json()["training_files"]
    assert file_id in [f["id"] for f in listed]
    members = (await cli("conversations", file_id, "--json")).json()["conversations"]
    assert [m["conversation_id"] for m in members] == ids
    eligible = (await cli("eligible", "--exclude", file_id, "--json")).json()["conversations"]
    assert eligible and not {c["conversation_id"] for c in eligible} & set(ids)
    link = (await cli("url", file_id, "--format", "json", "--expires", "120", "--json")).json()
    assert link["file_name"] == f"{name}.json" and link["url"].startswith("http")
    archived = (await cli("archive", file_id, "--json")).json()
    assert archived["status"] == "TRAINING_FILE_STATUS_ARCHIVED"


async def test_ids_from_a_file_and_from_standard_input(
    cli: Cli, dataset: Dataset, tmp_path: Path
) -> None:
    ids = dataset.ids()[6:12]
    listing = tmp_path / "ids.txt"
    listing.write_text(f"# chosen by hand\n{ids[0]}\n\n{ids[1]}  # the second\n{ids[2]}\n")
    created = await cli("--json", "create", unique("file"), "--ids-file", str(listing))
    assert created.code == 0, created.stderr
    training_file = created.json_lines()[-1]["training_file"]
    assert training_file["conversation_count"] == 3

    added = await cli(
        "--json", "add", training_file["id"], "--ids", "-", stdin="\n".join(ids[3:]) + "\n"
    )
    assert added.code == 0, added.stderr
    assert added.json_lines()[-1]["training_file"]["conversation_count"] == 6
    assert added.json_lines()[-1]["training_file"]["version"] == "2"  # int64: a JSON string

    piped = await cli("eligible", "--limit", "4", "--ids-only")
    assert piped.code == 0 and len(UUID.findall(piped.stdout)) == 4
    assert piped.stdout.splitlines() == UUID.findall(piped.stdout)


async def test_remove_makes_a_version_without_the_conversations(
    cli: Cli, dataset: Dataset, aclient: tfc.AsyncTrainingFilesClient
) -> None:
    ids = dataset.ids()[24:28]
    name = unique("remove")
    created = await aclient.create_training_file(name, ids).result()

    run = await cli("remove", created.id, "--ids", ids[1])
    assert run.code == 0, run.stderr
    for stage in ("validating", "rendering", "aggregating", "uploading", "saving"):
        assert stage in run.stderr, stage
    total = created.total_training_pairs
    assert f"{total}/{total}" in run.stderr and "pair/s" in run.stderr  # the stored pairs
    assert f"removed 1 from {name} {created.id}: 3 conversations" in run.stdout
    assert "version 2" in run.stdout

    piped = await cli("--json", "remove", created.id, "--ids", "-", stdin=f"{ids[3]}\n")
    assert piped.code == 0, piped.stderr
    events = piped.json_lines()
    assert list(dict.fromkeys(event["stage"] for event in events)) == [
        "STAGE_VALIDATING", "STAGE_RENDERING", "STAGE_AGGREGATING", "STAGE_UPLOADING",
        "STAGE_SAVING",
    ]  # fmt: skip
    after = events[-1]["training_file"]
    assert (after["version"], after["conversation_count"]) == ("3", 2)

    members = await cli("conversations", created.id)
    assert UUID.findall(members.stdout) == [ids[0], ids[2]]
    versions = await cli("versions", created.id)
    assert [line.split()[:3] for line in versions.stdout.splitlines()[1:]] == [
        ["3", "removed", "1"],
        ["2", "removed", "1"],
        ["1", "created", "4"],
    ]

    # Every offender with its reason (exit 6); the members named with them are not listed.
    outsider = dataset.ids()[28]
    refused = await cli("remove", created.id, "--ids", outsider, ids[0], ids[1])
    assert refused.code == 6, refused.stderr
    assert "CONVERSATIONS_NOT_IN_FILE" in refused.stderr
    for gone in (outsider, ids[1]):
        assert re.search(rf"^\s+{gone}\s+CONVERSATION_NOT_IN_FILE\s", refused.stderr, re.M)
    assert ids[0] not in refused.stderr
    emptied = await cli("remove", created.id, "--ids", ids[0], ids[2])
    assert emptied.code == 6 and "WOULD_EMPTY_FILE" in emptied.stderr
    malformed = await cli("remove", created.id, "--ids", "nope")
    assert malformed.code == 3
    assert re.search(r"^\s+nope\s+MALFORMED_ID\s", malformed.stderr, re.MULTILINE)
    missing = await cli("remove", str(uuid.uuid4()), "--ids", ids[0])
    assert missing.code == 4 and "NOT_FOUND" in missing.stderr
    assert (await aclient.get_training_file(created.id)).version == 3  # nothing changed


async def test_a_remove_of_many_outsiders_says_how_many_there_are(
    cli: Cli, dataset: Dataset, aclient: tfc.AsyncTrainingFilesClient, tmp_path: Path
) -> None:
    """No ValidateConversations for a removal: the listed offenders, and their count."""
    created = await aclient.create_training_file(unique("outsiders"), dataset.ids()[29:31]).result()
    unknown = [str(uuid.uuid4()) for _ in range(3000)]
    listing = tmp_path / "ids.txt"
    listing.write_text("\n".join(unknown) + "\n")

    run = await cli("remove", created.id, "--ids-file", str(listing))
    assert run.code == 6, run.stderr
    shown = [line.split()[0] for line in run.stderr.splitlines() if UUID.match(line.strip())]
    assert 0 < len(shown) < 3000 and shown == unknown[: len(shown)]
    assert f"… and {3000 - len(shown)} more the server did not list (3000 in all)" in run.stderr

    as_json = await cli("--json", "remove", created.id, "--ids-file", str(listing))
    assert as_json.code == 6
    error = json.loads(as_json.stderr)["error"]
    assert error["violations_total"] == 3000
    assert [v["subject"] for v in error["violations"]] == shown
    assert {v["reason"] for v in error["violations"]} == {"CONVERSATION_NOT_IN_FILE"}


@pytest.fixture(scope="module")
async def own(server: RunningServer, storage: Storage) -> list[GeneratedConversation]:
    made = list(generate(REFRESH_SEED, 4, owners=[OWNER]))
    await load(server.database.pool, storage.client, storage.conversations_bucket, made)
    return made


async def test_refresh_rebuilds_the_stale_conversations_or_says_nothing_is_stale(
    cli: Cli,
    aclient: tfc.AsyncTrainingFilesClient,
    own: list[GeneratedConversation],
    server: RunningServer,
    storage: Storage,
    token: str,
) -> None:
    ids = [str(c.conversation_id) for c in own[:3]]
    name = unique("refresh")
    created = await aclient.create_training_file(name, ids).result()

    unchanged = await cli("refresh", created.id)
    assert unchanged.code == 0, unchanged.stderr
    assert f"nothing stale: {name} {created.id} unchanged, 3 conversations" in unchanged.stdout
    assert "version 1" in unchanged.stdout and "fetching" not in unchanged.stderr
    shown = await cli("show", created.id)
    assert re.search(r"^stale conversations\s+0$", shown.stdout, re.MULTILINE), shown.stdout

    async with authorized_channel(server.port, token) as channel:
        stub = service_pb2_grpc.TrainingFileServiceStub(channel)
        await _reenrich_at_new_key(Setup(stub, server, storage, own), own[1])
    stale = await cli("show", created.id)
    assert re.search(r"^stale conversations\s+1$", stale.stdout, re.MULTILINE), stale.stdout

    run = await cli("refresh", created.id)
    assert run.code == 0, run.stderr
    for stage in ("validating", "fetching", "rendering", "aggregating", "uploading", "saving"):
        assert stage in run.stderr, stage
    assert "1/1" in run.stderr  # only the stale document was fetched
    assert f"refreshed {name} {created.id}: 3 conversations" in run.stdout
    assert "version 2" in run.stdout and "nothing stale" not in run.stdout
    after = await cli("show", created.id)
    assert re.search(r"^stale conversations\s+0$", after.stdout, re.MULTILINE)
    versions = await cli("versions", created.id)
    assert [line.split()[:3] for line in versions.stdout.splitlines()[1:]] == [
        ["2", "refreshed", "1"],
        ["1", "created", "3"],
    ]
    members = await cli("conversations", created.id)
    assert UUID.findall(members.stdout) == ids  # the refreshed one kept its place

    # With --json: the events; nothing stale is VALIDATING, then the file as it was.
    again = await cli("--json", "refresh", created.id)
    assert again.code == 0, again.stderr
    events = again.json_lines()
    assert events[0]["stage"] == "STAGE_VALIDATING"
    assert "STAGE_FETCHING" not in {event["stage"] for event in events}
    assert events[-1]["training_file"]["version"] == "2"

    # A stale conversation that can no longer be used: listed with why (exit 6), then
    # left out with --remove-ineligible.
    await server.database.pool.execute(
        "UPDATE conversations SET enrichment_status = 'enrichment_in_progress' "
        "WHERE conversation_id = $1",
        own[2].conversation_id,
    )
    refused = await cli("refresh", created.id)
    assert refused.code == 6, refused.stderr
    assert "CONVERSATIONS_NOT_ELIGIBLE" in refused.stderr
    assert re.search(rf"^\s+{ids[2]}\s+CONVERSATION_NOT_ENRICHED\s", refused.stderr, re.M)
    assert "--remove-ineligible" in refused.stderr
    assert ids[0] not in refused.stderr and ids[1] not in refused.stderr
    assert (await aclient.get_training_file(created.id)).version == 2  # nothing changed
    as_json = await cli("--json", "refresh", created.id)
    assert as_json.code == 6
    error = json.loads(as_json.stderr)["error"]
    assert [(v["subject"], v["reason"]) for v in error["violations"]] == [
        (ids[2], "CONVERSATION_NOT_ENRICHED")
    ]

    removed = await cli("refresh", created.id, "--remove-ineligible")
    assert removed.code == 0, removed.stderr
    assert f"refreshed {name} {created.id}: 2 conversations" in removed.stdout
    assert "version 3" in removed.stdout
    members = await cli("conversations", created.id)
    assert UUID.findall(members.stdout) == ids[:2]

    missing = await cli("refresh", str(uuid.uuid4()))
    assert missing.code == 4 and "NOT_FOUND" in missing.stderr


@pytest.fixture(scope="module")
async def selectable(server: RunningServer, storage: Storage) -> list[GeneratedConversation]:
    made = list(generate(SELECT_SEED, 24, owners=[SELECT_OWNER]))
    await load(server.database.pool, storage.client, storage.conversations_bucket, made)
    return made


async def test_selector_options_take_exactly_what_the_filter_selects(
    cli: Cli, selectable: list[GeneratedConversation], server: RunningServer
) -> None:
    pool = server.database.pool
    rows = await pool.fetch(
        "SELECT persona_id FROM conversations WHERE created_by = $1 "
        "GROUP BY persona_id ORDER BY count(*) DESC, persona_id LIMIT 2",
        SELECT_OWNER,
    )
    personas = [r["persona_id"] for r in rows]
    after = await pool.fetchval(
        "SELECT percentile_disc(0.25) WITHIN GROUP (ORDER BY created_at) FROM conversations "
        "WHERE created_by = $1",
        SELECT_OWNER,
    )
    expected = [
        r["conversation_id"] for r in await pool.fetch(ORACLE, SELECT_OWNER, personas, after)
    ]
    assert 2 < len(expected) < len(selectable)  # the filter leaves some out
    filters = ["--persona", str(personas[0]), "--persona", str(personas[1])]
    filters += ["--created-after", after.isoformat()]
    # A service_role token: a system file of SELECT_OWNER's conversations.
    options = [*filters, "--owner", str(SELECT_OWNER)]

    name = unique("selected")
    run = await cli("create", name, *options)  # no ids
    assert run.code == 0, run.stderr
    assert f"created {name}" in run.stdout and f"{len(expected)} conversations" in run.stdout
    file_id = UUID.findall(run.stdout)[0]
    members = await cli("conversations", file_id)
    assert UUID.findall(members.stdout) == expected  # oldest first

    # The pickers list the same conversations, newest first.
    listed = await cli("eligible", *options, "--ids-only")
    assert listed.code == 0, listed.stderr
    assert listed.stdout.split() == expected[::-1]
    as_json = (await cli("eligible", *options, "--json")).json()["conversations"]
    assert [c["conversation_id"] for c in as_json] == expected[::-1]
    assert {c["created_by"] for c in as_json} == {str(SELECT_OWNER)}
    excluded = await cli("eligible", *options, "--exclude", file_id, "--ids-only")
    assert excluded.code == 0 and excluded.stdout == ""
    # A user's selection is their own: no --owner.
    user = mint("authenticated", SELECT_OWNER)
    own = await cli("eligible", *filters, "--ids-only", TRAININGFILES_TOKEN=user)
    assert own.code == 0, own.stderr
    assert own.stdout.split() == expected[::-1]

    # An Add takes what the file lacks, after the ids given.
    partial = await cli("--json", "create", unique("partial"), "--ids", expected[1])
    partial_id = partial.json_lines()[-1]["training_file"]["id"]
    added = await cli("add", partial_id, "--ids", expected[0], *options)
    assert added.code == 0, added.stderr
    assert f"added {len(expected) - 1} to" in added.stdout
    members = await cli("conversations", partial_id)
    assert UUID.findall(members.stdout) == [expected[1], expected[0], *expected[2:]]

    # Refusals: the server's, with their exit codes; a bad time, the command's.
    malformed = await cli(
        "create", unique("bad"), "--persona", "nope", "--owner", str(SELECT_OWNER)
    )
    assert malformed.code == 3, malformed.stderr
    assert re.search(r"^\s+selector\.persona_ids\[0\]\s+MALFORMED_ID", malformed.stderr, re.M)
    nothing = await cli("create", unique("none"), "--persona", str(uuid.uuid4()), *options[-2:])
    assert nothing.code == 6, nothing.stderr
    assert "NO_CONVERSATIONS_SELECTED" in nothing.stderr and "hint:" in nothing.stderr
    theirs = await cli("eligible", "--owner", str(OWNER), TRAININGFILES_TOKEN=user)
    assert theirs.code == 9 and "SELECTOR_OWNER_NOT_ALLOWED" in theirs.stderr
    usage = await cli("create", unique("usage"), "--created-after", "last tuesday")
    assert usage.code == 2 and "ISO 8601" in usage.stderr


@pytest.fixture(scope="module")
async def filterable(server: RunningServer, storage: Storage) -> list[GeneratedConversation]:
    """An owner's conversations for the filter options only, oldest first."""
    made = list(generate(FILTER_SEED, 24, owners=[FILTER_OWNER]))
    await load(server.database.pool, storage.client, storage.conversations_bucket, made)
    return sorted(made, key=lambda c: (c.created_at, str(c.conversation_id)))


async def test_filter_options_reach_the_server(
    cli: Cli, filterable: list[GeneratedConversation], aclient: tfc.AsyncTrainingFilesClient
) -> None:
    def pairs(c: GeneratedConversation) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = json.loads(c.document or b"")["training_pairs"]
        return found

    def quality(c: GeneratedConversation) -> float:
        scores = [p["training_metadata"]["quality_score"] for p in pairs(c)]
        return float(sum(scores) / len(scores))

    emotion = pairs(filterable[0])[0]["emotional_context"]["detected_emotions"]["primary"]
    expected = [
        c
        for c in filterable
        if quality(c) >= 2.5
        and any(p["training_metadata"]["human_reviewed"] for p in pairs(c))
        and emotion in {p["emotional_context"]["detected_emotions"]["primary"] for p in pairs(c)}
    ]
    assert 0 < len(expected) < len(filterable)
    kept = [[p for p in pairs(c) if p["training_metadata"]["quality_score"] >= 3] for c in expected]
    members = [str(c.conversation_id) for c, k in zip(expected, kept, strict=True) if k]
    options = ["--owner", str(FILTER_OWNER), "--min-quality", "2.5", "--reviewed-only"]
    options += ["--emotion", emotion, "--emotion", "no-such-emotion", "--min-pair-quality", "3"]
    name = unique("filtered")
    run = await cli("create", name, *options)
    assert run.code == 0, run.stderr
    assert f"{len(members)} conversations" in run.stdout and "filtered out" in run.stdout
    assert "CONVERSATIONS_FILTERED_OUT" in run.stderr
    file_id = UUID.findall(run.stdout)[0]
    created = await aclient.get_training_file(file_id)
    assert created.pair_filter == resources_pb2.PairFilter(min_quality=3)
    assert created.total_training_pairs == sum(len(k) for k in kept)
    assert UUID.findall((await cli("conversations", file_id)).stdout) == members

    # An Add applies the file's pair filter; another one is refused, with a hint.
    other = await cli("add", file_id, "--ids", members[0], "--reviewed-pairs-only")
    assert other.code == 6, other.stderr
    assert "PAIR_FILTER_MISMATCH" in other.stderr and "hint:" in other.stderr
    # The listing shows the quality a build without a pair filter found ("-": none did).
    plain = await cli("create", unique("plain"), "--ids", members[0])
    assert plain.code == 0, plain.stderr
    shown = await cli("eligible", "--owner", str(FILTER_OWNER), "--limit", "100")
    assert shown.code == 0, shown.stderr
    columns = {
        line.split()[0]: line.split()[-2:]
        for line in shown.stdout.splitlines()
        if UUID.fullmatch(line.split()[0] if line.split() else "")
    }
    first = next(c for c in expected if str(c.conversation_id) == members[0])
    mean = Decimal(repr(quality(first))).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    assert columns[members[0]] == [f"{mean:.2f}", str(len(pairs(first)))]
    assert all(v == ["-", "-"] for k, v in columns.items() if k != members[0])
    # The listing reads no document: it has no document filter options.
    listing = await cli("eligible", "--owner", str(FILTER_OWNER), "--min-quality", "3")
    assert listing.code == 2 and "--min-quality" in listing.stderr


async def test_auto_refresh_is_set_at_create_and_switched_on_and_off(
    cli: Cli, dataset: Dataset
) -> None:
    created = await cli(
        "--json", "create", unique("auto"), "--ids", dataset.ids()[31], "--auto-refresh"
    )
    assert created.code == 0, created.stderr
    training_file = created.json_lines()[-1]["training_file"]
    file_id = training_file["id"]
    assert training_file["auto_refresh"] is True
    shown = await cli("show", file_id)
    assert re.search(r"^auto refresh\s+on$", shown.stdout, re.MULTILINE), shown.stdout
    assert "refresh attempts" not in shown.stdout  # none failed

    off = await cli("auto-refresh", file_id, "off")
    assert off.code == 0, off.stderr
    assert f"auto refresh off for {training_file['name']} {file_id}" in off.stdout
    shown = await cli("show", file_id)
    assert re.search(r"^auto refresh\s+off$", shown.stdout, re.MULTILINE), shown.stdout

    on = await cli("--json", "auto-refresh", file_id, "on")
    assert on.code == 0, on.stderr
    assert on.json()["auto_refresh"] is True
    assert (await cli("show", file_id, "--json")).json()["auto_refresh"] is True
    # Left off: no other test's server may refresh it.
    assert (await cli("auto-refresh", file_id, "off")).code == 0

    plain = await cli("--json", "create", unique("manual"), "--ids", dataset.ids()[32])
    assert plain.json_lines()[-1]["training_file"]["auto_refresh"] is False
    missing = await cli("auto-refresh", str(uuid.uuid4()), "on")
    assert missing.code == 4 and "NOT_FOUND" in missing.stderr
    usage = await cli("auto-refresh", file_id, "maybe")
    assert usage.code == 2


async def test_download_matches_the_stored_object(
    cli: Cli, dataset: Dataset, aclient: tfc.AsyncTrainingFilesClient, tmp_path: Path
) -> None:
    name = unique("download")
    created = await aclient.create_training_file(name, dataset.ids()[12:16]).result()

    run = await cli("download", created.id, "--format", "jsonl", "-o", f"{tmp_path}/")
    assert run.code == 0, run.stderr
    saved = tmp_path / f"{name}.jsonl"
    body = saved.read_bytes()
    assert len(body) == created.jsonl_file_size
    assert body.count(b"\n") == created.total_training_pairs
    assert names(tmp_path) == [f"{name}.jsonl"]  # no .part left behind

    as_json = await cli(
        "--json", "download", created.id, "--format", "json", "-o", str(tmp_path / "x")
    )
    assert as_json.code == 0, as_json.stderr
    assert as_json.json()["size_bytes"] == created.json_file_size
    document = json.loads((tmp_path / "x").read_bytes())
    assert document["dataset_metadata"]["dataset_name"] == name
    assert len(document["training_pairs"]) == created.total_training_pairs


async def test_a_download_that_differs_from_the_stored_object_exits_12(
    cli: Cli,
    dataset: Dataset,
    aclient: tfc.AsyncTrainingFilesClient,
    storage: Storage,
    tmp_path: Path,
) -> None:
    name = unique("short")
    created = await aclient.create_training_file(name, dataset.ids()[20:22]).result()
    # The stored object no longer has the size the service records for it.
    await storage.client.put_object(
        Bucket=created.storage_bucket, Key=created.jsonl_file_path, Body=b"{}\n"
    )

    run = await cli("download", created.id, "--format", "jsonl", "-o", f"{tmp_path}/")
    assert run.code == 12, run.stderr
    assert f"received 3 bytes, but the stored object has {created.jsonl_file_size}" in run.stderr
    assert names(tmp_path) == []  # neither the file nor its .part is kept

    as_json = await cli("--json", "download", created.id, "--format", "jsonl", "-o", f"{tmp_path}/")
    assert as_json.code == 12 and as_json.stdout == ""
    assert json.loads(as_json.stderr)["error"]["exit_code"] == 12
    assert names(tmp_path) == []


async def test_validation_failure_prints_every_offender(cli: Cli, dataset: Dataset) -> None:
    offenders = {
        dataset.ids(Kind.NOT_STARTED)[0]: "CONVERSATION_NOT_ENRICHED",
        dataset.ids(Kind.NULL_PATH)[0]: "CONVERSATION_NO_ENRICHED_FILE",
        str(uuid.uuid4()): "CONVERSATION_NOT_FOUND",
    }
    run = await cli("create", unique("bad"), "--ids", dataset.ids()[0], *offenders)
    assert run.code == 6, run.stderr
    assert "FAILED_PRECONDITION" in run.stderr
    for conversation_id, reason in offenders.items():
        line = next(line for line in run.stderr.splitlines() if conversation_id in line)
        assert reason in line
    assert dataset.ids()[0] not in run.stderr

    good = dataset.ids()[0]
    malformed = await cli("create", unique("bad"), "--ids", "nope", good, good)
    assert malformed.code == 3, malformed.stderr
    assert re.search(r"^\s+nope\s+MALFORMED_ID\s", malformed.stderr, re.MULTILINE)
    assert re.search(rf"^\s+{good}\s+DUPLICATE_ID\s", malformed.stderr, re.MULTILINE)

    as_json = await cli("--json", "create", unique("bad"), "--ids", *offenders)
    assert as_json.code == 6 and as_json.stdout == ""
    error = json.loads(as_json.stderr)["error"]
    assert error["code"] == "FAILED_PRECONDITION" and error["exit_code"] == 6
    assert {v["subject"]: v["reason"] for v in error["violations"]} == offenders


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_exit_codes(cli: Cli, dataset: Dataset) -> None:
    help_text = (await cli("--help")).stdout
    for code in ("0", "2", "3", "4", "6", "8", "10", "130"):
        assert re.search(rf"^\s+{code}\s", help_text, re.MULTILINE), code

    missing = await cli("show", str(uuid.uuid4()))
    assert missing.code == 4 and "NOT_FOUND" in missing.stderr

    name = unique("twice")
    assert (await cli("create", name, "--ids", dataset.ids()[16])).code == 0
    taken = await cli("create", name, "--ids", dataset.ids()[17])
    assert taken.code == 5 and "ALREADY_EXISTS" in taken.stderr

    anonymous = await cli("list", TRAININGFILES_TOKEN="")
    assert anonymous.code == 8 and "TRAININGFILES_TOKEN" in anonymous.stderr
    forged = await cli("list", "--token", "not-a-jwt")
    assert forged.code == 8

    # Create is never retried, so a missing server is reported at once.
    down = await cli(
        "create", "x", "--ids", dataset.ids()[0], "--target", f"127.0.0.1:{_closed_port()}"
    )
    assert down.code == 10 and "UNAVAILABLE" in down.stderr

    usage_errors = await asyncio.gather(
        cli("create", "no-ids"),
        cli("create", "x", "--ids-file", "/nonexistent/ids"),
        cli("frobnicate"),
        cli("list", "--limit", "0"),
        cli("list", TRAININGFILES_TLS="maybe"),
    )
    assert [run.code for run in usage_errors] == [2] * 5, [run.stderr for run in usage_errors]


async def test_timeout_bounds_every_call_and_exits_11(cli: Cli, dataset: Dataset) -> None:
    """A server that accepts the connection and never answers: only --timeout ends the
    calls (create has no deadline of its own, a read's own is 30 s)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        target = f"127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        read, create = await asyncio.gather(
            cli("list", "--timeout", "0.5", "--target", target),
            cli(
                "create",
                unique("t"),
                "--ids",
                dataset.ids()[0],
                "--timeout",
                "0.5",
                "--target",
                target,
            ),
        )
        elapsed = time.monotonic() - started
    for run in (read, create):
        assert run.code == 11, run.stderr
        assert "DEADLINE_EXCEEDED" in run.stderr and "--timeout" in run.stderr
    assert elapsed < 15  # not the reads' own 30 s


async def test_archived_files_cannot_be_extended(cli: Cli, dataset: Dataset) -> None:
    created = await cli("--json", "create", unique("archive"), "--ids", dataset.ids()[18])
    file_id = created.json_lines()[-1]["training_file"]["id"]
    archived = await cli("archive", file_id)
    assert archived.code == 0 and "archived" in archived.stdout
    refused = await cli("add", file_id, "--ids", dataset.ids()[19])
    assert refused.code == 6
    assert re.search(rf"^\s+{file_id}\s+TRAINING_FILE_NOT_ACTIVE\s", refused.stderr, re.MULTILINE)


async def test_ctrl_c_cancels_the_create_on_the_server(
    cli: Cli, dataset: Dataset, aclient: tfc.AsyncTrainingFilesClient
) -> None:
    ids = dataset.usable()[:100]

    def interrupt_after_first_event() -> tuple[dict[str, Any], int, str]:
        args = [*command(), "--json", "create", unique("interrupted"), "--ids", *ids]
        process = subprocess.Popen(
            [*WITH_DEFAULT_SIGINT, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli.env,
        )
        assert process.stdout is not None
        first = json.loads(process.stdout.readline())
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=TIMEOUT)
        return first, process.returncode, stderr

    first, code, stderr = await asyncio.to_thread(interrupt_after_first_event)
    assert code == 130, stderr
    error = json.loads(stderr)["error"]
    assert error["code"] == "CANCELLED" and "cancelled on the server" in error["message"]
    file_id = first["training_file_id"]
    assert error["training_file_id"] == file_id

    # The server marks the file FAILED as it unwinds the cancelled call.
    deadline = time.monotonic() + TIMEOUT
    while True:
        training_file = await aclient.get_training_file(file_id)
        if training_file.status != resources_pb2.TRAINING_FILE_STATUS_PROCESSING:
            break
        assert time.monotonic() < deadline, "the file stayed PROCESSING"
        await asyncio.sleep(0.05)
    assert training_file.status == resources_pb2.TRAINING_FILE_STATUS_FAILED


async def test_every_offender_is_shown_when_the_details_were_cut(cli: Cli, tmp_path: Path) -> None:
    """More offenders than fit the error's details: the CLI asks ValidateConversations."""
    unknown = [str(uuid.uuid4()) for _ in range(3000)]
    listing = tmp_path / "ids.txt"
    listing.write_text("\n".join(unknown) + "\n")

    run = await cli("create", unique("cut"), "--ids-file", str(listing))
    assert run.code == 6, run.stderr
    shown = [line.split()[0] for line in run.stderr.splitlines() if UUID.match(line.strip())]
    assert shown == unknown

    as_json = await cli("--json", "create", unique("cut"), "--ids-file", str(listing))
    assert as_json.code == 6
    violations = json.loads(as_json.stderr)["error"]["violations"]
    assert [v["subject"] for v in violations] == unknown
    assert {v["reason"] for v in violations} == {"CONVERSATION_NOT_FOUND"}


async def test_help_has_examples_and_the_shared_options_everywhere(cli: Cli) -> None:
    commands = [
        "create", "add", "remove", "refresh", "list", "show", "auto-refresh", "archive",
        "conversations", "eligible", "download", "url", "completion",
    ]  # fmt: skip
    root = await cli("--help")
    assert root.code == 0
    for name in commands:
        assert re.search(rf"^\s+{name}\s+\S", root.stdout, re.MULTILINE), name
    helps = await asyncio.gather(*(cli(name, "-h") for name in commands))
    for name, shown in zip(commands, helps, strict=True):
        assert shown.code == 0, shown.stderr
        assert "Examples:" in shown.stdout and f"trainingfiles {name}" in shown.stdout, name
        for option in ("--target", "--address", "--token", "--json", "--timeout", "--tls"):
            assert option in shown.stdout, (name, option)
    # No server rule is copied into the help: the server's errors state its limits.
    everything = root.stdout + "".join(shown.stdout for shown in helps)
    for rule in ("1000", "2000 characters", "604800", "1-128"):
        assert rule not in everything, rule


async def test_limits_come_from_the_servers_errors(cli: Cli, dataset: Dataset) -> None:
    link = await cli("url", str(uuid.uuid4()), "--expires", "5")
    assert link.code == 3, link.stderr  # the expiry is checked before the file is looked up
    assert re.search(r"^\s+expires_in\s+OUT_OF_RANGE\s.*604800", link.stderr, re.MULTILINE)
    long = await cli(
        "create", unique("long"), "--ids", dataset.ids()[0], "--description", "x" * 2001
    )
    assert long.code == 3
    assert re.search(r"^\s+description\s+TOO_LONG\s.*2000", long.stderr, re.MULTILINE)
    many = await cli("list", "--limit", "5000", "--json")
    assert many.code == 0, many.stderr  # the server serves its largest page instead


async def test_shared_options_work_before_and_after_the_command(
    cli: Cli, server: RunningServer, token: str
) -> None:
    target = f"127.0.0.1:{server.port}"
    empty = {"TRAININGFILES_TARGET": "127.0.0.1:1", "TRAININGFILES_TOKEN": ""}
    before = await cli("--address", target, "--token", token, "--json", "list", **empty)
    after = await cli("list", "--target", target, "--json", "--token", token, **empty)
    assert before.code == after.code == 0, (before.stderr, after.stderr)
    assert before.json() == after.json()
    # The command's own value wins over the group's.
    overridden = await cli("--target", "127.0.0.1:1", "list", "--target", target, "--json")
    assert overridden.code == 0, overridden.stderr
    timed_out = await cli("--timeout", "0.000001", "list")
    assert timed_out.code == 11 and "DEADLINE_EXCEEDED" in timed_out.stderr


async def test_shell_completion(
    cli: Cli, dataset: Dataset, aclient: tfc.AsyncTrainingFilesClient
) -> None:
    for shell in ("bash", "zsh", "fish"):
        script = await cli("completion", shell)
        assert script.code == 0, script.stderr
        assert "_TRAININGFILES_COMPLETE" in script.stdout and "trainingfiles" in script.stdout
    assert (await cli("completion", "bash", "--json")).json()["shell"] == "bash"
    assert (await cli("completion", "tcsh")).code == 2

    def complete(*words: str) -> set[str]:
        """What bash would be offered for the last of `trainingfiles WORDS`."""
        line = ["trainingfiles", *words]
        env = {"_TRAININGFILES_COMPLETE": "bash_complete", "COMP_WORDS": " ".join(line)}
        env["COMP_CWORD"] = str(len(line) - 1)
        done = subprocess.run(
            command(), capture_output=True, text=True, env={**cli.env, **env}, timeout=TIMEOUT
        )
        assert done.returncode == 0, done.stderr
        return {item.split(",", 1)[1] for item in done.stdout.splitlines() if item}

    commands = await asyncio.to_thread(complete, "c")
    assert commands == {"create", "conversations", "completion"}
    formats = await asyncio.to_thread(complete, "download", "x", "--format", "")
    assert formats == {*(f.value for f in tfc.Format), "json", "jsonl"}
    options = await asyncio.to_thread(complete, "list", "--st")
    assert options == {"--status"}

    # FILE_ID asks the server for the newest files.
    created = await aclient.create_training_file(unique("complete"), dataset.ids()[40:41]).result()
    ids = await asyncio.to_thread(complete, "show", created.id[:8])
    assert created.id in ids
    no_server = await asyncio.to_thread(complete, "--target", "127.0.0.1:1", "show", "")
    assert no_server == set()


@pytest.fixture(scope="module")
async def warned(server: RunningServer, storage: Storage) -> list[GeneratedConversation]:
    made = list(generate(WARNED_SEED, 20, owners=[OWNER], awkward=Awkward(other_profile=11)))
    await load(server.database.pool, storage.client, storage.conversations_bucket, made)
    return made


async def test_progress_shows_one_line_per_warning_kind_with_its_total(
    cli: Cli, warned: list[GeneratedConversation]
) -> None:
    """A Create warned about 11 conversations (in several warnings) prints one summary
    line with the total; with --verbose also each warning, naming its conversations."""
    ids = [str(c.conversation_id) for c in warned if c.kind.document_valid]
    others = [str(c.conversation_id) for c in warned if c.kind is Kind.OTHER_PROFILE]
    assert len(others) == 11 and ids[0] not in others

    run = await cli("create", unique("warned"), "--ids", *ids)
    assert run.code == 0, run.stderr
    lines = [line for line in run.stderr.splitlines() if "CONSULTANT_PROFILE_MISMATCH" in line]
    assert lines == ["warning CONSULTANT_PROFILE_MISMATCH: 11 conversations"]
    assert not any(other in run.stderr for other in others)

    verbose = await cli("create", unique("warned"), "--ids", *ids, "--verbose")
    assert verbose.code == 0, verbose.stderr
    summary = "warning CONSULTANT_PROFILE_MISMATCH: 11 conversations"
    each = [
        line
        for line in verbose.stderr.splitlines()
        if line.startswith("warning CONSULTANT_PROFILE_MISMATCH") and line != summary
    ]
    assert len(each) > 1  # the 11 come in several warnings, each shown
    assert all(other in verbose.stderr for other in others)
    assert summary in verbose.stderr.splitlines()
