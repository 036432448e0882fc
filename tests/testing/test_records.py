"""Records, the frame trace and unknown endpoints."""

from __future__ import annotations

from collections.abc import Callable

import lmstudio as lms
import pytest

from outlines_lmstudio.testing import LMStudioEmulator

from .conftest import PNG, TEXT, MakeEmulator


def test_trace_and_format(emu: LMStudioEmulator, client: lms.Client) -> None:
    client.llm.model(TEXT).respond("hi")
    client.files.prepare_image(PNG * 10)
    frames = emu.trace
    assert frames[0].direction == "in"
    assert frames[0].data["authVersion"] == 1
    assert {f.direction for f in frames} == {"in", "out"}
    assert [f.time for f in frames] == sorted(f.time for f in frames)
    text = emu.format_trace(last=None)
    assert text.count("\n") == len(frames)
    assert "chars>" in text  # the base64 upload is abbreviated
    assert emu.format_trace(last=3).count("\n") == 3
    assert emu.format_trace(last=0).count("\n") == 0


def test_wait_until_times_out_with_the_trace(emu: LMStudioEmulator) -> None:
    with pytest.raises(TimeoutError, match="emulator trace"):
        emu.wait_until(lambda: False, timeout=0.05)


def test_unknown_endpoint_is_an_error_by_default(emu: LMStudioEmulator, client: lms.Client) -> None:
    with pytest.raises(lms.LMStudioServerError, match="Unknown endpoint"):
        client.repository.search_models("qwen")
    assert emu.requests[-1].endpoint == "searchModels"


def test_unknown_endpoint_warning_mode_is_faithful(
    make_emulator: MakeEmulator, sync_timeout: Callable[[float], None]
) -> None:
    emulator = make_emulator(unknown_endpoint="warning")
    sync_timeout(0.5)
    with lms.Client(emulator.api_host) as client, pytest.raises(lms.LMStudioTimeoutError):
        client.repository.search_models("qwen")
    assert any(
        f.data.get("type") == "communicationWarning" for f in emulator.trace if f.direction == "out"
    )
