"""Every supported output type, end to end: the text matches what Outlines' local models return."""

import datetime
import enum
import json
import re
from typing import Any, Literal, Optional, Union

import lmstudio as lms
import outlines
import pytest
from outlines.types import Choice
from outlines.types.dsl import python_types_to_terms, to_regex

from outlines_lmstudio import from_lmstudio
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
