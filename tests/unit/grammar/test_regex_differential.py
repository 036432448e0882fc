"""regex_to_gbnf against llama.cpp: llama.cpp accepts exactly what re.fullmatch accepts."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from outlines_lmstudio._grammar import regex_to_gbnf

from ._checks import DIFF_SETTINGS, assert_dialect, chars_for, variants
from ._corpus import REGEXES

if TYPE_CHECKING:  # llama_cpp may be missing: the `llama` fixture then skips
    from ._llama_harness import LlamaGrammarHarness


def test_corpus_is_large_enough() -> None:
    assert len(REGEXES) >= 50
    assert len({name for name, _ in REGEXES}) == len(REGEXES)


def check_against_re(
    llama: LlamaGrammarHarness,
    pattern: str,
    gbnf: str,
    data: st.DataObject,
    max_len: int | None = None,
) -> None:
    """Positive, random and edited strings: llama.cpp agrees with ``re.fullmatch``.

    ``max_len`` bounds the positive strings, for patterns on which ``re`` backtracks
    exponentially when a long string does not match.
    """
    compiled = re.compile(pattern)
    chars = chars_for(pattern)
    positive = st.from_regex(compiled, fullmatch=True)
    if max_len is not None:
        positive = positive.filter(lambda s: len(s) <= max_len)
    samples = [data.draw(positive, label="positive")]
    samples.append(data.draw(st.text(chars, max_size=12), label="random"))
    for text in [s for sample in samples for s in variants(data.draw, sample, chars)]:
        expected = compiled.fullmatch(text) is not None
        assert llama.matches(gbnf, text) == expected, (
            f"llama.cpp {'rejects' if expected else 'accepts'} {text!r}, re.fullmatch does "
            f"{'' if expected else 'not'}\nGBNF:\n{gbnf[:2000]}"
        )


@pytest.mark.parametrize(("name", "pattern"), REGEXES, ids=[n for n, _ in REGEXES])
@DIFF_SETTINGS
@given(data=st.data())
def test_regex_matches_like_fullmatch(
    llama: LlamaGrammarHarness, name: str, pattern: str, data: st.DataObject
) -> None:
    gbnf = regex_to_gbnf(pattern)
    assert_dialect(gbnf)
    llama.check_parses(gbnf)
    check_against_re(llama, pattern, gbnf, data)


def test_harness_rejects_what_it_should(llama: LlamaGrammarHarness) -> None:
    gbnf = 'root ::= "a" [0-9]+ "é"?\n'
    assert llama.matches(gbnf, "a1")
    assert llama.matches(gbnf, "a12é")
    assert not llama.matches(gbnf, "a")
    assert not llama.matches(gbnf, "a1x")
    assert not llama.matches(gbnf, "a1éé")
    assert not llama.matches(gbnf, "")
    with pytest.raises(ValueError, match="rejected the grammar"):
        llama.check_parses("root ::= undefined-rule\n")
    with pytest.raises(ValueError, match="rejected the grammar"):
        llama.check_parses('root ::= root "a" | "b"\n')  # llama.cpp refuses left recursion
    with pytest.raises(ValueError, match="rejected the grammar"):
        llama.check_parses('start ::= "a"\n')  # no root


def test_negated_classes_fail_on_split_characters(llama: LlamaGrammarHarness) -> None:
    # Why the emitter never writes [^...]: llama.cpp rejects U+1E9E fed byte by byte,
    # because the excluded U+1040 shares its first UTF-8 byte's range.
    assert not llama.matches("root ::= [^\\u1040]\n", "\u1e9e")
    assert llama.matches("root ::= [\\x00-\\u103F\\u1041-\\uFFFF]\n", "\u1e9e")
