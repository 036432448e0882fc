"""Helpers shared by the CLI tests."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import lmstudio as lms

from outlines_lmstudio.testing import Fault, LMStudioEmulator

TEXT = "qwen2.5-7b-instruct"
VISION = "qwen2-vl-2b-instruct"
MLX = "llama-3.2-1b-instruct-mlx"
EMBED = "text-embedding-nomic-embed-text-v1.5"
UNLOADED = "gemma-3-1b-it"

PERSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer"},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}


def text_commands(prompt: str) -> list[list[str]]:
    """``generate`` and ``complete`` on the text model, each whole and streamed."""
    return [
        [command, "-m", TEXT, *stream, prompt]
        for command in ("generate", "complete")
        for stream in ([], ["--stream"])
    ]


def script_path() -> list[str]:
    """The installed console script (``python -m`` if it is not installed next to python)."""
    script = Path(sys.executable).with_name("outlines-lmstudio")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "outlines_lmstudio.cli"]


def cli_env(**extra: str) -> dict[str, str]:
    """An environment without a configured LM Studio host, wide and colourless."""
    env = {k: v for k, v in os.environ.items() if k not in ("LMSTUDIO_HOST", "NO_COLOR")}
    env.update({"COLUMNS": "200", "TERM": "dumb", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def run_with_closed(
    redirect: str, host: str, cwd: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """Run the CLI with a standard stream closed by the shell (``redirect``: ``<&-``, ``2>&-``)."""
    return subprocess.run(
        ["sh", "-c", f'exec "$@" {redirect}', "sh", *script_path(), "--host", host, *args],
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=cwd,
        timeout=30,
        check=False,
    )


def png(path: Path, size: tuple[int, int], color: str = "red") -> Path:
    from PIL import Image

    Image.new("RGB", size, color).save(path, format="PNG")
    return path


def broken_png(path: Path) -> Path:
    """A PNG whose first data chunk says it is 10 bytes shorter than it is.

    Pillow opens it, then fails its decode with ``SyntaxError`` ("broken PNG file"), which
    is not an ``OSError``: found by a fuzzing probe of the CLI.
    """
    png(path, (64, 48), "orange")
    data = path.read_bytes()
    length = int.from_bytes(data[33:37], "big")  # the chunk after the 33-byte header
    path.write_bytes(data[:33] + (length - 10).to_bytes(4, "big") + data[37:])
    return path


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    """The failure is reported in one line on stderr, without a traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], result.stderr


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def roles_and_texts(messages: list[dict[str, object]]) -> list[tuple[str, str]]:
    """The role and text of each message of a recorded prediction."""
    result = []
    for message in messages:
        content = message["content"]
        assert isinstance(content, list)
        text = "".join(p.get("text", "") for p in content if p.get("type") == "text")
        result.append((str(message["role"]), text))
    return result


def spawn_on_a_terminal(host: str, *args: str, cwd: Path | None = None) -> Any:
    """Start ``outlines-lmstudio --host HOST ARGS...`` on a 50x200 pseudo-terminal (pexpect)."""
    import pexpect

    program, *rest = script_path()
    return pexpect.spawn(
        program,
        [*rest, "--host", host, *args],
        env=cli_env(),
        cwd=None if cwd is None else str(cwd),
        encoding="utf-8",
        timeout=15,
        dimensions=(50, 200),
    )


def hang_up(child: Any, seconds: float = 20) -> tuple[int | None, int | None]:
    """Close the terminal's side of ``child``'s pseudo-terminal and wait for it to end.

    That is what a closed terminal window or a dropped SSH session does: the kernel sends
    SIGHUP, and nothing more can be written to the terminal. Returns the exit status and
    the signal that ended it, as pexpect gives them (``None`` for the one that does not
    apply; both if it is still running after ``seconds``).
    """
    child.ptyproc.fileobj.close()
    deadline = time.monotonic() + seconds
    while child.ptyproc.isalive() and time.monotonic() < deadline:
        time.sleep(0.05)
    return child.ptyproc.exitstatus, child.ptyproc.signalstatus


def run_on_a_terminal(
    command: list[str],
    cwd: Path,
    env: dict[str, str],
    stdin: str | None = None,
    stderr: Path | None = None,
) -> str:
    """Run ``command`` on a pseudo-terminal (pexpect) of ``env``'s size; return what it drew.

    ``stdin``: what is typed (and echoed); nothing by default. ``stderr``: a file that takes
    standard error instead of the terminal.
    """
    import pexpect

    if stderr is not None:
        command = ["sh", "-c", 'exec "$@" 2>"$0"', str(stderr), *command]
    child = pexpect.spawn(
        command[0],
        command[1:],
        env=env,
        cwd=str(cwd),
        timeout=30,
        dimensions=(int(env.get("LINES", "24")), int(env.get("COLUMNS", "80"))),
    )
    try:
        if stdin is not None:
            child.send(stdin)
        child.expect(pexpect.EOF)
        drawn: bytes = child.before
    finally:
        child.close(force=True)
    return drawn.decode("utf-8", "replace")


class StallPastTheSdkLimit:
    """The sync SDK's limit on each wait at 1 s, and the process stalled past it, once.

    The first request to ``endpoint`` is answered 3.5 s late (a prediction's third
    fragment), and the GIL is held (through ``ctypes.PyDLL``, which keeps it for the whole
    C call) for 2.5 s from 0.3 s after that request came: the SDK's wait runs out in the
    stall, with nothing in the socket, as under a Ctrl-Z longer than the SDK's 60 s. A
    context manager; leaving restores the limit.
    """

    def __init__(self, emulator: LMStudioEmulator, endpoint: str = "predict") -> None:
        self._emulator = emulator
        self._endpoint = endpoint
        emulator.token_latency = 0.01
        after = 2 if endpoint == "predict" else 0
        emulator.add_fault(Fault(endpoint, "delay", after_fragments=after, seconds=3.5))
        self.held = 0.0

    def __enter__(self) -> StallPastTheSdkLimit:
        self._limit = lms.get_sync_api_timeout()
        lms.set_sync_api_timeout(1.0)
        self._thread = threading.Thread(target=self._hold, daemon=True)
        self._thread.start()
        return self

    def _hold(self) -> None:
        usleep = ctypes.PyDLL(None).usleep
        usleep.argtypes = [ctypes.c_uint]
        emulator, endpoint = self._emulator, self._endpoint
        emulator.wait_until(lambda: any(r.endpoint == endpoint for r in emulator.requests), 20)
        time.sleep(0.3)
        began = time.monotonic()
        usleep(2_500_000)
        self.held = time.monotonic() - began

    def __exit__(self, *exc: object) -> None:
        self._thread.join(30)
        lms.set_sync_api_timeout(self._limit)
