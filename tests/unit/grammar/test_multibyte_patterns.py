r"""A quantified non-ASCII character in a ``pattern``, as llama.cpp's C++ converter reads it.

The C++ converter reads a pattern byte by byte (found by a differential fuzz): before a
quantifier, it cuts a non-ASCII character in two and repeats its last UTF-8 byte alone
(``^Café?$`` is ``"Caf\xc3" "\xa9"?``), and llama.cpp's grammar parser refuses the grammar:
LM Studio fails the prediction. In a group (``(é)?``) its bytes stay one literal. The library
sends the group; the emulator's llama.cpp engine writes the cut grammar, as the C++ converter
does, which llama.cpp's parser (and the emulator's own) refuses. Each grammar is parsed and
matched by llama.cpp's grammar code; with ``LLAMA_JSON_SCHEMA_TO_GRAMMAR`` set, the C++
build's grammar too.
"""

from __future__ import annotations

import random
import re
from typing import TYPE_CHECKING, Any

import pytest

from outlines_lmstudio._patterns import engine_pattern
from outlines_lmstudio.testing._gbnf import GrammarError, parse_gbnf
from outlines_lmstudio.testing._llama import json_schema_grammar
from outlines_lmstudio.testing._llama_pattern import cut_character
from tests.cpp_converter import CPP_CONVERTER, run_cpp_converter

if TYPE_CHECKING:
    from ._llama_harness import LlamaGrammarHarness

_REFUSED = "llama.cpp rejected the grammar: failed to parse grammar"
_RULE = re.compile(r"^(\S+) ::= (.*)$", re.MULTILINE)

# (pattern, JSON strings its engine form takes, refuses)
SENT: list[tuple[str, list[str], list[str]]] = [
    (r"^Café?$", ['"Café"', '"Caf"'], ['"Cafe"', '"Caféé"', '"Cafée"']),
    (r"^é+$", ['"é"', '"ééé"'], ['""', '"e"']),
    (r"^日{2}$", ['"日日"'], ['"日"', '"日日日"']),
    (r"^[a-z]+ü?$", ['"ab"', '"abü"'], ['"abüü"', '"ü"']),
    (r"^\u00e9*x$", ['"x"', '"éx"'], ['"ex"']),
    (r"^\xe9{1,2}$", ['"é"', '"éé"'], ['"ééé"']),
    (r"^(a|ü+)b$", ['"ab"', '"üüb"'], ['"b"', '"aüb"']),
    (r"^\U0001F600{2}$", ['"😀😀"'], ['"😀"']),
]


def _rules(gbnf: str) -> dict[str, str]:
    """The rules a pattern writes, a string's trailing ``space`` left out (as the C++ build)."""
    rules = _RULE.findall(gbnf)
    return {k: v.removesuffix(" space") for k, v in rules if re.fullmatch(r"root(-\d+)?|dot", k)}


def _cpp_grammar(schema: dict[str, Any]) -> str:
    """The C++ build's grammar, its bytes as ``surrogateescape`` reads them."""
    done = run_cpp_converter(schema)
    assert done.stdout.startswith("OK "), done.stdout
    return done.stdout[3:].rstrip("\n").replace("\x01", "\n")


@pytest.mark.parametrize(("pattern", "taken", "refused"), SENT)
def test_the_library_sends_a_quantified_non_ascii_character_as_a_group(
    llama: LlamaGrammarHarness, pattern: str, taken: list[str], refused: list[str]
) -> None:
    schema = {"type": "string", "pattern": engine_pattern(pattern)}
    gbnf = json_schema_grammar(schema)
    llama.assert_language(gbnf, taken, refused)
    assert cut_character(schema["pattern"]) is None
    if CPP_CONVERTER:
        cpp = _cpp_grammar(schema)
        assert _rules(cpp) == _rules(gbnf)
        llama.assert_language(cpp, taken, refused)


# (pattern, the root rule's GBNF between the quotes: bytes as surrogateescape writes them)
CUT: list[tuple[str, str]] = [
    ("^Café?$", '"Caf\udcc3" "\udca9"?'),
    ("^é+$", '"\udcc3" "\udca9"+'),
    ("^日{2}$", '"\udce6\udc97" "\udca5"{2,2}'),
    ("^[a-z]+ü?$", '[a-z]+ "\udcc3" "\udcbc"?'),
    ("^a|é*?$", '"a" | "\udcc3" "\udca9"*?'),
    ("^😀+$", '"\udcf0\udc9f\udc98" "\udc80"+'),
    ("^aé{0}b$", '"a\udcc3"  "b"'),  # {0}: the last byte is gone, the literal still cut
]


@pytest.mark.parametrize(("pattern", "inside"), CUT)
def test_the_llama_engine_cuts_a_quantified_non_ascii_character_as_llama_cpp_does(
    llama: LlamaGrammarHarness, pattern: str, inside: str
) -> None:
    schema = {"type": "string", "pattern": pattern}
    gbnf = json_schema_grammar(schema)
    assert _rules(gbnf)["root"] == f'"\\"" ({inside}) "\\""'
    with pytest.raises(ValueError, match=_REFUSED):
        llama.check_parses(gbnf)
    with pytest.raises(GrammarError, match=r"^expected '\)'"):
        parse_gbnf(gbnf)  # the emulator's parser, which names the place
    reason = cut_character(pattern)
    assert reason is not None
    assert reason.startswith("failed to parse grammar: expected ')' (line 1, at ")
    if CPP_CONVERTER:
        cpp = _cpp_grammar(schema)
        assert _rules(cpp) == _rules(gbnf)
        with pytest.raises(ValueError, match=_REFUSED):
            llama.check_parses(cpp)


@pytest.mark.parametrize(
    "pattern", ["^(é)+$", "^é$", "^é.$", "^é|x$", "^é(x)?$", r"^\u00e9+$", "^é{x}$", "^Cafe?$"]
)
def test_a_non_ascii_character_not_cut_parses(llama: LlamaGrammarHarness, pattern: str) -> None:
    """A group, a dot or an operator but a quantifier after it: its bytes stay together."""
    schema = {"type": "string", "pattern": pattern}
    gbnf = json_schema_grammar(schema)
    llama.check_parses(gbnf)
    assert cut_character(pattern) is None
    if CPP_CONVERTER:
        assert _rules(_cpp_grammar(schema)) == _rules(gbnf)


def test_cut_character_ignores_what_the_converter_writes_no_grammar_for() -> None:
    assert cut_character("Café?") is None  # unanchored: not translated
    assert cut_character("^(é+$") is None  # invalid: the conversion fails first
    assert cut_character(r"^é+\d$") is None  # unsupported: any string


def test_the_emulators_parser_reads_bytes_as_llama_cpp_does(llama: LlamaGrammarHarness) -> None:
    """A character's bytes (as ``surrogateescape`` writes them) are the character; a leading
    byte takes the next ones whatever they are, a quote too."""
    whole = 'root ::= "\udcc3\udca9"'
    llama.assert_language(whole, ["é"], ["e", "\u00c3"])
    assert parse_gbnf(whole).sample(random.Random(0)) == "é"
    cut = 'root ::= "\udcc3" "\udca9"'
    with pytest.raises(ValueError, match=_REFUSED):
        llama.check_parses(cut)
    with pytest.raises(GrammarError, match=r"expected a line break .* at '\\udca9\"'"):
        parse_gbnf(cut)
