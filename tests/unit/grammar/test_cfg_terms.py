"""term_to_gbnf for Outlines DSL terms that contain a Lark grammar (CFG), against llama.cpp.

Only the parts of a term that hold a CFG are translated node by node (the rest goes
through the regex path); each combinator around a CFG is checked here by what
llama.cpp's own grammar code accepts and refuses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from outlines.types import CFG
from outlines.types.dsl import (
    Alternatives,
    Choice,
    KleenePlus,
    KleeneStar,
    Optional,
    QuantifyBetween,
    QuantifyExact,
    QuantifyMaximum,
    QuantifyMinimum,
    Regex,
    Sequence,
    String,
)

from outlines_lmstudio._grammar import term_to_gbnf

from ._checks import assert_dialect

if TYPE_CHECKING:  # llama_cpp may be missing: the `llama` fixture then skips
    from ._llama_harness import LlamaGrammarHarness

AB = CFG('?start: "a" "b"')  # the language {"ab"}

CASES: list[tuple[str, object, list[str], list[str]]] = [
    ("sequence", Sequence([String("x="), AB]), ["x=ab"], ["ab", "x=a", "x=abab"]),
    ("alternatives", Alternatives([AB, Regex("[0-9]")]), ["ab", "7"], ["a", "77", "ab7"]),
    ("choice", Choice([AB, "zz"]), ["ab", "zz"], ["z", "abzz"]),
    ("star", KleeneStar(AB), ["", "ab", "abab"], ["a", "aba"]),
    ("plus", KleenePlus(AB), ["ab", "ababab"], ["", "ba"]),
    ("optional", Optional(AB), ["", "ab"], ["abab"]),
    ("exactly", QuantifyExact(AB, 2), ["abab"], ["ab", "ababab"]),
    ("at least", QuantifyMinimum(AB, 2), ["abab", "ababab"], ["ab"]),
    ("at most", QuantifyMaximum(AB, 2), ["", "ab", "abab"], ["ababab"]),
    ("between", QuantifyBetween(AB, 1, 2), ["ab", "abab"], ["", "ababab"]),
    ("twice", Sequence([AB, String("-"), AB]), ["ab-ab"], ["ab-", "abab"]),
]


@pytest.mark.parametrize(
    ("name", "term", "accepted", "refused"), CASES, ids=[case[0] for case in CASES]
)
def test_a_cfg_inside_a_term(
    llama: LlamaGrammarHarness,
    name: str,
    term: object,
    accepted: list[str],
    refused: list[str],
) -> None:
    gbnf = term_to_gbnf(term)
    assert_dialect(gbnf)
    llama.check_parses(gbnf)
    for text in accepted:
        assert llama.matches(gbnf, text), (name, text, gbnf)
    for text in refused:
        assert not llama.matches(gbnf, text), (name, text, gbnf)


def test_a_grammar_used_twice_is_emitted_once() -> None:
    gbnf = term_to_gbnf(Sequence([AB, String("-"), AB]))
    assert gbnf == 'root ::= start "-" start\nstart ::= "ab"\n'  # its rules once, used twice
