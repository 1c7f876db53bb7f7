"""Results: one JSON file per run, the targets, a table, `latest.md` and `latest.png`.

The table and the chart show, for each N, the latest run that measured it — so `make
bench` followed by `make bench N=50000` shows 1,000, 10,000 and 50,000 together; every
row names its run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# The targets of the issue, on the 2-core machine.
CREATE_VS_FLOOR = 1.3  # at N = 1,000 and 10,000
CREATE_VS_FLOOR_AT = (1_000, 10_000)
RSS_ABOVE_IDLE_MB = 150.0  # at every N
# "Not growing" from 10,000 to 50,000: within 10 % or 10 MB, whichever is more (noise).
RSS_GROWTH, RSS_GROWTH_MB = 1.10, 10.0
FIRST_PROGRESS_S = 1.0  # at N = 10,000 (checked at every N up to it)
ADD_VS_CREATE = 0.15
GET_PER_S, GET_P99_MS = 1_000.0, 20.0
LIST_PER_S = 300.0
# The output formats: a Create with every trainer format and a 10 % split, against the
# v4-only Create of the same N and run (at 10,000), its memory (at every N), and an
# ExportTrainingFile of one format against the Create of the file it reads (every N).
FORMATS_VS_V4 = 1.25
FORMATS_VS_V4_AT = (10_000,)
FORMATS_RSS_MB = 150.0  # strictly below
EXPORT_VS_CREATE = 0.5
EXPORT_JUDGED = "openai_chat"  # the export the target is about; others are shown
VERSIONS_VS_CREATE = 0.15  # Remove of 1 %, Refresh of 1 % stale, against the Create
# Operability, per N: the default (v4-only) Create's server CPU per conversation; the
# Create against the lean floor (at 10,000); Get and List under 32 callers; 8 Creates of
# 1,000 together against one (conversations per second); RSS above idle flat from 10,000
# to 50,000.
CPU_PER_CONVERSATION_MS = 0.5
CREATE_VS_LEAN = 1.0
CREATE_VS_LEAN_AT = (10_000,)
OPS_GET_PER_S, OPS_GET_P99_MS = 3_000.0, 12.0
OPS_LIST_PER_S = 600.0
CONCURRENT_VS_ALONE = 0.9
RSS_FLAT_MB = 10.0
# The token statistics: the default Create's server CPU against the same Create on a
# server with COUNT_TOKENS=false, at most +15 %.
STATISTICS_CPU = 1.15


@dataclass(frozen=True)
class Check:
    name: str
    value: float
    limit: float
    met: bool
    unit: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "limit": self.limit,
            "met": self.met,
            "unit": self.unit,
        }


def checks_for(size: dict[str, Any]) -> list[Check]:
    """The targets that apply to one N's figures."""
    n = size["n"]
    create, add = size["create"], size["add"]
    found: list[Check] = []
    ratio = size["create_vs_floor"]
    if n in CREATE_VS_FLOOR_AT and ratio is not None:
        found.append(
            Check("create_vs_floor", ratio, CREATE_VS_FLOOR, ratio <= CREATE_VS_FLOOR, "×")
        )
    rss = rss_above_idle(create)
    found.append(Check("rss_above_idle", rss, RSS_ABOVE_IDLE_MB, rss <= RSS_ABOVE_IDLE_MB, "MB"))
    if n <= 10_000:
        first = create["first_progress_s"]
        found.append(
            Check("first_progress", first, FIRST_PROGRESS_S, first <= FIRST_PROGRESS_S, "s")
        )
    if add is not None:
        share = round(add["wall_s"] / create["wall_s"], 3)
        found.append(Check("add_vs_create", share, ADD_VS_CREATE, share <= ADD_VS_CREATE, "×"))
    get, listing = size["reads"].get("get"), size["reads"].get("list")
    if get is not None:
        found.append(
            Check("get_per_s", get["calls_per_s"], GET_PER_S, get["calls_per_s"] >= GET_PER_S)
        )
        found.append(Check("get_p99", get["p99_ms"], GET_P99_MS, get["p99_ms"] <= GET_P99_MS, "ms"))
    if listing is not None:
        per_s = listing["calls_per_s"]
        found.append(Check("list_per_s", per_s, LIST_PER_S, per_s >= LIST_PER_S))
    formats = size.get("create_formats")
    if formats is not None:
        share = round(formats["wall_s"] / create["wall_s"], 3)
        if n in FORMATS_VS_V4_AT:
            found.append(Check("formats_vs_v4", share, FORMATS_VS_V4, share <= FORMATS_VS_V4, "×"))
        rss = rss_above_idle(formats)
        found.append(Check("formats_rss", rss, FORMATS_RSS_MB, rss < FORMATS_RSS_MB, "MB"))
    for key in ("remove", "refresh"):
        if size.get(key) is not None:
            share = round(size[key]["wall_s"] / create["wall_s"], 3)
            found.append(
                Check(
                    f"{key}_vs_create", share, VERSIONS_VS_CREATE, share <= VERSIONS_VS_CREATE, "×"
                )
            )
    exported = (size.get("exports") or {}).get(EXPORT_JUDGED)
    if exported is not None:
        share = round(exported["wall_s"] / create["wall_s"], 3)
        found.append(
            Check("export_vs_create", share, EXPORT_VS_CREATE, share <= EXPORT_VS_CREATE, "×")
        )
    return found + operability_checks(size)


def operability_checks(size: dict[str, Any]) -> list[Check]:
    """The operability targets and the token statistics' CPU, where measured."""
    n = size["n"]
    found: list[Check] = []
    per = cpu_per_conversation_ms(size)
    if per is not None:
        found.append(
            Check(
                "cpu_per_conversation",
                per,
                CPU_PER_CONVERSATION_MS,
                per <= CPU_PER_CONVERSATION_MS,
                "ms",
            )
        )
    lean = create_vs_lean(size)
    if n in CREATE_VS_LEAN_AT and lean is not None:
        found.append(Check("create_vs_lean", lean, CREATE_VS_LEAN, lean <= CREATE_VS_LEAN, "×"))
    reads = size.get("reads") or {}
    get, listing = reads.get("get"), reads.get("list")
    if get is not None:
        per_s, p99 = get["calls_per_s"], get["p99_ms"]
        found.append(Check("ops_get_per_s", per_s, OPS_GET_PER_S, per_s >= OPS_GET_PER_S))
        found.append(Check("ops_get_p99", p99, OPS_GET_P99_MS, p99 <= OPS_GET_P99_MS, "ms"))
    if listing is not None:
        per_s = listing["calls_per_s"]
        found.append(Check("ops_list_per_s", per_s, OPS_LIST_PER_S, per_s >= OPS_LIST_PER_S))
    together = concurrent_vs_alone(size)
    if together is not None:
        found.append(
            Check(
                "concurrent_vs_alone",
                together,
                CONCURRENT_VS_ALONE,
                together >= CONCURRENT_VS_ALONE,
                "×",
            )
        )
    statistics = statistics_cpu(size)
    if statistics is not None:
        found.append(
            Check("statistics_cpu", statistics, STATISTICS_CPU, statistics <= STATISTICS_CPU, "×")
        )
    return found


def _service_cpu(stream: dict[str, Any]) -> float | None:
    cpu = stream.get("cpu_s", {}).get("service")
    return None if cpu is None or math.isnan(cpu) else float(cpu)


def cpu_per_conversation_ms(size: dict[str, Any]) -> float | None:
    """The default Create's server CPU per conversation, in milliseconds."""
    cpu = _service_cpu(size["create"])
    return None if cpu is None else round(cpu * 1000 / size["n"], 3)


def create_vs_lean(size: dict[str, Any]) -> float | None:
    lean = (size.get("floor") or {}).get("lean")
    return round(size["create"]["wall_s"] / lean["total_s"], 3) if lean else None


def concurrent_vs_alone(size: dict[str, Any]) -> float | None:
    """Conversations per second of the Creates started together, against one alone."""
    concurrent = size.get("concurrent")
    if not concurrent:
        return None
    single, together = concurrent["single"], concurrent["together"]
    alone = float(single["conversations"]) / float(single["wall_s"])
    return round(float(together["conversations_per_s"]) / alone, 3)


def statistics_cpu(size: dict[str, Any]) -> float | None:
    """The default Create's server CPU against the COUNT_TOKENS=false Create's."""
    uncounted = size.get("create_uncounted")
    if not uncounted:
        return None
    on, off = _service_cpu(size["create"]), _service_cpu(uncounted)
    return round(on / off, 3) if on is not None and off else None


def selector_checks(rows: Sequence[tuple[dict[str, Any], dict[str, Any]]]) -> dict[int, Check]:
    """A selector Create's RSS above idle at 50,000 and at 100,000 within ±10 MB of its
    RSS at 10,000 (memory does not grow with the conversations chosen); by N."""
    by_n = {size["n"]: size for _, size in rows if size.get("create_selector")}
    if 10_000 not in by_n:
        return {}
    base = rss_above_idle(by_n[10_000]["create_selector"])
    checks = {}
    for n in (50_000, 100_000):
        if n in by_n:
            change = round(rss_above_idle(by_n[n]["create_selector"]) - base, 1)
            checks[n] = Check(
                f"selector_rss_flat_10k_to_{n // 1000}k",
                change,
                RSS_FLAT_MB,
                abs(change) <= RSS_FLAT_MB,
                "MB",
            )
    return checks


def selector_table(rows: Sequence[tuple[dict[str, Any], dict[str, Any]]]) -> str:
    """The selector Creates (`--selector`): wall time and RSS above idle per N, against
    the id-list Create's and the selector's at 10,000 (marked at 50,000 and 100,000);
    "" if none."""
    measured = [(run, size) for run, size in rows if size.get("create_selector")]
    if not measured:
        return ""
    checks = selector_checks(rows)
    lines = [
        "| N | Create by selector | server RSS above idle | id-list Create's "
        "| vs 10,000 (±10 MB) | run |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for run, size in measured:
        selected = size["create_selector"]
        check = checks.get(size["n"])
        versus = f"{check.value:+.0f} MB {'✓' if check.met else '✗'}" if check else "–"
        lines.append(
            f"| {size['n']:,} | {selected['wall_s']:.2f} s "
            f"| {rss_above_idle(selected):.0f} MB | {rss_above_idle(size['create']):.0f} MB "
            f"| {versus} | {run['run_id']} |"
        )
    return "\n".join(lines) + "\n"


def rss_above_idle(stream: dict[str, Any]) -> float:
    """Peak RSS above idle: the larger of the sampled peak and the kernel's high-water mark."""
    return float(max(stream["peak_rss_above_idle_mb"], stream["hwm_above_idle_mb"]))


def write_run(run: dict[str, Any], directory: Path = RESULTS_DIR) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{run['run_id']}.json"
    path.write_bytes(orjson.dumps(run, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    return path


def latest_per_size(directory: Path = RESULTS_DIR) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """For each N ever measured, (run, size) from the newest run that measured it."""
    latest: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
    for path in sorted(directory.glob("*.json")):  # run ids sort by time
        run = orjson.loads(path.read_bytes())
        for size in run.get("sizes", []):
            latest[size["n"]] = (run, size)
    return [latest[n] for n in sorted(latest)]


def _s(value: float) -> str:
    return f"{value:.2f} s" if value < 10 else f"{value:.1f} s"


def _mark(checks: Sequence[Check], name: str) -> str:
    for check in checks:
        if check.name == name:
            return " ✓" if check.met else " ✗"
    return ""


def table(rows: Sequence[tuple[dict[str, Any], dict[str, Any]]]) -> str:
    """The markdown table: one row per N, ✓/✗ against each target that applies."""
    header = (
        "| N | floor (best) | Create | × floor | lean floor | × lean | first message "
        "| server RSS above idle | server CPU | Add 1 % | Add ÷ Create | Get/s (p50, p99) "
        "| List/s (p50, p99) | run |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    )
    lines = []
    for run, size in rows:
        checks = checks_for(size)
        create, add, floor = size["create"], size["add"], size["floor"]["best"]
        ratio = size["create_vs_floor"]
        floor_cell = f"{_s(floor['total_s'])} (c={floor['concurrency']})" if floor else "–"
        lean = size["floor"].get("lean")
        lean_cells = (
            (_s(lean["total_s"]), f"{create['wall_s'] / lean['total_s']:.2f}")
            if lean
            else ("–", "–")
        )
        get, listing = size["reads"].get("get"), size["reads"].get("list")
        get_cell = (
            f"{get['calls_per_s']:,.0f}{_mark(checks, 'get_per_s')} "
            f"({get['p50_ms']:.1f}, {get['p99_ms']:.1f} ms{_mark(checks, 'get_p99')})"
            if get
            else "–"
        )
        list_cell = (
            f"{listing['calls_per_s']:,.0f}{_mark(checks, 'list_per_s')} "
            f"({listing['p50_ms']:.1f}, {listing['p99_ms']:.1f} ms)"
            if listing
            else "–"
        )
        add_cell = _s(add["wall_s"]) if add else "–"
        share = f"{add['wall_s'] / create['wall_s']:.0%}" if add else "–"
        lines.append(
            f"| {size['n']:,} "
            f"| {floor_cell} "
            f"| {_s(create['wall_s'])} "
            f"| {f'{ratio:.2f}' if ratio else '–'}{_mark(checks, 'create_vs_floor')} "
            f"| {lean_cells[0]} | {lean_cells[1]} "
            f"| {create['first_progress_s']:.2f} s{_mark(checks, 'first_progress')} "
            f"| {rss_above_idle(create):.0f} MB{_mark(checks, 'rss_above_idle')} "
            f"| {create['cpu_s'].get('service', math.nan):.1f} s "
            f"| {add_cell} "
            f"| {share}{_mark(checks, 'add_vs_create')} "
            f"| {get_cell} "
            f"| {list_cell} "
            f"| {run['run_id']} |"
        )
    return header + "\n".join(lines) + "\n"


def _mb(value: float) -> str:
    return f"{value / 1e6:,.0f} MB"


def _stored(result: dict[str, Any]) -> int:
    return sum(o["size_bytes"] for o in result.get("outputs", []))


def _export_cells(
    result: dict[str, Any] | None, create: dict[str, Any], mark: str = ""
) -> tuple[str, str, str]:
    """Wall time, share of the file's Create, and RSS above idle and CPU of an export."""
    if result is None:
        return "–", "–", "–"
    cpu = result["cpu_s"].get("service", math.nan)
    return (
        _s(result["wall_s"]),
        f"{result['wall_s'] / create['wall_s']:.2f}{mark}",
        f"{rss_above_idle(result):.0f} MB, {cpu:.1f} s",
    )


def formats_table(rows: Sequence[tuple[dict[str, Any], dict[str, Any]]]) -> str:
    """The output formats: the all-formats Create and the exports, per N that has them."""
    header = (
        "| N | Create v4 only | Create all formats + 10 % split | ÷ v4 only "
        "| its lean floor | server RSS above idle | server CPU (v4 only → all) "
        "| bytes stored (v4 only → all) | Export openai_chat | ÷ Create | its RSS, CPU "
        "| Export parquet | ÷ Create | run |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    )
    lines = []
    for run, size in rows:
        formats = size.get("create_formats")
        if formats is None:
            continue
        checks = checks_for(size)
        create = size["create"]
        exports = size.get("exports") or {}
        floor = size["floor"].get("formats_lean")
        openai = _export_cells(
            exports.get(EXPORT_JUDGED), create, _mark(checks, "export_vs_create")
        )
        parquet = _export_cells(exports.get("parquet"), create)
        cpu = create["cpu_s"].get("service", math.nan), formats["cpu_s"].get("service", math.nan)
        lines.append(
            f"| {size['n']:,} "
            f"| {_s(create['wall_s'])} "
            f"| {_s(formats['wall_s'])} "
            f"| {formats['wall_s'] / create['wall_s']:.2f}{_mark(checks, 'formats_vs_v4')} "
            f"| {_s(floor['total_s']) if floor else '–'} "
            f"| {rss_above_idle(formats):.0f} MB{_mark(checks, 'formats_rss')} "
            f"| {cpu[0]:.1f} → {cpu[1]:.1f} s "
            f"| {_mb(create['json_size'] + create['jsonl_size'])} → {_mb(_stored(formats))} "
            f"| {openai[0]} | {openai[1]} | {openai[2]} "
            f"| {parquet[0]} | {parquet[1]} "
            f"| {run['run_id']} |"
        )
    if not lines:
        return ""
    return header + "\n".join(lines) + "\n"


def versions_table(rows: Sequence[tuple[dict[str, Any], dict[str, Any]]]) -> str:
    lines = [
        "| N | Create | Remove 1 % | ÷ Create | its RSS, CPU | Refresh 1 % stale | ÷ Create "
        "| its RSS, CPU | run |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run, size in rows:
        if size.get("remove") is None:
            continue
        checks = checks_for(size)
        cells = [f"{size['n']:,}", _s(size["create"]["wall_s"])]
        for key in ("remove", "refresh"):
            result = size[key]
            cpu = result["cpu_s"].get("service", 0.0)
            share = result["wall_s"] / size["create"]["wall_s"]
            cells += [
                _s(result["wall_s"]),
                f"{share:.2f}{_mark(checks, key + '_vs_create')}",
                f"{rss_above_idle(result):.0f} MB, {cpu:.1f} s",
            ]
        cells.append(run["run_id"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n" if len(lines) > 2 else ""


def operability_table(rows: Sequence[tuple[dict[str, Any], dict[str, Any]]]) -> str:
    """Per N, the operability issue's figures of one run, ✓/✗ against its targets."""
    lines = [
        "| N | Create | floor (best) | lean floor | × lean | server CPU per conversation "
        "| server RSS above idle | first message | Get/s (p99) | List/s "
        "| 8 × 1,000 together | ÷ one alone | statistics' CPU (off → on) | run |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run, size in rows:
        checks = checks_for(size)
        create = size["create"]
        floor, lean = size["floor"].get("best"), size["floor"].get("lean")
        ratio, per = create_vs_lean(size), cpu_per_conversation_ms(size)
        get, listing = size["reads"].get("get"), size["reads"].get("list")
        concurrent, together = size.get("concurrent"), concurrent_vs_alone(size)
        uncounted, statistics = size.get("create_uncounted"), statistics_cpu(size)
        cells = [
            f"{size['n']:,}",
            _s(create["wall_s"]),
            _s(floor["total_s"]) if floor else "–",
            _s(lean["total_s"]) if lean else "–",
            f"{ratio:.2f}{_mark(checks, 'create_vs_lean')}" if ratio is not None else "–",
            f"{per:.2f} ms{_mark(checks, 'cpu_per_conversation')}" if per is not None else "–",
            f"{rss_above_idle(create):.0f} MB",
            f"{create['first_progress_s']:.2f} s",
            f"{get['calls_per_s']:,.0f}{_mark(checks, 'ops_get_per_s')} "
            f"({get['p99_ms']:.1f} ms{_mark(checks, 'ops_get_p99')})"
            if get
            else "–",
            f"{listing['calls_per_s']:,.0f}{_mark(checks, 'ops_list_per_s')}" if listing else "–",
            f"{_s(concurrent['together']['wall_s'])}, "
            f"{concurrent['together']['conversations_per_s']:,.0f}/s, "
            f"+{rss_above_idle(concurrent['together']):.0f} MB"
            if concurrent
            else "–",
            f"{together:.2f}{_mark(checks, 'concurrent_vs_alone')}"
            if together is not None
            else "–",
            f"{uncounted['cpu_s']['service']:.2f} → {create['cpu_s']['service']:.2f} s "
            f"({statistics - 1:+.0%}){_mark(checks, 'statistics_cpu')}"
            if uncounted and statistics is not None
            else "–",
            run["run_id"],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def flat_check(rows: Sequence[tuple[dict[str, Any], dict[str, Any]]]) -> Check | None:
    """RSS above idle at 50,000 within ±10 MB of 10,000's (operability)."""
    by_n = {size["n"]: size for _, size in rows}
    if 10_000 not in by_n or 50_000 not in by_n:
        return None
    if predates_formats(by_n[10_000]) != predates_formats(by_n[50_000]):
        return None
    change = round(
        rss_above_idle(by_n[50_000]["create"]) - rss_above_idle(by_n[10_000]["create"]), 1
    )
    return Check("rss_flat_10k_to_50k", change, RSS_FLAT_MB, abs(change) <= RSS_FLAT_MB, "MB")


def growth_check(rows: Sequence[tuple[dict[str, Any], dict[str, Any]]]) -> Check | None:
    """RSS above idle must not grow from 10,000 to 50,000 (within noise)."""
    by_n = {size["n"]: size for _, size in rows}
    if 10_000 not in by_n or 50_000 not in by_n:
        return None
    if predates_formats(by_n[10_000]) != predates_formats(by_n[50_000]):
        return None  # different code: a v4-only Create before and after the output formats
    small = rss_above_idle(by_n[10_000]["create"])
    large = rss_above_idle(by_n[50_000]["create"])
    limit = round(max(small * RSS_GROWTH, small + RSS_GROWTH_MB), 1)
    return Check("rss_growth_10k_to_50k", large, limit, large <= limit, "MB")


def predates_formats(size: dict[str, Any]) -> bool:
    """Whether this N was measured by a benchmark (and service) before the output formats."""
    return "create_formats" not in size


def machine_line(run: dict[str, Any]) -> str:
    machine = run["machine"]
    load = machine.get("load_before") or [math.nan] * 3
    after = machine.get("load_after") or [math.nan] * 3
    return (
        f"{machine['cores']} cores, {machine['memory_gb']:.0f} GB, {machine['cpu']}; "
        f"load average before the run {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}, "
        f"after it {after[0]:.2f} / {after[1]:.2f} / {after[2]:.2f}; "
        f"commit {run['commit'][:10]}{' (uncommitted changes)' if run.get('dirty') else ''}"
    )


def markdown(rows: Sequence[tuple[dict[str, Any], dict[str, Any]]]) -> str:
    runs = {run["run_id"]: run for run, _ in rows}
    parts = [table(rows)]
    formats = formats_table(rows)
    if formats:
        parts.append(
            "\nOutput formats: a Create of the same N with every trainer format (openai_chat, "
            "chat_messages, prompt_completion, sharegpt, alpaca, parquet) and a 10 % "
            "validation split, on a fresh server; ExportTrainingFile of one format from the "
            "v4-only file (after its Add: N + 1 % conversations), against that file's "
            "Create.\n\n" + formats
        )
    selected = selector_table(rows)
    if selected:
        parts.append(
            "\nSelector: the same v4-only Create with no id list, its N conversations chosen "
            "by a selector (`--selector`), on a fresh server; its server RSS above idle "
            "against the id-list Create's, and against the smallest N's.\n\n" + selected
        )
    versions = versions_table(rows)
    if versions:
        parts.append(
            "\nVersions: RemoveConversations of 1 % of N (every 100th conversation) from the "
            "v4-only file after its Add, then RefreshTrainingFile after 1 % were re-enriched "
            "in place, against that file's Create.\n\n" + versions
        )
    old = [size["n"] for _, size in rows if predates_formats(size)]
    if old:
        parts.append(
            f"\nN = {', '.join(f'{n:,}' for n in old)}: measured before the output formats "
            "(a v4-only Create then wrote no checksums, digests or card); not comparable "
            "with the other rows until measured again.\n"
        )
    growth = growth_check(rows)
    if growth is not None:
        parts.append(
            f"\nRSS above idle from 10,000 to 50,000: {growth.value:.0f} MB vs limit "
            f"{growth.limit:.0f} MB {'✓' if growth.met else '✗'}\n"
        )
    parts.append(
        "\nOperability, per N from one run: the Create, its floors and its server's CPU per "
        "conversation, memory and first message as in the first table; Get and List at 32 "
        "callers; 8 v4-only Creates of 1,000 conversations started together on a fresh "
        "server, their conversations per second against one such Create alone on it; the "
        "token statistics' CPU: the v4-only Create's server CPU against the same Create on "
        "a fresh server with COUNT_TOKENS=false.\n\n" + operability_table(rows)
    )
    flat = flat_check(rows)
    if flat is not None:
        parts.append(
            f"\nRSS above idle from 10,000 to 50,000 (operability): {flat.value:+.0f} MB, "
            f"limit ±{flat.limit:.0f} MB {'✓' if flat.met else '✗'}\n"
        )
    parts.append("\nRuns:\n\n")
    for run_id, run in sorted(runs.items()):
        settings = ", ".join(f"{k}={v}" for k, v in sorted(run["service_settings"].items()))
        parts.append(f"- `{run_id}`: {machine_line(run)}. Service settings: {settings}.\n")
    parts.append(
        "\nTargets (2 cores): Create ≤ 1.3 × floor at 1,000 and 10,000; RSS above idle "
        "≤ 150 MB and not growing from 10,000 to 50,000; first message ≤ 1 s at 10,000; "
        "Add of 1 % ≤ 15 % of Create; Get ≥ 1,000/s with p99 ≤ 20 ms and List ≥ 300/s at "
        "32 callers; all-formats Create ≤ 1.25 × the v4-only Create at 10,000, its RSS above "
        "idle < 150 MB; Export of one format (openai_chat) ≤ 0.5 × the file's Create; "
        "Remove of 1 % and Refresh of 1 % stale ≤ 15 % of the Create. Operability: server "
        "CPU ≤ 0.5 ms per conversation; Create ≤ 1.0 × the lean floor at 10,000; Get "
        "≥ 3,000/s with p99 ≤ 12 ms and List ≥ 600/s; 8 Creates of 1,000 together ≥ 0.9 × "
        "the conversations per second of one; RSS above idle within ±10 MB from 10,000 to "
        "50,000; token statistics ≤ +15 % of the Create's server CPU. See docs/bench.md.\n"
    )
    return "".join(parts)


def chart(rows: Sequence[tuple[dict[str, Any], dict[str, Any]]], path: Path) -> None:
    """Create vs floor across N (with the all-formats Create and the export where measured),
    and server RSS above idle across N."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(run, size) for run, size in rows if size["floor"]["best"]]
    ns = [size["n"] for _, size in rows]
    create = [size["create"]["wall_s"] for _, size in rows]
    floor = [size["floor"]["best"]["total_s"] for _, size in rows]
    lean = [
        (size["n"], size["floor"]["lean"]["total_s"])
        for _, size in rows
        if size["floor"].get("lean")
    ]
    rss = [rss_above_idle(size["create"]) for _, size in rows]
    with_formats = [(size["n"], size) for _, size in rows if size.get("create_formats")]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot(ns, create, "o-", label="Create, v4 only (request → last message)")
    if with_formats:
        left.plot(
            [n for n, _ in with_formats],
            [size["create_formats"]["wall_s"] for _, size in with_formats],
            "D-",
            label="Create, all formats + 10 % split",
        )
    exported = [
        (n, size["exports"][EXPORT_JUDGED]["wall_s"])
        for n, size in with_formats
        if EXPORT_JUDGED in (size.get("exports") or {})
    ]
    if exported:
        left.plot(*zip(*exported, strict=True), "v-", label=f"Export {EXPORT_JUDGED}")
    left.plot(ns, floor, "s--", label="floor: plain GETs + PUTs")
    left.plot(ns, [f * CREATE_VS_FLOOR for f in floor], ":", color="grey", label="1.3 × floor")
    if lean:
        left.plot(*zip(*lean, strict=True), "^:", label="lean floor: presigned GETs + PUTs")
    for n, c, f in zip(ns, create, floor, strict=True):
        left.annotate(f"{c / f:.2f}×", (n, c), textcoords="offset points", xytext=(4, 6))
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("conversations (N)")
    left.set_ylabel("seconds")
    left.set_title("Create vs storage floor")
    left.legend(fontsize="small")
    left.grid(True, which="both", alpha=0.3)
    right.plot(ns, rss, "o-", color="tab:red", label="Create, v4 only")
    formats_rss = [rss_above_idle(size["create_formats"]) for _, size in with_formats]
    if with_formats:
        right.plot(
            [n for n, _ in with_formats],
            formats_rss,
            "D-",
            color="tab:purple",
            label="Create, all formats + split",
        )
    right.axhline(RSS_ABOVE_IDLE_MB, color="grey", linestyle=":", label="150 MB target")
    right.set_xscale("log")
    right.set_ylim(0, max([*rss, *formats_rss, RSS_ABOVE_IDLE_MB]) * 1.2)
    right.set_xlabel("conversations (N)")
    right.set_ylabel("MB")
    right.set_title("Server peak RSS above idle during Create")
    right.legend(fontsize="small")
    right.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def console(rows: Sequence[tuple[dict[str, Any], dict[str, Any]]]) -> str:
    """The tables for a terminal: the markdown tables are readable as they are."""
    return (
        table(rows)
        + "\n"
        + formats_table(rows)
        + "\n"
        + selector_table(rows)
        + "\n"
        + operability_table(rows)
    )
