"""The service under test, as its own process: `python -m trainingfiles_server`.

Started with the benchmark's settings in its environment, waited for until its health
check says SERVING, and always stopped by pid (SIGTERM, then SIGKILL) when the block
exits — also on failure and Ctrl-C. If the benchmark process dies, the kernel sends the
server SIGTERM (parent-death signal).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from trainingfiles_dev.embedded import free_port
from trainingfiles_dev.token import mint_token
from trainingfiles_server.config import Settings

from .stack import Stack

MAX_OBJECT_BYTES = 4 * 1024**3  # the training file of 10,000 conversations is ~0.4 GB
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(frozen=True)
class Service:
    pid: int
    port: int
    token: str
    env: dict[str, str]
    log_path: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def metadata(self) -> tuple[tuple[str, str]]:
        return (("authorization", f"Bearer {self.token}"),)


def service_settings(fetch_concurrency: int | None, max_ids: int) -> dict[str, str]:
    """The benchmark's departures from the defaults (recorded with the results)."""
    settings = {
        "MAX_OBJECT_BYTES": str(MAX_OBJECT_BYTES),
        "MAX_CONVERSATIONS_PER_REQUEST": str(max(10_000, max_ids)),
        "MAX_CONVERSATIONS_PER_SELECTOR": str(max(100_000, max_ids)),
        # 50,000 ids are ~2 MB in one request: within the default 4 MiB message limit.
    }
    if fetch_concurrency is not None:
        settings["FETCH_CONCURRENCY"] = str(fetch_concurrency)
    return settings


@contextlib.asynccontextmanager
async def running_service(
    stack: Stack, settings: dict[str, str], log_path: Path
) -> AsyncIterator[Service]:
    port = free_port()
    secret = secrets.token_urlsafe(48)
    # The service's defaults, whatever the shell exports: its settings are dropped from the
    # inherited environment, and it runs outside the project so no `.env` is read.
    own = {name.upper() for name in Settings.model_fields}
    env = {
        **{k: v for k, v in os.environ.items() if k.upper() not in own},
        **stack.server_env(),
        "LISTEN_ADDRESS": f"127.0.0.1:{port}",
        "JWT_SECRET": secret,
        "SHUTDOWN_GRACE_SECONDS": "5",
        **settings,
    }
    token = mint_token(
        secret, user_id=uuid.uuid4(), role="service_role", lifetime_seconds=24 * 3600
    )
    process = _spawn(env, log_path)
    try:
        await _wait_serving(f"127.0.0.1:{port}", process)
        yield Service(process.pid, port, token, settings, log_path)
    finally:
        # Blocking on purpose: also when the benchmark is being cancelled (Ctrl-C).
        _stop(process)


def _spawn(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "trainingfiles_server"],
            env=env,
            cwd=log_path.parent,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            preexec_fn=_die_with_parent,
            start_new_session=True,  # Ctrl-C reaches the benchmark, which stops it
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


async def _wait_serving(target: str, process: subprocess.Popen[bytes]) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        async with asyncio.timeout(60):
            while True:
                if process.poll() is not None:
                    raise RuntimeError(
                        f"the service exited with code {process.returncode} while starting"
                    )
                with contextlib.suppress(grpc.aio.AioRpcError):
                    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                await asyncio.sleep(0.1)
