"""Interrupted predictions are cancelled on the server: task cancellation, timeouts, Ctrl-C."""

import asyncio
import signal
import subprocess
import sys
import textwrap

import lmstudio as lms
import pytest

from outlines_lmstudio import LMStudioTimeoutError, from_lmstudio
from outlines_lmstudio.testing import LMStudioEmulator

from .conftest import TEXT_MODEL, MakeModel

LONG = "word " * 400


def _streaming(emulator: LMStudioEmulator) -> bool:
    """A prediction has started sending fragments."""
    predictions = emulator.predictions
    return bool(predictions) and len(predictions[-1].fragments) > 2


def _finished(emulator: LMStudioEmulator) -> bool:
    predictions = emulator.predictions
    return bool(predictions) and predictions[-1].done


@pytest.mark.asyncio
async def test_cancelling_the_task_cancels_on_the_server(
    async_client: lms.AsyncClient, slow_emulator: LMStudioEmulator
) -> None:
    slow_emulator.script(TEXT_MODEL, [LONG])
    task = asyncio.create_task(from_lmstudio(async_client, TEXT_MODEL)("long"))
    await asyncio.to_thread(slow_emulator.wait_until, lambda: _streaming(slow_emulator))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.to_thread(slow_emulator.wait_until, lambda: _finished(slow_emulator))
    prediction = slow_emulator.predictions[-1]
    assert prediction.cancelled
    assert prediction.stop_reason == "userStopped"
    assert len(prediction.fragments) < 400


@pytest.mark.asyncio
async def test_cancelling_a_task_that_streams(
    async_client: lms.AsyncClient, slow_emulator: LMStudioEmulator
) -> None:
    slow_emulator.script(TEXT_MODEL, [LONG])
    model = from_lmstudio(async_client, TEXT_MODEL)

    async def consume() -> None:
        async for _chunk in model.stream("long"):
            pass

    task = asyncio.create_task(consume())
    await asyncio.to_thread(slow_emulator.wait_until, lambda: _streaming(slow_emulator))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.to_thread(slow_emulator.wait_until, lambda: _finished(slow_emulator))
    assert slow_emulator.predictions[-1].cancelled
    assert await model("still works")


def test_a_timeout_cancels_on_the_server(
    make_model: MakeModel, slow_emulator: LMStudioEmulator
) -> None:
    slow_emulator.script(TEXT_MODEL, [LONG])
    with pytest.raises(LMStudioTimeoutError):
        make_model(TEXT_MODEL, timeout=0.2)("long")
    slow_emulator.wait_until(lambda: _finished(slow_emulator))
    assert slow_emulator.predictions[-1].cancelled
    slow_emulator.script(TEXT_MODEL, [LONG])
    with pytest.raises(LMStudioTimeoutError):
        make_model(TEXT_MODEL)("long", timeout=0.2)
    slow_emulator.wait_until(lambda: _finished(slow_emulator))
    assert slow_emulator.predictions[-1].cancelled


SCRIPT = textwrap.dedent(
    """
    import sys
    import lmstudio as lms
    from outlines_lmstudio import from_lmstudio

    def stream(model):
        for index, _chunk in enumerate(model.stream(sys.argv[3])):
            if index == 0:
                print("STARTED", flush=True)

    def generate(model):
        print("STARTED", flush=True)
        model(sys.argv[3])

    with lms.Client(sys.argv[1]) as client:
        model = from_lmstudio(client, sys.argv[2])
        try:
            {"stream": stream, "generate": generate}[sys.argv[4]](model)
        except KeyboardInterrupt:
            print("INTERRUPTED", flush=True)
            sys.exit(130)
    print("FINISHED", flush=True)
    """
)


@pytest.mark.parametrize("call", ["stream", "generate"])
def test_ctrl_c_in_a_sync_call_cancels_on_the_server(
    slow_emulator: LMStudioEmulator, call: str
) -> None:
    slow_emulator.script(TEXT_MODEL, [LONG])
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, slow_emulator.api_host, TEXT_MODEL, "long", call],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "STARTED"
        slow_emulator.wait_until(lambda: _streaming(slow_emulator))
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    finally:
        process.kill()
    assert "INTERRUPTED" in out, err
    assert process.returncode == 130
    slow_emulator.wait_until(lambda: _finished(slow_emulator))
    prediction = slow_emulator.predictions[-1]
    assert prediction.cancelled
    assert len(prediction.fragments) < 400
