"""Fixtures: the real ``outlines-lmstudio`` console script against an emulator in the test."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from outlines_lmstudio.testing import LMStudioEmulator

from .helpers import PERSON_SCHEMA, cli_env, script_path

RunCli = Callable[..., "subprocess.CompletedProcess[str]"]
MainInProcess = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture
def emulator(lmstudio_emulator: LMStudioEmulator) -> LMStudioEmulator:
    """The plugin's shared emulator, reset for each test."""
    return lmstudio_emulator


@pytest.fixture
def run_cli(emulator: LMStudioEmulator, tmp_path: Path) -> RunCli:
    """Run ``outlines-lmstudio --host EMULATOR ARGS...`` in ``tmp_path``."""

    def run(
        *args: str,
        host: bool = True,
        stdin: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 20,
    ) -> subprocess.CompletedProcess[str]:
        command = [*script_path(), *(["--host", emulator.api_host] if host else []), *args]
        return subprocess.run(
            command,
            input=stdin,
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env or cli_env(),
            timeout=timeout,
            check=False,
        )

    return run


@pytest.fixture
def main_in_process(
    emulator: LMStudioEmulator,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> MainInProcess:
    """Call ``outlines_lmstudio.cli.main`` in this process (for the many input-error cases)."""
    from outlines_lmstudio.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv("LMSTUDIO_HOST", raising=False)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        capsys.readouterr()
        code = main(["--host", emulator.api_host, *args])
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, out, err)

    return run


@pytest.fixture
def schema_file(tmp_path: Path) -> Path:
    path = tmp_path / "person.schema.json"
    path.write_text(json.dumps(PERSON_SCHEMA))
    return path


@pytest.fixture
def closed_port() -> int:
    """A local port with nothing listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
