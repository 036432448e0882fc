"""Nested counted repeats: collapsed into one repeat per range of counts, or refused.

Left nested, ``(((\\d{0,40}){0,40}){0,40}){0,40}`` made llama.cpp's grammar check follow
every way of splitting a reply into the copies: 1.5 s for 20 digits, 47 s for 30, checking
one candidate token per step. ``(x{a,b}){c,d}`` is ``x`` repeated ``j*a`` to ``j*b``
times for each ``j`` from ``c`` to ``d``: those ranges are joined into few, each one repeat.
"""

from __future__ import annotations

import itertools
import re
from typing import TYPE_CHECKING

import pytest

from outlines_lmstudio import UnsupportedGrammarError
from outlines_lmstudio._grammar import regex_to_gbnf
from outlines_lmstudio._grammar._gbnf import Rep, repeat_counts
from outlines_lmstudio._grammar._regex import regex_to_node

if TYPE_CHECKING:
    from ._llama_harness import LlamaGrammarHarness


@pytest.mark.parametrize(
    ("nested", "flat"),
    [
        (r"(\d{0,40}){0,40}", r"\d{0,1600}"),
        (r"(\d{1,40}){2,40}", r"\d{2,1600}"),
        (r"((ab|c){1,3}){2,4}", r"(?:ab|c){2,12}"),
        (r"(a{2,3}){0,40}", r"(?:|a{2,120})"),
        (r"(a{3,4}){1,9}", r"(?:a{3,4}|a{6,36})"),
        (r"(a{2,3})*", r"(?:|a{2,})"),
        (r"(a+){3,7}", r"a{3,}"),
        (r"(?:a{0,4}){0,3}", r"a{0,12}"),
    ],
)
def test_nested_counted_repeats_become_one_repeat_per_range(nested: str, flat: str) -> None:
    assert regex_to_node(nested) == regex_to_node(flat)


@pytest.mark.parametrize(
    "kept",
    [
        r"((ab){1000}){1000}",  # a fixed inner count: splits one way only
        r"(a{10,11}){0,40}",  # more than 4 ranges: a{0}|a{10,11}|a{20,22}|...
    ],
)
def test_nested_repeats_that_do_not_collapse_stay_nested(kept: str) -> None:
    node = regex_to_node(kept)
    assert isinstance(node, Rep)
    assert isinstance(node.item, Rep)


def test_repeat_counts_are_exactly_the_counts_nested_repeats_allow() -> None:
    cap = 60  # counts compared up to here; unbounded ranges are cut at it

    def expected(a: int, b: int | None, low: int, high: int | None) -> set[int]:
        counts = {0} if low == 0 else set()
        for j in range(max(low, 1), (cap if high is None else high) + 1):
            counts.update(range(j * a, min(cap, j * b if b is not None else cap) + 1))
        return {c for c in counts if c <= cap}

    checked = 0
    for a, b, low, high in itertools.product(
        range(6), [*range(1, 8), None], range(5), [*range(1, 8), None]
    ):
        if (b is not None and b < a) or (high is not None and high < low):
            continue
        ranges = repeat_counts(a, b, low, high)
        if len(ranges) > 4:
            continue
        got = {c for x, y in ranges for c in range(x, (cap if y is None else y) + 1) if c <= cap}
        assert got == expected(a, b, low, high), (a, b, low, high, ranges)
        for (_, end), (start, _) in itertools.pairwise(ranges):
            assert end is not None  # only the last range is unbounded
            assert end + 1 < start  # disjoint, apart, in order
        checked += 1
    assert checked > 900


@pytest.mark.parametrize(
    ("pattern", "alphabet", "longest"),
    [
        (r"(\d{0,4}){0,3}", "12", 14),
        (r"(a{3,4}){0,5}", "a", 24),
        (r"(a{2,3}){0,40}b", "ab", 10),
        (r"((ab|c){1,3}){2,4}", "abc", 7),
        (r"(a{3,4}){1,9}", "a", 40),
    ],
)
def test_collapsed_repeats_match_like_fullmatch_in_llama_cpp(
    llama: LlamaGrammarHarness, pattern: str, alphabet: str, longest: int
) -> None:
    """Every string up to ``longest`` characters over ``alphabet``."""
    gbnf = regex_to_gbnf(pattern)
    compiled = re.compile(pattern)
    for n in range(longest + 1):
        for chars in itertools.product(alphabet, repeat=n):
            text = "".join(chars)
            assert llama.matches(gbnf, text) == (compiled.fullmatch(text) is not None), text


@pytest.mark.parametrize(
    ("pattern", "count"),
    [
        (r"(((\d{0,40}){0,40}){0,40}){0,40}", 64000),
        (r"((\d{0,40}){0,40}){0,40}", 64000),
        (r"((ab){1,3}){1000}", 3000),
    ],
)
def test_nested_repeats_over_the_limit_once_collapsed_are_refused(pattern: str, count: int) -> None:
    with pytest.raises(UnsupportedGrammarError, match=rf"up to {count} times in all"):
        regex_to_gbnf(pattern)
