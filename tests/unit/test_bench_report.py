"""The benchmark's report: the operability targets and the token statistics' CPU are
computed from a run's figures and marked where they apply."""

from __future__ import annotations

from typing import Any

from bench import report


def _stream(
    wall_s: float, cpu_s: float, conversations: int, rss_mb: float = 40.0
) -> dict[str, Any]:
    return {
        "conversations": conversations,
        "wall_s": wall_s,
        "first_progress_s": 0.1,
        "peak_rss_above_idle_mb": rss_mb,
        "hwm_above_idle_mb": 0.0,
        "cpu_s": {"service": cpu_s},
    }


def _size(n: int, **changes: Any) -> dict[str, Any]:
    size: dict[str, Any] = {
        "n": n,
        "create": _stream(10.0, 4.0, n),
        "add": None,
        "create_vs_floor": None,
        "floor": {"best": {"total_s": 9.0, "concurrency": 16}, "lean": {"total_s": 10.0}},
        "reads": {
            "get": {"calls_per_s": 3_100.0, "p50_ms": 5.0, "p99_ms": 11.0},
            "list": {"calls_per_s": 590.0, "p50_ms": 40.0, "p99_ms": 60.0},
        },
        "create_formats": None,
        "create_uncounted": _stream(10.0, 3.6, n),
        "concurrent": {
            "single": _stream(2.0, 1.0, 1_000),
            "together": {
                "conversations_per_s": 450.0,
                "wall_s": 17.8,
                "peak_rss_above_idle_mb": 160.0,
                "hwm_above_idle_mb": 171.0,
            },
        },
    }
    return {**size, **changes}


def _checks(size: dict[str, Any]) -> dict[str, report.Check]:
    return {check.name: check for check in report.operability_checks(size)}


def test_operability_checks_are_computed_and_judged_against_their_targets() -> None:
    checks = _checks(_size(10_000))
    assert checks["cpu_per_conversation"].value == 0.4  # 4 s over 10,000
    assert checks["cpu_per_conversation"].met
    assert checks["create_vs_lean"].value == 1.0 and checks["create_vs_lean"].met
    assert checks["ops_get_per_s"].met and checks["ops_get_p99"].met
    assert not checks["ops_list_per_s"].met  # 590 < 600
    assert checks["concurrent_vs_alone"].value == 0.9  # 450/s against 1,000 in 2 s
    assert checks["concurrent_vs_alone"].met
    assert checks["statistics_cpu"].value == 1.111 and checks["statistics_cpu"].met
    slower = _checks(_size(10_000, create_uncounted=_stream(10.0, 3.0, 10_000)))
    assert slower["statistics_cpu"].value == 1.333 and not slower["statistics_cpu"].met


def test_the_lean_floor_is_judged_at_10000_only_and_missing_parts_are_skipped() -> None:
    checks = _checks(_size(1_000, create_uncounted=None, concurrent=None, reads={}))
    assert set(checks) == {"cpu_per_conversation"}
    assert checks["cpu_per_conversation"].value == 4.0 and not checks["cpu_per_conversation"].met


def test_the_operability_table_marks_each_target() -> None:
    run = {"run_id": "20260101T000000Z"}
    table = report.operability_table([(run, _size(10_000))])
    row = table.splitlines()[2]
    assert "| 0.40 ms ✓ |" in row
    assert "| 1.00 ✓ |" in row
    assert "3,100 ✓ (11.0 ms ✓)" in row
    assert "| 590 ✗ |" in row
    assert "| 17.8 s, 450/s, +171 MB | 0.90 ✓ |" in row
    assert "| 3.60 → 4.00 s (+11%) ✓ |" in row
    bare = report.operability_table([(run, _size(10_000, create_uncounted=None, concurrent=None))])
    assert bare.splitlines()[2].count("| – ") == 3


def test_rss_above_idle_from_10000_to_50000_must_stay_within_10_mb() -> None:
    run = {"run_id": "r"}
    flat = report.flat_check(
        [(run, _size(10_000)), (run, _size(50_000, create=_stream(50.0, 20.0, 50_000, 49.0)))]
    )
    assert flat is not None and flat.value == 9.0 and flat.met
    grown = report.flat_check(
        [(run, _size(10_000)), (run, _size(50_000, create=_stream(50.0, 20.0, 50_000, 51.0)))]
    )
    assert grown is not None and not grown.met
    assert report.flat_check([(run, _size(10_000))]) is None


def test_a_selector_create_must_stay_within_10_mb_of_its_10000_rss() -> None:
    """`--selector` runs: the selector Create's RSS above idle at 50,000 and 100,000
    against its own at 10,000, each marked; the table shows both Creates' RSS."""
    run = {"run_id": "r"}

    def sized(n: int, rss: float) -> dict[str, Any]:
        return _size(n, create_selector=_stream(n / 1000, n / 2500, n, rss))

    rows = [(run, sized(10_000, 60.0)), (run, sized(50_000, 69.0)), (run, sized(100_000, 71.0))]
    checks = report.selector_checks(rows)
    assert (checks[50_000].value, checks[50_000].met) == (9.0, True)
    assert (checks[100_000].value, checks[100_000].met) == (11.0, False)
    table = report.selector_table(rows)
    assert "| 50,000 | 50.00 s | 69 MB | 40 MB | +9 MB ✓ | r |" in table
    assert "| 100,000 | 100.00 s | 71 MB | 40 MB | +11 MB ✗ | r |" in table
    assert report.selector_table([(run, _size(10_000))]) == ""
    assert report.selector_checks([(run, sized(50_000, 1.0))]) == {}
