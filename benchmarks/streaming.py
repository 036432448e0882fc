"""Case 5: time to first fragment, ``model.stream`` against ``handle.respond_stream``.

The clock starts before the call that creates the stream and stops when the
first text fragment is in hand; the rest of the stream is then read (untimed) so
that neither side leaves a prediction running, and the full texts are compared.
"""

from __future__ import annotations

import time

import lmstudio as lms

from benchmarks._common import TEXT_MODEL, Person, person_format, prompt
from benchmarks._harness import CaseResult, Context, Target, cpu_summary, interleave
from outlines_lmstudio import from_lmstudio

__all__ = ["run"]


def run(ctx: Context) -> list[CaseResult]:
    """Time to first fragment of a `Person` stream, ours vs the SDK by hand."""
    emu, n = ctx.emulator, ctx.sizes.requests
    emu.reset()
    emu.token_latency = emu.prompt_latency = 0.0
    cpu: dict[str, list[float]] = {"ours": [], "sdk": []}
    with lms.Client(emu.api_host) as client:
        model = from_lmstudio(client, TEXT_MODEL)
        handle = client.llm.model(TEXT_MODEL)
        response_format = person_format()

        def ours(i: int) -> tuple[float, object]:
            cpu_start, start = time.thread_time(), time.perf_counter()
            chunks = model.stream(prompt(i), Person)
            first = next(iter(chunks))
            ttff = time.perf_counter() - start
            cpu["ours"].append(time.thread_time() - cpu_start)
            return ttff, first + "".join(chunks)

        def sdk(i: int) -> tuple[float, object]:
            cpu_start, start = time.thread_time(), time.perf_counter()
            fragments = iter(handle.respond_stream(prompt(i), response_format=response_format))
            first = next(fragments).content
            ttff = time.perf_counter() - start
            cpu["sdk"].append(time.thread_time() - cpu_start)
            return ttff, first + "".join(f.content for f in fragments)

        ctx.log(f"stream.ttff: {n} streams per side")
        paired = interleave(ours, sdk, n, ctx.sizes.warmup)
    return [
        CaseResult.from_paired(
            paired,
            name="stream.ttff",
            title="time to first fragment",
            ours="model.stream(prompt, Person)",
            baseline="handle.respond_stream(prompt, response_format=...)",
            target=Target("<=", 1.05),
            extra={
                "emulator_latency_s": 0.0,
                "caller_thread_cpu": cpu_summary(cpu["ours"], cpu["sdk"]),
            },
        )
    ]
