"""Case 4: the same image in 20 prompts to the vision model.

Ours uploads an image once per client (by content digest) and reuses the file
handle; Outlines' adapter uploads it again for every prompt, through the SDK's
global default client. Each round gives ours a fresh client (so its one upload
is counted in every round, the handle resolved before timing) and sends the 20
prompts one after the other on both sides. The emulator counts the uploads.
"""

from __future__ import annotations

from collections.abc import Callable

import lmstudio as lms
from outlines.models.lmstudio import LMStudio as OutlinesLMStudio

from benchmarks._common import VISION_MODEL, default_client, make_image, prompt
from benchmarks._harness import CaseResult, Context, Stats, Target, interleave, timed
from outlines_lmstudio import from_lmstudio

__all__ = ["run"]


def run(ctx: Context) -> list[CaseResult]:
    """Upload count and time, ours vs Outlines' adapter."""
    emu, sizes = ctx.emulator, ctx.sizes
    emu.reset()
    emu.token_latency = emu.prompt_latency = 0.0
    # Same short reply for both sides; it says how many images the server received.
    emu.script(VISION_MODEL, lambda p: f"I see {len(p.images)} image(s).")
    image = make_image(sizes.image_size)
    prompts = [[prompt(i), image] for i in range(sizes.image_prompts)]
    uploads: dict[str, list[float]] = {"ours": [], "outlines": []}

    def counted(side: str, call: Callable[[], object]) -> tuple[float, object]:
        before = len(emu.uploads)
        sample = timed(call)
        uploads[side].append(float(len(emu.uploads) - before))
        return sample

    def ours(i: int) -> tuple[float, object]:
        with lms.Client(emu.api_host) as client:
            model = from_lmstudio(client, VISION_MODEL)
            model("warm up")  # resolve the handle; no image yet
            return counted("ours", lambda: [model(p) for p in prompts])

    ctx.log(f"images: {sizes.image_rounds} rounds of {len(prompts)} prompts per side")
    with default_client(emu.api_host) as shared:
        theirs = OutlinesLMStudio(shared, VISION_MODEL)

        def outlines(i: int) -> tuple[float, object]:
            return counted("outlines", lambda: [theirs(p) for p in prompts])

        paired = interleave(ours, outlines, sizes.image_rounds)
    extra = {
        "prompts": len(prompts),
        "image_bytes": len(image.image_str) * 3 // 4,
        "image_size": list(sizes.image_size),
        "results_equal": paired.results_equal,
        "uploads_per_round": uploads,
    }
    return [
        CaseResult(
            name="images.uploads",
            title=f"uploads for one image in {len(prompts)} prompts",
            ours_label="model([prompt, image])",
            baseline_label="outlines LMStudio([prompt, image])",
            unit="uploads",
            ours=Stats.of(uploads["ours"]),
            baseline=Stats.of(uploads["outlines"]),
            target=Target("==", 1, on="ours"),
            extra=extra,
        ),
        CaseResult.from_paired(
            paired,
            name="images.time",
            title=f"time for one image in {len(prompts)} prompts",
            ours="model([prompt, image])",
            baseline="outlines LMStudio([prompt, image])",
            extra=extra,
        ),
    ]
