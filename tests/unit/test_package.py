"""The package's import: what it loads, and when (fresh interpreters, no server)."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import outlines_lmstudio
from outlines_lmstudio import _models


def _loaded_after(statement: str) -> set[str]:
    """The top-level modules a fresh interpreter has loaded after ``statement``."""
    code = f"import sys; {statement}; print(*sorted({{m.split('.')[0] for m in sys.modules}}))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return set(out.stdout.split())


@pytest.mark.parametrize(
    "statement",
    [
        "import outlines_lmstudio",
        "from outlines_lmstudio import ParseError",
        "from outlines_lmstudio import Reply, ReplyChunk",
        "import outlines_lmstudio.cli",
        "import outlines_lmstudio.testing.pytest_plugin",
    ],
)
def test_importing_the_package_does_not_load_outlines(statement: str) -> None:
    """Outlines takes about half a second to import: the pytest plugin (loaded by every pytest
    run in the environment) and the CLI's start must not pay it."""
    loaded = _loaded_after(statement)
    assert "outlines_lmstudio" in loaded
    assert "outlines" not in loaded


def test_the_pytest_plugin_loads_no_emulator_module() -> None:
    """Found by a probe: the plugin (loaded in every pytest session of an environment that
    has the package) imported all of ``outlines_lmstudio.testing``, asyncio and the
    catalogue included, about 50 ms per session of projects that never use the emulator."""
    code = (
        "import sys; import outlines_lmstudio.testing.pytest_plugin; "
        "print(*sorted(m for m in sys.modules if m.startswith(('asyncio', 'outlines_lmstudio'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(out.stdout.split())
    assert "asyncio" not in loaded
    assert {m for m in loaded if m.startswith("outlines_lmstudio.testing")} == {
        "outlines_lmstudio.testing",
        "outlines_lmstudio.testing.pytest_plugin",
    }


def test_the_emulators_names_are_the_real_objects() -> None:
    import outlines_lmstudio.testing as testing
    from outlines_lmstudio.testing import _faults, _server

    assert testing.LMStudioEmulator is _server.LMStudioEmulator
    assert testing.Fault is _faults.Fault
    assert all(hasattr(testing, name) for name in testing.__all__)
    assert set(testing.__all__) <= set(dir(testing))
    with pytest.raises(AttributeError, match="has no attribute 'Faults'"):
        _ = testing.Faults  # type: ignore[attr-defined]


def test_the_model_classes_load_on_first_use() -> None:
    loaded = _loaded_after("from outlines_lmstudio import from_lmstudio")
    assert {"outlines", "lmstudio"} <= loaded


def test_lazy_names_are_the_real_objects() -> None:
    assert outlines_lmstudio.LMStudio is _models.LMStudio
    assert outlines_lmstudio.from_lmstudio is _models.from_lmstudio
    assert set(outlines_lmstudio.__all__) <= set(dir(outlines_lmstudio))
    # found by a probe: the version (read on first use) was not listed, "annotations" was
    assert "__version__" in dir(outlines_lmstudio)
    assert "annotations" not in dir(outlines_lmstudio)


def test_the_packages_public_names_are_its_own() -> None:
    """Found by an audit: ``Any``, ``importlib`` and ``TYPE_CHECKING`` were public names
    of the package (``from outlines_lmstudio import Any`` worked), unlike its testing
    package's. Submodules are left."""
    public = {n for n in dir(outlines_lmstudio) if n[0] not in "_@"}
    submodules = {n for n in public if inspect.ismodule(getattr(outlines_lmstudio, n))}
    assert public - submodules == set(outlines_lmstudio.__all__)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'LMStudioo'"):
        _ = outlines_lmstudio.LMStudioo  # type: ignore[attr-defined]
    with pytest.raises(ImportError, match="cannot import name 'Nope'"):
        exec("from outlines_lmstudio import Nope")


# Windows' os module: no fork, so no os.register_at_fork (simulated on this platform).
_NO_FORK = "import os\ndel os.register_at_fork, os.fork, os.forkpty\n"


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_models_import_without_os_register_at_fork() -> None:
    """Windows has no ``os.register_at_fork``: the model modules' fork hooks are skipped there
    (an unguarded one made ``from outlines_lmstudio import from_lmstudio`` fail)."""
    code = (
        _NO_FORK
        + "from outlines_lmstudio import AsyncLMStudio, LMStudio, from_lmstudio\nprint('ok')"
    )
    out = _python(code)
    assert (out.returncode, out.stdout, out.stderr) == (0, "ok\n", "")


def test_an_attribute_error_inside_a_lazy_import_keeps_its_cause() -> None:
    """An AttributeError from a module ``__getattr__`` reads as "no such name" to ``from ...
    import``, which said only "cannot import name 'from_lmstudio'": the cause is kept now."""
    code = (
        "from typing_inspection import typing_objects\n"
        "del typing_objects.DEPRECATED_ALIASES  # an internal import now fails\n"
        "try:\n"
        "    from outlines_lmstudio import from_lmstudio\n"
        "except ImportError as exc:\n"
        "    print(type(exc.__cause__).__name__)\n"
        "    print(exc)\n"
    )
    out = _python(code)
    cause, message = out.stdout.splitlines()
    assert cause == "AttributeError"
    assert message.startswith("cannot import name 'from_lmstudio' from 'outlines_lmstudio': ")
    assert "has no attribute 'DEPRECATED_ALIASES'" in message


def test_version_is_the_distribution_version_read_on_first_use() -> None:
    from importlib.metadata import version

    assert outlines_lmstudio.__version__ == version("outlines-lmstudio")
    assert "importlib.metadata" not in _loaded_after("import outlines_lmstudio")


def test_version_without_distribution_metadata() -> None:
    """The source tree on ``sys.path`` with no installed metadata: a PEP 440 placeholder."""
    code = (
        "import importlib.metadata as md\n"
        "def missing(name):\n"
        "    raise md.PackageNotFoundError(name)\n"
        "md.version = missing\n"
        "import outlines_lmstudio\n"
        "print(outlines_lmstudio.__version__)\n"
    )
    out = _python(code)
    assert (out.returncode, out.stdout) == (0, "0+unknown\n")


@pytest.mark.parametrize(
    ("args", "code"), [(["--version"], 0), (["--emulator", "models", "--json"], 0), (["nope"], 2)]
)
def test_python_m_outlines_lmstudio_is_the_command(args: list[str], code: int) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "outlines_lmstudio", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == code, out.stderr
    if args == ["--version"]:
        assert out.stdout == f"outlines-lmstudio {outlines_lmstudio.__version__}\n"


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_modules_import_from_each_other_only_what_each_exports() -> None:
    """Each module lists what other modules may import from it in ``__all__`` (style.md); a
    design audit found eleven imports of names left out, two of them private."""
    import ast

    root = Path(outlines_lmstudio.__file__).parent
    trees = {
        _module_name(path, root): (path, ast.parse(path.read_text(encoding="utf-8")))
        for path in sorted(root.rglob("*.py"))
    }
    exported: dict[str, set[str]] = {}
    for name, (_, tree) in trees.items():
        for node in tree.body:
            if isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
                    assert node.value is not None
                    exported[name] = set(ast.literal_eval(node.value))
        assert name in exported, f"{name} has no __all__"
    wrong = []
    for name, (path, tree) in trees.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for found in ast.walk(tree):
            if not isinstance(found, ast.ImportFrom):
                continue
            if found.level:
                base = package.rsplit(".", found.level - 1)[0] if found.level > 1 else package
                source = f"{base}.{found.module}" if found.module else base
            elif (found.module or "").partition(".")[0] == "outlines_lmstudio":
                source = str(found.module)
            else:
                continue  # another package's
            for alias in found.names:
                if f"{source}.{alias.name}" in trees or alias.name.startswith("__"):
                    continue  # a submodule, or a module dunder (__version__)
                if alias.name not in exported.get(source, set()):
                    wrong.append(f"{name}:{found.lineno} imports {alias.name} from {source}")
    assert wrong == []


def test_the_model_classes_show_model_name_and_their_options() -> None:
    """``inspect.signature(LMStudio)`` was ``(client, *args, **options)``: it hid ``model_name``
    and the options, and ``*args`` read as variadic arguments (found by a probe)."""
    import inspect
    import typing

    from outlines_lmstudio._api import OPTIONS

    defaults = {
        "max_concurrency": 4,
        "timeout": None,
        "connect_timeout": 10.0,
        "read_timeout": 60.0,
        "grammar": False,
        "strict_schema": False,
    }
    assert list(defaults) == list(OPTIONS)
    for cls in (outlines_lmstudio.LMStudio, outlines_lmstudio.AsyncLMStudio):
        # as shown: the client by keyword too, as Outlines' own class takes it (a probe)
        inspect.signature(cls).bind(client=object(), model_name="m", timeout=5)
        parameters = inspect.signature(cls).parameters
        assert list(parameters) == ["client", "model_name", *OPTIONS], cls
        assert parameters["model_name"].default is None
        assert {name: parameters[name].default for name in OPTIONS} == defaults
        assert {parameters[name].kind for name in OPTIONS} == {inspect.Parameter.KEYWORD_ONLY}
    # The options from_lmstudio's typed overloads name are the same.
    overloads = typing.get_overloads(_models.from_lmstudio)
    assert len(overloads) == 2
    for overload in overloads:
        keyword_only = [
            p.name
            for p in inspect.signature(overload).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        ]
        assert keyword_only == list(OPTIONS)
