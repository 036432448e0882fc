"""The runnable example of docs/testing.md runs as a user's test file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

DOC = Path(__file__).parents[2] / "docs" / "testing.md"


@pytest.mark.timeout(120)
def test_docs_example_passes(pytester: pytest.Pytester) -> None:
    example = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)[0]
    assert "lmstudio_emulator" in example
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\nfilterwarnings = error\n"
    )
    pytester.makepyfile(test_pipeline=example)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
