"""Migrations against the real embedded PostgreSQL: idempotent, constrained, RLS-aware."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import asyncpg
import pytest

from tests.conftest import Stack
from trainingfiles_dev.bootstrap import apply_migrations

Conn: TypeAlias = "asyncpg.Connection[Any]"


@pytest.fixture
async def conn(stack: Stack) -> AsyncIterator[Conn]:
    connection = await asyncpg.connect(stack.database_url)
    try:
        yield connection
    finally:
        await connection.close()


async def _versions(conn: Conn) -> list[str]:
    rows = await conn.fetch(
        "SELECT version FROM schema_migrations UNION ALL "
        "SELECT version FROM schema_migrations_dev ORDER BY 1"
    )
    return [row["version"] for row in rows]


async def test_applying_twice_is_a_no_op(stack: Stack, conn: Conn) -> None:
    before = await _versions(conn)
    tables_before = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    apply_migrations(stack.database_url, development=True)
    assert await _versions(conn) == before
    assert len(before) >= 3
    tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    assert tables == tables_before
    assert {"training_files", "training_file_conversations", "conversations"} <= {
        row["tablename"] for row in tables
    }


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("status", "'deleted'"),
        ("conversation_count", "-1"),
        ("total_training_pairs", "-1"),
        ("json_file_size", "-1"),
        ("jsonl_file_size", "-5"),
        ("human_reviewed_count", "-1"),
        ("name", "'../escape'"),
        ("name", "'.hidden'"),
        ("name", "''"),
    ],
)
async def test_check_constraints_refuse_bad_rows(conn: Conn, column: str, value: str) -> None:
    values = {"name": f"'ok-{uuid.uuid4().hex}'", column: value}
    columns = ", ".join(values)
    with pytest.raises(asyncpg.exceptions.CheckViolationError):
        await conn.execute(
            f"INSERT INTO training_files ({columns}) VALUES ({', '.join(values.values())})"
        )


async def test_active_files_must_point_at_their_objects(conn: Conn) -> None:
    with pytest.raises(asyncpg.exceptions.CheckViolationError):
        await conn.execute(
            "INSERT INTO training_files (name, status) VALUES ($1, 'active')",
            f"no-paths-{uuid.uuid4().hex}",
        )


async def test_names_are_unique_among_files_that_have_not_failed(conn: Conn) -> None:
    name = f"unique-{uuid.uuid4().hex}"
    await conn.execute("INSERT INTO training_files (name, status) VALUES ($1, 'failed')", name)
    await conn.execute("INSERT INTO training_files (name, status) VALUES ($1, 'failed')", name)
    await conn.execute("INSERT INTO training_files (name) VALUES ($1)", name)
    with pytest.raises(asyncpg.exceptions.UniqueViolationError):
        await conn.execute("INSERT INTO training_files (name) VALUES ($1)", name)


async def test_updated_at_is_kept_by_the_database(conn: Conn) -> None:
    row = await conn.fetchrow(
        "INSERT INTO training_files (name, updated_at) VALUES ($1, now() - interval '1 day') "
        "RETURNING id, updated_at",
        f"touch-{uuid.uuid4().hex}",
    )
    assert row is not None
    updated = await conn.fetchval(
        "UPDATE training_files SET description = 'x' WHERE id = $1 RETURNING updated_at",
        row["id"],
    )
    assert updated > row["updated_at"]


async def test_list_and_lookup_indexes_exist(conn: Conn) -> None:
    rows = await conn.fetch(
        "SELECT indexname FROM pg_indexes WHERE tablename IN "
        "('training_files', 'training_file_conversations')"
    )
    names = {row["indexname"] for row in rows}
    assert {
        "training_files_newest_idx",
        "training_files_status_newest_idx",
        "training_files_owner_newest_idx",
        "training_files_live_name_key",
        "training_file_conversations_conversation_idx",
    } <= names


async def test_plain_postgres_gets_no_row_level_security(conn: Conn) -> None:
    enabled = await conn.fetchval(
        "SELECT bool_or(relrowsecurity) FROM pg_class "
        "WHERE relname IN ('training_files', 'training_file_conversations')"
    )
    assert enabled is False


async def test_supabase_database_gets_owner_policies_that_hold(stack: Stack) -> None:
    """With an `auth` schema, RLS is on and an `authenticated` role sees only its rows."""
    admin = await asyncpg.connect(stack.postgres.url("postgres"))
    database = f"rls_{uuid.uuid4().hex[:8]}"
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()
    url = stack.postgres.url(database)
    conn = await asyncpg.connect(url)
    try:
        # Supabase's shape: auth.uid() reads the caller's id from the request settings.
        await conn.execute(
            """
            CREATE SCHEMA auth;
            CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS
              $$ SELECT nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $$;
            DO $$ BEGIN
                IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
                    CREATE ROLE authenticated NOLOGIN;
                END IF;
            END $$;
            """
        )
        apply_migrations(url, development=True)
        enabled = await conn.fetchval(
            "SELECT bool_and(relrowsecurity) FROM pg_class "
            "WHERE relname IN ('training_files', 'training_file_conversations')"
        )
        assert enabled is True
        alice, bob = uuid.uuid4(), uuid.uuid4()
        await conn.execute(
            "INSERT INTO training_files (name, created_by) VALUES ('alice-file', $1), "
            "('bob-file', $2)",
            alice,
            bob,
        )
        await conn.execute(
            "GRANT USAGE ON SCHEMA auth TO authenticated; "
            "GRANT SELECT, INSERT, UPDATE ON training_files TO authenticated"
        )
        async with conn.transaction():
            await conn.execute("SET LOCAL ROLE authenticated")
            await conn.execute(f"SET LOCAL request.jwt.claim.sub = '{alice}'")
            visible = await conn.fetch("SELECT name FROM training_files")
            assert [row["name"] for row in visible] == ["alice-file"]
            changed = await conn.execute("UPDATE training_files SET description = 'x'")
            assert changed == "UPDATE 1"
            with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
                await conn.execute(
                    "INSERT INTO training_files (name, created_by) VALUES ('forged', $1)", bob
                )
    finally:
        await conn.close()
