"""Constrained vs unconstrained decoding speed on the embedded real model (Gemma 3 270M).

``python -m benchmarks.real_engine_speed [--write-docs]``

Three ways on the same prompts, greedy, each run from an empty KV cache:

- ``free``: no grammar;
- ``check``: the JSON schema's grammar, rejection-first (our engine's default, as
  llama.cpp's server does it): sample, check the one token, mask only on rejection;
- ``mask``: the same grammar applied to the whole vocabulary before every sample
  (what llama-cpp-python's high-level API does).

Reports decode tokens/s (after the first token) per way, ``check / free`` and
whether ``check`` wrote exactly what ``mask`` wrote. Writes
``benchmarks/results/real_engine_speed.json``; ``--write-docs`` also replaces the
marked section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._sections import publish

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "real_engine_speed.json"

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "city": {"type": "string"},
        "hobbies": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name", "age", "city", "hobbies"],
}
PROMPTS = [
    "Extract the person as JSON: John is 32 years old, lives in Paris and likes chess.",
    "Extract the person as JSON: Mary Smith, aged 40, lives in Berlin; she paints and runs.",
    "Extract the person as JSON: Ahmed Khan (27) works from Leeds and plays cricket.",
    "Extract the person as JSON: Dr. Lena Ortiz, 55, of Madrid, enjoys sailing and opera.",
    "Extract the person as JSON: Tom, a 19-year-old student in Oslo, loves skiing.",
    "Extract the person as JSON: Grace Lee is 63 and lives in Toronto. Hobbies: golf, baking.",
]
MAX_TOKENS = 64
WAYS = ("free", "check", "mask")


async def _run(engine: Any, prompt: str, way: str) -> tuple[str, int, float]:
    from outlines_lmstudio.testing._records import Prediction

    record = Prediction(
        model="bench",
        messages=[{"role": "user", "content": [{"type": "text", "text": prompt}]}],
        config={
            "llm.prediction.temperature": 0,
            "llm.prediction.maxPredictedTokens": {"checked": True, "value": MAX_TOKENS},
        },
        structured=None if way == "free" else {"type": "json", "jsonSchema": SCHEMA},
        preset=None,
        client_id="bench",
    )
    await engine.clear_cache()
    generation = await engine.start(record, grammar_first=way == "mask")
    text, first = "", None
    async for fragment in generation.fragments:
        if first is None:
            first = time.perf_counter()
        text += fragment.content
    end = time.perf_counter()
    tokens = int(generation.stats["predictedTokensCount"])
    return text, tokens, end - (first or end)


async def measure(rounds: int) -> dict[str, Any]:
    from outlines_lmstudio.testing import embedded_model
    from outlines_lmstudio.testing._catalogue import Catalogue
    from outlines_lmstudio.testing._llama import LlamaEngine

    model = embedded_model(lambda line: print(line, file=sys.stderr))
    engine = LlamaEngine(Catalogue([model]).instances[model.key])
    await _run(engine, "Warm up.", "free")
    per_round: dict[str, list[float]] = {way: [] for way in WAYS}
    identical: list[bool] = []
    tokens: dict[str, int] = {}
    for _ in range(rounds):
        for way in WAYS:
            total_tokens, total_time = 0, 0.0
            texts = []
            for prompt in PROMPTS:
                text, n, seconds = await _run(engine, prompt, way)
                total_tokens += max(n - 1, 0)  # decode rate: tokens after the first
                total_time += seconds
                texts.append(text)
            per_round[way].append(total_tokens / total_time)
            tokens[way] = total_tokens + len(PROMPTS)
            if way == "check":
                check_texts = texts
            if way == "mask":
                identical.append(texts == check_texts)
    speed = {way: statistics.median(values) for way, values in per_round.items()}
    return {
        "model": "Gemma 3 270M Q4_K_M (embedded), llama-cpp-python 0.3.36, CPU",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "prompts": len(PROMPTS),
        "max_tokens": MAX_TOKENS,
        "rounds": rounds,
        "tokens_per_round": tokens,
        "tokens_per_second": speed,
        "tokens_per_second_each_round": per_round,
        "check_over_free": speed["check"] / speed["free"],
        "mask_over_free": speed["mask"] / speed["free"],
        "check_equals_mask": all(identical),
    }


def table(result: dict[str, Any]) -> str:
    speed = result["tokens_per_second"]
    rows = [
        "| Way | Decode tokens/s | vs unconstrained |",
        "|---|---:|---:|",
        f"| unconstrained | {speed['free']:.1f} | 1.00x |",
        f"| JSON schema, rejection-first (ours) | {speed['check']:.1f} | "
        f"{result['check_over_free']:.2f}x |",
        f"| JSON schema, full vocabulary mask | {speed['mask']:.1f} | "
        f"{result['mask_over_free']:.2f}x |",
    ]
    same = "yes" if result["check_equals_mask"] else "NO"
    return "\n".join(
        [
            *rows,
            "",
            f"{result['model']}; {result['prompts']} prompts, greedy, at most "
            f"{result['max_tokens']} tokens, median of {result['rounds']} rounds on "
            f"{result['machine']}. Rejection-first output identical to full masking: {same}.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args.rounds))
    section = ("real-engine-speed", "## Real engine: constrained decoding speed")
    publish(result, RESULTS, table(result), section if args.write_docs else None)
    return 0 if result["check_equals_mask"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
