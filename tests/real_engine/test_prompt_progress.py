"""Prompt-processing progress on the real engine: reported as llama.cpp evaluates the prompt.

Before, the emulator sent 0 and 1 at once and then processed the prompt in silence, so a
long prompt looked done while it was not, and a ``read_timeout`` shorter than its
processing ran out although LM Studio keeps reporting.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from dataclasses import dataclass
from typing import Any

import lmstudio as lms
import pytest

from outlines_lmstudio import from_lmstudio
from outlines_lmstudio.testing import LMStudioEmulator
from tests.real_engine.conftest import EMBEDDED_MODEL_KEY

BATCH = 512
"""Prompt tokens the engine evaluates per llama.cpp call."""

WORDS = 540
"""Words of a long prompt: about 3,800 tokens, 7 to 8 batches, within the 4,096 context."""


def _long_prompt(seed: int) -> str:
    """A prompt of several batches; its seed keeps it apart from the cached prompt."""
    rng = random.Random(seed)
    return " ".join(f"item{rng.randrange(10**6)}" for _ in range(WORDS))


@dataclass
class _Run:
    """What the client heard of one long prompt (times from the request)."""

    events: list[tuple[float, float | str]]
    prompt_tokens: int
    packets: list[dict[str, Any]]

    @property
    def reports(self) -> list[float]:
        return [e for _, e in self.events if isinstance(e, float)]

    @property
    def first_token(self) -> float:
        """Seconds to the first token: about the prompt's processing (one token is asked)."""
        return next(t for t, e in self.events if e == "first token")


def _progress_packets(emulator: LMStudioEmulator, since: float) -> list[dict[str, Any]]:
    """The ``promptProcessingProgress`` packets the emulator sent after ``since``."""
    packets = []
    for frame in emulator.trace:
        message = frame.data.get("message") if isinstance(frame.data, dict) else None
        if frame.direction != "out" or frame.time < since or not isinstance(message, dict):
            continue
        if message.get("type") == "promptProcessingProgress":
            packets.append(message)
    return packets


@pytest.fixture(scope="module")
def long_run(real_emulator: LMStudioEmulator) -> _Run:
    """One long prompt through the SDK, its progress reports and first token timed."""
    real_emulator.reset()
    events: list[tuple[float, float | str]] = []
    with lms.Client(real_emulator.api_host) as client:
        llm = client.llm.model(EMBEDDED_MODEL_KEY)
        since = time.monotonic()
        start = time.perf_counter()
        result = llm.respond(
            _long_prompt(1),
            config={"maxTokens": 1, "temperature": 0},
            on_prompt_processing_progress=lambda p: events.append((time.perf_counter() - start, p)),
            on_first_token=lambda: events.append((time.perf_counter() - start, "first token")),
        )
    packets = _progress_packets(real_emulator, since)
    assert result.stats.prompt_tokens_count is not None
    return _Run(events, result.stats.prompt_tokens_count, packets)


def test_progress_is_reported_batch_by_batch(long_run: _Run) -> None:
    reports = long_run.reports
    assert long_run.prompt_tokens > 6 * BATCH
    assert reports[0] == 0.0
    assert reports[-1] == 1.0
    assert reports == sorted(set(reports))  # rising, each report new
    # A report after each batch but the last (whose report is the 1): before, none.
    between = [p for p in reports if 0 < p < 1]
    assert len(between) >= long_run.prompt_tokens // BATCH - 1


def test_the_first_token_comes_after_the_prompt_is_processed(long_run: _Run) -> None:
    kinds = [e if isinstance(e, str) else "progress" for _, e in long_run.events]
    assert kinds.count("first token") == 1
    assert kinds[-1] == "first token"  # every report, the 1 included, came before it
    assert long_run.reports[-1] == 1.0


def test_the_reports_count_the_prompts_tokens(long_run: _Run) -> None:
    """The ``details`` (which the 2.x SDK reads) say how many tokens are done."""
    details = [p["details"] for p in long_run.packets]
    assert [p["progress"] for p in long_run.packets] == long_run.reports
    for d in details:
        assert d["totalPromptTokenCount"] == long_run.prompt_tokens
        parts = d["cachedTokenCount"] + d["processedPromptTokenCount"]
        assert parts + d["unprocessedPromptTokenCount"] == long_run.prompt_tokens
    processed = [d["processedPromptTokenCount"] for d in details]
    assert processed[0] == 0
    assert details[-1]["unprocessedPromptTokenCount"] == 0
    # One batch more in each report, the last one's rest in the final one.
    assert all(b - a == BATCH for a, b in itertools.pairwise(processed[:-1]))
    assert 0 < processed[-1] - processed[-2] <= BATCH


def test_a_read_timeout_shorter_than_the_prompt_but_longer_than_a_batch(
    long_run: _Run, emulator: LMStudioEmulator, client: lms.Client
) -> None:
    """Each batch's report is a sign of life, so ``read_timeout`` does not run out.

    The bound is 45% of the time to the first token of a prompt as long: about three and
    a half batches. Before, the whole prompt was processed in silence after the 1 report,
    and the call failed with ``LMStudioTimeoutError``.
    """
    batches = long_run.prompt_tokens / BATCH
    read_timeout = 0.45 * long_run.first_token
    assert read_timeout > 3 * long_run.first_token / batches
    model = from_lmstudio(client, EMBEDDED_MODEL_KEY, read_timeout=read_timeout)
    text = model(_long_prompt(2), max_tokens=1, temperature=0)
    assert isinstance(text, str)
    prediction = emulator.predictions[-1]
    assert prediction.stop_reason == "maxPredictedTokensReached"


@pytest.mark.asyncio
async def test_a_model_unloaded_while_its_prompt_is_processed_stops_the_prompt(
    async_client: lms.AsyncClient, emulator: LMStudioEmulator
) -> None:
    """The next report finds the model gone: the prompt stops there, ``modelUnloaded``.

    Before, the whole prompt was processed (seconds) before the first fragment looked,
    and the instance said ``generating`` meanwhile, not ``processingPrompt``.
    """
    from outlines_lmstudio.testing._llama import LlamaEngine
    from outlines_lmstudio.testing._lookup import engine_for

    instance = emulator._catalogue.instances[EMBEDDED_MODEL_KEY]
    engine = engine_for(emulator, instance)
    assert isinstance(engine, LlamaEngine)
    await engine.clear_cache()
    llm = await async_client.llm.model(EMBEDDED_MODEL_KEY)
    config: lms.LlmPredictionConfigDict = {"maxTokens": 1, "temperature": 0, "cpuThreads": 1}
    call = asyncio.create_task(llm.respond(_long_prompt(3), config=config))

    def processing_after_a_batch() -> bool:
        state = emulator._processing_state(instance)["status"]
        return (
            engine._decoder is not None
            and bool(engine._decoder.cached)
            and (state == "processingPrompt")
        )

    await asyncio.to_thread(emulator.wait_until, processing_after_a_batch, 60)
    emulator.unload(EMBEDDED_MODEL_KEY)
    result = await asyncio.wait_for(call, 60)
    assert result.stats.stop_reason == "modelUnloaded"
    assert result.content == ""
    assert result.stats.prompt_tokens_count is not None
    assert engine._decoder is not None
    assert len(engine._decoder.cached) < result.stats.prompt_tokens_count
