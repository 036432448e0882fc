"""Fixtures: the real lmstudio SDK talking to the emulator over loopback."""

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from outlines_lmstudio.testing import LMStudioEmulator

from .fronts import Fronts

MakeModel = Callable[..., Any]

TEXT_MODEL = "qwen2.5-7b-instruct"
VISION_MODEL = "qwen2-vl-2b-instruct"


@pytest.fixture
def emulator(lmstudio_emulator: LMStudioEmulator) -> LMStudioEmulator:
    return lmstudio_emulator


@pytest.fixture
def slow_emulator(emulator: LMStudioEmulator, monkeypatch: pytest.MonkeyPatch) -> LMStudioEmulator:
    """The emulator with a per-token latency, so a cancel can arrive mid-stream."""
    monkeypatch.setattr(emulator, "token_latency", 0.005)
    return emulator


@pytest.fixture(params=["sync", "async"])
def fronts(request: pytest.FixtureRequest, emulator: LMStudioEmulator) -> Iterator[Fronts]:
    """Each end-to-end test that takes this runs once per front."""
    made = Fronts(request.param, emulator.api_host)
    yield made
    made.close()


@pytest.fixture
def make_model(fronts: Fronts) -> MakeModel:
    """``make_model(key, **options)``: a model on this front's shared client, driven as sync."""
    client = fronts.client()
    return lambda *args, **options: fronts.model(client, *args, **options)
