"""Named points in a build where the crash tests make the process die or stall.

Off unless `TRAININGFILES_FAILPOINT` is set in the environment of the server process,
which only the crash suite (`tests/crash`) and `make chaos` do; then `reach` costs a
string comparison. The value is `<point>` or `<point>:<n>` (act on the n-th time the
point is reached, 1 by default), followed optionally by an action: `=kill` (the default:
SIGKILL, no cleanup at all), `=stall` (this build sleeps forever while the rest of the
process, its lease renewal included, goes on), `=stop` (SIGSTOP: the whole process
freezes until a SIGCONT, as a paused VM or a long GC would, and its lease runs out).

The points, in the order a build reaches them: `build.leased` (row and intents
written), `build.upload_started` (a multipart upload created, not yet recorded),
`build.upload_recorded`, `build.fetched` (a document written into the outputs),
`build.uploaded` (objects complete, not yet committed), `build.committed` (committed,
the last message not yet sent). One point is the sweeper's: `sweep.started` (its turn
taken, nothing swept yet).
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
    "sweep.started",
)


def _parse(value: str | None) -> tuple[str, int, str] | None:
    if not value:
        return None
    spec, _, action = value.partition("=")
    point, _, count = spec.partition(":")
    if point not in POINTS or action not in ("", "kill", "stall", "stop"):
        raise ValueError(f"TRAININGFILES_FAILPOINT={value!r}: unknown point or action")
    return point, int(count or 1), action or "kill"


_ARMED: tuple[str, int, str] | None = _parse(os.environ.get("TRAININGFILES_FAILPOINT"))
_reached: dict[str, int] = {}


async def reach(point: str) -> None:
    """Die, stall or freeze here when the environment says so; otherwise nothing."""
    if _ARMED is None or _ARMED[0] != point:
        return
    _reached[point] = _reached.get(point, 0) + 1
    if _reached[point] != _ARMED[1]:
        return
    action = _ARMED[2]
    if action == "stall":
        await asyncio.Event().wait()  # this build, stalled for good
    elif action == "stop":
        os.kill(os.getpid(), signal.SIGSTOP)  # resumes here on SIGCONT
    else:
        os.kill(os.getpid(), signal.SIGKILL)
