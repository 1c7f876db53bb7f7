"""`python -m bench.profiles FILE.folded [--top 25]`: where a py-spy profile's samples go.

`python -m bench --profile` records the server with py-spy into `.bench/profiles/` as
collapsed stacks (one line per distinct stack: ``frame;frame;… count``, each frame
``function (file:line)``). This prints the functions with the largest share of the
samples, *inclusive* (the function or anything it called was running) and *own* (the
function itself was the innermost frame), line numbers merged. py-spy keeps only the
samples of threads that are running (not those waiting in ``epoll`` or on a lock: it is
run without ``--idle``), so the shares are of the server's busy time, close to its CPU
time. Time spent in C (orjson, hashlib, pyarrow) counts as the calling Python function's
own time.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


# Where a build's time goes: each area is the samples with any of its functions on the
# stack (a sample may count in two areas, e.g. a part upload started by a renderer's write).
AREAS: dict[str, tuple[str, ...]] = {
    "fetch documents (presigned GETs)": ("Storage.get_document",),
    "parse, validate, transform": (
        "decode_json_object",
        "validate_enriched_document",
        "transform_conversation",
    ),
    "v4 outputs (JSONL, JSON)": ("V4Outputs.write",),
    "trainer renderers": ("JsonLines.feed", "ParquetRenderer.feed"),
    "trainer outputs' checksum and buffering": ("FormatOutput._put",),
    "duplicate digests": ("conversation_digests", "pair_digest"),
    "part uploads (botocore)": ("ObjectWriter._send.<locals>.send",),
    "checksum read-backs and replays": ("Storage.sha256", "OutputSet.replay"),
    "dataset card": ("render_card",),
}


@dataclass(frozen=True)
class Profile:
    samples: int
    inclusive: Counter[str]
    own: Counter[str]
    areas: Counter[str]


def _name(frame: str) -> str:
    """``function (file)`` with the line number dropped and the path shortened."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "lib/python3", "trainingfiles_server/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker.startswith("lib/python3"):
                path = path.split("/", 1)[-1]
            break
    return f"{match['function']} ({path})"


def read(lines: Iterable[str]) -> Profile:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    samples = 0
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = [_name(f) for f in stack.split(";") if f and not f.startswith("process ")]
        frames = [f for f in frames if not f.startswith("thread (")]
        if not frames:
            continue
        functions = set(frames)
        for name in functions:
            inclusive[name] += n
        own[frames[-1]] += n
        called = {name.split(" (", 1)[0] for name in functions}
        for area, members in AREAS.items():
            if not called.isdisjoint(members):
                areas[area] += n
    return Profile(samples, inclusive, own, areas)


def report(profile: Profile, top: int) -> str:
    out = [f"{profile.samples:,} samples", "", "Areas (inclusive):"]
    for area in AREAS:
        share = 100 * profile.areas[area] / max(1, profile.samples)
        out.append(f"  {share:5.1f} %  {area}")
    for title, counter in (("inclusive", profile.inclusive), ("own", profile.own)):
        out.append(f"\nTop {top}, {title}:")
        for name, n in counter.most_common(top):
            out.append(f"  {100 * n / max(1, profile.samples):5.1f} %  {name}")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profiles", description=__doc__)
    parser.add_argument("path", type=Path, help="a .folded file from `python -m bench --profile`")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    with args.path.open() as lines:
        print(report(read(lines), args.top))


if __name__ == "__main__":
    main()
