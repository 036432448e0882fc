"""Shared checks: the GBNF dialect, and strategies for differential testing."""

from __future__ import annotations

import re
from collections.abc import Callable

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

_ESCAPE = r"\\(?:x[0-9A-F]{2}|u[0-9A-F]{4}|[trn\\\"\[\]])"
_STRING = rf'"(?:[^"\\\x00-\x1f\x7f]|{_ESCAPE})*"'
_CLASS = rf"\[\^?(?:[^\]\\\x00-\x1f\x7f]|{_ESCAPE})+\]"
_TOKEN = rf"(?:[A-Za-z0-9-]+|{_STRING}|{_CLASS}|[()|*+?]| )"
_RULE = re.compile(rf"([A-Za-z0-9-]+) ::= ({_TOKEN}+)")
_NAME = re.compile(rf"{_STRING}|{_CLASS}|([A-Za-z0-9-]+)")

DIFF_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

# Characters worth trying in mutations: case pairs with special folds, Unicode digits
# and spaces, astral characters, the JSON/CSV metacharacters.
INTERESTING = (
    "0159aAzZ_- .,:;\n\t\r\"'\\/[](){}#@+*?$^|"
    "éÉßẞ\u017fKk\u03c3ςΣ٣\u07c0\u00a0\u2003\u1680😀\U0001d518\x7f\x85"
)


def assert_dialect(gbnf: str) -> None:
    """Fail unless ``gbnf`` is in the conservative dialect old llama.cpp builds accept."""
    assert gbnf.endswith("\n")
    lines = gbnf[:-1].split("\n")
    defined: list[str] = []
    used: set[str] = set()
    for line in lines:
        match = _RULE.fullmatch(line)
        assert match, f"line outside the dialect: {line[:200]!r}"
        defined.append(match.group(1))
        used.update(m.group(1) for m in _NAME.finditer(match.group(2)) if m.group(1))
    assert defined[0] == "root"
    assert len(set(defined)) == len(defined), "a rule is defined twice"
    assert used <= set(defined), f"undefined rules: {used - set(defined)}"


def chars_for(pattern: str = "") -> st.SearchStrategy[str]:
    """Characters for random strings and mutations (never NUL or surrogates)."""
    local = sorted({c for c in pattern + INTERESTING if c != "\x00"})
    return st.one_of(
        st.sampled_from(local),
        st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
    )


def variants(draw: Callable[..., object], text: str, chars: st.SearchStrategy[str]) -> list[str]:
    """The string itself and random single-character edits of it."""
    out = [text]
    for _ in range(3):
        pos = draw(st.integers(0, len(text)))
        char = draw(chars)
        assert isinstance(pos, int)
        assert isinstance(char, str)
        out.append(text[:pos] + char + text[pos:])
        if text:
            pos = min(pos, len(text) - 1)
            out.append(text[:pos] + text[pos + 1 :])
            out.append(text[:pos] + char + text[pos + 1 :])
    return [s for s in out if "\x00" not in s]
