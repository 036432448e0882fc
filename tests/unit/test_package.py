"""The package's import: what it loads, and when (fresh interpreters, no server)."""

from __future__ import annotations

import subprocess
import sys

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


def test_the_model_classes_load_on_first_use() -> None:
    loaded = _loaded_after("from outlines_lmstudio import from_lmstudio")
    assert {"outlines", "lmstudio"} <= loaded


def test_lazy_names_are_the_real_objects() -> None:
    assert outlines_lmstudio.LMStudio is _models.LMStudio
    assert outlines_lmstudio.from_lmstudio is _models.from_lmstudio
    assert set(outlines_lmstudio.__all__) <= set(dir(outlines_lmstudio))


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'LMStudioo'"):
        _ = outlines_lmstudio.LMStudioo  # type: ignore[attr-defined]
    with pytest.raises(ImportError, match="cannot import name 'Nope'"):
        exec("from outlines_lmstudio import Nope")
