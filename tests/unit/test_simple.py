import datetime
import enum
import re
from typing import Annotated, Any, Literal, Optional, Union, cast

import pydantic
import pytest
from outlines.types import Choice
from outlines.types.dsl import python_types_to_terms, to_regex

from outlines_lmstudio._output import plan_output
from outlines_lmstudio._simple import is_simple_type, render_simple, simple_schema


class Colour(enum.Enum):
    RED = "red"
    TWO = 2


@pytest.mark.parametrize(
    ("output_type", "reply", "expected"),
    [
        (Literal["pos", "neg"], '"pos"', "pos"),
        (Literal["pos", 1, True], "1", "1"),
        (Literal["pos", 1, True], "true", "True"),
        (Colour, '"red"', "red"),
        (Colour, "2", "2"),
        (Choice(["x", "y"]), '"y"', "y"),
        (int, "-7", "-7"),
        (float, "1e999", "1e999"),
        (float, "2.50", "2.50"),
        (bool, "false", "False"),
        (str, '"a \\"q\\""', '"a \\"q\\""'),
        (Optional[int], "null", "None"),
        (Union[int, str], '"5"', '"5"'),
        (Union[int, str], "5", "5"),
        (Optional[Literal["a"]], '"a"', "a"),
        (list[int], "[1,2]", "[1, 2]"),
        (list[Literal["a", "b"]], '["a"]', '["a"]'),
        (tuple[int, str], '[1, "x"]', '(1, "x")'),
        (tuple[bool, ...], "[true, false]", "(True, False)"),
        (tuple[()], "[ ]", "()"),  # was sent as a JSON array and returned as "[ ]" (a probe)
        (dict[str, list[int]], '{"k": [1]}', '{"k":[1]}'),
        (datetime.date, '"2024-01-31"', "2024-01-31"),
        (list[datetime.date], '["2024-01-31"]', '["2024-01-31"]'),
    ],
    ids=repr,
)
def test_rendering(output_type: Any, reply: str, expected: str) -> None:
    assert render_simple(reply, output_type) == expected
    assert plan_output(output_type).render(reply) == expected


def test_a_key_written_twice_is_rendered_as_written() -> None:
    """A dict kept the last value only, and the text dropped the first without a word (a
    probe); `parse` refuses the reply (``test_typed``), the text shows what was written."""
    assert render_simple('{"a": 1, "a": 2}', dict[str, int]) == '{"a":1, "a":2}'
    assert render_simple('[{"a": 1, "a": 2}]', list[dict[str, int]]) == '[{"a":1, "a":2}]'
    assert render_simple('{"a": 1, "a": "x"}', dict[str, int | str]) == '{"a":1, "a":"x"}'


def test_rendered_text_matches_outlines_regexes() -> None:
    for output_type, reply in [
        (list[int], "[3,4]"),
        (dict[str, int], '{"a":1,"b":2}'),
        (tuple[int, str], '[1,"x"]'),
        (tuple[()], "[]"),
        (Optional[Literal["a", "b"]], "null"),
        (datetime.datetime, '"2024-01-31 10:00:00"'),
    ]:
        assert re.fullmatch(
            to_regex(python_types_to_terms(output_type)), render_simple(reply, output_type)
        )


def literal(*values: object) -> Any:
    """``Literal[values]`` built at run time (mypy takes no float in ``Literal[...]``)."""
    return cast(Any, Literal)[values]


class Ratio(enum.Enum):
    HALF = 0.5
    BIG = 1e20


@pytest.mark.parametrize(
    ("output_type", "reply"),
    [
        (literal(1e20), "1e20"),  # serde_json's form (outlines-core, LM Studio's MLX engine)
        (literal(1e20), "100000000000000000000.0"),
        (literal(1.0), "1"),
        (literal(0.5, "x"), "5e-1"),
        (Ratio, "1E+20"),
        (Choice([2.5]), "2.50"),
        (list[literal(1e20)], "[1e20]"),  # type: ignore[misc]
        (Literal[2**62], "4.611686018427388e18"),
    ],
    ids=repr,
)
def test_a_listed_number_is_rendered_as_outlines_writes_it(output_type: Any, reply: str) -> None:
    # The engine's JSON form of a Literal/Enum number was kept: '1e20' for Literal[1e20],
    # where Outlines writes (and its regex takes) '1e+20'.
    text = render_simple(reply, output_type)
    assert re.fullmatch(to_regex(python_types_to_terms(output_type)), text), text


def test_where_the_text_differs_from_outlines_regexes() -> None:
    """The exceptions docs/output-types.md lists: JSON quotes and escapes are kept."""
    for output_type, reply in [
        (str, '"say \\"hi\\""'),
        (list[Literal['q"', "r"]], '["q\\""]'),
        (list[datetime.date], '["2024-01-31"]'),
        (dict[str, datetime.time], '{"a": "10:00:00"}'),
        (tuple[datetime.datetime, int], '["2024-01-31 10:00:00", 1]'),
    ]:
        text = render_simple(reply, output_type)
        assert not re.fullmatch(to_regex(python_types_to_terms(output_type)), text), text
        assert '"' in text


def test_truncated_json_is_returned_as_is() -> None:
    assert render_simple('"po', Literal["pos"]) == '"po'


def test_schemas_follow_outlines_constraints() -> None:
    assert simple_schema(datetime.time)["pattern"].startswith("^([0-1][0-9]|2[0-3])")
    assert simple_schema(list[int])["minItems"] == 1
    assert simple_schema(Choice(["a", "b"]))["enum"] == ["a", "b"]
    assert plan_output(Literal["a"]).kind == "simple"


@pytest.mark.parametrize(
    ("output_type", "bounds"),
    [
        (Annotated[list[int], pydantic.Field(min_length=0)], {"minItems": 0}),
        (Annotated[list[int], pydantic.Field(max_length=0)], {"maxItems": 0}),
        (Annotated[list[int], pydantic.Field(min_length=3)], {"minItems": 3}),
        (Annotated[list[int], pydantic.Field(max_length=2)], {"minItems": 1, "maxItems": 2}),
    ],
    ids=repr,
)
def test_a_list_keeps_the_bounds_its_user_gave(output_type: Any, bounds: dict[str, int]) -> None:
    """Found by a probe: an explicit ``Field(min_length=0)`` was raised to Outlines'
    ``minItems: 1`` (``parse`` accepts ``[]``), and ``max_length=0`` was refused for the
    clash with the ``minItems`` the library itself had added."""
    schema = plan_output(output_type).schema
    assert schema is not None
    assert {k: v for k, v in schema.items() if k in ("minItems", "maxItems")} == bounds


@pytest.mark.parametrize(
    "output_type", [dict[int, str], list, Literal[b"x"], type(Ellipsis), Choice([])]
)
def test_not_simple(output_type: Any) -> None:
    assert not is_simple_type(output_type)


@pytest.mark.parametrize("output_type", [list[int], dict[str, int], tuple[int, int]])
def test_a_reply_nested_deeper_than_python_reads_is_returned_as_written(output_type: Any) -> None:
    """Found by a probe: a raw RecursionError came out of the call, the stream and batch."""
    for reply in ("[" * 10_000 + "]" * 10_000, "[" * 10_000):
        assert render_simple(reply, output_type) == reply


class _Small(enum.IntEnum):
    ONE = 1
    TWO = 2


@pytest.mark.parametrize(
    "output_type",
    [
        _Small,
        Literal[1, 2],
        Literal["a", 1],
        list[_Small],
        dict[str, Literal[1, 2]],
        tuple[_Small, int],
    ],
)
def test_a_number_longer_than_python_reads_is_no_member(output_type: Any) -> None:
    """Found by a probe: a reply of 5,000 digits raised Python's bare ValueError (its limit of
    4,300 digits for int()) from the call, the stream and the batch; no member is such a
    number, so it is rendered as a reply that is not a member is: its digits as written."""
    big = "9" * 5000
    for reply in (big, f"-{big}", f"[{big}]", f'{{"k": {big}}}', f"[{big}, 1]"):
        assert big in render_simple(reply, output_type)


@pytest.mark.parametrize(
    ("output_type", "reply"),
    [(str, '"a\\ud800b"'), (dict[str, int], '{"\\ud800": 1}'), (list[str], '["\\udc00"]')],
)
def test_a_lone_surrogate_escape_is_returned_as_written(output_type: Any, reply: str) -> None:
    """Found by a probe: decoded, it became a character no UTF-8 text holds (print failed)."""
    rendered = render_simple(reply, output_type)
    assert rendered == reply
    rendered.encode("utf-8")
