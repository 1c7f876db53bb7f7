"""PostgreSQL access: one asyncpg pool per process, queries as named SQL constants.

Library errors are translated into the domain's errors here (`translate_errors`), so the
rest of the service never sees an asyncpg exception.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import orjson

from .config import Settings
from .errors import Unavailable

PING = "SELECT 1"

# Errors that mean "the database cannot be reached right now", as opposed to a bug or a
# constraint violation: the caller may retry.
_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.InterfaceError,
)


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Turn connectivity failures into `Unavailable`; everything else propagates."""
    try:
        yield
    except _UNAVAILABLE_ERRORS as exc:
        raise Unavailable("the database is unavailable; retry later") from exc


async def _init_connection(conn: asyncpg.Connection[Any]) -> None:
    # jsonb in and out through orjson, as every JSON byte of the service.
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda value: orjson.dumps(value).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )


class Database:
    """The service's view of PostgreSQL; wraps the one pool of the process."""

    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self.pool = pool

    async def ping(self) -> None:
        with translate_errors():
            await self.pool.fetchval(PING)


@contextlib.asynccontextmanager
async def open_database(settings: Settings) -> AsyncIterator[Database]:
    """Create the pool (connecting `database_pool_min_size` connections) and close it."""
    with translate_errors():
        pool = await asyncpg.create_pool(
            dsn=settings.database_url.get_secret_value(),
            min_size=settings.database_pool_min_size,
            max_size=settings.database_pool_max_size,
            statement_cache_size=settings.database_statement_cache_size,
            command_timeout=settings.database_command_timeout_seconds,
            init=_init_connection,
        )
    try:
        yield Database(pool)
    finally:
        await pool.close()
