"""lark_to_gbnf against llama.cpp, with Lark's own Earley parser as the reference.

Known sentences must be accepted. Random derivations of the grammar (random
alternatives, terminals drawn from their regexes, ignored text between tokens), known
sentences, and single-character edits of both are accepted by llama.cpp exactly when
Lark accepts them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

import lark
import outlines.grammars
import pytest
from hypothesis import given
from hypothesis import strategies as st
from lark.grammar import NonTerminal, Symbol
from lark.lexer import PatternStr

from outlines_lmstudio._grammar import lark_to_gbnf
from outlines_lmstudio._grammar._lark import import_loader
from outlines_lmstudio._grammar._recognize import gbnf_language

from ._checks import DIFF_SETTINGS, assert_dialect, chars_for, variants
from ._corpus import LARK_GRAMMARS

if TYPE_CHECKING:  # llama_cpp may be missing: the `llama` fixture then skips
    from ._llama_harness import LlamaGrammarHarness

_IDS = [name for name, *_ in LARK_GRAMMARS]
_MAX_DEPTH = 6


@functools.cache
def reference(grammar: str) -> lark.Lark:
    """Lark's scannerless-equivalent Earley parser: every terminal length is tried."""
    return lark.Lark(
        grammar,
        start="start",
        parser="earley",
        lexer="dynamic_complete",
        import_paths=[import_loader],
    )


@functools.cache
def translated(grammar: str) -> str:
    return lark_to_gbnf(grammar)


@functools.cache
def sentences_of(grammar: str) -> Sentences:
    return Sentences(reference(grammar))


def accepts(parser: lark.Lark, text: str) -> bool:
    try:
        parser.parse(text)
    except lark.exceptions.LarkError:
        return False
    return True


class Sentences:
    """Random sentences of a Lark grammar, built from Lark's compiled rules."""

    def __init__(self, parser: lark.Lark) -> None:
        self.rules: dict[str, list[list[Symbol]]] = {}
        for rule in parser.rules:
            self.rules.setdefault(rule.origin.name, []).append(list(rule.expansion))
        self.terminals = {
            t.name: (
                st.just(t.pattern.value)
                if isinstance(t.pattern, PatternStr) and not t.pattern.flags
                else st.from_regex(t.pattern.to_regexp(), fullmatch=True)
            )
            for t in parser.terminals
        }
        self.ignore = [self.terminals[name] for name in parser.ignore_tokens]
        self.height = self._heights()

    def _heights(self) -> dict[str, int]:
        height: dict[str, int] = {}
        for _ in range(len(self.rules) + 1):
            for name, options in self.rules.items():
                for option in options:
                    subs = [height.get(s.name) for s in option if isinstance(s, NonTerminal)]
                    if all(h is not None for h in subs):
                        best = 1 + max([h for h in subs if h is not None], default=0)
                        height[name] = min(height.get(name, best), best)
        return height

    def draw(self, draw: Callable[..., object]) -> str:
        return self._symbol(draw, NonTerminal("start"), 0) + self._gap(draw)

    def _gap(self, draw: Callable[..., object]) -> str:
        if not self.ignore or not draw(st.booleans()):
            return ""
        text = draw(st.one_of(self.ignore))
        assert isinstance(text, str)
        return text

    def _symbol(self, draw: Callable[..., object], symbol: Symbol, depth: int) -> str:
        if not isinstance(symbol, NonTerminal):
            text = draw(self.terminals[symbol.name])
            assert isinstance(text, str)
            return self._gap(draw) + text
        options = self.rules[symbol.name]
        if depth >= _MAX_DEPTH:  # head for the shallowest alternatives

            def cost(option: list[Symbol]) -> int:
                subs = [self.height[s.name] for s in option if isinstance(s, NonTerminal)]
                return max(subs, default=0)

            least = min(map(cost, options))
            options = [o for o in options if cost(o) == least]
        option = draw(st.sampled_from(options))
        assert isinstance(option, list)
        return "".join(self._symbol(draw, s, depth + 1) for s in option)


@pytest.mark.parametrize(("name", "grammar", "sentences", "exact"), LARK_GRAMMARS, ids=_IDS)
def test_known_sentences(
    llama: LlamaGrammarHarness, name: str, grammar: str, sentences: list[str], exact: bool
) -> None:
    gbnf = lark_to_gbnf(grammar)
    assert_dialect(gbnf)
    llama.check_parses(gbnf)
    parser = reference(grammar)
    for text in sentences:
        assert accepts(parser, text) or not exact, f"test data: Lark rejects {text!r}"
        assert llama.matches(gbnf, text), f"llama.cpp rejects {text!r}\n{gbnf}"
        assert accepts(gbnf_language(grammar), text), text


_CALLS = r"""
start: call
call: NAME "(" [call ("," call)*] ")"
NAME: /[a-z]+/
"""


@pytest.mark.timeout(30)
def test_deep_nesting_is_checked_in_time(llama: LlamaGrammarHarness) -> None:
    """Lark writes ``[x]`` and ``x*`` as alternatives sharing a prefix; llama.cpp followed each
    at every nesting level: a 12-deep JSON array took a minute under Outlines' own JSON
    grammar, each extra level 4 times longer (found by a probe). Factored, 40 levels pass at
    once (the per-test timeout fails the old translation)."""
    json_gbnf = lark_to_gbnf(outlines.grammars.json)
    calls = lark_to_gbnf(_CALLS)
    for depth in (12, 40):
        assert llama.matches(json_gbnf, "[" * depth + "1" + "]" * depth)
        assert llama.matches(json_gbnf, '{"a": ' * depth + "[]" + "}" * depth)
        assert not llama.matches(json_gbnf, "[" * depth + "1" + "]" * (depth - 1) + "}")
        assert llama.matches(calls, "f(" * depth + "g()" + ",h()" + ")" * depth)
        assert not llama.matches(calls, "f(" * depth + "g(,)" + ")" * depth)


@pytest.mark.parametrize(("name", "grammar", "sentences", "exact"), LARK_GRAMMARS, ids=_IDS)
@DIFF_SETTINGS
@given(data=st.data())
def test_random_sentences_and_edits(
    llama: LlamaGrammarHarness,
    name: str,
    grammar: str,
    sentences: list[str],
    exact: bool,
    data: st.DataObject,
) -> None:
    gbnf = translated(grammar)
    parser = reference(grammar)
    sentence = sentences_of(grammar).draw(data.draw)
    if "\x00" in sentence:
        return
    known = data.draw(st.sampled_from(sentences))
    # Mostly a sentence; not always: a comment drawn before a token can swallow it.
    chars = chars_for(grammar)
    for text in variants(data.draw, sentence, chars) + variants(data.draw, known, chars):
        # What parse checks a reply with, when Lark's lexer refuses it: exactly llama.cpp's.
        sent = llama.matches(gbnf, text)
        assert accepts(gbnf_language(grammar), text) == sent, (text, gbnf)
        expected = accepts(parser, text)
        if not exact and not expected:
            continue  # GBNF may accept splits Lark's greedy lexer does not make
        assert sent == expected, (
            f"llama.cpp {'rejects' if expected else 'accepts'} {text!r}, Lark does "
            f"{'' if expected else 'not'}\n{gbnf}"
        )


def test_only_grammars_lark_reads_otherwise_are_checked_against_the_gbnf() -> None:
    """Found by a review: the char-by-char parse took a minute on ambiguous splits, so it
    is kept to grammars whose terminals Lark's lexers read otherwise than GBNF."""
    from outlines_lmstudio._grammar._recognize import read_otherwise_by_lark

    assert read_otherwise_by_lark("start: OP\nOP: /<|<=/\n")
    assert read_otherwise_by_lark('start: S\nS: /".*?"/\n')
    assert not read_otherwise_by_lark('start: WORD WORD "!"\nWORD: /[a-z]+/\n')
    with pytest.raises(ValueError, match=r"\{1,2000\} is too wide"):
        gbnf_language("start: A\nA: /a{1,2000}/\n")


def test_a_grammar_with_a_terminal_matching_nothing_is_checked_without_failing() -> None:
    """Found by a probe: an empty class was written as /[]/, and the check raised."""
    from outlines_lmstudio._typed import _grammar_check

    grammar = 'start: "a" B? | C\nB: /\\x00/\nC: /if|ab/\n'
    assert accepts(gbnf_language(grammar), "a")
    assert not accepts(gbnf_language(grammar), "b")
    parses, _ = _grammar_check(grammar)
    assert parses("ab") == []
    assert "not in the grammar" in parses("ac")[0]
