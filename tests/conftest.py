"""Suite-wide: ``bash scripts/check --quick`` skips the tiers that need llama.cpp.

With ``OUTLINES_LMSTUDIO_QUICK=1`` (set by ``--quick``; CI ignores it), tests that use
a ``llama`` fixture (llama.cpp's grammar code) or carry the ``real_engine`` marker (a
real model on llama.cpp) are skipped with the reason, even where llama-cpp-python is
installed.
"""

from __future__ import annotations

import os

import pytest

QUICK_REASON = "scripts/check --quick: llama.cpp tiers skipped (CI runs them)"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("OUTLINES_LMSTUDIO_QUICK", "0") in ("", "0"):
        return
    if os.environ.get("CI", "").lower() == "true":
        return
    skip = pytest.mark.skip(reason=QUICK_REASON)
    for item in items:
        if "llama" in getattr(item, "fixturenames", ()) or item.get_closest_marker("real_engine"):
            item.add_marker(skip)
