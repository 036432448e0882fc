"""The set-up scripts on a fresh machine: ``scripts/_venv.sh`` (which ``scripts/demo`` and
``scripts/check`` source) and ``scripts/package-check``.

``_venv.sh`` runs on a throw-away project (a path with a space, an in-tree build backend, no index),
so nothing is downloaded and the checkout's own ``.venv`` is left alone.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
import venv
from collections.abc import Callable
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).parents[2] / "scripts"

BACKEND = """
import os, zipfile

def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    name = "tiny-0-py3-none-any.whl"
    info = "tiny-0.dist-info/"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as wheel:
        wheel.writestr("tiny.pth", os.path.dirname(os.path.abspath(__file__)) + "\\n")
        wheel.writestr(info + "METADATA", "Metadata-Version: 2.1\\nName: tiny\\nVersion: 0\\n")
        wheel.writestr(
            info + "WHEEL",
            "Wheel-Version: 1.0\\nGenerator: t\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
        )
        wheel.writestr(info + "RECORD", "")
    return name
"""

PYPROJECT = """
[build-system]
requires = []
build-backend = "backend"
backend-path = ["."]

[project]
name = "tiny"
version = "0"
"""


def makes_a_venv(test: Callable[..., None]) -> Callable[..., None]:
    """Mark a test that makes a venv with pip and installs into it (up to 240 s when busy)."""
    needs = pytest.mark.skipif(
        importlib.util.find_spec("ensurepip") is None,
        reason="this Python cannot make a venv with pip",
    )
    marked: Callable[..., None] = pytest.mark.slow(pytest.mark.timeout(240)(needs(test)))
    return marked


def make_project(tmp_path: Path) -> Path:
    project = tmp_path / "a checkout"
    (project / "scripts").mkdir(parents=True)
    for name in ("_venv.sh", "_say.sh"):
        shutil.copy(SCRIPTS / name, project / "scripts" / name)
    (project / "pyproject.toml").write_text(PYPROJECT)
    (project / "backend.py").write_text(BACKEND)
    (project / "tiny_mod.py").write_text("X = 1\n")
    return project


def source_venv_sh(project: Path, settings: str = "EXTRAS=x") -> subprocess.CompletedProcess[str]:
    """Source the script as scripts/demo does (from another directory), then import."""
    env = {**os.environ, "PYTHON": sys.executable, "PIP_NO_INDEX": "1"}
    env.pop("PYTHONPATH", None)
    code = f'{settings}; source "$0/scripts/_venv.sh"; exec .venv/bin/python -c "import tiny_mod"'
    return _bash(code, project, env, timeout=300)


def without_python(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``scripts/<script> ARGS`` with a PYTHON that does not run: any set-up fails."""
    return subprocess.run(
        ["bash", str(SCRIPTS / script), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": "/nonexistent/python3"},
        timeout=60,
    )


def _bash(
    code: str, project: Path, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` with bash from outside ``project`` (``$0`` is the project's path)."""
    return subprocess.run(
        ["/bin/bash", "-c", code, str(project)],
        capture_output=True,
        text=True,
        env=env,
        cwd=project.parent,
        timeout=timeout,
    )


def break_venv(project: Path, how: str) -> None:
    """Leave ``project/.venv`` as a first run, or an earlier set-up, may have left it."""
    path = project / ".venv"
    if how == "without pip":
        venv.create(path, with_pip=False)
    elif how == "python removed":  # the interpreter it was made with was uninstalled
        venv.create(path, with_pip=False)
        (path / "bin" / "python").unlink()
        (path / "bin" / "python").symlink_to(project / "gone" / "python3")
    else:  # made with an older Python: pip then refuses the project (requires-python)
        venv.create(path, with_pip=True)
        (site_packages,) = path.glob("lib/python3.*/site-packages")
        (site_packages / "sitecustomize.py").write_text(
            "import sys\nsys.version_info = (3, 10, 13, 'final', 0)\n"
        )


@makes_a_venv
@pytest.mark.parametrize("how", ["without pip", "python removed", "older python"])
def test_a_venv_that_cannot_install_the_project_is_made_again(tmp_path: Path, how: str) -> None:
    """Found by a probe: a first run stopped while ``python -m venv`` installed pip (or
    Debian's python3 without python3-venv) left ``.venv/bin/python`` without pip, and every
    later run failed with "No module named pip" until ``.venv`` was deleted by hand; a
    ``.venv`` made with Python 3.10 failed every run with pip's "requires a different
    Python"."""
    project = make_project(tmp_path)
    break_venv(project, how)
    result = source_venv_sh(project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("Creating .venv") == 1, result.stdout
    # The next run finds it installed and does nothing.
    again = source_venv_sh(project)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout == ""


@makes_a_venv
def test_the_demo_goes_on_without_an_extra_that_cannot_be_installed(tmp_path: Path) -> None:
    """The demo's ``local`` extra compiles llama-cpp-python, which needs a C/C++ compiler a
    fresh machine may lack: the set-up then installs ``FALLBACK_EXTRAS`` (the demo runs the
    synthetic emulator), says so, and says it again on later runs instead of retrying."""
    project = make_project(tmp_path)
    backend = project / "backend.py"  # its wheel's metadata: an extra nothing can install
    backend.write_text(
        backend.read_text().replace(
            "Version: 0\\n",
            "Version: 0\\nProvides-Extra: x\\nProvides-Extra: built\\n"
            "Requires-Dist: no-such-package-anywhere; extra == 'built'\\n",
        )
    )

    def run() -> subprocess.CompletedProcess[str]:
        return source_venv_sh(
            project, "EXTRAS=x,built FALLBACK_EXTRAS=x FALLBACK_WHEN=no-such-package-any"
        )

    first = run()
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Could not install [x,built] (above); going on with [x]." in first.stdout
    assert "pip install failed" in first.stderr
    again = run()
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Installing" not in again.stdout
    assert "[x,built] could not be installed here" in again.stdout
    # Without a fallback the failure still stops the script.
    project2 = make_project(tmp_path / "2")
    (project2 / "backend.py").write_text(backend.read_text())
    failed = source_venv_sh(project2, "EXTRAS=x,built")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "Could not install" not in failed.stdout
    # Nor when pip's error is not about what the fallback leaves out (no network, a broken
    # index): the fallback would fail too, and it is not a compiler's fault (found by a probe).
    project3 = make_project(tmp_path / "3")
    (project3 / "backend.py").write_text(backend.read_text())
    other = source_venv_sh(
        project3, "EXTRAS=x,built FALLBACK_EXTRAS=x FALLBACK_WHEN=llama-cpp-python"
    )
    assert other.returncode == 1, other.stdout + other.stderr
    assert "Could not install" not in other.stdout
    assert "pip could not install the dependencies" in other.stderr
    assert "check the network and the package index" in other.stderr


def run_bare(project: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return _bash('EXTRAS=x; source "$0/scripts/_venv.sh"', project, env, timeout=60)


@pytest.mark.parametrize("python", ["/nonexistent/python3", "false"])
def test_a_python_variable_that_is_not_python_3_11_is_refused(tmp_path: Path, python: str) -> None:
    """Found by a probe: ``PYTHON=...`` was used unchecked: a Python 3.10 made a ``.venv``
    that pip then refused, a wrong path ended in bash's "No such file or directory"."""
    project = make_project(tmp_path)
    result = run_bare(project, {**os.environ, "PYTHON": python})
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"PYTHON={python} is not Python 3.11 or newer" in result.stderr
    assert not (project / ".venv").exists()


def test_pythons_that_do_not_run_are_passed_over_quietly(tmp_path: Path) -> None:
    """Found by a probe: with pyenv, a shim whose command the selected version lacks
    (``python3.11`` under a 3.12 global) printed pyenv's screenful of "command not found"
    before the set-up went on with the next candidate."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("python3.11", "python3.12", "python3.13", "python3"):
        shim = bin_dir / name
        shim.write_text(f"#!/bin/sh\necho 'pyenv: {name}: command not found' >&2\nexit 127\n")
        shim.chmod(0o755)
    project = make_project(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    result = run_bare(project, {**env, "PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr == "outlines-lmstudio needs Python >= 3.11 on PATH (or set PYTHON=...).\n"


def test_package_check_without_build_and_twine_says_how_to_get_them(tmp_path: Path) -> None:
    """Found by a probe: run after ``bash scripts/demo`` (whose .venv has no dev extra), it
    stopped with ".venv/bin/python: No module named build" and status 1."""
    bare = tmp_path / "bare"
    venv.create(bare, with_pip=False)
    result = subprocess.run(
        ["bash", str(SCRIPTS / "package-check")],
        capture_output=True,
        text=True,
        env={**os.environ, "PY": str(bare / "bin" / "python")},
        timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "needs build and twine" in result.stderr
    assert "run bash scripts/check once" in result.stderr


@pytest.mark.parametrize("args", [["--quick"], ["tests/cli", "--quick"], ["-x", "--quick", "-q"]])
def test_check_takes_quick_among_the_pytest_arguments(args: list[str]) -> None:
    """Found by a probe: ``--quick`` was read only as the first argument; after another it
    went to pytest ("unrecognized arguments") once the full set-up, with the llama.cpp
    build, had run. (CI=true says it ignores --quick, before any set-up; the bad PYTHON
    then stops the script there.)"""
    result = subprocess.run(
        ["bash", str(SCRIPTS / "check"), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "CI": "true", "PYTHON": "/nonexistent/python3"},
        timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout.startswith("CI=true: ignoring --quick")


@pytest.mark.parametrize(
    ("script", "flags", "starts", "usage"),
    [
        # Found by a probe: ``--help`` went to pytest, after the install and the lint (and
        # by a review: after another argument, it still did).
        *(
            ("check", flags, "The whole check, for people and CI:", "[--quick] [PYTEST ARGS...]")
            for flags in (["--help"], ["-h"], ["--quick", "--help"], ["tests/cli", "-x", "-h"])
        ),
        # Found by a probe: the demo installed for minutes before its help; --help anywhere
        # wins and may be shortened, as argparse has it.
        *(
            ("demo", flags, "The main job: structured extraction", "[-h] [--local | --emulator]")
            for flags in (["--help"], ["--local", "-h"], ["--bogus", "--he"])
        ),
    ],
)
def test_help_prints_the_usage_and_does_nothing_else(
    script: str, flags: list[str], starts: str, usage: str
) -> None:
    result = without_python(script, *flags)  # anything more than the help fails
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(starts)
    assert f"bash scripts/{script} {usage}" in result.stdout
    assert "set -euo" not in result.stdout
    assert result.stderr == ""


@makes_a_venv
def test_a_failed_check_names_its_phase(tmp_path: Path) -> None:
    """Found by a probe: mypy's or pytest's output scrolled the failed phase's heading away;
    the check now ends by naming it. Here its first phase fails (no ts-sdk.sh)."""
    project = make_project(tmp_path)
    shutil.copy(SCRIPTS / "check", project / "scripts" / "check")
    env = {**os.environ, "PYTHON": sys.executable, "PIP_NO_INDEX": "1"}
    env.pop("PYTHONPATH", None)
    env.pop("CI", None)
    result = _bash('bash "$0/scripts/check" --quick', project, env, timeout=200)
    assert result.returncode != 0, result.stdout + result.stderr
    assert result.stderr.rstrip().endswith(
        f"check failed (status {result.returncode}) in: TypeScript SDK 1.5.0 and 2.0.0 "
        "(npm, cached in ~/.cache/outlines-lmstudio/ts-sdk)"
    ), result.stderr


@makes_a_venv
@pytest.mark.usefixtures("sigint_default")
def test_ctrl_c_during_the_install_says_so_in_one_line(tmp_path: Path) -> None:
    """Found by a probe: Ctrl-C during the first install said "pip install failed", 30
    lines of pip's log, and to check the network, with status 1."""
    project = make_project(tmp_path)
    backend = project / "backend.py"  # a build that takes its time: Ctrl-C comes meanwhile
    backend.write_text(
        "import time\n"
        + backend.read_text().replace("    name = ", "    time.sleep(60)\n    name = ", 1)
    )
    env = {**os.environ, "PYTHON": sys.executable, "PIP_NO_INDEX": "1"}
    env.pop("PYTHONPATH", None)
    child = subprocess.Popen(
        ["/bin/bash", "-c", 'EXTRAS=x; source "$0/scripts/_venv.sh"', str(project)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=project.parent,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if "Installing" in line:
                break
        time.sleep(3)  # pip is building the project now
        os.killpg(child.pid, signal.SIGINT)  # what Ctrl-C sends: the whole group
        _, err = child.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
    assert child.returncode == 130, err
    assert err.strip().splitlines()[-1] == (
        "Interrupted while installing into .venv: run this again to install."
    )
    assert "pip install failed" not in err
    assert "network" not in err


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--bogus"], "unrecognized argument: '--bogus' (see bash scripts/demo --help)"),
        (
            ["--local", "two words"],
            "unrecognized argument: 'two words' (see bash scripts/demo --help)",
        ),
        (["--local", "--emulator"], "--emulator cannot go with --local: give one of them"),
        (["--loc", "--e"], "--emulator cannot go with --local: give one of them"),
        (["--"], "unrecognized argument: '--' (see bash scripts/demo --help)"),
    ],
)
def test_the_demo_refuses_bad_arguments_before_it_installs(args: list[str], said: str) -> None:
    """Found by a probe: ``bash scripts/demo --bogus`` made .venv and installed the project,
    minutes with the llama.cpp build on a fresh machine, before examples/extract.py refused
    the argument. The demo now refuses it first (a bad PYTHON would stop any set-up)."""
    result = without_python("demo", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr == (
        f"usage: bash scripts/demo [-h] [--local | --emulator]\nscripts/demo: error: {said}\n"
    )
    assert result.stdout == ""


_PREFIXES = [flag[:n] for flag in ("--local", "--emulator") for n in range(3, len(flag) + 1)]


@pytest.mark.parametrize(
    "args", [*([prefix] for prefix in _PREFIXES), ["--lo", "--local"], ["--e", "--emulator"], []]
)
def test_the_demo_takes_what_extract_py_takes(args: list[str]) -> None:
    """Found by a review: the demo's own check refused ``--emu``, which argparse (in
    examples/extract.py) takes for ``--emulator``; every shortening argparse takes is taken
    (found by mutation testing). Taken, the set-up starts: the bad PYTHON given here stops
    it."""
    result = without_python("demo", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("PYTHON=/nonexistent/python3 is not Python 3.11")
