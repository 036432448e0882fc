"""The main job, ``examples/extract.py`` (what ``bash scripts/demo`` runs), as a user runs it."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from outlines_lmstudio.testing import EmulatedModel, LMStudioEmulator, embedded_available

from .other_server import serving_html

DEMO = Path(__file__).parents[2] / "examples" / "extract.py"


def run_demo(lmstudio_host: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LMSTUDIO_HOST": lmstudio_host}
    return subprocess.run(
        [sys.executable, str(DEMO), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.mark.parametrize(
    "host",
    [
        # found by a probe: a traceback from httpx (InvalidURL, UnsupportedProtocol)
        "localhost:abc",
        ":1234",
        "[::1",
        # found by a probe: a traceback (UnicodeError from the resolver)
        "192.168..1:1234",
        # found by a probe: "not answering as LM Studio", then the embedded model
        "localhost:99999",
        "localhost:1234/v1",
        # found by a probe (of the CLI, which read it the same): connected unencrypted
        "https://localhost:1234",
    ],
)
def test_a_malformed_lmstudio_host_is_refused_before_anything_runs(host: str) -> None:
    result = run_demo(host)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert f"LMSTUDIO_HOST={host!r} is not HOST:PORT" in result.stderr
    assert "e.g. localhost:1234" in result.stderr
    assert result.stdout == ""


def test_lmstudio_host_is_taken_as_the_cli_takes_it(lmstudio_emulator: LMStudioEmulator) -> None:
    """``http://127.0.0.1:1234`` (as LM Studio shows its address) was "not answering"."""
    result = run_demo(f" http://{lmstudio_emulator.api_host}/ ")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(
        f"Running against LM Studio at {lmstudio_emulator.api_host} (LMSTUDIO_HOST)\n"
    )


def test_another_server_at_lmstudio_host_is_not_lm_studio(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by a probe (of the CLI): the SDK's probe raised JSONDecodeError, a traceback.
    The demo says so and goes on to its other backends (not run here: the lookup alone)."""
    spec = importlib.util.spec_from_file_location("demo_extract", DEMO)
    assert spec is not None
    assert spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, demo)  # its dataclasses look it up
    spec.loader.exec_module(demo)
    with serving_html() as port:
        monkeypatch.setenv("LMSTUDIO_HOST", f"127.0.0.1:{port}")
        assert demo._lmstudio() is None
    assert "is not answering as LM Studio" in capsys.readouterr().err


def test_lmstudio_without_a_loaded_model_is_said_once_with_what_to_do() -> None:
    """Found by a probe: the same "no model loaded ... pass model_name to from_lmstudio"
    came once per example (seven times), never naming the demo's LMSTUDIO_MODEL."""
    with LMStudioEmulator([EmulatedModel("only-model", loaded=False)]) as emulator:
        result = run_demo(emulator.api_host)
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert output.count("no model loaded") == 1, output
    assert "LMSTUDIO_MODEL=KEY" in result.stderr


def test_a_reader_that_went_away_stops_the_demo_quietly() -> None:
    # Found by a probe: `bash scripts/demo | head -1` ended in a BrokenPipeError traceback
    # (status 1). The pipe's read end is closed before the demo writes, as once `head` is done.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, str(DEMO), "--emulator"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 141
    assert result.stderr == ""


def test_an_embedded_model_its_cache_cannot_hold_falls_back_to_the_emulator(
    tmp_path: Path,
) -> None:
    """Found by a probe: with the cache unusable, the README's main job ended in two chained
    tracebacks, though it is to fall back to the synthetic emulator."""
    if not embedded_available():
        pytest.skip("the local extra is not installed: there is no embedded model to fail")
    home = tmp_path / "home"
    home.write_text("")  # a file: no cache can be made under it
    with socket.socket() as closed:  # a port nothing listens on: no LM Studio
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    env = {**os.environ, "LMSTUDIO_HOST": f"127.0.0.1:{port}", "HOME": str(home)}
    result = subprocess.run(
        [sys.executable, str(DEMO)], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "The embedded model cannot be used:" in result.stderr
    assert "the bundled LM Studio emulator's synthetic engine" in result.stdout
    assert "the embedded model cannot be used (" in result.stdout
