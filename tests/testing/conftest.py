"""Fixtures for the emulator's own tests: the real SDK over loopback."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import lmstudio as lms
import pytest
import pytest_asyncio
from lmstudio.async_api import AsyncLLM

from outlines_lmstudio.testing import LMStudioEmulator

if TYPE_CHECKING:
    from websockets.sync.client import ClientConnection

TEXT = "qwen2.5-7b-instruct"
VISION = "qwen2-vl-2b-instruct"
MLX = "llama-3.2-1b-instruct-mlx"
EMBED = "text-embedding-nomic-embed-text-v1.5"
UNLOADED = "gemma-3-1b-it"
MakeEmulator = Callable[..., LMStudioEmulator]
PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"
    b"\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\xcf\xc0\x00\x00\x03\x01\x01\x00\xc9\xfe\x92\xef"
    b"\x00\x00\x00\x00IEND\xaeB`\x82"
)


@pytest.fixture
def emu(lmstudio_emulator: LMStudioEmulator) -> LMStudioEmulator:
    """The plugin's shared emulator, reset, with the drift guard on."""
    return lmstudio_emulator


@pytest.fixture
def client(emu: LMStudioEmulator) -> Iterator[lms.Client]:
    with lms.Client(emu.api_host) as sync_client:
        yield sync_client


@pytest_asyncio.fixture
async def aclient(emu: LMStudioEmulator) -> AsyncIterator[lms.AsyncClient]:
    async with lms.AsyncClient(emu.api_host) as async_client:
        yield async_client


@pytest.fixture
def make_emulator() -> Iterator[MakeEmulator]:
    """Start dedicated emulators (drift guard on); stop them and check the guard after."""
    started: list[LMStudioEmulator] = []

    def make(**kwargs: Any) -> LMStudioEmulator:
        kwargs.setdefault("validate_frames", True)
        emulator = LMStudioEmulator(**kwargs).start()
        started.append(emulator)
        return emulator

    yield make
    for emulator in started:
        emulator.stop()
    for emulator in started:
        assert emulator.protocol_violations == []


@pytest.fixture
def sync_timeout() -> Iterator[Callable[[float], None]]:
    """Lower the SDK's sync timeout for a test, then restore it."""
    previous = lms.get_sync_api_timeout()
    yield lms.set_sync_api_timeout
    lms.set_sync_api_timeout(previous)


async def cancel_when_received(emulator: LMStudioEmulator, model: AsyncLLM, prompt: str) -> str:
    """Start a prediction, cancel it once the emulator has it; return its stop reason.

    The stream must end within a second of the cancel.
    """
    stream = await model.respond_stream(prompt)

    async def drain() -> str:
        async for _fragment in stream:
            pass
        return stream.result().stats.stop_reason

    drained = asyncio.create_task(drain())
    await emulator.await_until(lambda: prompt in (p.last_user_text for p in emulator.predictions))
    await stream.cancel()
    return await asyncio.wait_for(drained, timeout=1)


@contextmanager
def raw_socket(emulator: LMStudioEmulator, namespace: str) -> Iterator[ClientConnection]:
    """Open an authenticated websocket to ``namespace`` without the SDK (for raw frames)."""
    from websockets.sync.client import connect

    with connect(f"ws://{emulator.api_host}/{namespace}") as ws:
        ws.send(
            json.dumps(
                {"authVersion": 1, "clientIdentifier": str(uuid.uuid4()), "clientPasskey": "pk"}
            )
        )
        assert json.loads(ws.recv(timeout=5)) == {"success": True}
        yield ws


def raw_rpc(ws: ClientConnection, endpoint: str, call_id: int, parameter: Any = None) -> Any:
    """Send one ``rpcCall`` on a raw socket and return the next frame received."""
    call: dict[str, Any] = {"type": "rpcCall", "endpoint": endpoint, "callId": call_id}
    if parameter is not None:
        call["parameter"] = parameter
    ws.send(json.dumps(call))
    return json.loads(ws.recv(timeout=5))
