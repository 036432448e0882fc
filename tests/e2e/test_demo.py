"""The main job, ``examples/extract.py`` (what ``bash scripts/demo`` runs), as a user runs it."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from outlines_lmstudio._discovery import DEFAULT_PORTS, PROBE_SECONDS
from outlines_lmstudio._install import install_command
from outlines_lmstudio.testing import EmulatedModel, LMStudioEmulator, embedded_available

from ..private_network import run_in_private_network
from .other_server import (
    name_has_no_address,
    serving_fake_lmstudio,
    serving_html,
    serving_stream,
)

DEMO = Path(__file__).parents[2] / "examples" / "extract.py"
SCENARIO = Path(__file__).with_name("discovery_scenario.py")


def run_demo(
    lmstudio_host: str, *args: str, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "LMSTUDIO_HOST": lmstudio_host, **env}
    return subprocess.run(
        [sys.executable, str(DEMO), *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=timeout,
    )


def load_demo(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import the demo as a module, to run its backend lookup alone."""
    spec = importlib.util.spec_from_file_location("demo_extract", DEMO)
    assert spec is not None
    assert spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, demo)  # its dataclasses look it up
    spec.loader.exec_module(demo)
    return demo


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


def test_a_host_with_a_path_is_refused_for_its_path_not_its_port() -> None:
    """Found by a probe: ``http://127.0.0.1:1234/v1`` (LM Studio's OpenAI-compatible
    address) was refused as "not HOST:PORT with a port from 1 to 65535"."""
    result = run_demo("http://127.0.0.1:1234/v1")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "is not HOST:PORT alone: it has more ('/v1')" in result.stderr
    assert "port from 1 to 65535" not in result.stderr


def test_an_ipv6_host_without_brackets_is_told_to_use_them() -> None:
    """Found by a probe: ``::1:1234`` was "not HOST:PORT with a port from 1 to 65535", though
    its port is fine; the CLI says to write the address in brackets."""
    result = run_demo("::1:1234")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "is not HOST:PORT: an IPv6 address goes in brackets, e.g. [::1]:1234" in (result.stderr)
    assert "port from 1 to 65535" not in result.stderr
    assert result.stderr.count("e.g.") == 1  # found by a probe: "e.g. [::1]:1234, e.g. loc..."


def test_lmstudio_host_is_taken_as_the_cli_takes_it(lmstudio_emulator: LMStudioEmulator) -> None:
    """``http://127.0.0.1:1234`` (as LM Studio shows its address) was "not answering"."""
    result = run_demo(f" http://{lmstudio_emulator.api_host}/ ")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(
        f"Running against LM Studio at {lmstudio_emulator.api_host} (LMSTUDIO_HOST)\n"
    )


def test_an_lmstudio_host_where_nothing_listens_is_said_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by a probe: "LMSTUDIO_HOST=127.0.0.1:1 is not answering as LM Studio." said
    no reason, where another server's answer is named."""
    demo = load_demo(monkeypatch)
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    monkeypatch.setenv("LMSTUDIO_HOST", f"127.0.0.1:{port}")
    assert demo._lmstudio() is None
    said = capsys.readouterr().err
    assert f"LMSTUDIO_HOST=127.0.0.1:{port} is not answering as LM Studio: nothing answers" in said


def test_an_lmstudio_host_whose_name_does_not_resolve_is_said_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by a probe: a misspelt name was "nothing answers there (no server, or none
    reached)"; where the resolver cannot say (no DNS to ask), nothing is claimed."""
    demo = load_demo(monkeypatch)
    monkeypatch.setenv("LMSTUDIO_HOST", "lmstudio-host.invalid:1234")
    assert demo._lmstudio() is None
    said = capsys.readouterr().err
    if name_has_no_address("lmstudio-host.invalid"):
        assert "the host name 'lmstudio-host.invalid' does not resolve" in said
    else:
        assert "does not resolve" not in said


def test_another_server_at_lmstudio_host_is_not_lm_studio(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by a probe (of the CLI): the SDK's probe raised JSONDecodeError, a traceback.
    The demo says so and goes on to its other backends (not run here: the lookup alone)."""
    demo = load_demo(monkeypatch)
    with serving_html() as port:
        monkeypatch.setenv("LMSTUDIO_HOST", f"127.0.0.1:{port}")
        assert demo._lmstudio() is None
    assert "is not answering as LM Studio" in capsys.readouterr().err
    # Found by a probe: a web server's 404 was said nothing of (the SDK's reading: no server).
    with serving_html(status=404) as port:
        monkeypatch.setenv("LMSTUDIO_HOST", f"127.0.0.1:{port}")
        assert demo._lmstudio() is None
    said = capsys.readouterr().err
    assert "is not answering as LM Studio: it answers HTTP 404 to the greeting's URL" in said


def test_lmstudio_without_a_loaded_model_is_said_once_with_what_to_do() -> None:
    """Found by a probe: the same "no model loaded ... pass model_name to from_lmstudio"
    came once per example (seven times), never naming the demo's LMSTUDIO_MODEL."""
    with LMStudioEmulator([EmulatedModel("only-model", loaded=False)]) as emulator:
        result = run_demo(emulator.api_host)
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert output.count("no LLM loaded") == 1, output
    assert "LMSTUDIO_MODEL=KEY" in result.stderr


def test_lmstudio_with_only_an_embedding_model_loaded_says_no_llm_is() -> None:
    """Found by a probe: "LM Studio has no model loaded" while LM Studio showed one."""
    models = [
        EmulatedModel("only-model", loaded=False),
        EmulatedModel("embedder", type="embedding"),
    ]
    with LMStudioEmulator(models) as emulator:
        result = run_demo(emulator.api_host)
    assert result.returncode == 1
    assert "LM Studio has no LLM loaded" in result.stderr
    assert "no model loaded" not in result.stdout + result.stderr


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
    result = _demo_without_lmstudio({**os.environ, "HOME": str(home)})
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "The embedded model cannot be used:" in result.stderr
    assert "the bundled LM Studio emulator's synthetic engine" in result.stdout
    assert "the embedded model cannot be used (" in result.stdout


def _demo_without_lmstudio(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the demo with ``env``, LMSTUDIO_HOST a port nothing listens on: no LM Studio."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    return subprocess.run(
        [sys.executable, str(DEMO)],
        capture_output=True,
        text=True,
        env={**env, "LMSTUDIO_HOST": f"127.0.0.1:{port}"},
        timeout=120,
    )


def _unloadable_llama_cpp(tmp_path: Path) -> dict[str, str]:
    """An environment whose ``llama_cpp`` raises as llama-cpp-python does when its library
    does not load (a missing libgomp, a wheel built on another machine)."""
    package = tmp_path / "broken" / "llama_cpp"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "raise RuntimeError(\"Failed to load shared library 'libllama.so': file too short\")\n"
    )
    paths = [str(tmp_path / "broken"), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def test_an_unloadable_llama_cpp_falls_back_to_the_emulator(tmp_path: Path) -> None:
    """Found by a probe: llama-cpp-python installed, its library not loading, the README's
    main job ended in a traceback, though it is to fall back to the synthetic emulator."""
    if not embedded_available():
        pytest.skip("the local extra is not installed: there is no embedded model to fail")
    env = _unloadable_llama_cpp(tmp_path)
    result = _demo_without_lmstudio(env)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "its llama.cpp library cannot be loaded (Failed to load" in result.stderr
    assert "the bundled LM Studio emulator's synthetic engine" in result.stdout
    local = subprocess.run(
        [sys.executable, "-m", "outlines_lmstudio", "--local", "generate", "Say hi"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert local.returncode == 1, local.stderr
    assert "Traceback" not in local.stderr
    assert "a bug" not in local.stderr  # it was "unexpected RuntimeError (a bug in ...)"
    assert "--local: llama-cpp-python is installed, but its llama.cpp library" in local.stderr
    assert "pip install --force-reinstall --no-deps --no-cache-dir llama-cpp-python" in local.stderr


@pytest.mark.timeout(30)
def test_a_server_that_streams_at_lmstudio_host_is_given_up_in_time(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by a probe: the SDK's probe waited for good on a server that streams."""
    demo = load_demo(monkeypatch)
    with serving_stream() as port:
        monkeypatch.setenv("LMSTUDIO_HOST", f"127.0.0.1:{port}")
        started = time.monotonic()
        assert demo._lmstudio() is None
        assert time.monotonic() - started < PROBE_SECONDS + 1.5
    assert "is not answering as LM Studio: it answers without end" in capsys.readouterr().err


def demo_scenario(kind: str) -> dict[str, Any]:
    first, second = DEFAULT_PORTS[0], DEFAULT_PORTS[1]
    done = run_in_private_network(
        [sys.executable, str(SCENARIO), "demo", kind, str(first), str(second)], timeout=90
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("kind", "why"),
    [
        ("html", "it answers, but not with LM Studio's greeting"),
        ("silent", "it takes connections but sent no answer within 1 s"),
        ("stream", "it answers without end"),
    ],
)
def test_lm_studio_behind_another_server_on_the_first_default_port_is_used(
    kind: str, why: str
) -> None:
    """Found by a probe: the demo used the SDK's search, which stops at the first port where
    another server is; it said "no LM Studio reachable" and ran the embedded model (or, for
    a server that streams, waited for good). LM Studio takes a later default port then."""
    first, second = DEFAULT_PORTS[0], DEFAULT_PORTS[1]
    result = demo_scenario(kind)
    assert result["status"] == 0, result["stderr"]
    assert result["stdout"].startswith(
        f"Running against LM Studio at 127.0.0.1:{second} (found on a default local port, "
        "past the ports skipped above)\n"
    ), result["stdout"]
    assert f"Skipped 127.0.0.1:{first}, not LM Studio: {why}" in result["stderr"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("websocket", ["close", "silent"])
def test_a_server_that_only_greets_as_lm_studio_ends_the_demo_in_one_line(
    websocket: Any,
) -> None:
    """Found by a probe: LM Studio's greeting answered, then a websocket that closes ended
    the demo in a traceback, and one that never replies held it for good (the SDK's
    connect has no limit). The library's connect is bounded (connect_timeout, 10 s)."""
    with serving_fake_lmstudio(websocket) as port:
        result = run_demo(f"127.0.0.1:{port}", timeout=40)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    stopped = [line for line in result.stderr.splitlines() if line]
    assert len(stopped) == 1, result.stderr
    assert stopped[0].startswith("Stopped: "), result.stderr
    if websocket == "silent":
        assert "did not complete the connection" in stopped[0]


def test_an_unknown_model_is_said_once(lmstudio_emulator: LMStudioEmulator) -> None:
    """Found by a probe: the same error, 700 characters, came for each of the seven examples."""
    result = run_demo(lmstudio_emulator.api_host, LMSTUDIO_MODEL="no-such-model")
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert output.count("no model matching") == 1, output
    assert "Stopped: LM Studio has no model matching 'no-such-model'" in result.stderr


@pytest.mark.usefixtures("sigint_default")
def test_ctrl_c_ends_the_demo_in_one_line_with_status_130() -> None:
    """Found by a probe: a Ctrl-C printed a KeyboardInterrupt traceback (~24 lines)."""
    demo = subprocess.Popen(
        [sys.executable, str(DEMO), "--emulator"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert demo.stdout is not None
    for line in demo.stdout:  # the first example's result: the demo is under way
        if line.startswith("-> "):
            break
    demo.send_signal(signal.SIGINT)
    _, stderr = demo.communicate(timeout=30)
    assert demo.returncode == 130
    assert stderr == "extract.py: interrupted.\n"


def test_a_bare_install_without_the_emulator_says_so_in_one_line() -> None:
    """Found by a probe: on `pip install outlines-lmstudio` alone (no `testing` extra, so no
    websockets), the demo's fall back to the emulator ended in a traceback."""
    code = (
        "import importlib.util, runpy, sys\n"
        "_find = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda n, *a: None if n == 'websockets' else _find(n, *a)\n"
        f"sys.argv = [{str(DEMO)!r}, '--emulator']\n"
        f"runpy.run_path({str(DEMO)!r}, run_name='__main__')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr == (
        "asked for the emulator, and the bundled emulator cannot start: The LM Studio emulator "
        "needs 'websockets', which is not installed. Install it with: "
        f"{install_command('testing')}\n"
    )
