"""``complete`` (raw completion) and ``embed`` (JSON vectors)."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
from pathlib import Path

import lmstudio as lms
import pexpect
import pytest

from outlines_lmstudio.testing import Fault, LMStudioEmulator

from .conftest import MainInProcess, RunCli
from .helpers import EMBED, TEXT, assert_one_line_error, cli_env, script_path, text_commands

pytestmark = pytest.mark.timeout(30)


def test_complete_sends_a_raw_prompt(run_cli: RunCli, emulator: LMStudioEmulator) -> None:
    emulator.script(TEXT, [" a princess lived in a tower. THE END and more"])
    result = run_cli(
        "complete",
        "-m",
        TEXT,
        "--max-tokens",
        "40",
        "--stop",
        "THE END",
        "--stream",
        "Once upon a time",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == " a princess lived in a tower. \n"
    (prediction,) = emulator.predictions
    assert prediction.config["llm.prediction.stopStrings"] == ["THE END"]
    # A completion is one raw prompt, not a chat with a template applied by us.
    assert [m["role"] for m in prediction.messages] == ["user"]
    assert "Once upon a time" in json.dumps(prediction.messages)


def test_complete_errors(
    run_cli: RunCli, main_in_process: MainInProcess, emulator: LMStudioEmulator
) -> None:
    unknown = main_in_process("complete", "-m", "no-such-model", "Hi")
    assert unknown.returncode == 1
    assert_one_line_error(unknown, "no model 'no-such-model'")
    bad_tokens = main_in_process("complete", "--max-tokens", "0", "Hi")
    assert bad_tokens.returncode == 2
    assert_one_line_error(bad_tokens, "--max-tokens must be at least 1")
    empty_stop = main_in_process("complete", "--stop", "END", "--stop", "", "Hi")
    assert empty_stop.returncode == 2  # it was sent, and stopped nothing (session 26)
    assert_one_line_error(empty_stop, "--stop is empty")
    assert emulator.predictions == []


def test_embed_prints_one_vector_per_text(
    run_cli: RunCli,
    main_in_process: MainInProcess,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = run_cli("embed", "first text", "second text")
    assert result.returncode == 0, result.stderr
    vectors = json.loads(result.stdout)
    assert len(vectors) == 2
    assert all(len(v) == 768 for v in vectors)
    assert all(isinstance(x, float) for v in vectors for x in v)
    assert vectors[0] != vectors[1]
    monkeypatch.setattr(sys, "stdin", io.StringIO("first text\n"))
    again = main_in_process("embed", "-m", EMBED, "-")
    assert json.loads(again.stdout) == vectors[:1]
    # A byte order mark (a file saved on Windows) is not part of the text: same vector.
    with_bom = run_cli("embed", "-", stdin="\ufefffirst text\n")
    assert with_bom.returncode == 0, with_bom.stderr
    assert json.loads(with_bom.stdout) == vectors[:1]


def test_texts_piped_with_windows_line_ends_are_embedded_without_carriage_returns(
    run_cli: RunCli, emulator: LMStudioEmulator
) -> None:
    r"""Found by mutation testing: nothing checked that standard input's ``\r\n`` become
    ``\n`` for `embed -`: the last line of a file saved on Windows was embedded as
    ``"line two\r"``."""
    result = run_cli("embed", "-", stdin="line one\r\nline two\r\n")
    assert result.returncode == 0, result.stderr
    sent = [r.parameter["inputString"] for r in emulator.requests if r.endpoint == "embedString"]
    assert sent == ["line one", "line two"]


def test_embed_errors(run_cli: RunCli, main_in_process: MainInProcess) -> None:
    unknown = main_in_process("embed", "-m", "no-such-embedder", "hello")
    assert unknown.returncode == 1
    assert_one_line_error(unknown, "no embedding model 'no-such-embedder'")
    not_embedding = main_in_process("embed", "-m", TEXT, "hello")
    assert not_embedding.returncode == 2
    assert_one_line_error(not_embedding, "not an embedding model", "--capability embedding")
    empty = main_in_process("embed", " ")
    assert empty.returncode == 2
    assert_one_line_error(empty, "must be non-empty")


def test_embed_with_an_llm_s_identifier_says_it_is_not_an_embedding_model(
    main_in_process: MainInProcess, emulator: LMStudioEmulator
) -> None:
    """Found by a probe: an LLM's key said so, and its identifier said no such model exists."""
    emulator.load(TEXT, "main")
    result = main_in_process("embed", "-m", "main", "hello")
    assert result.returncode == 2
    assert_one_line_error(result, "'main' is not an embedding model", "--capability embedding")


def test_embed_under_local_says_it_has_no_embedding_model() -> None:
    """Found by a probe: it said to pass --model and list embedding models, of which --local
    has none, so every hint led to an empty list."""
    result = subprocess.run(
        [*script_path(), "--local", "embed", "hello"],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert_one_line_error(result, "--local serves the embedded real model only", "--emulator")


@pytest.mark.parametrize(
    ("args", "stdin", "needle"),
    [
        (["-"], "a\n\nb\n", "line 2 of standard input is blank"),
        (["-"], "a\n\n", "line 2 of standard input is blank"),
        (["-"], "", "standard input) has no text"),
        (["a", "-", "b"], "", "standard input) has no text"),
        (["-", "-"], "a\nb\n", "may be given only once"),
        (["a", ""], "", "TEXT 2 is blank"),
    ],
)
def test_embed_never_drops_a_text(
    run_cli: RunCli, emulator: LMStudioEmulator, args: list[str], stdin: str, needle: str
) -> None:
    result = run_cli("embed", *args, stdin=stdin)
    assert result.returncode == 2
    assert_one_line_error(result, needle)
    assert result.stdout == ""
    assert emulator.requests == []


@pytest.mark.usefixtures("sigint_default")
def test_ctrl_c_during_complete_cancels_on_the_server(
    emulator: LMStudioEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(emulator, "token_latency", 0.01)
    emulator.script(TEXT, ["word " * 400])
    process = subprocess.Popen(
        [
            *script_path(),
            "--host",
            emulator.api_host,
            "complete",
            "Once upon",
            "-m",
            TEXT,
            "--stream",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=cli_env(),
    )
    try:
        emulator.wait_until(
            lambda: bool(emulator.predictions) and len(emulator.predictions[-1].fragments) > 3,
            timeout=20,
        )
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 130, err
    emulator.wait_until(lambda: emulator.predictions[-1].done)
    assert emulator.predictions[-1].cancelled
    assert len(emulator.predictions[-1].fragments) < 400


@pytest.mark.parametrize(
    ("endpoint", "args"),
    [
        ("predict", ["complete", "-m", TEXT, "Once"]),
        ("embedString", ["embed", "hello"]),
        ("predict", ["generate", "-m", TEXT, "Once"]),
        ("predict", ["generate", "-m", TEXT, "--choice", "a,b", "Once"]),
    ],
)
def test_a_server_that_stops_answering_is_named_in_the_error(
    main_in_process: MainInProcess,
    emulator: LMStudioEmulator,
    endpoint: str,
    args: list[str],
) -> None:
    # The SDK's own timeout has no message: it was "LM Studio failed the request: ".
    emulator.add_fault(Fault(endpoint, "hang"))
    limit = lms.get_sync_api_timeout()
    lms.set_sync_api_timeout(1)
    try:
        result = main_in_process(*args)
    finally:
        lms.set_sync_api_timeout(limit)
    assert result.returncode == 1
    assert_one_line_error(result, "LM Studio sent nothing for 1 s", "Run the command again")
    assert "set_sync_api_timeout" not in result.stderr  # Python advice: no use at a shell


@pytest.mark.parametrize("args", text_commands("Once"))
def test_a_connection_lost_mid_reply_is_status_3(
    main_in_process: MainInProcess, emulator: LMStudioEmulator, args: list[str]
) -> None:
    emulator.add_fault(Fault("predict", "drop", after_fragments=2, times=10))
    result = main_in_process(*args)
    assert result.returncode == 3, result.stderr
    assert_one_line_error(result, "Lost the connection to LM Studio", "Run the command again")
    assert "The next call reconnects" not in result.stderr  # there is no next call


@pytest.mark.usefixtures("sigint_default")
@pytest.mark.parametrize("command", ["generate", "complete"])
def test_ctrl_c_after_streamed_text_reports_on_a_line_of_its_own(
    emulator: LMStudioEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, command: str
) -> None:
    # On a terminal the message was glued to the text shown so far:
    # "word word wordoutlines-lmstudio: error: interrupted."
    monkeypatch.setattr(emulator, "token_latency", 0.05)
    emulator.script(TEXT, ["word " * 200])
    program, *args = script_path()
    child = pexpect.spawn(
        program,
        [*args, "--host", emulator.api_host, command, "-m", TEXT, "--stream", "Go on"],
        env=cli_env(),
        cwd=str(tmp_path),
        encoding="utf-8",
        timeout=15,
        dimensions=(50, 200),
    )
    try:
        child.expect("word word word")
        child.sendintr()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 130
    shown = str(child.before).split("\r\n")
    assert "outlines-lmstudio: error: interrupted." in shown, shown
