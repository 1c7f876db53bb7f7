"""The client's and the command's outputs surface: formats and splits by name, a build's
split, ExportTrainingFile, downloading every output into a folder, a file's versions
(ListTrainingFileVersions, and `version` on the reads and downloads), RemoveConversations,
RefreshTrainingFile and SetAutoRefresh, selectors (`Selector` on Create, Add and
ListEligibleConversations), and the options of `create`, `add`, `remove`, `refresh`,
`auto-refresh`, `export`, `url`, `download`, `show`, `conversations`, `versions` and
`eligible`.

Pure tests: nothing connects to a server. The downloads read ``file://`` URLs, and the
commands run against a stand-in client (click's CliRunner).
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from google.rpc import error_details_pb2

import trainingfiles_client as tfc
from trainingfiles.v1 import resources_pb2, service_pb2
from trainingfiles_client import _calls, _methods
from trainingfiles_client.cli.commands import downloads
from trainingfiles_client.cli.main import cli, main
from trainingfiles_client.cli.session import Session

Request = service_pb2.CreateTrainingFileRequest
ONE_HOUR = datetime.timedelta(hours=1)
PARQUET = resources_pb2.FILE_FORMAT_PARQUET
OPENAI = resources_pb2.FILE_FORMAT_OPENAI_CHAT
NAMES = [
    "v4_json",
    "v4_jsonl",
    "openai_chat",
    "chat_messages",
    "prompt_completion",
    "sharegpt",
    "alpaca",
    "parquet",
    "dataset_card",
]


@pytest.fixture
def client() -> Iterator[tfc.TrainingFilesClient]:
    with tfc.TrainingFilesClient("127.0.0.1:1", token="t") as client:
        yield client


def prepared(client: Any, name: str, *args: Any, **kwargs: Any) -> _calls.Prepared:
    """What a method of `client` would send, built without sending it."""
    build = getattr(type(client), name).__wrapped__
    method = _methods.METHODS[_calls.rpc_name(name)]
    result: _calls.Prepared = client._prepare(method, build(client, *args, **kwargs))
    return result


# ----------------------------------------------------------------- names


def test_every_format_of_the_contract_has_one_name() -> None:
    assert [f.value for f in tfc.Format] == NAMES
    values = [v.number for v in resources_pb2.FileFormat.DESCRIPTOR.values if v.number]
    assert sorted(f.proto for f in tfc.Format) == sorted(values)
    assert tfc.Format.V4_JSON.proto == resources_pb2.FILE_FORMAT_JSON
    assert tfc.Format.V4_JSONL.proto == resources_pb2.FILE_FORMAT_JSONL
    assert tfc.Format.DATASET_CARD not in tfc.Format.requestable()
    for member in tfc.Format:
        assert tfc.Format.of(member.proto) is tfc.Format.of(member.value) is member
        assert tfc.Format.of(resources_pb2.FileFormat.Name(member.proto)) is member  # type: ignore[arg-type]


def test_old_spellings_and_unknown_names() -> None:
    assert tfc.Format.of("json") is tfc.Format.V4_JSON
    assert tfc.Format.of("JSONL") is tfc.Format.V4_JSONL
    assert tfc.Format.of("parquet") == "parquet"  # a str, too
    for wrong in ("csv", 0, 99, True, None):
        with pytest.raises(ValueError, match="one of v4_json, v4_jsonl, openai_chat") as raised:
            tfc.Format.of(wrong)
        assert "dataset_card" in str(raised.value)


def test_every_split_of_the_contract_has_one_name() -> None:
    assert [s.value for s in tfc.Split] == ["all", "train", "validation"]
    assert tfc.Split.of("validation").proto == resources_pb2.SPLIT_VALIDATION
    assert tfc.Split.of(resources_pb2.SPLIT_TRAIN) is tfc.Split.TRAIN
    assert tfc.Split.of("SPLIT_ALL") is tfc.Split.ALL
    with pytest.raises(ValueError, match="unknown split 'test': one of all, train, validation"):
        tfc.Split.of("test")
    assert "Example:" in (tfc.Format.__doc__ or "") and "Example:" in (tfc.Split.__doc__ or "")


def test_split_options_are_the_contracts_message() -> None:
    split = tfc.SplitOptions(validation_fraction=0.1, seed=7, stratify="persona")
    assert split.proto() == resources_pb2.SplitOptions(
        validation_fraction=0.1, seed=7, stratify=resources_pb2.SplitOptions.STRATIFY_PERSONA
    )
    counted = tfc.SplitOptions(validation_count=3, stratify="training_topic")
    assert counted.proto().WhichOneof("size") == "validation_count"
    for each in (split, counted):
        assert tfc.SplitOptions.of(each.proto()) == each
    assert tfc.SplitOptions.of(resources_pb2.SplitOptions()) is None
    with pytest.raises(ValueError, match="one of validation_fraction and validation_count"):
        tfc.SplitOptions()
    with pytest.raises(ValueError, match="one of validation_fraction and validation_count"):
        tfc.SplitOptions(validation_fraction=0.1, validation_count=3)
    with pytest.raises(ValueError, match="unknown stratify 'age'"):
        tfc.SplitOptions(validation_count=3, stratify="age")  # type: ignore[arg-type]


# ----------------------------------------------------------------- requests


def test_create_takes_formats_a_split_and_drop_duplicates(client: tfc.TrainingFilesClient) -> None:
    split = tfc.SplitOptions(validation_fraction=0.1, seed=7, stratify="training_topic")
    built = prepared(
        client,
        "create_training_file",
        "n",
        ["c"],
        formats=["openai_chat", tfc.Format.PARQUET, resources_pb2.FILE_FORMAT_ALPACA, "jsonl"],
        split=split,
        drop_duplicates=True,
    )
    expected = Request(
        name="n",
        conversation_ids=["c"],
        formats=[
            OPENAI,
            PARQUET,
            resources_pb2.FILE_FORMAT_ALPACA,
            resources_pb2.FILE_FORMAT_JSONL,
        ],
        split=split.proto(),
        drop_duplicates=True,
    )
    assert built.request == expected
    # The whole request as a dict takes the same names; a message goes as it is.
    as_dict: dict[str, Any] = {"name": "n", "conversation_ids": ["c"], "formats": ["parquet"]}
    as_dict |= {"split": {"validation_count": 2}}
    by_dict = prepared(client, "create_training_file", request=as_dict).request
    assert by_dict == Request(
        name="n",
        conversation_ids=["c"],
        formats=[PARQUET],
        split=resources_pb2.SplitOptions(validation_count=2),
    )
    plain = prepared(client, "create_training_file", "n", ["c"]).request
    assert not plain.HasField("split") and not plain.formats  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="formats must be a list"):
        client.create_training_file("n", ["c"], formats="parquet")
    with pytest.raises(ValueError, match="unknown format 'csv'"):
        client.create_training_file("n", ["c"], formats=["csv"])


def test_add_and_export_take_formats(client: tfc.TrainingFilesClient) -> None:
    add = prepared(client, "add_conversations", "f", ["c"], formats=["sharegpt"]).request
    assert add == service_pb2.AddConversationsRequest(
        training_file_id="f", conversation_ids=["c"], formats=[resources_pb2.FILE_FORMAT_SHAREGPT]
    )
    export = prepared(client, "export_training_file", "f", ["openai_chat", PARQUET])
    assert export.request == service_pb2.ExportTrainingFileRequest(
        training_file_id="f", formats=[OPENAI, PARQUET]
    )
    # A build: streamed, no deadline, no retries, like Create and Add.
    assert export.timeout is None
    method = _methods.METHODS["ExportTrainingFile"]
    assert (method.kind, method.timeout, method.retry) == (_methods.Kind.STREAMING, None, None)
    by_dict = prepared(
        client, "export_training_file", request={"training_file_id": "f", "formats": ["alpaca"]}
    ).request
    assert list(by_dict.formats) == [resources_pb2.FILE_FORMAT_ALPACA]  # type: ignore[attr-defined]


def test_download_urls_take_a_format_and_a_split_by_name(client: tfc.TrainingFilesClient) -> None:
    link = prepared(client, "get_download_url", "f", "parquet", 600, "validation").request
    expected = service_pb2.GetDownloadUrlRequest(
        training_file_id="f", format=PARQUET, split=resources_pb2.SPLIT_VALIDATION
    )
    expected.expires_in.seconds = 600
    assert link == expected
    old = prepared(client, "get_download_url", "f", "json").request
    assert old == service_pb2.GetDownloadUrlRequest(
        training_file_id="f", format=resources_pb2.FILE_FORMAT_JSON
    )
    card = prepared(client, "get_download_url", "f", tfc.Format.DATASET_CARD, split=tfc.Split.ALL)
    assert card.request == service_pb2.GetDownloadUrlRequest(
        training_file_id="f",
        format=resources_pb2.FILE_FORMAT_DATASET_CARD,
        split=resources_pb2.SPLIT_ALL,
    )


# ----------------------------------------------------------------- every output into a folder


def stored(tmp_path: Path, name: str, body: bytes) -> tuple[str, str]:
    """An object in the stand-in store: its file:// URL and SHA-256."""
    store = tmp_path / "store"
    store.mkdir(exist_ok=True)
    (store / name).write_bytes(body)
    return (store / name).as_uri(), hashlib.sha256(body).hexdigest()


class Service:
    """The two rpcs `download_outputs` calls, answered from `outputs` and `links`."""

    def __init__(self, tmp_path: Path, objects: Mapping[tuple[Any, Any, str], bytes]) -> None:
        self.training_file = resources_pb2.TrainingFile(id="f", name="demo")
        self.links: dict[tuple[Any, Any], service_pb2.GetDownloadUrlResponse] = {}
        for (file_format, split, name), body in objects.items():
            url, digest = stored(tmp_path, name, body)
            self.training_file.outputs.add(
                format=file_format,
                split=split,
                object_key=f"k/{name}",
                size_bytes=len(body),
                record_count=body.count(b"\n"),
                sha256=digest,
                file_name=name,
            )
            self.links[(file_format, split)] = service_pb2.GetDownloadUrlResponse(
                url=url,
                size_bytes=len(body),
                file_name=name,
                split=split,
                sha256=digest,
            )
        self.asked: list[tuple[int, int]] = []
        self.versions: list[tuple[str, Any]] = []  # each call's `version` argument

    def get_training_file(self, training_file_id: str, **options: Any) -> Any:
        assert training_file_id == "f"
        self.versions.append(("get_training_file", options.get("version")))
        return self.training_file

    def get_download_url(
        self, training_file_id: str, file_format: int, expires: Any, split: int, **options: Any
    ) -> Any:
        self.asked.append((file_format, split))
        self.versions.append(("get_download_url", options.get("version")))
        return self.links[(file_format, split)]

    def install(self, client: Any, asynchronous: bool = False) -> None:
        """Answer the client's calls (awaitably for the asyncio face)."""
        for name in ("get_training_file", "get_download_url"):
            method = getattr(self, name)
            if asynchronous:

                async def answer(*args: Any, _method: Any = method, **kwargs: Any) -> Any:
                    return _method(*args, **kwargs)

                setattr(client, name, answer)
            else:
                setattr(client, name, method)


TRAIN, VALIDATION = resources_pb2.SPLIT_TRAIN, resources_pb2.SPLIT_VALIDATION
ALL = resources_pb2.SPLIT_ALL
OBJECTS = {
    (resources_pb2.FILE_FORMAT_JSONL, ALL, "demo.jsonl"): b'{"a": 1}\n{"a": 2}\n',
    (OPENAI, TRAIN, "demo.openai_chat.train.jsonl"): b'{"messages": []}\n' * 9,
    (OPENAI, VALIDATION, "demo.openai_chat.validation.jsonl"): b'{"messages": []}\n',
    (resources_pb2.FILE_FORMAT_DATASET_CARD, ALL, "README.md"): b"---\nconfigs: []\n---\n",
}


def test_every_output_is_saved_under_its_name(
    client: tfc.TrainingFilesClient, tmp_path: Path
) -> None:
    service = Service(tmp_path, OBJECTS)
    service.install(client)
    folder = tmp_path / "out" / "demo"
    seen: list[tfc.Downloaded] = []
    saved = client.download_outputs("f", folder, on_saved=seen.append)
    assert saved == seen
    assert [(d.path.name if d.path else "", d.format, d.split) for d in saved] == [
        ("demo.jsonl", tfc.Format.V4_JSONL, tfc.Split.ALL),
        ("demo.openai_chat.train.jsonl", tfc.Format.OPENAI_CHAT, tfc.Split.TRAIN),
        ("demo.openai_chat.validation.jsonl", tfc.Format.OPENAI_CHAT, tfc.Split.VALIDATION),
        ("README.md", tfc.Format.DATASET_CARD, tfc.Split.ALL),
    ]
    assert sorted(p.name for p in folder.iterdir()) == sorted(name for *_, name in OBJECTS)
    for (_, _, name), body in OBJECTS.items():
        assert (folder / name).read_bytes() == body
    card = saved[-1]
    assert card.sha256 == hashlib.sha256(b"---\nconfigs: []\n---\n").hexdigest()
    assert service.asked == [key[:2] for key in OBJECTS]


def test_the_asyncio_face_downloads_the_same(tmp_path: Path) -> None:
    async def scenario() -> list[tfc.Downloaded]:
        async with tfc.AsyncTrainingFilesClient("127.0.0.1:1") as aclient:
            Service(tmp_path, OBJECTS).install(aclient, asynchronous=True)
            return await aclient.download_outputs("f", str(tmp_path / "out"))

    saved = asyncio.run(scenario())
    assert [d.size for d in saved] == [len(body) for body in OBJECTS.values()]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(n for *_, n in OBJECTS)


def test_a_corrupt_object_stops_the_download_and_leaves_no_part(
    client: tfc.TrainingFilesClient, tmp_path: Path
) -> None:
    service = Service(tmp_path, OBJECTS)
    service.install(client)
    # The third object's bytes are not the stored ones (same size, other content).
    (tmp_path / "store" / "demo.openai_chat.validation.jsonl").write_bytes(b'{"messages": {}}\n')
    with pytest.raises(tfc.DownloadError, match="SHA-256 is"):
        client.download_outputs("f", tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "demo.jsonl",
        "demo.openai_chat.train.jsonl",
    ]


def test_a_short_object_and_a_changed_version_are_refused(
    client: tfc.TrainingFilesClient, tmp_path: Path
) -> None:
    service = Service(tmp_path, OBJECTS)
    service.install(client)
    (tmp_path / "store" / "README.md").write_bytes(b"---\n")
    with pytest.raises(tfc.DownloadError, match="received 4 bytes, but the stored object has"):
        client.download_outputs("f", tmp_path / "short")
    assert not (tmp_path / "short" / "README.md").exists()
    assert not list((tmp_path / "short").glob("*.part"))

    # A URL that serves another object than the output listed (an Add ran between).
    service.links[(OPENAI, TRAIN)].size_bytes += 1
    with pytest.raises(tfc.DownloadError, match="changed while its URL was issued"):
        client.download_outputs("f", tmp_path / "changed")
    assert not (tmp_path / "changed").exists()  # nothing fetched before every URL


def test_only_plain_file_names_are_written(client: tfc.TrainingFilesClient, tmp_path: Path) -> None:
    service = Service(tmp_path, {(OPENAI, ALL, "x.jsonl"): b"{}\n"})
    service.links[(OPENAI, ALL)].file_name = "../escape.jsonl"
    service.install(client)
    with pytest.raises(tfc.DownloadError, match="not a plain file name"):
        client.download_outputs("f", tmp_path / "out")
    assert not (tmp_path / "escape.jsonl").exists()


def test_a_file_without_outputs_asks_for_the_v4_ones(
    client: tfc.TrainingFilesClient, tmp_path: Path
) -> None:
    service = Service(
        tmp_path,
        {
            (resources_pb2.FILE_FORMAT_JSON, ALL, "old.json"): b"{}",
            (resources_pb2.FILE_FORMAT_JSONL, ALL, "old.jsonl"): b"{}\n",
        },
    )
    del service.training_file.outputs[:]
    service.install(client)
    saved = client.download_outputs("f", tmp_path / "out")
    assert [d.path.name for d in saved if d.path] == ["old.json", "old.jsonl"]


def test_a_download_to_a_file_object(tmp_path: Path) -> None:
    url, digest = stored(tmp_path, "x", b"hello")
    link = service_pb2.GetDownloadUrlResponse(url=url, size_bytes=5, sha256=digest.upper())
    with (tmp_path / "sink").open("wb") as sink:
        done = tfc.download(link, sink)
    assert (done.path, done.size, done.sha256) == (None, 5, digest)
    assert (tmp_path / "sink").read_bytes() == b"hello"


# ----------------------------------------------------------------- versions


def versions() -> list[resources_pb2.TrainingFileVersion]:
    """A file's versions, newest first: the current one, an Add, a pruned first one."""
    current = resources_pb2.TrainingFileVersion(
        version=3, reason=resources_pb2.VERSION_REASON_ADDED, change_count=2, current=True
    )
    current.conversation_count, current.total_training_pairs = 22, 44
    current.avg_quality_score = 4.5
    current.create_time.FromSeconds(1_790_000_000)
    added = resources_pb2.TrainingFileVersion(
        version=2, reason=resources_pb2.VERSION_REASON_ADDED, change_count=5
    )
    added.conversation_count, added.total_training_pairs = 20, 40
    first = resources_pb2.TrainingFileVersion(
        version=1, reason=resources_pb2.VERSION_REASON_RECORDED, pruned=True
    )
    first.conversation_count, first.total_training_pairs = 15, 30
    first.prune_time.FromSeconds(1_790_000_060)
    return [current, added, first]


def test_versions_are_a_list_rpc_read_like_the_others(client: tfc.TrainingFilesClient) -> None:
    method = _methods.METHODS["ListTrainingFileVersions"]
    assert (method.kind, method.items) == (_methods.Kind.PAGED, "versions")
    assert (method.timeout, method.retry) == (_methods.UNARY_TIMEOUT, _methods.READ)
    listed = prepared(client, "list_training_file_versions", "f", 10)
    assert listed.request == service_pb2.ListTrainingFileVersionsRequest(
        training_file_id="f", page_size=10
    )
    assert listed.timeout == _methods.UNARY_TIMEOUT
    resumed = prepared(
        client, "list_training_file_versions", request={"training_file_id": "f", "page_token": "t"}
    )
    assert resumed.start == "t"


class Pages:
    """A stand-in ListTrainingFileVersions: three versions, two to a page."""

    def __init__(self) -> None:
        self.tokens: list[str] = []

    def __call__(self, request: Any, **kwargs: Any) -> service_pb2.ListTrainingFileVersionsResponse:
        assert request.training_file_id == "f"
        self.tokens.append(request.page_token)
        every = versions()
        if request.page_token == "":
            return service_pb2.ListTrainingFileVersionsResponse(
                versions=every[:2], next_page_token="next"
            )
        return service_pb2.ListTrainingFileVersionsResponse(versions=every[2:])


def test_versions_page_on_both_faces(client: tfc.TrainingFilesClient) -> None:
    pages = Pages()
    call = replace(prepared(client, "list_training_file_versions", "f"), send_with=pages)
    assert [v.version for v in client._paged(call)] == [3, 2, 1]
    assert pages.tokens == ["", "next"]

    async def scenario() -> tuple[list[int], list[str]]:
        async with tfc.AsyncTrainingFilesClient("127.0.0.1:1") as aclient:
            apages = Pages()

            async def send(request: Any, **kwargs: Any) -> Any:
                return apages(request, **kwargs)

            built = prepared(aclient, "list_training_file_versions", "f")
            pager = aclient._paged(replace(built, send_with=send))
            return [v.version async for v in pager], apages.tokens

    assert asyncio.run(scenario()) == ([3, 2, 1], ["", "next"])


def test_version_selects_an_earlier_version(client: tfc.TrainingFilesClient) -> None:
    got = prepared(client, "get_training_file", "f", 2).request
    assert got == service_pb2.GetTrainingFileRequest(training_file_id="f", version=2)
    members = prepared(client, "list_training_file_conversations", "f", version=1).request
    assert members == service_pb2.ListTrainingFileConversationsRequest(
        training_file_id="f", version=1
    )
    link = prepared(client, "get_download_url", "f", "parquet", split="validation", version=1)
    assert link.request == service_pb2.GetDownloadUrlRequest(
        training_file_id="f", format=PARQUET, split=VALIDATION, version=1
    )
    by_dict = prepared(client, "get_download_url", request={"training_file_id": "f", "version": 4})
    assert by_dict.request.version == 4  # type: ignore[attr-defined]
    # Left out, or 0: the current version (the field unset).
    for current in (
        prepared(client, "get_training_file", "f"),
        prepared(client, "get_training_file", "f", 0),
    ):
        assert current.request == service_pb2.GetTrainingFileRequest(training_file_id="f")


def test_every_output_of_a_version_is_saved(
    client: tfc.TrainingFilesClient, tmp_path: Path
) -> None:
    service = Service(tmp_path, OBJECTS)
    service.training_file.version = 2
    for link in service.links.values():
        link.version = 2
    service.install(client)
    saved = client.download_outputs("f", tmp_path / "v2", version=2)
    assert len(saved) == len(OBJECTS)
    # The file is described as that version, and every URL asked for of it.
    assert service.versions == [
        ("get_training_file", 2),
        *[("get_download_url", 2)] * len(OBJECTS),
    ]
    service.versions.clear()
    client.download_outputs("f", tmp_path / "current")
    assert {version for _, version in service.versions} == {None}


def test_a_url_of_another_version_is_refused(
    client: tfc.TrainingFilesClient, tmp_path: Path
) -> None:
    # The current version was 2 when the file was read; an Add made 3 before this URL.
    service = Service(tmp_path, OBJECTS)
    service.training_file.version = 2
    for link in service.links.values():
        link.version = 2
    service.links[(OPENAI, VALIDATION)].version = 3
    service.install(client)
    with pytest.raises(tfc.DownloadError, match="changed while its URL was issued"):
        client.download_outputs("f", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_asyncio_face_passes_the_version(tmp_path: Path) -> None:
    service = Service(tmp_path, OBJECTS)

    async def scenario() -> list[tfc.Downloaded]:
        async with tfc.AsyncTrainingFilesClient("127.0.0.1:1") as aclient:
            service.install(aclient, asynchronous=True)
            return await aclient.download_outputs("f", str(tmp_path / "out"), version=1)

    assert len(asyncio.run(scenario())) == len(OBJECTS)
    assert {version for _, version in service.versions} == {1}


# ----------------------------------------------------------------- the command line


class Operation:
    """A finished build: no events, then `training_file`."""

    def __init__(self, training_file: resources_pb2.TrainingFile) -> None:
        self.training_file = training_file
        self.training_file_id = training_file.id

    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def result(self) -> resources_pb2.TrainingFile:
        return self.training_file


class Recorder:
    """A stand-in client that records the calls the commands make."""

    target = "127.0.0.1:1"

    def __init__(self, training_file: resources_pb2.TrainingFile) -> None:
        self.training_file = training_file
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.operations: dict[str, Any] = {}  # a method's own operation, for this test

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args, kwargs))
            if name in self.operations:
                return self.operations[name]
            if name in (
                "create_training_file",
                "add_conversations",
                "remove_conversations",
                "refresh_training_file",
                "export_training_file",
            ):
                return Operation(self.training_file)
            if name == "get_download_url":
                return service_pb2.GetDownloadUrlResponse(
                    url="https://x/y", file_name="y", version=kwargs.get("version") or 3
                )
            if name == "list_training_file_versions":
                return versions()
            if name == "list_training_file_conversations":
                return [resources_pb2.TrainingFileConversation(conversation_id="c")]
            return self.training_file

        return call

    def download_outputs(self, file_id: str, folder: str, **kwargs: Any) -> list[tfc.Downloaded]:
        self.calls.append(("download_outputs", (file_id, folder), kwargs))
        saved = []
        for name, size, split in (("a.train.jsonl", 2048, "train"), ("README.md", 10, "all")):
            done = tfc.Downloaded(
                Path(folder) / name, size, "0" * 64, tfc.Format.OPENAI_CHAT, tfc.Split(split)
            )
            kwargs["on_saved"](done)
            saved.append(done)
            if self.fail:
                raise tfc.DownloadError("the SHA-256 is 1…, the stored one 0…")
        return saved

    fail = False

    def close(self) -> None:
        pass


def a_file() -> resources_pb2.TrainingFile:
    f = resources_pb2.TrainingFile(id="f", name="demo", conversation_count=20, version=1)
    f.total_training_pairs = 40
    f.duplicate_pair_count, f.duplicates_dropped, f.untrainable_pair_count = 3, True, 2
    f.split.CopyFrom(tfc.SplitOptions(validation_fraction=0.1, seed=7, stratify="persona").proto())
    f.outputs.add(
        format=OPENAI,
        split=VALIDATION,
        size_bytes=2048,
        record_count=4,
        sha256="ab" * 32,
        file_name="demo.openai_chat.validation.jsonl",
    )
    return f


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder(a_file())
    monkeypatch.setattr(Session, "client", property(lambda self: recorder))
    return recorder


def run(*args: str) -> Any:
    """The command through click's runner (usage errors: exit code 2 and their message)."""
    return CliRunner().invoke(cli, [*args, "--target", "127.0.0.1:1"])


@dataclass(frozen=True)
class Ran:
    exit_code: int
    output: str


@pytest.fixture
def trainingfiles(capsys: pytest.CaptureFixture[str]) -> Callable[..., Ran]:
    """The command through its entry point, which turns a handler's result into the exit
    code (click's runner keeps only usage errors' codes)."""

    def call(*args: str) -> Ran:
        code = main([*args, "--target", "127.0.0.1:1"])
        captured = capsys.readouterr()
        return Ran(code, captured.out + captured.err)

    return call


def test_create_passes_formats_the_split_and_duplicates(
    recorder: Recorder, trainingfiles: Callable[..., Ran]
) -> None:
    result = trainingfiles(
        "create", "demo", "--ids", "a", "b", "--format", "openai_chat", "--format", "parquet",
        "--validation-fraction", "0.1", "--seed", "7", "--stratify", "persona",
        "--drop-duplicates",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    name, args, kwargs = recorder.calls[0]
    assert (name, args[:2]) == ("create_training_file", ("demo", ["a", "b"]))
    assert kwargs["formats"] == ("openai_chat", "parquet")
    assert kwargs["split"] == tfc.SplitOptions(validation_fraction=0.1, seed=7, stratify="persona")
    assert kwargs["drop_duplicates"] is True
    assert "created demo f" in result.output and "openai_chat" in result.output

    plain = trainingfiles("create", "demo", "--ids", "a", "--validation-count", "3")
    assert plain.exit_code == 0, plain.output
    kwargs = recorder.calls[1][2]
    assert kwargs["split"] == tfc.SplitOptions(validation_count=3)
    assert (kwargs["formats"], kwargs["drop_duplicates"]) == (None, None)


def test_add_and_export_pass_their_formats(
    recorder: Recorder, trainingfiles: Callable[..., Ran]
) -> None:
    assert trainingfiles("add", "f", "--ids", "a", "--format", "sharegpt").exit_code == 0
    assert recorder.calls[-1][2]["formats"] == ("sharegpt",)
    exported = trainingfiles("export", "f", "--format", "alpaca", "--format", "parquet")
    assert exported.exit_code == 0, exported.output
    assert recorder.calls[-1][:2] == ("export_training_file", ("f", ("alpaca", "parquet")))
    assert "exported alpaca, parquet of demo f" in exported.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create", "x", "--ids", "a", "--format", "csv"], "'csv' is not one of 'v4_json'"),
        (["add", "f", "--ids", "a", "--format", "dataset_card"], "is not one of 'v4_json'"),
        (["export", "f", "--format", "nope"], "'parquet'"),
        (["export", "f"], "Missing option '--format'"),
        (["url", "f", "--format", "csv"], "'dataset_card'"),
        (["download", "f", "--split", "test"], "'all', 'train', 'validation'"),
        (
            [
                "create",
                "x",
                "--ids",
                "a",
                "--validation-fraction",
                "0.1",
                "--validation-count",
                "3",
            ],
            "--validation-fraction and --validation-count exclude each other",
        ),
        (["create", "x", "--ids", "a", "--seed", "3"], "need --validation-fraction"),
        (["create", "x", "--ids", "a", "--stratify", "age"], "'persona', 'training_topic'"),
        (["download", "f", "--all", "d", "--format", "parquet"], "--all takes every output"),
        (["show", "f", "--version", "-1"], "-1 is not in the range x>=0"),
        (["versions"], "Missing argument 'FILE_ID'"),
        (["remove"], "Missing argument 'FILE_ID'"),
        (["remove", "f"], "no conversation ids"),
        (["remove", "f", "--ids", "a", "--format", "alpaca"], "No such option '--format'"),
        (["refresh"], "Missing argument 'FILE_ID'"),
        (["refresh", "f", "--ids", "a"], "No such option '--ids'"),
        (["auto-refresh", "f"], "Missing argument 'on|off'"),
        (["auto-refresh", "f", "yes"], "'yes' is not one of 'on', 'off'"),
    ],
)
def test_argument_errors_exit_2_and_say_what_is_valid(
    recorder: Recorder, args: list[str], message: str
) -> None:
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not recorder.calls  # refused before any call


def test_url_and_download_take_any_format_and_a_split(
    recorder: Recorder, trainingfiles: Callable[..., Ran]
) -> None:
    def asked(*args: str) -> tuple[Any, ...]:
        assert trainingfiles("url", "f", *args).exit_code == 0
        return recorder.calls[-1][1]

    assert asked("--format", "dataset_card") == ("f", "dataset_card", None, None)
    assert asked("--format", "json", "--split", "all", "--expires", "60") == (
        "f",
        "json",
        60,
        "all",
    )
    assert asked() == ("f", "v4_jsonl", None, None)


def test_show_lists_the_outputs_split_and_duplicates(
    recorder: Recorder, trainingfiles: Callable[..., Ran]
) -> None:
    result = trainingfiles("show", "f")
    assert result.exit_code == 0, result.output
    text = result.output
    for expected in (
        "FORMAT",
        "openai_chat",
        "validation",
        "2.0 KiB",
        "abababababab",
        "demo.openai_chat.validation.jsonl",
        "3 (dropped from the trainer formats)",
        "2 pairs without a target",
        "10 % of the conversations for validation, seed 7, stratified by persona",
    ):
        assert expected in text, expected
    assert "ab" * 32 not in text  # a prefix of the digest only


def test_download_all_prints_each_file_and_fails_with_12(
    recorder: Recorder, trainingfiles: Callable[..., Ran]
) -> None:
    result = trainingfiles("download", "f", "--all", "out")
    assert result.exit_code == 0, result.output
    assert (
        "out/a.train.jsonl (2.0 KiB)" in result.output and "out/README.md (10 B)" in result.output
    )
    assert recorder.calls[-1][:2] == ("download_outputs", ("f", "out"))
    listed = trainingfiles("--json", "download", "f", "--all", "out")
    assert listed.exit_code == 0, listed.output
    assert '"split": "train"' in listed.output and '"format": "openai_chat"' in listed.output
    recorder.fail = True
    failed = trainingfiles("download", "f", "--all", "out")
    assert failed.exit_code == 12
    assert "out/a.train.jsonl" in failed.output and "SHA-256" in failed.output


def test_versions_lists_each_with_its_reason_and_marks(
    recorder: Recorder, trainingfiles: Callable[..., Ran]
) -> None:
    result = trainingfiles("versions", "f", "--limit", "3")
    assert result.exit_code == 0, result.output
    assert recorder.calls[-1][:2] == ("list_training_file_versions", ("f", 3))
    lines = result.output.splitlines()
    assert lines[0].split() == [
        "VER", "REASON", "CHANGED", "CONVS", "PAIRS", "QUALITY", "CREATED", "STATE",
    ]  # fmt: skip
    assert lines[1].split() == [
        "3", "added", "2", "22", "44", "4.50", "2026-09-21", "14:13:20Z", "current",
    ]  # fmt: skip
    assert lines[2].split() == ["2", "added", "5", "20", "40"]
    # Recorded before versions were: no change count; pruned, with when.
    assert lines[3].split() == ["1", "recorded", "15", "30", "pruned", "2026-09-21", "14:14:20Z"]
    assert "3 versions" in result.output

    listed = trainingfiles("--json", "versions", "f")
    assert listed.exit_code == 0, listed.output
    document = json.loads(listed.output)
    assert [v["version"] for v in document["versions"]] == ["3", "2", "1"]  # int64: strings
    assert document["versions"][0]["reason"] == "VERSION_REASON_ADDED"
    assert [v["pruned"] for v in document["versions"]] == [False, False, True]


def test_version_reaches_every_read_and_download(
    recorder: Recorder, trainingfiles: Callable[..., Ran], monkeypatch: pytest.MonkeyPatch
) -> None:
    def version_of(*args: str) -> Any:
        result = trainingfiles(*args)
        assert result.exit_code == 0, result.output
        return recorder.calls[-1][2]["version"]

    assert version_of("show", "f", "--version", "1") == 1
    assert version_of("show", "f") is None  # the current one
    assert version_of("conversations", "f", "--version", "2") == 2
    assert version_of("conversations", "f") is None
    assert version_of("url", "f", "--version", "2") == 2
    assert version_of("download", "f", "--all", "out", "--version", "2") == 2
    assert version_of("download", "f", "--all", "out") is None

    served = trainingfiles("url", "f", "--version", "2")
    assert "version 2" in served.output  # the version the URL serves, on stderr

    fetched: list[Path] = []

    def save(link: Any, path: Path, console: Any, timeout: Any) -> tfc.Downloaded:
        fetched.append(path)
        return tfc.Downloaded(path, 3, "0" * 64)

    monkeypatch.setattr(downloads, "save", save)
    assert version_of("download", "f", "--format", "parquet", "--version", "2", "-o", "x") == 2
    one = trainingfiles("--json", "download", "f", "--version", "1", "-o", "x")
    assert one.exit_code == 0, one.output
    assert json.loads(one.output)["version"] == 1
    assert fetched == [Path("x"), Path("x")]


# ----------------------------------------------------------------- removals

Stage = service_pb2.TrainingFileProgress


def test_remove_is_a_build_like_add(client: tfc.TrainingFilesClient) -> None:
    method = _methods.METHODS["RemoveConversations"]
    assert (method.kind, method.timeout, method.retry) == (_methods.Kind.STREAMING, None, None)
    expected = service_pb2.RemoveConversationsRequest(
        training_file_id="f", conversation_ids=["a", "b"]
    )
    by_fields = prepared(client, "remove_conversations", "f", ["a", "b"])
    assert (by_fields.request, by_fields.timeout) == (expected, None)
    as_dict = {"training_file_id": "f", "conversation_ids": ("a", "b")}
    assert prepared(client, "remove_conversations", request=as_dict).request == expected
    assert prepared(client, "remove_conversations", request=expected).request == expected


class Stream(Operation):
    """A build's stream: `events`, then `error` (or Ctrl-C, or the file)."""

    def __init__(
        self,
        training_file: resources_pb2.TrainingFile,
        events: Sequence[service_pb2.TrainingFileProgress] = (),
        error: tfc.TrainingFilesError | None = None,
        interrupt: bool = False,
    ) -> None:
        super().__init__(training_file)
        self.events, self.error, self.interrupt = events, error, interrupt
        self.cancelled = False

    def __iter__(self) -> Iterator[Any]:
        yield from self.events
        if self.interrupt:
            raise KeyboardInterrupt
        if self.error is not None:
            raise self.error

    def result(self) -> resources_pb2.TrainingFile:
        if self.error is not None:
            raise self.error
        return self.training_file

    def cancel(self) -> bool:
        self.cancelled = True
        return True


def removal_events(after: resources_pb2.TrainingFile) -> list[service_pb2.TrainingFileProgress]:
    """A RemoveConversations stream: RENDERING counts the stored file's pairs."""
    return [
        Stage(stage=Stage.STAGE_VALIDATING, training_file_id="f"),
        Stage(stage=Stage.STAGE_RENDERING, done=20, total=44, training_file_id="f"),
        Stage(stage=Stage.STAGE_RENDERING, done=44, total=44, training_file_id="f"),
        Stage(stage=Stage.STAGE_AGGREGATING, training_file_id="f"),
        Stage(stage=Stage.STAGE_UPLOADING, training_file_id="f"),
        Stage(stage=Stage.STAGE_SAVING, training_file_id="f", training_file=after),
    ]


def test_remove_sends_every_id_and_prints_the_new_version(
    recorder: Recorder,
    trainingfiles: Callable[..., Ran],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = trainingfiles("remove", "f", "--ids", "a", "b,c")
    assert result.exit_code == 0, result.output
    assert recorder.calls[-1] == ("remove_conversations", ("f", ["a", "b", "c"]), {})
    assert "removed 3 from demo f: 20 conversations, 40 training pairs, version 1" in result.output

    listing = tmp_path / "drop.txt"
    listing.write_text("# gone\nd\ne\n", encoding="utf-8")
    monkeypatch.setattr("sys.stdin", iter(["a\n"]))
    both = trainingfiles("remove", "f", "--ids", "-", "--ids-file", str(listing), "--timeout", "9")
    assert both.exit_code == 0, both.output
    assert recorder.calls[-1] == ("remove_conversations", ("f", ["a", "d", "e"]), {"timeout": 9})
    assert not [name for name, *_ in recorder.calls if name == "validate_conversations"]


def test_remove_shows_the_rendering_of_pairs_and_json_lines(
    recorder: Recorder, trainingfiles: Callable[..., Ran]
) -> None:
    after = a_file()
    after.version, after.conversation_count, after.total_training_pairs = 2, 19, 38
    recorder.operations["remove_conversations"] = Stream(after, removal_events(after))
    shown = trainingfiles("remove", "f", "--ids", "a")
    assert shown.exit_code == 0, shown.output
    for stage in ("validating", "rendering", "aggregating", "uploading", "saving"):
        assert stage in shown.output, stage
    assert "44/44" in shown.output  # pairs of the stored file
    assert "removed 1 from demo f: 19 conversations, 38 training pairs, version 2" in shown.output

    lines = trainingfiles("--json", "remove", "f", "--ids", "a")
    assert lines.exit_code == 0, lines.output
    events = [json.loads(line) for line in lines.output.splitlines()]
    assert [e["stage"] for e in events] == [
        "STAGE_VALIDATING", "STAGE_RENDERING", "STAGE_RENDERING", "STAGE_AGGREGATING",
        "STAGE_UPLOADING", "STAGE_SAVING",
    ]  # fmt: skip
    assert (events[2]["done"], events[2]["total"]) == (44, 44)
    assert events[-1]["training_file"]["version"] == "2"  # int64: a JSON string


def refusal(
    reason: str,
    offenders: list[tuple[str, str]],
    total: int | None = None,
    description: str = "not in the training file",
    what: str = "removed",
) -> Any:
    """A FAILED_PRECONDITION as the server sends it: ErrorInfo, then PreconditionFailure."""
    info = error_details_pb2.ErrorInfo(reason=reason, domain="trainingfiles.v1")
    if total is not None:
        info.metadata["violations_total"] = str(total)
        info.metadata["violations_listed"] = str(len(offenders))
    failure = error_details_pb2.PreconditionFailure()
    for subject, kind in offenders:
        failure.violations.add(type=kind, subject=subject, description=description)
    message = f"{total or len(offenders)} conversation(s) cannot be {what}: …"
    return tfc.FailedPrecondition(message, details=[info, failure])


def test_a_refused_remove_lists_each_offender_and_how_many_there_are(
    recorder: Recorder, trainingfiles: Callable[..., Ran]
) -> None:
    listed = [("1" * 8, "CONVERSATION_NOT_IN_FILE"), ("2" * 8, "CONVERSATION_NOT_IN_FILE")]
    cut = refusal("CONVERSATIONS_NOT_IN_FILE", listed, total=5)
    recorder.operations["remove_conversations"] = Stream(a_file(), error=cut)
    result = trainingfiles("remove", "f", "--ids", "a")
    assert result.exit_code == 6, result.output
    assert "FAILED_PRECONDITION (CONVERSATIONS_NOT_IN_FILE)" in result.output
    for subject, reason in listed:
        line = next(line for line in result.output.splitlines() if subject in line)
        assert reason in line
    assert "… and 3 more the server did not list (5 in all)" in result.output
    # There is no ValidateConversations of a removal: the listed ones are what there is.
    assert [name for name, *_ in recorder.calls] == ["remove_conversations"]

    as_json = trainingfiles("--json", "remove", "f", "--ids", "a")
    assert as_json.exit_code == 6
    error = json.loads(as_json.output)["error"]
    assert (error["reason"], error["exit_code"], error["violations_total"]) == (
        "CONVERSATIONS_NOT_IN_FILE",
        6,
        5,
    )
    assert [(v["subject"], v["reason"]) for v in error["violations"]] == listed

    emptying = refusal("WOULD_EMPTY_FILE", [("conversation_ids", "WOULD_EMPTY_FILE")])
    recorder.operations["remove_conversations"] = Stream(a_file(), error=emptying)
    refused = trainingfiles("remove", "f", "--ids", "a")
    assert refused.exit_code == 6, refused.output
    assert re.search(r"^\s+conversation_ids\s+WOULD_EMPTY_FILE\s", refused.output, re.MULTILINE)
    assert "more" not in refused.output
    whole = json.loads(trainingfiles("--json", "remove", "f", "--ids", "a").output)["error"]
    assert "violations_total" not in whole  # every one is listed


def test_ctrl_c_cancels_the_remove_on_the_server(
    recorder: Recorder, trainingfiles: Callable[..., Ran]
) -> None:
    first = [Stage(stage=Stage.STAGE_VALIDATING, training_file_id="f")]
    stream = Stream(a_file(), first, interrupt=True)
    recorder.operations["remove_conversations"] = stream
    result = trainingfiles("remove", "f", "--ids", "a")
    assert result.exit_code == 130, result.output
    assert stream.cancelled
    assert "cancelled on the server; training file f keeps its previous content" in result.output


# ----------------------------------------------------------------- refreshes


def test_refresh_is_a_build_like_remove(client: tfc.TrainingFilesClient) -> None:
    method = _methods.METHODS["RefreshTrainingFile"]
    assert (method.kind, method.timeout, method.retry) == (_methods.Kind.STREAMING, None, None)
    assert method.response is service_pb2.TrainingFileProgress
    expected = service_pb2.RefreshTrainingFileRequest(training_file_id="f", remove_ineligible=True)
    by_fields = prepared(client, "refresh_training_file", "f", True)
    assert (by_fields.request, by_fields.timeout) == (expected, None)
    as_dict = {"training_file_id": "f", "remove_ineligible": True}
    assert prepared(client, "refresh_training_file", request=as_dict).request == expected
    assert prepared(client, "refresh_training_file", request=expected).request == expected
    plain = prepared(client, "refresh_training_file", "f").request
    assert plain == service_pb2.RefreshTrainingFileRequest(training_file_id="f")


def test_set_auto_refresh_is_a_write_like_archive(client: tfc.TrainingFilesClient) -> None:
    method = _methods.METHODS["SetAutoRefresh"]
    archive = _methods.METHODS["ArchiveTrainingFile"]
    assert (method.kind, method.timeout, method.retry) == (archive.kind, archive.timeout, None)
    assert (method.kind, method.timeout) == (_methods.Kind.UNARY, _methods.UNARY_TIMEOUT)
    assert method.response is resources_pb2.TrainingFile
    on = prepared(client, "set_auto_refresh", "f", True)
    assert on.request == service_pb2.SetAutoRefreshRequest(training_file_id="f", enabled=True)
    assert on.timeout == _methods.UNARY_TIMEOUT
    off = prepared(client, "set_auto_refresh", request={"training_file_id": "f", "enabled": False})
    assert off.request == service_pb2.SetAutoRefreshRequest(training_file_id="f")
    created = prepared(client, "create_training_file", "n", ["a"], auto_refresh=True).request
    assert created == Request(name="n", conversation_ids=["a"], auto_refresh=True)
    assert not prepared(client, "create_training_file", "n", ["a"]).request.auto_refresh  # type: ignore[attr-defined]


def refresh_events(after: resources_pb2.TrainingFile) -> list[service_pb2.TrainingFileProgress]:
    """A RefreshTrainingFile stream: FETCHING counts the stale documents, RENDERING pairs."""
    return [
        Stage(stage=Stage.STAGE_VALIDATING, training_file_id="f"),
        Stage(stage=Stage.STAGE_FETCHING, done=2, total=2, training_file_id="f"),
        Stage(stage=Stage.STAGE_RENDERING, done=44, total=44, training_file_id="f"),
        Stage(stage=Stage.STAGE_AGGREGATING, training_file_id="f"),
        Stage(stage=Stage.STAGE_UPLOADING, training_file_id="f"),
        Stage(stage=Stage.STAGE_SAVING, training_file_id="f", training_file=after),
    ]


def test_refresh_prints_the_new_version_or_that_nothing_was_stale(
    recorder: Recorder, trainingfiles: Callable[..., Ran]
) -> None:
    # Nothing stale: VALIDATING, then the file as it was (the same version).
    same = a_file()
    nothing = [
        Stage(stage=Stage.STAGE_VALIDATING, training_file_id="f"),
        Stage(stage=Stage.STAGE_SAVING, training_file_id="f", training_file=same),
    ]
    recorder.operations["refresh_training_file"] = Stream(same, nothing)
    unchanged = trainingfiles("refresh", "f")
    assert unchanged.exit_code == 0, unchanged.output
    assert [call[:2] for call in recorder.calls] == [
        ("get_training_file", ("f",)),
        ("refresh_training_file", ("f",)),
    ]
    assert recorder.calls[-1][2] == {"remove_ineligible": None}
    assert (
        "nothing stale: demo f unchanged, 20 conversations, 40 training pairs, version 1"
        in unchanged.output
    )
    assert "refreshed" not in unchanged.output

    after = a_file()
    after.version, after.conversation_count, after.total_training_pairs = 2, 19, 44
    recorder.operations["refresh_training_file"] = Stream(after, refresh_events(after))
    shown = trainingfiles("refresh", "f", "--remove-ineligible", "--timeout", "9")
    assert shown.exit_code == 0, shown.output
    assert recorder.calls[-2:] == [
        ("get_training_file", ("f",), {"timeout": 9}),
        ("refresh_training_file", ("f",), {"remove_ineligible": True, "timeout": 9}),
    ]
    for stage in ("validating", "fetching", "rendering", "aggregating", "uploading", "saving"):
        assert stage in shown.output, stage
    assert "2/2" in shown.output and "44/44" in shown.output
    assert "refreshed demo f: 19 conversations, 44 training pairs, version 2" in shown.output
    assert "nothing stale" not in shown.output

    # JSON lines: the events alone, and no read before (the events tell).
    calls = len(recorder.calls)
    lines = trainingfiles("--json", "refresh", "f")
    assert lines.exit_code == 0, lines.output
    events = [json.loads(line) for line in lines.output.splitlines()]
    assert [e["stage"] for e in events] == [
        "STAGE_VALIDATING", "STAGE_FETCHING", "STAGE_RENDERING", "STAGE_AGGREGATING",
        "STAGE_UPLOADING", "STAGE_SAVING",
    ]  # fmt: skip
    assert events[-1]["training_file"]["version"] == "2"
    assert [name for name, *_ in recorder.calls[calls:]] == ["refresh_training_file"]


def test_a_refused_refresh_lists_every_stale_conversation_it_cannot_use(
    recorder: Recorder, trainingfiles: Callable[..., Ran]
) -> None:
    listed = [("1" * 8, "CONVERSATION_NOT_ENRICHED"), ("2" * 8, "CONVERSATION_NOT_FOUND")]
    refused = refusal(
        "CONVERSATIONS_NOT_ELIGIBLE", listed, description="cannot be used", what="used"
    )
    recorder.operations["refresh_training_file"] = Stream(a_file(), error=refused)
    result = trainingfiles("refresh", "f")
    assert result.exit_code == 6, result.output
    assert "FAILED_PRECONDITION (CONVERSATIONS_NOT_ELIGIBLE)" in result.output
    for subject, reason in listed:
        assert re.search(rf"^\s+{subject}\s+{reason}\s+cannot be used$", result.output, re.M)
    assert "hint: refresh with --remove-ineligible" in result.output
    assert "more" not in result.output
    # No ValidateConversations of a refresh either.
    assert "validate_conversations" not in [name for name, *_ in recorder.calls]

    as_json = trainingfiles("--json", "refresh", "f")
    assert as_json.exit_code == 6
    error = json.loads(as_json.output)["error"]
    assert (error["reason"], error["exit_code"]) == ("CONVERSATIONS_NOT_ELIGIBLE", 6)
    assert [(v["subject"], v["reason"]) for v in error["violations"]] == listed
    assert "violations_total" not in error and "hint" not in as_json.output

    cut = refusal("CONVERSATIONS_NOT_ELIGIBLE", listed, total=7, what="used")
    recorder.operations["refresh_training_file"] = Stream(a_file(), error=cut)
    many = trainingfiles("refresh", "f")
    assert many.exit_code == 6, many.output
    assert "… and 5 more the server did not list (7 in all)" in many.output

    emptying = refusal("WOULD_EMPTY_FILE", [("conversation_ids", "WOULD_EMPTY_FILE")])
    recorder.operations["refresh_training_file"] = Stream(a_file(), error=emptying)
    emptied = trainingfiles("refresh", "f", "--remove-ineligible")
    assert emptied.exit_code == 6, emptied.output
    assert re.search(r"^\s+conversation_ids\s+WOULD_EMPTY_FILE\s", emptied.output, re.M)


def test_ctrl_c_cancels_the_refresh_on_the_server(
    recorder: Recorder, trainingfiles: Callable[..., Ran]
) -> None:
    first = [Stage(stage=Stage.STAGE_VALIDATING, training_file_id="f")]
    stream = Stream(a_file(), first, interrupt=True)
    recorder.operations["refresh_training_file"] = stream
    result = trainingfiles("refresh", "f")
    assert result.exit_code == 130, result.output
    assert stream.cancelled
    assert "cancelled on the server; training file f keeps its previous content" in result.output


# ----------------------------------------------------------------- automatic refresh


def test_create_asks_for_auto_refresh(
    recorder: Recorder, trainingfiles: Callable[..., Ran]
) -> None:
    assert trainingfiles("create", "demo", "--ids", "a", "--auto-refresh").exit_code == 0
    assert recorder.calls[-1][2]["auto_refresh"] is True
    assert trainingfiles("create", "demo", "--ids", "a").exit_code == 0
    assert recorder.calls[-1][2]["auto_refresh"] is None


def test_auto_refresh_turns_it_on_and_off(
    recorder: Recorder, trainingfiles: Callable[..., Ran]
) -> None:
    recorder.training_file.auto_refresh = True
    on = trainingfiles("auto-refresh", "f", "on")
    assert on.exit_code == 0, on.output
    assert recorder.calls[-1] == ("set_auto_refresh", ("f", True), {})
    assert "auto refresh on for demo f" in on.output

    recorder.training_file.auto_refresh = False
    off = trainingfiles("auto-refresh", "f", "off", "--timeout", "4")
    assert off.exit_code == 0, off.output
    assert recorder.calls[-1] == ("set_auto_refresh", ("f", False), {"timeout": 4})
    assert "auto refresh off for demo f" in off.output

    as_json = trainingfiles("--json", "auto-refresh", "f", "off")
    assert as_json.exit_code == 0, as_json.output
    document = json.loads(as_json.output)
    assert (document["id"], document["auto_refresh"]) == ("f", False)


def test_show_says_how_stale_the_file_is_and_how_it_is_refreshed(
    recorder: Recorder, trainingfiles: Callable[..., Ran]
) -> None:
    quiet = trainingfiles("show", "f")
    assert quiet.exit_code == 0, quiet.output
    assert re.search(r"^auto refresh\s+off$", quiet.output, re.M)
    assert "stale" not in quiet.output  # unset: an earlier version, or an older server
    assert "refresh attempts" not in quiet.output and "next refresh" not in quiet.output

    f = recorder.training_file
    f.stale_conversation_count, f.auto_refresh = 0, True
    fresh = trainingfiles("show", "f")
    assert re.search(r"^stale conversations\s+0$", fresh.output, re.M)
    assert re.search(r"^auto refresh\s+on$", fresh.output, re.M)
    assert "refresh attempts" not in fresh.output

    f.stale_conversation_count, f.refresh_attempts = 2, 3
    f.refresh_error = "1 conversation(s) cannot be used: [not enriched]"
    f.next_refresh_time.FromSeconds(1_790_000_000)
    failing = trainingfiles("show", "f")
    assert failing.exit_code == 0, failing.output
    for pattern in (
        r"^stale conversations\s+2$",
        r"^auto refresh\s+on$",
        r"^refresh attempts\s+3 failed in a row$",
        r"^refresh error\s+1 conversation\(s\) cannot be used: \[not enriched\]$",
        r"^next refresh\s+2026-09-21 14:13:20Z$",
    ):
        assert re.search(pattern, failing.output, re.M), pattern

    document = json.loads(trainingfiles("--json", "show", "f").output)
    assert (document["stale_conversation_count"], document["refresh_attempts"]) == (2, 3)
    assert document["auto_refresh"] is True


def test_versions_name_removals_and_refreshes(
    recorder: Recorder, trainingfiles: Callable[..., Ran]
) -> None:
    reasons = [
        (5, resources_pb2.VERSION_REASON_REFRESHED, 2),
        (4, resources_pb2.VERSION_REASON_REMOVED, 1),
        (3, resources_pb2.VERSION_REASON_ADDED, 3),
        (2, 99, 1),  # newer than this client: its number
        (1, resources_pb2.VERSION_REASON_CREATED, 4),
    ]
    recorder.operations["list_training_file_versions"] = [
        resources_pb2.TrainingFileVersion(version=v, reason=r, change_count=c)  # type: ignore[arg-type]
        for v, r, c in reasons
    ]
    result = trainingfiles("versions", "f")
    assert result.exit_code == 0, result.output
    rows = [line.split()[:3] for line in result.output.splitlines()[1:6]]
    assert rows == [
        ["5", "refreshed", "2"],
        ["4", "removed", "1"],
        ["3", "added", "3"],
        ["2", "99", "1"],
        ["1", "created", "4"],
    ]
    listed = json.loads(trainingfiles("--json", "versions", "f").output)["versions"]
    assert [v["reason"] for v in listed[:2]] == [
        "VERSION_REASON_REFRESHED",
        "VERSION_REASON_REMOVED",
    ]


# ----------------------------------------------------------------- selectors

PERSONA = "6f1d2c3b-0a9e-4d8c-b7a6-5e4f3d2c1b0a"
NOVEMBER = datetime.datetime(2026, 11, 1, tzinfo=datetime.UTC)


def test_a_selector_is_the_contracts_message() -> None:
    owner = uuid.UUID("00000000-0000-4000-8000-0000000000d1")
    selector = tfc.Selector(
        persona_ids=[PERSONA, uuid.UUID(PERSONA)],
        emotional_arc_ids=("a",),
        training_topic_ids=iter(["t1", "t2"]),
        created_after=NOVEMBER,
        created_before=datetime.datetime(2026, 12, 1, 1, tzinfo=datetime.timezone(ONE_HOUR)),
        owner=owner,
        limit=50,
    )
    expected = service_pb2.ConversationSelector(
        persona_ids=[PERSONA, PERSONA],
        emotional_arc_ids=["a"],
        training_topic_ids=["t1", "t2"],
        owner=str(owner),
        limit=50,
    )
    expected.created_after.FromDatetime(NOVEMBER)
    expected.created_before.FromDatetime(datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC))
    assert selector.proto() == expected
    # Kept as tuples of strings: equal selectors are equal, however their ids came.
    assert selector.training_topic_ids == ("t1", "t2")
    assert tfc.Selector(persona_ids=[PERSONA]) == tfc.Selector(persona_ids=(uuid.UUID(PERSONA),))
    assert hash(tfc.Selector(limit=3)) == hash(tfc.Selector(limit=3))
    # A naive time is UTC; fields left out are not set (an empty selector matches all).
    naive = tfc.Selector(created_after=datetime.datetime(2026, 11, 1)).proto()
    assert naive.created_after == expected.created_after
    assert not naive.HasField("created_before") and not naive.persona_ids
    assert (naive.owner, naive.limit) == ("", 0)
    assert tfc.Selector().proto() == service_pb2.ConversationSelector()
    with pytest.raises(TypeError, match="persona_ids must be a list, not a single id"):
        tfc.Selector(persona_ids=PERSONA)
    with pytest.raises(TypeError, match="training_topic_ids must be a list"):
        tfc.Selector(training_topic_ids=uuid.UUID(PERSONA))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="created_after must be a datetime, not str"):
        tfc.Selector(created_after="2026-11-01")  # type: ignore[arg-type]


def test_create_add_and_eligible_take_a_selector(client: tfc.TrainingFilesClient) -> None:
    selector = tfc.Selector(persona_ids=[PERSONA], created_after=NOVEMBER, limit=5)
    # With a selector, no id need be listed.
    created = prepared(client, "create_training_file", "n", selector=selector).request
    assert created == Request(name="n", selector=selector.proto())
    assert not created.conversation_ids  # type: ignore[attr-defined]
    both = prepared(client, "create_training_file", "n", ["c"], selector=selector.proto())
    assert both.request == Request(name="n", conversation_ids=["c"], selector=selector.proto())
    # In a request dict: a Selector, or the message's fields as a dict.
    for given in (selector, {"persona_ids": [PERSONA], "limit": 5}):
        by_dict = prepared(client, "create_training_file", request={"name": "n", "selector": given})
        assert by_dict.request.selector.persona_ids == [PERSONA]  # type: ignore[attr-defined]
        assert by_dict.request.selector.limit == 5  # type: ignore[attr-defined]
    # Left out: the field is not set (an empty selector would select everything).
    plain = prepared(client, "create_training_file", "n", ["c"]).request
    assert not plain.HasField("selector")

    added = prepared(client, "add_conversations", "f", selector=selector)
    assert added.request == service_pb2.AddConversationsRequest(
        training_file_id="f", selector=selector.proto()
    )
    assert added.timeout is None  # still a build: no deadline
    listed = prepared(client, "list_eligible_conversations", "x", 10, selector)
    assert listed.request == service_pb2.ListEligibleConversationsRequest(
        exclude_training_file_id="x", page_size=10, selector=selector.proto()
    )
    assert listed.timeout == _methods.UNARY_TIMEOUT  # still a read
    assert not prepared(client, "list_eligible_conversations").request.HasField("selector")


def test_the_asyncio_face_takes_a_selector() -> None:
    async def scenario() -> list[Any]:
        async with tfc.AsyncTrainingFilesClient("127.0.0.1:1") as aclient:
            selector = tfc.Selector(training_topic_ids=["t"])
            return [
                prepared(aclient, "create_training_file", "n", selector=selector).request,
                prepared(aclient, "add_conversations", "f", ["c"], selector=selector).request,
                prepared(aclient, "list_eligible_conversations", selector=selector).request,
            ]

    created, added, listed = asyncio.run(scenario())
    chosen = service_pb2.ConversationSelector(training_topic_ids=["t"])
    assert created == Request(name="n", selector=chosen)
    assert added == service_pb2.AddConversationsRequest(
        training_file_id="f", conversation_ids=["c"], selector=chosen
    )
    assert listed == service_pb2.ListEligibleConversationsRequest(selector=chosen)


def test_create_selects_with_no_ids(recorder: Recorder, trainingfiles: Callable[..., Ran]) -> None:
    result = trainingfiles(
        "create", "demo", "--persona", PERSONA, "--persona", "p2", "--arc", "a", "--topic", "t",
        "--created-after", "2026-11-01", "--created-before", "2026-12-01T09:30:00+02:00",
        "--owner", "o", "--limit", "5",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    name, args, kwargs = recorder.calls[0]
    assert (name, args[:2]) == ("create_training_file", ("demo", []))
    later = datetime.datetime(2026, 12, 1, 9, 30, tzinfo=datetime.timezone(2 * ONE_HOUR))
    assert kwargs["selector"] == tfc.Selector(
        persona_ids=[PERSONA, "p2"],
        emotional_arc_ids=["a"],
        training_topic_ids=["t"],
        created_after=NOVEMBER,  # no zone: UTC
        created_before=later,
        owner="o",
        limit=5,
    )
    assert "created demo f" in result.output

    # Ids and a selector: both go; no selector option, no selector.
    both = trainingfiles(
        "create", "demo", "--ids", "a", "b", "--created-after", "2026-11-01T00:00:00Z"
    )
    assert both.exit_code == 0, both.output
    assert recorder.calls[-1][1][:2] == ("demo", ["a", "b"])
    assert recorder.calls[-1][2]["selector"] == tfc.Selector(created_after=NOVEMBER)
    assert trainingfiles("create", "demo", "--ids", "a").exit_code == 0
    assert recorder.calls[-1][2]["selector"] is None
    only_limit = trainingfiles("create", "demo", "--limit", "3")  # the 3 oldest
    assert only_limit.exit_code == 0, only_limit.output
    assert recorder.calls[-1][2]["selector"] == tfc.Selector(limit=3)


def test_add_selects_and_says_how_many_it_added(
    recorder: Recorder, trainingfiles: Callable[..., Ran]
) -> None:
    after = a_file()
    after.version, after.conversation_count = 2, 27
    events = [
        Stage(stage=Stage.STAGE_VALIDATING, done=7, total=7, training_file_id="f"),
        Stage(stage=Stage.STAGE_FETCHING, done=7, total=7, training_file_id="f"),
        Stage(stage=Stage.STAGE_SAVING, training_file_id="f", training_file=after),
    ]
    recorder.operations["add_conversations"] = Stream(after, events)
    result = trainingfiles("add", "f", "--topic", "t", "--created-after", "2026-11-01")
    assert result.exit_code == 0, result.output
    name, args, kwargs = recorder.calls[-1]
    assert (name, args) == ("add_conversations", ("f", []))
    assert kwargs["selector"] == tfc.Selector(training_topic_ids=["t"], created_after=NOVEMBER)
    assert "added 7 to demo f: 27 conversations" in result.output  # VALIDATING counted them

    lines = trainingfiles("--json", "add", "f", "--ids", "a", "--persona", PERSONA)
    assert lines.exit_code == 0, lines.output
    assert json.loads(lines.output.splitlines()[0])["total"] == 7
    assert recorder.calls[-1][1] == ("f", ["a"])
    assert recorder.calls[-1][2]["selector"] == tfc.Selector(persona_ids=[PERSONA])


def test_eligible_lists_what_a_selector_matches(
    recorder: Recorder, trainingfiles: Callable[..., Ran]
) -> None:
    found = [resources_pb2.EligibleConversation(conversation_id=c) for c in ("c2", "c1")]
    recorder.operations["list_eligible_conversations"] = found
    result = trainingfiles(
        "eligible", "--persona", PERSONA, "--created-before", "2026-11-01", "--limit", "2",
        "--ids-only",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["c2", "c1"]
    name, args, _ = recorder.calls[-1]
    # --limit is the listing's (how many to show): the selector has none.
    assert (name, args) == (
        "list_eligible_conversations",
        ("", 2, tfc.Selector(persona_ids=[PERSONA], created_before=NOVEMBER)),
    )
    assert trainingfiles("eligible", "--exclude", "f", "--json").exit_code == 0
    assert recorder.calls[-1][1][0] == "f" and recorder.calls[-1][1][2] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create", "x"], "or select conversations with --persona, --arc, --topic"),
        (["add", "f"], "no conversation ids"),
        (["create", "x", "--created-after", "yesterday"], "not an ISO 8601 date or time"),
        (["eligible", "--created-before", "2026-13-01"], "not an ISO 8601 date or time"),
        (["create", "x", "--limit", "many"], "'many' is not a valid integer"),
        (["remove", "f", "--persona", "p"], "No such option '--persona'"),
    ],
)
def test_selector_usage_errors_exit_2(recorder: Recorder, args: list[str], message: str) -> None:
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not recorder.calls


def test_refused_selectors_exit_as_other_refusals(
    recorder: Recorder, trainingfiles: Callable[..., Ran]
) -> None:
    bad = error_details_pb2.BadRequest()
    bad.field_violations.add(field="selector.persona_ids[0]", description="'nope'")
    info = error_details_pb2.ErrorInfo(reason="INVALID_ARGUMENT", domain="trainingfiles.v1")
    invalid = tfc.InvalidArgument("1 invalid selector field(s)", details=[info, bad])
    recorder.operations["create_training_file"] = Stream(a_file(), error=invalid)
    refused = trainingfiles("create", "x", "--persona", "nope")
    assert refused.exit_code == 3, refused.output
    assert re.search(r"^\s+selector\.persona_ids\[0\]\s", refused.output, re.MULTILINE)

    nothing = refusal(
        "NO_CONVERSATIONS_SELECTED",
        [("selector", "NO_CONVERSATIONS_SELECTED")],
        description="nothing matched",
    )
    recorder.operations["create_training_file"] = Stream(a_file(), error=nothing)
    empty = trainingfiles("create", "x", "--persona", PERSONA)
    assert empty.exit_code == 6, empty.output
    assert "NO_CONVERSATIONS_SELECTED" in empty.output
    assert "hint: `trainingfiles eligible` with the same options" in empty.output
    # No id was listed: nothing to ask ValidateConversations about.
    assert [name for name, *_ in recorder.calls] == ["create_training_file"] * 2

    many = tfc.ResourceExhausted(
        "the selector matches more than 100000 conversations",
        details=[error_details_pb2.ErrorInfo(reason="TOO_MANY_CONVERSATIONS")],
    )
    recorder.operations["add_conversations"] = Stream(a_file(), error=many)
    exhausted = trainingfiles("add", "f", "--owner", "o")
    assert exhausted.exit_code == 7, exhausted.output
    assert "--limit N" in exhausted.output
    denied = tfc.PermissionDenied(
        "only service_role callers may select another owner's conversations",
        details=[error_details_pb2.ErrorInfo(reason="SELECTOR_OWNER_NOT_ALLOWED")],
    )
    recorder.operations["create_training_file"] = Stream(a_file(), error=denied)
    assert trainingfiles("create", "x", "--owner", "o").exit_code == 9
