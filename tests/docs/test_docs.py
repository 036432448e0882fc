"""Every code block of README.md and docs/ runs: `examples_check.py` inside a private network.

The pages use ``lms.Client()`` (LM Studio's default ports) and ``lms.Client("localhost:1234")``
as a user would. Inside ``unshare -n`` the emulator can listen on exactly those ports
without meeting a real LM Studio. Without namespaces (not root), the blocks run
directly when those ports are free on this machine, and are skipped otherwise.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

from ..private_network import run_in_private_network, unavailable_reason
from .examples_check import PORTS
from .pages import (
    ROOT,
    Command,
    ConsoleBlock,
    console_blocks,
    normalise,
    parse_commands,
    rewrite_console_block,
    skipped,
)

INNER = [
    sys.executable,
    "-m",
    "pytest",
    str(Path(__file__).with_name("examples_check.py")),
    "-q",
    "--tb=short",  # pytest-examples' rewritten tracebacks break pytest's long format
    "-p",
    "no:cacheprovider",
    "--rootdir",
    str(ROOT),
]


def _ports_free() -> bool:
    for port in PORTS:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


@pytest.mark.timeout(600)
def test_every_code_block_of_the_docs_runs() -> None:
    if unavailable_reason() is None or os.environ.get("CI", "").lower() == "true":
        done = run_in_private_network(INNER, timeout=590)
    elif _ports_free():
        import subprocess

        done = subprocess.run(INNER, capture_output=True, text=True, timeout=590, check=False)
    else:
        pytest.skip(f"{unavailable_reason()}, and ports {PORTS} are taken on this machine")
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert " passed" in done.stdout.splitlines()[-1]


def test_a_transcript_splits_into_commands_and_their_output() -> None:
    body = "$ tool a\nline 1\nline 2\n$ echo $?\n0\n"
    assert parse_commands(body) == (
        Command("tool a", "line 1\nline 2\n"),
        Command("echo $?", "0\n"),
    )
    assert parse_commands("progress ━━ 3/4\n") == ()  # a display, not a transcript


def test_the_skip_marker_is_the_documented_one() -> None:
    assert skipped('python {test="skip"}')
    assert skipped("console {test='skip'}")
    assert not skipped("python")
    assert not skipped('python {title="test=skip"}')


def test_durations_and_rates_are_compared_as_placeholders() -> None:
    shown = "40/40 6.0 items/s 0:00:07\nDone in 7.0 s: 40 results"
    real = "40/40 109.8 items/s 0:00:00\nDone in 0.4 s: 40 results"
    assert normalise(shown) == normalise(real)
    assert normalise("40 results") != normalise("41 results")


def test_rewriting_a_block_keeps_the_rest_of_the_page(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# T\n\n```console\n$ a\nold\n```\n\ntext\n\n```console\n$ b\n$ c\nx\n```\n", "utf-8"
    )
    first, second = console_blocks(page)
    assert isinstance(first, ConsoleBlock)
    rewrite_console_block(first, ["new 1\nnew 2\n"])
    rewrite_console_block(second, ["", "y\n"])
    assert page.read_text("utf-8") == (
        "# T\n\n```console\n$ a\nnew 1\nnew 2\n```\n\ntext\n\n```console\n$ b\n$ c\ny\n```\n"
    )
