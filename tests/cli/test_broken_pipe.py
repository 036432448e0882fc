"""A reader that goes away (``| head``): every command stops quietly with status 141."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from outlines_lmstudio.testing import LMStudioEmulator

from .helpers import PERSON_SCHEMA, TEXT, cli_env, script_path

pytestmark = pytest.mark.timeout(40)


def read_then_close(
    emulator: LMStudioEmulator, tmp_path: Path, args: list[str], stdin: str = ""
) -> tuple[int, str]:
    """Run the command with its output piped, read 10 bytes, close the pipe (as ``head -c 10``)."""
    process = subprocess.Popen(
        [*script_path(), "--host", emulator.api_host, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        env=cli_env(),
        bufsize=0,  # read no more than asked: the rest stays in the pipe
    )
    stdin_pipe, out, err_pipe = process.stdin, process.stdout, process.stderr
    assert stdin_pipe is not None
    assert out is not None
    assert err_pipe is not None
    try:
        stdin_pipe.write(stdin.encode())
        stdin_pipe.close()
        assert out.read(10)
        out.close()
        err = err_pipe.read().decode()
        err_pipe.close()
        return process.wait(timeout=30), err
    finally:
        process.kill()
        process.wait()


@pytest.mark.parametrize("command", ["generate", "complete"])
def test_a_closed_stream_stops_a_streamed_reply_quietly_and_cancels_it(
    emulator: LMStudioEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, command: str
) -> None:
    """``complete --stream`` reads its reply by another path than ``generate --stream``
    (`stream_text`): found by mutation testing, its cancel on leaving early was unchecked."""
    monkeypatch.setattr(emulator, "token_latency", 0.01)
    emulator.script(TEXT, ["line\n" * 400])
    code, err = read_then_close(emulator, tmp_path, [command, "-m", TEXT, "--stream", "Go"])
    assert (code, err) == (141, "")
    emulator.wait_until(lambda: emulator.predictions[-1].cancelled)  # the server stops too
    assert len(emulator.predictions[-1].fragments) < 400


@pytest.mark.parametrize(
    ("args", "stdin"),
    [
        (["embed", *"abcdefghijklmnop"], ""),  # one print, far over a pipe's buffer
        (["chat", "-m", TEXT], "Hello\n" * 50),  # rich's console
        (["extract", "--schema", "s.json", "--input", "in.jsonl", "--output", "-"], ""),
    ],
    ids=["embed", "chat", "extract"],
)
def test_a_closed_stream_is_status_141_without_a_message(
    emulator: LMStudioEmulator, tmp_path: Path, args: list[str], stdin: str
) -> None:
    (tmp_path / "s.json").write_text(json.dumps(PERSON_SCHEMA))
    items = (json.dumps({"id": i, "prompt": "Who?"}) for i in range(3000))
    (tmp_path / "in.jsonl").write_text("\n".join(items))
    code, err = read_then_close(emulator, tmp_path, args, stdin)
    assert code == 141, err
    # Quiet: extract's progress drew its last frame on stderr (found by a probe).
    assert err == ""
