"""Case 2: ours against Outlines' own ``outlines.models.lmstudio.LMStudio``.

The same requests (plain text, then the `Person` JSON schema) through both
adapters on one client. Outlines' adapter resolves the model handle again on
every call (a server round trip); ours resolves it once. No target: the ratio
is reported.
"""

from __future__ import annotations

from typing import Any

import lmstudio as lms
from outlines.models.lmstudio import LMStudio as OutlinesLMStudio

from benchmarks._common import TEXT_MODEL, Person, prompt
from benchmarks._harness import CaseResult, Context, cpu_summary, interleave, timed
from outlines_lmstudio import LMStudio, from_lmstudio

__all__ = ["run"]


def _compare(
    ctx: Context, ours_model: LMStudio, theirs: OutlinesLMStudio, kind: str, output_type: Any
) -> CaseResult:
    n = ctx.sizes.outlines_requests
    cpu: dict[str, list[float]] = {"ours": [], "outlines": []}

    def ours(i: int) -> tuple[float, object]:
        return timed(lambda: ours_model(prompt(i), output_type), cpu["ours"])

    def outlines(i: int) -> tuple[float, object]:
        return timed(lambda: theirs(prompt(i), output_type), cpu["outlines"])

    ctx.log(f"outlines.{kind}: {n} requests per side")
    paired = interleave(ours, outlines, n, ctx.sizes.warmup)
    label = "" if output_type is None else ", Person"
    return CaseResult.from_paired(
        paired,
        name=f"outlines.{kind}",
        title=f"ours vs Outlines' LMStudio adapter, {kind} output",
        ours=f"model(prompt{label})",
        baseline=f"outlines LMStudio(prompt{label})",
        extra={"caller_thread_cpu": cpu_summary(cpu["ours"], cpu["outlines"])},
    )


def run(ctx: Context) -> list[CaseResult]:
    """Text and JSON-schema requests, ours vs Outlines' adapter."""
    emu = ctx.emulator
    emu.reset()
    emu.token_latency = emu.prompt_latency = 0.0
    with lms.Client(emu.api_host) as client:
        ours_model = from_lmstudio(client, TEXT_MODEL)
        theirs = OutlinesLMStudio(client, TEXT_MODEL)
        return [
            _compare(ctx, ours_model, theirs, "text", None),
            _compare(ctx, ours_model, theirs, "json", Person),
        ]
