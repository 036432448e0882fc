"""Case 1: per-request overhead of ``model(prompt, Person)`` against the SDK by hand.

The baseline is what a careful user writes without us: a model handle resolved
once and reused, and the same JSON schema as ``response_format``. The emulator
has no latency, so the difference is client-side work. Both sides send the same
prompts, so the emulator returns the same text to both (checked).
"""

from __future__ import annotations

import asyncio

import lmstudio as lms

from benchmarks._common import TEXT_MODEL, Person, person_format, prompt
from benchmarks._harness import (
    CaseResult,
    Context,
    Paired,
    Target,
    ainterleave,
    atimed,
    cpu_summary,
    interleave,
    timed,
)
from outlines_lmstudio import from_lmstudio

__all__ = ["run", "run_async"]

TARGET = Target("<=", 1.05)


def _result(
    name: str, title: str, paired: Paired, cpu: dict[str, list[float]], ours: str, sdk: str
) -> CaseResult:
    return CaseResult.from_paired(
        paired,
        name=name,
        title=title,
        ours=ours,
        baseline=sdk,
        target=TARGET,
        extra={
            "emulator_latency_s": 0.0,
            "caller_thread_cpu": cpu_summary(cpu["ours"], cpu["sdk"]),
        },
    )


def run(ctx: Context) -> list[CaseResult]:
    """Sync: ``model(prompt, Person)`` against ``handle.respond(prompt, response_format=...)``."""
    emu, n = ctx.emulator, ctx.sizes.requests
    emu.reset()
    emu.token_latency = emu.prompt_latency = 0.0
    cpu: dict[str, list[float]] = {"ours": [], "sdk": []}
    with lms.Client(emu.api_host) as client:
        model = from_lmstudio(client, TEXT_MODEL)
        handle = client.llm.model(TEXT_MODEL)
        response_format = person_format()

        def ours(i: int) -> tuple[float, object]:
            return timed(lambda: model(prompt(i), Person), cpu["ours"])

        def sdk(i: int) -> tuple[float, object]:
            return timed(
                lambda: handle.respond(prompt(i), response_format=response_format).content,
                cpu["sdk"],
            )

        ctx.log(f"overhead.sync: {n} requests per side")
        paired = interleave(ours, sdk, n, ctx.sizes.warmup)
    return [
        _result(
            "overhead.sync",
            "model(prompt, Person) vs SDK by hand",
            paired,
            cpu,
            "model(prompt, Person)",
            "handle.respond(prompt, response_format=...)",
        )
    ]


def run_async(ctx: Context) -> list[CaseResult]:
    """Async: ``await model(prompt, Person)`` against ``await handle.respond(...)``."""
    emu, n = ctx.emulator, ctx.sizes.async_requests
    emu.reset()
    emu.token_latency = emu.prompt_latency = 0.0
    cpu: dict[str, list[float]] = {"ours": [], "sdk": []}

    async def main() -> Paired:
        async with lms.AsyncClient(emu.api_host) as client:
            model = from_lmstudio(client, TEXT_MODEL)
            handle = await client.llm.model(TEXT_MODEL)
            response_format = person_format()

            async def ours(i: int) -> tuple[float, object]:
                return await atimed(lambda: model(prompt(i), Person), cpu["ours"])

            async def sdk(i: int) -> tuple[float, object]:
                async def call() -> str:
                    result = await handle.respond(prompt(i), response_format=response_format)
                    return result.content

                return await atimed(call, cpu["sdk"])

            ctx.log(f"overhead.async: {n} requests per side")
            return await ainterleave(ours, sdk, n, ctx.sizes.warmup)

    paired = asyncio.run(main())
    return [
        _result(
            "overhead.async",
            "await model(prompt, Person) vs async SDK by hand",
            paired,
            cpu,
            "await model(prompt, Person)",
            "await handle.respond(prompt, response_format=...)",
        )
    ]
