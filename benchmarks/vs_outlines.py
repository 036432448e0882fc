"""Ours against Outlines' own ``outlines.models.lmstudio.LMStudio`` (reported, no target).

The same requests (plain text, then the `Person` JSON schema) through both
adapters on one client. Outlines' adapter resolves the model handle again on
every call (a server round trip); ours resolves it once.
"""

from __future__ import annotations

from typing import Any

import lmstudio as lms
from outlines.models.lmstudio import LMStudio as OutlinesLMStudio

from benchmarks._common import TEXT_MODEL, Person, prompt
from benchmarks._harness import CaseResult, Context, Sample, interleave, measure
from benchmarks._remote import Script
from outlines_lmstudio import LMStudio, from_lmstudio

__all__ = ["run"]


def _compare(
    ctx: Context, ours_model: LMStudio, theirs: OutlinesLMStudio, kind: str, output_type: Any
) -> CaseResult:
    n = ctx.sizes.requests

    def ours(i: int) -> Sample:
        return measure(lambda: ours_model(prompt(i), output_type))

    def outlines(i: int) -> Sample:
        return measure(lambda: theirs(prompt(i), output_type))

    ctx.log(f"outlines.{kind}: {n} requests per side")
    paired = interleave(ours, outlines, n, ctx.sizes.warmup)
    label = "" if output_type is None else ", Person"
    return CaseResult(
        name=f"outlines.{kind}",
        title=f"ours vs Outlines' LMStudio adapter, {kind} output",
        ours_label=f"model(prompt{label})",
        baseline_label=f"outlines LMStudio(prompt{label})",
        metrics=paired.metrics() if ctx.timing else [],
        checks={"results_equal": paired.results_equal},
    )


def run(ctx: Context) -> list[CaseResult]:
    """Text and JSON-schema requests, ours vs Outlines' adapter."""
    ctx.emulator.reset(Script("person", ctx.sizes.short_fragments))
    with lms.Client(ctx.emulator.api_host) as client:
        ours_model = from_lmstudio(client, TEXT_MODEL)
        theirs = OutlinesLMStudio(client, TEXT_MODEL)
        return [
            _compare(ctx, ours_model, theirs, "text", None),
            _compare(ctx, ours_model, theirs, "json", Person),
        ]
