"""Batches against what a careful user writes by hand, and against the ideal.

The emulator serves 4 predictions at once (LM Studio's default for llama.cpp
models) and waits ``Sizes.token_latency`` before each fragment; every reply is
distinct (it names its prompt) and has ``Sizes.batch_fragments`` fragments, so
every request costs the same and a result in the wrong place is caught.

- ``batch.sync``: ``model.batch(prompts, Person)`` against a thread pool of 4
  running ``handle.respond`` (``pool.map`` keeps the order).
- ``batch.async``: ``await model.batch(...)`` against ``asyncio.gather`` with a
  semaphore of 4.
- ``batch.efficiency.N``: the ideal time, ``ceil(N / 4)`` times one request
  (measured in the same rounds), over the batch's time.
- The ``concurrent`` check of ``batch.sync`` and ``batch.async`` is on our batch alone:
  each side's batch runs once, untimed, before the rounds, and the emulator's peak
  concurrency of that run must reach the 4 slots (the rounds' peak covers both sides).
- ``batch.vs_loop.32``: how many times faster ``model.batch`` is than a loop of
  ``model(...)`` calls over the same 32 prompts (4 at most: the server's 4 slots).
- Every case checks what was sent (``schema_sent``, `sent_schema`): the reply is scripted,
  so a batch that dropped its output type would get the same replies. Every prediction of
  the case sent the schema the SDK by hand sends (`run_vs_loop`, where both sides are ours,
  makes one untimed SDK call for it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import math
import statistics
from collections.abc import Callable

import lmstudio as lms

from benchmarks._common import TEXT_MODEL, Person, person_format, person_id, prompt
from benchmarks._harness import (
    CaseResult,
    Context,
    Metric,
    Paired,
    Sample,
    Stats,
    Target,
    ainterleave,
    ameasure,
    bootstrap_ci,
    interleave,
    measure,
    sent_schema,
)
from benchmarks._remote import Script
from outlines_lmstudio import from_lmstudio

__all__ = ["EFFICIENCY", "SPEEDUP", "TARGET", "run", "run_async", "run_efficiency", "run_vs_loop"]

TARGET = Target("<=", 1.03)
EFFICIENCY = Target(">=", 0.95)
SPEEDUP = Target(">=", 3.5)
SLOTS = 4
LOOP_PROMPTS = 32
FIELDS = len(Person.model_fields)
"""Properties of the JSON schema every call of these cases sends."""


def _reset(ctx: Context) -> None:
    sizes = ctx.sizes
    ctx.emulator.reset(Script("person", sizes.batch_fragments), token_latency=sizes.token_latency)


def _in_order(results: object, n: int) -> bool:
    return isinstance(results, list) and [person_id(r) for r in results] == list(range(n))


def _peak(ctx: Context) -> int:
    """The peak concurrency of what ran since the last reset; then a reset.

    Each side's batch runs once alone, untimed, before the paired rounds, and is measured
    so: the paired rounds' peak covers both sides, and the baseline alone reaches the slots.
    """
    peak = ctx.emulator.stats().peak_concurrency
    _reset(ctx)
    return peak


def _result(
    ctx: Context, name: str, paired: Paired, peaks: dict[str, int], ours: str, baseline: str
) -> CaseResult:
    n = ctx.sizes.batch_size
    stats = ctx.emulator.stats()
    return CaseResult(
        name=name,
        title=f"batch of {n}, {SLOTS} slots, distinct replies",
        ours_label=ours,
        baseline_label=baseline,
        metrics=[Metric.ratio("wall", paired.wall("ours"), paired.wall("baseline"), TARGET)]
        if ctx.timing
        else [],
        checks={
            "results_equal": paired.results_equal,
            "order": all(_in_order(r, n) for r in paired.results("ours")),
            "fragments": stats.fragment_counts == [ctx.sizes.batch_fragments],
            # ours alone (`_peak`): a batch that ran one request at a time fails this
            "concurrent": peaks["ours"] == min(SLOTS, n),
            # the reply is scripted: every request of the rounds (warm-up included, both
            # sides) sent the SDK by hand's Person schema; a batch that dropped it fails this
            "schema_sent": sent_schema(stats, 2 * (ctx.sizes.batch_rounds + 1) * n, FIELDS),
        },
        extra={
            "prompts": n,
            "slots": SLOTS,
            "token_latency_s": ctx.sizes.token_latency,
            "fragments_per_reply": ctx.sizes.batch_fragments,
            "peak_concurrency": peaks,
        },
    )


def run(ctx: Context) -> list[CaseResult]:
    """Sync batch vs a thread pool of 4 by hand, ``batch_rounds`` interleaved rounds."""
    sizes = ctx.sizes
    prompts = [prompt(i) for i in range(sizes.batch_size)]
    _reset(ctx)
    with (
        lms.Client(ctx.emulator.api_host) as client,
        concurrent.futures.ThreadPoolExecutor(SLOTS) as pool,
    ):
        model = from_lmstudio(client, TEXT_MODEL)
        handle = client.llm.model(TEXT_MODEL)
        fmt = person_format()

        def one(p: str) -> str:
            return handle.respond(p, response_format=fmt).content

        def ours(i: int) -> Sample:
            return measure(lambda: model.batch(prompts, Person))

        def by_hand(i: int) -> Sample:
            return measure(lambda: list(pool.map(one, prompts)))

        model.batch(prompts, Person)
        peaks = {"ours": _peak(ctx)}
        list(pool.map(one, prompts))
        peaks["baseline"] = _peak(ctx)
        ctx.log(f"batch.sync: {sizes.batch_rounds} rounds of {len(prompts)} prompts per side")
        paired = interleave(ours, by_hand, sizes.batch_rounds, warmup=1)
    return [
        _result(
            ctx,
            "batch.sync",
            paired,
            peaks,
            "model.batch(prompts, Person)",
            "ThreadPoolExecutor(4).map(handle.respond, prompts)",
        )
    ]


def run_async(ctx: Context) -> list[CaseResult]:
    """Async batch vs ``asyncio.gather`` with a semaphore of 4 by hand."""
    sizes = ctx.sizes
    prompts = [prompt(i) for i in range(sizes.batch_size)]
    _reset(ctx)

    async def main() -> tuple[Paired, dict[str, int]]:
        async with lms.AsyncClient(ctx.emulator.api_host) as client:
            model = from_lmstudio(client, TEXT_MODEL)
            handle = await client.llm.model(TEXT_MODEL)
            fmt = person_format()
            slots = asyncio.Semaphore(SLOTS)

            async def one(p: str) -> str:
                async with slots:
                    return (await handle.respond(p, response_format=fmt)).content

            async def ours(i: int) -> Sample:
                return await ameasure(lambda: model.batch(prompts, Person))

            async def by_hand(i: int) -> Sample:
                async def gather() -> list[str]:
                    return list(await asyncio.gather(*(one(p) for p in prompts)))

                return await ameasure(gather)

            await model.batch(prompts, Person)
            peaks = {"ours": _peak(ctx)}
            await asyncio.gather(*(one(p) for p in prompts))
            peaks["baseline"] = _peak(ctx)
            ctx.log(f"batch.async: {sizes.batch_rounds} rounds of {len(prompts)} prompts per side")
            return await ainterleave(ours, by_hand, sizes.batch_rounds, warmup=1), peaks

    paired, peaks = asyncio.run(main())
    return [
        _result(
            ctx,
            "batch.async",
            paired,
            peaks,
            "await model.batch(prompts, Person)",
            "asyncio.gather(*(respond(p) under Semaphore(4)))",
        )
    ]


def run_efficiency(ctx: Context) -> list[CaseResult]:
    """Batch time against the ideal ``ceil(n / 4) x one request``, per batch size.

    Each round times 5 single requests and then one batch; the ideal of that
    round is ``ceil(n / 4)`` times the median single request. The SDK by hand (a
    thread pool of 4 over ``handle.respond``, against its own single requests) is
    measured in the same rounds and reported beside it: what the server and the
    machine allow, with no library in between.
    """
    sizes = ctx.sizes
    _reset(ctx)
    results = []
    with (
        lms.Client(ctx.emulator.api_host) as client,
        concurrent.futures.ThreadPoolExecutor(SLOTS) as pool,
    ):
        model = from_lmstudio(client, TEXT_MODEL)
        handle = client.llm.model(TEXT_MODEL)
        fmt = person_format()

        def one(p: str) -> str:
            return handle.respond(p, response_format=fmt).content

        model(prompt(0), Person)  # resolve the handle before timing
        for n in sizes.efficiency_sizes:
            _reset(ctx)  # the records of this size only
            prompts = [prompt(i) for i in range(n)]
            rounds = math.ceil(n / SLOTS)
            ideal: list[float] = []
            actual: list[float] = []
            hand_ideal: list[float] = []
            hand: list[float] = []
            ordered = True
            # The smaller sizes are cheap and noisier: twice the rounds.
            repeats = sizes.efficiency_rounds * (2 if n < max(sizes.efficiency_sizes) else 1)
            ctx.log(f"batch.efficiency.{n}: {repeats} rounds")
            ours_single = functools.partial(model, prompt(0), Person)
            ours_batch = functools.partial(model.batch, prompts, Person)
            hand_batch = functools.partial(_in_pool, pool, one, prompts)
            for _ in range(repeats):
                sample = _round(ours_single, ours_batch, rounds, ideal, actual)
                ordered = ordered and _in_order(sample.result, n)
                _round(functools.partial(one, prompt(0)), hand_batch, rounds, hand_ideal, hand)
            # each round: 5 single requests and a batch of n, ours and the SDK by hand's
            sent = sent_schema(ctx.emulator.stats(), 2 * repeats * (5 + n), FIELDS)
            metrics = []
            if ctx.timing:
                metrics.append(_efficiency("efficiency", ideal, actual, EFFICIENCY))
                metrics.append(_efficiency("efficiency of the SDK by hand", hand_ideal, hand))
            results.append(
                CaseResult(
                    name=f"batch.efficiency.{n}",
                    title=f"batch of {n} vs ideal ceil(n/4) x one request",
                    ours_label=f"model.batch({n} prompts, Person)",
                    baseline_label=f"ideal: {rounds} x model(prompt, Person)",
                    metrics=metrics,
                    checks={"order": ordered, "schema_sent": sent},
                    extra={
                        "curve": "batch size (efficiency)",
                        "x": n,
                        "ours_wall": actual,
                        "baseline_wall": ideal,
                        "by_hand_wall": hand,
                        "by_hand_ideal_wall": hand_ideal,
                    },
                )
            )
    return results


def run_vs_loop(ctx: Context) -> list[CaseResult]:
    """``model.batch`` against a loop of ``model(...)`` calls, 32 prompts (issue 5's case).

    Each round runs the loop and the batch once, in turn; the speed-up is the loop's
    median time over the batch's. With 4 slots it cannot pass 4.
    """
    _reset(ctx)
    prompts = [prompt(i) for i in range(LOOP_PROMPTS)]
    loops: list[float] = []
    batches: list[float] = []
    same = True
    with lms.Client(ctx.emulator.api_host) as client:
        model = from_lmstudio(client, TEXT_MODEL)
        model(prompt(0), Person)  # resolve the handle before timing
        # both sides are ours: the SDK by hand's call, untimed, is the schema each must send
        client.llm.model(TEXT_MODEL).respond(prompt(0), response_format=person_format())
        rounds = 2 * ctx.sizes.efficiency_rounds  # one slow round widens the interval
        ctx.log(f"batch.vs_loop.{LOOP_PROMPTS}: {rounds} rounds")
        for _ in range(rounds):
            looped = measure(lambda: [model(p, Person) for p in prompts])
            batched = measure(lambda: model.batch(prompts, Person))
            loops.append(looped.wall)
            batches.append(batched.wall)
            same = same and looped.result == batched.result
            same = same and _in_order(batched.result, LOOP_PROMPTS)
    sent = sent_schema(ctx.emulator.stats(), 2 + 2 * rounds * LOOP_PROMPTS, FIELDS)
    speedup = _efficiency("speed-up over a loop", loops, batches, SPEEDUP)
    return [
        CaseResult(
            name=f"batch.vs_loop.{LOOP_PROMPTS}",
            title=f"batch of {LOOP_PROMPTS} vs a loop of single calls",
            ours_label=f"model.batch({LOOP_PROMPTS} prompts, Person)",
            baseline_label="[model(p, Person) for p in prompts]",
            metrics=[speedup] if ctx.timing else [],
            checks={"same_results_in_order": same, "schema_sent": sent},
        )
    ]


def _round(
    single: Callable[[], object],
    batch: Callable[[], object],
    rounds: int,
    ideal: list[float],
    actual: list[float],
) -> Sample:
    """Time 5 single requests, then the batch; note the ideal and the batch's time."""
    ideal.append(rounds * statistics.median([measure(single).wall for _ in range(5)]))
    sample = measure(batch)
    actual.append(sample.wall)
    return sample


def _in_pool(
    pool: concurrent.futures.ThreadPoolExecutor, one: Callable[[str], str], prompts: list[str]
) -> list[str]:
    return list(pool.map(one, prompts))


def _efficiency(
    name: str, ideal: list[float], actual: list[float], target: Target | None = None
) -> Metric:
    """The ideal time over the actual one (1 is perfect), with its interval."""
    return Metric(
        name,
        statistics.median(ideal) / statistics.median(actual),
        bootstrap_ci(ideal, actual),
        target,
        "ms",
        Stats.of(actual, 1e3),
        Stats.of(ideal, 1e3),
    )
