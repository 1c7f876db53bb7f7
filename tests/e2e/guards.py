"""Helpers for the identity, hostile-input and fuzz tests: who calls, and what changed.

`state` captures everything a call could write — the row counts of the three tables the
service owns, a fingerprint of every training file's mutable columns (so an archive or
a status change shows even when no row is added) and the training bucket's keys — so a
rejected request can be shown to have changed nothing. Everything goes through the real
servers; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import mint
from tests.e2e.helpers import object_keys
from trainingfiles_dev.generator import Awkward, GeneratedConversation, generate, load
from trainingfiles_server.app import RunningServer
from trainingfiles_server.storage import Storage

SERVING = health_pb2.HealthCheckResponse.SERVING
SERVICE = "trainingfiles.v1.TrainingFileService"

# Codes that mean "the server broke", never an acceptable answer to any input.
BROKEN = (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)


@dataclass(frozen=True)
class State:
    training_files: int
    file_conversations: int
    intents: int
    # md5 over (id, status, version, updated_at) of every training file.
    files_fingerprint: str
    objects: frozenset[str]


_COUNTS = """
SELECT (SELECT count(*) FROM training_files),
       (SELECT count(*) FROM training_file_conversations),
       (SELECT count(*) FROM storage_intents),
       (SELECT coalesce(md5(string_agg(
            id::text || ':' || status || ':' || version || ':' || updated_at::text,
            ',' ORDER BY id)), '')
          FROM training_files)
"""


async def state(server: RunningServer) -> State:
    row = await server.database.pool.fetchrow(_COUNTS)
    assert row is not None
    return State(row[0], row[1], row[2], row[3], frozenset(await object_keys(server)))


async def swept_once(server: RunningServer) -> None:
    """Wait (bounded) for a server's start-up sweep: it may fail the builds other tests
    left with an expired lease, which is no change a request under test made."""
    async with asyncio.timeout(30):
        while server.sweeper.sweeps < 1:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def assert_unchanged(server: RunningServer, before: State) -> None:
    after = await state(server)
    assert after.objects == before.objects, (
        f"objects appeared {sorted(after.objects - before.objects)} "
        f"or vanished {sorted(before.objects - after.objects)}"
    )
    assert after == before, f"the database changed: {before} -> {after}"


async def health_status(port: int, service: str = "") -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        status: int = response.status
        return status


async def assert_serving(port: int, within: float = 5.0) -> None:
    """Health needs no token, and the server and its service are both SERVING.

    Within a few probe intervals: on a loaded machine one background probe of the
    database or the store can miss its 1 s timeout and say NOT_SERVING until the next
    one; a server a request broke stays NOT_SERVING (or stops answering) and fails here.
    """
    deadline = asyncio.get_running_loop().time() + within
    while True:
        statuses = (await health_status(port), await health_status(port, SERVICE))
        if statuses == (SERVING, SERVING) or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.1)
    assert statuses == (SERVING, SERVING), statuses


@dataclass(frozen=True)
class User:
    """A user with a token and conversations of their own in the stack."""

    id: uuid.UUID
    token: str
    conversations: list[GeneratedConversation]

    def ids(self, count: int | None = None) -> list[str]:
        """Ids of this user's usable conversations (ready rows, valid documents)."""
        usable = [str(c.conversation_id) for c in self.conversations if c.kind.document_valid]
        return usable if count is None else usable[:count]

    def unusable(self) -> list[GeneratedConversation]:
        return [c for c in self.conversations if not c.kind.row_ready]


async def make_user(
    server: RunningServer,
    storage: Storage,
    seed: int,
    count: int,
    *,
    awkward: Awkward | None = None,
    user_id: uuid.UUID | None = None,
    token_claims: dict[str, Any] | None = None,
) -> User:
    """A user (fresh unless `user_id` is given) owning `count` generated conversations.

    Each caller passes its own `seed`: the conversation ids depend on it alone.
    """
    user_id = user_id or uuid.uuid4()
    conversations = list(generate(seed, count, owners=[user_id], awkward=awkward or Awkward()))
    await load(server.database.pool, storage.client, storage.conversations_bucket, conversations)
    # The generator's ids depend on the seed only: a re-used seed would keep the rows of
    # an earlier owner, so make sure these really are this user's.
    owners = await server.database.pool.fetch(
        "SELECT DISTINCT created_by FROM conversations WHERE conversation_id = ANY($1::uuid[])",
        [c.conversation_id for c in conversations],
    )
    assert [r[0] for r in owners] == [user_id], f"seed {seed} is used by another test"
    token = mint("authenticated", user_id, **(token_claims or {}))
    return User(user_id, token, conversations)


def ids_of(conversations: Sequence[GeneratedConversation]) -> list[str]:
    return [str(c.conversation_id) for c in conversations]
