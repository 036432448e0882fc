"""``outlines-lmstudio emulator`` in a subprocess: host line, SDK calls, SIGINT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import lmstudio as lms
import pytest

from outlines_lmstudio._install import install_command
from outlines_lmstudio.cli import SUBCOMMANDS, build_parser, main
from outlines_lmstudio.cli._emulator import load_models

_PREFIX = "LM Studio emulator listening on "


def _start(*args: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from outlines_lmstudio.cli import main; raise SystemExit(main())",
            "emulator",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith(_PREFIX), line + (process.stderr.read() if process.stderr else "")
    return process, line[len(_PREFIX) :].strip()


@pytest.mark.timeout(60)
def test_emulator_command_serves_until_sigint(tmp_path: Path) -> None:
    models = tmp_path / "models.json"
    models.write_text(json.dumps([{"key": "tiny", "replies": ["hello from tiny"]}]))
    process, host = _start("--port", "0", "--models", str(models), "--seed", "3")
    try:
        assert host.startswith("127.0.0.1:")
        with lms.Client(host) as client:
            assert client.llm.model("tiny").respond("hi").content == "hello from tiny"
            assert [m.model_key for m in client.list_downloaded_models()] == ["tiny"]
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert "stopped" in out


def test_missing_models_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["emulator", "--models", str(tmp_path / "nope.json")]) == 2
    assert "models file" in capsys.readouterr().err


def test_bad_models_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"key": "x", "colour": "red"}]))
    with pytest.raises(ValueError, match=r"model 1 .'x'.: unknown field 'colour'"):
        load_models(bad)
    bad.write_text(json.dumps([{"key": "x", "format": "mlx"}]))
    with pytest.raises(ValueError, match=r"bad\.json, model 1 .'x'.: .*'safetensors'"):
        load_models(bad)
    bad.write_text(json.dumps({"models": "nope"}))
    with pytest.raises(ValueError, match="JSON list"):
        load_models(bad)
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"models": [{"key": "e", "type": "embedding"}]}))
    assert load_models(good)[0].type == "embedding"


def test_missing_extra_prints_the_install_line(tmp_path: Path) -> None:
    blocker = tmp_path / "websockets.py"
    blocker.write_text("raise ImportError('blocked')\n")
    # A sitecustomize-free way to hide websockets: a meta path finder that refuses it.
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'websockets' or name.startswith('websockets.'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import importlib.util\n"
        "_orig = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda n, *a: None if n == 'websockets' else _orig(n, *a)\n"
        "from outlines_lmstudio.cli import main\n"
        "raise SystemExit(main(['emulator']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, env=os.environ
    )
    assert result.returncode == 2
    assert install_command("testing") in result.stderr


def test_subcommand_registry() -> None:
    assert "emulator" in SUBCOMMANDS
    args = build_parser().parse_args(["emulator", "--port", "5", "--token-latency", "0.1"])
    assert args.port == 5
    assert args.token_latency == 0.1
