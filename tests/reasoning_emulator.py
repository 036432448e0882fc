"""An emulator serving the default and the reasoning models, shared by the reasoning tests.

Import both fixtures into a test module; the test then asks for ``emu``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from outlines_lmstudio.testing import LMStudioEmulator, default_models, reasoning_models

__all__ = ["fresh_reasoning_emulator", "reasoning_emulator"]


@pytest.fixture(scope="module", name="reasoning_emulator")
def reasoning_emulator() -> Iterator[LMStudioEmulator]:
    """One emulator per test module, with the drift guard on."""
    with LMStudioEmulator([*default_models(), *reasoning_models()], validate_frames=True) as emu:
        yield emu


@pytest.fixture(name="emu")
def fresh_reasoning_emulator(reasoning_emulator: LMStudioEmulator) -> Iterator[LMStudioEmulator]:
    """That emulator, reset; the test fails if a frame broke the SDK's wire schemas."""
    reasoning_emulator.reset()
    yield reasoning_emulator
    assert reasoning_emulator.protocol_violations == []
