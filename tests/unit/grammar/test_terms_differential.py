"""term_to_gbnf against llama.cpp, for Outlines' own types, DSL terms and Python types."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st
from outlines.types import either, exactly, optional
from outlines.types.dsl import Regex, String, python_types_to_terms, to_regex

from outlines_lmstudio._grammar import regex_to_gbnf, term_to_gbnf
from outlines_lmstudio._typed import _language_check

from ._checks import DIFF_SETTINGS, assert_dialect
from ._corpus import DSL_TERMS, OUTLINES_TYPES

if TYPE_CHECKING:  # llama_cpp may be missing: the `llama` fixture then skips
    from ._llama_harness import LlamaGrammarHarness
from .test_regex_differential import check_against_re


@pytest.mark.parametrize(("name", "term"), OUTLINES_TYPES, ids=[n for n, _ in OUTLINES_TYPES])
@DIFF_SETTINGS
@given(data=st.data())
def test_outlines_type(
    llama: LlamaGrammarHarness, name: str, term: Regex, data: st.DataObject
) -> None:
    gbnf = term_to_gbnf(term)
    assert gbnf == regex_to_gbnf(term.pattern)
    assert_dialect(gbnf)
    llama.check_parses(gbnf)
    # re backtracks exponentially on long non-matching paragraphs/sentences.
    max_len = 48 if name in ("paragraph", "sentence") else None
    check_against_re(llama, term.pattern, gbnf, data, max_len)


@pytest.mark.parametrize(("name", "term"), DSL_TERMS, ids=[n for n, _ in DSL_TERMS])
@DIFF_SETTINGS
@given(data=st.data())
def test_dsl_term(llama: LlamaGrammarHarness, name: str, term: object, data: st.DataObject) -> None:
    gbnf = term_to_gbnf(term)
    assert_dialect(gbnf)
    llama.check_parses(gbnf)
    check_against_re(llama, to_regex(python_types_to_terms(term)), gbnf, data)


@pytest.mark.parametrize(
    ("term", "taken", "refused"),
    [
        (Regex("(?i)ab") + String("c"), ["abc", "ABc", "aBc"], ["abC", "ab"]),
        (exactly(2, Regex("(?i)a")), ["aA", "AA"], ["a", "b"]),
        (either(Regex("(?s)a.b"), String("x")) + String("!"), ["a\nb!", "x!"], ["a\nb"]),
        (optional(Regex("(?x) a b # comment")), ["", "ab"], ["a b"]),
    ],
)
def test_a_regex_with_inline_flags_inside_a_term(
    llama: LlamaGrammarHarness, term: object, taken: list[str], refused: list[str]
) -> None:
    """Outlines' to_regex writes ``Regex("(?i)ab") + "c"`` as ``((?i)ab)c``, which Python
    refuses (global flags not at the start) and Outlines' regex engine reads with the flag
    to the end of its group: it is translated, and checked, as ``(?i:ab)c``."""
    gbnf = term_to_gbnf(term)
    llama.assert_language(gbnf, taken, refused)
    check, _ = _language_check(term)
    assert [not check(text) for text in taken] == [True] * len(taken)
    assert [not check(text) for text in refused] == [False] * len(refused)
