"""Ours against Outlines' own ``outlines.models.lmstudio.LMStudio`` (reported, no target).

The same requests (plain text, then the `Person` JSON schema) through both
adapters on one client. Outlines' adapter resolves the model handle again on
every call (a server round trip); ours resolves it once. Then the same image in
20 prompts: Outlines' adapter uploads it on every call, through the SDK's default
client; ours uploads it once per client (the emulator counts the uploads).
"""

from __future__ import annotations

from typing import Any

import lmstudio as lms
from outlines.models.lmstudio import LMStudio as OutlinesLMStudio

from benchmarks._common import (
    TEXT_MODEL,
    VISION_MODEL,
    Person,
    make_image,
    make_image_bytes,
    prompt,
)
from benchmarks._harness import CaseResult, Context, Sample, interleave, measure, sent_schema
from benchmarks._remote import Script
from outlines_lmstudio import LMStudio, from_lmstudio

__all__ = ["run", "run_images"]


def _compare(
    ctx: Context, ours_model: LMStudio, theirs: OutlinesLMStudio, kind: str, output_type: Any
) -> CaseResult:
    n = ctx.sizes.requests

    def ours(i: int) -> Sample:
        return measure(lambda: ours_model(prompt(i), output_type))

    def outlines(i: int) -> Sample:
        return measure(lambda: theirs(prompt(i), output_type))

    ctx.emulator.reset(Script("person", ctx.sizes.short_fragments))  # this kind's records
    ctx.log(f"outlines.{kind}: {n} requests per side")
    paired = interleave(ours, outlines, n, ctx.sizes.warmup)
    label = "" if output_type is None else ", Person"
    checks = {"results_equal": paired.results_equal}
    if output_type is Person:
        # the reply is scripted: every call of both adapters (warm-up included) sent the
        # same Person schema
        calls = 2 * (n + ctx.sizes.warmup)
        checks["schema_sent"] = sent_schema(ctx.emulator.stats(), calls, len(Person.model_fields))
    return CaseResult(
        name=f"outlines.{kind}",
        title=f"ours vs Outlines' LMStudio adapter, {kind} output",
        ours_label=f"model(prompt{label})",
        baseline_label=f"outlines LMStudio(prompt{label})",
        metrics=paired.metrics() if ctx.timing else [],
        checks=checks,
    )


def run(ctx: Context) -> list[CaseResult]:
    """Text and JSON-schema requests, ours vs Outlines' adapter."""
    with lms.Client(ctx.emulator.api_host) as client:
        ours_model = from_lmstudio(client, TEXT_MODEL)
        theirs = OutlinesLMStudio(client, TEXT_MODEL)
        return [
            _compare(ctx, ours_model, theirs, "text", None),
            _compare(ctx, ours_model, theirs, "json", Person),
        ]


def run_images(ctx: Context) -> list[CaseResult]:
    """The same image in 20 prompts, ours against Outlines' adapter (issue 5's case).

    Outlines' adapter uploads with ``lms.prepare_image``, through the SDK's default
    client, which is pointed at the emulator here and is the model's client too (an
    upload lasts as long as the client that made it is connected). Both sides' calls are
    timed, first uses (and uploads) included.
    """
    uses = ctx.sizes.image_uses
    data = make_image_bytes(ctx.sizes.image_sizes[0])
    image = make_image(data)
    ctx.emulator.reset(Script("vision"), models=(VISION_MODEL,))
    lms.configure_default_client(ctx.emulator.api_host)
    with lms.Client(ctx.emulator.api_host) as client, lms.get_default_client() as default:
        ours_model = from_lmstudio(client, VISION_MODEL)
        theirs = OutlinesLMStudio(default, VISION_MODEL)

        def ours(i: int) -> Sample:
            return measure(lambda: ours_model([prompt(i), image]))

        def outlines(i: int) -> Sample:
            return measure(lambda: theirs([prompt(i), image]))

        ctx.log(f"outlines.image: the same image in {uses} prompts per side")
        paired = interleave(ours, outlines, uses)
    uploads = ctx.emulator.stats().uploads
    return [
        CaseResult(
            name=f"outlines.image.{uses}",
            title=f"ours vs Outlines' LMStudio adapter, the same image in {uses} prompts",
            ours_label="model([prompt, image])",
            baseline_label="outlines LMStudio([prompt, image])",
            metrics=paired.metrics() if ctx.timing else [],
            checks={"results_equal": paired.results_equal, "uploads": uploads == 1 + uses},
            extra={"uploads": uploads, "ours_uploads": 1, "outlines_uploads": uploads - 1},
        )
    ]
