"""Running the `trainingfiles` command as its users do: a process of its own, its
output captured; shared by the end-to-end tests of the command."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainingfiles_server.app import RunningServer


def command() -> list[str]:
    """The installed console script next to this interpreter, else the module."""
    script = Path(sys.executable).parent / "trainingfiles"
    return [str(script)] if script.exists() else [sys.executable, "-m", "trainingfiles_client.cli"]


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def json_lines(self) -> list[Any]:
        return [json.loads(line) for line in self.stdout.splitlines()]


@dataclass(frozen=True)
class Cli:
    env: dict[str, str]
    timeout: float = 60.0  # per command

    async def __call__(self, *args: str, stdin: str | None = None, **env: str) -> Run:
        def run() -> Run:
            done = subprocess.run(
                [*command(), *args],
                input=stdin,
                capture_output=True,
                text=True,
                env={**self.env, **env},
                timeout=self.timeout,
            )
            return Run(done.returncode, done.stdout, done.stderr)

        return await asyncio.to_thread(run)


def cli_env(server: RunningServer, token: str) -> dict[str, str]:
    """The environment of a command aimed at `server` with `token`, nothing else of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAININGFILES_")}
    env.update(TRAININGFILES_TARGET=f"127.0.0.1:{server.port}", TRAININGFILES_TOKEN=token)
    return env
