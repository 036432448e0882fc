"""``outlines-lmstudio emulator`` and ``python -m outlines_lmstudio.testing``, as users run them.

Run as real subprocesses (measured by coverage through ``patch = ["subprocess"]``).
"""

from __future__ import annotations

import codecs
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import lmstudio as lms
import pytest

from outlines_lmstudio._install import install_command
from outlines_lmstudio.cli._emulator import load_models

from .helpers import TEXT, UNLOADED, cli_env, script_path


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*script_path(), *args], capture_output=True, text=True, env=cli_env(), timeout=timeout
    )


def test_a_models_file_serves_those_models(tmp_path: Path) -> None:
    models = tmp_path / "models.json"
    models.write_text(json.dumps({"models": [{"key": "my-model", "vision": True}]}), "utf-8")
    command = [sys.executable, "-m", "outlines_lmstudio.testing", "--port", "0"]
    with subprocess.Popen(
        [*command, "--models", str(models)], stdout=subprocess.PIPE, text=True, env=cli_env()
    ) as child:
        try:
            assert child.stdout is not None
            line = child.stdout.readline()
            assert line.startswith("LM Studio emulator listening on 127.0.0.1:")
            with lms.Client(line.rsplit(" ", 1)[1].strip()) as client:
                assert [m.model_key for m in client.llm.list_downloaded()] == ["my-model"]
            child.send_signal(signal.SIGTERM)  # a service manager's stop
            assert child.wait(timeout=15) == 0
            assert child.stdout.read() == "LM Studio emulator stopped\n"
        finally:
            child.kill()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        # said "Expecting ',' delimiter: line 1 column 6 (char 5)", naming no file
        ("[1, 2", "is not valid JSON (line 1, column 6: Expecting ',' delimiter)"),
        (b'[{"key": "caf\xe9"}]', "is not UTF-8 text (the byte 0xe9"),
        ('{"not_models": []}', "expected a JSON list of models"),
        ('["my-model"]', "each model must be a JSON object"),
        # found by a probe: "EmulatedModel.__init__() got an unexpected keyword argument"
        ('[{"key": "m", "colour": "red"}]', "model 1 ('m'): unknown field 'colour'; the fields"),
        # found by a probe: a traceback (RecursionError), "a bug in outlines-lmstudio"
        ("[" * 3000 + "]" * 3000, "is nested too deeply to be a models file"),
        # found by a probe: taken, the last value winning
        ('[{"key": "m", "vision": true, "vision": false}]', "'vision' is written twice"),
        # found by a probe: "'NoneType' object is not iterable", naming no field
        ('[{"key": "m", "aliases": null}]', "aliases must be a sequence of names, not None"),
        ('[{"key": " "}]', "key must be a non-empty string"),  # blank, as an alias
        # found by a probe: the catalogue's message alone, without the prefix or the file
        ('[{"key": "a"}, {"key": "b", "aliases": ["a"]}]', "models 1 and 2 both answer to 'a'"),
        # found by a probe: LM Studio's runtime message, without the prefix or the file
        (
            '[{"key": "a", "identifier": "main"}, {"key": "b", "identifier": "main"}]',
            "models 1 and 2 are both loaded under the identifier 'main'",
        ),
        # found by a probe: taken as the key
        ('[{"key": "m", "identifier": ""}]', "identifier must be a non-empty string or None"),
        # found by a probe: served, then `models` failed with "unexpected ValidationError"
        ('[{"key": "m", "size_bytes": "4 GB"}]', "size_bytes must be a whole number of bytes"),
        # found by a probe: "Cannot read the models file: No such file or directory.",
        # naming neither file (the models file had been read)
        (
            '[{"key": "m", "gguf": "absent.gguf"}]',
            "absent.gguf': No such file or directory",
        ),
    ],
)
def test_a_bad_models_file_is_refused_in_one_line(
    tmp_path: Path, content: str | bytes, problem: str
) -> None:
    models = tmp_path / "models.json"
    models.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    result = run("emulator", "--models", str(models))
    assert result.returncode == 2
    assert result.stderr.startswith(
        ("outlines-lmstudio: error: Bad models file: ", "outlines-lmstudio: error: Cannot read")
    )
    assert problem in result.stderr
    assert str(models) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_missing_models_file_is_refused(tmp_path: Path) -> None:
    result = run("emulator", "--models", str(tmp_path / "absent.json"))
    assert result.returncode == 2
    assert result.stderr.startswith("outlines-lmstudio: error: Cannot read the models file")
    assert "absent.json" in result.stderr
    assert "Errno" not in result.stderr  # was "[Errno 2] No such file or directory: '...'"


def test_a_port_in_use_is_refused() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("emulator", "--port", str(port))
    assert result.returncode == 2
    assert result.stderr == (
        f"outlines-lmstudio: error: Cannot listen on 127.0.0.1:{port}: the port is in use "
        "(another program listens there: LM Studio, another emulator...): pick another "
        "--port, or leave it out for a free one\n"
    )  # was websockets' "[Errno 98] error while attempting to bind on address (...)"


def test_a_models_file_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    # Found by a probe: a file saved by a Windows editor was "not valid JSON (line 1,
    # column 1: Unexpected UTF-8 BOM ...)", where the CLI's other files take the mark.
    models = tmp_path / "models.json"
    models.write_bytes(codecs.BOM_UTF8 + b'[{"key": "a"}]')
    assert [m.key for m in load_models(models)] == ["a"]
    models.write_bytes(codecs.BOM_UTF8 + b'[{"key": "caf\xe9"}]')
    with pytest.raises(ValueError, match="the byte 0xe9 at byte 17"):
        load_models(models)


def test_load_models_reads_a_list(tmp_path: Path) -> None:
    models = tmp_path / "models.json"
    models.write_text('[{"key": "a"}, {"key": "b", "vision": true}]', "utf-8")
    loaded = load_models(models)
    assert [(m.key, m.vision) for m in loaded] == [("a", False), ("b", True)]


def test_python_dash_m_cli_is_the_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "outlines_lmstudio.cli", "--help"],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=30,
        check=False,
    )
    assert result.returncode == 0
    assert "usage: outlines-lmstudio" in result.stdout


@pytest.mark.parametrize("latency", ["-1", "nan", "inf"])
def test_emulator_bad_token_latency_is_a_usage_error(latency: str) -> None:
    result = run("emulator", "--token-latency", latency)
    assert result.returncode == 2
    # "0 or more" for inf said nothing of the limit (found by a probe)
    assert result.stderr == (
        f"outlines-lmstudio: error: --token-latency must be 0 to 60 seconds, "
        f"got {float(latency):g}: it is the pause before each fragment of every reply (0.1 is "
        "a slow model).\n"
    )


@pytest.mark.parametrize("latency", ["1e308", "60.5"])
@pytest.mark.parametrize("module", [False, True])
def test_emulator_token_latency_above_a_minute_is_refused(latency: str, module: bool) -> None:
    # Was served: every prediction then waited 1e308 s before its first fragment.
    command = [sys.executable, "-m", "outlines_lmstudio.testing"] if module else script_path()
    prefix = "" if module else "outlines-lmstudio: error: "
    result = subprocess.run(
        [*command, *([] if module else ["emulator"]), "--token-latency", latency, "--port", "0"],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"{prefix}--token-latency must be 0 to 60 seconds, got {float(latency):g}: it is "
        "the pause before each fragment of every reply (0.1 is a slow model).\n"
    )


def test_emulator_module_bad_token_latency_names_the_option() -> None:
    command = [sys.executable, "-m", "outlines_lmstudio.testing", "--token-latency", "nan"]
    result = subprocess.run(
        command, capture_output=True, text=True, env=cli_env(), timeout=30, check=False
    )
    assert result.returncode == 2
    assert result.stderr == (
        "--token-latency must be 0 to 60 seconds, got nan: it is the pause before each "
        "fragment of every reply (0.1 is a slow model).\n"
    )


def test_a_host_outside_loopback_is_refused_in_the_commands_terms() -> None:
    """Found by a probe: the refusal named the Python argument (``host=``,
    ``allow_remote=True``) before the option to pass."""
    command = [*script_path(), "emulator", "--host", "0.0.0.0"]
    result = subprocess.run(
        command, capture_output=True, text=True, env=cli_env(), timeout=30, check=False
    )
    assert result.returncode == 2
    assert result.stderr.startswith("outlines-lmstudio: error: --host '0.0.0.0' is not a loopback")
    assert result.stderr.endswith(" Pass --allow-remote to bind it anyway.\n")
    assert "allow_remote" not in result.stderr


def test_emulator_remote_warning_is_one_line() -> None:
    command = [*script_path(), "emulator", "--host", "0.0.0.0", "--allow-remote"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env()
    ) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline().startswith("LM Studio emulator listening on 0.0.0.0:")
        finally:
            child.kill()  # the warning came before the listening line
        _, stderr = child.communicate(timeout=15)
    assert stderr.startswith("outlines-lmstudio: warning: The LM Studio emulator binds '0.0.0.0'")
    assert stderr.count("\n") == 1, stderr


@pytest.mark.parametrize(
    ("command", "prefix"),
    [
        ([*script_path(), "emulator"], "outlines-lmstudio: warning: "),
        ([sys.executable, "-m", "outlines_lmstudio.testing"], "warning: "),
    ],
)
def test_allow_remote_is_a_notice_that_serves_under_warnings_as_errors(
    command: list[str], prefix: str
) -> None:
    # Found by a tester: under PYTHONWARNINGS=error (or -W error) the CLI said "unexpected
    # EmulatorExposedWarning ... (a bug in outlines-lmstudio)", status 1, and the module
    # printed a traceback; the user had asked for it with --allow-remote.
    with subprocess.Popen(
        [*command, "--host", "0.0.0.0", "--allow-remote"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(PYTHONWARNINGS="error"),
    ) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline().startswith("LM Studio emulator listening on 0.0.0.0:")
        finally:
            child.terminate()
        _, stderr = child.communicate(timeout=15)
    assert child.returncode == 0, stderr
    assert stderr == (
        f"{prefix}The LM Studio emulator binds '0.0.0.0': any machine that can reach it can "
        "use it (it has no access control).\n"
    )


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        (["--host", "127.0.0.1:41000"], "outlines-lmstudio emulator --host ADDRESS --port N"),
        (["--emulator"], "--emulator does not apply to 'emulator'"),
        (["--local"], "--local does not apply to 'emulator'"),
    ],
)
def test_connection_options_before_emulator_are_refused(options: list[str], needle: str) -> None:
    # They were accepted and ignored: a synthetic emulator on a random port was served.
    result = run(*options, "emulator", "--port", "0", timeout=10)
    assert result.returncode == 2, result.stdout
    assert result.stdout == ""
    assert result.stderr.startswith("outlines-lmstudio: error: ")
    assert needle in result.stderr
    assert result.stderr.count("\n") == 1


# A standard output that pauses after each flush: the host line has reached the reader,
# and the command has not yet gone on (what a busy machine does for a moment).
_SLOW_STDOUT = """
import sys, time
class SlowStdout:
    def __init__(self, stream): self.stream = stream
    def write(self, text): return self.stream.write(text)
    def flush(self): self.stream.flush(); time.sleep(0.5)
    def fileno(self): return self.stream.fileno()
sys.stdout = SlowStdout(sys.stdout)
"""


@pytest.mark.parametrize(
    "code",
    [
        "from outlines_lmstudio.testing._command import main; sys.exit(main(['--port', '0']))",
        "from outlines_lmstudio.cli import main; sys.exit(main(['emulator', '--port', '0']))",
    ],
    ids=["module", "cli"],
)
def test_a_stop_as_soon_as_the_host_line_is_read_is_a_clean_stop(code: str) -> None:
    # Found by a probe: SIGTERM sent as soon as the host line was read (a harness whose
    # test ends at once) hit the moment between that line and the serving loop, where
    # the handler's KeyboardInterrupt was not caught: status -2 and a KeyboardInterrupt
    # traceback (`python -m`, 1 in 4 runs on a quiet machine), or 130 "interrupted" (CLI).
    with subprocess.Popen(
        [sys.executable, "-c", _SLOW_STDOUT + code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    ) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline().startswith("LM Studio emulator listening on ")
            child.send_signal(signal.SIGTERM)
            out, err = child.communicate(timeout=15)
        finally:
            child.kill()
    assert (child.returncode, err) == (0, "")
    assert out == "LM Studio emulator stopped\n"


def _serving(module: bool) -> subprocess.Popen[str]:
    """Start ``python -m outlines_lmstudio.testing`` or ``outlines-lmstudio emulator``."""
    command = (
        [sys.executable, "-m", "outlines_lmstudio.testing"]
        if module
        else [*script_path(), "emulator"]
    )
    return subprocess.Popen(
        [*command, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )


@pytest.mark.parametrize("module", [False, True])
def test_a_reader_that_closed_the_pipe_after_the_host_line_leaves_a_clean_stop(
    module: bool,
) -> None:
    # Found by a probe: a harness reads the host line, closes its pipe and later stops
    # the emulator. `python -m outlines_lmstudio.testing` then ended with a traceback
    # (BrokenPipeError writing "stopped") and status 1, `outlines-lmstudio emulator`
    # with status 141, though the emulator had stopped as asked.
    with _serving(module) as child:
        try:
            assert child.stdout is not None
            assert child.stderr is not None
            assert child.stdout.readline().startswith("LM Studio emulator listening on ")
            child.stdout.close()
            child.send_signal(signal.SIGTERM)
            assert child.wait(timeout=15) == 0
            assert child.stderr.read() == ""
        finally:
            child.kill()


def test_a_models_file_with_a_gguf_model_without_llama_cpp_says_what_to_install(
    tmp_path: Path,
) -> None:
    # Found by a probe: python -m outlines_lmstudio.testing ended with an ImportError
    # traceback (the --gguf option said it in one line).
    models = tmp_path / "models.json"
    gguf = tmp_path / "m.gguf"  # there: a missing file is said first
    gguf.write_bytes(b"GGUF")
    models.write_text(json.dumps([{"key": "m", "gguf": str(gguf)}]), "utf-8")
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'llama_cpp':\n"
        "            raise ModuleNotFoundError(name, name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from outlines_lmstudio.testing._command import main\n"
        f"sys.exit(main(['--models', {str(models)!r}]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), timeout=30
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"Bad models file: {models}, model 1 ")
    assert install_command("local") in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_gguf_option_that_names_a_directory_or_no_file_says_so(tmp_path: Path) -> None:
    # Found by a probe: a directory (LM Studio keeps each model in one) was "llama.cpp
    # cannot read this file as a GGUF model", and a missing file "[Errno 2] No such
    # file or directory: '...'".
    result = run("emulator", "--gguf", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr == (
        f"outlines-lmstudio: error: Cannot serve the GGUF file: {tmp_path}: a directory, "
        "not a GGUF file: give the .gguf file in it.\n"
    )
    result = run("emulator", "--gguf", str(tmp_path / "absent.gguf"))
    assert result.returncode == 2
    assert result.stderr == (
        "outlines-lmstudio: error: Cannot serve the GGUF file: "
        f"{tmp_path / 'absent.gguf'}: No such file or directory.\n"
    )


@pytest.mark.usefixtures("sigint_default")
@pytest.mark.parametrize("module", [False, True])
def test_ctrl_c_while_the_models_file_is_read_is_one_line(tmp_path: Path, module: bool) -> None:
    # Found by a probe: Ctrl-C before the emulator served (a models file or a GGUF file
    # still being read) ended `python -m outlines_lmstudio.testing` with a
    # KeyboardInterrupt traceback and status -2; the CLI said "interrupted." (130).
    # A named pipe holds the read until the signal has come. Repeated: a Ctrl-C that
    # landed between the pipe's open() and its read() used to be lost, and the command
    # hung (CI caught it once in ~20 runs; 9 of 60 in a tight loop).
    command = (
        [sys.executable, "-m", "outlines_lmstudio.testing"]
        if module
        else [*script_path(), "emulator"]
    )
    prefix = "" if module else "outlines-lmstudio: error: "
    for attempt in range(5):
        fifo = tmp_path / f"models-{attempt}.json"
        os.mkfifo(fifo)
        with subprocess.Popen(
            [*command, "--models", str(fifo)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(),
        ) as child:
            try:
                deadline = time.monotonic() + 30
                while True:  # a writer can open the pipe once the command opened it to read
                    try:
                        writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                        break
                    except OSError as exc:
                        if exc.errno != errno.ENXIO or time.monotonic() > deadline:
                            raise
                        time.sleep(0.001)
                child.send_signal(signal.SIGINT)
                out, err = child.communicate(timeout=15)
                os.close(writer)
            finally:
                child.kill()
        assert (attempt, child.returncode, out, err) == (
            attempt,
            130,
            "",
            f"{prefix}interrupted.\n",
        )


@pytest.mark.usefixtures("sigint_default")
def test_a_ctrl_c_delivered_to_another_thread_stops_a_blocked_models_read() -> None:
    # The race above made deterministic: the kernel hands the signal to a thread other
    # than the one blocked in read(). Read in the main thread (the old way), the read
    # never came back to Python's handler and the command hung; `_interruptible`
    # raises the KeyboardInterrupt while the read is still blocked.
    from outlines_lmstudio.testing._command import _interruptible

    readable, writable = os.pipe()
    finished = threading.Event()

    def ctrl_c_elsewhere() -> None:
        time.sleep(0.2)
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)
        finished.wait(10)
        os.write(writable, b"x")  # frees the blocked read (and a lost Ctrl-C's test)

    helper = threading.Thread(target=ctrl_c_elsewhere, daemon=True)
    helper.start()
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            _interruptible(lambda path: os.read(readable, 1), Path("models.json"))
        assert time.monotonic() - started < 5
    finally:
        finished.set()
        helper.join()
        time.sleep(0.1)  # the reading thread takes its byte before the pipe closes
        os.close(readable)
        os.close(writable)


def test_interruptible_hands_back_the_result_or_the_error_of_the_read() -> None:
    from outlines_lmstudio.testing._command import _interruptible

    assert _interruptible(lambda path: path.name, Path("a/models.json")) == "models.json"

    def absent(path: Path) -> str:
        raise FileNotFoundError(2, "No such file or directory", str(path))

    with pytest.raises(FileNotFoundError) as info:
        _interruptible(absent, Path("absent.json"))
    assert info.value.filename == "absent.json"


def test_a_gguf_file_named_in_capitals_is_keyed_without_its_suffix(tmp_path: Path) -> None:
    from outlines_lmstudio.cli._emulator import gguf_models
    from outlines_lmstudio.testing import embedded_available, embedded_model

    if not embedded_available():
        pytest.skip("the embedded GGUF model is not installed")
    source = Path(embedded_model().gguf or "")
    for name in ("Tiny.GGUF", "tiny.Gguf", "plain.gguf", ".gguf"):
        (tmp_path / name).symlink_to(source)
    keys = [
        m.key
        for m in gguf_models(
            [tmp_path / n for n in ("Tiny.GGUF", "tiny.Gguf", "plain.gguf", ".gguf")]
        )
    ]
    # Before: "Tiny.GGUF" kept its suffix in the key (only ".gguf" was removed).
    assert keys == ["Tiny", "tiny", "plain", ".gguf"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ["--load-latency", "-1"],
            "--load-latency must be 0 to 60 seconds, got -1: it is the time every model "
            "load takes.",
        ),
        (
            ["--prompt-latency", "nan"],
            "--prompt-latency must be 0 to 60 seconds, got nan: it is the prompt processing "
            "before every reply.",
        ),
        (
            ["--load-latency", "61"],
            "--load-latency must be 0 to 60 seconds, got 61: it is the time every model "
            "load takes.",
        ),
        (
            ["--prompt-latency", "1e9"],
            "--prompt-latency must be 0 to 60 seconds, got 1e+09: it is the prompt "
            "processing before every reply.",
        ),
    ],
)
def test_a_bad_load_or_prompt_latency_is_refused_in_one_line(
    options: list[str], message: str
) -> None:
    result = run("emulator", *options, "--port", "0")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"outlines-lmstudio: error: {message}\n"


@pytest.mark.parametrize(
    ("slots", "message"),
    [
        ("0", "0 slots would serve no prediction: use 1 or more"),
        ("-2", "-2 slots would serve no prediction: use 1 or more"),
        ("two", "'two' is not a whole number of slots: use 1 or more"),
        ("1.5", "'1.5' is not a whole number of slots: use 1 or more"),
    ],
)
def test_bad_slots_are_refused(slots: str, message: str) -> None:
    result = run("emulator", "--slots", slots, "--port", "0")
    assert (result.returncode, result.stdout) == (2, "")
    assert f"argument --slots: {message}" in result.stderr


def _serve(*options: str) -> tuple[subprocess.Popen[str], str]:
    child = subprocess.Popen(
        [*script_path(), "emulator", "--port", "0", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    if not line.startswith("LM Studio emulator listening on "):
        child.kill()
        _, err = child.communicate(timeout=20)
        pytest.fail(f"the emulator did not start: {line}{err}")
    return child, line.rsplit(" ", 1)[1].strip()


@pytest.mark.timeout(60)
def test_a_load_latency_makes_a_load_cancellable_from_the_command() -> None:
    # Before: no --load-latency, so a load over the command finished before the client's
    # cancel (the TypeScript SDK's signal) arrived, and the model stayed loaded.
    from websockets.sync.client import connect

    child, host = _serve("--load-latency", "3")
    try:
        with connect(f"ws://{host}/llm") as ws:
            ws.send(json.dumps({"authVersion": 1, "clientIdentifier": "c", "clientPasskey": "p"}))
            assert json.loads(ws.recv(timeout=5))["success"] is True
            create = {
                "modelKey": UNLOADED,
                "identifier": "aborted",
                "loadConfigStack": {"layers": []},
            }
            ws.send(
                json.dumps(
                    {
                        "type": "channelCreate",
                        "endpoint": "loadModel",
                        "channelId": 0,
                        "creationParameter": create,
                    }
                )
            )
            assert json.loads(ws.recv(timeout=5))["message"]["type"] == "resolved"
            cancel = {"type": "channelSend", "channelId": 0, "message": {"type": "cancel"}}
            ws.send(json.dumps(cancel))
            ended = json.loads(ws.recv(timeout=10))
            assert ended["type"] == "channelError"
            assert ended["error"]["title"] == "Model loading was cancelled."
        with lms.Client(host) as client:
            loaded = [m.identifier for m in client.llm.list_loaded()]
            assert TEXT in loaded
            assert "aborted" not in loaded
    finally:
        child.send_signal(signal.SIGINT)
        child.communicate(timeout=20)


@pytest.mark.timeout(60)
def test_slots_and_prompt_latency_reach_the_emulator() -> None:
    child, host = _serve("--slots", "1", "--prompt-latency", "0.6")
    try:
        with lms.Client(host) as client:
            model = client.llm.model(TEXT)
            progress: list[list[float]] = [[], []]
            start = time.monotonic()
            threads = [
                threading.Thread(
                    target=model.respond,
                    args=("hi",),
                    kwargs={"config": {"maxTokens": 1}, "on_prompt_processing_progress": p.append},
                )
                for p in progress
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=30)
            # One slot: the second prompt is processed after the first (0.6 s each).
            assert time.monotonic() - start >= 1.2
            assert all(len(p) >= 3 and p[-1] == 1.0 for p in progress)
    finally:
        child.send_signal(signal.SIGINT)
        child.communicate(timeout=20)


@pytest.mark.parametrize("module", [False, True])
def test_a_burst_of_stop_signals_is_one_clean_stop(module: bool) -> None:
    # Found by a probe: GNU timeout sends SIGTERM to the emulator and again to its process
    # group; the second one, landing while the emulator stopped, cut the stop short: status
    # 130 and "interrupted." (143 with two SIGTERMs 30 ms apart).
    with _serving(module) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline().startswith("LM Studio emulator listening on ")
            for kind in (signal.SIGTERM, signal.SIGTERM, signal.SIGINT, signal.SIGTERM):
                child.send_signal(kind)
                time.sleep(0.01)
            out, err = child.communicate(timeout=15)
        finally:
            child.kill()
    assert (child.returncode, err) == (0, "")
    assert out == "LM Studio emulator stopped\n"


def _rss_mb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) // 1024


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads RSS from /proc")
def test_the_command_keeps_no_bytes_of_clients_gone() -> None:
    # Found by a probe: serving until Ctrl-C, it kept every upload's bytes in its records
    # after the clients left (10 clients x 8 MB: RSS 46 -> 270 MB).
    blob = os.urandom(8 * 1024 * 1024)
    with _serving(module=False) as child:
        try:
            assert child.stdout is not None
            host = child.stdout.readline().rsplit(" ", 1)[-1].strip()
            with lms.Client(host) as client:  # the first one warms the emulator up
                client.files.prepare_image(blob, name="f0.bin")
            time.sleep(0.3)
            before = _rss_mb(child.pid)
            for i in range(1, 7):
                with lms.Client(host) as client:
                    client.files.prepare_image(blob, name=f"f{i}.bin")
            time.sleep(0.3)
            grown = _rss_mb(child.pid) - before
            assert grown < 40, grown  # before: about 110 MB more
        finally:
            child.send_signal(signal.SIGTERM)
            child.wait(timeout=15)


@pytest.mark.parametrize("module", [False, True])
def test_a_hangup_is_a_clean_stop(module: bool) -> None:
    """Found by a probe: SIGHUP (a closed terminal, a dropped ssh session) ended it with
    status 129, skipping the stop: the uploads' temporary folder was left behind."""
    with _serving(module) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline().startswith("LM Studio emulator listening on ")
            child.send_signal(signal.SIGHUP)
            out, err = child.communicate(timeout=15)
        finally:
            child.kill()
    assert (child.returncode, err) == (0, "")
    assert out == "LM Studio emulator stopped\n"


def test_the_exposure_notice_waits_for_the_bind() -> None:
    """Found by a probe: the notice said it binds an address it then failed to bind."""
    result = run("emulator", "--host", "192.0.2.1", "--allow-remote")  # TEST-NET-1: not ours
    assert result.returncode == 2
    assert result.stderr.startswith("outlines-lmstudio: error: Cannot listen on 192.0.2.1:0")
    assert "warning" not in result.stderr
    # Not a port in use (found by mutation testing: every error was said to be one).
    assert "port is in use" not in result.stderr
    assert "assign requested address" in result.stderr  # the system's own words


def test_a_gguf_file_named_as_another_model_says_why(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gguf")
    from tests.unit.grammar._llama_harness import write_byte_vocab

    clash = tmp_path / "qwen2.5-7b-instruct.gguf"  # a key of the default catalogue
    write_byte_vocab(clash)
    result = run("emulator", "--gguf", str(clash))
    assert result.returncode == 2
    assert "duplicate model keys" in result.stderr
    assert "a --gguf file's model key is its file name" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("cors", [False, True])
def test_cors_lets_web_pages_connect_to_the_command(cors: bool) -> None:
    """A browser's Origin header is refused unless ``--cors`` (found by a probe)."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect
    from websockets.typing import Origin

    child, host = _serve(*(["--cors"] if cors else []))
    try:
        try:
            with connect(f"ws://{host}/llm", origin=Origin("https://page.example")):
                status = 101
        except InvalidStatus as exc:
            status = exc.response.status_code
        assert status == (101 if cors else 403)
    finally:
        child.send_signal(signal.SIGINT)
        child.communicate(timeout=20)
