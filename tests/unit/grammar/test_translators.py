"""Unit tests of the translators: dialect, goldens, refusals, determinism, exports."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import typing

import pydantic
import pytest
from outlines import grammars
from outlines.types import CFG, Regex
from outlines.types.dsl import at_least, either, zero_or_more

import outlines_lmstudio._grammar as grammar_pkg
from outlines_lmstudio._grammar import lark_to_gbnf, regex_to_gbnf, term_to_gbnf
from outlines_lmstudio._grammar._gbnf import NOTHING, Alt, Chars, GbnfBuilder, Lit, alt, rep, seq
from outlines_lmstudio.errors import UnsupportedGrammarError, UnsupportedOutputTypeError

from ._checks import assert_dialect
from ._corpus import LARK_GRAMMARS, REFUSED_OUTLINES_TYPES, REGEXES


def test_all_is_explicit_and_sorted() -> None:
    assert grammar_pkg.__all__ == sorted(grammar_pkg.__all__)
    assert set(grammar_pkg.__all__) == {"lark_to_gbnf", "regex_to_gbnf", "term_to_gbnf"}


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (r"[+-]?(0|[1-9][0-9]*)", 'root ::= [+\\x2D]? ("0" | [1-9] [0-9]*)\n'),
        (r"^(?:ab){2,3}$", 'root ::= "abab" "ab"?\n'),
        (r'a"\\\n\t\x01é😀', 'root ::= "a\\"\\\\\\n\\t\\x01\\u00E9😀"\n'),
        (r"[\]\[\\^-]", "root ::= [\\x2D\\[-\\x5E]\n"),
        (r"(?i)k", "root ::= [Kk\\u212A]\n"),
        (r"(ab|c){3}", 'root ::= rep rep rep\nrep ::= "ab" | "c"\n'),
        (r"a(?:b?)*", 'root ::= "a" "b"*\n'),
        (r"", 'root ::= ""\n'),
        (r"[^\s\S]", "root ::= [^\\x00-\U0010ffff]\n"),
    ],
)
def test_golden_regexes(pattern: str, expected: str) -> None:
    assert regex_to_gbnf(pattern) == expected


def test_lark_left_recursion_without_base_is_empty() -> None:
    assert lark_to_gbnf('start: start "x"?\n') == "root ::= start\nstart ::= [^\\x00-\U0010ffff]\n"
    assert lark_to_gbnf('start: start "x"? | "y"\n') == 'root ::= start\nstart ::= "y" "x"*\n'


def test_golden_lark_left_recursion_rewrite() -> None:
    gbnf = lark_to_gbnf('start: start "+" NUM | NUM\nNUM: /[0-9]+/\n')
    assert gbnf == 'root ::= start\nstart ::= NUM ("+" NUM)*\nNUM ::= [0-9]+\n'


@pytest.mark.parametrize("pattern", [p for _, p in REGEXES])
def test_corpus_is_in_dialect_and_deterministic(pattern: str) -> None:
    gbnf = regex_to_gbnf(pattern)
    assert_dialect(gbnf)
    assert regex_to_gbnf(pattern) == gbnf


@pytest.mark.parametrize("grammar", [g for _, g, *_ in LARK_GRAMMARS])
def test_lark_is_in_dialect(grammar: str) -> None:
    assert_dialect(lark_to_gbnf(grammar))


def test_output_does_not_depend_on_hash_seed() -> None:
    script = textwrap.dedent(
        """
        from outlines import grammars
        from outlines_lmstudio._grammar import lark_to_gbnf, regex_to_gbnf, term_to_gbnf
        print(regex_to_gbnf(r"(a|b|c){2,4}[^x]\\w"), lark_to_gbnf(grammars.json),
              term_to_gbnf(list[dict]), sep="#")
        """
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={"PYTHONHASHSEED": seed, "PATH": ""},
            capture_output=True,
            text=True,
            check=True,
            timeout=50,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1


def test_repeat_limit() -> None:
    assert_dialect(regex_to_gbnf("a{2000}b{0,2000}"))
    with pytest.raises(UnsupportedGrammarError, match=r"at most 2000 repetitions"):
        regex_to_gbnf("a{2001}")
    with pytest.raises(UnsupportedGrammarError, match=r"limit of 2000"):
        GbnfBuilder()._repeat(rep(Lit("a"), 0, 2001))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("pattern", "construct"),
    [
        (r"a(?=b)", "lookahead"),
        (r"a(?!b)b", "lookahead"),
        (r"(?<=a)b", "lookbehind"),
        (r"(?<!a)b", "lookbehind"),
        (r"(a)\1", "backreference"),
        (r"(?P<x>a)(?P=x)", "backreference"),
        (r"(a)?(?(1)b|c)", "conditional"),
        (r"(?>a+)b", "atomic"),
        (r"a*+b", "possessive"),
        (r"a\bb", "word boundary"),
        (r"a\Bb", "word boundary"),
        (r"a^b", "anchor"),
        (r"a$b", "anchor"),
        (r"(a^)*", "anchor"),
        (r"a\Ab", "anchor"),
        (r"(?L)a", "not a valid Python regex"),
        (r"a(", "not a valid Python regex"),
        (r"a{99999999999999999999}", "not a valid Python regex"),  # was OverflowError
        ("(?:" * 1000 + "a" + ")" * 1000, "nested too deeply"),  # was RecursionError
        ("(?:a|" * 400 + "b" + ")*" * 400, "nested too deeply"),
        ("(?u)(?a)x", "not a valid Python regex"),  # was re._parser's bare ValueError
        ("(" * 5000 + "a" + ")" * 5000, "nested too deeply"),  # was 10,145 characters long
        ("a" * 5000 + "(?=b)", "lookahead"),
        ("a" * 5000 + "(", "not a valid Python regex"),
    ],
)
def test_refused_regex_constructs(pattern: str, construct: str) -> None:
    with pytest.raises(UnsupportedGrammarError, match=construct) as info:
        regex_to_gbnf(pattern)
    assert repr(pattern)[:200] in str(info.value)  # says where
    assert len(str(info.value)) < 700  # a long pattern is clipped to its first 200 characters


def test_refused_types_say_why() -> None:
    for term in REFUSED_OUTLINES_TYPES:
        with pytest.raises(UnsupportedGrammarError, match="lookahead"):
            term_to_gbnf(term)
    with pytest.raises(UnsupportedOutputTypeError, match="cannot be used in grammar mode"):
        term_to_gbnf(object)
    with pytest.raises(TypeError, match="as str"):
        regex_to_gbnf(b"abc")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("term", "instead"),
    [
        (either(int, "none"), "outlines.types.integer for int"),  # type: ignore[arg-type]
        (either(typing.Literal["a", "b"], "none"), "either('a', 'b') for Literal"),  # type: ignore[arg-type]
    ],
)
def test_a_python_type_inside_a_term_says_what_to_write(term: object, instead: str) -> None:
    """The message listed int and Literal among the parts a term may have, right after
    refusing one (found by a probe): they are terms only as the whole output type."""
    with pytest.raises(UnsupportedOutputTypeError, match="cannot be used in grammar mode") as info:
        term_to_gbnf(term)
    assert instead in str(info.value)


def test_a_type_outlines_has_no_regex_for_gets_our_way_out_not_outlines_issue_tracker() -> None:
    """Found by a probe: ``Choice([None, "x"])`` in grammar mode said "Please open an issue:
    https://github.com/dottxt-ai/outlines/issues" (Outlines' words), and no way out."""
    from outlines.types import Choice

    with pytest.raises(UnsupportedOutputTypeError) as info:
        term_to_gbnf(Choice([None, "x"]))
    message = str(info.value)
    assert "open an issue" not in message
    assert "Type None is currently not supported" in message
    assert "without grammar=True it is asked for as a JSON schema" in message


@pytest.mark.parametrize(
    ("grammar", "start_named"),
    [
        ('start: E "x"\nE: /a*/\n', False),  # a zero-width terminal: start is there
        ('start: ("x"\n', False),  # a syntax error
        ('other: "a"\n', True),  # no start rule
    ],
)
def test_a_lark_grammar_that_does_not_load_names_the_start_rule_only_if_missing(
    grammar: str, start_named: bool
) -> None:
    """Found by a probe: every load error ended with "It needs a `start` rule"."""
    with pytest.raises(UnsupportedGrammarError) as info:
        lark_to_gbnf(grammar)
    assert ("It needs a `start` rule" in str(info.value)) is start_named
    assert "lark.Lark(grammar, start='start', parser='earley')" in str(info.value)


def test_regex_and_cfg_terms() -> None:
    assert term_to_gbnf(Regex(r"\d?")) == regex_to_gbnf(r"\d?")
    assert term_to_gbnf(CFG(grammars.arithmetic)) == lark_to_gbnf(grammars.arithmetic)
    assert term_to_gbnf(dict) == lark_to_gbnf(grammars.json)


@pytest.mark.parametrize(
    ("grammar", "message"),
    [
        ('start: a\na: b "x" | "y"\nb: a "z"\n', r"left-recursive through a -> b -> a"),
        ('start: a\na: b a "x" | "y"\nb: "z"?\n', r"left-recursive through a -> a"),
        # found by a probe: Lark's own helper rule (__start_plus_0) was named
        (
            'start: (start ",")+ "a" | "b"\n',
            r"through start -> a repetition \(\+\) in start -> start; .* A repetition whose",
        ),
        (  # and a counted one's (found by a review: __start_repeat_a5_b0_2)
            'start: (start ",")~60..70 "a" | "b"\n',
            r"through start -> a repetition \(~\) in start -> .* A repetition whose",
        ),
        ('start: start a | "y"\na: "x"?\n', r"can match the empty string"),
        ('start: a*\na: "x"?\n', r"can match the empty string"),
        # found by a probe: Lark's helper rule was named ('__start_plus_0')
        ('start: a+\na: "x"?\n', r"^A repetition \(\+\) in Lark rule 'start' repeats"),
        ("start: x\n", "could not be loaded"),
        ("%import other.X\nstart: X\n", r"%import of 'other'"),
        ("start: FOO\n%declare FOO\n", "declared but has no definition"),
        ("start: /a(?=b)/\n", "lookahead assertion in Lark terminal"),
        # Lark tests ^ and $ in a terminal against the whole input (here it accepts nothing)
        ('start: KEY "=" VALUE\nKEY: /[a-z]+$/\nVALUE: /[0-9]+/\n', r"anchor.*Lark terminal KEY"),
        ("start: A\nA: /^a/\n", r"Lark terminal A '\^a'.*Remove the anchor"),
        ("start: A\nA: /a\\Z/\n", r"anchor.*Lark terminal A"),
        ("start: A\nA: /(?m)a$/\n", r"anchor.*Lark terminal A"),
        ("start: /(^a|b)c/\n", r"anchor.*Lark terminal __ANON_0"),
        ('other: "a"\n', "could not be loaded|no `start`"),
        ("start: /a{99999999999999999999}/\n", "could not be loaded"),  # was OverflowError
        ("start: " + "(" * 3000 + '"a"' + ")" * 3000 + "\n", "nested too deeply|not be loaded"),
        # found by a probe: LM Studio's own syntax given to CFG got Lark's caret excerpt
        ('root ::= "yes" | "no"\n', r"at line 1 column 7\. It needs .* It looks like GBNF"),
        ('other: "a"\n', r"undefined rule: start\. It needs"),  # not NonTerminal('start')
    ],
)
def test_refused_lark_grammars(grammar: str, message: str) -> None:
    with pytest.raises(UnsupportedGrammarError, match=message) as info:
        lark_to_gbnf(grammar)
    assert "\n" not in str(info.value)  # one line, as the CLI prints it


@pytest.mark.parametrize(
    "unused",
    [
        'old: helper "y"\nhelper: old "z"\n',  # left-recursive
        "old: helper BAD\nhelper: old\nBAD: /(?=a)a/\n",  # a lookahead
        'old: helper | "q"\nhelper: ("y"?)* old\n',  # a loop over the empty string
        "old: old2 A\nold2: old\nA: /a$/\n",  # an anchor in a terminal
    ],
)
def test_rules_start_does_not_reach_are_not_checked_or_translated(unused: str) -> None:
    """Lark keeps unused rules that refer to each other; they are not in the language."""
    assert lark_to_gbnf('start: "x"\n' + unused) == lark_to_gbnf('start: "x"\n')


def test_ir_simplifications() -> None:
    assert rep(NOTHING, 0, None) == Lit("")
    assert rep(NOTHING, 1, None) == NOTHING
    assert seq(Lit("a"), NOTHING) == NOTHING
    assert rep(rep(Chars(((97, 98),)), 1, None), 0, 1) == rep(Chars(((97, 98),)), 0, None)
    with pytest.raises(ValueError, match="bad repeat bounds"):
        rep(Lit("a"), 3, 2)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [("(?i)ab", "root ::= [Aa] [Bb]\n"), (r"(a)b\1", None)],
)
def test_a_bare_regex_term_is_read_as_written(pattern: str, expected: str | None) -> None:
    """Outlines' to_regex wraps a Regex in a group: "((?i)ab)" would be an invalid regex."""
    if expected is None:
        with pytest.raises(UnsupportedGrammarError, match="backreference"):
            term_to_gbnf(Regex(pattern))
    else:
        assert term_to_gbnf(Regex(pattern)) == expected


def test_alternatives_are_deduplicated_in_linear_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Choice of 10,000 words took 9 s: each alternative was compared with every earlier one.

    Counted rather than timed: the comparisons of nodes, not the seconds.
    """
    comparisons = 0
    plain_eq = Lit.__eq__

    def counting_eq(self: Lit, other: object) -> bool:
        nonlocal comparisons
        comparisons += 1
        return plain_eq(self, other)

    words = [Lit(f"w{i}") for i in range(2000)]
    monkeypatch.setattr(Lit, "__eq__", counting_eq)
    node = alt(*words, Lit("w7"), NOTHING)
    monkeypatch.undo()
    assert node == Alt(tuple(words))  # order kept, the duplicate and the empty set dropped
    assert comparisons < 100  # was about two million


@pytest.mark.parametrize(
    "term",
    [
        Regex("\ud800"),
        Regex("\x00"),
        Regex("[\ud800-\udfff]+"),
        CFG('start: "a" "\\x00"'),
        CFG("start: /[\\ud800-\\udfff]/"),
    ],
    ids=ascii,
)
def test_characters_no_reply_can_hold_match_nothing(term: object) -> None:
    """Found by a probe: NUL (llama.cpp never allows it) and lone surrogates were sent, so
    no engine could finish the reply (the emulator wrote them)."""
    from outlines_lmstudio._grammar._api import sendable_gbnf

    with pytest.raises(UnsupportedGrammarError, match="NUL or a lone surrogate"):
        sendable_gbnf(term)


def test_classes_leave_out_nul_and_lone_surrogates() -> None:
    assert regex_to_gbnf("[^a]") == "root ::= [\\x01-`b-\\uD7FF\\uE000-\U0010ffff]\n"


class _Named(pydantic.BaseModel):
    name: str


@pytest.mark.parametrize(
    "term",
    # Outlines' DSL takes these at run time; its annotations say only str and Term.
    [either(_Named, Regex("none")), Regex("a") + _Named, either(dict, "x")],  # type: ignore[arg-type, operator]
    ids=repr,
)
def test_a_term_holding_a_type_without_a_regex_is_refused_with_advice(term: object) -> None:
    """Found by a probe: a bare ``TypeError`` from Outlines' ``to_regex``."""
    with pytest.raises(
        UnsupportedOutputTypeError, match=r"cannot be used in grammar mode.*grammar=False"
    ):
        term_to_gbnf(term)


@pytest.mark.parametrize(
    "term", [zero_or_more(CFG('start: "x"?')), at_least(1, CFG('start: "x"?'))], ids=repr
)
def test_a_repeated_cfg_that_can_be_empty_is_refused_naming_the_term(term: object) -> None:
    """Found by a probe: the error named a Lark rule 'root' the user never wrote."""
    with pytest.raises(UnsupportedGrammarError, match=r"Outlines term .*CFG.* repeats a CFG"):
        term_to_gbnf(term)


def test_a_long_alternative_is_written_out_not_recursed_into() -> None:
    """The factoring of shared beginnings recursed once per symbol: a rule of one
    500-symbol alternative was refused as "nested too deeply" (found by a review). Lark
    takes seconds to load such a rule, so the factoring is called on its symbols."""
    from lark.grammar import Symbol, Terminal

    from outlines_lmstudio._grammar._gbnf import Lit, alt, seq
    from outlines_lmstudio._grammar._lark import _factored

    long: list[Symbol] = [Terminal(f"W{i}") for i in range(5000)]
    shared: list[Symbol] = [*long[:10], Terminal("END")]

    def symbol(sym: Symbol) -> Lit:
        return Lit(f"<{sym.name}>")

    written = _factored([long, shared], symbol)
    prefix = "".join(f"<W{i}>" for i in range(10))
    rest = "".join(f"<W{i}>" for i in range(10, 5000))
    assert written == seq(Lit(prefix), alt(Lit(rest), Lit("<END>")))
