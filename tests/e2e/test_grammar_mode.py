"""Grammar mode end to end: GBNF sent to LM Studio, the emulator generates from it."""

import json
import random
import re
import string
import time
from typing import Any

import lark
import lmstudio as lms
import outlines
import pytest
from outlines.types import CFG, Choice, Regex, at_least, either, integer, paragraph
from outlines.types.dsl import python_types_to_terms, to_regex
from typing_extensions import TypeAliasType

from outlines_lmstudio import (
    ParseError,
    TruncatedOutputError,
    UnsupportedOutputTypeError,
    from_lmstudio,
)
from outlines_lmstudio._grammar import term_to_gbnf
from outlines_lmstudio.testing import LMStudioEmulator

from .conftest import TEXT_MODEL, MakeModel
from .fronts import Fronts
from .helpers import turns_until_sent

MLX_MODEL = "llama-3.2-1b-instruct-mlx"
ARITHMETIC = """
?start: sum
?sum: product | sum "+" product -> add | sum "-" product -> sub
?product: atom | product "*" atom -> mul
?atom: NUMBER | "(" sum ")"
%import common.NUMBER
"""


@pytest.mark.parametrize(
    "pattern", [r"[a-c]{2}[0-9]", r"(cat|dog)s?", r"\d{3}-\d{4}", r"[A-Z][a-z]{1,8}"]
)
def test_regex_round_trip(make_model: MakeModel, emulator: LMStudioEmulator, pattern: str) -> None:
    model = make_model(TEXT_MODEL, grammar=True)
    for _ in range(3):
        text = model("Give me one", Regex(pattern))
        assert re.fullmatch(pattern, text), text
    structured = emulator.predictions[-1].structured
    assert structured is not None
    assert structured["type"] == "gbnf"
    assert "root ::=" in structured["gbnfGrammar"]


def test_cfg_round_trip(make_model: MakeModel, emulator: LMStudioEmulator) -> None:
    model = make_model(TEXT_MODEL, grammar=True)
    parser = lark.Lark(ARITHMETIC, start="start")
    for _ in range(3):
        text = model("An expression", CFG(ARITHMETIC), max_tokens=200)
        if emulator.predictions[-1].stop_reason == "eosFound":
            parser.parse(text)


def test_dsl_terms_and_parse(fronts: Fronts, make_model: MakeModel) -> None:
    model = make_model(TEXT_MODEL, grammar=True)
    assert model("yes or no?", either("yes", "no")) in ("yes", "no")
    assert re.fullmatch(r"(ab)+", model("repeat", at_least(1, "ab")))
    value = model.parse("a number", integer)
    assert re.fullmatch(r"[+-]?(0|[1-9][0-9]*)", value)
    generator = outlines.Generator(fronts.raw(model), Regex(r"[xyz]{3}"))
    assert fronts.run(generator("three letters")) in {
        a + b + c for a in "xyz" for b in "xyz" for c in "xyz"
    }


def test_parse_checks_the_language(make_model: MakeModel, emulator: LMStudioEmulator) -> None:
    from outlines_lmstudio import ParseError

    emulator.script(TEXT_MODEL, ["not digits", "123"])
    model = make_model(TEXT_MODEL, grammar=True)
    assert model.parse("digits", Regex(r"\d+"), retries=1) == "123"
    emulator.script(TEXT_MODEL, ["2 +"])
    with pytest.raises(ParseError, match="not in the grammar"):
        model.parse("expr", CFG(ARITHMETIC))


def test_parse_accepts_a_cfg_reply_whose_terminal_is_not_the_longest_match(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """GBNF allows ``1.2.3`` here; Lark's longest-match lexer read NUMBER as ``1.2``."""
    version = 'start: NUMBER "." NUMBER "." NUMBER\n%import common.NUMBER\n'
    emulator.script(TEXT_MODEL, ["1.2.3"])
    model = make_model(TEXT_MODEL, grammar=True)
    assert model.parse("a version", CFG(version)) == "1.2.3"
    emulator.script(TEXT_MODEL, ["1.2"])
    with pytest.raises(ParseError, match="not in the grammar"):
        model.parse("a version", CFG(version))


@pytest.mark.parametrize(
    ("grammar", "reply"),
    [
        ("start: NUM OP NUM\nOP: /<|<=/\nNUM: /[0-9]+/\n", "1<=2"),
        ("start: ID\nID: /if|[a-z]+/\n", "ifx"),
        ("start: NUM\nNUM: /[0-9]+|[0-9]+\\.[0-9]+/\n", "1.5"),
        ('start: STR\nSTR: /".*?"/\n', '"a"b"'),
        ('start: WORD "."\nWORD: /no|no[a-z]+/\n', "nothing."),
        (
            "start: NAME NAME\nNAME: /[a-z]+/\n%import common.C_COMMENT\n%ignore C_COMMENT\n",
            "a/* x */ y */b",
        ),
    ],
)
def test_parse_accepts_a_cfg_reply_lark_s_first_match_lexer_misreads(
    make_model: MakeModel, emulator: LMStudioEmulator, grammar: str, reply: str
) -> None:
    """Found by a probe (``nothing.`` written by the real engine): the GBNF sent takes any
    length a terminal's regex matches, Lark's lexer Python's first match (``<`` of ``<=``,
    a lazy ``.*?`` up to the first quote), so parse refused what the engine wrote."""
    emulator.script(TEXT_MODEL, [reply, reply + "!"])
    model = make_model(TEXT_MODEL, grammar=True)
    assert model.parse("one", CFG(grammar)) == reply
    with pytest.raises(ParseError, match="not in the grammar"):
        model.parse("one", CFG(grammar))


def test_parse_refuses_a_cut_reply_that_could_have_gone_on(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """``\\d+`` matches the start of ``1234567890``: cut by max_tokens, it is not the answer."""
    from outlines_lmstudio import TruncatedOutputError

    model = make_model(TEXT_MODEL, grammar=True)
    emulator.script(TEXT_MODEL, ["1234567890"])
    with pytest.raises(TruncatedOutputError, match="may not have finished") as info:
        model.parse("digits", Regex(r"\d+"), max_tokens=1)
    assert re.fullmatch(r"\d+", info.value.raw)
    assert info.value.raw != "1234567890"
    emulator.script(TEXT_MODEL, ["1234567890"])
    assert model.parse("digits", Regex(r"\d+")) == "1234567890"  # not cut: kept
    emulator.script(TEXT_MODEL, ["1234567890"])  # (scripted: the emulator ignores the grammar)
    # Cut, but nothing can follow six digits in \d{6}: the model had finished.
    assert model.parse("digits", Regex(r"\d{6}"), max_tokens=1) == "123456"


@pytest.mark.parametrize(
    ("output_type", "reply"),
    [(Regex(r"\[\d(,\d)*\]"), "[1,2,3,4,5,6,7,8]"), (CFG(ARITHMETIC), "12*34+56*78")],
)
def test_parse_stream_of_a_grammar_yields_its_text_so_far(
    make_model: MakeModel, emulator: LMStudioEmulator, output_type: object, reply: str
) -> None:
    """A grammar's reply is no JSON: its partial values are its text, not parsed numbers."""
    emulator.script(TEXT_MODEL, [reply])
    model = make_model(TEXT_MODEL, grammar=True)
    values = list(model.parse_stream("go", output_type))
    assert len(values) > 2  # the reply came in several fragments
    assert all(isinstance(v, str) and reply.startswith(v) for v in values), values
    assert values[-1] == reply


@pytest.mark.parametrize(
    ("items", "reply", "value"),
    [
        ([1, 2, 3], "2", 2),
        ([1.5, 2], "1.5", 1.5),
        ([True, "maybe"], "True", True),
        (["1", 1], "1", "1"),  # written alike: the grammar cannot tell, the first item wins
        ([Regex(r"[a-z]+"), 7], "abc", "abc"),  # a term item stays text
    ],
)
def test_parse_of_a_choice_returns_its_item_in_grammar_mode_too(
    make_model: MakeModel,
    emulator: LMStudioEmulator,
    items: list[object],
    reply: str,
    value: object,
) -> None:
    """Found by a probe: ``parse(Choice([1, 2, 3]))`` gave ``'2'`` in grammar mode, ``2``
    without it."""
    model = make_model(TEXT_MODEL, grammar=True)
    emulator.script(TEXT_MODEL, [reply])
    got = model.parse("pick", Choice(items))
    assert (got, type(got)) == (value, type(value))
    emulator.script(TEXT_MODEL, [reply])
    final = list(model.parse_stream("pick", Choice(items)))[-1]
    assert (final, type(final)) == (value, type(value))
    if all(not isinstance(item, Regex) for item in items):
        emulator.script(TEXT_MODEL, [json.dumps(value)])  # without grammar mode: JSON
        plain = make_model(TEXT_MODEL).parse("pick", Choice(items))
        assert (plain, type(plain)) == (value, type(value))


def _asked(model: Any, method: str, *args: Any) -> object:
    """Call ``method``, and read a stream to its end: on the async front a grammar-mode
    stream raises at its first item (its term is converted in a worker thread), still
    before anything is sent; on the sync front, at the call."""
    made = getattr(model, method)(*args)
    return list(made) if method.endswith("stream") else made


@pytest.mark.parametrize("method", ["parse", "parse_stream"])
def test_parse_of_a_term_with_a_cfg_inside_says_it_cannot_check_it(
    make_model: MakeModel, emulator: LMStudioEmulator, method: str
) -> None:
    model = make_model(TEXT_MODEL, grammar=True)
    term = either(CFG(ARITHMETIC), "none")
    assert model("expr or none", term)  # generate constrains it
    sent = len(emulator.predictions)
    with pytest.raises(UnsupportedOutputTypeError, match=r"Alternatives with a CFG inside"):
        _asked(model, method, "expr or none", term)  # was: Outlines' raw TypeError
    assert len(emulator.predictions) == sent  # refused before sending


@pytest.mark.parametrize("method", ["parse", "parse_stream"])
def test_parse_of_a_regex_too_large_to_check_says_so_before_sending(
    make_model: MakeModel, emulator: LMStudioEmulator, method: str
) -> None:
    """Counted repeats are copied out in the checker: nested ones multiply.

    ``((ab){1000}){1000}`` is two million states (seconds); with one more level
    (``{2000}`` three deep: eight billion) parse never came back.
    """
    model = make_model(TEXT_MODEL, grammar=True)
    with pytest.raises(UnsupportedOutputTypeError, match=r"automaton is too large"):
        _asked(model, method, "go", Regex(r"(?:(?:ab){1000}){1000}"))
    assert emulator.predictions == []  # refused before sending


def test_parse_of_a_cut_off_paragraph_does_not_backtrack(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """re.fullmatch takes exponential time on Outlines' paragraph when the reply is cut."""
    emulator.script(TEXT_MODEL, ["Hello there. " * 100 + "\n"])
    model = make_model(TEXT_MODEL, grammar=True)
    started = time.monotonic()
    with pytest.raises(TruncatedOutputError) as raised:
        model.parse("Write a paragraph", paragraph, max_tokens=50)
    # 25 sentences: re.fullmatch takes about 9 s, twice that per sentence more.
    assert raised.value.raw.count(".") >= 25
    assert time.monotonic() - started < 4


def test_grammar_on_a_non_gguf_model_is_refused_before_predicting(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    model = make_model(MLX_MODEL, grammar=True)
    with pytest.raises(UnsupportedOutputTypeError, match="not GGUF") as refused:
        model("x", Regex(r"\d"))
    assert "Choice" not in str(refused.value)  # the Choice hint is for a Choice only
    # A probe: a Choice failed here while Literal worked, and the hint did not say why.
    with pytest.raises(UnsupportedOutputTypeError, match="without grammar mode, a Choice of"):
        model("x", Choice(["a", "b"]))
    assert emulator.predictions == []
    assert model("json still works", int)  # JSON schema output is fine on MLX


def test_config_structured_is_checked_as_an_output_type_is(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """``config['structured']`` goes through the checks an output type does, then is sent.

    It used to be passed through as it was: a GBNF grammar reached an MLX model, and a JSON
    schema was neither checked nor normalised.
    """
    gbnf = {"type": "gbnf", "gbnfGrammar": 'root ::= "yes" | "no"'}
    with pytest.raises(UnsupportedOutputTypeError, match=r"config\['structured'\].*not GGUF"):
        make_model(MLX_MODEL)("x", config={"structured": gbnf})
    assert emulator.predictions == []
    assert make_model(TEXT_MODEL)("x", config={"structured": gbnf}) in ("yes", "no")
    assert emulator.predictions[-1].structured == gbnf
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "integer"}
    json_setting = {"type": "json", "jsonSchema": schema}
    reply = make_model(TEXT_MODEL)("x", config={"structured": json_setting})
    assert re.fullmatch(r"-?\d+", reply), reply
    assert emulator.predictions[-1].structured == {
        "type": "json",
        "jsonSchema": {"type": "integer"},
    }
    assert make_model(TEXT_MODEL)("x", config={"structured": {"type": "none"}})
    free = emulator.predictions[-1]
    assert free.structured is None
    # ... and "none" is sent, as it was asked for: it overrides a structured setting of a
    # preset or of the model's defaults (found by a probe: it was dropped)
    assert free.config["llm.prediction.structured"] == {"type": "none"}


def test_without_grammar_mode_regex_names_the_opt_in(make_model: MakeModel) -> None:
    with pytest.raises(TypeError, match=r"grammar=True"):
        make_model(TEXT_MODEL)("x", Regex(r"\d"))


@pytest.mark.asyncio
async def test_async_grammar_mode(
    async_client: lms.AsyncClient, emulator: LMStudioEmulator
) -> None:
    model = from_lmstudio(async_client, TEXT_MODEL, grammar=True)
    assert re.fullmatch(r"[0-9]{4}", await model("year", Regex(r"[0-9]{4}")))
    with pytest.raises(UnsupportedOutputTypeError):
        await from_lmstudio(async_client, MLX_MODEL, grammar=True)("x", Regex("a"))


def _alias(term: object) -> object:
    """A typing alias of ``term`` (``type Code = Regex(...)`` on Python 3.12)."""
    return TypeAliasType("Code", term)


def _new_classes(count: int) -> str:
    """A regex of ``count`` character classes under ``(?i)`` that no test converted before.

    Converting a class the first time scans all of Unicode (about 30 to 100 ms here).
    """
    letters = random.sample(string.ascii_lowercase + string.digits, count * 2)
    return "(?i)" + "".join(f"[{a}{b}]" for a, b in zip(letters[::2], letters[1::2], strict=True))


@pytest.mark.asyncio
@pytest.mark.parametrize("alias", [False, True], ids=["term", "alias"])
async def test_an_async_grammar_is_converted_off_the_event_loop(
    async_client: lms.AsyncClient, emulator: LMStudioEmulator, alias: bool
) -> None:
    """The first use of a character class scans all of Unicode with Python's ``re``: an
    async call did that on the event loop, and every other task waited (found by a probe:
    0.4 to 0.9 s for a pattern with several new classes). It is done in a worker thread
    now, in slices short enough for the loop to run between them. A ticker that sleeps 1 ms
    counts its turns until the prediction reaches the server: 1 or 2 with the work on the
    loop, about 100 now (the thread and the loop share the interpreter lock). Also for a
    typing alias of the term, which is hashable, so it was planned (and kept) on the loop
    (found by a review)."""
    model = from_lmstudio(async_client, TEXT_MODEL, grammar=True)
    await model("warm up", Regex("a"))  # the handle is cached: the next call sends at once
    pattern = _new_classes(18)
    output_type = _alias(Regex(pattern)) if alias else Regex(pattern)
    text, ticks = await turns_until_sent(emulator, model("go", output_type))
    assert re.fullmatch(pattern, text), text
    assert ticks >= 20, ticks
    structured = emulator.predictions[-1].structured
    assert structured is not None
    assert structured["gbnfGrammar"] == term_to_gbnf(Regex(pattern))  # what sync sends


def test_parse_of_an_alias_of_a_regex_checks_the_regex(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """The reply was checked against the regex Outlines makes of the alias object itself,
    ``(\\{()?[ ]?\\})``, and every reply failed (found by a review)."""
    model = make_model(TEXT_MODEL, grammar=True)
    code = _alias(Regex(r"[a-c][0-9]{2}"))
    assert re.fullmatch(r"[a-c][0-9]{2}", model.parse("go", code))
    assert re.fullmatch(r"[a-c][0-9]{2}", list(model.parse_stream("go", code))[-1])


@pytest.mark.parametrize("method", ["stream", "batch", "parse", "parse_stream"])
def test_a_grammar_that_cannot_be_sent_is_refused_before_sending_on_every_path(
    make_model: MakeModel, emulator: LMStudioEmulator, method: str
) -> None:
    """Also once the async front converts grammars in a worker thread: a stream raises at
    its first item there (at the call on the sync front), the others at the ``await``."""
    from outlines_lmstudio import UnsupportedGrammarError

    model = make_model(TEXT_MODEL, grammar=True)
    args: tuple[object, ...] = (["a", "b"] if method == "batch" else "go", Regex("(?=a)a"))
    with pytest.raises(UnsupportedGrammarError, match="lookahead"):
        _asked(model, method, *args)
    assert emulator.predictions == []


@pytest.mark.parametrize(
    "output_type",
    [
        Regex(r"[^\s\S]"),  # an empty class: the model could write nothing
        Regex(r"(?:x[^\s\S])+"),
        CFG("start: A\nA: /[^\\s\\S]/\n"),
        CFG('start: a\na: "x" a\n'),  # never ends: only max_tokens would stop it
    ],
)
def test_a_grammar_that_matches_nothing_is_refused_before_sending(
    make_model: MakeModel, emulator: LMStudioEmulator, output_type: object
) -> None:
    from outlines_lmstudio import UnsupportedGrammarError

    model = make_model(TEXT_MODEL, grammar=True)
    with pytest.raises(UnsupportedGrammarError, match="matches no text at all"):
        model("go", output_type, max_tokens=20)
    assert emulator.predictions == []


@pytest.mark.parametrize(
    ("output_type", "error", "match"),
    [
        (Regex(b"ab"), TypeError, "as str, got bytes"),  # type: ignore[arg-type]
        (CFG(b"start: 'a'"), TypeError, "as str, got bytes"),  # type: ignore[arg-type]
        (Regex("a{99999999999999999999}"), ValueError, "not a valid Python regex"),
        (Regex("(?:a|" * 400 + "b" + ")*" * 400), ValueError, "nested too deeply"),
        (CFG("start: A\nA: /a{99999999999999999999}/\n"), ValueError, "could not be loaded"),
        (Regex("(?u)(?a)x"), ValueError, "not a valid Python regex"),
        (CFG('start: K "=" V\nK: /[a-z]+$/\nV: /[0-9]+/\n'), ValueError, "anchor.*terminal K"),
        (Regex(r"(((\d{0,40}){0,40}){0,40}){0,40}"), ValueError, "up to 64000 times in all"),
    ],
    ids=[
        "bytes regex",
        "bytes grammar",
        "huge count",
        "deep nesting",
        "huge count in lark",
        "incompatible flags",
        "anchor in a lark terminal",
        "nested counted repeats",
    ],
)
def test_grammar_input_python_cannot_take_is_our_error_before_sending(
    fronts: Fronts, emulator: LMStudioEmulator, output_type: object, error: type, match: str
) -> None:
    from outlines_lmstudio import OutlinesLMStudioError

    model = fronts.model(fronts.client(enter=False), TEXT_MODEL, grammar=True)
    with pytest.raises(OutlinesLMStudioError, match=match) as raised:
        model("go", output_type)
    assert isinstance(raised.value, error)
    assert emulator.requests == []


def test_a_json_schema_stays_json_in_grammar_mode(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """``JsonSchema`` is an Outlines term, but a JSON document: grammar mode leaves it be.

    It was sent as the GBNF of Outlines' regex for it (``minimum`` lost), ``parse``
    returned the text instead of a dict and let ``1`` through, and MLX models refused it.
    """
    from outlines.types import JsonSchema

    from outlines_lmstudio import ParseError

    schema = {"type": "object", "properties": {"a": {"type": "integer", "minimum": 3}}}
    emulator.script(TEXT_MODEL, ['{"a": 5}', '{"a": 1}'])
    model = make_model(TEXT_MODEL, grammar=True)
    assert model.parse("go", JsonSchema(schema)) == {"a": 5}
    assert emulator.predictions[-1].structured == {"type": "json", "jsonSchema": schema}
    with pytest.raises(ParseError, match="less than the minimum of 3"):
        model.parse("go", JsonSchema(schema))
    assert isinstance(make_model(MLX_MODEL, grammar=True)("go", JsonSchema(schema)), str)


def test_a_python_type_holding_dsl_terms_is_sent_as_a_grammar(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """``list[integer]`` (Outlines' local models take it) was refused as an unsupported type,
    in grammar mode too, with no word of the term inside or of grammar mode."""
    output_type = list[integer]  # type: ignore[valid-type]
    outlines_regex = to_regex(python_types_to_terms(output_type))
    model = make_model(TEXT_MODEL, grammar=True)
    for i in range(3):
        assert re.fullmatch(outlines_regex, model(f"Numbers ({i})", output_type))
    structured = emulator.predictions[-1].structured
    assert structured is not None
    assert structured["type"] == "gbnf"
    assert re.fullmatch(outlines_regex, model.parse("Numbers", output_type))
    sent = len(emulator.predictions)
    with pytest.raises(UnsupportedOutputTypeError, match=r"DSL term .*grammar=True"):
        make_model(TEXT_MODEL)("x", dict[str, integer])  # type: ignore[valid-type]
    assert len(emulator.predictions) == sent
