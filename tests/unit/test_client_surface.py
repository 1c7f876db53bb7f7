"""The client's public surface, pinned: names, method shapes, docs, errors, retry policy.

Pure tests: nothing here connects to a server (creating a gRPC channel does not).
"""

from __future__ import annotations

import ast
import inspect
import json
from pathlib import Path
from typing import Any

import grpc
import pytest

import trainingfiles_client as tfc
from trainingfiles.v1 import service_pb2
from trainingfiles_client import _cli, _config

PUBLIC = [
    "Aborted",
    "AlreadyExists",
    "AsyncPager",
    "AsyncTrainingFileOperation",
    "AsyncTrainingFilesClient",
    "Cancelled",
    "DataLoss",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "Pager",
    "PermissionDenied",
    "ResourceExhausted",
    "TrainingFileOperation",
    "TrainingFilesClient",
    "TrainingFilesError",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "Violation",
]

RPC_METHODS = {
    "CreateTrainingFile": "create_training_file",
    "AddConversations": "add_conversations",
    "GetTrainingFile": "get_training_file",
    "ListTrainingFiles": "list_training_files",
    "ListTrainingFileConversations": "list_training_file_conversations",
    "GetDownloadUrl": "get_download_url",
    "ArchiveTrainingFile": "archive_training_file",
    "ListEligibleConversations": "list_eligible_conversations",
    "ValidateConversations": "validate_conversations",
}
SERVICE = service_pb2.DESCRIPTOR.services_by_name["TrainingFileService"]


def public_methods(cls: type) -> dict[str, Any]:
    return {
        name: member
        for name, member in vars(cls).items()
        if not name.startswith("_") and callable(member)
    }


# ----------------------------------------------------------------- names


def test_all_is_sorted_and_pinned() -> None:
    assert tfc.__all__ == sorted(tfc.__all__) == PUBLIC


def test_all_is_exactly_the_public_names() -> None:
    exported = {name for name in vars(tfc) if not name.startswith("_")}
    assert exported == set(tfc.__all__)
    for name in tfc.__all__:
        assert getattr(tfc, name).__module__ == "trainingfiles_client", name


def test_the_package_is_typed() -> None:
    assert (Path(tfc.__file__).parent / "py.typed").exists()


def test_the_cli_uses_only_the_public_api() -> None:
    tree = ast.parse(Path(_cli.__file__).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import in the CLI"
            assert not (node.module or "").startswith("trainingfiles_client.")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                assert not alias.name.startswith("trainingfiles_client.")


# ----------------------------------------------------------------- method shapes


def test_one_method_per_rpc_on_both_clients() -> None:
    assert set(RPC_METHODS) == {method.name for method in SERVICE.methods}
    for cls in (tfc.TrainingFilesClient, tfc.AsyncTrainingFilesClient):
        assert set(public_methods(cls)) == {*RPC_METHODS.values(), "close"}, cls


@pytest.mark.parametrize("name", sorted(RPC_METHODS.values()))
def test_sync_and_async_methods_have_the_same_shape(name: str) -> None:
    sync = inspect.signature(getattr(tfc.TrainingFilesClient, name))
    asynchronous = inspect.signature(getattr(tfc.AsyncTrainingFilesClient, name))
    assert list(sync.parameters.values()) == list(asynchronous.parameters.values())
    keyword_only = [
        p.name for p in sync.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    assert keyword_only == ["timeout", "metadata"], name
    for parameter in ("timeout", "metadata"):
        assert sync.parameters[parameter].default is None


@pytest.mark.parametrize("name", sorted(RPC_METHODS.values()))
def test_request_fields_are_the_arguments(name: str) -> None:
    rpc = next(m for m in SERVICE.methods if RPC_METHODS[m.name] == name)
    fields = {field.name for field in rpc.input_type.fields} - {"page_token"}
    parameters = set(inspect.signature(getattr(tfc.TrainingFilesClient, name)).parameters)
    assert parameters - {"self", "timeout", "metadata"} == fields


def test_unary_methods_are_coroutines_and_lists_are_not() -> None:
    client = tfc.AsyncTrainingFilesClient
    for name in ("get_training_file", "get_download_url", "archive_training_file", "close"):
        assert inspect.iscoroutinefunction(getattr(client, name)), name
    for name in ("create_training_file", "add_conversations", "list_training_files"):
        assert not inspect.iscoroutinefunction(getattr(client, name)), name


@pytest.mark.parametrize(
    "cls",
    [
        tfc.TrainingFilesClient,
        tfc.AsyncTrainingFilesClient,
        tfc.TrainingFileOperation,
        tfc.AsyncTrainingFileOperation,
        tfc.Pager,
        tfc.AsyncPager,
        tfc.TrainingFilesError,
    ],
)
def test_every_public_method_has_a_docstring_with_an_example(cls: type) -> None:
    assert cls.__doc__ and "Example:" in cls.__doc__
    for name, member in public_methods(cls).items():
        doc = inspect.getdoc(member)
        assert doc, f"{cls.__name__}.{name} has no docstring"
        assert ">>>" in doc, f"{cls.__name__}.{name} has no example"


def test_a_single_string_is_not_taken_for_a_list_of_ids() -> None:
    with tfc.TrainingFilesClient("127.0.0.1:1") as client, pytest.raises(TypeError):
        client.create_training_file("name", "5795833f-20da-45aa-9b56-d4b07e575bcc")


# ----------------------------------------------------------------- errors


def test_one_error_class_per_status_code() -> None:
    classes = {
        getattr(tfc, name)
        for name in tfc.__all__
        if isinstance(getattr(tfc, name), type)
        and issubclass(getattr(tfc, name), tfc.TrainingFilesError)
        and getattr(tfc, name) is not tfc.TrainingFilesError
    }
    by_code = {cls.status_code: cls for cls in classes}
    assert set(by_code) == set(grpc.StatusCode) - {grpc.StatusCode.OK}
    for code, cls in by_code.items():
        assert cls.__name__.lower() == code.name.replace("_", "").lower()
        assert cls.__bases__ == (tfc.TrainingFilesError,)
        error = cls("message")
        assert (error.code, error.message, error.reason, error.violations) == (
            code,
            "message",
            "",
            (),
        )


def test_the_exception_tree_is_drawn_in_its_module() -> None:
    from trainingfiles_client import _exceptions

    tree = (_exceptions.__doc__ or "").split("::", 1)[1]
    for name in tfc.__all__:
        value = getattr(tfc, name)
        if isinstance(value, type) and issubclass(value, tfc.TrainingFilesError):
            assert f" {name} " in tree, name


# ----------------------------------------------------------------- configuration


def test_retries_only_for_idempotent_methods() -> None:
    config = _config.service_config()
    retried: dict[str, dict[str, Any]] = {}
    for method_config in config["methodConfig"]:
        for name in method_config["name"]:
            assert name["service"] == SERVICE.full_name
            retried[name["method"]] = method_config["retryPolicy"]
    assert set(retried) <= {m.name for m in SERVICE.methods}
    writes = {"CreateTrainingFile", "AddConversations", "ArchiveTrainingFile"}
    assert not writes & set(retried)
    assert set(retried) == set(RPC_METHODS) - writes
    for policy in retried.values():
        assert 2 <= policy["maxAttempts"] <= 5  # gRPC caps it at 5
        assert set(policy["retryableStatusCodes"]) == {"UNAVAILABLE", "DEADLINE_EXCEEDED"}

    options = dict(_config.channel_options())
    assert options["grpc.enable_retries"] == 1
    assert json.loads(options["grpc.service_config"]) == config
    assert dict(_config.channel_options([("grpc.enable_retries", 0)]))["grpc.enable_retries"] == 0


def test_settings_from_arguments_then_environment_then_defaults() -> None:
    env = {"TRAININGFILES_TARGET": "files.internal:443", "TRAININGFILES_TOKEN": "from-env"}
    assert _config.resolve(environ={}).target == "127.0.0.1:50051"
    assert _config.resolve(environ={}).token is None
    from_env = _config.resolve(environ=env)
    assert (from_env.target, from_env.token, from_env.secure) == (
        "files.internal:443",
        "from-env",
        True,
    )
    explicit = _config.resolve("127.0.0.1:7000", token="mine", environ=env)
    assert (explicit.target, explicit.token, explicit.secure) == ("127.0.0.1:7000", "mine", False)


@pytest.mark.parametrize(
    ("target", "loopback"),
    [
        ("127.0.0.1:50051", True),
        ("localhost:50051", True),
        ("[::1]:50051", True),
        ("::1", True),
        ("dns:///localhost:50051", True),
        ("ipv4:127.0.0.2:1", True),
        ("unix:/run/trainingfiles.sock", True),
        ("10.0.0.5:50051", False),
        ("files.example.internal:443", False),
        ("dns:///files.example.internal", False),
    ],
)
def test_plaintext_by_default_only_for_loopback(target: str, loopback: bool) -> None:
    assert _config.is_loopback(target) is loopback
    assert _config.resolve(target, environ={}).secure is not loopback


def test_tls_switch() -> None:
    assert _config.resolve(environ={"TRAININGFILES_TLS": "1"}).secure
    assert not _config.resolve("files.internal:443", environ={"TRAININGFILES_TLS": "0"}).secure
    assert _config.resolve(tls=True, environ={"TRAININGFILES_TLS": "0"}).secure
    credentials = grpc.ssl_channel_credentials()
    assert _config.resolve(credentials=credentials, environ={}).credentials is credentials
    with pytest.raises(ValueError, match="TRAININGFILES_TLS"):
        _config.resolve(environ={"TRAININGFILES_TLS": "maybe"})


def test_the_token_is_sent_unless_the_call_brings_its_own() -> None:
    connection = _config.resolve(token="secret", environ={})
    assert connection.metadata(None) == [("authorization", "Bearer secret")]
    assert connection.metadata([("x-request-id", "1")]) == [
        ("x-request-id", "1"),
        ("authorization", "Bearer secret"),
    ]
    own = [("Authorization", "Bearer other")]
    assert connection.metadata(own) == own
    assert _config.resolve(environ={}).metadata(None) == []


# ----------------------------------------------------------------- the command line


def test_help_lists_every_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        _cli.main(["--help"])
    assert exited.value.code == 0
    help_text = capsys.readouterr().out
    codes = {value for name, value in vars(_cli.Exit).items() if not name.startswith("_")}
    for code in codes:
        assert f"\n  {code:<4} " in help_text, code


def test_usage_errors_exit_with_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        _cli.main(["create"])
    assert exited.value.code == 2
    assert _cli.main(["--target", "127.0.0.1:1", "create", "name"]) == 2
    assert "no conversation ids" in capsys.readouterr().err


def test_ids_are_read_from_every_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    listing = tmp_path / "ids"
    listing.write_text("# header\nc\n\nd, e  # two more\n", encoding="utf-8")
    monkeypatch.setattr("sys.stdin", iter(["f\n", "g h\n"]))
    assert _cli.read_ids(["a,b", "-"], [str(listing)]) == list("abfghcde")
    with pytest.raises(_cli.UsageError):
        _cli.read_ids(None, None)
