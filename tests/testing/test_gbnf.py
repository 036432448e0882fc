"""GBNF parsing and sampling; llama.cpp's own grammar code accepts every sample."""

from __future__ import annotations

import importlib.util
import random
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lmstudio as lms
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outlines_lmstudio.testing import LMStudioEmulator
from outlines_lmstudio.testing._gbnf import SAMPLE_LIMIT, GrammarError, parse_gbnf, sample_gbnf
from outlines_lmstudio.testing._sampler import split_fragments

from .conftest import MLX, TEXT

GRAMMARS = {
    "yes_no": 'root ::= "yes" | "no"',
    "digits": "root ::= [1-9] [0-9]{0,3}",
    "list": 'root ::= "[" item ("," item)* "]"\nitem ::= [a-z]+',
    "escapes": 'root ::= "\\x41\\u00e9\\t" [\\x30-\\x39] "\\"" [\\[\\]] "\\\\"',
    "negated": 'root ::= "<" [^<>\\n]{1,8} ">"',
    "any": "root ::= . . .?",
    "groups": 'root ::= ("a" | "b" "c")+ ("x"? "y"){2,}',
    "json_like": (
        "root ::= object\n"
        'object ::= "{" ws ( pair ( "," ws pair )* )? "}"\n'
        'pair ::= string ":" ws value\n'
        'value ::= object | string | number | "true" | "false" | "null"\n'
        'string ::= "\\"" [a-z ]* "\\""\n'
        'number ::= "-"? [0-9]+ ("." [0-9]+)?\n'
        "ws ::= [ ]?  # optional space\n"
    ),
    "comments": '# a comment\nroot ::= a b # trailing\na ::= "A"\nb ::= "B"{1}',
    "recursive": 'root ::= expr\nexpr ::= term ("+" term)*\nterm ::= [0-9] | "(" expr ")"',
}
_CHECKS = {
    "yes_no": r"yes|no",
    "digits": r"[1-9][0-9]{0,3}",
    "list": r"\[[a-z]+(,[a-z]+)*\]",
    "escapes": r"Aé\t[0-9]\"[\[\]]\\",
    "negated": r"<[^<>\n]{1,8}>",
    "any": r"(?s).{2,3}",
    "groups": r"(a|bc)+(x?y){2,}",
    "comments": r"AB",
}


@pytest.mark.parametrize("name", sorted(GRAMMARS))
def test_samples_match_a_regex_equivalent(name: str) -> None:
    rng = random.Random(0)
    samples = {sample_gbnf(GRAMMARS[name], rng) for _ in range(30)}
    if name in _CHECKS:
        for text in samples:
            assert re.fullmatch(_CHECKS[name], text), (name, text)
    if name not in ("comments", "escapes"):
        assert len(samples) > 1  # the walk is random, not a fixed string


def test_samples_end_for_recursive_grammars() -> None:
    rng = random.Random(3)
    for _ in range(200):
        assert len(sample_gbnf(GRAMMARS["recursive"], rng)) < 2000


@pytest.mark.parametrize(
    "bad",
    [
        'root ::= "unterminated',
        "root ::= [a-",
        "root ::= missing",
        'other ::= "x"',
        'root ::= "a" | (',
        "root ::= [a-z]{3,1}",  # llama.cpp would build rules until memory ran out
        'root ::= "\\q"',
        "root ::= root",
        "::= x",
        'root ::= "yes"\n  | "no"',  # a line break ends a rule: was taken as "yes" | "no"
    ],
)
def test_bad_grammars_are_rejected(bad: str) -> None:
    with pytest.raises(GrammarError):
        parse_gbnf(bad)


def test_a_reversed_range_beside_others_matches_nothing_itself() -> None:
    # As in llama.cpp: [z-a0-9] is the digits.
    assert re.fullmatch(r"[0-9]{3}", sample_gbnf("root ::= [z-a0-9]{3}", random.Random(0)))


@pytest.mark.parametrize(
    "grammar",
    [
        'root ::= "a" [z-a]',  # no character: was "empty range for randrange()"
        'root ::= "a" "\\x00"',  # llama.cpp never matches a NUL
        'root ::= "a" root',  # never ends
    ],
)
def test_a_grammar_without_sentences_parses_but_is_not_sampled(grammar: str) -> None:
    parse_gbnf(grammar)  # llama.cpp builds it, then allows no token
    with pytest.raises(GrammarError, match="no text matches the grammar"):
        sample_gbnf(grammar, random.Random(0))
    # A branch without sentences is never taken.
    for seed in range(20):
        body = grammar[9:].replace("root", "x")
        text = sample_gbnf(f'root ::= "b" x* | "c" | x\nx ::= {body}', random.Random(seed))
        assert re.fullmatch("b|c", text)


def test_empty_classes_match_the_empty_string() -> None:
    # llama.cpp adds no element for [] or [^]: "a" [] "b" is "ab".
    assert sample_gbnf('root ::= "a" [] [^] "b"', random.Random(0)) == "ab"


def test_token_references_parse_but_the_synthetic_engine_refuses_them() -> None:
    grammar = parse_gbnf('root ::= "a" <[1000]> !<[7]> x\nx ::= <|im_end|>')
    assert grammar.tokens == ("<[1000]>", "!<[7]>", "<|im_end|>")
    with pytest.raises(GrammarError, match=r"token <\[1000\]>.*does not emulate token references"):
        sample_gbnf('root ::= "a" <[1000]>', random.Random(0))


def test_gbnf_the_parser_refuses_fails_the_prediction(client: lms.Client) -> None:
    """Found by an audit: a rule continued on a new line was taken (it wrote "yes");
    llama.cpp refuses it, so LM Studio fails the prediction."""
    grammar = {"type": "gbnf", "gbnfGrammar": 'root ::= "yes"\n  | "no"'}
    with pytest.raises(lms.LMStudioServerError, match="Failed to parse the GBNF grammar"):
        client.llm.model(TEXT).respond("?", response_format=grammar)


@pytest.mark.parametrize(
    ("grammar", "reason"),
    [
        ('root ::= "a" [z-a]', "no text matches the grammar"),
        ('root ::= "a" <[1000]>', "does not emulate token references"),
    ],
)
def test_gbnf_without_a_sample_fails_the_prediction(
    client: lms.Client, grammar: str, reason: str
) -> None:
    structured = {"type": "gbnf", "gbnfGrammar": grammar}
    with pytest.raises(lms.LMStudioServerError, match=f"Cannot generate from the GBNF.*{reason}"):
        client.llm.model(TEXT).respond("?", response_format=structured)


# What llama.cpp's parser (llama-cpp-python 0.3.36, through the harness) takes (True) and
# refuses (False); the emulator's parser must agree on each.
PARSER_VERDICTS: list[tuple[str, bool]] = [
    # A line break ends a rule, except inside parentheses and after "::=" or "|".
    ('root ::= "a"\n  "b"', False),
    ('root ::= "yes"\n  | "no"', False),
    ('root ::= "a" |\nx ::= "b"', False),
    ('root ::= "a" |\n  "b"', True),
    ('root ::= ("a"\n  "b")', True),
    ('root ::= (\n"a"\n|\n"b"\n)', True),
    ('root ::=\n  "a"', True),
    ('root ::=\nx ::= "a"', False),
    ("root ::=", True),
    ('root ::= "a" \\\n "b"', False),
    ('root ::= "a"\t\t\n\t\nx ::= "b"', True),
    ('root ::= "a" x\nx ::= "b" |', True),
    # Comments run to the end of the line, which then ends the rule.
    ('root ::= "a" "b"  # c\n  | "c"', False),
    ('root ::= "a" # comment', True),
    ('root ::= "a" # comment\nx ::= "b"', True),
    ('# only\n\n root ::= "a"\n\n# end', True),
    ('root ::= "a" ("b" # c\n "c")', True),
    ('root #c\n::= "a"', False),
    # CR and CRLF.
    ('root ::= "a"\r\nx ::= "b"\r\n', True),
    ('root ::= "a" |\r\n "b"', True),
    ('root ::= "a"\r"b"', False),
    ('root ::= ("a"\r\n"b")', True),
    # Empty and reversed classes, dashes.
    ("root ::= []", True),
    ('root ::= "a" [] "b"', True),
    ("root ::= [^]", True),
    ("root ::= []*", False),
    ('root ::= ""*', False),
    ("root ::= [z-a]", True),
    ("root ::= [z-a0-9]", True),
    ("root ::= [^z-a]", True),
    ("root ::= [a-]", True),
    ("root ::= [-a]", True),
    ("root ::= [\\-]", True),
    ("root ::= [a\\-z]", True),
    ("root ::= [\n]", True),
    # Escapes.
    ('root ::= "\\-"', True),
    ('root ::= "\\q"', False),
    ('root ::= "\\x4"', False),
    ('root ::= "\\UFFFFFFFF"', True),
    ('root ::= "a\nb"', True),
    # Repetitions.
    ('root ::= "a" *', True),
    ('root ::= "a"**', False),  # left recursion
    ('root ::= "b" "c"**', False),  # left recursion too, in the rule "c"** makes
    ('root ::= "a" | *', False),
    ("root ::= *", False),
    ('root ::= "a"{ 2 , 3 }', True),
    ('root ::= "a"{\n2}', False),
    ('root ::= ("a"{\n2\n})', True),
    ('root ::= "a"{,3}', False),
    ('root ::= "a"{2,}', True),
    ('root ::= "a"{0}*', False),
    ('root ::= "a"{3}{2}?', True),
    ('root ::= "a"{0,3000}', True),  # above 2000: no maximum
    ('root ::= "a"{2001}', False),
    ('root ::= "a"{2}{1001}', False),
    ('root ::= ("a"{2}){1000}', True),
    ('root ::= ("a" "b"?){1000}', True),
    ('root ::= ("a" "b"?){1001}', False),
    ("root ::= ()", True),
    ("root ::= ()*", False),  # left recursion
    # Groups, rules, tokens, the rest.
    ('root ::= ("a"', False),
    ('root ::= "a")', False),
    ('root ::= "a" :: "b"', False),
    ("root ::= <[5]>", True),
    ("root ::= !<[5]>*", True),
    ("root ::= <[5", False),
    ("root ::= <[99999999999]>", False),
    ('root ::= !"a"', False),
    ('root ::= "a"\x00 garbage', True),  # llama.cpp reads up to the NUL
    ('root ::= "a" root', True),
    ('root::="a"', True),
    ('root ::= "a"\nroot ::= "b"', True),
    ('ROOT ::= "a"', False),
    ('root ::= a-b\na-b ::= "c"', True),
]


def _emulator_takes(grammar: str) -> bool:
    try:
        parse_gbnf(grammar)
    except GrammarError:
        return False
    return True


@pytest.mark.parametrize(("grammar", "taken"), PARSER_VERDICTS)
def test_the_parser_takes_what_llama_cpp_takes(grammar: str, taken: bool) -> None:
    assert _emulator_takes(grammar) == taken


@pytest.mark.parametrize(("grammar", "taken"), PARSER_VERDICTS)
def test_llama_cpp_and_the_parser_agree_on_tricky_grammars(
    llama: Any, grammar: str, taken: bool
) -> None:
    try:
        llama.check_parses(grammar)
    except ValueError:
        llama_takes = False
    else:
        llama_takes = True
    assert (llama_takes, _emulator_takes(grammar)) == (taken, taken)
    if not taken or "<" in grammar:
        return
    rng = random.Random(0)
    for _ in range(5):  # and llama.cpp's matcher takes the samples, where there are any
        try:
            text = sample_gbnf(grammar, rng)
        except GrammarError:
            break
        assert llama.matches(grammar, text), (grammar, text)


def _load_harness() -> Any:
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gguf")
    path = Path(__file__).parents[1] / "unit" / "grammar" / "_llama_harness.py"
    if not path.exists():
        pytest.skip("the llama.cpp grammar harness is not in this checkout")
    spec = importlib.util.spec_from_file_location("_emulator_llama_harness", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    module = _load_harness()
    vocab = tmp_path_factory.mktemp("vocab") / "bytes.gguf"
    module.write_byte_vocab(vocab)
    harness = module.LlamaGrammarHarness(vocab)
    yield harness
    harness.close()


@pytest.mark.parametrize("name", sorted(GRAMMARS))
def test_llama_cpp_accepts_every_sample(llama: Any, name: str) -> None:
    grammar = GRAMMARS[name]
    llama.check_parses(grammar)
    rng = random.Random(7)
    for _ in range(25):
        text = sample_gbnf(grammar, rng)
        assert llama.matches(grammar, text), (name, text)


def test_gbnf_through_the_sdk(emu: LMStudioEmulator, client: lms.Client) -> None:
    grammar = {"type": "gbnf", "gbnfGrammar": GRAMMARS["list"]}
    result = client.llm.model(TEXT).respond("?", response_format=grammar)
    assert re.fullmatch(_CHECKS["list"], result.content)
    assert emu.predictions[-1].structured == grammar


def test_gbnf_on_an_mlx_model_fails(client: lms.Client) -> None:
    grammar = {"type": "gbnf", "gbnfGrammar": GRAMMARS["yes_no"]}
    with pytest.raises(lms.LMStudioServerError, match=r"llama\.cpp engine"):
        client.llm.model(MLX).respond("?", response_format=grammar)


def test_bad_gbnf_fails_the_prediction(client: lms.Client) -> None:
    grammar = {"type": "gbnf", "gbnfGrammar": "root ::= nothing"}
    with pytest.raises(lms.LMStudioServerError, match="GBNF"):
        client.llm.model(TEXT).respond("?", response_format=grammar)


def _lit(text: str) -> str:
    escaped = "".join(
        "\\" + c if c in '"\\' else f"\\x{ord(c):02X}" if ord(c) < 0x20 else c for c in text
    )
    return f'"{escaped}"'


def _cls(pairs: list[tuple[str, str]], negated: bool) -> str:
    def esc(c: str) -> str:
        if c in "]\\[":
            return "\\" + c
        return f"\\x{ord(c):02X}" if c in "-^" else c

    body = "".join(esc(a) if a == b else f"{esc(a)}-{esc(b)}" for a, b in pairs)
    return f"[{'^' if negated else ''}{body}]"


_CHAR = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
_atoms = st.one_of(
    st.text(_CHAR, min_size=1, max_size=4).map(_lit),
    st.builds(
        _cls,
        st.lists(st.tuples(_CHAR, _CHAR).map(lambda p: (min(p), max(p))), min_size=1, max_size=3),
        st.booleans(),
    ),
    st.just("."),
)
_suffix = st.sampled_from(["", "", "*", "+", "?", "{2}", "{1,3}", "{0,}"])
_expressions = st.recursive(
    st.tuples(_atoms, _suffix).map("".join),
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3).map(" ".join),
        st.tuples(st.lists(inner, min_size=2, max_size=3).map(" | ".join), _suffix).map(
            lambda t: f"({t[0]}){t[1]}"
        ),
    ),
    max_leaves=6,
)


@settings(max_examples=40, deadline=None)
@given(body=_expressions, helper=_expressions, seed=st.integers(0, 2**32))
def test_llama_cpp_accepts_samples_of_random_grammars(
    llama: Any, body: str, helper: str, seed: int
) -> None:
    grammar = f"root ::= {body} helper\nhelper ::= {helper}\n"
    llama.check_parses(grammar)
    rng = random.Random(seed)
    for _ in range(5):
        text = sample_gbnf(grammar, rng)
        assert llama.matches(grammar, text), (grammar, text)


LEFT_RECURSION = {
    # llama.cpp refuses these ("unsupported grammar, left recursion detected").
    "direct": ('root ::= root "a" | "b"', True),
    "through_a_rule": ('root ::= x "a" | "b"\nx ::= root', True),
    "after_an_optional": ('root ::= "a"? root | "b"', True),
    "after_an_empty_group": ('root ::= ("a" | "") root | "b"', True),
    "after_an_empty_literal": ('root ::= "" root | "b"', True),
    "after_a_bounded_repeat": ('root ::= "a"{0,3} root | "b"', True),
    "repeat_of_an_empty_group": ('root ::= ("a" | "")* "b"', True),
    "repeat_of_an_empty_rule": ('root ::= x* "b"\nx ::= "a" | ""', True),
    # Found by a differential fuzz: the rule of "c"** is left-recursive, though no rule
    # reaches it before a character ("b"); llama.cpp checks every rule.
    "inside_a_repetition": ('root ::= "b" "c"**', True),
    # ... and takes these: llama.cpp calls a rule empty only for a literally empty choice.
    "right_recursion": ('root ::= "a" root | "b"', False),
    "repeat_of_an_optional": ('root ::= ("a"?)* "b"', False),
    "through_an_empty_chain": ('root ::= x root | "b"\nx ::= y\ny ::= ""', False),
    "nested_empty_groups": ('root ::= (("a" | "")) "b"', False),
    "empty_tail": ('root ::= x\nx ::= "a" x | ""', False),
}


@pytest.mark.parametrize("name", sorted(LEFT_RECURSION))
def test_left_recursion_is_refused_as_llama_cpp_does(name: str) -> None:
    grammar, refused = LEFT_RECURSION[name]
    if refused:
        with pytest.raises(GrammarError, match="left recursion"):
            parse_gbnf(grammar)
    else:
        parse_gbnf(grammar)


@pytest.mark.parametrize("name", sorted(LEFT_RECURSION))
def test_llama_cpp_agrees_on_left_recursion(llama: Any, name: str) -> None:
    grammar, refused = LEFT_RECURSION[name]
    if refused:
        with pytest.raises(Exception, match="left recursion"):
            llama.check_parses(grammar)
    else:
        llama.check_parses(grammar)


def test_left_recursive_gbnf_fails_the_prediction(client: lms.Client) -> None:
    """LM Studio's llama.cpp engine cannot build a left-recursive grammar; the emulator
    used to accept it and answer ``b``."""
    grammar = {"type": "gbnf", "gbnfGrammar": LEFT_RECURSION["direct"][0]}
    with pytest.raises(lms.LMStudioServerError, match="left recursion"):
        client.llm.model(TEXT).respond("?", response_format=grammar)


def test_samples_hold_no_lone_surrogate_or_nul() -> None:
    """Found by a probe: a class over the whole range (``[^a]``, as the raw SDK may send it)
    gave lone surrogates in 9 samples of 300, which no reply can hold."""
    grammar = "root ::= [\\x00-\\U0010FFFF]{40}"
    for seed in range(300):
        text = sample_gbnf(grammar, random.Random(seed))
        assert not any(ord(c) == 0 or 0xD800 <= ord(c) <= 0xDFFF for c in text), seed
        text.encode()  # valid UTF-8
    with pytest.raises(GrammarError, match="only NUL or lone surrogates"):
        sample_gbnf("root ::= [\\uD800-\\uDFFF]", random.Random(0))


def test_a_sentence_longer_than_any_reply_is_cut_not_built() -> None:
    """Found by a probe: ``((ab|cd){2000}){2000}`` (8 million characters at least) froze the
    emulator for 45 s, whatever ``maxTokens``: the sample now stops at its limit."""
    from outlines_lmstudio.testing._gbnf import SAMPLE_LIMIT

    pair = "p ::=" + ' ("ab" | "cd")' * 2000 + "\n"  # 4,000 characters
    text = sample_gbnf("root ::= p p p p p p p p p p\n" + pair, random.Random(0))
    assert len(text) == 40_000  # under the limit: the whole sentence
    big = "root ::=" + " q" * 20 + "\nq ::=" + " p" * 10 + "\n" + pair  # 800,000 at least
    text = sample_gbnf(big, random.Random(0))
    assert len(text) == SAMPLE_LIMIT
    assert re.fullmatch("(?:ab|cd)*", text)


@pytest.mark.parametrize("max_tokens", [None, 10**6])
def test_a_sentence_cut_at_the_limit_is_no_reply_unless_max_tokens_cuts_it(
    client: lms.Client, max_tokens: int | None
) -> None:
    """Found by an audit: a sample cut at its limit, not a sentence of the grammar, was
    sent as the whole reply with ``eosFound``; LM Studio would go on until ``maxTokens``
    (or the context's end). A ``maxTokens`` within the cut ends it as LM Studio would."""
    grammar = 'x ::= "a"{2000}\nroot ::=' + " x" * 60  # 120,000 characters at least
    config: lms.LlmPredictionConfigDict = {"structured": {"type": "gbnf", "gbnfGrammar": grammar}}
    if max_tokens is not None:
        config["maxTokens"] = max_tokens
    model = client.llm.model(TEXT)
    with pytest.raises(lms.LMStudioServerError, match="set maxTokens to cut the reply there"):
        model.respond("?", config=config)
    result = model.respond("?", config={**config, "maxTokens": 50})
    assert result.stats.stop_reason == "maxPredictedTokensReached"
    assert set(result.content) == {"a"}
    # A maxTokens of exactly the cut's fragments ends it too (found by a review: refused).
    whole = len(split_fragments("a" * SAMPLE_LIMIT))
    result = model.respond("?", config={**config, "maxTokens": whole})
    assert result.stats.stop_reason == "maxPredictedTokensReached"


@pytest.mark.parametrize(
    "grammar",
    [
        "root ::= " + "(" * 3000 + '"a"' + ")" * 3000,
        "root ::= r0\n"
        + "".join(f'r{i} ::= "a" r{i + 1}\n' for i in range(3000))
        + 'r3000 ::= "b"\n',
        "root ::= r0\n" + "".join(f"r{i} ::= r{i + 1}\n" for i in range(3000)) + 'r3000 ::= "b"\n',
    ],
)
def test_grammars_nested_past_the_recursion_limit_are_a_grammar_error(grammar: str) -> None:
    """Found by a probe (groups) and a review (a chain of rules): the prediction failed
    with a bare "RecursionError"; the parse, or the sample, says why now."""
    with pytest.raises(GrammarError, match="nests rules or groups more deeply than the emulator"):
        sample_gbnf(grammar, random.Random(0))


def test_the_shortest_lengths_of_a_chain_of_rules_take_linear_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by a review: pass after pass over every rule took one pass per link of a
    chain, 2 million evaluations (16 s) for 1,500 rules; each rule is computed again only
    when a rule it names got shorter."""
    from outlines_lmstudio.testing._gbnf import Grammar

    calls = 0
    original = Grammar.min_len

    def counted(self: Grammar, node: Any) -> float:
        nonlocal calls
        calls += 1
        return original(self, node)

    monkeypatch.setattr(Grammar, "min_len", counted)
    rules = "".join(f'r{i} ::= "a" r{i + 1}\n' for i in range(1500))
    grammar = parse_gbnf("root ::= r0\n" + rules + 'r1500 ::= "c"\n')
    assert grammar.cost["root"] == 1501
    assert calls < 10 * 1500 * 4  # each rule's few nodes, a few times
