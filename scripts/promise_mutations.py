"""Break each promise on purpose, one at a time, and check that a test notices.

`make mutants` runs this after mutmut: every entry below is a small edit that breaks one
behaviour the README or the protos promise (crash safety, cleanup, links, limits). The
edit is applied, the tests named with it are run, and the edit is undone; the run must
fail. A mutation whose tests still pass is a promise without a test that can fail, and
this script exits 1.

    python scripts/promise_mutations.py [--root DIR] [--only NAME ...]

`--root` runs against another checkout of the project (its `server/` and client code are
put first on PYTHONPATH), so the mutations never touch a tree someone is working in.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

S = "server/trainingfiles_server/"
CRASH = "tests/crash/test_crash.py"


@dataclass(frozen=True)
class Mutation:
    name: str
    promise: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    # Further edits applied together with the first: a promise kept by two guards is
    # only broken when both are (each alone is shown to suffice by its own test).
    also: tuple[tuple[str, str, str], ...] = ()

    def edits(self) -> list[tuple[str, str, str]]:
        return [(self.path, self.old, self.new), *self.also]


MUTATIONS = (
    Mutation(
        "no-start-up-sweep",
        "a restarted server repairs what a crash left at once (README: the sweeper)",
        S + "sweeper.py",
        "        while True:\n            try:\n                await self.sweep()",
        "        while True:\n            await asyncio.sleep(self.interval)\n"
        "            try:\n                await self.sweep()",
        (CRASH + "::test_start_up_sweeps_at_once",),
    ),
    Mutation(
        "build-failure-keeps-uploads",
        "a failed build aborts its multipart uploads itself",
        S + "passes.py",
        "                        stats,\n                    )\n                )\n            )\n"
        "        except BaseException:\n            await shielded(outputs.abort())",
        "                        stats,\n                    )\n                )\n            )\n"
        "        except BaseException:\n            pass",
        ("tests/e2e/test_failures.py::test_a_cancelled_create_aborts_its_open_uploads_itself",),
    ),
    Mutation(
        "writer-abort-keeps-upload",
        "an aborted object leaves no multipart upload behind",
        S + "storage.py",
        "        if self._upload_id is not None:\n            with contextlib.suppress(Exception):",
        "        if False:\n            with contextlib.suppress(Exception):",
        ("tests/e2e/test_failures.py::test_a_cancelled_create_aborts_its_open_uploads_itself",),
    ),
    Mutation(
        "copies-shifted-range",
        "an Add, and a Remove of kept ranges, are byte-for-byte a Create (server-side copy)",
        S + "storage.py",
        'CopySourceRange=f"bytes={start}-{end - 1}"',
        'CopySourceRange=f"bytes={start + 7}-{end + 6}"',
        ("tests/e2e/test_large_files.py",),
    ),
    Mutation(
        "commit-without-lease",
        "a build that lost its lease can never activate (ABORTED, the file stays FAILED)",
        S + "db.py",
        "WHERE id = $1 AND lease_token = $15 AND lease_expires_at > clock_timestamp()\n"
        "  AND status = $16",
        "WHERE id = $1 AND $15::uuid IS NOT NULL AND $16::text IS NOT NULL",
        (CRASH + "::test_a_frozen_build_that_lost_its_lease_can_never_activate",),
        # The second guard: the commit also claims the build's own intents.
        also=((S + "db.py", 'if claimed != f"DELETE {len(keys)}":', "if False:"),),
    ),
    Mutation(
        "many-sweepers",
        "one sweeper at a time across replicas",
        S + "db.py",
        "WHERE held.expires_at <= clock_timestamp()\n",
        "WHERE true\n",
        (CRASH + "::test_one_sweeper_at_a_time_across_replicas",),
    ),
    Mutation(
        "frozen-sweeper-holds-on",
        "a replica frozen mid-sweep holds the others back one lease at most",
        S + "db.py",
        "WHERE held.expires_at <= clock_timestamp()\n",
        "WHERE false\n",
        (
            CRASH
            + "::test_a_replica_frozen_in_the_middle_of_a_sweep_holds_the_others_back_one_lease",
        ),
    ),
    Mutation(
        "sweeper-takes-live-builds",
        "the sweeper never touches a live build of another replica",
        S + "db.py",
        "        AND f.lease_expires_at > clock_timestamp())",
        "        AND f.lease_expires_at > clock_timestamp() + interval '1 day')",
        (CRASH + "::test_a_sweeper_never_touches_the_live_build_of_another_replica",),
    ),
    Mutation(
        "expired-builds-stay",
        "a killed build is repaired within a lease and a sweep, not 15 minutes",
        S + "db.py",
        "WHERE status = 'processing'\n"
        "  AND (lease_token IS NULL OR lease_expires_at <= clock_timestamp())",
        "WHERE false",
        (CRASH + "::test_a_create_killed_at_any_stage_is_repaired_after_a_restart",),
    ),
    Mutation(
        "staged-members-stay",
        "a dead build's staged members are deleted by the sweeper, a failed one's by its cleanup",
        S + "db.py",
        "                await conn.execute(DROP_ORPHAN_STAGED_MEMBERS)\n",
        "",
        (CRASH + "::test_a_build_killed_before_its_commit_leaves_no_staged_member",),
    ),
    Mutation(
        "orphan-uploads-stay",
        "uploads no build accounts for are aborted by the sweeper",
        S + "sweeper.py",
        "if upload.upload_id not in live and upload.initiated < cutoff:",
        "if False:",
        ("tests/e2e/test_failures.py::test_the_sweeper_aborts_uploads_no_build_accounts_for",),
    ),
    Mutation(
        "shutdown-closes-before-cleanup",
        "SIGTERM: cleanup of cancelled builds finishes before the pool closes",
        S + "app.py",
        "                await operations.drain(settings.shutdown_cleanup_seconds)",
        "                pass",
        (CRASH + "::test_sigterm_past_the_grace_cleans_up_before_the_pool_closes",),
    ),
    Mutation(
        "replaced-objects-deleted-at-once",
        "a download link keeps working after an Add replaced its objects",
        S + "db.py",
        "SELECT $1, key, f.id, greatest(now(), f.links_valid_until)",
        "SELECT $1, key, f.id, now()",
        ("tests/e2e/test_concurrency.py",),
    ),
    Mutation(
        "details-unbounded",
        "error details fit the 8 KiB metadata limit of standard gRPC clients",
        S + "interceptors.py",
        "DETAILS_BUDGET = 4096",
        "DETAILS_BUDGET = 64 * 1024 * 1024",
        (
            "tests/e2e/test_create_validation.py::test_many_offenders_reach_a_default_grpc_client_with_a_count",
        ),
    ),
    Mutation(
        "adds-out-of-order",
        "concurrent Adds on one file run one at a time in arrival order",
        S + "builds.py",
        "        async with self._queue.turn(record.id):",
        "        async with contextlib.nullcontext():",
        ("tests/e2e/test_concurrency.py",),
    ),
    Mutation(
        "page-tokens-per-process",
        "page tokens are valid on every replica (shared PAGE_TOKEN_SECRET)",
        S + "app.py",
        "tokens = PageTokens(secret.get_secret_value().encode() if secret else os.urandom(32))",
        "tokens = PageTokens(os.urandom(32))",
        (CRASH + "::test_two_replicas_share_page_tokens_and_serialise_adds",),
    ),
)


def pytest(root: Path, tests: Sequence[str], timeout: float) -> int:
    """Run the tests against `root`'s code (its packages first on PYTHONPATH)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(root / path) for path in ("server", "devtools", "clients/python/src", ".")]
        ),
    }
    options = ["-x", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", *options, *tests],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=timeout,
        check=False,
    )
    return result.returncode


def run(root: Path, mutation: Mutation, timeout: float) -> tuple[bool, float, str]:
    """Apply, test, undo. Returns (killed, seconds, note)."""
    originals: dict[Path, str] = {}
    for relative, old, _ in mutation.edits():
        path = root / relative
        originals.setdefault(path, path.read_text())
        if path.read_text().count(old) != 1:
            return False, 0.0, "the code to mutate is not found exactly once: update this script"
    started = time.monotonic()
    try:
        for relative, old, new in mutation.edits():
            path = root / relative
            path.write_text(path.read_text().replace(old, new))
        code = pytest(root, mutation.tests, timeout)
    except subprocess.TimeoutExpired:
        return True, time.monotonic() - started, "timed out (counted as killed)"
    finally:
        for path, text in originals.items():
            path.write_text(text)
    took = time.monotonic() - started
    if code in (4, 5):  # usage error, no tests collected
        return False, took, f"pytest could not run the tests (exit {code})"
    return code != 0, took, ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--only", nargs="*", default=[])
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    root = args.root.resolve()
    # The tests must pass unmutated, or a "killed" would prove nothing.
    baseline = sorted({test for m in chosen for test in m.tests})
    if pytest(root, baseline, args.timeout * 2) != 0:
        print("the tests fail without any mutation: fix them first", file=sys.stderr)
        return 2
    survivors = []
    print(f"{'mutation':<34} {'result':<9} {'time':>6}  promise")
    for mutation in chosen:
        killed, took, note = run(root, mutation, args.timeout)
        verdict = "killed" if killed else "SURVIVED"
        print(
            f"{mutation.name:<34} {verdict:<9} {took:5.0f}s  {mutation.promise}"
            + (f" ({note})" if note else ""),
            flush=True,
        )
        if not killed:
            survivors.append(mutation.name)
    print(f"\n{len(chosen) - len(survivors)} of {len(chosen)} promise mutations killed")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
