"""Property-based fuzzing of every rpc of the running server, with and without tokens.

Hypothesis draws an rpc, a request of its type (ids that exist, ids of the other user,
random UUIDs and arbitrary text; names valid and not; page sizes, page tokens, enum
values and expiries from the whole range of their types) and a caller (a user, the
other user, a service, or a token that must be refused). For every call:

* the status is never UNKNOWN or INTERNAL, and a refused token gets exactly
  UNAUTHENTICATED (PERMISSION_DENIED for the `anon` role) whatever the request;
* a call that was not a successful Create, Add or Archive changed nothing (row counts,
  every file's status and version, the training bucket's keys), and a successful one
  changed only what it should;
* what a user is shown is theirs (Get, List, ListEligibleConversations).

After the last example the server is still SERVING, and calls of at least four rpcs
succeeded (the fuzzing got past validation). Bounded: a fixed number of examples, no
deadline, no example database, and Hypothesis's directory in a temporary path so nothing is written
into the checkout.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import hypothesis
import pytest
from google.protobuf import duration_pb2
from google.protobuf.message import Message
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from tests.conftest import mint
from tests.e2e.guards import BROKEN, User, assert_serving, ids_of, make_user, state
from tests.e2e.helpers import TIMEOUT, collect, output_keys, unique_name
from tests.tokens import OTHER_SECRET, claims, signed
from trainingfiles.v1 import service_pb2, service_pb2_grpc
from trainingfiles_dev.generator import Awkward
from trainingfiles_server.app import RunningServer
from trainingfiles_server.storage import Storage

ALICE_SEED, BOB_SEED = 6301, 6302
MAX_EXAMPLES = 400
# One example: a Create or Add of a few conversations, and the state read twice.
EXAMPLE_TIMEOUT = 4 * TIMEOUT

pytestmark = pytest.mark.timeout(180)

WRITERS = {"CreateTrainingFile", "AddConversations", "ArchiveTrainingFile"}
STREAMS = {"CreateTrainingFile", "AddConversations"}


# Hypothesis keeps caches under `.hypothesis/` in the working directory, and fills one
# while the tests are being collected: point it at a temporary directory before that,
# removed when the process exits.
if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
    _HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="trainingfiles-hypothesis-")
    atexit.register(shutil.rmtree, _HYPOTHESIS_HOME, ignore_errors=True)
    set_hypothesis_home_dir(_HYPOTHESIS_HOME)


@dataclass
class World:
    """Two users with conversations and files, and the callers to fuzz with."""

    alice: User
    bob: User
    channel: grpc.aio.Channel
    tokens: dict[str, str | None]  # caller name -> authorization header value
    files: dict[str, list[str]]  # owner ("alice", "bob", "service") -> file ids
    page_tokens: list[str] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)

    def all_files(self) -> list[str]:
        return [file_id for ids in self.files.values() for file_id in ids]

    def user(self, caller: str) -> User | None:
        return {"alice": self.alice, "bob": self.bob}.get(caller)


async def _create_file(stub: Any, token: str, ids: list[str]) -> str:
    request = service_pb2.CreateTrainingFileRequest(name=unique_name("fuzz"), conversation_ids=ids)
    result = await collect(
        stub.CreateTrainingFile(
            request, metadata=[("authorization", f"Bearer {token}")], timeout=TIMEOUT
        )
    )
    assert result.error is None, result.error
    return result.training_file.id


@pytest.fixture(scope="module")
async def world(server: RunningServer, storage: Storage) -> AsyncIterator[World]:
    # Rows that are refused before any work only: a document that fails after the file
    # is recorded would (rightly) leave a FAILED row, which is a write.
    awkward = Awkward(not_started=1, in_progress=1, null_path=1)
    alice = await make_user(server, storage, ALICE_SEED, 12, awkward=awkward)
    bob = await make_user(server, storage, BOB_SEED, 12, awkward=awkward)
    service = mint("service_role")
    now = int(time.time())
    tokens: dict[str, str | None] = {
        "alice": f"Bearer {alice.token}",
        "bob": f"Bearer {bob.token}",
        "service": f"Bearer {service}",
        "none": None,
        "garbage": "Bearer garbage",
        "expired": f"Bearer {signed(claims(alice.id, iat=now - 7200, exp=now - 3600))}",
        "other-key": f"Bearer {signed(claims(alice.id), secret=OTHER_SECRET)}",
        "anon": f"Bearer {signed(claims(alice.id, role='anon'))}",
    }
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = service_pb2_grpc.TrainingFileServiceStub(channel)
        files = {
            "alice": [await _create_file(stub, alice.token, alice.ids(2))],
            "bob": [await _create_file(stub, bob.token, bob.ids(2))],
            "service": [await _create_file(stub, service, bob.ids()[2:3])],
        }
        yield World(alice, bob, channel, tokens, files)


# ----------------------------------------------------------------- strategies
#
# Each field is drawn "mostly valid": three times in four a value that the caller could
# use (its own file, its own eligible conversations, a fresh name), otherwise anything of
# the field's type. So calls get past validation often enough to reach the database,
# the storage and the ownership checks, and fail there in every way too.

TEXT = st.text(max_size=40)
INT32 = st.integers(-(2**31), 2**31 - 1)
GOOD = st.integers(0, 3).map(bool)


def _mostly(data: st.DataObject, good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> Any:
    return data.draw(good) if data.draw(GOOD) else data.draw(bad)


# The files and page tokens grow as the fuzzing goes: an index into them (rather than
# `sampled_from`) keeps every draw's type the same from one run to the next, as
# Hypothesis requires.
INDEX = st.integers(0, 2**16)


def _pick(values: list[str]) -> st.SearchStrategy[str]:
    return INDEX.map(lambda i: values[i % len(values)] if values else "")


def _any_file_id(world: World) -> st.SearchStrategy[str]:
    return st.one_of(_pick(world.all_files()), st.uuids().map(str), TEXT)


def _own_file_id(world: World, caller: str) -> st.SearchStrategy[str]:
    own = world.all_files() if caller == "service" else world.files.get(caller, [])
    return _pick(own)


def _own_conversations(world: World, caller: str) -> st.SearchStrategy[list[str]]:
    user = world.user(caller)
    pool = user.ids() if user else world.alice.ids() + world.bob.ids()
    return st.lists(st.sampled_from(pool), min_size=1, max_size=3, unique=True)


def _any_conversations(world: World) -> st.SearchStrategy[list[str]]:
    known = ids_of(world.alice.conversations) + ids_of(world.bob.conversations)
    one = st.one_of(st.sampled_from(known), st.uuids().map(str), TEXT)
    return st.lists(one, max_size=6)


def _names() -> st.SearchStrategy[str]:
    return st.one_of(
        st.from_regex(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,20}", fullmatch=True),
        st.text(max_size=140),
    )


def _page_tokens(world: World) -> st.SearchStrategy[str]:
    return st.one_of(TEXT, _pick(world.page_tokens))


def _page_sizes() -> st.SearchStrategy[int]:
    return st.one_of(st.integers(-2, 60), INT32)


def _on_behalf_of(world: World) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from([str(world.alice.id), str(world.bob.id)]),
        st.uuids().map(str),
        TEXT,
    )


def _expiry() -> st.SearchStrategy[duration_pb2.Duration]:
    return st.builds(
        duration_pb2.Duration,
        seconds=st.one_of(st.integers(-100, 700_000), st.integers(-(10**11), 10**11)),
        nanos=st.one_of(st.just(0), st.integers(-999_999_999, 999_999_999)),
    )


def _request(world: World, caller: str, rpc: str, data: st.DataObject) -> Message:
    def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> Any:
        return _mostly(data, good, bad)

    file_id = mostly(_own_file_id(world, caller), _any_file_id(world))
    page_size = mostly(st.integers(0, 5), _page_sizes())
    page_token = mostly(st.just(""), _page_tokens(world))
    if rpc == "CreateTrainingFile":
        request = service_pb2.CreateTrainingFileRequest(
            name=mostly(st.builds(lambda: unique_name("fuzz")), _names()),
            conversation_ids=mostly(_own_conversations(world, caller), _any_conversations(world)),
            on_behalf_of=mostly(st.just(""), _on_behalf_of(world)),
        )
        description = mostly(st.none(), st.one_of(TEXT, st.just("d" * 2001)))
        if description is not None:
            request.description = description
        return request
    if rpc == "AddConversations":
        return service_pb2.AddConversationsRequest(
            training_file_id=file_id,
            conversation_ids=mostly(_own_conversations(world, caller), _any_conversations(world)),
        )
    if rpc == "GetTrainingFile":
        return service_pb2.GetTrainingFileRequest(training_file_id=file_id)
    if rpc == "ArchiveTrainingFile":
        return service_pb2.ArchiveTrainingFileRequest(training_file_id=file_id)
    if rpc == "ListTrainingFiles":
        return service_pb2.ListTrainingFilesRequest(
            page_size=page_size,
            page_token=page_token,
            status=mostly(st.integers(0, 4), INT32),
            include_archived=data.draw(st.booleans()),
        )
    if rpc == "ListTrainingFileConversations":
        return service_pb2.ListTrainingFileConversationsRequest(
            training_file_id=file_id, page_size=page_size, page_token=page_token
        )
    if rpc == "GetDownloadUrl":
        url = service_pb2.GetDownloadUrlRequest(
            training_file_id=file_id,
            format=mostly(st.integers(1, 2), INT32),
        )
        expiry = mostly(st.none(), _expiry())
        if expiry is not None:
            url.expires_in.CopyFrom(expiry)
        return url
    assert rpc == "ListEligibleConversations"
    return service_pb2.ListEligibleConversationsRequest(
        page_size=page_size,
        page_token=page_token,
        exclude_training_file_id=mostly(st.just(""), st.just(file_id)),
    )


RPCS = [
    "CreateTrainingFile",
    "AddConversations",
    "GetTrainingFile",
    "ListTrainingFiles",
    "ListTrainingFileConversations",
    "GetDownloadUrl",
    "ArchiveTrainingFile",
    "ListEligibleConversations",
]
# The two that write, and can fail in the most ways, come up more often.
WEIGHTED_RPCS = [*RPCS, "CreateTrainingFile", "AddConversations", "AddConversations"]
VALID_CALLERS = ["alice", "bob", "service"]
REFUSED_CALLERS = ["none", "garbage", "expired", "other-key", "anon"]


# ----------------------------------------------------------------- the property


async def _call(
    world: World, rpc: str, request: Message, caller: str
) -> tuple[grpc.StatusCode, list[Message]]:
    header = world.tokens[caller]
    metadata = [] if header is None else [("authorization", header)]
    method = getattr(service_pb2_grpc.TrainingFileServiceStub(world.channel), rpc)
    call = method(request, metadata=metadata, timeout=TIMEOUT)
    if rpc in STREAMS:
        result = await collect(call)
        code = result.error.code() if result.error else grpc.StatusCode.OK
        return code, list(result.messages)
    try:
        return grpc.StatusCode.OK, [await call]
    except grpc.aio.AioRpcError as error:
        return error.code(), []


def _check_visibility(world: World, caller: str, rpc: str, response: Any) -> None:
    """A user is only ever shown, and only ever changes, their own files and conversations."""
    if caller not in ("alice", "bob"):
        return
    me = str(world.alice.id if caller == "alice" else world.bob.id)
    if rpc in STREAMS:
        assert response.training_file.created_by == me
    elif rpc in ("GetTrainingFile", "ArchiveTrainingFile"):
        assert response.created_by == me
    elif rpc == "ListTrainingFiles":
        assert {f.created_by for f in response.training_files} <= {me}
    elif rpc == "ListEligibleConversations":
        assert {c.created_by for c in response.conversations} <= {me}


async def _one_call(
    world: World, server: RunningServer, rpc: str, caller: str, request: Message
) -> None:
    """Make one fuzzed call and check the property for it."""
    before = await state(server)
    code, responses = await _call(world, rpc, request, caller)
    after = await state(server)
    world.outcomes[f"{rpc}:{code.name}"] = world.outcomes.get(f"{rpc}:{code.name}", 0) + 1

    assert code not in BROKEN, f"{rpc} as {caller}: {code}"
    if caller == "anon":
        assert code == grpc.StatusCode.PERMISSION_DENIED
    elif caller in ("none", "garbage", "expired", "other-key"):
        assert code == grpc.StatusCode.UNAUTHENTICATED
    if code != grpc.StatusCode.OK or rpc not in WRITERS:
        assert after == before, f"{rpc} as {caller} ended {code.name} but wrote"
        if code == grpc.StatusCode.OK:
            _check_visibility(world, caller, rpc, responses[-1])
            token = getattr(responses[-1], "next_page_token", "")
            if token and len(world.page_tokens) < 50:
                world.page_tokens.append(token)
        return
    # A successful write changed only what it should.
    if rpc == "CreateTrainingFile":
        file = responses[-1].training_file  # type: ignore[attr-defined]
        assert after.intents == before.intents
        assert after.training_files == before.training_files + 1
        assert after.file_conversations == before.file_conversations + file.conversation_count
        assert after.objects - before.objects == output_keys(file)
        owner = {str(world.alice.id): "alice", str(world.bob.id): "bob"}.get(file.created_by)
        world.files.setdefault(owner or "service", []).append(file.id)
    elif rpc == "AddConversations":
        file = responses[-1].training_file  # type: ignore[attr-defined]
        added = len(request.conversation_ids)  # type: ignore[attr-defined]
        assert after.training_files == before.training_files
        assert after.file_conversations == before.file_conversations + added
        # The new version's objects appeared; only that file's old ones went.
        assert after.objects - before.objects == output_keys(file)
        gone = before.objects - after.objects
        assert all(key.startswith(f"{file.id}/") for key in gone)
        # The old version's objects (two v4 outputs and a card: the fuzzed builds ask for
        # no other format) go at once or, while a download link handed out for the file
        # may still be used, stay as intents the sweeper deletes later.
        assert (len(gone), after.intents - before.intents) in ((3, 0), (0, 3))
    else:
        assert after.intents == before.intents
        assert (after.training_files, after.objects) == (before.training_files, before.objects)
    _check_visibility(world, caller, rpc, responses[-1])


async def test_no_request_breaks_the_server_or_writes_when_refused(
    world: World, server: RunningServer
) -> None:
    """The property for every example, then: still SERVING, and the fuzzing got far."""
    loop = asyncio.get_running_loop()

    # Hypothesis runs the examples in a worker thread (below) and draws there; each call
    # runs on this test's event loop, which owns the channel and the server.
    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        rpc = data.draw(st.sampled_from(WEIGHTED_RPCS), label="rpc")
        caller = _mostly(data, st.sampled_from(VALID_CALLERS), st.sampled_from(REFUSED_CALLERS))
        request = _request(world, caller, rpc, data)
        call = _one_call(world, server, rpc, caller, request)
        asyncio.run_coroutine_threadsafe(call, loop).result(EXAMPLE_TIMEOUT)

    await asyncio.to_thread(fuzz)

    await assert_serving(server.port)
    # The fuzzing reached past validation: some calls of most rpcs succeeded.
    succeeded = {key.split(":")[0] for key, n in world.outcomes.items() if key.endswith(":OK")}
    assert len(succeeded) >= 4, world.outcomes
