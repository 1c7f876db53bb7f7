"""The CPU the token statistics add to a build: `python -m bench.tokens_cost [N]`.

Two measures, over N documents of the benchmark's generator (seed 20261127):

- the pure part of a Create's pass, in this process: what a fetch worker does per
  document (decode, validate, turn into lines and a summary, the duplicate digests),
  then the version's metrics and analytics; with and without counting. Process CPU
  time, the best of `--repeat` runs.
- with `--create`: whole Creates of the N conversations against the benchmark's stack
  (`make bench`'s: embedded servers under `.bench/`, its cached conversations), the
  service as two processes side by side, COUNT_TOKENS=false and true (the rest their
  defaults), taking turns; each one's CPU per Create (after one round to warm them up),
  the median of `--repeat`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
import uuid
from collections.abc import Sequence

from trainingfiles_dev.generator import generate
from trainingfiles_server import aggregate, analytics, tokens
from trainingfiles_server.documents import decode_json_object, validate_enriched_document
from trainingfiles_server.outputs import PairFacts

SEED = 20261127


def build_pass(
    documents: Sequence[tuple[str, bytes]], counter: tokens.TokenCounter | None
) -> float:
    """CPU seconds of one pass over `documents`."""
    started = time.process_time()
    summaries = aggregate.Summaries()
    for conversation_id, data in documents:
        raw = decode_json_object(data)
        document = validate_enriched_document(raw)
        transformed = aggregate.transform_conversation(
            conversation_id, raw, document, counter=counter
        )
        PairFacts.of(transformed.pairs)
        summaries.append(transformed.summary)
    aggregate.summarize(summaries)
    analytics.compute(summaries, 16_385)
    return time.process_time() - started


async def creates(count: int, repeat: int) -> dict[bool, list[float]]:
    """Server CPU seconds of `repeat` Creates of `count` conversations, counting off/on."""
    from trainingfiles_dev.bootstrap import ensure_buckets

    from .dataset import ensure_loaded
    from .server import running_service, service_settings
    from .stack import BENCH_DIR, CONVERSATIONS_BUCKET, TRAINING_BUCKET, open_stack, s3_client
    from .workload import create

    cpu: dict[bool, list[float]] = {False: [], True: []}
    with open_stack() as stack:
        async with s3_client(stack) as s3:
            await ensure_buckets(s3, CONVERSATIONS_BUCKET, TRAINING_BUCKET)
        data = await ensure_loaded(stack, SEED, count)
        async with contextlib.AsyncExitStack() as running:
            services = {}
            for counting in (False, True):
                settings = {**service_settings(None, count), "COUNT_TOKENS": str(counting).lower()}
                log = BENCH_DIR / "logs" / f"tokens-cost-{counting}.log"
                services[counting] = await running.enter_async_context(
                    running_service(stack, settings, log)
                )
            # Both servers run side by side and take turns, so a change in the machine's
            # load hits both alike; the first round warms them (and the store) up.
            for attempt in range(repeat + 1):
                for counting, service in services.items():
                    name = f"tokens-cost-{uuid.uuid4().hex[:12]}"
                    result = await create(service, name, data.ids, {})
                    if attempt:
                        cpu[counting].append(result.cpu_s["service"])
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("count", nargs="?", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--create", action="store_true", help="whole Creates, as above")
    args = parser.parse_args()
    if args.create:
        cpu = asyncio.run(creates(args.count, args.repeat))
        without, counted = statistics.median(cpu[False]), statistics.median(cpu[True])
        print(f"Create of {args.count}: server CPU, median of {args.repeat}")
        print(f"COUNT_TOKENS=false: {without:.2f} s {cpu[False]}")
        print(
            f"COUNT_TOKENS=true:  {counted:.2f} s {cpu[True]} "
            f"(+{(counted / without - 1) * 100:.1f} %)"
        )
        return
    documents = [
        (str(c.conversation_id), c.document)
        for c in generate(SEED, args.count, owners=[uuid.UUID(int=1)])
        if c.document is not None
    ]
    counter = tokens.counter()
    counter.count_text("warm up")
    off: list[float] = []
    on: list[float] = []
    for _ in range(args.repeat):  # interleaved, so drift hits both alike
        off.append(build_pass(documents, None))
        on.append(build_pass(documents, counter))
    best_off, best_on = min(off), min(on)
    pairs = sum(len(decode_json_object(d)["training_pairs"]) for _, d in documents)
    print(f"{len(documents)} documents, {pairs} pairs, best of {args.repeat}")
    print(f"without counting: {best_off:.3f} s CPU")
    print(f"with counting:    {best_on:.3f} s CPU (+{(best_on / best_off - 1) * 100:.1f} %)")


if __name__ == "__main__":
    main()
