"""Named points in a build where the crash tests make the process die or stall.

Off unless `TRAININGFILES_FAILPOINT` is set in the environment of the server process,
which only the crash suite (`tests/crash`) and `make chaos` do; then `reach` costs a
string comparison. The value is `<point>` or `<point>:<n>` (act on the n-th time the
point is reached, 1 by default), followed optionally by `=stall` (sleep forever instead
of dying: a live process that stopped making progress, whose lease runs out).

The points, in the order a build reaches them: `build.leased` (row and intents
written), `build.upload_started` (a multipart upload created, not yet recorded),
`build.upload_recorded`, `build.fetched` (a document written into the outputs),
`build.uploaded` (objects complete, not yet committed), `build.committed` (committed,
the last message not yet sent).
"""

from __future__ import annotations

import asyncio
import os
import signal

POINTS = (
    "build.leased",
    "build.upload_started",
    "build.upload_recorded",
    "build.fetched",
    "build.uploaded",
    "build.committed",
)


def _parse(value: str | None) -> tuple[str, int, bool] | None:
    if not value:
        return None
    spec, _, action = value.partition("=")
    point, _, count = spec.partition(":")
    if point not in POINTS or action not in ("", "kill", "stall"):
        raise ValueError(f"TRAININGFILES_FAILPOINT={value!r}: unknown point or action")
    return point, int(count or 1), action == "stall"


_ARMED = _parse(os.environ.get("TRAININGFILES_FAILPOINT"))
_reached: dict[str, int] = {}


async def reach(point: str) -> None:
    """Die (SIGKILL, no cleanup at all) or stall here when the environment says so."""
    if _ARMED is None or _ARMED[0] != point:
        return
    _reached[point] = _reached.get(point, 0) + 1
    if _reached[point] != _ARMED[1]:
        return
    if _ARMED[2]:
        await asyncio.Event().wait()  # stalled for good; only a kill ends it
    os.kill(os.getpid(), signal.SIGKILL)
