"""Mutation testing of the pure core with mutmut: ``make mutants``.

Usage::

    python scripts/mutants.py            # a fresh run, then the score per module
    python scripts/mutants.py --report   # the score of the last run again, without running
    python scripts/mutants.py --min 0    # never fail on the score (default: below 90 % fails)

The modules are ``aggregate.py``, ``documents.py`` and ``rules.py``; only their unit tests
run (``tests/unit/test_aggregate.py``, ``test_documents.py``, ``test_rules.py``), so no
server is started. The score is killed / total per module: a mutant counts as killed when
a test fails or times out with it, as survived when every test passes. The survivors that
cannot be killed are explained in ``docs/mutation.md``.

mutmut names a mutant after its file's path with only a leading ``src/`` removed, and
puts only ``mutants/``, ``mutants/src`` and ``mutants/source`` on ``sys.path``; the package
lives in ``server/trainingfiles_server``. So mutmut runs in ``.mutmut/`` (git-ignored),
where ``src`` links to ``../server``, ``tests`` to ``../tests`` and ``pyproject.toml`` (the
pytest settings) to ``../pyproject.toml``; this script writes mutmut's settings there as
``setup.cfg``. Every run starts from an empty ``.mutmut/mutants/``, so the score is always
that of the current tests. The results stay for mutmut's own commands::

    cd .mutmut && ../.venv/bin/mutmut results             # the survivors by name
    cd .mutmut && ../.venv/bin/mutmut show <mutant name>  # one mutant's diff
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKDIR = ROOT / ".mutmut"
PACKAGE = "trainingfiles_server"
MODULES = ("aggregate", "documents", "rules")
TESTS = tuple(f"tests/unit/test_{module}.py" for module in MODULES)
# What `.mutmut/` links to: the package's parent directory as `src`, the tests, and the
# project's pyproject.toml (pytest reads its settings from the copy mutmut makes of it).
LINKS = {"src": "../server", "tests": "../tests", "pyproject.toml": "../pyproject.toml"}

# mutmut's exit codes (stored per mutant in `mutants/**/*.meta`) by outcome.
KILLED = {1, 3}
TIMEOUT = {-24, 24, 36, 152, 255}
SURVIVED = {0}
NO_TESTS = {5, 33}


def setup_cfg() -> str:
    def lines(values: list[str]) -> str:
        return "".join(f"\n    {value}" for value in values)

    only_mutate = [f"src/{PACKAGE}/{module}.py" for module in MODULES]
    return (
        "# Written by scripts/mutants.py on every run; edit that script instead.\n"
        "[mutmut]\n"
        f"source_paths = src/{PACKAGE}\n"
        f"only_mutate ={lines(only_mutate)}\n"
        f"pytest_add_cli_args_test_selection ={lines(list(TESTS))}\n"
        "pytest_add_cli_args =\n    -p\n    no:cacheprovider\n"
    )


def prepare() -> None:
    """`.mutmut/` with its links and settings, and no results of an earlier run."""
    WORKDIR.mkdir(exist_ok=True)
    for name, target in LINKS.items():
        link = WORKDIR / name
        if link.is_symlink() and str(link.readlink()) == target:
            continue
        if link.is_symlink() or link.is_file():
            link.unlink()
        elif link.exists():
            shutil.rmtree(link)
        link.symlink_to(target)
    (WORKDIR / "setup.cfg").write_text(setup_cfg())
    shutil.rmtree(WORKDIR / "mutants", ignore_errors=True)


def run_mutmut() -> int:
    mutmut = Path(sys.executable).parent / "mutmut"
    return subprocess.run([str(mutmut), "run"], cwd=WORKDIR, check=False).returncode


@dataclass
class Score:
    module: str
    killed: int = 0
    timeout: int = 0
    survived: int = 0
    no_tests: int = 0
    other: int = 0

    @property
    def total(self) -> int:
        return self.killed + self.timeout + self.survived + self.no_tests + self.other

    @property
    def detected(self) -> int:
        return self.killed + self.timeout

    @property
    def percent(self) -> float:
        return 100.0 * self.detected / self.total if self.total else 0.0


def _natural(name: str) -> tuple[str, int]:
    """`x_f__mutmut_2` before `x_f__mutmut_10`."""
    function, _, number = name.rpartition("__mutmut_")
    return function, int(number) if number.isdigit() else 0


def read_results() -> tuple[list[Score], list[str]]:
    """Each module's score and the names of the mutants no test detected."""
    scores, undetected = [], []
    for module in MODULES:
        meta = WORKDIR / "mutants" / "src" / PACKAGE / f"{module}.py.meta"
        if not meta.is_file():
            raise SystemExit(f"no results for {module}.py: run `make mutants` first")
        codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
        score = Score(module)
        for name, code in sorted(codes.items(), key=lambda item: _natural(item[0])):
            if code in KILLED:
                score.killed += 1
            elif code in TIMEOUT:
                score.timeout += 1
            else:
                undetected.append(name)
                if code in SURVIVED:
                    score.survived += 1
                elif code in NO_TESTS:
                    score.no_tests += 1
                else:
                    score.other += 1
        scores.append(score)
    return scores, undetected


def report(scores: list[Score], undetected: list[str]) -> None:
    print()
    print(f"{'module':<14}{'killed':>8}{'total':>7}{'score':>9}   not killed")
    for s in scores:
        rest = f"{s.survived} survived"
        if s.timeout:
            rest += f", {s.timeout} timed out (counted as killed)"
        if s.no_tests:
            rest += f", {s.no_tests} without a test"
        if s.other:
            rest += f", {s.other} suspicious or interrupted"
        print(f"{s.module + '.py':<14}{s.detected:>8}{s.total:>7}{s.percent:>8.1f}%   {rest}")
    if undetected:
        print("\nNot killed (`cd .mutmut && ../.venv/bin/mutmut show <name>` shows one):")
        for name in undetected:
            print(f"  {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Mutation testing of the pure core.")
    parser.add_argument(
        "--report", action="store_true", help="print the last run's score, do not run"
    )
    parser.add_argument(
        "--min",
        type=float,
        default=90.0,
        help="fail when a module scores below this percentage (default: 90)",
    )
    args = parser.parse_args(argv)

    if not args.report:
        prepare()
        started = time.monotonic()
        if run_mutmut() != 0:
            print("mutmut failed", file=sys.stderr)
            return 1
        print(f"\nmutmut ran for {time.monotonic() - started:.0f} s")

    scores, undetected = read_results()
    report(scores, undetected)
    low = [s.module for s in scores if s.percent < args.min]
    if low:
        print(f"\nbelow {args.min:g} %: {', '.join(low)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
