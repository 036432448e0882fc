"""Every supported output type, end to end: the text matches what Outlines' local models return."""

import datetime
import enum
import json
import re
from typing import Annotated, Any, Literal, NewType, Optional, TypeVar, Union

import lmstudio as lms
import outlines
import pydantic
import pytest
from outlines.types import Choice
from outlines.types.dsl import python_types_to_terms, to_regex
from typing_extensions import TypeAliasType

from outlines_lmstudio import ParseError, UnsupportedOutputTypeError, from_lmstudio
from outlines_lmstudio.testing import LMStudioEmulator

from .conftest import TEXT_MODEL, MakeModel


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


SIMPLE_TYPES: list[Any] = [
    Literal["pos", "neg"],
    Colour,
    Level,
    Choice(["yes", "no", "maybe"]),
    bool,
    int,
    float,
    datetime.date,
    datetime.time,
    datetime.datetime,
    Optional[int],
    Union[int, bool],
    Optional[Literal["a", "b"]],
    list[int],
    list[Literal["x", "y"]],
    tuple[int, bool],
    tuple[float, ...],
    dict[str, int],
]


@pytest.mark.parametrize("output_type", SIMPLE_TYPES, ids=repr)
@pytest.mark.parametrize("seed_prompt", ["first", "second", "third"])
def test_text_matches_outlines_own_regex_for_the_type(
    make_model: MakeModel, emulator: LMStudioEmulator, output_type: Any, seed_prompt: str
) -> None:
    model = make_model(TEXT_MODEL)
    text = model(f"Answer ({seed_prompt})", output_type)
    outlines_regex = to_regex(python_types_to_terms(output_type))
    assert re.fullmatch(outlines_regex, text), (text, outlines_regex)
    # what reached the server is a JSON schema, and the raw reply was JSON
    assert emulator.predictions[-1].structured is not None
    json.loads(emulator.predictions[-1].text)


def test_a_schema_over_64_kib_is_answered(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """LM Studio's end of a prediction repeats its settings, the schema included, so a large
    schema makes a message over 64 KiB. httpx-ws 0.10.0 limits whole messages to 64 KiB by
    default, and lmstudio 1.5 keeps that default: the SDK dropped the session ("Client
    unexpectedly disconnected"; found in CI once 0.10.0 came out). pyproject keeps it
    below 0.10."""
    fields: dict[str, Any] = {f"field_{i}": (Optional[int], None) for i in range(1500)}
    wide = pydantic.create_model("Wide", last=(int, ...), **fields)
    schema = json.dumps(wide.model_json_schema())
    assert len(schema.encode()) > 64 * 1024
    result = make_model(TEXT_MODEL).parse("Fill it in", wide)
    assert isinstance(result, wide)
    assert isinstance(result.last, int)
    sent = emulator.predictions[-1].structured
    assert sent is not None
    assert len(json.dumps(sent).encode()) > 64 * 1024  # the schema went whole, and came back


def test_str_is_a_quoted_string(make_model: MakeModel) -> None:
    text = make_model(TEXT_MODEL)("Name a colour", str)
    assert text.startswith('"')
    assert text.endswith('"')
    assert isinstance(json.loads(text), str)


def test_scripted_replies_render_exactly(make_model: MakeModel, emulator: LMStudioEmulator) -> None:
    model = make_model(TEXT_MODEL)
    cases: list[tuple[Any, str, str]] = [
        (Literal["pos", "neg"], '"pos"', "pos"),
        (int, "42", "42"),
        (bool, "false", "False"),
        (Optional[int], "null", "None"),
        (list[int], "[1,2,3]", "[1, 2, 3]"),
        (dict[str, int], '{"a": 1, "b": 2}', '{"a":1, "b":2}'),
        (tuple[int, str], '[1, "x"]', '(1, "x")'),
        (datetime.datetime, '"2024-02-29 13:45:00"', "2024-02-29 13:45:00"),
        (Colour, '"green"', "green"),
        (Union[int, str], '"5"', '"5"'),
        (Union[int, str], "5", "5"),
        (str, '"hi"', '"hi"'),
        (Choice(["a", "b"]), '"b"', "b"),
    ]
    emulator.script(TEXT_MODEL, [reply for _, reply, _ in cases] * 3)
    for output_type, _, expected in cases:
        assert model("q", output_type) == expected
    for output_type, _, expected in cases:
        assert "".join(model.stream("q", output_type)) == expected
    assert model.batch(["q"] * len(cases), Literal["pos", "neg"], max_concurrency=1)[0] == "pos"


@pytest.mark.asyncio
async def test_async_simple_types(
    async_client: lms.AsyncClient, emulator: LMStudioEmulator
) -> None:
    emulator.script(TEXT_MODEL, ['"neg"', '"neg"', "7"])
    model = from_lmstudio(async_client, TEXT_MODEL)
    assert await model("q", Literal["pos", "neg"]) == "neg"
    assert [c async for c in model.stream("q", Literal["pos", "neg"])] == ["neg"]
    assert await outlines.Generator(model, int)("q") == "7"


Rating = Annotated[int, pydantic.Field(ge=1, le=5)]
Code = Annotated[str, pydantic.Field(pattern=r"^[A-Z]{2,4}$")]


@pytest.mark.parametrize("seed_prompt", ["first", "second", "third", "fourth"])
def test_annotated_constraints_are_sent_and_hold(
    make_model: MakeModel, emulator: LMStudioEmulator, seed_prompt: str
) -> None:
    model = make_model(TEXT_MODEL)
    text = model(f"Rate it ({seed_prompt})", Rating)
    assert emulator.predictions[-1].structured == {
        "type": "json",
        "jsonSchema": {"type": "integer", "minimum": 1, "maximum": 5},
    }
    assert re.fullmatch(to_regex(python_types_to_terms(int)), text)  # rendered as an int is
    assert 1 <= int(text) <= 5
    assert 1 <= model.parse(f"Rate it ({seed_prompt})", Rating) <= 5
    code = model.parse(f"A code ({seed_prompt})", Code)
    assert re.fullmatch(r"[A-Z]{2,4}", code)
    ratings = model.parse(f"Rate three ({seed_prompt})", list[Rating])
    assert ratings
    assert all(1 <= r <= 5 for r in ratings)


def test_outlines_generator_takes_an_annotated_type(client: lms.Client) -> None:
    generator = outlines.Generator(from_lmstudio(client, TEXT_MODEL), Rating)
    texts = [generator(f"Rate it ({i})") for i in range(4)]
    assert all(isinstance(t, str) and 1 <= int(t) <= 5 for t in texts), texts


def test_parse_checks_an_annotated_constraint_and_re_asks(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    emulator.script(TEXT_MODEL, ["9", "4", "0"])
    model = make_model(TEXT_MODEL)
    assert model.parse("Rate it", Rating, retries=1) == 4
    assert "less than or equal to 5" in emulator.predictions[-1].last_user_text
    with pytest.raises(ParseError, match="greater than or equal to 1"):
        model.parse("Rate it", Rating)


@pytest.mark.asyncio
async def test_async_annotated_constraints(
    async_client: lms.AsyncClient, emulator: LMStudioEmulator
) -> None:
    emulator.script(TEXT_MODEL, ["3", "6", "2", "5"])
    model = from_lmstudio(async_client, TEXT_MODEL)
    assert await model("q", Rating) == "3"
    assert await model.parse("q", Rating, retries=1) == 2
    assert emulator.predictions[-1].structured == {
        "type": "json",
        "jsonSchema": {"type": "integer", "minimum": 1, "maximum": 5},
    }
    assert await outlines.Generator(model, Rating)("q") == "5"


@pytest.mark.parametrize(
    ("output_type", "message"),
    [
        (Annotated[int, pydantic.Field(ge="x")], "'ge' must be coercible to an integer"),
        (Annotated[str, pydantic.Field(pattern="[")], "unclosed character class"),
    ],
    ids=["ge-not-a-number", "broken-pattern"],
)
def test_a_broken_annotated_constraint_is_refused_before_sending(
    make_model: MakeModel, emulator: LMStudioEmulator, output_type: Any, message: str
) -> None:
    with pytest.raises(UnsupportedOutputTypeError, match=message) as info:
        make_model(TEXT_MODEL)("q", output_type)
    assert "Annotated metadata" in str(info.value)
    # Found by a probe: pydantic-core's "Error building ... validator: ValueError:" and the
    # reprs of Pydantic's FieldInfo.
    assert "with its Annotated constraints: " in str(info.value)
    assert "FieldInfo" not in str(info.value)
    assert "validator:" not in str(info.value)
    assert emulator.predictions == []


class Cat(pydantic.BaseModel):
    kind: Literal["cat"] = "cat"
    lives: int


class Dog(pydantic.BaseModel):
    kind: Literal["dog"] = "dog"
    name: str


Pet = Annotated[Union[Cat, Dog], pydantic.Field(discriminator="kind")]


class Owner(pydantic.BaseModel):
    pets: list[Pet]


def test_a_tag_with_a_default_is_required_in_a_discriminated_union(
    make_model: MakeModel,
) -> None:
    # Pydantic's schema leaves a tag with a default out of `required`, but its validator
    # needs the tag: the engine wrote `{"lives": 3}` and parse raised "Unable to extract tag".
    model = make_model(TEXT_MODEL)
    for i in range(10):
        assert isinstance(model.parse(f"A pet ({i})", Pet), Cat | Dog)
        assert "kind" in json.loads(model(f"Pet ({i})", Pet))
        assert isinstance(model.parse(f"An owner ({i})", Owner), Owner)


Level3 = Literal["low", "mid", "high"]


@pytest.mark.parametrize("seed_prompt", ["first", "second", "third"])
def test_a_dict_keyed_by_a_literal_of_strings(
    make_model: MakeModel, emulator: LMStudioEmulator, seed_prompt: str
) -> None:
    """It was refused as "only str keys are supported"; keyed by a model, sent loose."""
    model = make_model(TEXT_MODEL)
    text = model(f"Scores ({seed_prompt})", dict[Level3, int])
    assert re.fullmatch(to_regex(python_types_to_terms(dict[Level3, int])), text)
    structured = emulator.predictions[-1].structured
    assert structured is not None
    assert structured["jsonSchema"] == {
        "type": "object",
        "properties": {
            "low": {"type": "integer"},
            "mid": {"type": "integer"},
            "high": {"type": "integer"},
        },
        "additionalProperties": False,
    }
    assert set(model.parse(f"Scores ({seed_prompt})", dict[Level3, int])) <= {"low", "mid", "high"}
    by_colour = model.parse(f"Pets ({seed_prompt})", dict[Colour, Cat])
    assert all(isinstance(k, Colour) and isinstance(v, Cat) for k, v in by_colour.items())


@pytest.mark.parametrize(
    "output_type", [Union[datetime.date, str], Union[datetime.datetime, str], datetime.time | str]
)
def test_a_string_beside_a_date_in_a_union_keeps_its_quotes(
    make_model: MakeModel, emulator: LMStudioEmulator, output_type: Any
) -> None:
    """Any string was taken for the date: ``hello`` came back bare, which no regex reads."""
    model = make_model(TEXT_MODEL)
    outlines_regex = to_regex(python_types_to_terms(output_type))
    emulator.script(TEXT_MODEL, ['"hello"', '"hello"'])
    assert model("q", output_type) == '"hello"'
    assert "".join(model.stream("q", output_type)) == '"hello"'
    for reply in ['"2024-01-31"', '"2024-01-31 13:45:00"', '"13:45:00"']:
        emulator.script(TEXT_MODEL, [reply])
        text = model("q", output_type)
        assert re.fullmatch(outlines_regex, text), (reply, text)


def test_the_order_of_a_union_is_kept_from_one_call_to_the_next(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """``Union[date, str] == Union[str, date]``: the second was served the first's plan."""
    model = make_model(TEXT_MODEL)
    emulator.script(TEXT_MODEL, ['"2024-01-31"'] * 4)
    assert model.parse("q", Union[datetime.date, str]) == datetime.date(2024, 1, 31)
    assert model.parse("q", Union[str, datetime.date]) == "2024-01-31"
    assert model("q", Union[datetime.date, str]) == "2024-01-31"
    assert model("q", Union[str, datetime.date]) == '"2024-01-31"'


class Contact(pydantic.BaseModel):
    email: outlines.types.email  # type: ignore[valid-type]
    code: Annotated[str, outlines.types.Regex(r"[a-c]{2}|z")]


@pytest.mark.parametrize("output_type", [Contact, Annotated[str, outlines.types.Regex("[a-c]{2}")]])
def test_an_outlines_term_in_a_pydantic_type_is_matched_whole(
    make_model: MakeModel, emulator: LMStudioEmulator, output_type: Any
) -> None:
    """A term validates with a full match, but its schema pattern is a search: anchor it.

    The engine wrote strings holding a match (``"river a@b.co x"``), which the type refused.
    """
    model = make_model(TEXT_MODEL)
    adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(output_type)
    for i in range(6):
        adapter.validate_json(model(f"Contact ({i})", output_type))
    model.parse("Contact", output_type)


T = TypeVar("T")
IntList = TypeAliasType("IntList", list[int])  # Python 3.12: type IntList = list[int]
Pair = TypeAliasType("Pair", tuple[T, T], type_params=(T,))


def test_a_type_alias_is_the_type_it_stands_for(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """A TypeAliasType at the top level was refused ("not supported"); as a field it worked."""
    model = make_model(TEXT_MODEL)
    emulator.script(TEXT_MODEL, ["[1,2]", "[1,2]", "[1,2]", "[3, 4]"])
    assert model("q", IntList) == "[1, 2]"  # rendered as list[int] is
    assert model.parse("q", IntList) == [1, 2]
    assert list(model.parse_stream("q", IntList))[-1] == [1, 2]
    assert model.parse("q", Pair[int]) == (3, 4)
    sent = emulator.predictions[-1].structured
    assert sent is not None
    assert sent["jsonSchema"]["prefixItems"] == [
        {"type": "integer"},
        {"type": "integer"},
    ]


UserId = NewType("UserId", int)


@pytest.mark.parametrize(
    ("output_type", "reply", "written_as"),
    [
        (tuple[UserId, str], '[5, "a"]', tuple[int, str]),
        (tuple[IntList, ...], "[[1], [2]]", tuple[list[int], ...]),
        (Optional[UserId], "null", Optional[int]),
        (UserId | None, "7", int | None),
        (list[UserId], "[3]", list[int]),
        (dict[str, UserId], '{"a": 1}', dict[str, int]),
        (Annotated[list[UserId], "doc"], "[4]", list[int]),
    ],
)
def test_an_alias_inside_a_type_is_the_type_it_stands_for(
    make_model: MakeModel,
    emulator: LMStudioEmulator,
    output_type: Any,
    reply: str,
    written_as: Any,
) -> None:
    """Found by a probe: inside a container a NewType or TypeAliasType made the reply a JSON
    document ('[5, "a"]', 'null') and dropped list[int]'s minItems, where docs/output-types.md
    reads an alias as the type it stands for."""
    model = make_model(TEXT_MODEL)
    emulator.script(TEXT_MODEL, [reply, reply])
    assert model("q", output_type) == model("q", written_as)
    sent = [p.structured for p in emulator.predictions[-2:]]
    assert sent[0] == sent[1]
    text = model("q", output_type)  # unscripted: what the engine writes
    assert re.fullmatch(to_regex(python_types_to_terms(written_as)), text), text


def test_outlines_generator_takes_a_type_alias(client: lms.Client) -> None:
    text = outlines.Generator(from_lmstudio(client, TEXT_MODEL), IntList)("Numbers")
    assert isinstance(text, str)
    assert re.fullmatch(to_regex(python_types_to_terms(list[int])), text), text


@pytest.mark.asyncio
async def test_async_outlines_generator_takes_a_type_alias(
    async_client: lms.AsyncClient,
) -> None:
    text = await outlines.Generator(from_lmstudio(async_client, TEXT_MODEL), IntList)("Numbers")
    assert re.fullmatch(to_regex(python_types_to_terms(list[int])), text), text


class Meeting(pydantic.BaseModel):
    starts: pydantic.NaiveDatetime
    ends: pydantic.AwareDatetime


@pytest.mark.parametrize("seed_prompt", ["first", "second", "third"])
def test_naive_and_aware_datetimes_read_back(make_model: MakeModel, seed_prompt: str) -> None:
    """NaiveDatetime was sent as format: date-time, whose offset it refuses: no reply parsed."""
    model = make_model(TEXT_MODEL)
    # Re-asks only for a day the month lacks (February 30th), which the date pattern allows.
    meeting = model.parse(f"When ({seed_prompt})", Meeting, retries=3)
    assert meeting.starts.tzinfo is None
    assert meeting.ends.tzinfo is not None
    assert model.parse(f"When ({seed_prompt})", pydantic.NaiveDatetime, retries=3).tzinfo is None
    stamps = model.parse(f"When ({seed_prompt})", list[pydantic.NaiveDatetime], retries=3)
    assert all(d.tzinfo is None for d in stamps)
