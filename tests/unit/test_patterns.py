"""`engine_pattern`: a search pattern as the anchored regex the engines read."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outlines_lmstudio._patterns import ANY, PatternError, engine_pattern

# Characters on which Python's re (with re.ASCII) and ECMA-262 agree for . \d \w \s:
# no \r, \u2028, \u2029 (ECMA's dot excludes them) and no Unicode spaces. Non-ASCII
# letters and digits are in, to show \d and \w keep ECMA's ASCII meaning.
ALPHABET = 'abcAZ019_- .\t\n"\\[]{}()|^$*+?/é٣'

_ATOMS = st.sampled_from(
    [
        "a",
        "b",
        "Z",
        "0",
        "-",
        " ",
        "é",
        r"\d",
        r"\w",
        r"\s",
        r"\D",
        r"\W",
        r"\S",
        ".",
        r"\.",
        r"\-",
        r"\\",
        r"\[",
        r"\]",
        r"\(",
        r"\{",
        r"\^",
        r"\$",
        r"\|",
        r"\/",
        r"\"",
        '"',
        "]",
        "}",
        "[a-c]",
        "[^a]",
        r"[\d_]",
        r"[\w-]",
        r"[\s.]",
        r"[\]a]",
        "[]a]",
        r"\x41",
        r"\u00e9",
        r"\t",
        r"\n",
    ]
)


def _extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    quantifier = st.sampled_from(["", "*", "+", "?", "{2}", "{1,2}", "{0,}", "*?", "+?", "??"])
    return st.one_of(
        st.lists(inner, min_size=1, max_size=3).map("".join),
        st.tuples(inner, quantifier).map(lambda t: t[0] if len(t[0]) == 1 else f"({t[0]}){t[1]}"),
        st.tuples(inner, inner).map(lambda t: f"{t[0]}|{t[1]}"),
        st.tuples(st.sampled_from(["(", "(?:", "(?P<n>"]), inner).map(lambda t: f"{t[0]}{t[1]})"),
        st.tuples(st.sampled_from(["", "^"]), inner, st.sampled_from(["", "$"])).map("".join),
        st.tuples(inner, quantifier).map(lambda t: f"[ab]{t[1]}{t[0]}"),
    )


PATTERNS = st.recursive(_ATOMS, _extend, max_leaves=6)
TEXTS = st.text(alphabet=ALPHABET, max_size=8)


def searches(pattern: str, text: str) -> bool:
    """JSON Schema's meaning of ``pattern`` (ECMA-262 classes: Python's with re.ASCII)."""
    return re.search(pattern, text, re.ASCII) is not None


@settings(max_examples=300, deadline=None)
@given(pattern=PATTERNS, texts=st.lists(TEXTS, min_size=1, max_size=12))
def test_the_anchored_form_accepts_exactly_what_the_pattern_finds(
    pattern: str, texts: list[str]
) -> None:
    try:
        re.compile(pattern)
    except re.error:
        return  # not a pattern (e.g. a quantifier on an anchor)
    try:
        anchored = engine_pattern(pattern)
    except PatternError:
        return
    assert anchored.startswith("^")
    assert anchored.endswith("$")
    assert engine_pattern(anchored) == anchored  # the engine form is a fixed point
    for text in texts:
        assert searches(anchored, text) == searches(pattern, text), (pattern, anchored, text)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (r"[A-Z]{3}-\d+", rf"^{ANY}*[A-Z]{{3}}-[0-9]+{ANY}*$"),
        (r"^[A-Z]{3}-\d+$", r"^[A-Z]{3}-[0-9]+$"),
        (r"^a|b$", rf"^(a{ANY}*|{ANY}*b)$"),
        (r"^a\.b$", r"^a[\x2e]b$"),
        (r"^(?:ab)+?$", r"^(ab)+$"),
        (r"^(?P<year>\d{4})$", r"^([0-9]{4})$"),
        (r"^\s$", r"^[\x09-\x0d\x20\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]$"),
        (r"^.$", r"^[^\n\r\u2028\u2029]$"),
        (r"^[\]]$", r"^[\x5d]$"),
        (r"^x{}$", r"^x[\x7b][\x7d]$"),
    ],
)
def test_rewrites(pattern: str, expected: str) -> None:
    assert engine_pattern(pattern) == expected


def test_ecma_meaning_of_classes() -> None:
    """JSON Schema patterns are ECMA-262: \\d is ASCII, . stops at \\r."""
    assert re.search(engine_pattern(r"^\d$"), "٣") is None
    assert re.search(engine_pattern(r"^\d$"), "3")
    assert re.search(engine_pattern(r"^.$"), "\r") is None
    assert re.search(engine_pattern(r"^\s$"), "\u3000")


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("(?=a)a", "lookaround"),
        ("(?<!a)b", "lookaround"),
        (r"(a)\1", "backreference"),
        ("(?P<x>a)(?P=x)", "backreference"),
        (r"\bword", "assertion"),
        ("a^b", "anchor"),
        ("(^a)", "anchor"),
        ("(?i)abc", "group extension"),
        ("a{,3}", "{,n}"),
        (r"\p{L}", "not a valid"),
        ("(", "not a valid"),
        (r"[\D]", "negated class escape"),
    ],
)
def test_refusals_name_the_construct(pattern: str, reason: str) -> None:
    with pytest.raises(PatternError, match=re.escape(reason)):
        engine_pattern(pattern)
