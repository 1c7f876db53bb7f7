"""Running Creates and Adds, followed by their progress pages over server-sent events.

A build starts when its form is posted; its stream is read by a task of its own, so a
page that is closed or reloaded neither stops nor loses it. Each event is kept, and every
listener replays them from the start: a page opened late still sees the whole bar. A
build belongs to the session that started it (the digest of its token); it is forgotten
`build_retention_seconds` after it ends.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from trainingfiles_client import AsyncTrainingFileOperation, TrainingFilesError

from .present import progress_percent, stage_name


def owner_of(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Build:
    id: str
    owner: str
    action: str  # "create" or "add"
    operation: AsyncTrainingFileOperation
    events: list[dict[str, object]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    finished_at: float | None = None
    training_file_id: str = ""

    def publish(self, event: dict[str, object]) -> None:
        self.events.append(event)
        self.changed.set()
        self.changed = asyncio.Event()


class Builds:
    def __init__(self, retention_seconds: float) -> None:
        self._builds: dict[str, Build] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._retention = retention_seconds

    def start(
        self,
        owner: str,
        action: str,
        operation: AsyncTrainingFileOperation,
        first: object,
        training_file_id: str,
    ) -> Build:
        """Follow an operation whose first event (`first`) has been read already."""
        self._forget_old()
        build = Build(secrets.token_urlsafe(16), owner, action, operation)
        build.training_file_id = training_file_id
        self._builds[build.id] = build
        task = asyncio.create_task(self._follow(build, first))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return build

    def get(self, build_id: str, owner: str) -> Build | None:
        build = self._builds.get(build_id)
        return build if build is not None and secrets.compare_digest(build.owner, owner) else None

    async def close(self) -> None:
        for build in self._builds.values():
            if build.finished_at is None:
                build.operation.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _forget_old(self) -> None:
        now = time.monotonic()
        for build_id, build in list(self._builds.items()):
            if build.finished_at is not None and now - build.finished_at > self._retention:
                del self._builds[build_id]

    async def _follow(self, build: Build, first: object) -> None:
        try:
            build.publish(_progress(first))
            async for event in build.operation:
                build.publish(_progress(event))
            training_file = await build.operation.result()
            build.training_file_id = training_file.id
            build.publish(
                {"type": "done", "percent": 100, "stage": "done", "file_id": training_file.id}
            )
        except TrainingFilesError as error:
            build.publish({"type": "failed", "message": error.message, "reason": error.reason})
        finally:
            build.finished_at = time.monotonic()


def _progress(event: object) -> dict[str, object]:
    stage = int(getattr(event, "stage", 0))
    done = int(getattr(event, "done", 0))
    total = int(getattr(event, "total", 0))
    return {
        "type": "progress",
        "stage": stage_name(stage),
        "done": done,
        "total": total,
        "percent": progress_percent(stage, done, total),
    }


async def event_stream(build: Build) -> AsyncIterator[str]:
    """The build's events as server-sent events, from the first, until it ends."""
    sent = 0
    while True:
        changed = build.changed
        while sent < len(build.events):
            event = build.events[sent]
            sent += 1
            yield f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"
            if event["type"] in ("done", "failed"):
                return
        try:
            await asyncio.wait_for(changed.wait(), timeout=15)
        except TimeoutError:
            yield ": keep-alive\n\n"
