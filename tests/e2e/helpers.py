"""Small helpers shared by the end-to-end tests."""

import asyncio
import io
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from outlines.inputs import Image
from PIL import Image as PILImage

from outlines_lmstudio.testing import LMStudioEmulator

T = TypeVar("T")


def eventually(predicate: object, seconds: float = 20.0) -> bool:
    """Poll a condition (a liveness check with a generous bound, not a timing assertion)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return True
        time.sleep(0.05)
    return False


def predicted_counts(emulator: LMStudioEmulator) -> list[int]:
    """The predicted token counts LM Studio reported for its replies, in order."""
    return [
        f.data["message"]["stats"]["predictedTokensCount"]
        for f in emulator.trace
        if f.direction == "out" and f.data.get("message", {}).get("type") == "success"
    ]


def png_image(color: str = "red", size: tuple[int, int] = (8, 8)) -> Image:
    buffer = io.BytesIO()
    PILImage.new("RGB", size, color).save(buffer, format="PNG")
    return Image(PILImage.open(io.BytesIO(buffer.getvalue())))


def endpoint_count(emulator: LMStudioEmulator, endpoint: str) -> int:
    return sum(1 for r in emulator.requests if r.endpoint == endpoint)


def message_texts(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(role, joined text) of each wire message."""
    result = []
    for message in messages:
        text = "".join(p.get("text", "") for p in message["content"] if p.get("type") == "text")
        result.append((message["role"], text))
    return result


def run_script(script: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a Python script (``python -c``) to its end; its output as text, not checked."""
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def interrupted(
    script: str, args: list[str], ready: Callable[[], object], signum: int = signal.SIGINT
) -> tuple[int, str, str]:
    """Run a Python script, Ctrl-C it once it printed STARTED and ``ready()`` returned.

    ``signum``: another signal to send instead (``SIGTERM``). Returns the exit status, the
    standard output and the standard error.
    """
    process = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "STARTED"
        ready()
        process.send_signal(signum)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    return process.returncode, out, err


async def turns_until_sent(emulator: LMStudioEmulator, call: Awaitable[T]) -> tuple[T, int]:
    """Await ``call`` while a ticker that sleeps 1 ms counts its turns, until the emulator
    gets the call's first frame: how free the event loop was while the call got ready.

    Start ``call`` here (a coroutine not yet awaited); the model's handle should be cached,
    so that its first frame is the one that matters.
    """
    await asyncio.sleep(0.05)  # the last frames of what came before are in
    frames = len(emulator.trace)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while len(emulator.trace) == frames:
            ticks += 1
            await asyncio.sleep(0.001)

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0)
    result = await call
    await ticker
    return result, ticks
