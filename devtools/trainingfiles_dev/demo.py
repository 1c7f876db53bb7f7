"""Demo data for `make run`: a few hundred generated conversations, loaded once.

Most are eligible; some are not (not enriched yet, no path, a missing or malformed
document) so that validation errors can be tried from grpcurl and the CLI.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from trainingfiles_server.storage import Storage

from .generator import Awkward, generate, load

DEMO_SEED = 20261127
DEMO_COUNT = 300
# The two demo users who own the conversations (the first owns most of them).
DEMO_USERS = (
    uuid.UUID("00000000-0000-4000-8000-0000000000d1"),
    uuid.UUID("00000000-0000-4000-8000-0000000000d2"),
)
DEMO_AWKWARD = Awkward(
    extra_fields=10,
    not_started=10,
    in_progress=10,
    null_path=5,
    missing_object=5,
    malformed_json=3,
    malformed_schema=3,
)


async def load_once(pool: asyncpg.Pool[Any], storage: Storage) -> int:
    """Load the demo conversations unless the table already has rows; returns how many."""
    if await pool.fetchval("SELECT EXISTS (SELECT 1 FROM conversations)"):
        return 0
    conversations = generate(DEMO_SEED, DEMO_COUNT, owners=DEMO_USERS, awkward=DEMO_AWKWARD)
    await load(pool, storage.client, storage.conversations_bucket, conversations)
    return DEMO_COUNT
