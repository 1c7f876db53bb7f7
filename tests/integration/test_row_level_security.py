"""Row-level security beyond the owner policies: the service's bookkeeping is its alone.

On a database shaped like Supabase's (an `auth` schema with `auth.uid()`, the
`authenticated` and `anon` roles, and the default grants of the `public` schema to them,
as Supabase's REST API relies on), a user can neither see, add nor remove the intents
that start-up repair acts on, while the service's own role can.
"""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from tests.conftest import Stack
from trainingfiles_dev.bootstrap import apply_migrations

# The service's own bookkeeping: no API role may read or write these.
SERVICE_ONLY = ("storage_intents", "conversation_changes", "staged_members", "job_leases")


async def test_users_cannot_touch_the_services_bookkeeping_on_supabase(stack: Stack) -> None:
    admin = await asyncpg.connect(stack.postgres.url("postgres"))
    database = f"rls_intents_{uuid.uuid4().hex[:8]}"
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()
    url = stack.postgres.url(database)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            """
            CREATE SCHEMA auth;
            CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS
              $$ SELECT nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $$;
            DO $$ BEGIN
              IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
                CREATE ROLE authenticated NOLOGIN;
              END IF;
              IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
                CREATE ROLE anon NOLOGIN;
              END IF;
            END $$;
            """
        )
        apply_migrations(url, development=True)
        for table in SERVICE_ONLY:
            assert await conn.fetchval(
                "SELECT relrowsecurity FROM pg_class WHERE relname = $1", table
            ), table
        file_id = uuid.uuid4()
        await conn.execute(
            "INSERT INTO storage_intents (bucket, object_key, training_file_id) "
            "VALUES ('training-files', 'live/object.json', $1)",
            file_id,
        )
        await conn.execute(
            "INSERT INTO job_leases (job, holder, expires_at) VALUES ('sweeper', $1, now())",
            uuid.uuid4(),
        )
        # Supabase grants the API roles everything on the public schema's tables.
        await conn.execute(
            "GRANT USAGE ON SCHEMA auth TO authenticated, anon; "
            "GRANT ALL ON ALL TABLES IN SCHEMA public TO authenticated, anon"
        )
        for role in ("authenticated", "anon"):
            async with conn.transaction():
                await conn.execute(f"SET LOCAL ROLE {role}")
                await conn.execute(f"SET LOCAL request.jwt.claim.sub = '{uuid.uuid4()}'")
                assert await conn.fetch("SELECT * FROM storage_intents") == []
                assert await conn.fetch("SELECT * FROM job_leases") == []
                assert await conn.execute("DELETE FROM storage_intents") == "DELETE 0"
                with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
                    await conn.execute(
                        "INSERT INTO storage_intents (bucket, object_key, training_file_id) "
                        "VALUES ('training-files', 'someone-elses/object.json', $1)",
                        file_id,
                    )
        # The service's role (the owner here) still sees and changes them.
        assert await conn.fetchval("SELECT count(*) FROM storage_intents") == 1
    finally:
        await conn.close()
