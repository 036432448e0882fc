"""The docs harness: find the code blocks of README.md and docs/*.md, and run console transcripts.

Python blocks are found and run with ``pytest-examples`` (pydantic's harness); output
shown as ``#>`` comments after a ``print`` is checked, and ``--update-examples``
rewrites it from a real run. Console blocks (```` ```console ````) are transcripts:
each ``$ command`` is run with bash in a working directory holding the files the page
uses (``tests/docs/fixtures/``), and its output (stdout and stderr, as a terminal
shows them) must match the lines that follow it on the page. A block whose fence says
``{test="skip"}`` is a fragment on purpose and is not run.

Every ``*.md`` file under ``docs/`` is picked up, so a new page is tested without
registering it anywhere.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pytest_examples import CodeExample, find_examples

__all__ = [
    "ROOT",
    "Command",
    "ConsoleBlock",
    "console_blocks",
    "normalise",
    "pages",
    "parse_commands",
    "python_examples",
    "rewrite_console_block",
    "run_console_block",
    "skipped",
    "workdir",
]

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).with_name("fixtures")
_FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)
_SKIP = re.compile(r"""\btest=["']skip["']""")
_TTY = re.compile(r"""\btty=["'](?P<cols>\d+)["']""")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


_TIMINGS = [
    (re.compile(r"\b\d+(\.\d+)? s\b"), "<seconds> s"),  # "Done in 0.3 s"
    (re.compile(r"\b\d+(\.\d+)? items/s\b"), "<rate> items/s"),
    (re.compile(r"\b\d+:\d\d:\d\d\b"), "<h:mm:ss>"),
]


def normalise(output: str) -> str:
    """Replace durations and rates, which differ from run to run, by placeholders."""
    for pattern, placeholder in _TIMINGS:
        output = pattern.sub(placeholder, output)
    return output


def pages() -> list[Path]:
    """Return README.md and every Markdown page under docs/, sorted."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def skipped(info: str) -> bool:
    """Tell whether a fence's info string marks the block as a fragment (``{test="skip"}``)."""
    return _SKIP.search(info) is not None


def python_examples() -> list[CodeExample]:
    """Return every ```` ```python ```` / ```` ```py ```` block of the pages."""
    return [example for page in pages() for example in find_examples(page)]


@dataclass(frozen=True)
class Command:
    """One ``$ command`` of a transcript and the output the page shows for it."""

    line: str
    shown: str


@dataclass(frozen=True)
class ConsoleBlock:
    """A ```` ```console ```` block: where it is and its commands."""

    path: Path
    index: int  # among the page's console blocks
    line: int
    info: str
    commands: tuple[Command, ...]

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def parse_commands(body: str) -> tuple[Command, ...]:
    """Split a transcript into commands and their shown output.

    Lines before the first ``$ `` line (a progress display, say) make the block a
    display, not a transcript: it has no commands.
    """
    commands: list[Command] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            commands.append(Command(line[2:], ""))
        elif commands:
            last = commands[-1]
            commands[-1] = Command(last.line, last.shown + line + "\n")
        else:
            return ()
    return tuple(commands)


def console_blocks(path: Path) -> list[ConsoleBlock]:
    """Return the console blocks of one page, in order."""
    text = path.read_text("utf-8")
    return [
        ConsoleBlock(
            path,
            index,
            text[: match.start()].count("\n") + 1,
            match["info"].strip(),
            parse_commands(match["body"]),
        )
        for index, match in enumerate(_console_fences(text))
    ]


def _console_fences(text: str) -> list[re.Match[str]]:
    return [m for m in _FENCE.finditer(text) if m["info"].strip().split(" ", 1)[0] == "console"]


def workdir(base: Path) -> Path:
    """Make a working directory holding the files the pages use."""
    shutil.copytree(FIXTURES, base, dirs_exist_ok=True)
    return base


def _environment() -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("LMSTUDIO_", "PYTEST_", "FORCE_COLOR"))
    }
    bin_dir = str(Path(sys.executable).parent)
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        COLUMNS="120",  # what the transcripts were taken at
        NO_COLOR="1",
        PYTHONUNBUFFERED="1",  # keep stdout and stderr in the order they were written
    )
    return env


def run_console_block(block: ConsoleBlock, cwd: Path, timeout: float = 60) -> list[str]:
    """Run each command of a block in ``cwd``; return the output of each.

    ``$?`` in a command is the previous command's exit status, as in a shell. With
    ``{tty="COLUMNS"}`` on the fence the commands run on a pseudo-terminal that wide
    (util-linux ``script``), as a user at a terminal sees them; styles are dropped.
    """
    outputs = []
    status = 0
    env = _environment()
    tty = _TTY.search(block.info)
    for command in block.commands:
        line = f"(exit {status}); {command.line}"
        argv = ["bash", "-c", line]
        if tty:
            stty = f"stty cols {tty['cols']} rows 50"
            argv = ["script", "-qec", f"{stty}; {line}", "/dev/null"]
        done = subprocess.run(
            argv,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
        status = done.returncode
        text = _ANSI.sub("", done.stdout).replace("\r", "")
        outputs.append("\n".join(line.rstrip() for line in text.splitlines()) + "\n")
    return [output if output.strip() else "" for output in outputs]


def rewrite_console_block(block: ConsoleBlock, outputs: list[str]) -> None:
    """Write the real outputs into the page, in place of the shown ones."""
    text = block.path.read_text("utf-8")
    fence = _console_fences(text)[block.index]  # found again: an earlier rewrite moves it
    body = "".join(
        f"$ {command.line}\n{output}"
        for command, output in zip(block.commands, outputs, strict=True)
    )
    block.path.write_text(text[: fence.start("body")] + body + text[fence.end("body") :], "utf-8")
