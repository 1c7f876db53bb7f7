"""The client's public surface, pinned: names, method shapes, docs, errors, retry policy.

Pure tests: nothing here connects to a server (creating a gRPC channel does not).
"""

from __future__ import annotations

import ast
import datetime
import inspect
import json
import re
from pathlib import Path
from typing import Any

import grpc
import pytest

import trainingfiles_client as tfc
from trainingfiles.v1 import resources_pb2, service_pb2
from trainingfiles_client import _calls, _config, _methods, cli
from trainingfiles_client.cli import ids
from trainingfiles_client.cli.commands import build
from trainingfiles_client.cli.exits import Exit, UsageError

# Pinned on purpose: a change here is a change of the public surface.
# fmt: off
PUBLIC = [
    "Aborted", "AlreadyExists", "AsyncPager", "AsyncTrainingFileOperation",
    "AsyncTrainingFilesClient", "Cancelled", "DataLoss", "DeadlineExceeded", "DownloadError",
    "Downloaded", "FailedPrecondition", "Format", "Internal", "InvalidArgument", "NotFound",
    "OutOfRange", "Pager", "PairFilter", "PermissionDenied", "ResourceExhausted", "Retry",
    "Selector", "Split", "SplitOptions", "TrainingFileOperation", "TrainingFilesClient",
    "TrainingFilesError", "Unauthenticated", "Unavailable", "Unimplemented", "Unknown",
    "Violation", "download",
]
# fmt: on

RPC_METHODS = {
    "CreateTrainingFile": "create_training_file",
    "AddConversations": "add_conversations",
    "RemoveConversations": "remove_conversations",
    "RefreshTrainingFile": "refresh_training_file",
    "GetTrainingFile": "get_training_file",
    "GetTrainingFileAnalytics": "get_training_file_analytics",
    "ListTrainingFiles": "list_training_files",
    "ListTrainingFileConversations": "list_training_file_conversations",
    "ListTrainingFileVersions": "list_training_file_versions",
    "GetDownloadUrl": "get_download_url",
    "ArchiveTrainingFile": "archive_training_file",
    "SetAutoRefresh": "set_auto_refresh",
    "ListEligibleConversations": "list_eligible_conversations",
    "ValidateConversations": "validate_conversations",
    "ExportTrainingFile": "export_training_file",
}
# Methods of both faces made of several calls (`_calls.helper`), not one rpc.
HELPERS = ["download_outputs"]
BUILDS = {
    "CreateTrainingFile",
    "AddConversations",
    "RemoveConversations",
    "RefreshTrainingFile",
    "ExportTrainingFile",
}
SERVICE = service_pb2.DESCRIPTOR.services_by_name["TrainingFileService"]


def public_methods(cls: type) -> dict[str, Any]:
    """The public methods of `cls`, inherited ones too, but none of Python's own."""
    found = {}
    for name in dir(cls):
        owner = next(k for k in cls.__mro__ if name in vars(k))
        member = getattr(cls, name)
        if not name.startswith("_") and callable(member) and owner.__module__ != "builtins":
            found[name] = member
    return found


# ----------------------------------------------------------------- names


def test_all_is_sorted_and_pinned() -> None:
    assert tfc.__all__ == sorted(tfc.__all__) == PUBLIC


def test_all_is_exactly_the_public_names() -> None:
    # Modules aside: `cli` is the command's package once imported (its API is the command).
    exported = {
        n for n, v in vars(tfc).items() if not n.startswith("_") and not inspect.ismodule(v)
    }
    assert exported == set(tfc.__all__)
    for name in tfc.__all__:
        assert getattr(tfc, name).__module__ == "trainingfiles_client", name


def test_the_package_is_typed() -> None:
    assert (Path(tfc.__file__).parent / "py.typed").exists()


CLI = Path(cli.__file__).parent
CLI_MODULES = sorted(CLI.rglob("*.py"))


def test_the_cli_uses_only_the_public_api() -> None:
    """The CLI is a consumer of the public API; of the private modules it borrows only
    the one loopback check, so that the CLI and the client agree on what is local."""
    allowed = {"trainingfiles_client", "trainingfiles_client._config"}
    for path in CLI_MODULES:
        package = ".".join(path.relative_to(CLI.parent.parent).with_suffix("").parts[:-1])
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level:  # relative: must stay inside the CLI package
                    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    module = f"{base}.{module}".rstrip(".")
                if module.startswith("trainingfiles_client.cli"):
                    continue
                if module.startswith("trainingfiles_client"):
                    assert module in allowed, (path.name, module)
                    if module == "trainingfiles_client._config":
                        assert [a.name for a in node.names] == ["is_loopback"], path.name
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name in allowed or not alias.name.startswith(
                        "trainingfiles_client."
                    ), (path.name, alias.name)


def test_the_cli_is_small_modules() -> None:
    sizes = {path.name: len(path.read_text(encoding="utf-8").splitlines()) for path in CLI_MODULES}
    assert max(sizes.values()) < 300, sizes
    assert not (CLI.parent / "_cli.py").exists()


# ----------------------------------------------------------------- method shapes

JSONL = resources_pb2.FILE_FORMAT_JSONL
FACES = [tfc.TrainingFilesClient, tfc.AsyncTrainingFilesClient]
OPTIONS = ["request", "timeout", "metadata", "retry"]
WRITES = {*BUILDS, "ArchiveTrainingFile", "SetAutoRefresh"}


def test_one_method_per_rpc_on_both_faces() -> None:
    assert set(RPC_METHODS) == {method.name for method in SERVICE.methods}
    for cls in FACES:
        assert set(public_methods(cls)) == {*RPC_METHODS.values(), *HELPERS, "close"}, cls


def test_both_faces_have_the_same_methods_with_the_same_signatures() -> None:
    sync, asynchronous = (public_methods(cls) for cls in FACES)
    assert set(sync) == set(asynchronous)
    for name in HELPERS:
        assert inspect.signature(sync[name]) == inspect.signature(asynchronous[name])
        assert sync[name].__wrapped__ is asynchronous[name].__wrapped__
    for name in RPC_METHODS.values():
        parameters = inspect.signature(sync[name]).parameters.values()
        assert list(parameters) == list(inspect.signature(asynchronous[name]).parameters.values())
        keyword_only = [p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]
        assert keyword_only == OPTIONS, name
        # Written once: both faces wrap the same method of the base.
        assert sync[name].__wrapped__ is asynchronous[name].__wrapped__


@pytest.mark.parametrize("rpc", sorted(RPC_METHODS))
def test_request_fields_are_the_arguments(rpc: str) -> None:
    descriptor = SERVICE.methods_by_name[rpc]
    fields = [f.name for f in descriptor.input_type.fields if f.name != "page_token"]
    signature = inspect.signature(getattr(tfc.TrainingFilesClient, RPC_METHODS[rpc]))
    flattened = [p for p in signature.parameters.values() if p.name not in {"self", *OPTIONS}]
    assert sorted(p.name for p in flattened) == sorted(fields)
    assert all(p.default is None for p in flattened)  # so that `request=` can stand alone


@pytest.mark.parametrize("rpc", sorted(RPC_METHODS))
def test_defaults_come_from_the_one_table(rpc: str) -> None:
    method = _methods.METHODS[rpc]
    parameters = inspect.signature(getattr(tfc.TrainingFilesClient, RPC_METHODS[rpc])).parameters
    assert parameters["timeout"].default == method.timeout
    assert parameters["retry"].default == method.retry
    assert parameters["metadata"].default is None
    if rpc in WRITES:
        assert method.retry is None
    else:
        assert method.retry == _methods.READ and method.timeout
    if rpc in BUILDS:
        assert method.timeout is None  # a build streams for as long as it runs
        assert method.kind is _methods.Kind.STREAMING


def test_the_table_has_a_row_per_rpc_of_the_contract() -> None:
    assert set(_methods._DEFAULTS) == {method.name for method in SERVICE.methods}
    assert {m.path for m in _methods.METHODS.values()} == {
        f"/{SERVICE.full_name}/{m.name}" for m in SERVICE.methods
    }


def test_unary_methods_are_coroutines_and_lists_are_not() -> None:
    client = tfc.AsyncTrainingFilesClient
    unary = ("get_training_file", "get_download_url", "archive_training_file", "set_auto_refresh")
    for name in (*unary, "close"):
        assert inspect.iscoroutinefunction(getattr(client, name)), name
    assert inspect.iscoroutinefunction(client.validate_conversations)
    assert inspect.iscoroutinefunction(client.download_outputs)
    builds = ("create_training_file", "add_conversations", "remove_conversations")
    for name in (*builds, "refresh_training_file", "export_training_file"):
        assert not inspect.iscoroutinefunction(getattr(client, name)), name
    assert not inspect.iscoroutinefunction(client.list_training_files)
    assert not inspect.iscoroutinefunction(client.list_training_file_versions)
    for name in [*RPC_METHODS.values(), *HELPERS]:
        assert not inspect.iscoroutinefunction(getattr(tfc.TrainingFilesClient, name))


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
        tfc.Retry,
        tfc.SplitOptions,
        tfc.Selector,
        tfc.PairFilter,
        tfc.DownloadError,
    ],
)
def test_every_public_method_has_a_docstring_with_an_example(cls: type) -> None:
    assert cls.__doc__ and "Example:" in cls.__doc__
    for name, member in public_methods(cls).items():
        doc = inspect.getdoc(member)
        assert doc, f"{cls.__name__}.{name} has no docstring"
        assert ">>>" in doc or name == "policy", f"{cls.__name__}.{name} has no example"


def prepared(client: Any, name: str, *args: Any, **kwargs: Any) -> _calls.Prepared:
    """What a method of `client` would send, built without sending it."""
    build = getattr(type(client), name).__wrapped__
    method = _methods.METHODS[_calls.rpc_name(name)]
    result: _calls.Prepared = client._prepare(method, build(client, *args, **kwargs))
    return result


def test_filters_become_the_contracts_messages() -> None:
    with tfc.TrainingFilesClient("127.0.0.1:1", token="t") as client:
        selector = tfc.Selector(min_average_quality=4, human_reviewed_only=True, emotions=["hope"])
        sent = prepared(
            client,
            "create_training_file",
            "n",
            selector=selector,
            pair_filter=tfc.PairFilter(min_quality=3.5, reviewed_only=True),
        ).request
        assert isinstance(sent, service_pb2.CreateTrainingFileRequest)
        assert sent.selector == service_pb2.ConversationSelector(
            min_average_quality=4, human_reviewed_only=True, emotions=["hope"]
        )
        assert sent.pair_filter == resources_pb2.PairFilter(min_quality=3.5, reviewed_only=True)
        added = prepared(client, "add_conversations", "f", pair_filter=tfc.PairFilter()).request
        assert isinstance(added, service_pb2.AddConversationsRequest)
        assert added.HasField("pair_filter") and added.pair_filter == resources_pb2.PairFilter()
    with pytest.raises(TypeError, match="emotions must be a list"):
        tfc.Selector(emotions="hope")


def test_request_or_fields_never_both() -> None:
    with tfc.TrainingFilesClient("127.0.0.1:1", token="t") as client:
        by_fields = prepared(client, "get_download_url", "f", JSONL, datetime.timedelta(minutes=2))
        as_dict = {"training_file_id": "f", "format": JSONL, "expires_in": 120}
        by_dict = prepared(client, "get_download_url", request=as_dict)
        message = service_pb2.GetDownloadUrlRequest(training_file_id="f", format=JSONL)
        message.expires_in.seconds = 120
        by_message = prepared(client, "get_download_url", request=message)
        assert by_fields.request == by_dict.request == by_message.request == message
        assert by_message.request is not message  # the caller's message is not changed
        with pytest.raises(ValueError, match="either request or the fields"):
            prepared(client, "get_training_file", "f", request={"training_file_id": "g"})
        with pytest.raises(TypeError, match="GetTrainingFileRequest or a dict"):
            prepared(client, "get_training_file", request=message)
        with pytest.raises(ValueError, match='has no "file_id" field'):
            prepared(client, "get_training_file", request={"file_id": "f"})
        with pytest.raises(TypeError, match="unexpected keyword argument 'timeot'"):
            prepared(client, "get_training_file", "f", timeot=3)


def test_a_single_string_is_not_taken_for_a_list_of_ids() -> None:
    one = "5795833f-20da-45aa-9b56-d4b07e575bcc"
    with tfc.TrainingFilesClient("127.0.0.1:1") as client:
        with pytest.raises(TypeError, match="conversation_ids must be a list"):
            client.create_training_file("name", one)
        with pytest.raises(TypeError, match="conversation_ids must be a list"):
            client.validate_conversations(request={"conversation_ids": one})
        add = prepared(client, "add_conversations", "f", iter([one])).request
        assert add == service_pb2.AddConversationsRequest(
            training_file_id="f", conversation_ids=[one]
        )
        with pytest.raises(TypeError, match="conversation_ids must be a list"):
            client.remove_conversations("f", one)
        remove = prepared(client, "remove_conversations", "f", (one,)).request
        assert remove == service_pb2.RemoveConversationsRequest(
            training_file_id="f", conversation_ids=[one]
        )


def test_per_call_options_override_the_table() -> None:
    with tfc.TrainingFilesClient("127.0.0.1:1", token="secret") as client:
        default = prepared(client, "get_training_file", "f")
        assert default.timeout == _methods.UNARY_TIMEOUT
        assert default.metadata == [("authorization", "Bearer secret")]
        assert prepared(client, "create_training_file", "n", ["c"]).timeout is None
        assert prepared(client, "get_training_file", "f", timeout=None).timeout is None
        own = prepared(client, "get_training_file", "f", metadata=[("authorization", "x")])
        assert own.metadata == [("authorization", "x")]
        assert list(client._channels) == [_methods.DEFAULT]
        # The default policy, spelled out, is the main channel's; another opens its own.
        prepared(client, "list_training_files", retry=tfc.Retry())
        prepared(client, "archive_training_file", "f", retry=None)
        assert list(client._channels) == [_methods.DEFAULT]
        prepared(client, "get_training_file", "f", retry=None)
        prepared(client, "create_training_file", "n", ["c"], retry=tfc.Retry(attempts=3))
        assert list(client._channels) == [_methods.DEFAULT, None, tfc.Retry(attempts=3)]


def test_retry_policies_are_checked() -> None:
    assert tfc.Retry(initial_backoff=0.25, max_backoff=1).policy() == {
        "maxAttempts": 5,
        "initialBackoff": "0.25s",
        "maxBackoff": "1s",
        "backoffMultiplier": 2.0,
        "retryableStatusCodes": ["UNAVAILABLE", "DEADLINE_EXCEEDED"],
    }
    for wrong in ({"attempts": 1}, {"attempts": 6}, {"initial_backoff": 0}, {"on": ("NOPE",)}):
        with pytest.raises(ValueError, match="must"):
            tfc.Retry(**wrong)


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
    config = _methods.service_config()
    retried: dict[str, dict[str, Any]] = {}
    for method_config in config["methodConfig"]:
        for name in method_config["name"]:
            assert name["service"] == SERVICE.full_name
            retried[name["method"]] = method_config["retryPolicy"]
    assert set(retried) <= {m.name for m in SERVICE.methods}
    assert not WRITES & set(retried)
    assert set(retried) == set(RPC_METHODS) - WRITES
    for policy in retried.values():
        assert 2 <= policy["maxAttempts"] <= 5  # gRPC caps it at 5
        assert set(policy["retryableStatusCodes"]) == {"UNAVAILABLE", "DEADLINE_EXCEEDED"}

    options = dict(_config.channel_options(config))
    assert options["grpc.enable_retries"] == 1
    assert json.loads(options["grpc.service_config"]) == config
    extra = [("grpc.enable_retries", 0)]
    assert dict(_config.channel_options(config, extra))["grpc.enable_retries"] == 0
    # The channel of calls with `retry=None` retries nothing; one with a policy, every rpc.
    assert dict(_config.channel_options(_methods.service_config(None)))["grpc.enable_retries"] == 0
    everything = _methods.service_config(tfc.Retry(attempts=2))["methodConfig"]
    assert everything == [
        {"name": [{"service": SERVICE.full_name}], "retryPolicy": tfc.Retry(attempts=2).policy()}
    ]


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
    assert cli.main(["--help"]) == 0
    help_text = capsys.readouterr().out
    for code in Exit:
        assert re.search(rf"^\s+{code.value}\s+\S", help_text, re.MULTILINE), code
    assert "Examples:" in help_text


def test_usage_errors_exit_with_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["create"]) == 2
    assert "Missing argument 'NAME'" in capsys.readouterr().err
    assert cli.main(["--target", "127.0.0.1:1", "create", "name"]) == 2
    assert "no conversation ids" in capsys.readouterr().err
    assert cli.main(["--json", "--target", "127.0.0.1:1", "create", "name"]) == 2
    error = json.loads(capsys.readouterr().err)["error"]
    assert error["exit_code"] == 2 and "no conversation ids" in error["message"]
    assert "--persona" in error["message"]  # a selector instead of ids


def test_ids_are_read_from_every_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    listing = tmp_path / "ids"
    listing.write_text("# header\nc\n\nd, e  # two more\n", encoding="utf-8")
    monkeypatch.setattr("sys.stdin", iter(["f\n", "g h\n"]))
    assert ids.read_ids(["a,b", "-"], [str(listing)]) == list("abfghcde")
    with pytest.raises(UsageError):
        ids.read_ids(None, None)


def test_ids_take_every_word_up_to_the_next_option() -> None:
    arguments = [
        "n",
        "--ids",
        "a",
        "b,c",
        "-",
        "--description",
        "d",
        "--ids",
        "e",
        "--ids-file",
        "f",
    ]
    context = build.create.make_context("create", arguments)
    assert context.params["ids"] == ("a", "b,c", "-", "e")
    assert (context.params["name"], context.params["description"]) == ("n", "d")
    assert context.params["ids_file"] == ("f",)
    removal = build.remove.make_context("remove", ["F", "--ids", "a", "b", "--ids-file", "-"])
    assert (removal.params["file_id"], removal.params["ids"]) == ("F", ("a", "b"))
    assert removal.params["ids_file"] == ("-",)


def test_shared_options_are_declared_once_and_taken_anywhere() -> None:
    names = {"--target", "--address", "--token", "--tls", "--plaintext", "--json", "--timeout"}
    for command in [cli.main.__globals__["cli"], *cli.main.__globals__["cli"].commands.values()]:
        declared = {name for p in command.params for name in (*p.opts, *p.secondary_opts)}
        assert names <= declared, command.name
