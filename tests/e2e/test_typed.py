"""parse / parse_stream end to end through the real SDK and the emulator."""

import dataclasses
import datetime
import decimal
import itertools
import json
import pickle
import typing
import uuid
import warnings
from collections.abc import Callable
from typing import Any

import jsonschema
import lmstudio as lms
import outlines
import pydantic
import pytest
import typing_extensions

from outlines_lmstudio import (
    BatchGenerationError,
    InvalidInferenceArgumentError,
    LMStudioPredictionError,
    LMStudioTimeoutError,
    Parsed,
    ParseError,
    TruncatedOutputError,
    UnsupportedInputError,
    UnsupportedOutputTypeError,
    from_lmstudio,
)
from outlines_lmstudio.testing import Fault, LMStudioEmulator
from outlines_lmstudio.testing._records import message_text

from .conftest import TEXT_MODEL, MakeModel
from .fronts import Fronts
from .helpers import eventually, png_image, predicted_counts


class Person(pydantic.BaseModel):
    name: str
    age: int

    @pydantic.field_validator("name")
    @classmethod
    def capitalised(cls, value: str) -> str:
        if not value[:1].isupper():
            raise ValueError("name must start with a capital letter")
        return value


def test_parse_returns_instances(make_model: MakeModel, emulator: LMStudioEmulator) -> None:
    emulator.script(TEXT_MODEL, ['{"name": "John", "age": 32}'])
    person = make_model(TEXT_MODEL).parse("John is 32", Person)
    assert person == Person(name="John", age=32)
    assert emulator.predictions[-1].structured == {
        "type": "json",
        "jsonSchema": Person.model_json_schema(),
    }


def test_parse_timeout_bounds_the_whole_call_with_its_re_asks(
    make_model: MakeModel, emulator: LMStudioEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``timeout=`` is on the whole call: re-asking does not restart it."""
    monkeypatch.setattr(emulator, "token_latency", 0.02)
    emulator.script(TEXT_MODEL, lambda prediction: '{"name": "john", "age": 32}' + " " * 30)
    model = make_model(TEXT_MODEL)
    with pytest.raises(ParseError):  # each attempt alone is well within the limit
        model.parse("John is 32", Person, retries=0, timeout=30)
    single = len(emulator.predictions)
    with pytest.raises(LMStudioTimeoutError, match=r"within 1\.5 s"):
        model.parse("John is 32", Person, retries=20, timeout=1.5)  # 21 attempts: > 15 s
    assert len(emulator.predictions) - single < 21
    last = emulator.predictions[-1]
    assert eventually(lambda: last.done)  # finished, or cancelled on the server


def test_parse_of_generated_output_validates(make_model: MakeModel) -> None:
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["n"],
    }
    value = make_model(TEXT_MODEL).parse("numbers", schema)
    assert isinstance(value, dict)
    jsonschema.validate(value, schema)
    assert isinstance(value["n"], int)


class Aliased(pydantic.BaseModel):
    """Validation aliases the JSON schema cannot spell: a path, and a choice of names."""

    first: int = pydantic.Field(validation_alias=pydantic.AliasPath("values", 0))
    label: str = pydantic.Field(validation_alias=pydantic.AliasChoices("tag", "name"))
    kind: str = pydantic.Field(alias="Kind")


def test_parse_validates_the_properties_the_schema_asked_for(make_model: MakeModel) -> None:
    """Pydantic names an `AliasPath` field by its name in the schema (it cannot express a
    path): a reply that follows the schema must validate, so validation takes names too."""
    value = make_model(TEXT_MODEL).parse("values", Aliased)
    assert isinstance(value, Aliased)
    assert set(Aliased.model_json_schema()["properties"]) == {"first", "tag", "Kind"}


class ByAlias(pydantic.BaseModel):
    full_name: str = pydantic.Field(alias="fullName")


class ByAliasOrName(ByAlias):
    model_config = pydantic.ConfigDict(populate_by_name=True)


def test_parse_takes_an_aliased_field_by_name_only_where_the_model_does(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """Found by a probe: validation took names for every type, so a reply naming an aliased
    field by its Python name parsed, which ``ByAlias.model_validate_json`` refuses."""
    model = make_model(TEXT_MODEL)
    emulator.script(TEXT_MODEL, ['{"full_name": "Ann"}', '{"full_name": "Ann"}'])
    with pytest.raises(ParseError, match="fullName"):
        model.parse("who?", ByAlias)
    assert model.parse("who?", ByAliasOrName) == ByAliasOrName(fullName="Ann")


def test_retry_sends_the_errors_back_and_succeeds(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    emulator.script(TEXT_MODEL, ['{"name": "john", "age": 32}', '{"name": "John", "age": 32}'])
    person = make_model(TEXT_MODEL).parse("John is 32", Person, retries=1)
    assert person.name == "John"
    second = emulator.predictions[-1]
    roles = [m["role"] for m in second.messages]
    assert roles == ["user", "assistant", "user"]
    assert "capital letter" in second.last_user_text
    assert len(emulator.predictions) == 2


def test_a_key_written_twice_is_shown_in_the_text_and_reasked_by_parse(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """Found by a probe: the first value of a repeated key was never checked (parse took
    the last), and ``model()`` dropped it from the text it rendered for ``dict[str, int]``."""
    model = make_model(TEXT_MODEL)
    emulator.script(TEXT_MODEL, ['{"a": 1, "a": 2}', '{"a": 1, "a": 2}', '{"a": 1}'])
    assert model("counts?", dict[str, int]) == '{"a":1, "a":2}'
    assert model.parse("counts?", dict[str, int], retries=1) == {"a": 1}
    assert "writes the key 'a' twice" in emulator.predictions[-1].last_user_text
    emulator.script(TEXT_MODEL, ['{"name": "Ann", "age": -1, "age": 3}'])
    with pytest.raises(ParseError, match="writes the key 'age' twice"):
        model.parse("who?", Person)


def test_parse_stream_gives_no_value_once_a_key_is_written_again(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """Found by a probe: the repeated key's value replaced the one given out, so a key shown
    went away (``{'x': {'a': 1}}`` then ``{'x': {}}``) before the final ParseError."""
    emulator.script(TEXT_MODEL, ['{"x": {"a": 1}, "x": {"b": 2}}'])
    values: list[Any] = []

    def read() -> None:
        values.extend(make_model(TEXT_MODEL).parse_stream("x?", dict[str, dict[str, int]]))

    with pytest.raises(ParseError, match="writes the key 'x' twice"):
        read()
    assert values[-1] == {"x": {"a": 1}}  # the last given out: nothing after the repeat
    assert values.index({"x": {"a": 1}}) == len(values) - 1


def test_without_retries_the_error_carries_raw_text(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    emulator.script(TEXT_MODEL, ['{"name": "john", "age": 32}'])
    with pytest.raises(ParseError) as info:
        make_model(TEXT_MODEL).parse("John is 32", Person)
    assert info.value.raw == '{"name": "john", "age": 32}'
    assert any("capital letter" in e for e in info.value.errors)
    assert len(emulator.predictions) == 1


def test_a_failed_parse_stream_keeps_its_reply(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """Found by a probe: ``parse_stream``'s ``ParseError`` had no ``.replies``, so what the
    call spent was lost, where ``parse`` keeps them."""
    emulator.script(TEXT_MODEL, ['{"name": "john", "age": 32}'])
    with pytest.raises(ParseError) as info:
        list(make_model(TEXT_MODEL).parse_stream("John is 32", Person))
    (reply,) = info.value.replies
    assert reply.text == '{"name": "john", "age": 32}'
    assert reply.stats.stop_reason == "eosFound"
    assert [reply.stats.predicted_tokens] == predicted_counts(emulator)


def test_truncated_output_is_reported(make_model: MakeModel, emulator: LMStudioEmulator) -> None:
    with pytest.raises(TruncatedOutputError, match="max_tokens") as info:
        make_model(TEXT_MODEL).parse("John is 32", Person, max_tokens=3, retries=2)
    assert info.value.stop_reason == "maxPredictedTokensReached"
    assert len(emulator.predictions) == 1  # re-asking cannot fix a cut-off reply


def test_errors_name_a_schema_given_as_data_by_its_title(make_model: MakeModel) -> None:
    """Not by its whole text: a big schema made each message as long as itself."""
    fields = {f"field_{i}": {"type": "string"} for i in range(12)}
    schema = {"title": "Invoice", "type": "object", "properties": fields}
    with pytest.raises(TruncatedOutputError) as info:
        make_model(TEXT_MODEL).parse("An invoice", schema, max_tokens=3)
    message = str(info.value)
    assert "a complete value for the JSON schema 'Invoice';" in message
    assert "field_11" not in message


def test_parse_stream_yields_growing_partials_then_the_value(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    emulator.script(TEXT_MODEL, ['{"name": "Johnny", "age": 32}'])
    values = list(make_model(TEXT_MODEL).parse_stream("John", Person))
    assert values[-1] == Person(name="Johnny", age=32)
    partials = values[:-1]
    assert len(partials) > 2
    assert all(isinstance(p, dict) for p in partials)
    names = [p["name"] for p in partials if "name" in p]
    assert any(len(n) < len("Johnny") and "Johnny".startswith(n) for n in names)  # seen mid-string
    assert all(a != b for a, b in itertools.pairwise(partials))  # each one new
    assert partials[-1] == {"name": "Johnny", "age": 32}


def test_parse_stream_shows_a_number_once_it_is_whole(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """Fragments ' -12345', '678.5e', '3}': no -12345, and 'score' never vanishes."""
    emulator.script(TEXT_MODEL, ['{"name": "Al", "score": -12345678.5e3}'])
    values = list(make_model(TEXT_MODEL).parse_stream("Al", Scored))
    assert values == [
        {},
        {"name": "Al"},
        {"name": "Al", "score": -12345678500.0},
        Scored(name="Al", score=-12345678500.0),
    ]
    emulator.script(TEXT_MODEL, ["-12345678"])  # fragments '-12345', '678'
    assert list(make_model(TEXT_MODEL).parse_stream("n", int)) == [-12345678]


class Scored(pydantic.BaseModel):
    name: str
    score: float


def test_parse_stream_of_an_escaped_emoji_keeps_its_guarantees(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    r"""An emoji escaped as a surrogate pair (as Gemma writes it), cut inside its low half
    (``"ab\ud`` | ``83d\ud`` | ``e04",``): the partial values showed ``-12345`` of the
    number, then dropped its key; a tuple dropped an item (found by a probe)."""
    emulator.script(TEXT_MODEL, [r'{"name": "ab\ud83d\ude04", "score": -1234567890.5}'])
    values = list(make_model(TEXT_MODEL).parse_stream("Al", Scored))
    assert r"83d\ud" in emulator.predictions[-1].fragments  # the cut this test is about
    assert values == [
        {},
        {"name": "ab"},
        {"name": "ab\U0001f604"},
        {"name": "ab\U0001f604", "score": -1234567890.5},
        Scored(name="ab\U0001f604", score=-1234567890.5),
    ]
    emulator.script(TEXT_MODEL, [r'["ab\ud83d\ude04", -1234567890.5]'])
    values = list(make_model(TEXT_MODEL).parse_stream("Al", tuple[str, float]))
    assert values == [
        ["ab"],
        ["ab\U0001f604"],
        ["ab\U0001f604", -1234567890.5],
        ("ab\U0001f604", -1234567890.5),
    ]


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        ("1" * 5000, "number"),  # a model writing digits: longer than Python reads (4,300)
        ("[" * 3000 + "]" * 3000, "nested too deeply"),
    ],
    ids=["long-integer", "deep-nesting"],
)
@pytest.mark.parametrize("name", [TEXT_MODEL, f"emulator/{TEXT_MODEL}/{TEXT_MODEL}.gguf"])
def test_a_reply_the_sdk_cannot_read_is_still_ours_to_judge(
    fronts: Fronts, emulator: LMStudioEmulator, reply: str, problem: str, name: str
) -> None:
    """The SDK's ``json.loads`` of a finished structured reply raised a raw ``ValueError``
    or ``RecursionError`` out of every call, and nothing was re-asked (found by a probe).
    A model named by its path, not its identifier, raised AttributeError (a review)."""
    output_type: object = int if reply[0] == "1" else {"type": "array"}
    emulator.script(TEXT_MODEL, [reply] * 3)
    model = fronts.model(fronts.client(), name)
    assert model("n?", output_type) == reply  # a call returns the text as it is
    with pytest.raises(ParseError, match=problem) as info:
        model.parse("n?", output_type, retries=1)
    assert info.value.raw == reply
    assert info.value.attempts == 2  # re-asked, as for any reply that does not validate


def test_parse_list_of_prompts_in_order(make_model: MakeModel, emulator: LMStudioEmulator) -> None:
    emulator.script(TEXT_MODEL, lambda p: f'{{"name": "{p.last_user_text.title()}", "age": 1}}')
    values = make_model(TEXT_MODEL).parse(["ann", "bob", "cy"], Person)
    assert [v.name for v in values] == ["Ann", "Bob", "Cy"]


def test_parse_takes_a_tuple_of_prompts_as_batch_does(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    emulator.script(TEXT_MODEL, lambda p: f'{{"name": "{p.last_user_text.title()}", "age": 1}}')
    model = make_model(TEXT_MODEL)
    values = model.parse(("ann", "bob"), Person, max_concurrency=1)
    assert [v.name for v in values] == ["Ann", "Bob"]
    assert [Person.model_validate_json(t) for t in model.batch(("ann", "bob"), Person)] == values


def test_max_concurrency_on_one_input_says_it_is_for_lists(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    with pytest.raises(InvalidInferenceArgumentError, match="applies to parse on a list"):
        make_model(TEXT_MODEL).parse("ann", Person, max_concurrency=2)
    assert emulator.predictions == []


def test_parse_list_reports_failed_items(make_model: MakeModel, emulator: LMStudioEmulator) -> None:
    emulator.script(TEXT_MODEL, lambda p: f'{{"name": "{p.last_user_text}", "age": 1}}')
    with pytest.raises(BatchGenerationError) as info:
        make_model(TEXT_MODEL).parse(["Ann", "bob"], Person)
    assert info.value.results[0] == Person(name="Ann", age=1)
    assert isinstance(info.value.errors[1], ParseError)


@pytest.mark.asyncio
async def test_async_parse_and_stream(
    async_client: lms.AsyncClient, emulator: LMStudioEmulator
) -> None:
    emulator.script(
        TEXT_MODEL,
        ['{"name": "x", "age": 1}', '{"name": "X", "age": 1}', '{"name": "Y", "age": 2}'],
    )
    model = from_lmstudio(async_client, TEXT_MODEL)
    assert await model.parse("q", Person, retries=1) == Person(name="X", age=1)
    values = [v async for v in model.parse_stream("q", Person)]
    assert values[-1] == Person(name="Y", age=2)
    emulator.script(TEXT_MODEL, lambda p: "7")
    assert await model.parse(["a", "b"], int) == [7, 7]


def test_a_reply_cut_by_a_stop_string_says_so(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """Only 'Invalid JSON: EOF while parsing a string' was said, with no word of stop=."""
    emulator.script(TEXT_MODEL, ['{"name": "STOP", "age": 1}'])
    with pytest.raises(ParseError, match=r"a stop string ended it: drop it from stop=") as info:
        make_model(TEXT_MODEL).parse("q", Person, stop="STOP")
    assert info.value.stop_reason == "stopStringFound"
    assert info.value.raw == '{"name": "'


@pytest.mark.parametrize("entry", ["parse", "parse_stream", "parse_retries", "config"])
def test_a_stop_string_inside_a_number_is_not_a_value(
    make_model: MakeModel, emulator: LMStudioEmulator, entry: str
) -> None:
    """LM Studio drops the stop string: 3.14 with stop=["."] came back as 3.0, taken."""
    emulator.script(TEXT_MODEL, ["3.14", "3.14"])
    model = make_model(TEXT_MODEL)
    calls: dict[str, Callable[[], Any]] = {
        "parse": lambda: model.parse("q", float, stop=["."]),
        "parse_stream": lambda: list(model.parse_stream("q", float, stop=".")),
        "parse_retries": lambda: model.parse("q", float, stop=["."], retries=1),
        "config": lambda: model.parse("q", float, config={"stopStrings": ["."]}),
    }
    with pytest.raises(ParseError, match=r"a stop string ended it") as info:
        calls[entry]()
    assert info.value.raw == "3"
    assert "the stop string '.' may have ended the reply inside its value" in info.value.errors[0]
    emulator.script(TEXT_MODEL, ["42\n", "42END", "42. "])  # stops that cannot go on a number
    assert model.parse("q", int, stop=["\n"]) == 42
    assert model.parse("q", int, stop=["END"]) == 42
    assert model.parse("q", int, stop=[". "]) == 42


def test_a_value_a_stop_string_cut_is_not_asked_again(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """The model is not told of stop=: it wrote the same cut answer each time, and
    ``retries=3`` made 4 requests before the same ParseError (found by a probe). It is
    raised at once, as a truncated reply is; a reply that is only invalid is re-asked."""
    emulator.script(TEXT_MODEL, ["3.14", "2.71", "1.41", "1.73"])
    with pytest.raises(ParseError, match=r"after 1 attempt\(s\) \(a stop string ended it") as info:
        make_model(TEXT_MODEL).parse("q", float, stop=["."], retries=3)
    assert (info.value.raw, info.value.attempts) == ("3", 1)
    assert len(emulator.predictions) == 1
    emulator.script(TEXT_MODEL, ["three!", "3!"])
    assert make_model(TEXT_MODEL).parse("q", int, stop=["!"], retries=1) == 3
    assert len(emulator.predictions) == 3


def test_a_stop_string_inside_a_cfg_reply_is_not_a_value(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """Found by a probe: "1+2+3" cut at stop=["+"] came back as "1" and was taken for a
    CFG (a Regex raised): Lark's parser cannot tell whether "1" goes on, but it tells that
    "1+" ends wanting more."""
    from outlines.types import CFG

    sums = CFG('start: NUMBER ("+" NUMBER)*\n%import common.NUMBER')
    model = make_model(TEXT_MODEL, grammar=True)
    emulator.script(TEXT_MODEL, ["1+2+3", "1+2+3"])
    with pytest.raises(ParseError, match=r"a stop string ended it") as info:
        model.parse("q", sums, stop=["+"])
    assert info.value.raw == "1"
    with pytest.raises(ParseError, match=r"a stop string ended it"):
        list(model.parse_stream("q", sums, stop=["+"]))
    emulator.script(TEXT_MODEL, ["1+2\nmore", "1+2x"])  # stops the language cannot go on with
    assert model.parse("q", sums, stop=["\n"]) == "1+2"
    assert model.parse("q", sums, stop=["x"]) == "1+2"


def test_retries_elsewhere_than_parse_says_where_it_goes(make_model: MakeModel) -> None:
    """parse_stream(..., retries=1) said only 'Unknown keyword argument retries='."""
    model = make_model(TEXT_MODEL)
    with pytest.raises(
        InvalidInferenceArgumentError, match=r"retries= is not accepted: only parse"
    ):
        list(model.parse_stream("q", Person, retries=1))
    with pytest.raises(InvalidInferenceArgumentError, match=r"model.parse\(prompt, output_type"):
        model.generate("q", Person, retries=1)


def test_parse_checks_a_format_the_engine_lets_through(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """Engines constrain a date's shape only (day 31 in every month): parse checks the date."""
    schema = {
        "type": "object",
        "properties": {"due": {"type": "string", "format": "date"}},
        "required": ["due"],
    }
    emulator.script(TEXT_MODEL, ['{"due": "2024-02-31"}', '{"due": "2024-02-29"}'])
    assert make_model(TEXT_MODEL).parse("When?", schema, retries=1) == {"due": "2024-02-29"}
    assert "'2024-02-31' is not a 'date'" in emulator.predictions[-1].last_user_text


def test_a_reply_checked_as_a_regex_is_checked_without_a_warning(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """A ``format: regex`` value with ``[[`` is an ECMA-262 regex: checked with Python's
    ``re``, it warned (a FutureWarning: an error under ``-W error``), as a schema's own
    patterns did (found by mutation testing of the fix for those)."""
    schema = {
        "type": "object",
        "properties": {"rule": {"type": "string", "format": "regex"}},
        "required": ["rule"],
    }
    emulator.script(TEXT_MODEL, ['{"rule": "[[a]+"}', '{"rule": "(unclosed"}', '{"rule": "a"}'])
    model = make_model(TEXT_MODEL)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert model.parse("A rule?", schema) == {"rule": "[[a]+"}
        assert model.parse("A rule?", schema, retries=1) == {"rule": "a"}
    assert "'(unclosed' is not a 'regex'" in emulator.predictions[-1].last_user_text


def test_parse_stream_of_a_reply_with_a_lone_surrogate_ends_as_parse_does(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """A reply holding a lone surrogate (not UTF-8) made parse_stream raise a bare
    TypeError ("Expected bytes, bytearray or str") from pydantic-core's partial parse."""
    reply = '{"name": "A\ud800b", "age": 1}'
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    model = make_model(TEXT_MODEL)
    for output_type in (Person, schema):  # the same words for a type and a schema as data
        emulator.script(TEXT_MODEL, [reply, reply])
        given: list[Any] = []
        with pytest.raises(ParseError, match=r"\(root\): the reply holds a lone surrogate"):
            given.extend(model.parse_stream("q", output_type))
        # Found by a probe: a partial value held the surrogate, which then could not be
        # printed; the reply can never be valid, so no partial value follows it.
        assert given
        assert not any("\ud800" in str(value) for value in given), given
        with pytest.raises(ParseError, match="lone surrogate") as info:
            model.parse("q", output_type)
        assert info.value.raw == reply


@pytest.mark.parametrize("as_data", [False, True])
def test_a_reply_after_a_byte_order_mark_is_named_so(
    make_model: MakeModel, emulator: LMStudioEmulator, as_data: bool
) -> None:
    """Found by a probe: "expected value at line 1 column 1" for a type, and Python's
    "decode using utf-8-sig" (advice for a file) for a schema given as data."""
    output_type: Any = Person.model_json_schema() if as_data else Person
    emulator.script(TEXT_MODEL, ['\ufeff{"name": "Al", "age": 3}'])
    with pytest.raises(ParseError) as info:
        make_model(TEXT_MODEL).parse("q", output_type)
    assert info.value.errors == [
        "(root): invalid JSON: the reply begins with a byte order mark (U+FEFF), which JSON "
        "text must not"
    ]


def test_parse_stream_of_a_reply_nested_too_deeply_ends_as_parse_does(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """parse_stream raised RecursionError (comparing two partial values 3,000 levels deep)
    where parse raises ParseError. After reasoning, as a reasoning model sends it."""
    reply = "<think>ok</think>" + "[" * 3000 + "]" * 3000
    model = make_model(TEXT_MODEL)
    emulator.script(TEXT_MODEL, [reply, reply])
    with pytest.raises(ParseError, match="nested too deeply"):
        list(model.parse_stream("q", {"type": "array"}))
    with pytest.raises(ParseError, match="nested too deeply"):
        model.parse("q", {"type": "array"})


def test_a_reply_with_a_number_too_long_to_read_is_a_parse_error(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """json.loads refuses an integer of more than 4,300 digits with a ValueError that is
    no JSONDecodeError: parse and parse_stream let it out bare. After reasoning, as a
    reasoning model sends it (the SDK then does not read the reply first)."""
    reply = "<think>ok</think>" + "9" * 4400
    model = make_model(TEXT_MODEL)
    emulator.script(TEXT_MODEL, [reply, reply])
    with pytest.raises(ParseError, match="a number too long to read") as info:
        model.parse("q", {"type": "integer"})
    assert info.value.raw == "9" * 4400
    with pytest.raises(ParseError, match="a number too long to read"):
        list(model.parse_stream("q", {"type": "integer"}))


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_a_schema_given_as_data_takes_no_nan_or_infinity(
    make_model: MakeModel, emulator: LMStudioEmulator, constant: str
) -> None:
    """Python's json reads NaN and Infinity, which are not JSON, and jsonschema takes
    them as numbers: parse returned nan for {"type": "number"} (and `extract` wrote it)."""
    schema = {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}
    emulator.script(TEXT_MODEL, [f'{{"x": {constant}}}', '{"x": 1.5}'])
    model = make_model(TEXT_MODEL)
    with pytest.raises(ParseError, match=f"{constant} is not JSON"):
        model.parse("q", schema)
    assert model.parse("q", schema) == {"x": 1.5}


@pytest.mark.parametrize("missing", [None, float("nan"), 42])
def test_parse_of_a_list_with_a_missing_value_names_that_item(
    make_model: MakeModel, emulator: LMStudioEmulator, missing: object
) -> None:
    """A list of prompts with one that is no input (a column with a missing value) was taken
    as one [prompt, Image, ...] input, and the error blamed the second prompt: "item 1, is a
    str ('bob'); after the prompt a list takes only images". It is refused as batch is."""
    model = make_model(TEXT_MODEL)
    prompts = ["ann", "bob", missing]
    for call in (model.parse, model.batch):
        with pytest.raises(UnsupportedInputError, match="Input of type") as info:
            call(prompts, Person)
        assert "after the prompt" not in str(info.value)
        assert str(info.value).startswith("Batch item 2: ")
    # With an image it is one [prompt, Image, ...] input, told what may follow the prompt.
    with pytest.raises(UnsupportedInputError, match=r"item 2, is a str \('more'\); after the"):
        model.parse(["Describe", png_image(), "more"], Person)
    assert emulator.requests == []


def test_parse_reads_a_literal_of_str_and_int_enum_members(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """A ``Literal`` of plain Enum members is refused (Pydantic cannot read it back from
    JSON); members of ``str`` and ``int`` enums read back, so they are served."""
    import enum
    from typing import Literal

    class Shade(enum.StrEnum):
        DARK = "dark"

    class Level(enum.IntEnum):
        HIGH = 3

    class Setting(pydantic.BaseModel):
        shade: Literal[Shade.DARK]
        level: Literal[Level.HIGH]

    emulator.script(TEXT_MODEL, ['{"shade": "dark", "level": 3}'])
    value = make_model(TEXT_MODEL).parse("x", Setting)
    assert value == Setting(shade=Shade.DARK, level=Level.HIGH)
    assert emulator.predictions[-1].structured is not None
    schema = emulator.predictions[-1].structured["jsonSchema"]
    assert schema["properties"]["shade"]["const"] == "dark"


class Tree(typing.TypedDict):  # typing's TypedDict, which Pydantic refuses before 3.12
    label: str
    kids: list["Tree"]


class Tag(typing.TypedDict, total=False):
    name: str
    parent: "Branch | None"


class Branch(typing.TypedDict):
    tag: Tag


@pytest.mark.parametrize(
    ("output_type", "reply"),
    [
        (Tree, '{"label": "a", "kids": [{"label": "b", "kids": []}]}'),
        (Branch, '{"tag": {"parent": {"tag": {}}}}'),
    ],
)
def test_recursive_typing_typeddicts_are_sent_and_parsed(
    make_model: MakeModel, emulator: LMStudioEmulator, output_type: Any, reply: str
) -> None:
    """Found by a probe: a ``typing.TypedDict`` that refers to itself, or to one that refers
    back to it, raised a bare ``RecursionError`` (rebuilding it for Pydantic recursed)."""
    model = make_model(TEXT_MODEL)
    emulator.script(TEXT_MODEL, [reply])
    assert model.parse("x", output_type) == json.loads(reply)
    structured = emulator.predictions[-1].structured
    assert structured is not None
    assert structured["jsonSchema"]["title"] == output_type.__name__
    assert output_type.__name__ in structured["jsonSchema"]["$defs"]  # refers to itself
    assert json.loads(model("free sampling", output_type))  # the engine takes the schema


_T = typing.TypeVar("_T")


@dataclasses.dataclass
class Pair(typing.Generic[_T]):
    left: _T
    right: _T


class Labelled(typing_extensions.TypedDict, typing.Generic[_T]):
    label: str
    value: _T


@pytest.mark.parametrize(
    ("output_type", "reply", "expected", "wrong"),
    [
        (Pair[int], '{"left": 1, "right": 2}', Pair(1, 2), '{"left": "1", "right": 2}'),
        (list[Pair[str]], '[{"left": "a", "right": "b"}]', [Pair("a", "b")], '[{"left": 1}]'),
        (
            Labelled[float],
            '{"label": "x", "value": 1.5}',
            {"label": "x", "value": 1.5},
            '{"label": "x", "value": "1.5"}',
        ),
    ],
    ids=repr,
)
def test_generic_dataclasses_and_typeddicts_are_sent_and_parsed(
    make_model: MakeModel,
    emulator: LMStudioEmulator,
    output_type: Any,
    reply: str,
    expected: object,
    wrong: str,
) -> None:
    """Found by a probe: a generic dataclass or TypedDict with its parameters given
    (``Pair[int]``) was refused as not supported, though Pydantic builds and reads it, as
    it does a generic Pydantic model (which worked)."""
    model = make_model(TEXT_MODEL)
    emulator.script(TEXT_MODEL, [reply])
    assert model.parse("x", output_type) == expected
    structured = emulator.predictions[-1].structured
    assert structured is not None
    schema = structured["jsonSchema"]
    jsonschema.validate(json.loads(reply), schema)
    with pytest.raises(jsonschema.ValidationError):  # the parameter's type was sent
        jsonschema.validate(json.loads(wrong), schema)


class _Point(typing.NamedTuple):
    x: int
    label: str


@pytest.mark.parametrize(
    ("output_type", "reply", "expected"),
    [
        (
            uuid.UUID,
            '"12345678-1234-5678-1234-567812345678"',
            uuid.UUID(int=0x12345678123456781234567812345678),
        ),
        (decimal.Decimal, '"1.10"', decimal.Decimal("1.10")),
        (_Point, '[1, "a"]', _Point(1, "a")),
        (dict[str, Any], '{"a": [1, null]}', {"a": [1, None]}),
        (
            list[uuid.UUID],
            '["12345678-1234-5678-1234-567812345678"]',
            [uuid.UUID(int=0x12345678123456781234567812345678)],
        ),
    ],
    ids=repr,
)
def test_types_outlines_has_no_regex_for_are_json_documents(
    make_model: MakeModel, emulator: LMStudioEmulator, output_type: Any, reply: str, expected: Any
) -> None:
    """Found by a probe: ``uuid.UUID``, ``Decimal``, a ``NamedTuple``, ``dict[str, Any]``...
    worked as fields of a model but were refused as the output type itself."""
    model = make_model(TEXT_MODEL)
    emulator.script(TEXT_MODEL, [reply, reply])
    assert model("x", output_type) == reply  # the JSON document, as for a model
    assert model.parse("x", output_type) == expected
    structured = emulator.predictions[-1].structured
    assert structured is not None
    jsonschema.validate(json.loads(reply), structured["jsonSchema"])


class _Reading(pydantic.BaseModel):
    x: float


_NUMBER_SCHEMA = {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}


@pytest.mark.parametrize(
    ("output_type", "reply"),
    [
        (_Reading, '{"x": "NaN"}'),
        (_Reading, '{"x": "-Infinity"}'),
        (_Reading, '{"x": 1e400}'),
        (_Reading, '{"x": -1E+309}'),
        (_Reading, '{"x": 1' + "0" * 400 + "}"),
        (list[float], "[1.5, 2e308]"),
        (_NUMBER_SCHEMA, '{"x": 1e400}'),
        ({"type": "array"}, "[1, [2, -1.8e308]]"),
    ],
)
def test_parse_refuses_numbers_that_are_not_finite(
    make_model: MakeModel, emulator: LMStudioEmulator, output_type: Any, reply: str
) -> None:
    """Found by a probe: only the bare ``NaN`` literal was refused; ``"NaN"`` (read by
    Pydantic's lax mode) and numbers too large for a float (``1e400``, read as ``inf``)
    came back as values, though the docs promise ParseError. They are re-asked."""
    emulator.script(TEXT_MODEL, [reply, "[1.5]" if reply[0] == "[" else '{"x": 1.5}'])
    model = make_model(TEXT_MODEL)
    value = model.parse("q", output_type, retries=1)
    assert value in (_Reading(x=1.5), [1.5], {"x": 1.5})
    assert len(emulator.predictions) == 2
    emulator.script(TEXT_MODEL, [reply])
    with pytest.raises(ParseError, match=r"not finite|valid number"):
        model.parse("q", output_type)


def test_parse_keeps_finite_numbers_and_text_that_looks_like_them(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """The check of non-finite numbers refuses values, not what their text looks like."""

    class Row(pydantic.BaseModel):
        x: float
        n: int
        note: str

    big = "1" + "0" * 400
    emulator.script(TEXT_MODEL, [f'{{"x": 1.5e308, "n": {big}, "note": "1e400 NaN inf"}}'])
    row = make_model(TEXT_MODEL).parse("q", Row)
    assert row == Row(x=1.5e308, n=10**400, note="1e400 NaN inf")
    emulator.script(TEXT_MODEL, [f'{{"n": {big}, "s": "-Infinity 2e999"}}'])
    assert make_model(TEXT_MODEL).parse("q", {"type": "object"}) == {
        "n": 10**400,
        "s": "-Infinity 2e999",
    }


class _Count(pydantic.BaseModel):
    n: int


class _Flag(pydantic.BaseModel):
    ok: bool


class _When(pydantic.BaseModel):
    when: datetime.datetime


@pytest.mark.parametrize(
    ("output_type", "reply"),
    [
        (_Count, '{"n": true}'),
        (_Count, '{"n": "3"}'),
        (_Count, '{"n": 9007199254740993.0}'),
        (_Flag, '{"ok": "off"}'),
        (_Flag, '{"ok": 1}'),
        (_When, '{"when": 1700000000}'),
        (int, "true"),
        (bool, '"yes"'),
    ],
)
def test_parse_coerces_no_value_the_schema_sent_forbids(
    make_model: MakeModel, emulator: LMStudioEmulator, output_type: Any, reply: str
) -> None:
    """Found by a probe: Pydantic's lax mode turned ``true`` into ``1``, ``"off"`` into
    ``False``, a number into a datetime, which the schema sent forbids and a schema given
    as data refused. Replies are validated in strict mode, as instructor does."""
    emulator.script(TEXT_MODEL, [reply])
    with pytest.raises(ParseError):
        make_model(TEXT_MODEL).parse("q", output_type)


def test_a_type_that_asks_for_lax_mode_gets_it(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """Pydantic's strict=True at validation time overrides a model's or field's own
    ``strict=False``: such a type is validated in lax mode, as its author chose."""

    class Loose(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(strict=False)
        n: int

    class LooseField(pydantic.BaseModel):
        n: int = pydantic.Field(strict=False)
        m: int

    model = make_model(TEXT_MODEL)
    emulator.script(TEXT_MODEL, ['{"n": "3"}'])
    assert model.parse("q", Loose) == Loose(n=3)
    emulator.script(TEXT_MODEL, ['{"n": "3", "m": 4}'])
    assert model.parse("q", LooseField) == LooseField(n=3, m=4)


def test_a_lone_surrogate_character_is_refused_on_the_schema_path(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """Found by a probe: the SDK reads LM Studio's ``\\ud800`` escape into a character,
    which the schema path returned (it looked for the escape only) and the value then
    failed to encode; Pydantic refuses it. Both re-ask."""
    schema = {"type": "object", "properties": {"name": {"type": "string"}}}
    for output_type in (schema, Person):
        emulator.script(TEXT_MODEL, ['{"name": "a\ud800b"}', '{"name": "Ab", "age": 1}'])
        value = make_model(TEXT_MODEL).parse("q", output_type, retries=1)
        assert value in ({"name": "Ab", "age": 1}, Person(name="Ab", age=1))
        emulator.script(TEXT_MODEL, ['{"name": "a\ud800b"}'])
        with pytest.raises(ParseError):
            make_model(TEXT_MODEL).parse("q", output_type)


def test_a_timeout_while_asking_again_says_the_replies_failed(
    make_model: MakeModel, emulator: LMStudioEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It said only "No complete answer ... check the server", and kept nothing of the two
    replies that had come back whole and invalid (found by a probe)."""
    monkeypatch.setattr(emulator, "token_latency", 0.1)
    emulator.script(TEXT_MODEL, ['{"name": "Ann", "age": "thirty"}'] * 40)
    with pytest.raises(LMStudioTimeoutError) as info:
        make_model(TEXT_MODEL).parse("Ann is 30", Person, retries=30, timeout=2.0)
    replies = sum(p.stop_reason == "eosFound" for p in emulator.predictions)
    assert replies >= 1  # at least one came back whole before the time ran out
    said = "the reply" if replies == 1 else f"the {replies} replies"
    message = str(info.value)
    assert f"It ran out asking again: {said} before did not validate" in message
    assert "age: Input should be a valid integer" in message
    # Found by mutation testing: the advice is the call's own (its timeout= was spent on
    # re-asks), not the server's ("check the server"), and says where the last reply is.
    assert info.value.hint == (
        "The replies are what failed: the last one is this error's __context__ (a "
        "ParseError with .raw, .errors and .replies). Pass a larger timeout=, or fewer retries=."
    )
    last = info.value.__context__
    assert isinstance(last, ParseError)
    assert (last.raw, last.attempts) == ('{"name": "Ann", "age": "thirty"}', replies)
    emulator.script(TEXT_MODEL, ['{"name": "Ann", "age": 30}'])  # the first: said as before
    monkeypatch.setattr(emulator, "token_latency", 1.0)
    with pytest.raises(LMStudioTimeoutError) as first:
        make_model(TEXT_MODEL).parse("Ann is 30", Person, retries=3, timeout=0.3)
    assert "asking again" not in str(first.value)


def test_a_read_timeout_while_asking_again_keeps_its_own_advice(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """LM Studio went silent on the re-ask: its read_timeout advice stands (a review found
    it replaced by "the replies are what failed ... pass a larger timeout="), with the
    earlier invalid reply said and kept as the context all the same."""
    emulator.script(TEXT_MODEL, ['{"name": "Ann", "age": "thirty"}'])
    emulator.add_fault(Fault("predict", "delay", seconds=0.0))  # the first: served
    emulator.add_fault(Fault("predict", "hang"))  # the re-ask: nothing comes
    with pytest.raises(LMStudioTimeoutError) as info:
        make_model(TEXT_MODEL, read_timeout=1.0).parse("Ann is 30", Person, retries=2)
    message = str(info.value)
    assert message.startswith("LM Studio sent nothing for 1 s")
    assert "It ran out asking again: the reply before did not validate" in message
    assert "Pass a larger read_timeout=" in message
    assert "The replies are what failed" not in message
    assert isinstance(info.value.__context__, ParseError)


def test_a_re_ask_that_no_longer_fits_the_context_says_it_was_asking_again(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """Found by a probe of the real engine: the re-ask holds the invalid reply and its errors,
    and LM Studio refused it for the context length; the error blamed a prompt the caller
    never wrote, and the reply it had spent tokens on was lost."""
    emulator.script(TEXT_MODEL, ['{"name": "Ann", "age": "thirty"}'])
    emulator.add_fault(Fault("predict", "delay", seconds=0.0))  # the first: served
    overflow = "The prompt has 111 tokens, but the model is loaded with a context length of 96"
    emulator.add_fault(Fault("predict", "error", message=overflow))  # the re-ask
    with pytest.raises(LMStudioPredictionError) as info:
        make_model(TEXT_MODEL).parse("Ann is 30", Person, retries=3)
    message = str(info.value)
    assert f"{overflow}. It failed asking again: the reply before did not validate" in message
    assert info.value.hint is not None
    assert "Each re-ask sends the invalid reply and its errors after the prompt" in info.value.hint
    last = info.value.__context__
    assert isinstance(last, ParseError)
    assert [r.text for r in last.replies] == ['{"name": "Ann", "age": "thirty"}']
    assert [r.stats.predicted_tokens for r in last.replies] == predicted_counts(emulator)[:1]


class Quote(pydantic.BaseModel):
    """A quote that must come from the source text the call gives as ``context=``."""

    text: str

    @pydantic.field_validator("text")
    @classmethod
    def from_the_source(cls, value: str, info: pydantic.ValidationInfo) -> str:
        source = (info.context or {}).get("source")
        if source is None:
            raise ValueError("no source text in the validation context")
        if value not in source:
            raise ValueError(f"{value!r} is not in the source text")
        return value


def test_parse_passes_context_to_the_validators_on_every_attempt(
    fronts: Fronts, emulator: LMStudioEmulator
) -> None:
    """No call took a validation context, so a validator reading ``info.context`` failed
    every attempt, and each re-ask was spent on an error the model could not fix (found by
    a probe of what instructor users write)."""
    source = "the quick brown fox"
    emulator.script(TEXT_MODEL, ['{"text": "slow fox"}', '{"text": "quick brown"}'])
    model = fronts.model(fronts.client(), TEXT_MODEL)
    quote = model.parse("q", Quote, retries=1, context={"source": source})
    assert quote == Quote.model_validate({"text": "quick brown"}, context={"source": source})
    assert "'slow fox' is not in the source text" in emulator.predictions[-1].last_user_text
    emulator.script(TEXT_MODEL, ['{"text": "brown fox"}'] * 2)
    assert (
        model.parse(["a", "b"], Quote, context={"source": source})
        == [Quote.model_construct(text="brown fox")] * 2
    )
    emulator.script(TEXT_MODEL, ['{"text": "fox"}'])
    *_, value = list(model.parse_stream("q", Quote, context={"source": source}))
    assert value == Quote.model_construct(text="fox")
    emulator.script(TEXT_MODEL, ['{"text": "fox"}'])
    with pytest.raises(ParseError, match="no source text in the validation context"):
        model.parse("q", Quote)


@pytest.mark.parametrize(
    ("output_type", "checker"),
    [
        ({"type": "object"}, "is checked by jsonschema, which takes no context"),
        (outlines.types.Regex("[a-z]+"), "is checked against its grammar"),
        (None, "is text, not checked"),
    ],
)
def test_context_for_a_type_pydantic_does_not_check_is_refused_before_sending(
    make_model: MakeModel, emulator: LMStudioEmulator, output_type: object, checker: str
) -> None:
    model = make_model(TEXT_MODEL, grammar=True)
    calls: list[Callable[[], object]] = [
        lambda: model.parse("q", output_type, context={"a": 1}),
        lambda: model.parse([], output_type, context={"a": 1}),
        lambda: model.parse_stream("q", output_type, context={"a": 1}),
    ]
    for call in calls:
        with pytest.raises(InvalidInferenceArgumentError, match=f"{checker}: drop context="):
            call()
    assert emulator.predictions == []


@pytest.mark.parametrize(
    ("keyword", "hint"),
    [
        ("max_retries", r"max_retries= is not accepted: use retries="),
        ("validation_context", r"validation_context= is not accepted: use context="),
    ],
)
def test_instructor_spellings_point_to_ours(
    make_model: MakeModel, emulator: LMStudioEmulator, keyword: str, hint: str
) -> None:
    with pytest.raises(InvalidInferenceArgumentError, match=hint):
        make_model(TEXT_MODEL).parse("q", Person, **{keyword: 2})
    # Each method that takes it is named (parse_reply was left out: found by a probe).
    only = r"only parse, parse_reply and parse_stream take"
    with pytest.raises(InvalidInferenceArgumentError, match=only):
        make_model(TEXT_MODEL)("q", Person, context={})
    with pytest.raises(InvalidInferenceArgumentError, match=r"only parse and parse_reply take"):
        make_model(TEXT_MODEL).reply("q", Person, retries=1)
    with pytest.raises(InvalidInferenceArgumentError, match=r"parse also takes retries="):
        make_model(TEXT_MODEL).parse("q", Person, retry=2)
    assert emulator.predictions == []


def test_parse_reply_gives_the_value_with_its_reply_and_the_rejected_ones(
    fronts: Fronts, emulator: LMStudioEmulator
) -> None:
    """The value came without its token counts, which the SDK by hand gives with its
    ``parsed`` (found by a probe of what instructor and pydantic-ai users expect:
    ``create_with_completion``, ``usage()``)."""
    emulator.script(
        TEXT_MODEL,
        ['{"name": "Ann", "age": "x"}', '{"name": "Ann"}', '{"name": "Ann", "age": 3}'],
    )
    model = fronts.model(fronts.client(), TEXT_MODEL)
    result = model.parse_reply("q", Person, retries=2)
    assert isinstance(result, Parsed)
    assert result.value == Person(name="Ann", age=3)
    assert result.attempts == 3
    assert [r.text for r in result.replies] == [
        '{"name": "Ann", "age": "x"}',
        '{"name": "Ann"}',
        '{"name": "Ann", "age": 3}',
    ]
    assert result.replies == (*result.rejected, result.reply)
    assert [r.stats.predicted_tokens for r in result.replies] == predicted_counts(emulator)[-3:]
    assert {r.stats.stop_reason for r in result.replies} == {"eosFound"}
    emulator.script(TEXT_MODEL, lambda p: f'{{"name": "{p.last_user_text}", "age": 1}}')
    results = model.parse_reply(["Ann", "Bob"], Person)
    assert [(r.value.name, r.attempts, r.reply.text) for r in results] == [
        ("Ann", 1, '{"name": "Ann", "age": 1}'),
        ("Bob", 1, '{"name": "Bob", "age": 1}'),
    ]
    emulator.script(TEXT_MODEL, ['{"name": 1}'])
    with pytest.raises(ParseError):
        model.parse_reply("q", Person)


@pytest.mark.parametrize("method", ["parse", "parse_reply"])
def test_a_failed_parse_keeps_what_each_attempt_spent(
    fronts: Fronts, emulator: LMStudioEmulator, method: str
) -> None:
    """A failed call's replies and their token counts were lost: the error kept the last
    text alone (found by a probe; instructor's exception carries its attempts' usage)."""
    emulator.script(TEXT_MODEL, ['{"name": "Ann", "age": "x"}', '{"name": "Ann"}'])
    model = fronts.model(fronts.client(), TEXT_MODEL)
    with pytest.raises(ParseError) as info:
        getattr(model, method)("q", Person, retries=1)
    error = info.value
    assert [r.text for r in error.replies] == ['{"name": "Ann", "age": "x"}', '{"name": "Ann"}']
    assert error.replies[-1].text == error.raw
    assert [r.stats.predicted_tokens for r in error.replies] == predicted_counts(emulator)[-2:]
    assert pickle.loads(pickle.dumps(error)).replies == error.replies
    emulator.script(TEXT_MODEL, ['{"name": "Ann", "age": 12345678'])
    with pytest.raises(TruncatedOutputError) as cut:  # cut off: not asked again
        getattr(model, method)("q", Person, retries=3, max_tokens=4)
    assert [r.stats.stop_reason for r in cut.value.replies] == ["maxPredictedTokensReached"]
    # With no retries (the default), parse takes a shorter path: it lost them (a probe).
    emulator.script(TEXT_MODEL, ['{"name": "Ann", "age": 12345678', '{"name": 1}'])
    for expected in (TruncatedOutputError, ParseError):
        with pytest.raises(expected) as one:
            getattr(model, method)("q", Person, max_tokens=4)
        assert [r.text for r in one.value.replies] == [one.value.raw]
        assert [r.stats.predicted_tokens for r in one.value.replies] == predicted_counts(emulator)[
            -1:
        ]


@pytest.mark.parametrize("keyword", ["response_model", "response_format", None])
def test_parse_with_its_output_type_under_another_name_says_where_it_goes(
    fronts: Fronts, emulator: LMStudioEmulator, keyword: str | None
) -> None:
    """instructor's ``parse(prompt, response_model=Person)`` raised Python's bare "ModelApi.parse()
    missing 1 required positional argument", naming an internal class (found by a probe of
    what its users write)."""
    model = fronts.model(fronts.client(), TEXT_MODEL)
    given = {keyword: Person} if keyword else {}
    said = f"{keyword}= is not accepted: " if keyword else ""
    for method in ("parse", "parse_reply", "parse_stream"):
        with pytest.raises(
            InvalidInferenceArgumentError,
            match=rf"^{said}{method} takes the output type as its second argument, e\.g\. "
            rf"model\.{method}\(prompt, Person\)\.$",
        ):
            getattr(model, method)("q", **given)
    with pytest.raises(InvalidInferenceArgumentError, match="response_model= is not accepted"):
        model("q", response_model=Person)
    assert emulator.predictions == []


class _Booking(pydantic.BaseModel):
    page: pydantic.HttpUrl
    length: datetime.timedelta


@pytest.mark.parametrize("key", [TEXT_MODEL, "llama-3.2-1b-instruct-mlx"], ids=["gguf", "mlx"])
def test_a_url_and_a_duration_field_parse_from_what_the_engines_write(
    make_model: MakeModel, key: str
) -> None:
    """Found by a probe fuzzing Pydantic models: ``HttpUrl`` (``format: uri``) and
    ``timedelta`` (``format: duration``) were sent as any string, which no engine
    constrains, and ``parse`` failed on almost every reply. Sent as patterns of what the
    types read, each reply of the engines (llama.cpp's grammar, outlines-core) parses."""
    model = make_model(key)
    for attempt in range(5):
        booking = model.parse(f"A booking, {attempt}", _Booking, max_tokens=400)
        assert booking.page.scheme in ("http", "https")
        assert isinstance(booking.length, datetime.timedelta)


class _Book(pydantic.BaseModel):
    title: str
    year: int


def test_on_message_gets_the_accepted_reply_only(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """``parse(chat, retries=1, on_message=chat.append)``, the SDK's own chat pattern: the
    rejected reply was added to the caller's chat, the re-ask sent it twice (merged into one
    assistant message), and the accepted one made ``Chat.append`` raise: the value was lost
    (found by a probe)."""
    model = make_model(TEXT_MODEL)
    chat = lms.Chat("You extract books.")
    chat.add_user_message("The Hobbit, 1937")
    accepted = '{"title": "The Hobbit", "year": 1937}'
    emulator.script(TEXT_MODEL, ["not json", accepted])
    got: list[Any] = []

    def on_message(message: Any) -> None:
        got.append(message)
        chat.append(message)

    assert model.parse(chat, _Book, retries=1, on_message=on_message) == _Book(
        title="The Hobbit", year=1937
    )
    assert len(got) == 1
    roles = [message["role"] for message in emulator.predictions[1].messages]
    assert roles == ["system", "user", "assistant", "user"]  # the rejected reply once
    model(chat)  # what the caller's chat holds now, as LM Studio receives it
    history = emulator.predictions[-1].messages
    assert [message["role"] for message in history] == ["system", "user", "assistant"]
    assert message_text(history[-1]) == accepted


def test_on_message_gets_no_rejected_reply_without_retries_either(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """With ``retries=0`` (a shortcut with no flow) ``on_message`` got the rejected reply,
    where ``retries=1`` and a list of inputs gave it none (found by a probe)."""
    model = make_model(TEXT_MODEL)
    got: list[Any] = []
    emulator.script(TEXT_MODEL, ["not json"])
    with pytest.raises(ParseError):
        model.parse("hi", _Book, on_message=got.append)
    assert got == []
    emulator.script(TEXT_MODEL, ['{"title": "Dune", "year": 1965}'])
    assert model.parse("hi", _Book, on_message=got.append) == _Book(title="Dune", year=1965)
    assert len(got) == 1


def test_a_reply_a_stop_string_cut_into_invalid_json_is_not_asked_again(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """The model is not told of ``stop=``: each re-ask was cut the same way (found by a probe:
    4 requests for ``retries=3``), as a valid reply a stop string may have cut is not."""
    model = make_model(TEXT_MODEL)
    for reply in ('{"name": "Ada", "age": 36}', '{"name": "Smith, Ann", "age": 36}'):
        # cut between two tokens, then inside a string (found by a review)
        emulator.script(TEXT_MODEL, [reply] * 4)
        sent = len(emulator.predictions)
        with pytest.raises(ParseError, match="a stop string ended it"):
            model.parse("hi", Person, stop=[","], retries=3)
        assert len(emulator.predictions) == sent + 1
        assert emulator.predictions[-1].stop_reason == "stopStringFound"


def test_parse_of_a_grammar_given_in_config_says_what_to_do(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """Outlines' own ``TypeError: Type None is currently not supported. Please open an
    issue`` came out of ``parse(prompt, None, config={"structured": {"type": "gbnf", ...}})``
    (found by a probe)."""
    model = make_model(TEXT_MODEL)
    config = {"structured": {"type": "gbnf", "gbnfGrammar": 'root ::= "yes" | "no"'}}
    with pytest.raises(UnsupportedOutputTypeError, match="grammar=True"):
        model.parse("hi", None, config=config)
    assert emulator.predictions == []


def test_max_concurrency_none_is_the_model_s_own(make_model: MakeModel) -> None:
    """Refused as "must be an int", where every other call setting takes None as unset
    (found by a probe: a wrapper passing its defaults on)."""
    model = make_model(TEXT_MODEL, max_concurrency=2)
    assert len(model.batch(["a", "b", "c"], max_concurrency=None)) == 3
