"""Per-request cost against the SDK by hand: complete calls, streams, ``parse``.

The baseline is what a careful user writes without us: a model handle resolved
once and reused, and the ``response_format`` dict computed once. Replies are
distinct and short (``Sizes.short_fragments`` fragments), so our fixed cost per
call is not diluted by a long reply; the extra microseconds per call are
reported with the fragment count.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import lmstudio as lms

from benchmarks._common import TEXT_MODEL, Person, person_format, person_id, prompt, sync_sides
from benchmarks._harness import (
    CaseResult,
    Context,
    Paired,
    Sample,
    Target,
    ainterleave,
    ameasure,
    interleave,
    measure,
    sent_alike,
)
from benchmarks._remote import Script, ServerStats
from outlines_lmstudio import LMStudio, ParseError, from_lmstudio

__all__ = ["run", "run_async", "run_parse", "run_stream"]

TARGET = Target("<=", 1.05)
_NOT_A_PERSON = '{"name": "P00", "age": "unknown"}'
"""The reply of `run_parse`'s untimed check: valid JSON, invalid for `Person`."""


def _checks(ctx: Context, paired: Paired, n: int, stats: ServerStats) -> dict[str, bool]:
    ids = [person_id(r) for r in paired.results("ours")]
    return {
        "results_equal": paired.results_equal,
        "distinct_replies": ids == [i % 1296 for i in range(n)],
        "fragments": stats.fragment_counts == [ctx.sizes.short_fragments],
        # the reply is scripted: both sides must have sent the same structured setting (the
        # whole Person schema, equal as JSON), call for call
        "schema_sent": sent_alike(stats.structured, n, ctx.sizes.warmup)
        and set(stats.schema_properties) == {len(Person.model_fields)},
    }


def _result(
    ctx: Context,
    name: str,
    paired: Paired,
    ours: str,
    sdk: str,
    target: Target | None = TARGET,
    stats: ServerStats | None = None,
) -> CaseResult:
    """The case's result; ``stats`` of its own run (read now if ``None``)."""
    return CaseResult(
        name=name,
        title=f"{ours} vs SDK by hand",
        ours_label=ours,
        baseline_label=sdk,
        metrics=paired.metrics(target) if ctx.timing else [],
        checks=_checks(ctx, paired, len(paired.ours), stats or ctx.emulator.stats()),
        extra={
            "fragments_per_reply": ctx.sizes.short_fragments,
            "extra_per_call": paired.extra_us() if ctx.timing else None,
        },
    )


def _reset(ctx: Context) -> None:
    ctx.emulator.reset(Script("person", ctx.sizes.short_fragments))


def run(ctx: Context) -> list[CaseResult]:
    """Sync: ``model(prompt, Person)`` against ``handle.respond(prompt, response_format=fmt)``."""
    n = ctx.sizes.requests
    fmt = person_format()
    with sync_sides(ctx.emulator.api_host) as (model, handle):

        def ours(i: int) -> Sample:
            return measure(lambda: model(prompt(i), Person))

        def sdk(i: int) -> Sample:
            return measure(lambda: handle.respond(prompt(i), response_format=fmt).content)

        _reset(ctx)
        ctx.log(f"overhead.sync: {n} requests per side")
        paired = interleave(ours, sdk, n, ctx.sizes.warmup)
    return [
        _result(
            ctx,
            "overhead.sync",
            paired,
            "model(prompt, Person)",
            "handle.respond(prompt, response_format=fmt)",
        )
    ]


def run_async(ctx: Context) -> list[CaseResult]:
    """Async: ``await model(prompt, Person)`` against ``await handle.respond(...)``."""
    n = ctx.sizes.requests
    _reset(ctx)

    async def main() -> tuple[Paired, ServerStats, Paired]:
        async with lms.AsyncClient(ctx.emulator.api_host) as client:
            model = from_lmstudio(client, TEXT_MODEL)
            handle = await client.llm.model(TEXT_MODEL)
            fmt = person_format()

            async def ours(i: int) -> Sample:
                return await ameasure(lambda: model(prompt(i), Person))

            async def sdk(i: int) -> Sample:
                async def call() -> str:
                    return (await handle.respond(prompt(i), response_format=fmt)).content

                return await ameasure(call)

            async def safe(i: int) -> Sample:
                return await ameasure(lambda: _cancel_safe(handle, prompt(i), fmt))

            ctx.log(f"overhead.async: {n} requests per side")
            paired = await ainterleave(ours, sdk, n, ctx.sizes.warmup)
            stats = ctx.emulator.stats()  # this run's, before the next reset
            _reset(ctx)
            ctx.log(f"overhead.async.cancel_safe: {n} requests per side")
            return paired, stats, await ainterleave(safe, sdk, n, ctx.sizes.warmup)

    paired, stats, floor = asyncio.run(main())
    sdk_label = "await handle.respond(prompt, response_format=fmt)"
    return [
        _result(
            ctx, "overhead.async", paired, "await model(prompt, Person)", sdk_label, stats=stats
        ),
        _result(
            ctx,
            "overhead.async.cancel_safe",
            floor,
            "the SDK by hand, cancel-safe: the prediction read in a task of its own",
            sdk_label,
            target=None,
        ),
    ]


def run_stream(ctx: Context) -> list[CaseResult]:
    """Time to first fragment of ``model.stream`` against ``handle.respond_stream``.

    The clock stops when the first text fragment is in hand; the rest of the
    stream is read untimed, and the full texts are compared.
    """
    n = ctx.sizes.requests
    _reset(ctx)
    fmt = person_format()
    pieces: dict[str, list[int]] = {"ours": [], "sdk": []}
    with sync_sides(ctx.emulator.api_host) as (model, handle):

        def ours(i: int) -> Sample:
            cpu, start = time.process_time(), time.perf_counter()
            chunks = iter(model.stream(prompt(i), Person))
            first = next(chunks)
            wall, used = time.perf_counter() - start, time.process_time() - cpu
            rest = list(chunks)
            pieces["ours"].append(1 + len(rest))
            return Sample(wall, used, first + "".join(rest))

        def sdk(i: int) -> Sample:
            cpu, start = time.process_time(), time.perf_counter()
            fragments = iter(handle.respond_stream(prompt(i), response_format=fmt))
            first = next(fragments).content
            wall, used = time.perf_counter() - start, time.process_time() - cpu
            rest = [f.content for f in fragments]
            pieces["sdk"].append(1 + len(rest))
            return Sample(wall, used, first + "".join(rest))

        ctx.log(f"stream.ttff: {n} streams per side")
        paired = interleave(ours, sdk, n, ctx.sizes.warmup)
    result = _result(
        ctx,
        "stream.ttff",
        paired,
        "model.stream(prompt, Person)",
        "handle.respond_stream(prompt, response_format=fmt)",
    )
    # A stream, not the whole reply at its end in one piece (the time to the first fragment
    # would then be the time of the whole reply): as many chunks as the SDK's fragments,
    # which are those the emulator sent.
    result.checks["chunks"] = pieces["ours"] == pieces["sdk"] and set(pieces["sdk"]) == {
        ctx.sizes.short_fragments
    }
    return [result]


def run_parse(ctx: Context) -> list[CaseResult]:
    """``model.parse(prompt, Person)`` against ``respond`` + ``Person.model_validate_json``."""
    n = ctx.sizes.requests
    _reset(ctx)
    fmt = person_format()
    with sync_sides(ctx.emulator.api_host) as (model, handle):

        def ours(i: int) -> Sample:
            return measure(lambda: model.parse(prompt(i), Person))

        def sdk(i: int) -> Sample:
            return measure(
                lambda: Person.model_validate_json(
                    handle.respond(prompt(i), response_format=fmt).content
                )
            )

        ctx.log(f"parse: {n} requests per side")
        paired = interleave(ours, sdk, n, ctx.sizes.warmup)
        stats = ctx.emulator.stats()  # this run's, before the reset of the untimed check
        rejects = _rejects_invalid(ctx, model)
    result = _result(
        ctx,
        "parse",
        paired,
        "model.parse(prompt, Person)",
        "Person.model_validate_json(handle.respond(...).content)",
        stats=stats,
    )
    result.checks["typed"] = all(isinstance(r, Person) for r in paired.results("ours"))
    result.checks["rejects_invalid"] = rejects
    return [result]


def _rejects_invalid(ctx: Context, model: LMStudio) -> bool:
    """Untimed, after the run: ``parse`` must raise `ParseError` on a reply that is JSON
    but not a `Person` (``age`` is not a number), so the case times a parse that validates."""
    ctx.emulator.reset(Script("fixed", text=_NOT_A_PERSON))
    try:
        model.parse(prompt(0), Person)
    except ParseError:
        return True
    return False


async def _cancel_safe(handle: lms.AsyncLLM, text: str, fmt: dict[str, Any]) -> str:
    """What the async guarantees cost by hand: cancel on the server, progress as a sign of life.

    A caller cancelled while awaiting the SDK's stream would release the prediction's
    channel before a cancel could be sent (the server would keep generating), so the
    prediction is read in a task of its own; a cancelled caller sends the cancel, and that
    task reads on until LM Studio confirms it. The progress callback and the arrival
    times are what a read timeout that counts prompt processing needs.
    """
    alive = [time.monotonic()]
    opened: list[lms.AsyncPredictionStream] = []

    async def read() -> lms.AsyncPredictionStream:
        stream = await handle.respond_stream(
            text,
            response_format=fmt,
            on_prompt_processing_progress=lambda _: alive.append(time.monotonic()),
        )
        opened.append(stream)
        await stream.start()
        async for _ in stream:
            alive.append(time.monotonic())
        return stream

    task = asyncio.create_task(read())
    try:
        stream = await asyncio.shield(task)
    except asyncio.CancelledError:
        if opened:
            await opened[0].cancel()
        raise
    return stream.result().content
