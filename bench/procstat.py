"""Memory and CPU of a process, read from `/proc` (Linux)."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from types import TracebackType

_TICKS = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status", "rb") as status:
        for line in status:
            if line.startswith(field.encode() + b":"):
                return int(line.split()[1])
    raise LookupError(f"{field} not in /proc/{pid}/status")


def rss_bytes(pid: int) -> int:
    """Resident set size now (`VmRSS`)."""
    return _status_kib(pid, "VmRSS") * 1024


def peak_rss_bytes(pid: int) -> int:
    """The kernel's high-water mark of the resident set size (`VmHWM`)."""
    return _status_kib(pid, "VmHWM") * 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        text = stat.read()
    # The command name may contain spaces and parentheses: fields start after the last ')'.
    fields = text[text.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and its live children (PostgreSQL's backends)."""
    total = cpu_seconds(pid)
    for child in _children(pid):
        try:
            total += cpu_seconds(child)
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    # Children that exited are counted in the parent's cutime/cstime.
    with open(f"/proc/{pid}/stat", "rb") as stat:
        text = stat.read()
    fields = text[text.rindex(b")") + 2 :].split()
    return total + (int(fields[13]) + int(fields[14])) / _TICKS


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as children:
                found += [int(c) for c in children.read().split()]
        except FileNotFoundError:
            continue
    return found


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


@dataclass
class Sample:
    peak_rss: int
    samples: int


class RssSampler:
    """Samples `VmRSS` of `pid` every `interval` seconds on a thread, keeping the peak.

    A thread, not a task: the benchmark's event loop may be busy when memory peaks.
    """

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_bytes(self.pid))
                self.samples += 1
            except (FileNotFoundError, ProcessLookupError, LookupError):
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def result(self) -> Sample:
        return Sample(self.peak, self.samples)


class CpuMeter:
    """CPU seconds a set of processes used between `start()` and `stop()`.

    `trees` names the processes whose children count too (PostgreSQL's backends).
    """

    def __init__(self, pids: dict[str, int | None], trees: frozenset[str] = frozenset()) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid is not None}
        self.trees = trees
        self._start: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        values: dict[str, float] = {}
        for name, pid in self.pids.items():
            try:
                values[name] = tree_cpu_seconds(pid) if name in self.trees else cpu_seconds(pid)
            except (FileNotFoundError, ProcessLookupError):
                values[name] = float("nan")
        return values

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> dict[str, float]:
        end = self._read()
        return {name: round(end[name] - self._start[name], 2) for name in self.pids}
