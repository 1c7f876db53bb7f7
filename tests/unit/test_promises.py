"""The promise ledger (docs/promises.md) names tests that exist, and counts its rows right.

Every `file::test` of a row must be a test function of that file, and the closing count
must be the number of rows. A test renamed or removed without its row fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LEDGER = ROOT / "docs" / "promises.md"
ROW = re.compile(r"^\| (?P<key>[A-Z]{2})-(?P<number>\d+) \|")
# `file.py::test_name`, or `::test_name` continuing the file named before it in the cell.
REFERENCE = re.compile(r"(?:(?P<file>[a-z0-9_]+/test_[a-z0-9_]+\.py))?::(?P<test>test_[a-z0-9_]+)")
COUNT = re.compile(r"\*\*Rows: (?P<total>\d+)\*\* \((?P<parts>[^)]*)\)")


def _rows() -> list[tuple[str, str]]:
    """(row id, tests cell) of every row of the ledger's tables."""
    rows = []
    for line in LEDGER.read_text().splitlines():
        if match := ROW.match(line):
            cells = [cell.strip() for cell in line.strip("|").split(" | ")]
            assert len(cells) == 5, f"{match['key']}-{match['number']}: {len(cells)} cells"
            rows.append((f"{match['key']}-{match['number']}", cells[3]))
    return rows


def _references(cell: str) -> list[tuple[str, str]]:
    found, current = [], None
    for match in REFERENCE.finditer(cell):
        current = match["file"] or current
        assert current is not None, f"`::{match['test']}` names no file: {cell}"
        found.append((current, match["test"]))
    return found


def test_every_test_the_ledger_names_exists() -> None:
    missing = []
    for row, cell in _rows():
        for file, test in _references(cell):
            path = ROOT / "tests" / file
            source = path.read_text() if path.exists() else ""
            if not re.search(rf"^(async )?def {test}\(", source, re.MULTILINE):
                missing.append(f"{row}: {file}::{test}")
    assert not missing, "\n".join(missing)


def test_rows_are_numbered_in_order_and_each_names_a_test_or_the_benchmark() -> None:
    """A row without a test is one about speed (`make bench`)."""
    numbers: dict[str, list[int]] = {}
    for row, cell in _rows():
        key, number = row.split("-")
        numbers.setdefault(key, []).append(int(number))
        assert _references(cell) or "make bench" in cell, f"{row} names no test"
    for key, seen in numbers.items():
        assert seen == list(range(1, len(seen) + 1)), f"{key}: {seen}"


def test_the_count_at_the_end_is_the_number_of_rows() -> None:
    match = COUNT.search(LEDGER.read_text())
    assert match is not None, "no **Rows: N** (…) line"
    counted: dict[str, int] = {}
    for row, _ in _rows():
        key = row.split("-")[0]
        counted[key] = counted.get(key, 0) + 1
    stated = {
        key: int(count)
        for key, count in (part.split() for part in re.split(r",\s*", match["parts"].strip()))
    }
    assert stated == counted
    assert int(match["total"]) == sum(counted.values())


def test_every_promise_mutation_finds_its_code_exactly_once() -> None:
    """`make mutants` applies each mutation of scripts/promise_mutations.py to code it
    must find exactly once: code moved or reworded without its mutation fails here,
    not only when the mutants are run."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(
        "promise_mutations", ROOT / "scripts" / "promise_mutations.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    stale = [
        (mutation.name, relative)
        for mutation in module.MUTATIONS
        for relative, old, _ in mutation.edits()
        if (ROOT / relative).read_text().count(old) != 1
    ]
    assert not stale
