"""Parallel predictions on one client, limited by the per-instance slots."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import lmstudio as lms
import pytest
from lmstudio.async_api import AsyncPredictionStream

from .conftest import TEXT, VISION, MakeEmulator, cancel_when_received


def _sync_burst(api_host: str, n: int) -> list[str]:
    with lms.Client(api_host) as client:
        model = client.llm.model(TEXT)
        with ThreadPoolExecutor(n) as pool:
            return list(pool.map(lambda i: model.respond(f"question {i}").content, range(n)))


def test_eight_sync_threads_use_four_slots(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator(token_latency=0.01)
    texts = _sync_burst(emulator.api_host, 8)
    assert len(set(texts)) == 8
    assert emulator.peak_concurrency(TEXT) == 4  # LM Studio's default slot count
    assert emulator.peak_concurrency() == 4
    assert emulator.peak_concurrency(VISION) == 0
    assert sorted(p.text for p in emulator.predictions) == sorted(texts)


def test_eight_sync_threads_with_eight_slots(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator(token_latency=0.01, slots=8)
    _sync_burst(emulator.api_host, 8)
    assert emulator.peak_concurrency(TEXT) == 8


def test_one_slot_serialises(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator(token_latency=0.002, slots=1)
    _sync_burst(emulator.api_host, 3)
    assert emulator.peak_concurrency(TEXT) == 1


def test_a_restarted_emulator_serves_predictions_that_wait_for_a_slot(
    make_emulator: MakeEmulator,
) -> None:
    # The slot semaphores belonged to the first event loop: after stop() and start(), a
    # prediction that had to wait failed with "bound to a different event loop".
    emulator = make_emulator(token_latency=0.005, slots=1)
    _sync_burst(emulator.api_host, 3)
    emulator.stop()
    emulator.start()
    assert len(_sync_burst(emulator.api_host, 3)) == 3
    assert emulator.peak_concurrency(TEXT) == 1


def test_peak_by_path_and_refused_for_an_unknown_name(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator(token_latency=0.005)
    _sync_burst(emulator.api_host, 2)
    assert emulator.peak_concurrency(f"emulator/{TEXT}/{TEXT}.gguf") == 2
    with pytest.raises(KeyError, match="no model or loaded instance named 'qwen-typo'"):
        emulator.peak_concurrency("qwen-typo")  # was 0: a typo passed `<= 2` checks


@pytest.mark.asyncio
async def test_eight_async_gathered(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator(token_latency=0.01)
    async with lms.AsyncClient(emulator.api_host) as client:
        model = await client.llm.model(TEXT)
        results = await asyncio.gather(*(model.respond(f"q{i}") for i in range(8)))
    assert [r.content for r in results] == [
        next(p.text for p in emulator.predictions if p.last_user_text == f"q{i}") for i in range(8)
    ]
    assert emulator.peak_concurrency(TEXT) == 4


def test_peak_is_reset(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator(token_latency=0.005)
    _sync_burst(emulator.api_host, 2)
    assert emulator.peak_concurrency() == 2
    emulator.reset()
    assert emulator.peak_concurrency() == 0


def test_the_end_of_a_prediction_from_before_a_reset_is_not_in_the_trace(
    make_emulator: MakeEmulator,
) -> None:
    """Found by a probe: the frames that ended an earlier test's prediction (its last
    fragments, its result and ``channelClose``) were recorded after the reset, in the next
    test's trace and failure report."""
    emulator = make_emulator(token_latency=0.05)
    emulator.script(TEXT, [" ".join(f"w{i}" for i in range(40))])
    with lms.Client(emulator.api_host) as client:
        stream = client.llm.model(TEXT).respond_stream("before")
        fragments = iter(stream)
        next(fragments)  # under way
        emulator.reset()
        stream.cancel()  # the client's frame on that channel: not this test's either
        for _ in fragments:
            pass
        assert stream.result().stats.stop_reason in ("modelUnloaded", "userStopped")
        assert emulator.trace == []
        assert client.llm.model(TEXT).respond("after").content
    trace = emulator.format_trace(None)
    assert "before" not in trace
    assert '"after"' in trace


@pytest.mark.asyncio
async def test_a_queued_prediction_cancels_at_once(make_emulator: MakeEmulator) -> None:
    """A prediction cancelled while it waits for a slot leaves the queue at once."""
    emulator = make_emulator(token_latency=0.05, slots=1)
    emulator.script(TEXT, lambda prediction: " ".join(f"w{i}" for i in range(100)))  # 5 s
    async with lms.AsyncClient(emulator.api_host) as client:
        model = await client.llm.model(TEXT)
        running = await model.respond_stream("first")
        queued = await model.respond_stream("second")

        async def drain(stream: AsyncPredictionStream) -> str:
            async for _fragment in stream:
                pass
            return stream.result().stats.stop_reason

        first = asyncio.create_task(drain(running))
        second = asyncio.create_task(drain(queued))
        await asyncio.to_thread(emulator.wait_until, lambda: len(emulator.predictions) == 2)
        await queued.cancel()
        assert await asyncio.wait_for(second, timeout=2) == "userStopped"
        assert not first.done()  # the running one goes on
        await running.cancel()
        assert await first == "userStopped"
    assert emulator.predictions[1].fragments == []
    assert emulator.predictions[1].cancelled


@pytest.mark.asyncio
async def test_a_prediction_cancelled_in_the_queue_takes_no_script(
    make_emulator: MakeEmulator,
) -> None:
    # Before: it took its scripted reply when it arrived, before it waited for a slot.
    emulator = make_emulator(token_latency=0.05, slots=1)
    emulator.script(TEXT, [" ".join(f"w{i}" for i in range(100)), "for the third request"])
    async with lms.AsyncClient(emulator.api_host) as client:
        model = await client.llm.model(TEXT)
        running = await model.respond_stream("first")  # 5 s: it keeps the one slot
        first = asyncio.create_task(running.wait_for_result())
        await emulator.await_until(lambda: len(emulator.predictions) == 1)
        assert await cancel_when_received(emulator, model, "second") == "userStopped"
        await running.cancel()
        assert (await first).stats.stop_reason == "userStopped"
        assert (await model.respond("third")).content == "for the third request"
