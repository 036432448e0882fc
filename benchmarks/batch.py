"""Case 3: ``model.batch(prompts, Person)`` against a sequential loop of ``model(p, Person)``.

The emulator serves 4 predictions at once (LM Studio's default for llama.cpp
models) and waits ``token_latency`` before each fragment; every reply is the same
scripted JSON document of a fixed number of fragments, so every request costs
the same and 4x is the ceiling. The ratio is the speedup, sequential / batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lmstudio as lms

from benchmarks._common import TEXT_MODEL, Person, prompt
from benchmarks._harness import (
    CaseResult,
    Context,
    Paired,
    Target,
    ainterleave,
    atimed,
    interleave,
    timed,
)
from outlines_lmstudio import from_lmstudio

__all__ = ["TARGET", "reply", "run", "run_async"]

TARGET = Target(">=", 3.5)


def reply(fragments: int) -> str:
    """A `Person` JSON document that the emulator sends as ``fragments`` fragments.

    The emulator splits replies at whitespace, at most 6 characters a piece:
    ``{"name`` ``":`` `` "A`` (`` bcd`` ...) `` x",`` `` "age":`` `` 36}``.
    """
    if fragments < 5:
        raise ValueError("a Person reply has at least 5 fragments")
    return '{"name": "' + " ".join(["A", *["bcd"] * (fragments - 5)]) + '", "age": 36}'


@contextmanager
def _slow(ctx: Context) -> Iterator[dict[str, Any]]:
    """Script fixed replies and set the per-fragment latency; restore afterwards."""
    emu, sizes = ctx.emulator, ctx.sizes
    emu.reset()
    text = reply(sizes.batch_fragments)
    emu.script(TEXT_MODEL, lambda _prediction: text)
    emu.token_latency, emu.prompt_latency = sizes.token_latency, 0.0
    extra: dict[str, Any] = {
        "prompts": sizes.batch_prompts,
        "slots": emu.slots,
        "token_latency_s": sizes.token_latency,
        "fragments_per_reply": sizes.batch_fragments,
        "ideal_speedup": float(min(emu.slots, sizes.batch_prompts)),
    }
    try:
        yield extra
        done = [p for p in emu.predictions if p.done]
        extra["fragments_seen"] = sorted({len(p.fragments) for p in done})
        extra["peak_concurrency"] = emu.peak_concurrency(TEXT_MODEL)
    finally:
        emu.token_latency = 0.0
        emu.reset()


def _result(name: str, title: str, paired: Paired, extra: dict[str, Any], a: str) -> CaseResult:
    return CaseResult.from_paired(
        paired,
        name=name,
        title=title,
        ours=f"{a}model.batch(prompts, Person)",
        baseline=f"for p in prompts: {a}model(p, Person)",
        ratio_kind="baseline/ours",
        target=TARGET,
        extra=extra,
    )


def run(ctx: Context) -> list[CaseResult]:
    """Sync batch vs sequential, ``batch_rounds`` interleaved rounds."""
    sizes = ctx.sizes
    prompts = [prompt(i) for i in range(sizes.batch_prompts)]
    with _slow(ctx) as extra, lms.Client(ctx.emulator.api_host) as client:
        model = from_lmstudio(client, TEXT_MODEL)
        model("warm up", Person)  # resolve the handle outside the timed rounds

        def ours(i: int) -> tuple[float, object]:
            return timed(lambda: model.batch(prompts, Person))

        def sequential(i: int) -> tuple[float, object]:
            return timed(lambda: [model(p, Person) for p in prompts])

        ctx.log(f"batch.sync: {sizes.batch_rounds} rounds of {len(prompts)} prompts per side")
        paired = interleave(ours, sequential, sizes.batch_rounds)
    return [_result("batch.sync", "batch of 32 vs sequential loop", paired, extra, "")]


def run_async(ctx: Context) -> list[CaseResult]:
    """Async batch vs sequential awaits, ``batch_rounds`` interleaved rounds."""
    sizes = ctx.sizes
    prompts = [prompt(i) for i in range(sizes.batch_prompts)]

    async def main() -> Paired:
        async with lms.AsyncClient(ctx.emulator.api_host) as client:
            model = from_lmstudio(client, TEXT_MODEL)
            await model("warm up", Person)

            async def ours(i: int) -> tuple[float, object]:
                return await atimed(lambda: model.batch(prompts, Person))

            async def sequential(i: int) -> tuple[float, object]:
                async def loop() -> list[str]:
                    return [await model(p, Person) for p in prompts]

                return await atimed(loop)

            ctx.log(f"batch.async: {sizes.batch_rounds} rounds of {len(prompts)} prompts per side")
            return await ainterleave(ours, sequential, sizes.batch_rounds)

    with _slow(ctx) as extra:
        paired = asyncio.run(main())
    return [
        _result("batch.async", "async batch of 32 vs sequential awaits", paired, extra, "await ")
    ]
