"""The GBNF syntax check of grammars sent as they are, against llama.cpp's own parser."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from outlines_lmstudio._grammar import lark_to_gbnf, regex_to_gbnf
from outlines_lmstudio._grammar._gbnf_syntax import GbnfSyntaxError, check_gbnf_syntax

from ._corpus import LARK_GRAMMARS, REGEXES

if TYPE_CHECKING:  # llama_cpp may be missing: the `llama` fixture then skips
    from ._llama_harness import LlamaGrammarHarness

VALID = {
    "one rule": 'root ::= "yes" | "no"',
    "comments and blank lines": '# a comment\n\nroot ::= a # after\n\na ::= "x"\n',
    "CRLF": 'root ::= a\r\na ::= "x"\r\n',
    "newlines inside parentheses": 'root ::= (\n  "a"\n  | "b"\n)',
    "continuation after a bar": 'root ::= "a" |\n  "b"',
    "escapes": r'root ::= "\x41\u00e9\U0001F600\t\r\n\\\"\[\]\-"',
    "classes": r"root ::= [a-z0-9_\-\]] [^\n\x00-\x1F] [-a] [a-]",
    "any char and repetitions": 'root ::= . "a"* "b"+ "c"? "d"{2} "e"{1,} "f"{0,3} ("g")*',
    "spaced counts": 'root ::= "a"{ 1 , 3 } "b"{ 2 }',
    "a repetition of a repetition": 'root ::= ("a"+)* "c"+?',
    "counts above 2000 as a maximum": 'root ::= "a"{0,5000}',
    "an empty alternative": 'root ::= "a" |',
    "a rule defined twice": 'root ::= a\na ::= "x"\na ::= "y"',
    "token ids": "root ::= <[12]> !<[3]>",
    "names with digits and dashes": 'root ::= a-1\na-1 ::= "x"',
    "non-ASCII literals": 'root ::= "héllo, 世界"',
    # Found by a fuzz against llama.cpp (the checker refused them):
    "an undefined rule {0} removes": 'root ::= "x" a{0}',
    "an undefined rule only in a replaced definition": 'root ::= a\nroot ::= "x"',
}

INVALID = {
    "unbalanced parentheses": ("((((", "expecting a rule name", 1, 1),
    "no ::=": ('root := "a"', "expecting '::='", 1, 6),
    "an unclosed literal": ('root ::= "abc', "no closing '\"'", 1, 14),
    "an unclosed class": ("root ::= [a-", "no closing ']'", 1, 13),
    "an unknown escape": (r'root ::= "\q"', "unknown escape", 1, 11),
    "a short hex escape": (r'root ::= "\x4"', "expecting 2 hex digits", 1, 11),
    "an undefined rule": ('root ::= a "b"\nb ::= "c"', "'a' is used but never defined", 1, 10),
    "no root": ('start ::= "a"', "no 'root' rule", 1, 14),
    "a repetition of nothing": ('root ::= *"a"', "'*' with no item before it", 1, 10),
    "a repetition after a bar": ('root ::= "a" | +"b"', r"'\+' with no item", 1, 16),
    "too many repetitions": ('root ::= "a"{2001}', "at least 2001", 1, 13),
    "a repetition after {0}": ('root ::= "a"{0}*', "'*' with no item", 1, 16),
    "a closing parenthesis too many": ('root ::= "a" )', "expecting the end of the rule", 1, 14),
    "an underscore in a name": ('ro_ot ::= "a"', "expecting '::='", 1, 3),
    "a second rule on the same line": ('root ::= "a" b ::= "c"', "expecting the end", 1, 16),
    "an unclosed token": ("root ::= <[12", "expecting ']>'", 1, 14),
    "a bang without a token": ('root ::= !"a"', "expecting '<'", 1, 11),
    "an unclosed count": ('root ::= "a"{2', "expecting '}' or ','", 1, 15),
    # Found by a fuzz against llama.cpp (the checker let them through):
    "a repetition of an empty literal": ('root ::= "x" ""*', "'\\*' with no item", 1, 16),
    "a repetition of an empty class": ("root ::= []+", "'\\+' with no item", 1, 12),
    "a count of an empty negated class": ("root ::= [^]{2}", "'\\{' with no item", 1, 13),
    "a token id beyond 32 bits": ("root ::= <[4294967296]>", "beyond 32 bits", 1, 12),
    "an empty token": ("root ::= !<>", "an empty token", 1, 11),
    "an error after a lone CR": ('root ::= "a"\rb ::= "x" )', "expecting the end", 2, 11),
}

# Refused here, where llama.cpp would not say so: it counts the optional copies of {3,1}
# from 1 - 3 as an unsigned 64-bit number (its loop runs for ever: never sent to it),
# reads the grammar as a C string (a NUL ends it: what follows would be dropped silently),
# and crashes on a root referred to only by a replaced definition.
NOT_FOR_LLAMA = {
    "a maximum below the minimum": ('root ::= "a"{3,1}', "maximum is below", 1, 13),
    "a NUL": ('root ::= "a"\x00 | "b"', "NUL", 1, 13),
    # llama.cpp crashes on it (SIGSEGV; found by a fuzz against it).
    "root only in a replaced definition": ('a ::= root\na ::= "x"', "no 'root' rule", 2, 10),
}


@pytest.mark.parametrize("text", VALID.values(), ids=VALID.keys())
def test_what_llama_cpp_parses_passes(text: str) -> None:
    check_gbnf_syntax(text)


@pytest.mark.parametrize(
    ("text", "what", "line", "column"),
    [*INVALID.values(), *NOT_FOR_LLAMA.values()],
    ids=[*INVALID.keys(), *NOT_FOR_LLAMA.keys()],
)
def test_what_llama_cpp_refuses_is_refused_with_where(
    text: str, what: str, line: int, column: int
) -> None:
    with pytest.raises(GbnfSyntaxError, match=what) as info:
        check_gbnf_syntax(text)
    assert (info.value.line, info.value.column) == (line, column)
    assert f"line {line}, column {column}" in str(info.value)


def test_a_token_by_its_text_is_left_to_the_model_s_vocabulary() -> None:
    check_gbnf_syntax('root ::= <think> "a" !<|end|>')  # whether each is one token: LM Studio


@pytest.mark.parametrize("text", VALID.values(), ids=VALID.keys())
def test_llama_cpp_parses_the_valid_ones(llama: LlamaGrammarHarness, text: str) -> None:
    llama.check_parses(text)


@pytest.mark.parametrize("text", [v[0] for v in INVALID.values()], ids=INVALID.keys())
def test_llama_cpp_refuses_the_invalid_ones(llama: LlamaGrammarHarness, text: str) -> None:
    with pytest.raises(ValueError, match=r"llama\.cpp rejected"):
        llama.check_parses(text)


def test_every_grammar_we_write_passes() -> None:
    """No false refusal of what our translators send (which llama.cpp parses)."""
    for _, pattern in REGEXES:
        check_gbnf_syntax(regex_to_gbnf(pattern))
    for _, grammar, *_ in LARK_GRAMMARS:
        check_gbnf_syntax(lark_to_gbnf(grammar))
