"""`make bench` against Supabase Storage, the production store, instead of SeaweedFS.

    python -m bench.on_supabase [the benchmark's options, e.g. --sizes 10000 --skip-floor]

Starts PostgreSQL (embedded, durable under `.bench/supabase/`, so the conversations
are loaded once) and Supabase Storage from its source (`SUPABASE_STORAGE_SRC`, else
`../shared/supabase-storage`; the compatibility suite's launcher, file backend), then
runs `python -m bench` with `DATABASE_URL` and `S3_*` pointing at them: a configured
stack, as the benchmark's docstring says. Results are printed, never saved (`--no-save`):
`bench/results/` keeps the embedded store's runs, which the README's tables are drawn
from. Both servers are stopped on exit, whatever happens.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence

from tests.compat import supabase
from trainingfiles_dev.bootstrap import apply_migrations
from trainingfiles_dev.embedded import EmbeddedPostgres

from .stack import BENCH_DIR


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    src = supabase.source()
    reason = supabase.missing_source_reason(src)
    if reason is not None:
        print(f"Supabase Storage cannot run: {reason}", file=sys.stderr)
        return 2
    directory = BENCH_DIR / "supabase"
    directory.mkdir(parents=True, exist_ok=True)
    postgres = EmbeddedPostgres.start(directory / "postgres", durable=True)
    try:
        postgres.create_database("trainingfiles")
        postgres.create_database("supabase_storage")
        database_url = postgres.url("trainingfiles")
        apply_migrations(database_url, development=True)  # the conversations table too
        # The app is copied from its source on every start; the stored objects stay.
        shutil.rmtree(directory / "storage" / "supabase-storage", ignore_errors=True)
        with supabase.running(
            src, directory / "storage", postgres.url("supabase_storage")
        ) as storage:
            env = {
                **os.environ,
                "DATABASE_URL": database_url,
                "S3_ENDPOINT_URL": storage.endpoint_url,
                "S3_REGION": storage.region,
                "S3_ACCESS_KEY_ID": storage.access_key,
                "S3_SECRET_ACCESS_KEY": storage.secret_key,
            }
            command = [sys.executable, "-m", "bench", *args, "--no-save"]
            return subprocess.run(command, env=env, check=False).returncode
    finally:
        postgres.stop()


if __name__ == "__main__":
    sys.exit(main())
