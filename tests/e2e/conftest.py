"""Fixtures for the end-to-end tests: generated conversations loaded into the stack."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest

from trainingfiles_dev.generator import Awkward, GeneratedConversation, Kind, generate, load
from trainingfiles_server.app import RunningServer
from trainingfiles_server.storage import Storage

OWNER = uuid.UUID("00000000-0000-4000-8000-00000000e2e1")


@dataclass(frozen=True)
class Dataset:
    conversations: list[GeneratedConversation]

    def ids(self, kind: Kind = Kind.ELIGIBLE) -> list[str]:
        return [str(c.conversation_id) for c in self.conversations if c.kind is kind]

    def usable(self) -> list[str]:
        return [str(c.conversation_id) for c in self.conversations if c.kind.document_valid]


@pytest.fixture(scope="session")
async def dataset(server: RunningServer, storage: Storage) -> Dataset:
    conversations = list(
        generate(
            7,
            120,
            owners=[OWNER],
            awkward=Awkward(
                extra_fields=4,
                other_vertical=1,
                other_profile=1,
                not_started=2,
                in_progress=2,
                null_path=2,
                missing_object=2,
                malformed_json=2,
                malformed_schema=2,
            ),
        )
    )
    await load(server.database.pool, storage.client, storage.conversations_bucket, conversations)
    return Dataset(conversations)
