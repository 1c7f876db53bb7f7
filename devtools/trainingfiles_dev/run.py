"""`make run`: serve the API on the embedded default, or on configured servers.

Without configuration it starts PostgreSQL and SeaweedFS from their wheels with data under
`.data/` (git-ignored), applies the migrations, creates the buckets, loads demo data once
and serves on 127.0.0.1:50051. A second run reuses the data, ports and credentials and
loads nothing twice. When `DATABASE_URL` and `S3_ENDPOINT_URL` are both set it starts
nothing embedded: it applies the service's migrations (never the development-only ones),
makes sure the buckets exist and serves. Ctrl-C stops everything it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Mapping

import orjson
from pydantic import SecretStr

from trainingfiles_server import logs
from trainingfiles_server.app import RunningServer, serve
from trainingfiles_server.auth import ConfigurationError
from trainingfiles_server.config import Settings
from trainingfiles_server.db import open_database
from trainingfiles_server.storage import open_storage

from .bootstrap import PROJECT_ROOT, BootstrapError, apply_migrations, ensure_buckets
from .console import ConsoleError, start_console, stop_console
from .demo import DEMO_USERS, load_once
from .embedded import EmbeddedError, EmbeddedPostgres, EmbeddedSeaweedFS, port_free
from .token import DEVELOPMENT_JWT_SECRET, development_token

DATA_DIR = PROJECT_ROOT / ".data"
STATE_FILE = DATA_DIR / "embedded.json"
# `make run` serves metrics here unless METRICS_ADDRESS says otherwise.
DEVELOPMENT_METRICS_ADDRESS = "127.0.0.1:9464"


def _load_state() -> dict[str, object]:
    if STATE_FILE.exists():
        state: dict[str, object] = orjson.loads(STATE_FILE.read_bytes())
        return state
    return {}


def _save_state(state: dict[str, object]) -> None:
    STATE_FILE.write_bytes(orjson.dumps(state, option=orjson.OPT_INDENT_2))
    STATE_FILE.chmod(0o600)


def _reusable_port(value: object) -> int | None:
    return value if isinstance(value, int) and port_free(value) else None


def _start_embedded(stack: contextlib.ExitStack) -> Settings:
    """Start both servers (reusing last run's ports and keys) and point Settings at them."""
    DATA_DIR.mkdir(exist_ok=True)
    state = _load_state()
    print("Starting embedded PostgreSQL and SeaweedFS under .data/ …", flush=True)
    postgres = EmbeddedPostgres.start(
        DATA_DIR / "postgres", port=_reusable_port(state.get("postgres_port"))
    )
    stack.callback(postgres.stop)
    seaweed = EmbeddedSeaweedFS.start(
        DATA_DIR / "seaweedfs",
        access_key=str(state["s3_access_key"]) if "s3_access_key" in state else None,
        secret_key=str(state["s3_secret_key"]) if "s3_secret_key" in state else None,
        s3_port=_reusable_port(state.get("s3_port")),
    )
    stack.callback(seaweed.stop)
    _save_state(
        {
            "postgres_port": postgres.port,
            "s3_port": seaweed.s3_port,
            "s3_access_key": seaweed.access_key,
            "s3_secret_key": seaweed.secret_key,
        }
    )
    # Development mode accepts the development JWT secret, unless a real one is set.
    jwt_secret = os.environ.get("JWT_SECRET") or DEVELOPMENT_JWT_SECRET
    return Settings(
        development_mode=True,
        jwt_secret=SecretStr(jwt_secret),
        database_url=SecretStr(postgres.url("trainingfiles")),
        s3_endpoint_url=seaweed.endpoint_url,
        s3_access_key_id=SecretStr(seaweed.access_key),
        s3_secret_access_key=SecretStr(seaweed.secret_key),
    )


def with_development_metrics(settings: Settings, environ: Mapping[str, str]) -> Settings:
    """Metrics on for development, unless METRICS_ADDRESS says where (or, empty, none)."""
    if "METRICS_ADDRESS" in environ:
        return settings
    return settings.model_copy(update={"metrics_address": DEVELOPMENT_METRICS_ADDRESS})


def _development(settings: Settings, embedded: bool) -> bool:
    """Embedded servers with the development secret: tokens and sign-in links are shown."""
    secret = settings.jwt_secret
    return bool(embedded and secret and secret.get_secret_value() == DEVELOPMENT_JWT_SECRET)


def ready_text(
    settings: Settings,
    port: int,
    metrics_port: int | None,
    embedded: bool,
    console: str = "",
) -> str:
    """What `make run` prints once it serves: where, the console, a token, commands to
    try. `console` is the console's URL, or why it did not start ("not started: …")."""
    host = settings.listen_address.rsplit(":", 1)[0]
    target = f"{host}:{port}"
    where = "embedded PostgreSQL and SeaweedFS" if embedded else "the configured servers"
    lines = [f"\nTraining File Service ready on {target} ({where})."]
    if console:
        lines.append(
            f"Web console {console}" if console.startswith("not ") else f"Web console: {console}"
        )
    if _development(settings, embedded):
        token = development_token()
        if console.startswith("http"):
            lines += [
                "Sign in to the console as the demo user (development only):",
                f"  {console}/signin/link?token={token}",
            ]
        lines += [
            f"Development token (demo user {DEMO_USERS[0]}, valid one year;"
            " `make -s token` mints another):",
            f"  export TOKEN={token}",
        ]
    lines += [
        "Try:",
        f"  .venv/bin/grpcurl -plaintext {target} list",
        f'  .venv/bin/grpcurl -plaintext -H "authorization: Bearer $TOKEN" '
        f"-d '{{\"page_size\": 3}}' {target} "
        "trainingfiles.v1.TrainingFileService/ListEligibleConversations",
    ]
    if metrics_port is not None:
        metrics_host = (settings.metrics_address or "").rsplit(":", 1)[0]
        lines.append(f"Metrics: curl -s http://{metrics_host}:{metrics_port}/metrics")
    lines.append("Ctrl-C stops it.")
    return "\n".join(lines)


async def _prepare_and_serve(settings: Settings, *, embedded: bool) -> None:
    async with open_storage(settings) as storage:
        await ensure_buckets(
            storage.client, settings.s3_conversations_bucket, settings.s3_training_bucket
        )
        if embedded:
            async with open_database(settings) as database:
                loaded = await load_once(database.pool, storage)
            if loaded:
                print(f"Loaded {loaded} demo conversations.", flush=True)

    settings = with_development_metrics(settings, os.environ)
    consoles: list[subprocess.Popen[bytes]] = []

    def ready(running: RunningServer) -> None:
        host = settings.listen_address.rsplit(":", 1)[0]
        target = f"{host}:{running.port}"
        console = ""
        if settings.web_listen_address != "off":
            try:
                process, console = start_console(
                    settings.web_listen_address,
                    f"127.0.0.1:{running.port}" if host in ("0.0.0.0", "[::]") else target,
                    development_sign_in=_development(settings, embedded),
                )
                consoles.append(process)
            except ConsoleError as exc:
                console = f"not started: {exc}"
        text = ready_text(settings, running.port, running.metrics_port, embedded, console)
        print(text, flush=True)

    try:
        await serve(settings, on_ready=ready)
    finally:
        for process in consoles:
            stop_console(process)


def main() -> None:
    external = bool(os.environ.get("DATABASE_URL") and os.environ.get("S3_ENDPOINT_URL"))
    log_level = Settings().log_level
    logs.configure(log_level)
    with contextlib.ExitStack() as stack:
        try:
            settings = Settings() if external else _start_embedded(stack)
            apply_migrations(settings.database_url.get_secret_value(), development=not external)
            asyncio.run(_prepare_and_serve(settings, embedded=not external))
        except KeyboardInterrupt:
            pass
        except (BootstrapError, EmbeddedError, ConfigurationError) as exc:
            print(f"make run: {exc}", file=sys.stderr, flush=True)
            if external and "conversations" in str(exc):
                print(
                    "The service's migrations need the pipeline's `conversations` table. "
                    "For a development database, create it first with:\n"
                    '  .venv/bin/dbmate --url "$DATABASE_URL" -d migrations/dev '
                    "--migrations-table schema_migrations_dev --no-dump-schema up",
                    file=sys.stderr,
                )
            raise SystemExit(1) from None
        finally:
            if not external:
                print("Stopping embedded PostgreSQL and SeaweedFS …", flush=True)
    print("Stopped.", flush=True)


if __name__ == "__main__":
    main()
