"""``chat`` through a pseudo-terminal: streaming, history, images, commands and Ctrl-C."""

from __future__ import annotations

import io
import json
import os
import re
import select
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest
from PIL import Image

from outlines_lmstudio.testing import Fault, LMStudioEmulator

from .conftest import MainInProcess, RunCli
from .helpers import (
    TEXT,
    VISION,
    cli_env,
    hang_up,
    png,
    roles_and_texts,
    run_on_a_terminal,
    script_path,
)

pytestmark = pytest.mark.timeout(40)

PROMPT = "you> "
Spawn = Callable[..., Any]


@pytest.fixture
def spawn(emulator: LMStudioEmulator, tmp_path: Path, sigint_default: None) -> Iterator[Spawn]:
    """Start ``chat`` on a pseudo-terminal; Ctrl-C works in it however pytest was started."""
    children: list[pexpect.spawn] = []

    def start(*args: str, **env: str) -> pexpect.spawn:
        command = script_path()
        child = pexpect.spawn(
            command[0],
            [*command[1:], "--host", emulator.api_host, "chat", *args],
            env=cli_env(**env),
            cwd=str(tmp_path),
            encoding="utf-8",
            timeout=15,
            dimensions=(50, 200),
        )
        children.append(child)
        return child

    yield start
    for child in children:
        child.close(force=True)


def leave_with_ctrl_d(chat: pexpect.spawn) -> None:
    """Press Ctrl-D at the prompt until the session ends, as a user would.

    readline takes the terminal out of canonical mode only when it starts reading, after the
    prompt is printed. A Ctrl-D that comes before that is consumed by the terminal's line
    discipline as an end of input nobody is reading, and lost: sent at once after the prompt,
    6 in 15 were (CI, under load, once waited 15 s for the end)."""
    for _ in range(10):
        chat.sendeof()
        if chat.expect([pexpect.EOF, pexpect.TIMEOUT], timeout=1.5) == 0:
            return
    raise AssertionError(f"the chat did not end on Ctrl-D; it printed {chat.before!r}")


def test_conversation_with_images_clear_and_save(
    spawn: Spawn, emulator: LMStudioEmulator, tmp_path: Path
) -> None:
    png(tmp_path / "pic.png", (16, 16), "green")
    emulator.script(VISION, ["First answer.", "Second answer.", "Third answer."])
    chat = spawn("-m", VISION, "--system", "Be terse", "--max-tokens", "64")
    chat.expect("Chatting with qwen2-vl-2b-instruct")
    chat.expect(PROMPT)
    chat.sendline("Hello")
    chat.expect(f"{VISION}> First answer.")
    chat.expect(PROMPT)
    chat.sendline("/image pic.png")
    chat.expect(r"Attached pic\.png \(16x16\)")
    chat.sendline("/test-image red 3000x1500")
    chat.expect(r"Attached test-image red 3000x1500 \(2048x1024, downscaled from 3000x1500\)")
    chat.sendline("What are these?")
    chat.expect("Second answer.")
    chat.expect(PROMPT)

    first, second = emulator.predictions
    assert roles_and_texts(first.messages) == [("system", "Be terse"), ("user", "Hello")]
    assert roles_and_texts(second.messages) == [
        ("system", "Be terse"),
        ("user", "Hello"),
        ("assistant", "First answer."),
        ("user", "What are these?"),
    ]
    assert [Image.open(io.BytesIO(b)).size for b in second.images] == [(16, 16), (2048, 1024)]
    assert first.config["llm.prediction.maxPredictedTokens"] == {"checked": True, "value": 64}

    chat.sendline("/clear")
    chat.expect("Conversation cleared.")
    chat.sendline("Fresh start")
    chat.expect("Third answer.")
    chat.expect(PROMPT)
    assert roles_and_texts(emulator.predictions[2].messages) == [
        ("system", "Be terse"),
        ("user", "Fresh start"),
    ]
    assert emulator.predictions[2].images == []

    chat.sendline("/save conversation.json")
    chat.expect("Saved 3 messages to conversation.json")
    chat.sendline("/exit")
    chat.expect(pexpect.EOF)
    chat.close()
    assert chat.exitstatus == 0
    saved = json.loads((tmp_path / "conversation.json").read_text())
    assert saved["model"] == VISION
    assert [(m["role"], m["content"]) for m in saved["messages"]] == [
        ("system", "Be terse"),
        ("user", "Fresh start"),
        ("assistant", "Third answer."),
    ]


def test_a_copy_loaded_under_its_own_identifier_is_named_with_it(
    spawn: Spawn, emulator: LMStudioEmulator, tmp_path: Path
) -> None:
    """Found by a probe: after ``/model main`` the chat named the key alone, and so did
    ``/save``: with two copies of a model loaded, which one answered was not said."""
    emulator.load(TEXT, "main")
    chat = spawn("-m", VISION)
    chat.expect(PROMPT)
    chat.sendline("/model main")
    chat.expect(re.escape(f"Now chatting with {TEXT} (main)"))
    chat.sendline("hello")
    chat.expect(re.escape(f"{TEXT} (main)> "))
    chat.expect(PROMPT)
    chat.sendline("/save saved.json")
    chat.expect("Saved 2 messages")
    chat.sendline("/exit")
    chat.expect(pexpect.EOF)
    saved = json.loads((tmp_path / "saved.json").read_text())
    assert (saved["model"], saved["identifier"]) == (TEXT, "main")


def test_images_refused_without_vision_and_model_switch(
    spawn: Spawn, emulator: LMStudioEmulator, tmp_path: Path
) -> None:
    png(tmp_path / "pic.png", (8, 8))
    chat = spawn("-m", TEXT)
    chat.expect(PROMPT)
    chat.sendline("/image pic.png")
    chat.expect(f"{TEXT} does not accept images")
    chat.expect("nothing was attached")
    chat.sendline("/model no-such-model")
    chat.expect("has no model 'no-such-model'")
    chat.sendline("/image missing.png")  # still the text model: refused before reading
    chat.expect("does not accept images")
    chat.sendline("/model " + VISION)
    chat.expect(f"Now chatting with {VISION}")
    chat.sendline("/image missing.png")
    chat.expect("Cannot read image 'missing.png': no such file")
    chat.sendline("/test-image notacolour 8x8")
    chat.expect("Unknown colour 'notacolour'")
    chat.sendline("/frobnicate")
    chat.expect("Unknown command /frobnicate; /help lists the commands")
    chat.sendline("/help")
    chat.expect("/test-image COLOR WxH")
    chat.expect(PROMPT)
    assert emulator.predictions == []
    assert emulator.uploads == []

    emulator.add_fault(Fault("predict", "error", message="Model crashed"))
    chat.sendline("Hello?")
    chat.expect("Model crashed")
    chat.expect("not added to the history")
    chat.sendline("Hello again")
    chat.expect(f"{VISION}> ")
    chat.expect(PROMPT)
    assert roles_and_texts(emulator.predictions[-1].messages) == [("user", "Hello again")]
    leave_with_ctrl_d(chat)
    chat.close()
    assert chat.exitstatus == 0


def test_ctrl_c_stops_the_reply_on_the_server_and_keeps_the_session(
    spawn: Spawn, emulator: LMStudioEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(emulator, "token_latency", 0.05)
    emulator.script(TEXT, ["word " * 200, "I am still here."])
    chat = spawn("-m", TEXT)
    chat.expect(PROMPT)
    chat.sendline("Tell me a very long story")
    chat.expect("word word word")
    chat.sendintr()
    chat.expect(r"\[reply stopped\]")
    chat.expect(PROMPT)
    emulator.wait_until(lambda: emulator.predictions[0].cancelled, timeout=5)
    stopped = emulator.predictions[0]
    assert stopped.cancelled
    assert len(stopped.fragments) < 200

    monkeypatch.setattr(emulator, "token_latency", 0.0)
    chat.sendline("Are you there?")
    chat.expect("I am still here.")
    chat.expect(PROMPT)
    history = roles_and_texts(emulator.predictions[1].messages)
    assert [role for role, _ in history] == ["user", "assistant", "user"]
    assert history[1][1].startswith("word word word")  # the part shown stays in the history

    chat.sendintr()  # Ctrl-C at the prompt does not leave
    chat.expect("/exit")
    chat.sendline("/exit")
    chat.expect(pexpect.EOF)
    chat.close()
    assert chat.exitstatus == 0


BUSY_THREAD = """
import os
import threading
import time

def busy():  # a thread that keeps asking for the GIL, as the SDK's may after a reply
    while not os.path.exists(os.environ["BUSY_FROM"]):  # not while the chat starts
        time.sleep(0.01)
    while True:
        sum(range(1000))

threading.Thread(target=busy, daemon=True).start()
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_at_the_prompt_is_seen_at_once_while_another_thread_runs(
    spawn: Spawn, tmp_path: Path, signum: signal.Signals
) -> None:
    # Found by chat's Ctrl-C test (1 run in 30 hung): a Ctrl-C that landed while the main
    # thread waited for the GIL just before input() was noted but not handled, and input()
    # waited for a line. With a busy thread, 1 Ctrl-C in 6 sent as the prompt appeared was.
    site = tmp_path / "busy"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BUSY_THREAD, encoding="utf-8")
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    busy_from = tmp_path / "busy-from"
    chat = spawn("-m", TEXT, PYTHONPATH=path, BUSY_FROM=str(busy_from))
    chat.expect(PROMPT)
    busy_from.touch()
    chat.sendline("")  # a prompt drawn while the thread is busy
    chat.expect(PROMPT)
    if signum == signal.SIGTERM:  # a SIGTERM ends the chat: one, sent as the prompt shows
        chat.kill(signum)
        chat.expect("terminated \\(SIGTERM\\)", timeout=5)
        chat.expect(pexpect.EOF)
        chat.close()
        assert chat.exitstatus == 143
        return
    for _ in range(40):
        chat.sendintr()
        chat.expect(re.escape("(Ctrl-C: type /exit or press Ctrl-D to leave)"), timeout=5)
        chat.expect(PROMPT)
    leave_with_ctrl_d(chat)


_STOP_SIGNALS = pytest.mark.parametrize(
    ("sig", "status", "said"),
    [
        (signal.SIGTERM, 143, "terminated (SIGTERM)."),
        (signal.SIGHUP, 129, "hung up (SIGHUP: the terminal closed)."),
    ],
)
"""SIGTERM and SIGHUP end a chat: the status and the message of each."""


def _in_a_long_reply(
    spawn: Spawn, emulator: LMStudioEmulator, monkeypatch: pytest.MonkeyPatch
) -> Any:
    """A chat whose reply (200 words, 50 ms each) has begun on the terminal."""
    monkeypatch.setattr(emulator, "token_latency", 0.05)
    emulator.script(TEXT, ["word " * 200])
    chat = spawn("-m", TEXT)
    chat.expect(PROMPT)
    chat.sendline("Tell me a very long story")
    chat.expect("word word word")
    return chat


@_STOP_SIGNALS
def test_sigterm_during_a_reply_stops_it_on_the_server_and_ends_the_chat(
    spawn: Spawn,
    emulator: LMStudioEmulator,
    monkeypatch: pytest.MonkeyPatch,
    sig: signal.Signals,
    status: int,
    said: str,
) -> None:
    # SIGTERM (kill, timeout, a service manager) ended the process at once, status -15,
    # without a word, and the prediction went on on the server; SIGHUP (the terminal
    # closed, an SSH session dropped) likewise, with -1.
    chat = _in_a_long_reply(spawn, emulator, monkeypatch)
    chat.kill(sig)
    chat.expect("outlines-lmstudio: error: " + re.escape(said))
    chat.expect(pexpect.EOF)
    chat.close()
    assert (chat.exitstatus, chat.signalstatus) == (status, None)
    assert "Traceback" not in (chat.before or "")
    emulator.wait_until(lambda: emulator.predictions[0].done, timeout=5)
    assert emulator.predictions[0].cancelled
    assert len(emulator.predictions[0].fragments) < 200


def test_a_closed_terminal_stops_the_reply_on_the_server_and_ends_the_chat(
    spawn: Spawn, emulator: LMStudioEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The terminal closed during a reply (its window shut, an SSH session dropped): the
    kernel sends SIGHUP, and nothing more can be written to the terminal. The process
    ended at once, status -1, and the prediction went on on the server."""
    chat = _in_a_long_reply(spawn, emulator, monkeypatch)
    assert hang_up(chat) == (129, None)
    emulator.wait_until(lambda: emulator.predictions[0].done, timeout=5)
    assert emulator.predictions[0].cancelled
    assert len(emulator.predictions[0].fragments) < 200


@_STOP_SIGNALS
def test_sigterm_at_the_prompt_ends_the_chat(
    spawn: Spawn, sig: signal.Signals, status: int, said: str
) -> None:
    chat = spawn("-m", TEXT)
    chat.expect(PROMPT)
    chat.kill(sig)  # Ctrl-C there does not leave; SIGTERM and SIGHUP do
    chat.expect("outlines-lmstudio: error: " + re.escape(said))
    chat.expect(pexpect.EOF)
    chat.close()
    assert (chat.exitstatus, chat.signalstatus) == (status, None)


def test_ctrl_c_while_the_prompt_is_read_stops_the_reply_at_once(
    spawn: Spawn, emulator: LMStudioEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No fragment comes while LM Studio reads the prompt: the Ctrl-C waited for the first
    # one (here two minutes away) before it stopped the reply.
    monkeypatch.setattr(emulator, "prompt_latency", 120.0)
    chat = spawn("-m", TEXT)
    chat.expect(PROMPT)
    chat.sendline("Read this very long document")
    emulator.wait_until(lambda: bool(emulator.predictions), timeout=10)
    chat.sendintr()
    chat.expect(r"\[reply stopped\]")
    # Nothing of an answer was shown: the message goes, and the chat says so (found by a
    # probe: after a reasoning model's thinking, it went without a word).
    chat.expect(r"no answer had begun: the message was not added to the history")
    chat.expect(PROMPT)
    emulator.wait_until(lambda: emulator.predictions[0].done, timeout=5)
    assert emulator.predictions[0].cancelled
    assert emulator.predictions[0].fragments == []
    chat.sendline("/exit")
    chat.expect(pexpect.EOF)
    chat.close()
    assert chat.exitstatus == 0


def test_a_lost_connection_keeps_the_session(
    main_in_process: MainInProcess, emulator: LMStudioEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator.add_fault(Fault("predict", "drop", after_fragments=2))
    emulator.script(TEXT, ["Lost on the way.", "Back again."])
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello\nHello again\n/exit\n"))
    result = main_in_process("chat", "-m", TEXT)
    assert result.returncode == 0, result.stderr
    problem = next(line for line in result.stdout.splitlines() if line.startswith("! "))
    assert "Lost the connection to LM Studio" in problem
    assert "Send your message again" in problem
    assert "next call" not in problem
    assert "Run the command" not in problem
    assert "Back again." in result.stdout


def test_a_piece_shown_when_ctrl_c_lands_stays_in_the_history(
    main_in_process: MainInProcess, emulator: LMStudioEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C right after a piece is printed: the piece was shown, so it is kept.

    The piece was printed, then added to the reply: a Ctrl-C in between (seen under load)
    left the history one piece short of what the user saw.
    """
    from outlines_lmstudio.cli import _chat

    emulator.script(TEXT, ["alpha beta gamma delta epsilon", "Still here."])
    shown: list[str] = []

    def write_then_interrupt(text: str) -> None:
        shown.append(text)
        print(text, end="")
        if "beta" in text:
            raise KeyboardInterrupt

    monkeypatch.setattr(_chat, "write_out", write_then_interrupt)
    monkeypatch.setattr(sys, "stdin", io.StringIO("Tell me\nAnd?\n/exit\n"))
    result = main_in_process("chat", "-m", TEXT)
    assert result.returncode == 0, result.stderr
    assert "[reply stopped]" in result.stdout
    history = roles_and_texts(emulator.predictions[1].messages)
    assert [role for role, _ in history] == ["user", "assistant", "user"]
    assert history[1][1] == "alpha beta"
    assert "".join(shown).startswith("alpha beta")


def test_ctrl_c_as_the_reply_header_is_written_stops_only_that_message(
    main_in_process: MainInProcess, emulator: LMStudioEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a probe: Ctrl-C right after Enter, while the reply's header was written,
    ended the whole chat ("interrupted.", status 130) and lost the conversation."""
    from rich.console import Console

    emulator.script(TEXT, ["Kept."])
    real_print = Console.print
    headers: list[str] = []

    def print_then_interrupt(self: Console, *objects: Any, **kwargs: Any) -> None:
        real_print(self, *objects, **kwargs)
        text = "".join(str(o) for o in objects)
        if text == f"{TEXT}> ":
            headers.append(text)
            if len(headers) == 1:
                raise KeyboardInterrupt

    monkeypatch.setattr(Console, "print", print_then_interrupt)
    monkeypatch.setattr(sys, "stdin", io.StringIO("First\nSecond\n/exit\n"))
    result = main_in_process("chat", "-m", TEXT)
    assert result.returncode == 0, result.stderr
    assert len(headers) == 2  # the session went on to the second message
    (prediction,) = emulator.predictions  # the first was never sent
    assert roles_and_texts(prediction.messages) == [("user", "Second")]


@pytest.mark.parametrize("io_encoding", ["", "utf-8"])  # the locale's way, and strict decoding
@pytest.mark.parametrize(
    ("bad", "said"),
    [
        ("caf\xe9".encode("latin-1"), "! That line is not UTF-8 text (the byte 0xe9 at character"),
        # UTF-16 piped in, or binary data: sent with its NULs (found by a review)
        (b"hi\x00there", "! That line holds a NUL (at character 3)"),
        # its mark was called Latin-1 (a review), whose iconv command makes garbage
        ("hi".encode("utf-16"), "! That line is UTF-16 or UTF-32 text (it starts with a byte"),
    ],
)
def test_a_line_that_is_not_utf8_is_refused_and_the_session_goes_on(
    emulator: LMStudioEmulator, tmp_path: Path, io_encoding: str, bad: bytes, said: str
) -> None:
    # It was sent as lone surrogates (and /save then failed), or ended the chat as a bug.
    emulator.script(TEXT, ["Fine."])
    lines = bad + b"\nHello\n/save chat.json\n/exit\n"
    result = subprocess.run(
        [*script_path(), "--host", emulator.api_host, "chat", "-m", TEXT],
        input=lines,
        capture_output=True,
        env=cli_env(PYTHONIOENCODING=io_encoding),
        cwd=tmp_path,
        timeout=30,
        check=False,
    )
    out = result.stdout.decode("utf-8")
    assert result.returncode == 0, result.stderr
    assert said in out
    assert "It was not sent." in out
    assert [roles_and_texts(p.messages) for p in emulator.predictions] == [[("user", "Hello")]]
    saved = json.loads((tmp_path / "chat.json").read_text(encoding="utf-8"))
    assert [m["content"] for m in saved["messages"]] == ["Hello", "Fine."]


def test_one_saved_message_is_said_in_the_singular(
    emulator: LMStudioEmulator, tmp_path: Path, run_cli: RunCli
) -> None:
    result = run_cli("chat", "-m", TEXT, "--system", "Be brief", stdin="/save one.json\n/exit\n")
    assert result.returncode == 0, result.stderr
    assert "Saved 1 message to one.json." in result.stdout, result.stdout  # "1 messages"


def test_save_is_not_blocked_by_a_temporary_file_left_behind(
    emulator: LMStudioEmulator, tmp_path: Path, run_cli: RunCli
) -> None:
    # A crash mid-/save left ".chat.json.tmp"; every later /save said "File exists".
    (tmp_path / ".chat.json.tmp").write_text("{")
    emulator.script(TEXT, ["Fine."])
    result = run_cli("chat", "-m", TEXT, stdin="Hello\n/save chat.json\n/exit\n", timeout=30)
    assert result.returncode == 0, result.stderr
    assert "Saved 2 messages to chat.json." in result.stdout, result.stdout
    saved = json.loads((tmp_path / "chat.json").read_text(encoding="utf-8"))
    assert [m["content"] for m in saved["messages"]] == ["Hello", "Fine."]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".chat.json.tmp", "chat.json"]


def test_a_reply_with_a_lone_surrogate_is_shown_and_saved_as_its_escape(
    emulator: LMStudioEmulator, tmp_path: Path, run_cli: RunCli
) -> None:
    """Found by probes: the reply failed as "unexpected UnicodeEncodeError ... a bug", and
    once shown, /save failed the same way. Saved as JSON's escape, it reads back whole."""
    emulator.script(TEXT, ["hello \ud800 world", "Fine."])
    stdin = "Hello\nAgain\n/save chat.json\n/exit\n"
    result = run_cli("chat", "-m", TEXT, stdin=stdin, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "hello \\ud800 world" in result.stdout
    assert "Saved 4 messages to chat.json." in result.stdout, result.stdout
    assert result.stderr.count("lone surrogate") == 1
    saved = json.loads((tmp_path / "chat.json").read_text(encoding="utf-8"))
    assert [m["content"] for m in saved["messages"]][1:3] == ["hello \ud800 world", "Again"]


@pytest.mark.parametrize("first", ["/clear", "Hello"])
def test_a_byte_order_mark_opening_piped_input_is_dropped(
    emulator: LMStudioEmulator, tmp_path: Path, run_cli: RunCli, first: str
) -> None:
    """Found by a probe: a first-line command was sent as the message "\\ufeff/clear", and a
    first message kept the mark (generate -, embed - and extract --input - drop it)."""
    emulator.script(TEXT, ["Fine."])
    stdin = f"\ufeff{first}\nHello\n/save chat.json\n/exit\n"
    result = run_cli("chat", "-m", TEXT, stdin=stdin, timeout=30)
    assert result.returncode == 0, result.stderr
    saved = json.loads((tmp_path / "chat.json").read_text(encoding="utf-8"))
    contents = [m["content"] for m in saved["messages"] if m["role"] == "user"]
    assert contents == (["Hello"] if first == "/clear" else ["Hello", "Hello"])


def test_save_over_a_file_keeps_its_permissions(
    emulator: LMStudioEmulator, tmp_path: Path, run_cli: RunCli
) -> None:
    # /save replaced a private (0600) conversation file with a world-readable one.
    target = tmp_path / "chat.json"
    target.write_text("{}")
    target.chmod(0o600)
    emulator.script(TEXT, ["Fine."])
    result = run_cli("chat", "-m", TEXT, stdin="Hello\n/save chat.json\n/exit\n", timeout=30)
    assert result.returncode == 0, result.stderr
    assert "Saved 2 messages to chat.json." in result.stdout, result.stdout
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    saved = json.loads(target.read_text(encoding="utf-8"))
    assert [m["content"] for m in saved["messages"]] == ["Hello", "Fine."]


def _read_fifo(path: Path, timeout: float = 20) -> bytes:
    """Open ``path`` (a FIFO) for reading now, and return what a writer sends until it closes."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a writer's open() no longer blocks
    data, deadline, writer_seen = b"", time.monotonic() + timeout, False
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if chunk:
                data, writer_seen = data + chunk, True
            elif writer_seen:
                return data  # the writer closed
            else:
                time.sleep(0.05)  # no writer yet: a FIFO with none reads as empty
        return data
    finally:
        os.close(fd)


def test_save_writes_through_a_link_and_into_a_fifo_without_replacing_them(
    emulator: LMStudioEmulator, run_cli: RunCli, tmp_path: Path
) -> None:
    # /save renamed its temporary file over the target: a symbolic link became a plain file
    # (the file it pointed to kept the old conversation), and a FIFO or device was replaced
    # (as root, `/save /dev/null` replaced /dev/null itself with a regular file).
    emulator.script(TEXT, ["Fine."])
    (tmp_path / "kept").mkdir()
    real = tmp_path / "kept" / "real.json"
    real.write_text("{}\n")
    (tmp_path / "link.json").symlink_to(real)
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(_read_fifo(fifo)))
    reader.start()
    lines = "Hello\n/save link.json\n/save pipe.json\n/exit\n"
    result = run_cli("chat", "-m", TEXT, stdin=lines, timeout=30)
    reader.join(timeout=30)
    assert result.returncode == 0, result.stderr
    assert "Saved 2 messages to link.json." in result.stdout, result.stdout
    assert "Saved 2 messages to pipe.json." in result.stdout, result.stdout
    assert (tmp_path / "link.json").is_symlink()
    saved = json.loads(real.read_text(encoding="utf-8"))
    assert [m["content"] for m in saved["messages"]] == ["Hello", "Fine."]
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["real.json"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert [m["content"] for m in json.loads(received[0])["messages"]] == ["Hello", "Fine."]


def test_save_through_a_dangling_link_is_refused_with_the_reason(
    emulator: LMStudioEmulator, tmp_path: Path, run_cli: RunCli
) -> None:
    (tmp_path / "chat.json").symlink_to("missing/target.json")
    emulator.script(TEXT, ["Fine."])
    result = run_cli(
        "chat", "-m", TEXT, stdin="Hello\n/save chat.json\n/save ok.json\n/exit\n", timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert (
        "! Cannot save to 'chat.json': it is a symbolic link to 'missing/target.json', which "
        "does not exist" in result.stdout
    ), result.stdout
    assert (tmp_path / "chat.json").is_symlink()
    assert "Saved 2 messages to ok.json." in result.stdout


def test_lm_studio_gone_mid_session_says_what_to_do_in_the_command_line_terms(
    tmp_path: Path,
) -> None:
    # LM Studio stopped while chatting: the reply's error gave the library's hints for Python
    # code ("check the host and port given to lms.Client(...)", "test against
    # outlines_lmstudio.testing.LMStudioEmulator"), and /model said "LM Studio failed the
    # request", as if the server had refused it.
    emulator = LMStudioEmulator().start()
    host = emulator.api_host
    try:
        emulator.script(TEXT, ["First answer."])
        chat = subprocess.Popen(
            [*script_path(), "--host", host, "chat", "-m", TEXT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(),
            cwd=tmp_path,
        )
        assert chat.stdin is not None
        chat.stdin.write("Hello\n")
        chat.stdin.flush()
        emulator.wait_until(lambda: any(p.done for p in emulator.predictions), timeout=20)
    finally:
        emulator.stop()
    out, err = chat.communicate(f"Hello again\n/model {VISION}\n/save chat.json\n", timeout=60)
    assert chat.returncode == 0, err
    shown = [line.removeprefix(PROMPT) for line in out.splitlines()]  # no echo when piped
    problems = [line for line in shown if line.startswith("! ")]
    assert len(problems) == 2, out
    for problem in problems:
        assert f"LM Studio is not reachable at {host} any more" in problem, problem
        assert "lms server start" in problem
        for python_words in ("lms.Client", "outlines_lmstudio.testing", "failed the request"):
            assert python_words not in problem
    assert problems[0].endswith("(the message was not added to the history)")
    assert "Saved 2 messages to chat.json." in out


def test_a_very_large_image_is_attached_without_a_python_warning(
    main_in_process: MainInProcess, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # An image over Pillow's pixel limit (89 million: a 10000x10000 scan) printed Pillow's
    # DecompressionBombWarning, its file path and source line, before being attached;
    # one over twice the limit was refused with Pillow's "could be decompression bomb DOS
    # attack" and nothing to do. The limit is lowered here to keep the images small.
    import warnings

    from PIL import Image as PILImage

    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1000)
    png(tmp_path / "big.png", (40, 40))  # 1,600 pixels: over the limit, under twice it
    png(tmp_path / "huge.png", (50, 50))  # 2,500 pixels: over twice the limit
    monkeypatch.setattr(sys, "stdin", io.StringIO("/image big.png\n/image huge.png\n/exit\n"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = main_in_process("chat", "-m", VISION)
    assert result.returncode == 0, result.stderr
    assert [w.category.__name__ for w in caught] == []
    assert "Attached big.png (40x40)" in result.stdout
    assert (
        "! Cannot read image 'huge.png': it has 2,500 pixels, more than the 2,000 that are "
        "safe to decode; downscale it first." in result.stdout
    ), result.stdout


def test_a_message_beginning_with_a_slash_is_written_with_two(
    emulator: LMStudioEmulator, tmp_path: Path
) -> None:
    """'/etc/hosts: what is it?' was an unknown command, and no way to send it existed."""
    result = subprocess.run(
        [*script_path(), "--host", emulator.api_host, "chat", "-m", TEXT],
        input="/etc/hosts: what is it?\n//etc/hosts: what is it?\n",
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Unknown command /etc/hosts:" in result.stdout
    assert "write it with //, e.g. //etc/hosts: what is it?" in result.stdout
    (prediction,) = emulator.predictions
    assert prediction.last_user_text == "/etc/hosts: what is it?"


def test_an_empty_quoted_argument_is_a_usage_line(
    emulator: LMStudioEmulator, tmp_path: Path, run_cli: RunCli
) -> None:
    # `/save ""` was "Cannot save to '.': it is a directory" (the empty path read as ".").
    result = run_cli("chat", "-m", VISION, stdin="/save \"\"\n/image ''\n/exit\n", timeout=30)
    assert result.returncode == 0, result.stderr
    assert "! Usage: /save FILE (it is empty)" in result.stdout, result.stdout
    assert "! Usage: /image PATH (it is empty)" in result.stdout, result.stdout
    assert "'.'" not in result.stdout


def test_a_photo_stored_sideways_is_described_and_saved_as_sent(
    main_in_process: MainInProcess,
    emulator: LMStudioEmulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Found by a probe: a photo with an EXIF turn was said and saved with its stored size
    (640x480, or "2048x1536, downscaled from 4000x3000"), while it was sent turned."""
    exif = Image.Exif()
    exif[0x0112] = 6  # turn 90 degrees clockwise to view
    Image.new("RGB", (64, 48), "red").save(tmp_path / "small.jpg", exif=exif)
    Image.new("RGB", (3000, 1500), "red").save(tmp_path / "big.jpg", exif=exif)
    script = "/image small.jpg\n/image big.jpg\nhello\n/save talk.json\n/exit\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO(script))
    result = main_in_process("chat", "-m", VISION)
    assert result.returncode == 0, result.stderr
    assert "Attached small.jpg (48x64)" in result.stdout, result.stdout
    assert "Attached big.jpg (1024x2048, downscaled from 1500x3000)" in result.stdout
    sizes = []
    for upload in emulator.uploads:
        with Image.open(io.BytesIO(upload.data)) as image:
            sizes.append(image.size)
    assert sizes == [(48, 64), (1024, 2048)]
    saved = json.loads((tmp_path / "talk.json").read_text())
    records = [image for message in saved["messages"] for image in message.get("images", [])]
    assert [
        (r["width"], r["height"], r["original_width"], r["original_height"]) for r in records
    ] == [
        (48, 64, 48, 64),
        (1024, 2048, 1500, 3000),
    ]


def test_an_image_whose_values_cannot_be_sent_is_refused_when_attached(
    main_in_process: MainInProcess,
    emulator: LMStudioEmulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Found by a probe: a float TIFF was "Attached", then every message failed on it (it
    was attached again after each failure) until /clear, with Python advice."""
    Image.new("F", (30, 20), 0.5).save(tmp_path / "depth.tiff")
    monkeypatch.setattr(sys, "stdin", io.StringIO("/image depth.tiff\nhello\n/exit\n"))
    result = main_in_process("chat", "-m", VISION)
    assert result.returncode == 0, result.stderr
    assert (
        "! Cannot use image 'depth.tiff': it has floating-point grey values (mode F, from 0.5 "
        "to 0.5)" in result.stdout
    ), result.stdout
    assert "an 8-bit PNG" in result.stdout
    assert "Attached" not in result.stdout
    for python_words in ("Image.fromarray", "image.point", "convert('L')"):
        assert python_words not in result.stdout
    assert [p.images for p in emulator.predictions] == [[]]


def test_an_image_refused_when_sent_is_not_attached_again(
    main_in_process: MainInProcess,
    emulator: LMStudioEmulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A refusal the attach-time check does not foresee (here the size after encoding, its
    limit lowered) made every later message fail the same way: the image came back."""
    from outlines_lmstudio import _images

    monkeypatch.setattr(_images, "MAX_IMAGE_BYTES", 100)
    noise = Image.frombytes("RGB", (16, 16), os.urandom(16 * 16 * 3))
    noise.save(tmp_path / "noise.png")
    monkeypatch.setattr(sys, "stdin", io.StringIO("/image noise.png\nhello\nagain\n/exit\n"))
    result = main_in_process("chat", "-m", VISION)
    assert result.returncode == 0, result.stderr
    assert "Attached noise.png (16x16)" in result.stdout
    assert "Image is 0.0 MiB after encoding" in result.stdout
    assert "Detached noise.png: it cannot be sent." in result.stdout
    assert [p.images for p in emulator.predictions] == [[]]  # "again" went, without it


def test_escape_sequences_in_a_reply_are_shown_not_obeyed(
    spawn: Spawn, emulator: LMStudioEmulator
) -> None:
    """A reply's escape sequences set the window title and cleared the screen (a prompt
    injection can put them in a reply; found by a probe); line breaks and tabs stay."""
    emulator.script(TEXT, ["Hi \x1b]0;PWNED\x07 and \x1b[2J then\r over\tdone\r\nend"])
    chat = spawn("-m", TEXT)
    chat.expect(PROMPT)
    chat.sendline("hello")
    chat.expect(PROMPT)
    shown = chat.before or ""
    for obeyed in ("\x1b]0;", "\x1b[2J", "\x07"):
        assert obeyed not in shown, repr(shown)
    assert r"Hi \x1b]0;PWNED\x07 and \x1b[2J then\r over" + "\tdone" in shown, repr(shown)
    assert "done\r\nend" in shown or "done\r\r\nend" in shown, repr(shown)
    leave_with_ctrl_d(chat)


def test_quit_leaves_the_chat_as_exit_does(
    main_in_process: MainInProcess, emulator: LMStudioEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by mutation testing: nothing checked `/quit` (docs/cli.md: "/exit | leave (also
    /quit or Ctrl-D)"); without it the line after was sent as a message."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("/QUIT\nnot sent\n"))
    result = main_in_process("chat", "-m", TEXT)
    assert result.returncode == 0, result.stderr
    assert "Unknown command" not in result.stdout
    assert emulator.predictions == []


def test_switching_to_a_text_model_drops_attached_images_and_sends_no_earlier_ones(
    main_in_process: MainInProcess,
    emulator: LMStudioEmulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Found by mutation testing: nothing checked what `/model` to a model without vision
    does with images. An image attached but not sent is dropped, with a note; an image sent
    earlier stays in the history, and is not sent to the text model."""
    png(tmp_path / "pic.png", (16, 16))
    commands = f"/image pic.png\nfirst\n/image pic.png\n/model {TEXT}\nsecond\n/exit\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO(commands))
    result = main_in_process("chat", "-m", VISION)
    assert result.returncode == 0, result.stderr
    assert "Dropped 1 attached image(s): this model has no vision." in result.stdout
    assert "Earlier images stay in the history but are not sent to this model." in result.stdout
    first, second = emulator.predictions
    assert (first.model, len(first.images)) == (VISION, 1)
    assert (second.model, second.images) == (TEXT, [])
    assert roles_and_texts(second.messages) == [
        ("user", "first"),
        ("assistant", first.text),
        ("user", "second"),
    ]


def test_a_servers_escape_sequences_in_a_problem_are_escaped(
    run_cli: RunCli, emulator: LMStudioEmulator
) -> None:
    """Found by a review: a failed turn's message reached the terminal raw (rich drops BEL,
    not ESC), where ``generate``'s error line escapes it."""
    emulator.add_fault(Fault("predict", "error", message="boom \x1b]0;PWNED\x07\x1b[2J end"))
    result = run_cli("chat", "-m", TEXT, stdin="Hello\n/exit\n", timeout=30)
    shown = result.stdout + result.stderr
    assert "boom \\x1b]0;PWNED" in shown, shown
    assert "\x1b]0;" not in shown
    assert "\x1b[2J" not in shown


def test_a_reply_cut_off_by_a_limit_is_said_and_saved_as_such(
    run_cli: RunCli, emulator: LMStudioEmulator, tmp_path: Path
) -> None:
    """Found by a probe: a reply the context length (or --max-tokens) cut off was shown and
    saved as a whole one; the SDK by hand gives its stop reason."""
    emulator.script(TEXT, ["one two three four five six seven"])
    stdin = "Hello\n/save chat.json\n/exit\n"
    result = run_cli("chat", "-m", TEXT, "--max-tokens", "2", stdin=stdin, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "[reply cut off: its token limit was reached (--max-tokens)]" in result.stdout
    saved = json.loads((tmp_path / "chat.json").read_text(encoding="utf-8"))
    assert saved["messages"][-1]["cut_off"] == "maxPredictedTokensReached"
    assert "cut_off" not in saved["messages"][0]


def test_a_whole_reply_is_saved_without_a_cut_off(
    run_cli: RunCli, emulator: LMStudioEmulator, tmp_path: Path
) -> None:
    """Found by mutation testing: nothing held a reply that ended by itself (``eosFound``)
    to be saved, and shown, as whole."""
    emulator.script(TEXT, ["one two three"])
    result = run_cli("chat", "-m", TEXT, stdin="Hello\n/save chat.json\n/exit\n", timeout=30)
    assert result.returncode == 0, result.stderr
    assert "cut off" not in result.stdout
    saved = json.loads((tmp_path / "chat.json").read_text(encoding="utf-8"))
    assert saved["messages"][-1]["content"] == "one two three"
    assert "cut_off" not in saved["messages"][-1]


def test_a_prompt_over_the_context_length_says_how_to_go_on(
    run_cli: RunCli, emulator: LMStudioEmulator
) -> None:
    """Found by a probe: once the conversation outgrew the context, every message failed,
    and nothing said that /clear was the way on."""
    told = "The prompt has 5780 tokens, but the model is loaded with a context length of 4096"
    for said in (told, "Trying to keep the first 5780 tokens when context the overflows."):
        emulator.clear_faults()  # each engine's words: llama.cpp's, LM Studio's overflow policy
        emulator.add_fault(Fault("predict", "error", message=said))
        result = run_cli("chat", "-m", TEXT, stdin="Hello\n/exit\n", timeout=30)
        assert said.rstrip(".") in result.stdout, result.stdout
        assert (
            "(the message was not added to the history; /clear starts the conversation over)"
            in (result.stdout)
        )
    # Not for another failure (a review: the library's own hint names "its context length").
    for said in ("boom", "the buffer overflows"):  # "overflows" alone is not the context's
        emulator.clear_faults()
        emulator.add_fault(Fault("predict", "error", message=said))
        other = run_cli("chat", "-m", TEXT, stdin="Hello\n/exit\n", timeout=30)
        assert said in other.stdout, other.stdout
        assert "/clear starts" not in other.stdout


def test_clear_keeps_the_images_attached_for_the_next_message(
    run_cli: RunCli, emulator: LMStudioEmulator
) -> None:
    """Found by a probe: /clear dropped an attached image without a word."""
    stdin = "/test-image teal 16x16\n/clear\nWhat colour?\n/exit\n"
    result = run_cli("chat", "-m", VISION, stdin=stdin, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "Conversation cleared (1 attached image(s) kept for your next message)." in result.stdout
    (prediction,) = emulator.predictions
    assert len(prediction.images) == 1


def test_save_to_a_name_too_long_says_the_conversation_is_kept(
    run_cli: RunCli, emulator: LMStudioEmulator
) -> None:
    """Found by a probe: a name over 255 bytes gave "NAME: File name too long." alone, where
    the other refusals say what was refused and that the conversation is kept."""
    name = "n" * 300 + ".json"
    result = run_cli("chat", "-m", TEXT, stdin=f"Hello\n/save {name}\n/exit\n", timeout=30)
    assert result.returncode == 0, result.stderr
    assert f"! Cannot save to '{name}': File name too long; the conversation is kept." in (
        result.stdout
    ), result.stdout


def test_a_loaded_copys_identifier_is_escaped_before_each_reply(
    run_cli: RunCli, emulator: LMStudioEmulator
) -> None:
    """Found by a review: the ``KEY (IDENTIFIER)> `` line before each reply wrote a server's
    identifier raw, escape sequences and all (the banner escaped it)."""
    identifier = emulator.load(TEXT, identifier="main\x1b]0;PWNED\x07\x1b[2J")
    result = run_cli("chat", "-m", identifier, stdin="Hello\n/exit\n", timeout=30)
    assert result.returncode == 0, result.stderr
    assert f"{TEXT} (main\\x1b]0;PWNED\\x07\\x1b[2J)> " in result.stdout, result.stdout
    assert "\x1b" not in result.stdout


def test_help_lines_are_whole_when_piped_and_wrap_under_themselves_on_a_terminal(
    run_cli: RunCli, emulator: LMStudioEmulator, tmp_path: Path
) -> None:
    """Found by a probe: piped, /help was cut at 80 columns (a word on a line of its own,
    a trailing space); on a terminal, a description too long wrapped under the command."""
    clear = (
        "/clear                  forget the conversation (the system prompt and attached images "
        "stay)"
    )
    piped = run_cli("chat", "-m", TEXT, stdin="/help\n/exit\n", env=cli_env(COLUMNS="60"))
    assert piped.returncode == 0, piped.stderr
    assert f"  {clear}" in piped.stdout.splitlines()
    command = [*script_path(), "--host", emulator.api_host, "chat", "-m", TEXT]
    env = cli_env(TERM="xterm-256color", COLUMNS="60", LINES="40", NO_COLOR="1")
    drawn = run_on_a_terminal(command, tmp_path, env, stdin="/help\n/exit\n")
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", drawn).replace("\r\n", "\n")
    shown = [line.rstrip() for line in plain.splitlines()]
    start = next(i for i, line in enumerate(shown) if "/clear" in line)
    assert shown[start] == "  /clear                  forget the conversation (the", drawn
    assert shown[start + 1] == "                          system prompt and attached images", drawn
    first = next(i for i, line in enumerate(shown) if "/image PATH" in line)
    last = next(i for i, line in enumerate(shown) if line.endswith("(as /TEXT)"))
    # (the first line may follow the prompt: what is typed ahead is echoed before the prompt)
    assert all(len(line) <= 60 for line in shown[first + 1 : last + 1]), drawn
    # Found by a review: below 38 columns a description was a word per row, each cut
    # short. On a narrow terminal it goes under its command.
    env = cli_env(TERM="xterm-256color", COLUMNS="30", LINES="60", NO_COLOR="1")
    drawn = run_on_a_terminal(command, tmp_path, env, stdin="/help\n/exit\n")
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", drawn).replace("\r\n", "\n")
    shown = [line.rstrip() for line in plain.splitlines()]
    start = shown.index("/clear")
    assert shown[start + 1 : start + 4] == [
        "    forget the conversation",
        "    (the system prompt and",
        "    attached images stay)",
    ], drawn
