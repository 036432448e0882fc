"""The linear-time matcher `parse` checks grammar replies with agrees with ``re.fullmatch``."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from outlines.types import paragraph

from outlines_lmstudio._grammar._match import Matcher
from outlines_lmstudio._grammar._regex import regex_to_node

from ._checks import DIFF_SETTINGS, chars_for, variants
from ._corpus import OUTLINES_TYPES, REGEXES

PATTERNS = REGEXES + [(name, term.pattern) for name, term in OUTLINES_TYPES]


@pytest.mark.parametrize(("name", "pattern"), PATTERNS, ids=[n for n, _ in PATTERNS])
@DIFF_SETTINGS
@given(data=st.data())
def test_matcher_matches_like_fullmatch(name: str, pattern: str, data: st.DataObject) -> None:
    compiled = re.compile(pattern)
    matcher = Matcher(regex_to_node(pattern))
    chars = chars_for(pattern)
    positive = st.from_regex(compiled, fullmatch=True)
    if name in ("paragraph", "sentence"):  # re.fullmatch, the reference, backtracks on them
        positive = positive.filter(lambda s: len(s) <= 48)
    samples = [data.draw(positive, label="positive"), data.draw(st.text(chars, max_size=12))]
    for text in [s for sample in samples for s in variants(data.draw, sample, chars)]:
        assert matcher.matches(text) == (compiled.fullmatch(text) is not None), text


@pytest.mark.parametrize(
    ("pattern", "text", "end"),
    [
        (r"(a+)+b", "a" * 5000, "b"),  # re.fullmatch: exponential (a second at 26 characters)
        (paragraph.pattern, "Hello there. " * 400, "Bye.\n"),  # Outlines' paragraph, cut off
        (r"(\w+\s?)+\.", "word " * 2000, "."),
    ],
)
def test_no_backtracking_on_texts_that_do_not_match(pattern: str, text: str, end: str) -> None:
    matcher = Matcher(regex_to_node(pattern))
    started = time.monotonic()
    assert not matcher.matches(text)
    assert matcher.matches(text + end)
    assert time.monotonic() - started < 10  # (CPU-bound: room for coverage and a busy machine)


@pytest.mark.parametrize(
    ("pattern", "text", "goes_on"),
    [
        (r"\d+", "12", True),
        (r"\d{2}", "12", False),
        (r"(cat|dog)s?", "cat", True),
        (r"(cat|dog)s?", "cats", False),
        (r"yes|no", "no", False),
        (r"a*", "", True),
        (r"ab", "a", True),  # a prefix goes on
        (r"ab", "b", False),  # nothing reads it: no way on
    ],
)
def test_goes_on_tells_whether_more_text_can_follow(pattern: str, text: str, goes_on: bool) -> None:
    assert Matcher(regex_to_node(pattern)).goes_on(text) is goes_on


@DIFF_SETTINGS
@given(
    words=st.lists(st.text("abn/", max_size=5), min_size=2, max_size=12),
    texts=st.lists(st.text("abn/x", max_size=7), max_size=20),
)
def test_words_written_with_their_beginnings_shared_keep_their_language(
    words: list[str], texts: list[str]
) -> None:
    """Alternated literals are factored (`factored_literals`): the same strings match."""
    pattern = "(" + "|".join(map(re.escape, words)) + ")x?"
    matcher = Matcher(regex_to_node(pattern))
    for text in [*words, *(w + "x" for w in words), *texts]:
        assert matcher.matches(text) == (re.fullmatch(pattern, text) is not None), (words, text)


def test_an_either_of_labels_writes_each_shared_beginning_once() -> None:
    """Found by a probe: ``either`` over 4,750 labels was sent as a flat alternation, which
    llama.cpp follows whole at every token (6-8 s a call on the embedded model, 0.6 s
    factored)."""
    from outlines.types import either

    from outlines_lmstudio._grammar import term_to_gbnf

    gbnf = term_to_gbnf(either("apple", "apricot", "april", "banana", "band"))
    assert gbnf.strip() == 'root ::= "ap" ("ple" | "ri" ("cot" | "l")) | "ban" ("ana" | "d")'
    labels = [f"label-{i:04d}" for i in range(4750)]
    assert term_to_gbnf(either(*labels)).count('"label-') == 1
