"""The same image in many prompts: ours against the SDK reusing its ``FileHandle``.

A careful SDK user uploads the image once (``client.files.prepare_image``) and
puts the same ``FileHandle`` in every chat. Ours gets the Outlines ``Image``
every time and must not cost more than that once the image is uploaded. Each
round opens a fresh client; the first use on each side (the upload) is not
timed, the 2nd to last uses are, interleaved. The emulator counts the uploads:
exactly one per side per round.
"""

from __future__ import annotations

import lmstudio as lms

from benchmarks._common import VISION_MODEL, make_image, make_image_bytes, prompt
from benchmarks._harness import CaseResult, Context, Paired, Sample, Target, interleave, measure
from benchmarks._remote import Script
from outlines_lmstudio import from_lmstudio

__all__ = ["TARGET", "run"]

TARGET = Target("<=", 1.05)


def _round(ctx: Context, data: bytes) -> Paired:
    image = make_image(data)
    uses = ctx.sizes.image_uses
    with lms.Client(ctx.emulator.api_host) as client:
        model = from_lmstudio(client, VISION_MODEL)
        handle = client.llm.model(VISION_MODEL)

        def ours(i: int) -> Sample:
            return measure(lambda: model([prompt(i), image]))

        file_handle = client.files.prepare_image(data, name="picture.jpg")

        def sdk(i: int) -> Sample:
            def call() -> str:
                chat = lms.Chat()
                chat.add_user_message(prompt(i), images=[file_handle])
                return handle.respond(chat).content

            return measure(call)

        # Use 1 of ours (the upload) is the warm-up; uses 2..N are timed.
        return interleave(ours, sdk, uses - 1, warmup=1)


def run(ctx: Context) -> list[CaseResult]:
    """Reuse cost per image size; the target applies to the largest (10 MP) size."""
    sizes = ctx.sizes
    results = []
    for size in sizes.image_sizes:
        data = make_image_bytes(size)
        megapixels = size[0] * size[1] / 1e6
        ctx.emulator.reset(Script("vision"), models=(VISION_MODEL,))
        rounds = []
        ctx.log(f"image.reuse {megapixels:.1f} MP: {sizes.image_rounds} rounds")
        for _ in range(sizes.image_rounds):
            rounds.append(_round(ctx, data))
        paired = Paired(
            [s for r in rounds for s in r.ours], [s for r in rounds for s in r.baseline]
        )
        stats = ctx.emulator.stats()
        target = TARGET if size == sizes.image_sizes[-1] else None
        results.append(
            CaseResult(
                name=f"image.reuse.{megapixels:.1f}MP",
                title=f"same {megapixels:.1f} MP image, uses 2..{sizes.image_uses}",
                ours_label="model([prompt, image])",
                baseline_label="handle.respond(chat with the same FileHandle)",
                metrics=paired.metrics(target) if ctx.timing else [],
                checks={
                    "results_equal": paired.results_equal,
                    "one_image_each": all(
                        str(r).startswith("I see 1 image") for r in paired.results("ours")
                    ),
                    "uploads": stats.uploads == 2 * sizes.image_rounds,
                },
                extra={
                    **paired.curve("image size (megapixels)", megapixels),
                    "jpeg_bytes": len(data),
                    "uploads": stats.uploads,
                    "rounds": sizes.image_rounds,
                },
            )
        )
    return results
