"""Fixtures: the real lmstudio SDK talking to the emulator over loopback."""

from collections.abc import AsyncIterator, Iterator

import lmstudio as lms
import pytest
import pytest_asyncio

from outlines_lmstudio.testing import LMStudioEmulator

TEXT_MODEL = "qwen2.5-7b-instruct"
VISION_MODEL = "qwen2-vl-2b-instruct"


@pytest.fixture
def emulator(lmstudio_emulator: LMStudioEmulator) -> LMStudioEmulator:
    return lmstudio_emulator


@pytest.fixture
def client(emulator: LMStudioEmulator) -> Iterator[lms.Client]:
    with lms.Client(emulator.api_host) as sync_client:
        yield sync_client


@pytest_asyncio.fixture
async def async_client(emulator: LMStudioEmulator) -> AsyncIterator[lms.AsyncClient]:
    async with lms.AsyncClient(emulator.api_host) as entered:
        yield entered


@pytest.fixture
def slow_emulator(emulator: LMStudioEmulator, monkeypatch: pytest.MonkeyPatch) -> LMStudioEmulator:
    """The emulator with a per-token latency, so a cancel can arrive mid-stream."""
    monkeypatch.setattr(emulator, "token_latency", 0.005)
    return emulator
