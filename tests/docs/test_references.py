"""The tests the docs name exist: a file moved or a test renamed left the docs pointing at
nothing (found by a probe that followed the docs: `test_models_sync.py::test_server_unreachable`
had moved to `test_models.py`)."""

from __future__ import annotations

import re
from pathlib import Path

from .pages import ROOT

_REFERENCE = re.compile(r"`((?:tests/[\w/]+/)?(test_\w+\.py))(?:::(\w+))?")
_SDK_SUITE = {"test_inference.py", "test_timeouts.py"}
"""lmstudio-python's own test files, named where docs/testing.md reports its suite's run."""


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_every_test_the_docs_name_exists() -> None:
    files: dict[str, list[Path]] = {}
    for path in (ROOT / "tests").rglob("test_*.py"):
        files.setdefault(path.name, []).append(path)
    missing: list[str] = []
    seen = 0
    for page in _pages():
        for match in _REFERENCE.finditer(page.read_text(encoding="utf-8")):
            written, name, function = match.groups()
            if name in _SDK_SUITE:
                continue
            seen += 1
            candidates = [ROOT / written] if "/" in written else files.get(name, [])
            found = [path for path in candidates if path.is_file()]
            if not found:
                missing.append(f"{page.relative_to(ROOT)}: {written}")
            elif function and not any(
                re.search(rf"^(?:async )?def {function}\(", path.read_text(), re.MULTILINE)
                for path in found
            ):
                missing.append(f"{page.relative_to(ROOT)}: {written}::{function}")
    assert seen > 20  # the pattern still finds the references
    assert missing == []
