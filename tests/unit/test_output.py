import collections.abc
import dataclasses
import datetime
import decimal
import enum
import json
import re
import typing
import uuid
import warnings
from collections.abc import Callable
from typing import Annotated, Any, Literal, Optional, TypedDict

import jsonschema
import lmstudio as lms
import pydantic
import pytest
import typing_extensions
from genson import SchemaBuilder
from hypothesis import given
from hypothesis import strategies as st
from outlines.types import CFG, Choice, JsonSchema, Regex, either, integer
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, SkipJsonSchema

from outlines_lmstudio import LMStudioTypeAdapter
from outlines_lmstudio._output import plan_output
from outlines_lmstudio._schema_checks import check_json_schema
from outlines_lmstudio._simple import FullMatchTerms
from outlines_lmstudio.errors import (
    InvalidSchemaError,
    OutlinesLMStudioError,
    UnsupportedOutputTypeError,
)


class Person(pydantic.BaseModel):
    name: str
    age: int


class Pet(pydantic.BaseModel):
    species: str


class Movie(TypedDict):
    title: str
    year: int


class Catalogue(TypedDict, total=False):
    movies: list[Movie]


@dataclasses.dataclass
class Point:
    x: float
    y: float


def sent(output_type: object) -> dict[str, Any]:
    response_format = LMStudioTypeAdapter().format_output_type(output_type)
    assert response_format is not None
    assert response_format["type"] == "json"  # always the explicit form
    schema: dict[str, Any] = response_format["jsonSchema"]
    return schema


def test_none_is_plain_text() -> None:
    assert LMStudioTypeAdapter().format_output_type(None) is None
    assert plan_output(None).kind == "text"


def test_pydantic_model() -> None:
    assert sent(Person) == Person.model_json_schema()


def test_typeddict_dataclass_genson_jsonschema() -> None:
    assert set(sent(Movie)["properties"]) == {"title", "year"}
    assert sent(Movie)["required"] == ["title", "year"]
    catalogue = sent(Catalogue)  # a typing.TypedDict nested in another: Outlines fails here
    assert "required" not in catalogue
    assert catalogue["$defs"]["Movie"]["required"] == ["title", "year"]
    assert set(sent(Point)["properties"]) == {"x", "y"}
    builder = SchemaBuilder()
    builder.add_object({"a": 1})
    assert sent(builder)["properties"]["a"]["type"] == "integer"
    assert sent(JsonSchema({"type": "object", "properties": {"b": {"type": "string"}}}))[
        "properties"
    ]["b"] == {"type": "string"}


class Review(typing_extensions.TypedDict):
    stars: int
    text: typing_extensions.NotRequired[str]


def test_typing_extensions_typeddict_is_a_json_type() -> None:
    # The TypedDict Pydantic asks for before Python 3.12; typing.is_typeddict misses it there.
    assert sent(Review) == {
        "properties": {
            "stars": {"title": "Stars", "type": "integer"},
            "text": {"title": "Text", "type": "string"},
        },
        "required": ["stars"],
        "title": "Review",
        "type": "object",
    }
    assert sent(list[Review])["items"] == {"$ref": "#/$defs/Review"}


def test_dict_and_str_schemas() -> None:
    schema = {"type": "array", "items": {"type": "integer"}}
    assert sent(schema) == schema
    assert sent(json.dumps(schema)) == schema


@pytest.mark.parametrize("wrap", [str, JsonSchema])
@pytest.mark.parametrize(
    ("text", "key", "where"),
    [
        (
            '{"type": "object", "properties": {"name": {"type": "string"}}, '
            '"required": ["name"], "properties": {"age": {"type": "integer"}}}',
            "properties",
            "/",
        ),
        (
            '{"properties": {"a.b": {"type": "string", "type": "integer"}}}',
            "type",
            "/properties/a.b",
        ),
        # escaped as JSON pointers escape them (found by mutation testing: not held)
        (
            '{"properties": {"a/b~c": {"type": "string", "type": "integer"}}}',
            "type",
            "/properties/a~1b~0c",
        ),
    ],
)
def test_a_schema_text_with_a_key_written_twice_is_refused(
    wrap: Callable[[str], Any], text: str, key: str, where: str
) -> None:
    """Found by a probe: ``json.loads`` kept the last value, so the first `properties`
    (with the required name) was never asked for; the CLI's ``--schema`` refused it."""
    with pytest.raises(InvalidSchemaError) as info:
        plan_output(wrap(text))
    assert str(info.value).startswith(
        f"The JSON schema text has the key {key!r} twice in one object (the object at {where})"
    )


def test_union_and_ref_rooted_schemas_keep_explicit_form() -> None:
    union = sent(Person | Pet)
    assert "anyOf" in union
    assert "type" not in union  # the SDK would reject this bare
    ref_root = {"$ref": "#/$defs/P", "$defs": {"P": {"type": "object"}}}
    # A root reference is sent as its target: llama.cpp's Python converter fails otherwise.
    assert sent(ref_root) == {"type": "object", "$defs": {"P": {"type": "object"}}}
    assert plan_output(ref_root).full_schema == ref_root  # parse validates the original
    assert sent(list[Person])["type"] == "array"


def test_plans_are_cached_per_type() -> None:
    assert plan_output(Person) is plan_output(Person)
    first = plan_output({"type": "integer"})
    again = plan_output({"type": "integer"})
    assert first.response_format is again.response_format


@pytest.mark.parametrize(
    ("schema", "match"),
    [
        ({"type": "objekt"}, "type"),
        ({"type": "object", "properties": {"a": {"minimum": "zero"}}}, "minimum"),
        ({"type": "object", "required": "name"}, "required"),
        ({"$ref": "https://example.com/person.json"}, r"not a .#\.\.\.. reference"),
        ({"properties": {"a": {"$ref": "http://x/y#/z"}}}, "never fetched or read from files"),
        ({"properties": {"a": {"$ref": "#/$defs/Missing"}}}, "Missing' at /properties/a"),
        ({"$defs": {"A": {}}, "items": {"$ref": "#/$defs/A/items"}}, "points to nothing"),
        ({"$schema": 5, "type": "object"}, "/\\$schema: it must be a string"),
        ({"$schema": [], "type": "object"}, "/\\$schema: it must be a string"),
        ("not json", "not a JSON schema"),
        ("[1]", "JSON object"),
    ],
)
def test_malformed_or_unsafe_schemas_are_refused(schema: object, match: str) -> None:
    with pytest.raises(InvalidSchemaError, match=match):
        plan_output(schema)


@pytest.mark.parametrize(
    "schema",
    [
        {"$defs": {"a b": {"type": "string"}}, "$ref": "#/$defs/a%20b"},
        {"$defs": {"a/b": {"type": "string"}}, "$ref": "#/$defs/a~1b"},
        {"type": "object", "properties": {"next": {"$ref": "#"}}},
        {  # an embedded resource resolves its own references: left to jsonschema
            "$defs": {"B": {"$id": "urn:b", "$defs": {"C": {}}, "$ref": "#/$defs/C"}},
            "$ref": "#/$defs/B",
        },
    ],
)
def test_references_that_resolve_are_kept(schema: dict[str, Any]) -> None:
    # Valid, and validated as written; the engines cannot follow the first three
    # (tests/unit/test_dialects.py), so plan_output refuses those before sending.
    assert check_json_schema(schema) == schema


@pytest.mark.parametrize(
    ("schema", "why"),
    [
        ({"type": "string", "minLength": 5, "maxLength": 2}, "minLength 5 is greater"),
        ({"type": "array", "minItems": 3, "maxItems": 1}, "minItems 3 is greater"),
        ({"type": "object", "minProperties": 2, "maxProperties": 1}, "minProperties 2"),
        ({"type": "integer", "minimum": 10, "maximum": 5}, "no number is both minimum 10"),
        ({"type": "number", "exclusiveMinimum": 1, "maximum": 1}, "no number is both exclusiveM"),
        (
            {"type": "integer", "exclusiveMinimum": 3, "exclusiveMaximum": 4},
            "no integer is both exclusiveMinimum 3 and exclusiveMaximum 4",
        ),
        ({"type": "integer", "minimum": 3.5, "maximum": 3.9}, "no integer is both minimum 3.5"),
        ({"enum": []}, "'enum' is empty"),
        (
            {"type": "array", "prefixItems": [{}], "items": False, "minItems": 2},
            "minItems 2 is more than the 1 items",
        ),
        ({"type": "string", "const": 5}, "'const' 5 is not of type string"),
        ({"type": "string", "enum": [1, 2]}, "no 'enum' value is of type string"),
        (  # Pydantic's gt=5, le=8, multiple_of=5: sent, and 0 came back (found by a probe)
            {"type": "integer", "exclusiveMinimum": 5, "maximum": 8, "multipleOf": 5},
            "no integer that is a multipleOf 5 is both exclusiveMinimum 5 and maximum 8",
        ),
        (  # an integer's multiples of 2.5 are the multiples of 5
            {"type": "integer", "minimum": 1, "maximum": 4, "multipleOf": 2.5},
            "no integer that is a multipleOf 2.5 is both minimum 1 and maximum 4",
        ),
        (
            {"type": "number", "exclusiveMinimum": 0.1, "exclusiveMaximum": 0.2, "multipleOf": 0.1},
            "no number that is a multipleOf 0.1 is both exclusiveMinimum 0.1 and exclusiveMax",
        ),
        # sent, and every reply broke them (found by a probe)
        (
            {"type": "object", "properties": {"x": {}}, "required": ["x", "y"], "maxProperties": 1},
            "'required' names 2 properties, more than maxProperties 1",
        ),
        (
            {"type": "object", "required": ["x"], "maxProperties": 0},
            "'required' names 1 property, more than maxProperties 0",
        ),
        (  # no type: the engines write an object for properties (a review)
            {"properties": {"a": {}, "b": {}}, "required": ["a", "b"], "maxProperties": 1},
            "'required' names 2 properties, more than maxProperties 1",
        ),
        (
            {
                "type": "object",
                "properties": {"x": {}},
                "required": ["x", "y", "z"],
                "additionalProperties": False,
            },
            r"'required' names \['y', 'z'\], which additionalProperties: false forbids",
        ),
    ],
)
def test_contradictory_keywords_are_refused(schema: dict[str, Any], why: str) -> None:
    nested = {"type": "object", "properties": {"a": schema}}
    with pytest.raises(InvalidSchemaError, match=f"/properties/a can never be satisfied: {why}"):
        plan_output(nested)


_DRAFT_4 = "http://json-schema.org/draft-04/schema#"


@pytest.mark.parametrize(
    ("schema", "why"),
    [
        (
            {"minimum": 5, "exclusiveMinimum": True, "maximum": 5},
            "no number is both minimum 5 with exclusiveMinimum true and maximum 5",
        ),
        (
            {
                "type": "number",
                "minimum": 5,
                "exclusiveMinimum": True,
                "maximum": 5.5,
                "multipleOf": 5,
            },
            "no number that is a multipleOf 5 is both minimum 5 with exclusiveMinimum true "
            "and maximum 5.5",
        ),
        (
            {"type": "integer", "minimum": 3, "exclusiveMinimum": True, "maximum": 3.5},
            "no integer is both minimum 3 with exclusiveMinimum true and maximum 3.5",
        ),
        (
            {"maximum": 2, "exclusiveMaximum": True, "minimum": 2},
            "no number is both minimum 2 and maximum 2 with exclusiveMaximum true",
        ),
    ],
)
def test_a_draft_4_exclusive_bound_is_read_as_draft_4_writes_it(
    schema: dict[str, Any], why: str
) -> None:
    """Found by a review: draft 4's boolean ``exclusiveMinimum`` hid a contradiction from
    the check (the schema is checked before it is translated), and it was sent."""
    with pytest.raises(InvalidSchemaError, match=f"can never be satisfied: {why}"):
        plan_output({"$schema": _DRAFT_4, **schema})
    inclusive: dict[str, bool] = {
        key: False for key in ("exclusiveMinimum", "exclusiveMaximum") if key in schema
    }
    plan_output({"$schema": _DRAFT_4, **schema, **inclusive})  # inclusive bounds: satisfiable


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "number", "minimum": 1, "maximum": 1},
        {"type": "integer", "minimum": 5, "maximum": 5},  # 5 (found by mutation testing)
        {"type": ["string", "null"], "const": None},
        {"type": "integer", "const": 1.0},  # 1.0 is an integer in JSON Schema
        {"type": "string", "enum": [1, "a"]},
        {"type": "integer", "minimum": 1, "exclusiveMaximum": 2},
        {"type": "integer", "exclusiveMinimum": 2.5, "exclusiveMaximum": 3.5},  # 3
        {"type": "number", "exclusiveMinimum": 3, "exclusiveMaximum": 4},  # 3.5
        {"type": "integer", "minimum": 5, "maximum": 8, "multipleOf": 5},  # 5
        {"type": "integer", "minimum": 1, "maximum": 5, "multipleOf": 2.5},  # 5
        {"type": "number", "minimum": 0.11, "maximum": 0.3, "multipleOf": 0.1},  # 0.2 (exact)
        {"type": "number", "minimum": 0, "maximum": 0.5, "multipleOf": 2},  # 0
        {"type": "string", "minimum": 3, "maximum": 1},  # bounds bind numbers only
        {"type": "number", "minLength": 5, "maxLength": 3},  # ... and lengths strings only
        {"type": "integer", "minItems": 5, "maxItems": 3},
        {"type": "string", "minProperties": 2, "maxProperties": 1},
        # required binds objects only; a pattern may allow what properties do not list
        {"type": ["object", "string"], "required": ["x"], "maxProperties": 0},
        {"required": ["x"], "additionalProperties": False},
        {
            "type": "object",
            "patternProperties": {"^x$": {}},
            "required": ["x"],
            "additionalProperties": False,
        },
        {"type": "object", "properties": {"x": {}}, "required": ["x"], "maxProperties": 1},
        # Found by a review: satisfiable, and refused by the first version of the check:
        # a node whose kind anyOf gives ("hi" is valid), draft 7's $ref with keywords
        # beside it (they are ignored); and a part under "not" (below)
        {
            "anyOf": [{"type": "string"}, {"type": "object"}],
            "properties": {"x": {}},
            "required": ["y"],
            "additionalProperties": False,
        },
        {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "definitions": {"A": {"type": "object", "properties": {"a": {}}}},
            "$ref": "#/definitions/A",
            "type": "object",
            "required": ["b"],
            "additionalProperties": False,
        },
    ],
)
def test_bounds_that_meet_are_kept(schema: dict[str, Any]) -> None:
    assert plan_output(schema).full_schema == schema


def test_required_names_under_not_or_if_are_not_checked_against_the_rest() -> None:
    """Under ``not`` a part no value satisfies means something ("not an object with a"):
    the first version of the check refused it (found by a review). The engines refuse
    ``not`` anyway; ``parse`` checks it."""
    part = {"type": "object", "required": ["a"], "maxProperties": 0}
    for schema in ({"not": part}, {"if": part, "then": {}}):
        assert check_json_schema(schema) == schema
    named = {"type": "object", "properties": {"not": part}}  # a property named "not"
    with pytest.raises(InvalidSchemaError, match="/properties/not can never be satisfied"):
        check_json_schema(named)


def test_an_unknown_type_is_left_to_the_meta_schema_check() -> None:
    assert check_json_schema({"type": "foo", "const": 1}, meta=False)
    with pytest.raises(InvalidSchemaError, match="meta-schema"):
        plan_output({"type": "foo", "const": 1})


def test_a_meta_schema_error_names_its_json_pointer() -> None:
    with pytest.raises(InvalidSchemaError, match=r"at /properties/a/type: 'strng'"):
        plan_output({"type": "object", "properties": {"a": {"type": "strng"}}})


@pytest.mark.parametrize(
    ("pattern", "instead"),
    [
        ("[^]", r"[\s\S] instead of [^]"),
        (r"a\cJ", r"\x0a instead of \cJ"),
        ("(?<year>[0-9]{4})", "(?:...) instead of (?<name>...)"),
        (r"\p{L}+", r"a character class instead of \p{...}"),
        (r"\u{1F600}", r"\uXXXX or the character itself instead of \u{...}"),
    ],
)
def test_a_javascript_only_pattern_is_refused_with_its_portable_spelling(
    pattern: str, instead: str
) -> None:
    schema = {"type": "object", "properties": {"d": {"type": "string", "pattern": pattern}}}
    with pytest.raises(InvalidSchemaError) as info:
        plan_output(schema)
    message = str(info.value)
    assert "at /properties/d/pattern" in message
    assert "not a regex Python can read" in message
    assert instead in message


def test_a_pydantic_pattern_with_a_javascript_only_class_says_what_to_write() -> None:
    """Pydantic's Rust regex reads ``\\p{L}``; the engines' subset does not. The error said
    only "bad escape \\p" (found by a probe)."""

    class Name(pydantic.BaseModel):
        name: str = pydantic.Field(pattern=r"^\p{L}+$")

    with pytest.raises(InvalidSchemaError) as info:
        plan_output(Name)
    assert "at /properties/name/pattern" in str(info.value)
    assert r"a character class instead of \p{...}" in str(info.value)


# (pattern, a text ECMA-262 and Python's re find it in, the syntax named)
_RUST_READS_OTHERWISE = [
    (r"^[[:alpha:]]+$", "a]", r"a POSIX class \(\[:alpha:\]\) at position 2"),
    (r"^[a-z&&[^b]]$", "a]", r"a class intersection \(&&\) at position 5"),
    (r"^\<ok$", "<ok", r"the start of a word \(\\<\) at position 1"),
    (r"^[a[bc]]$", "a]", r"a nested class \(\[bc\]\) at position 3"),
    (r"^[a-c--b]$", "-", r"a class difference \(--\) at position 5"),
]


@pytest.mark.parametrize(("pattern", "text", "named"), _RUST_READS_OTHERWISE)
def test_a_pydantic_pattern_rust_reads_otherwise_is_refused_before_sending(
    pattern: str, text: str, named: str
) -> None:
    """Pydantic validates with Rust's regex, the engines write what ECMA-262 reads: every
    constrained reply failed the type, 3 of 3 on the real engine (found by a probe)."""

    class Field(pydantic.BaseModel):
        s: str = pydantic.Field(pattern=pattern)

    with warnings.catch_warnings():  # Python's re warns of these very constructs
        warnings.simplefilter("ignore", FutureWarning)
        assert re.search(pattern, text)  # what the engine would be held to
    with pytest.raises(pydantic.ValidationError):  # what the type then says of it
        Field(s=text)
    for output_type in (Field, list[Annotated[str, pydantic.Field(pattern=pattern)]]):
        with pytest.raises(UnsupportedOutputTypeError, match=named) as info:
            plan_output(output_type)
        way = "Write < or > for the character" if "word" in named else "Spell the class out"
        assert way in str(info.value)


def test_a_pattern_pydantic_reads_with_python_re_is_sent() -> None:
    """With ``regex_engine="python-re"`` (or a compiled pattern) Pydantic reads it as the
    engines do: nothing is refused, and the engines are asked for what the type takes."""

    class ByConfig(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(regex_engine="python-re")
        s: str = pydantic.Field(pattern=r"^\<ok$")

    class Compiled(pydantic.BaseModel):
        s: str = pydantic.Field(pattern=re.compile(r"^\<ok$"))

    for output_type in (ByConfig, Compiled):
        assert output_type(s="<ok").s == "<ok"
        sent = plan_output(output_type).response_format["jsonSchema"]  # type: ignore[index]
        assert re.search(sent["properties"]["s"]["pattern"], "<ok")


def test_a_broken_pattern_says_what_python_found() -> None:
    with pytest.raises(InvalidSchemaError, match=r"missing \), unterminated subpattern"):
        plan_output({"type": "string", "pattern": "(a"})


class _Endless(pydantic.BaseModel):
    value: int
    child: "_Endless"


class _EndlessList(pydantic.BaseModel):
    kids: list["_EndlessList"] = pydantic.Field(min_length=1)


class _Ping(pydantic.BaseModel):
    pong: "_Pong"


class _Pong(pydantic.BaseModel):
    ping: _Ping


class _Tree(pydantic.BaseModel):
    left: "_Tree | None" = None
    kids: list["_Tree"] = []


class _Either(pydantic.BaseModel):
    next: "_Either | int"


class _EndlessDict(pydantic.BaseModel):
    kids: dict[str, "_EndlessDict"] = pydantic.Field(min_length=1)


@pytest.mark.parametrize(
    "output_type",
    [
        _Endless,
        _EndlessList,
        _Ping,
        {"type": "object", "properties": {"n": {"$ref": "#"}}, "required": ["n"]},
        {
            "$defs": {"L": {"type": "array", "items": {"$ref": "#/$defs/L"}, "minItems": 1}},
            "$ref": "#/$defs/L",
        },
        _EndlessDict,  # found by a probe: sent, and every reply failed parse
        {
            "type": "object",
            "properties": {"a": {"$ref": "#"}},
            "additionalProperties": {"$ref": "#"},
            "minProperties": 2,
        },
    ],
    ids=[
        "required child",
        "list of at least one",
        "mutual",
        "dict",
        "array through a def",
        "dict of at least one",
        "more keys than properties",
    ],
)
def test_a_recursion_with_no_way_to_end_is_refused(output_type: object) -> None:
    """No finite value exists: a model wrote until max_tokens and the call failed as cut off."""
    for model in (_Endless, _EndlessList, _Ping, _Pong, _Tree, _Either, _EndlessDict):
        model.model_rebuild()
    with pytest.raises(InvalidSchemaError, match=r"can never end.*Node \| None = None"):
        plan_output(output_type)


_ENDING_NODE = {
    "$defs": {
        "N": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "kid": {"$ref": "#/$defs/N"}},
            "minProperties": 1,
        }
    },
    "$ref": "#/$defs/N",
}


@pytest.mark.parametrize(
    ("output_type", "deep", "wrong_deep"),
    [
        (
            _Tree,
            {"left": {"left": None, "kids": [{}]}, "kids": []},
            {"left": {"kids": [{"left": 3}]}},
        ),
        (_Either, {"next": {"next": 1}}, {"next": {"next": "x"}}),
        (_ENDING_NODE, {"kid": {"kid": {"a": 1}}}, {"kid": {"kid": {"a": "x"}}}),
        (
            {"type": "object", "patternProperties": {"^x": {}}, "minProperties": 1},
            {"x1": {"y": [1]}},
            {},
        ),
    ],
    ids=["optional", "a scalar branch", "a key that ends", "pattern properties"],
)
def test_a_recursion_that_can_end_is_kept(output_type: Any, deep: Any, wrong_deep: Any) -> None:
    """The schema sent still recurses: a value two levels down is checked like the top."""
    if isinstance(output_type, type) and issubclass(output_type, pydantic.BaseModel):
        output_type.model_rebuild()
    schema = plan_output(output_type).schema
    assert schema is not None
    checker = jsonschema.Draft202012Validator(schema)
    assert checker.is_valid(deep)
    assert not checker.is_valid(wrong_deep)


_TRUE_LEAF_TREE = {
    "$defs": {
        "N": {
            "type": "object",
            "properties": {"data": True, "kids": {"type": "array", "items": {"$ref": "#/$defs/N"}}},
            "required": ["data"],
        }
    },
    "$ref": "#/$defs/N",
}


def _prefix_list(least: int) -> dict[str, Any]:
    """A list whose first item is an integer and whose further items are lists like it."""
    rule = {"type": "array", "prefixItems": [{"type": "integer"}], "minItems": least}
    rule["items"] = {"$ref": "#/$defs/L", "minItems": 1}
    return {"$defs": {"L": rule}, "$ref": "#/$defs/L"}


def test_a_required_true_property_or_the_prefix_items_alone_can_end() -> None:
    """``endless_ref``: a required property whose schema is ``true`` holds any value, and
    ``minItems`` met by the ``prefixItems`` alone needs no more of the recursion; one item
    more does (found by mutation testing). These schemas are refused for other reasons
    (a boolean schema, items beside prefixItems), so the check is asked directly."""
    from outlines_lmstudio._schema_walk import endless_ref

    assert endless_ref(_TRUE_LEAF_TREE) is None
    assert endless_ref(_prefix_list(1)) is None
    assert endless_ref(_prefix_list(2)) == "#/$defs/L"


def test_deep_schema_is_refused() -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(100):
        schema = {"type": "array", "items": schema}
    with pytest.raises(InvalidSchemaError, match="nested"):
        check_json_schema(schema)


@pytest.mark.parametrize("form", ["dict", "str"])
def test_a_schema_too_deep_for_python_json_is_refused_as_too_deep(form: str) -> None:
    """Deeper than Python's JSON encoder/decoder goes: our error, not a RecursionError."""
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(5000):
        schema = {"type": "object", "properties": {"a": schema}}
    given = schema if form == "dict" else '{"a":' * 5000 + "1" + "}" * 5000
    with pytest.raises(InvalidSchemaError, match="nested more than 64 levels"):
        plan_output(given)


def test_recursive_schema_is_fine() -> None:
    tree = {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
            }
        },
        "$ref": "#/$defs/node",
    }
    definitions: dict[str, Any] = tree["$defs"]  # type: ignore[assignment]
    assert sent(tree) == {**definitions["node"], "$defs": definitions}


@pytest.mark.parametrize("output_type", [Regex(r"\d+"), CFG("start: 'a'")])
def test_regex_and_cfg_raise_type_error(output_type: object) -> None:
    with pytest.raises(TypeError, match=r"grammar=True") as info:
        plan_output(output_type)
    assert isinstance(info.value, UnsupportedOutputTypeError)


@pytest.mark.parametrize("grammar", [False, True])
def test_an_empty_choice_is_refused_in_both_modes(grammar: bool) -> None:
    # In grammar mode its grammar would take only the empty string.
    with pytest.raises(UnsupportedOutputTypeError, match=r"Choice\(\[\]\) has no values"):
        plan_output(Choice([]), grammar=grammar)
    assert plan_output(Choice(["a"]), grammar=grammar).kind == ("grammar" if grammar else "simple")


def test_other_types_name_the_type() -> None:
    class Widget:
        pass

    with pytest.raises(UnsupportedOutputTypeError, match="Widget"):
        plan_output(Widget)
    with pytest.raises(UnsupportedOutputTypeError, match="list"):
        plan_output([1, 2])
    with pytest.raises(UnsupportedOutputTypeError, match="DSL term"):
        plan_output(either("a", integer))


@pytest.mark.parametrize(
    "output_type", [dict[int, str], list[dict[bool, int]], Optional[dict[float, str]]]
)
def test_a_dict_with_non_str_keys_says_why(output_type: Any) -> None:
    """The generic list ("dict of these", int among them) does not tell what is wrong."""
    with pytest.raises(UnsupportedOutputTypeError, match=r"only str keys.*dict\[str, \.\.\.\]"):
        plan_output(output_type)


@pytest.mark.parametrize(
    ("output_type", "instead"),
    [
        (set[int], "set(model.parse(prompt, list[int]))"),
        (frozenset[str], "frozenset(model.parse(prompt, list[str]))"),
        (set, "set(model.parse(prompt, list[int]))"),
    ],
    ids=["set[int]", "frozenset[str]", "bare set"],
)
def test_a_set_of_simple_values_says_what_to_ask_for_instead(
    output_type: Any, instead: str
) -> None:
    """Outlines has no set type either; the generic list ("list/tuple/dict...") named none.

    A set of simple values is refused before any request (a set of frozen models is a
    JSON-schema type, validated by pydantic), and the message says what to use.
    """
    with pytest.raises(UnsupportedOutputTypeError) as info:
        plan_output(output_type)
    message = str(info.value)
    assert "JSON has no set type" in message
    assert "uniqueItems" in message
    assert instead in message


@pytest.mark.parametrize(
    ("output_type", "example"),
    [(list, "list[int]"), (tuple, "tuple[int, ...]"), (dict, "dict[str, int]")],
)
def test_a_bare_container_says_to_give_its_item_types(output_type: Any, example: str) -> None:
    """The generic list names "list/tuple/dict ... of these", which a bare ``list`` seemed to be."""
    with pytest.raises(UnsupportedOutputTypeError) as info:
        plan_output(output_type)
    assert f"A bare {output_type.__name__} does not say what it holds" in str(info.value)
    assert example in str(info.value)


@pytest.mark.parametrize(
    ("output_type", "shown"),
    [
        (list[type], "list[type]"),  # no JSON schema: Pydantic refuses ``type``
        (Optional[type], "typing.Optional[type]"),
        (Annotated[type, "meta"], "typing.Annotated[type, 'meta']"),
    ],
)
def test_parameterised_types_are_named_in_full(output_type: object, shown: str) -> None:
    # Their __name__ is only the origin's ("list", "Optional"), which hid the culprit.
    with pytest.raises(UnsupportedOutputTypeError) as info:
        plan_output(output_type)
    assert str(info.value).startswith(f"The output type {shown} is not supported")


def test_whitespace_pattern_cannot_be_honoured() -> None:
    with pytest.raises(UnsupportedOutputTypeError, match="whitespace_pattern"):
        plan_output(JsonSchema({"type": "object"}, whitespace_pattern=r"[ ]?"))


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "$dynamicRef": "file:///tmp/secret.json#x"},
        {"$recursiveRef": "https://example.com/s.json"},
        {"properties": {"a": {"$dynamicRef": "http://10.255.255.1/x"}}},
    ],
)
def test_every_reference_keyword_to_elsewhere_is_refused(schema: dict[str, Any]) -> None:
    with pytest.raises(InvalidSchemaError, match="never fetched"):
        plan_output(schema)


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "#"},
        {"anyOf": [{"$ref": "#"}, {"type": "null"}]},
        {
            "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"allOf": [{"$ref": "#/$defs/a"}]}},
            "$ref": "#/$defs/a",
        },
    ],
)
def test_reference_loops_that_read_nothing_are_refused(schema: dict[str, Any]) -> None:
    with pytest.raises(InvalidSchemaError, match="leads back to itself"):
        plan_output(schema)


@pytest.mark.parametrize(
    ("schema", "where", "half"),
    [
        ({"type": "object", "properties": {"a\ud800": {}}}, "#/properties (a key)", "\\ud800"),
        ({"properties": {"b": {"const": "x\udc00"}}}, "#/properties/b/const", "\\udc00"),
        ({"properties": {"a": {}}, "required": ["a\ud800"]}, "#/required/0", "\\ud800"),
    ],
    ids=["key", "value", "listed"],
)
def test_a_lone_surrogate_in_a_schema_is_refused_where_it_is(
    schema: dict[str, Any], where: str, half: str
) -> None:
    """Not valid Unicode, so no engine can read it: a key as well as a value (found by
    mutation testing: the key's check could be dropped unnoticed)."""
    with pytest.raises(InvalidSchemaError) as info:
        plan_output(schema)
    assert f"JSON schema has text at {where} with a lone surrogate ('{half}')" in str(info.value)


def test_non_finite_numbers_never_reach_a_schema() -> None:
    with pytest.raises(UnsupportedOutputTypeError, match="nan"):
        plan_output(Literal[float("nan")])
    with pytest.raises(UnsupportedOutputTypeError, match="inf"):
        plan_output(Literal[1.0, float("inf")])
    with pytest.raises(InvalidSchemaError, match=r"at /const: nan .float. is no JSON value"):
        plan_output({"const": float("nan")})
    # Found by a probe: json's message named neither the place nor the value.
    deep = {"properties": {"a/b": {"maximum": float("inf")}, "c": {"enum": [{1, 2}]}}}
    with pytest.raises(InvalidSchemaError, match=r"at /properties/(a~1b/maximum|c/enum/0): "):
        plan_output(deep)
    with pytest.raises(InvalidSchemaError, match=r"at /properties: the key \(1, 2\) .tuple."):
        plan_output({"properties": {(1, 2): {}}})
    with pytest.raises(InvalidSchemaError, match="cannot represent"):
        plan_output(list[Literal[float("-inf")]])  # type: ignore[misc]

    class Model(pydantic.BaseModel):
        x: Literal[float("nan")]  # type: ignore[valid-type]

    with pytest.raises(OutlinesLMStudioError):
        plan_output(Model)


def test_schema_building_errors_name_the_field_and_the_type() -> None:
    class WithCallable(pydantic.BaseModel):
        name: str
        callback: Callable[[int], int]

    with pytest.raises(
        UnsupportedOutputTypeError, match=r"WithCallable \(field 'callback' of type"
    ):
        plan_output(WithCallable)

    class Forward(pydantic.BaseModel):
        friend: "Missing"  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(
        UnsupportedOutputTypeError, match=r"Forward \(field 'friend' of type Missing\)"
    ):
        plan_output(Forward)

    class Holder(TypedDict):
        thing: "Nope"  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(UnsupportedOutputTypeError, match=r"Holder \(field 'thing' of type Nope\)"):
        plan_output(Holder)

    @dataclasses.dataclass
    class Outer:
        inner: list[WithCallable]

    with pytest.raises(UnsupportedOutputTypeError, match=r"field 'inner.callback'"):
        plan_output(Outer)


@pytest.fixture
def meta_checks(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The schemas checked against their meta-schema from now on (a spy on jsonschema)."""
    checked: list[object] = []
    real = jsonschema.Draft202012Validator.check_schema

    def spy(schema: Any, *args: Any, **kwargs: Any) -> None:
        checked.append(schema)
        real(schema, *args, **kwargs)

    monkeypatch.setattr(jsonschema.Draft202012Validator, "check_schema", spy)
    return checked


def test_meta_schema_check_is_skipped_only_for_pydantic_schemas(
    meta_checks: list[object],
) -> None:
    """Pydantic's schemas are valid by construction; every other schema is checked."""
    checked = meta_checks

    class Fresh(pydantic.BaseModel):
        field_a: int

    plan_output(Fresh)
    plan_output(list[Fresh])
    assert checked == []
    plan_output({"type": "object", "properties": {"fresh_b": {"type": "integer"}}})
    assert len(checked) == 1

    class Extra(pydantic.BaseModel):  # the safety rules still run on Pydantic's schemas
        field_c: int = pydantic.Field(json_schema_extra={"$dynamicRef": "http://evil/x"})

    with pytest.raises(InvalidSchemaError, match="never fetched"):
        plan_output(Extra)


class _AnyValue:
    """A user class with its own JSON schema hook."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_plain_validator_function(lambda value: value)

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: Any, handler: Any) -> Any:
        return {"type": "strnig"}


class _BadFieldExtra(pydantic.BaseModel):
    x: int = pydantic.Field(json_schema_extra={"type": "integr"})


class _BadConfigExtra(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(json_schema_extra={"required": "x"})
    x: int


class _BadWithJsonSchema(pydantic.BaseModel):
    x: Annotated[int, pydantic.WithJsonSchema({"type": "integer", "minimum": "five"})]


class _BadHook(pydantic.BaseModel):
    x: _AnyValue


@pytest.mark.parametrize(
    ("output_type", "where"),
    [
        (_BadFieldExtra, "/properties/x/type"),
        (list[_BadFieldExtra], "/type"),  # under $defs: the pointer names the definition
        (_BadConfigExtra, "/required"),
        (_BadWithJsonSchema, "/properties/x/minimum"),
        (_BadHook, "/properties/x/type"),
        (Annotated[int, pydantic.WithJsonSchema({"type": "integr"})], "/type"),
    ],
)
def test_a_pydantic_schema_with_user_written_parts_gets_the_meta_schema_check(
    output_type: object, where: str
) -> None:
    """Pydantic copies what its user wrote (json_schema_extra, WithJsonSchema, a class's own
    hook) into the schema unchecked: it was sent, and failed on the server or was dropped
    (found by a probe)."""
    with pytest.raises(InvalidSchemaError, match=f"at [^ ]*{where}"):
        plan_output(output_type)


def test_pydantic_own_schema_parts_are_not_taken_for_user_written_ones(
    meta_checks: list[object],
) -> None:
    """Formats, discriminated unions, generics, terms, root models: all Pydantic's own."""
    checked = meta_checks

    class Cat(pydantic.BaseModel):
        kind: Literal["cat"] = "cat"

    class Dog(pydantic.BaseModel):
        kind: Literal["dog"] = "dog"

    class Box(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(title="A box", extra="forbid")
        when: Annotated[str, pydantic.Field(description="d", examples=["x"], min_length=1)]
        uid: uuid.UUID
        url: pydantic.HttpUrl
        pet: Annotated[Cat | Dog, pydantic.Field(discriminator="kind")]
        code: Annotated[str, Regex("[0-9]{5}")]
        many: dict[str, Cat]

        @pydantic.computed_field  # type: ignore[prop-decorator]
        @property
        def size(self) -> int:
            return 1

    class Pets(pydantic.RootModel[list[Cat]]):
        pass

    for output_type in (Box, Pets, list[Box], Annotated[int, pydantic.Field(ge=1)], Literal["a"]):
        plan_output(output_type)
    assert checked == []


class FrozenTag(pydantic.BaseModel, frozen=True):
    label: str


class Branch(pydantic.BaseModel):
    children: list["Branch"] = []
    tags: set[str] = set()
    frozen_tags: frozenset[FrozenTag] = frozenset()


@pytest.mark.parametrize("output_type", [set[FrozenTag], Branch, list[Branch]], ids=repr)
def test_sets_of_hashable_items_are_kept(output_type: object) -> None:
    assert sent(output_type)  # also: a recursive model is walked once


class Loose(pydantic.BaseModel):  # not frozen: cannot be hashed
    name: str


class FrozenWithList(pydantic.BaseModel, frozen=True):
    tags: list[str]


class FrozenOwnHash(pydantic.BaseModel, frozen=True):
    tags: list[str]

    def __hash__(self) -> int:  # the user's own: taken at its word
        return hash(tuple(self.tags))


class FrozenTree(pydantic.BaseModel, frozen=True):
    tags: tuple[str, ...]
    parent: Optional["FrozenTree"] = None


@dataclasses.dataclass(frozen=True)
class FrozenRow:
    cells: list[int]


@dataclasses.dataclass(frozen=True)
class FrozenCells:
    cells: tuple[int, ...]


class HoldsPairs(pydantic.BaseModel):
    pairs: set[tuple[int, Loose]]


@pytest.mark.parametrize(
    ("output_type", "culprit"),
    [
        (set[tuple[int, Loose]], r"tuple\[int, .*Loose\] \(Loose cannot be hashed\)"),
        (HoldsPairs, r"\(Loose cannot be hashed\) \(at field 'pairs'"),
        (set[FrozenWithList], r"FrozenWithList's field 'tags': a list\[str\] cannot be hashed"),
        (set[FrozenRow], r"FrozenRow's field 'cells': a list\[int\] cannot be hashed"),
        (list[set[tuple[Loose, ...]]], r"Loose cannot be hashed"),
    ],
    ids=repr,
)
def test_sets_of_items_that_cannot_be_hashed_are_refused(output_type: Any, culprit: str) -> None:
    """Found by a probe: only a set of a non-frozen model itself was refused; a tuple holding
    one, or a frozen model with a list field (which its generated hash cannot hash), was
    sent, and every reply with an item failed to validate."""
    with pytest.raises(UnsupportedOutputTypeError, match=culprit):
        plan_output(output_type)
    with pytest.raises(pydantic.ValidationError, match="hashable"):  # what Pydantic would do
        pydantic.TypeAdapter(output_type).validate_json(_one_item_reply(output_type))


def _one_item_reply(output_type: object) -> str:
    return {
        repr(set[tuple[int, Loose]]): '[[1, {"name": "a"}]]',
        repr(HoldsPairs): '{"pairs": [[1, {"name": "a"}]]}',
        repr(set[FrozenWithList]): '[{"tags": ["a"]}]',
        repr(set[FrozenRow]): '[{"cells": [1]}]',
        repr(list[set[tuple[Loose, ...]]]): '[[[{"name": "a"}]]]',
    }[repr(output_type)]


@pytest.mark.parametrize(
    "output_type", [set[FrozenOwnHash], set[FrozenTree], set[FrozenCells]], ids=repr
)
def test_sets_of_hashable_frozen_items_are_kept(output_type: object) -> None:
    assert sent(output_type)


def test_strict_schema_refuses_a_json_string_field() -> None:
    class Payload(pydantic.BaseModel):
        numbers: pydantic.Json[list[int]]  # a string holding JSON: no engine checks the content

    assert plan_output(Payload).schema  # sent by default; parse validates the content
    with pytest.raises(UnsupportedOutputTypeError, match=r"'contentSchema' at /properties/numbers"):
        plan_output(Payload, strict_schema=True)


class Stamps(pydantic.BaseModel):
    local: pydantic.NaiveDatetime
    utc: pydantic.AwareDatetime
    any_kind: datetime.datetime


@pytest.mark.parametrize(
    ("field", "text", "valid"),
    [
        ("local", "2024-02-29T13:45:00", True),
        ("local", "2024-02-29T13:45:00.123456", True),
        ("local", "2024-02-29T13:45:00Z", False),
        ("local", "2024-02-29T13:45:00+01:00", False),
        ("utc", "2024-02-29T13:45:00Z", True),
        ("utc", "2024-02-29T13:45:00.5-05:30", True),
        ("utc", "2024-02-29T13:45:00", False),
    ],
)
def test_naive_and_aware_datetimes_are_asked_for_as_they_are_read(
    field: str, text: str, valid: bool
) -> None:
    """The schema sent takes a value exactly when Pydantic's type does (offset or none).

    ``format: date-time`` asks for an offset, which NaiveDatetime refuses; outlines-core's
    regex for it leaves the offset optional, which AwareDatetime refuses.
    """
    schema = plan_output(Stamps).schema
    assert schema is not None
    node = schema["properties"][field]
    assert jsonschema.Draft202012Validator(node).is_valid(text) is valid
    annotation = Stamps.model_fields[field].annotation
    assert annotation is not None
    try:
        pydantic.TypeAdapter(annotation).validate_python(text)
        taken = True
    except pydantic.ValidationError:
        taken = False
    assert taken is valid
    assert "pattern" not in schema["properties"]["any_kind"]  # a plain datetime: either


Json: Any = typing_extensions.TypeAliasType(
    "Json",
    dict[str, "Json"] | list["Json"] | str | int | float | bool | None,  # type: ignore[misc]
)


def test_a_recursive_type_alias_is_planned_as_pydantic_reads_it() -> None:
    """Its value names the alias, which only Pydantic resolves: it is planned as given, and
    then refused for what its schema is (a recursion through no object property, which
    outlines-core cannot constrain), not as a type "not supported"."""
    with pytest.raises(UnsupportedOutputTypeError, match="goes through no object property"):
        plan_output(Json)


def test_a_type_alias_written_as_a_string_is_pydantic_s_forward_reference() -> None:
    """Found by a review: ``TypeAliasType("Num", "int")`` was read as JSON-schema text."""
    plan = plan_output(typing_extensions.TypeAliasType("Num", "int"))
    assert plan.schema == {"type": "integer"}


@pytest.mark.parametrize(
    "output_type",
    [
        typing_extensions.TypeAliasType("Bare", list),
        typing_extensions.TypeAliasType("Pets", set[Pet]),
    ],
)
def test_a_type_alias_is_refused_as_what_it_stands_for(output_type: Any) -> None:
    with pytest.raises(UnsupportedOutputTypeError, match=r"bare list|JSON has no set type|hash"):
        plan_output(output_type)


class _Release(enum.Enum):
    V1 = datetime.date(2024, 1, 1)


def _from_iso(value: object) -> object:
    return _Release(datetime.date.fromisoformat(value)) if isinstance(value, str) else value


class _FieldValidated(pydantic.BaseModel):
    release: _Release

    @pydantic.field_validator("release", mode="before")
    @classmethod
    def from_iso(cls, value: object) -> object:
        return _from_iso(value)


class _AnnotatedValidated(pydantic.BaseModel):
    release: Annotated[_Release, pydantic.BeforeValidator(_from_iso)]


class _ModelValidated(pydantic.BaseModel):
    release: _Release

    @pydantic.model_validator(mode="before")
    @classmethod
    def from_iso(cls, data: Any) -> Any:
        return {"release": _from_iso(data["release"])} if isinstance(data, dict) else data


class _NotValidated(pydantic.BaseModel):
    release: _Release


@pytest.mark.parametrize("model", [_FieldValidated, _AnnotatedValidated, _ModelValidated])
def test_a_value_a_validator_of_the_user_reads_first_is_not_refused(
    model: type[pydantic.BaseModel],
) -> None:
    """Found by a review: an Enum of dates that a before validator reads from its ISO text
    was refused as one no reply could validate (it validates)."""
    plan = plan_output(model)
    assert plan.schema is not None
    assert model.model_validate_json('{"release": "2024-01-01"}')
    with pytest.raises(UnsupportedOutputTypeError, match="cannot read back from JSON"):
        plan_output(_NotValidated)


@pytest.mark.parametrize("output_type", [Regex("a+"), CFG('start: "a"'), [1, 2], {1, 2}], ids=repr)
def test_an_unhashable_output_type_is_refused_without_the_hash_error_behind_it(
    output_type: object,
) -> None:
    """The refusal was raised inside the handler of the cache's ``hash``: its traceback
    opened with ``TypeError: unhashable type: 'Regex'`` (found by a probe)."""
    with pytest.raises(UnsupportedOutputTypeError) as info:
        plan_output(output_type)
    assert info.value.__context__ is None


class _Prices(pydantic.BaseModel):
    plain: decimal.Decimal
    bounded: Annotated[decimal.Decimal, pydantic.Field(gt=0, le=100)]


def test_a_decimal_is_asked_as_a_number_or_a_string_that_writes_one() -> None:
    """Pydantic's ``anyOf: [number, string]`` let the engines write any string ("60K,"),
    and a string escaped the bounds it puts on the number alone ("-5" for ``gt=0``); found
    by a probe on the real engine."""
    sent = plan_output(_Prices).response_format["jsonSchema"]  # type: ignore[index]
    plain, bounded = sent["properties"]["plain"], sent["properties"]["bounded"]
    number, text = plain["anyOf"]
    assert number == {"type": "number"}
    assert text["type"] == "string"
    for ok in ("12.50", "-0.5", "0", "1234567890.123456789"):
        assert re.search(text["pattern"], ok)
        assert _Prices.model_validate({"plain": ok, "bounded": 1}).plain == decimal.Decimal(ok)
    for bad in ("60K,", "1.", ".5", "01", "", "1e5", "NaN"):
        assert not re.search(text["pattern"], bad)
    assert bounded == {"exclusiveMinimum": 0, "maximum": 100, "title": "Bounded", "type": "number"}


class _Pydantic213Decimals(GenerateJsonSchema):
    """What Pydantic 2.12 and 2.13 write for a ``Decimal``: its string has a pattern with
    lookaheads (``pydantic/json_schema.py``, ``decimal_schema``, copied in short)."""

    def decimal_schema(self, schema: Any) -> JsonSchemaValue:
        digits = schema.get("max_digits")
        pattern = r"^(?!^[-+.]*$)[+-]?0*" + (
            r"\d*\.?\d*$"
            if digits is None
            else rf"(?:\d{{0,{digits}}}|(?=[\d.]{{1,{digits + 1}}}0*$)\d*\.\d*0*$)"
        )
        return {"anyOf": [{"type": "number"}, {"type": "string", "pattern": pattern}]}


class _Under213(FullMatchTerms, _Pydantic213Decimals):
    """The library's schema generator over Pydantic 2.13's decimal schema."""


def test_pydantic_2_13_s_decimal_pattern_is_asked_as_on_other_versions() -> None:
    """Under Pydantic 2.12 and 2.13 every model with a ``Decimal`` field was refused: their
    string branch has a lookahead no engine constrains (found by a probe of the floors)."""

    class Price(pydantic.BaseModel):
        plain: decimal.Decimal
        digits: Annotated[decimal.Decimal, pydantic.Field(max_digits=5)]

    written = Price.model_json_schema(schema_generator=_Under213)["properties"]
    plain = Price.model_json_schema(schema_generator=FullMatchTerms)["properties"]["plain"]
    assert written["plain"]["anyOf"] == plain["anyOf"]
    assert written["digits"]["anyOf"] == plain["anyOf"]  # the type checks the digits
    assert "?!" not in json.dumps(written)


@given(st.from_regex(r"\A-?(0|[1-9][0-9]*)(\.[0-9]+)?\Z"))
def test_every_decimal_string_the_engines_may_write_is_read_as_written(text: str) -> None:
    pattern = plan_output(decimal.Decimal).response_format["jsonSchema"]["anyOf"][1]["pattern"]  # type: ignore[index]
    assert re.search(pattern, text)
    assert pydantic.TypeAdapter(decimal.Decimal).validate_json(json.dumps(text)) == decimal.Decimal(
        text
    )


@pytest.mark.parametrize("version", [1, 3, 4, 5, 6, 7, 8])
@given(data=st.data())
def test_a_uuid_of_one_version_is_asked_for_by_its_pattern(
    version: int, data: st.DataObject
) -> None:
    """``UUID4`` was sent as any string (no engine knows ``format: uuid4``): 3 of 4 replies
    of the real engine failed the type (found by a probe). Every string the pattern lets
    an engine write is a UUID of that version."""
    tp = getattr(pydantic, f"UUID{version}")
    sent = plan_output(tp).response_format["jsonSchema"]  # type: ignore[index]
    assert "format" not in sent
    text = data.draw(st.from_regex(sent["pattern"].replace("$", r"\Z"), fullmatch=True))
    assert pydantic.TypeAdapter(tp).validate_json(json.dumps(text)) == uuid.UUID(text)


@given(data=st.data())
def test_a_timedelta_is_asked_for_by_the_pattern_of_iso_durations(data: st.DataObject) -> None:
    """``format: duration`` is constrained by no engine: the engines wrote any string and
    ``parse`` failed on almost every reply (found by a probe). Every string the pattern
    lets an engine write is a duration Pydantic reads in JSON (strict, as replies are)."""
    sent = plan_output(datetime.timedelta).response_format["jsonSchema"]  # type: ignore[index]
    assert sent.keys() == {"type", "pattern"}
    for ok in ("P1DT2H30M", "PT45S", "-P3D", "P2W", "PT0.5S", "P1Y2M3W4DT5H6M7.25S"):
        assert re.search(sent["pattern"], ok), ok
    for bad in ("P", "PT", "P1DT", "1 day", "P1.5DT2H", "3600", "p1d", ""):
        assert not re.search(sent["pattern"], bad), bad
    text = data.draw(st.from_regex(sent["pattern"].replace("$", r"\Z"), fullmatch=True))
    assert isinstance(
        pydantic.TypeAdapter(datetime.timedelta).validate_json(json.dumps(text), strict=True),
        datetime.timedelta,
    )


_URL_TYPES = [
    pydantic.HttpUrl,
    pydantic.AnyHttpUrl,
    pydantic.AnyUrl,
    pydantic.FileUrl,
    pydantic.WebsocketUrl,
    pydantic.FtpUrl,
    pydantic.PostgresDsn,
    pydantic.RedisDsn,
]


@pytest.mark.parametrize("tp", _URL_TYPES, ids=lambda tp: tp.__name__)
@given(data=st.data())
def test_a_url_type_is_asked_for_by_a_pattern_of_urls_it_reads(
    tp: type[Any], data: st.DataObject
) -> None:
    """``format: uri`` is dropped from what is sent (and llama.cpp knows no such format):
    the engines wrote any string and ``parse`` failed (found by a probe). Every string the
    pattern lets an engine write is a URL of the type's schemes."""
    sent = plan_output(tp).response_format["jsonSchema"]  # type: ignore[index]
    assert sent.keys() == {"type", "pattern"}  # a length beside it: outlines-core drops it
    text = data.draw(st.from_regex(sent["pattern"].replace("$", r"\Z"), fullmatch=True))
    assert pydantic.TypeAdapter(tp).validate_json(json.dumps(text), strict=True)


class _Links(pydantic.BaseModel):
    home: pydantic.HttpUrl
    any_scheme: pydantic.AnyUrl
    short: Annotated[pydantic.HttpUrl, pydantic.UrlConstraints(max_length=40)]
    own: Annotated[pydantic.HttpUrl, pydantic.Field(json_schema_extra={"pattern": "^https://x"})]
    wait: datetime.timedelta


def test_what_is_sent_for_urls_and_durations() -> None:
    sent = plan_output(_Links).response_format["jsonSchema"]  # type: ignore[index]
    home, any_scheme = sent["properties"]["home"], sent["properties"]["any_scheme"]
    for ok in (
        "https://example.com",
        "http://127.0.0.1:8000/a/b?x=1&y=(2)#top",
        "http://localhost",
    ):
        assert re.search(home["pattern"], ok), ok
    for bad in (
        "ftp://example.com",
        "example.com",
        "http://a b.com",
        'http://a.com/"',
        "http://a.123",
    ):
        assert not re.search(home["pattern"], bad), bad
    assert re.search(any_scheme["pattern"], "wss://example.com:443/socket")
    # A length shorter than the type's own is the user's: Pydantic's schema is sent.
    assert sent["properties"]["short"] == {
        "maxLength": 40,
        "minLength": 1,
        "title": "Short",
        "type": "string",
    }
    # A pattern of the user's own is kept (the emptied lengths and format with it).
    assert sent["properties"]["own"]["pattern"].startswith("^https://x")
    assert sent["properties"]["wait"]["pattern"].startswith("^-?P(")
    assert _Links.model_validate_json(
        '{"home": "https://example.com", "any_scheme": "ftp://a.org", "short": "http://a.io",'
        ' "own": "https://x.io", "wait": "PT1H"}'
    ).wait == datetime.timedelta(hours=1)
    # Nothing left that an engine does not enforce: strict schema checking takes them.
    assert plan_output(
        dict[str, pydantic.HttpUrl | datetime.timedelta | pydantic.AnyUrl], strict_schema=True
    )


class _Written(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(json_schema_mode_override="serialization")
    count: int = pydantic.Field(validation_alias="cnt", serialization_alias="count_out")

    @pydantic.computed_field  # type: ignore[prop-decorator]
    @property
    def double(self) -> int:
        return 2 * self.count


def test_a_type_is_asked_for_what_it_reads_whatever_its_schema_mode() -> None:
    """``json_schema_mode_override="serialization"`` sent the schema of what the type writes
    (its serialization alias, computed fields required): every reply failed (found by a
    probe)."""
    sent = plan_output(_Written).response_format["jsonSchema"]  # type: ignore[index]
    assert list(sent["properties"]) == ["cnt"]
    assert sent["required"] == ["cnt"]
    assert _Written.model_validate_json('{"cnt": 3}').count == 3


class _Skipped(pydantic.BaseModel):
    internal_id: SkipJsonSchema[int]
    name: str


class _SkippedWithDefault(pydantic.BaseModel):
    internal_id: SkipJsonSchema[int] = 0
    name: str


def test_a_required_field_left_out_of_the_schema_is_refused() -> None:
    """``SkipJsonSchema`` on a field without a default: no reply can hold it, and 4
    requests were sent for ``retries=3`` (found by a probe)."""
    with pytest.raises(UnsupportedOutputTypeError, match="A required field is left out"):
        plan_output(_Skipped)
    sent = plan_output(_SkippedWithDefault).response_format["jsonSchema"]  # type: ignore[index]
    assert list(sent["properties"]) == ["name"]


class _SameKey(pydantic.BaseModel):
    a: int
    b: int = pydantic.Field(alias="a")


def test_two_fields_read_from_one_key_are_required_once() -> None:
    """Pydantic wrote ``required: ["a", "a"]``, a schema the library refuses as data (a
    probe found it sent; a review found that refusing it refused a valid type)."""
    sent = plan_output(_SameKey).response_format["jsonSchema"]  # type: ignore[index]
    assert sent["required"] == ["a"]
    assert _SameKey.model_validate_json('{"a": 1}').b == 1


class _Lazy(pydantic.BaseModel):
    it: typing.Iterable[int]


@pytest.mark.parametrize(
    "output_type", [typing.Iterable[int], typing.Generator[int, None, None], _Lazy], ids=str
)
def test_a_lazily_validated_iterable_is_refused(output_type: object) -> None:
    """Pydantic checks an ``Iterable``'s items only when it is iterated: ``["not an int"]``
    was taken, not re-asked, and failed later in the user's loop (found by a probe)."""
    with pytest.raises(UnsupportedOutputTypeError, match="checks its items only when") as info:
        plan_output(output_type)
    # where instructor's users stream Iterable[Item] (found by a probe of what they write)
    assert "parse_stream(prompt, list[Item]) yields the list as it grows" in str(info.value)


@pytest.mark.parametrize(
    ("output_type", "built"),
    [
        (typing.AbstractSet[int], "frozenset"),
        (collections.abc.Set[int], "frozenset"),
        (collections.abc.MutableSet[int], "set"),
    ],
    ids=str,
)
def test_every_spelling_of_a_set_is_refused_as_set_is(output_type: object, built: str) -> None:
    """``set[int]`` was refused (no engine makes items unique) but ``AbstractSet[int]`` was
    sent, and ``parse`` merged the duplicates (found by a probe)."""
    with pytest.raises(UnsupportedOutputTypeError, match=rf"build the {built} from the result"):
        plan_output(output_type)


@pytest.mark.parametrize(
    ("output_type", "held"),
    [
        (typing.Optional[set[int]], "set[int]"),
        (set[int] | None, "set[int]"),
        (typing.Union[set[int], str], "set[int]"),
        (list[set[int]], "set[int]"),
        (dict[str, set[int]], "set[int]"),
        (tuple[set[int], int], "set[int]"),
        (typing.Optional[frozenset[str]], "frozenset[str]"),
        (Annotated[list[set[int]], pydantic.Field(min_length=1)], "set[int]"),
    ],
    ids=str,
)
def test_a_set_of_simple_values_inside_another_type_is_refused(
    output_type: object, held: str
) -> None:
    """Only the bare set was refused: ``Optional[set[int]]`` was sent, and ``parse``
    merged the duplicates of ``[1, 1, 2]`` (found by a probe)."""
    with pytest.raises(UnsupportedOutputTypeError) as info:
        plan_output(output_type)
    message = str(info.value)
    assert f"It holds {held}: JSON has no set type" in message
    assert "list[" in message
    assert "in its place" in message


def test_a_set_the_reply_would_not_hold_is_not_blamed() -> None:
    """Found by a review: ``type[set[int]]`` was said to hold ``set[int]``, to be written
    ``list[int]``; and a bare ``set`` inside a type was given ``int`` items."""
    with pytest.raises(UnsupportedOutputTypeError) as info:
        plan_output(type[set[int]])
    assert "It holds" not in str(info.value)
    with pytest.raises(UnsupportedOutputTypeError, match=r"Write list\[\.\.\.\] in its place"):
        plan_output(typing.Optional[set])


def test_a_set_field_of_a_model_and_a_set_of_frozen_models_are_still_sent() -> None:
    """The refusal of sets inside simple types leaves the JSON types alone."""

    class Tagged(pydantic.BaseModel):
        tags: set[str]

    assert plan_output(Tagged).kind == "json"
    assert plan_output(typing.Optional[set[_FrozenItem]]).kind == "json"
    assert plan_output(list[Tagged]).kind == "json"


class _Slugged(pydantic.BaseModel):
    name: str
    slug: SkipJsonSchema[str]

    @pydantic.model_validator(mode="before")
    @classmethod
    def _slug(cls, value: Any) -> Any:
        return {**value, "slug": str(value.get("name", "")).lower()}


class _FrozenItem(pydantic.BaseModel, frozen=True):
    n: int


def test_what_the_refusals_leave_alone() -> None:
    """Found by a review of the refusals: a skipped field a before validator fills, a set
    of frozen models however spelt, and an Iterable an after validator consumes."""
    assert plan_output(_Slugged).kind == "json"
    for spelling in (typing.AbstractSet, collections.abc.MutableSet):
        assert plan_output(spelling[_FrozenItem]).kind == "json"
    eager = Annotated[typing.Iterable[int], pydantic.AfterValidator(list)]
    assert plan_output(eager).kind == "json"
    lazy = Annotated[typing.Iterable[int], pydantic.BeforeValidator(list)]
    with pytest.raises(UnsupportedOutputTypeError, match="checks its items only when"):
        plan_output(lazy)


def test_a_schema_pattern_python_would_warn_of_is_planned_quietly() -> None:
    """``[[:alpha:]]`` in a schema given as data is ECMA-262; Python's FutureWarning about
    it came out of the meta-schema check and the pattern check (found by a probe)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plan = plan_output({"type": "string", "pattern": "^[[:alpha:]]+$"})
    assert plan.kind == "json"


class _SkippedInATuple(typing.NamedTuple):
    a: int
    b: SkipJsonSchema[int] = 3


@pytest.mark.parametrize(
    "output_type", [SkipJsonSchema[int], list[SkipJsonSchema[int]], _SkippedInATuple], ids=str
)
def test_a_type_pydantic_leaves_out_of_its_schema_is_refused_by_name(output_type: object) -> None:
    """Pydantic's bare ``PydanticOmit()`` came out of ``plan_output`` (found by a review)."""
    with pytest.raises(UnsupportedOutputTypeError, match="leaves out of its JSON schema"):
        plan_output(output_type)


def _add(a: int, b: int) -> int:
    return a + b


@pytest.mark.parametrize("grammar", [False, True])
def test_a_function_as_output_type_says_what_to_write(grammar: bool) -> None:
    """Refused, as by Outlines' own adapter, with only the generic list of what is supported
    (found by a probe): the message now says to write the parameters as a model."""
    with pytest.raises(UnsupportedOutputTypeError, match="A function is not an output type"):
        plan_output(_add, grammar=grammar)


class _Cat(pydantic.BaseModel):
    meows: bool


class _Dog(pydantic.BaseModel):
    barks: bool


_LISTED_TYPES: list[tuple[object, str]] = [
    ((_Cat, _Dog), r"write their union, Union\[_Cat, _Dog\] \(or _Cat \| _Dog\)\."),
    ([int, list[str]], r"Union\[int, list\[str\]\] \(or int \| list\[str\]\)"),
    ([_Cat], r"For a list of _Cat, write list\[_Cat\]\."),
]


@pytest.mark.parametrize(("output_type", "hint"), _LISTED_TYPES, ids=["tuple", "list", "one"])
def test_a_list_of_types_says_which_type_to_write(output_type: object, hint: str) -> None:
    """pydantic-ai's ``output_type=[Cat, Dog]`` was refused with only the generic list of
    what is supported (found by a probe of what its users write)."""
    with pytest.raises(UnsupportedOutputTypeError, match=hint):
        plan_output(output_type)


def test_a_list_of_values_gets_no_type_hint() -> None:
    with pytest.raises(UnsupportedOutputTypeError) as info:
        plan_output([1, 2])
    assert "not supported by outlines-lmstudio. Supported:" in str(info.value)


@pytest.mark.timeout(30)  # the quadratic check took about 2 minutes here
def test_a_large_literal_is_planned_in_linear_time() -> None:
    """Each ``enum`` value was checked against the keywords beside it, the whole ``enum``
    included: 16,000 values took 79 s before anything was sent, where the SDK by hand sent
    the schema in 0.02 s (found by a probe). Each value passes its own list."""
    values = tuple(range(20_000))
    sent = plan_output(Literal[values]).response_format
    assert sent == {"type": "json", "jsonSchema": {"enum": list(values)}}
    cities = [f"city-{i}" for i in range(20_000)]
    sent = plan_output({"type": "string", "enum": [*cities, 1]}).response_format
    assert sent == {"type": "json", "jsonSchema": {"enum": cities}}  # 1 is no string


def test_models_nested_too_deeply_for_pydantic_are_refused_with_our_error() -> None:
    """Pydantic's own schema generation raised a bare RecursionError with a 1,000-line
    traceback, out of every call (found by a probe)."""
    nested: Any = int
    for level in range(60):
        nested = pydantic.create_model(f"Level{level}", a=(nested, ...))
    with pytest.raises(
        UnsupportedOutputTypeError, match="nests too deeply for its JSON schema to be written"
    ):
        plan_output(nested)


def test_the_depth_refusal_says_how_levels_are_counted() -> None:
    """It said "more than 64 levels" to a schema of 32 nested objects, with 500 characters
    of path (found by a probe)."""
    node: dict[str, Any] = {"type": "integer"}
    for _ in range(40):
        node = {"type": "object", "properties": {"a": node}}
    with pytest.raises(InvalidSchemaError, match="each object and array counted") as info:
        plan_output(node)
    assert "about 32 nested objects" in str(info.value)
    assert len(str(info.value)) < 450


def test_a_draft_07_schema_without_its_draft_is_told_to_say_so() -> None:
    """Outlines' JsonSchema checks draft-07: a tuple written as ``items: [...]`` passed it,
    and our 2020-12 check refused it without a word of ``$schema`` (found by a review)."""
    schema = {"type": "array", "items": [{"type": "integer"}, {"type": "string"}]}
    with pytest.raises(InvalidSchemaError, match=r"http://json-schema.org/draft-07/schema#"):
        plan_output(schema)
    assert plan_output({**schema, "$schema": "http://json-schema.org/draft-07/schema#"})


_DEPENDENT = {"properties": {"a": {"type": "integer"}}, "dependencies": {"a": ["b"]}}
_CLOSED_TUPLE = {"type": "array", "prefixItems": [{"type": "integer"}], "additionalItems": False}


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        (
            _DEPENDENT,
            r"'dependencies' at /dependencies is not a keyword of JSON Schema 2020-12, "
            r"which a schema without \"\$schema\" is read as: .*'dependentRequired'",
        ),
        (
            {"properties": {"x": _DEPENDENT}},
            r"'dependencies' at /properties/x/dependencies is not a keyword",
        ),
        (
            {**_DEPENDENT, "$schema": "https://json-schema.org/draft/2019-09/schema"},
            r"not a keyword of JSON Schema 2019-09: no validator",
        ),
        (_CLOSED_TUPLE, r"'additionalItems' .* with 'items' beside 'prefixItems'"),
        (
            {**_CLOSED_TUPLE, "$schema": "https://json-schema.org/draft/2020-12/schema"},
            r"'additionalItems' at /additionalItems is not a keyword of JSON Schema 2020-12: ",
        ),
    ],
)
def test_a_keyword_its_draft_dropped_is_refused_with_its_new_spelling(
    schema: dict[str, Any], message: str
) -> None:
    """Found by a probe: ``dependencies`` without ``$schema`` was sent, no engine and no
    validator read it, and a reply without ``b`` was taken; ``additionalItems: false`` was
    refused as "a boolean schema here is not supported"."""
    with pytest.raises(InvalidSchemaError, match=message):
        plan_output(schema)


@pytest.mark.parametrize(
    "schema",
    [
        {**_DEPENDENT, "$schema": "http://json-schema.org/draft-07/schema#"},
        {  # 2019-09 still has additionalItems; a property may be named after a keyword
            "$schema": "https://json-schema.org/draft/2019-09/schema",
            "type": "array",
            "items": [{"type": "integer"}],
            "additionalItems": False,
        },
        {"properties": {"dependencies": {"type": "string"}, "additionalItems": {}}},
        {  # an embedded resource of its own draft (found by a review: refused)
            "$defs": {
                "old": {
                    "$schema": "http://json-schema.org/draft-07/schema#",
                    "$id": "https://example.com/old",
                    **_DEPENDENT,
                }
            },
            "properties": {"x": {"type": "integer"}},
        },
    ],
)
def test_a_keyword_of_the_schema_s_own_draft_is_taken(schema: dict[str, Any]) -> None:
    assert plan_output(schema)


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "strin"}, r"at /type: 'strin' is no JSON Schema type: write one of array, "),
        (
            {"properties": {"a/b": {"type": ["string", "nmber"]}}},
            r"at /properties/a~1b/type: 'nmber' is no JSON Schema type",
        ),
        ({"minLength": -1}, r"at /minLength: .*meta-schema of JSON Schema 2020-12\."),
    ],
)
def test_a_schema_its_meta_schema_refuses_is_told_where_and_what(
    schema: dict[str, Any], message: str
) -> None:
    """Found by a probe: jsonschema's "'strin' is not valid under any of the given schemas",
    and "the Draft202012 meta-schema"."""
    with pytest.raises(InvalidSchemaError, match=message):
        plan_output(schema)


def test_a_json_schema_term_s_plan_is_kept_by_its_text() -> None:
    """Found by a probe: an Outlines ``JsonSchema`` (unhashable) was planned anew on every
    call, 140 ms a call for a 300-field schema, where a dict schema's plan was kept."""
    from outlines.types import JsonSchema

    from outlines_lmstudio._output import _plan_json_schema

    schema = {"type": "object", "properties": {f"f{i}": {"type": "integer"} for i in range(30)}}
    first = plan_output(JsonSchema(schema))
    before = _plan_json_schema.cache_info().hits
    term = JsonSchema(schema)  # another object, the same text
    again = plan_output(term)
    assert _plan_json_schema.cache_info().hits == before + 1
    assert again.response_format == first.response_format
    assert again.output_type is term  # the caller's own object, as for a dict
    with pytest.raises(UnsupportedOutputTypeError):  # refused as before, not kept
        plan_output(JsonSchema(schema, whitespace_pattern=r"[ ]?"))


def test_a_json_schema_term_s_kept_plan_is_the_callers_to_change_safely() -> None:
    """Found by a review: the dict ``format_output_type`` gave was the kept plan's own, so a
    caller's change to it changed every later call; and a term whose ``schema`` a caller set
    to a broken text raised Outlines' own checker's errors, not ours."""
    from outlines.types import JsonSchema

    from outlines_lmstudio import LMStudioTypeAdapter

    adapter = LMStudioTypeAdapter()
    schema = {"type": "integer", "minimum": 5}
    given = adapter.format_output_type(JsonSchema(schema))
    assert given is not None
    given["jsonSchema"]["minimum"] = 500
    again = adapter.format_output_type(JsonSchema(schema))
    assert again is not None
    assert again["jsonSchema"]["minimum"] == 5
    term = JsonSchema(schema)
    term.schema = '{"type": "strin"}'
    with pytest.raises(InvalidSchemaError, match="'strin' is no JSON Schema type"):
        plan_output(term)


def test_the_adapter_s_plan_is_the_callers_to_change_safely() -> None:
    """Found by a probe: ``plan_output`` gave the kept plan's own dicts; deleting a
    property from them weakened every later call with the type, in every model."""
    from outlines_lmstudio import LMStudioTypeAdapter

    class Pet(pydantic.BaseModel):
        name: str
        age: int

    adapter = LMStudioTypeAdapter()
    given = adapter.plan_output(Pet)
    assert given.schema is not None
    assert given.full_schema is not None
    del given.schema["properties"]["age"]
    given.schema["required"].remove("age")
    given.full_schema["required"].clear()
    again = adapter.plan_output(Pet)
    assert again.schema is not None
    assert again.full_schema is not None
    assert set(again.schema["properties"]) == {"name", "age"}
    assert again.full_schema["required"] == ["name", "age"]
    assert again.output_type is Pet  # the caller's own type, not a copy
    sent = adapter.format_output_type(Pet)
    assert sent is not None
    assert sent["jsonSchema"]["required"] == ["name", "age"]


@pytest.mark.parametrize("written", [["string", "string"], []])
def test_a_list_of_type_names_is_not_told_it_holds_no_type(written: list[str]) -> None:
    """Found by a review: a repeated or empty list of valid names was "no JSON Schema type"."""
    with pytest.raises(InvalidSchemaError) as info:
        plan_output({"type": written})
    assert "no JSON Schema type" not in str(info.value)


_CELL_B = "class B(BaseModel):\n    x: int\n"
_CELL_A = (
    "@dataclasses.dataclass\nclass A1:\n    b: B\n\n"
    "class A2(TypedDict):\n    b: 'list[B]'\n\n"
    "class A3(BaseModel):\n    b: B\n"
)


def test_a_string_annotation_is_resolved_again_once_its_name_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by a probe: a dataclass or TypedDict whose annotation is a string (``from
    __future__ import annotations``) kept the plan and validator of the ``B`` of its first
    use after ``B``'s notebook cell was run again: the old schema was sent, and ``parse``
    refused every reply against the new one (or returned the old class). Pydantic resolves
    such annotations anew; a Pydantic model keeps what it resolved, here as in Pydantic."""
    import sys
    import types

    from outlines_lmstudio._typed import validator_for

    cells = types.ModuleType("notebook_cells")
    monkeypatch.setitem(sys.modules, cells.__name__, cells)
    head = (
        "from __future__ import annotations\nimport dataclasses\n"
        "from typing import TypedDict\nfrom pydantic import BaseModel\n"
    )
    exec(head + _CELL_B + _CELL_A, cells.__dict__)
    first = {name: plan_output(getattr(cells, name)) for name in ("A1", "A2", "A3")}
    for plan in first.values():
        assert plan.schema is not None
        assert set(plan.schema["$defs"]["B"]["properties"]) == {"x"}
        validator_for(plan)  # kept too
    exec(_CELL_B.replace("x: int", "name: str"), cells.__dict__)  # cell 1 run again
    for name in ("A1", "A2"):
        plan = plan_output(getattr(cells, name))
        assert plan is not first[name]
        assert plan.schema is not None
        assert set(plan.schema["$defs"]["B"]["properties"]) == {"name"}
        reply = '{"b": {"name": "Al"}}' if name == "A1" else '{"b": [{"name": "Al"}]}'
        value = validator_for(plan).validate(reply)
        b = value.b if name == "A1" else value["b"][0]
        assert isinstance(b, cells.B)
        assert plan_output(getattr(cells, name)) is plan  # kept again
    kept = plan_output(cells.A3)  # a Pydantic model resolved its B when it was made
    assert kept.schema is not None
    assert set(kept.schema["$defs"]["B"]["properties"]) == {"x"}


def test_a_plan_made_anew_meets_a_validator_made_anew(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a review: after a name changed, the first plan for another setting
    (``strict_schema``) was new, but the validator kept for the type was the old one:
    ``parse`` refused every reply. Each is now checked where it is kept."""
    import sys
    import types

    from outlines_lmstudio._typed import validator_for

    cells = types.ModuleType("notebook_cells_2")
    monkeypatch.setitem(sys.modules, cells.__name__, cells)
    head = (
        "from __future__ import annotations\nimport dataclasses\nfrom pydantic import BaseModel\n"
    )
    exec(head + _CELL_B + "@dataclasses.dataclass\nclass A:\n    b: B\n", cells.__dict__)
    validator_for(plan_output(cells.A))  # plain: plan and validator kept
    exec(_CELL_B.replace("x: int", "name: str"), cells.__dict__)
    strict = plan_output(cells.A, strict_schema=True)  # first plan for this setting
    assert strict.schema is not None
    assert set(strict.schema["$defs"]["B"]["properties"]) == {"name"}
    assert isinstance(validator_for(strict).validate('{"b": {"name": "Al"}}').b, cells.B)


def test_what_a_literal_or_metadata_says_is_no_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a review: ``Literal["answer"]`` noted the global ``answer``, which a
    notebook's ``answer = model.parse(...)`` rebinds on every call: every call planned
    anew (19 ms for 200 fields). A 3,000-character value was "nests too deeply"."""
    import sys
    import types

    from outlines_lmstudio._late_names import late_names

    cells = types.ModuleType("notebook_cells_3")
    monkeypatch.setitem(sys.modules, cells.__name__, cells)
    exec(
        "from __future__ import annotations\nimport dataclasses\n"
        "from typing import Annotated, Literal\nimport pydantic\n"
        "answer = 1\nprice = 2\n"
        "@dataclasses.dataclass\nclass Reply:\n"
        "    kind: Literal['answer', 'question']\n"
        "    cost: Annotated[int, pydantic.Field(description='price')]\n"
        f"    deep: Literal['{'-' * 3000}1']\n",
        cells.__dict__,
    )
    noted = {name for _, name, _ in late_names(cells.Reply)}
    assert "answer" not in noted
    assert "price" not in noted
    assert {"Literal", "Annotated"} <= noted
    first = plan_output(cells.Reply)
    cells.__dict__.update(answer=3, price=4)  # rebound, as by a notebook's assignments
    assert plan_output(cells.Reply) is first


def test_names_read_through_a_module_or_a_parent_s_module_are_followed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by a review: ``models.B`` after ``importlib.reload(models)`` (the same module
    object, a new ``B``), and a TypedDict's annotation inherited from a parent in another
    module (read there, not in the child's module), kept the old ``B``."""
    import sys
    import types

    models = types.ModuleType("late_models")
    app = types.ModuleType("late_app")
    for module in (models, app):
        monkeypatch.setitem(sys.modules, module.__name__, module)
    td = "from typing_extensions import TypedDict\n"
    future = "from __future__ import annotations\n"
    parent = "class B(TypedDict):\n    old: int\nclass Parent(TypedDict):\n    b: B\n"
    exec(future + td + parent, models.__dict__)
    exec(
        future + "import dataclasses\n" + td + "import late_models\n"
        "@dataclasses.dataclass\nclass A:\n    b: late_models.B\n"
        "class Child(late_models.Parent):\n    n: int\n",
        app.__dict__,
    )
    for kept in (plan_output(app.A), plan_output(app.Child)):
        assert kept.schema is not None
        assert set(kept.schema["$defs"]["B"]["properties"]) == {"old"}
    exec("class B(TypedDict):\n    new: str\n", models.__dict__)  # as a reload does
    for again in (plan_output(app.A), plan_output(app.Child)):
        assert again.schema is not None
        assert set(again.schema["$defs"]["B"]["properties"]) == {"new"}


def test_a_genson_builder_is_named_as_a_schema_given_as_data() -> None:
    """Found by a review: messages named it by its repr (``<genson.schema.builder...>``)."""
    from outlines_lmstudio._type_names import output_type_name

    builder = SchemaBuilder()
    builder.add_object({"a": "x"})
    assert output_type_name(builder) == "JSON schema"
    builder.add_schema({"title": "Row"})
    assert output_type_name(builder) == "JSON schema 'Row'"


def test_classes_of_other_libraries_are_refused_with_what_to_use() -> None:
    """Found by a probe: a Pydantic v1 model was told Pydantic models are supported (after
    Pydantic's warning about mixing v1 and v2), attrs and msgspec classes got the generic
    list, a SQLModel table class made parse return rows that break its rules (SQLModel
    builds them unvalidated), and an abstract model was sent, its reply a bare TypeError."""
    import abc
    import warnings

    import attrs
    import msgspec
    from pydantic import v1

    class V1Person(v1.BaseModel):
        name: str

    @attrs.define
    class AttrsPerson:
        name: str

    class MsgPerson(msgspec.Struct):
        name: str

    class Shape(pydantic.BaseModel, abc.ABC):
        @abc.abstractmethod
        def area(self) -> float: ...

    table_base: type[pydantic.BaseModel] = type(
        "SQLModel", (pydantic.BaseModel,), {"__module__": "sqlmodel.main"}
    )

    class Hero(table_base):  # type: ignore[valid-type,misc]
        name: str

    class Book(lms.BaseModel):
        title: str

    Hero.model_config["table"] = True  # as SQLModel does for table=True
    cases = {
        V1Person: "is a Pydantic v1 model (pydantic.v1.BaseModel), which Pydantic 2 cannot "
        "write a JSON schema for or validate with: make it subclass pydantic.BaseModel.",
        AttrsPerson: "is an attrs class, which Pydantic cannot read: write it as a dataclass",
        MsgPerson: "is a msgspec Struct, which Pydantic cannot read: pass its JSON schema as a "
        "dict (msgspec.json.schema(...))",
        Shape: "is an abstract class (abstract: area), which can never be made from a reply",
        # the SDK's own structured-response class (found by a probe running its example)
        Book: "is the lmstudio SDK's BaseModel (a msgspec Struct), which Pydantic cannot read: "
        "pass Book.model_json_schema() (what the SDK sends for it)",
        Hero: "is a SQLModel table class, whose rows SQLModel builds without validating them",
    }
    for output_type, says in cases.items():
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # Pydantic's own v1/v2 warning: not reached
            with pytest.raises(UnsupportedOutputTypeError) as info:
                plan_output(output_type)
        assert f"The output type {output_type.__qualname__} {says}" in str(info.value)
    table_base.model_config["table"] = False  # type: ignore[typeddict-unknown-key]
    assert plan_output(table_base).kind == "json"

    class OwnAttribute(pydantic.BaseModel):  # found by a review: an "attrs class"
        __attrs_attrs__: typing.ClassVar[tuple[str, ...]] = ("mine",)
        name: str

    assert plan_output(OwnAttribute).kind == "json"


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        (r"^(?=A)[A-Z]+$", "lookaround"),
        (r"^(?<!x)a$", "lookaround"),
        (r"^(a)\1$", "backreference"),
    ],
)
def test_a_schema_pattern_no_engine_constrains_is_refused_as_the_engines_refusals_are(
    pattern: str, why: str
) -> None:
    """Found by an audit of issue 17, which asks for lookarounds to be refused with an
    ``UnsupportedOutputTypeError`` naming the keyword, its pointer and the engines: they
    were an ``InvalidSchemaError`` naming only the pattern (it is still one: ``parse``
    cannot check a reply against it). A ``patternProperties`` key, which no engine reads,
    stays a schema error."""

    class Ticket(pydantic.BaseModel):  # Pydantic's own Rust regex refuses it
        model_config = pydantic.ConfigDict(regex_engine="python-re")
        code: str = pydantic.Field(pattern=pattern)

    schema = {"type": "object", "properties": {"code": {"type": "string", "pattern": pattern}}}
    for output_type in (schema, Ticket):
        with pytest.raises(UnsupportedOutputTypeError) as info:
            plan_output(output_type)
        # Pydantic's python-re validator can check a reply: only the dict's is both
        assert isinstance(info.value, InvalidSchemaError) is (output_type is schema)
        message = str(info.value)
        assert (
            "can constrain the JSON-schema keyword 'pattern' at /properties/code/pattern" in message
        )
        assert why in message
        if output_type is schema:
            assert "Write the pattern without it" in message
    keyed = {"type": "object", "patternProperties": {pattern: {"type": "string"}}}
    with pytest.raises(InvalidSchemaError) as refused:
        plan_output(keyed)
    assert not isinstance(refused.value, UnsupportedOutputTypeError)


def test_abstract_classes_inside_an_output_type_are_refused_with_where() -> None:
    """Found by an audit: an abstract model as a field's type (or a list's item) was sent,
    and every reply failed in ``parse`` with a bare ``TypeError`` from Pydantic making it.
    A validator of the user's that reads the field first may make a subclass: left to it."""
    import abc
    import dataclasses

    class Shape(pydantic.BaseModel, abc.ABC):
        name: str

        @abc.abstractmethod
        def area(self) -> float: ...

    class Square(Shape):
        def area(self) -> float:
            return 1.0

    class Holder(pydantic.BaseModel):
        shape: Shape

    @dataclasses.dataclass
    class Box:
        shapes: list[Shape]

    class Row(typing_extensions.TypedDict):
        shape: Shape | None

    for output_type in (Holder, Box, Row, list[Shape], dict[str, Shape], Holder | int):
        with pytest.raises(UnsupportedOutputTypeError) as info:
            plan_output(output_type)
        message = str(info.value)
        assert "holds an abstract class" in message, message
        assert "(abstract: area)" in message
        assert "Use a subclass that implements them" in message
    with pytest.raises(UnsupportedOutputTypeError, match=r"at field 'shape' \(Shape\)"):
        plan_output(Holder)

    def square(value: object) -> object:
        return Square.model_validate(value)

    class Made(pydantic.BaseModel):
        shape: typing.Annotated[Shape, pydantic.BeforeValidator(square)]

    assert plan_output(Made).kind == "json"
    assert plan_output(list[Square]).kind == "json"


def test_late_names_through_aliases_classes_and_renamed_literals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by a second review: a module-level alias (``Items = list["B"]``) and a class
    reached by a dotted name (``Outer.Inner``) hid the name they read, so the old ``B`` was
    kept; ``Literal`` imported as ``L`` had its values read as names; a name read by many
    fields was noted once per field (1,200 checks a call for a 300-field dataclass)."""
    import sys
    import types

    from outlines_lmstudio._late_names import late_names

    cells = types.ModuleType("notebook_cells_4")
    monkeypatch.setitem(sys.modules, cells.__name__, cells)
    exec(
        "from __future__ import annotations\nimport dataclasses\nfrom typing import Literal as L\n"
        "from pydantic import BaseModel\n"
        "answer = 1\n" + _CELL_B + "Items = list['B']\n"
        "class Outer:\n    @dataclasses.dataclass\n    class Inner:\n        b: B\n"
        "@dataclasses.dataclass\nclass A:\n    items: Items\n    inner: Outer.Inner\n"
        "    kind: L['answer']\n" + "".join(f"    b{i}: B\n" for i in range(20)),
        cells.__dict__,
    )
    noted = [name for _, name, _ in late_names(cells.A)]
    assert sorted(noted) == sorted(set(noted))  # each once
    assert {"Items", "B", "Outer", "Inner", "L"} <= set(noted)
    assert "answer" not in noted
    first = plan_output(cells.A)
    cells.__dict__["answer"] = 2
    assert plan_output(cells.A) is first
    exec(_CELL_B.replace("x: int", "name: str"), cells.__dict__)
    again = plan_output(cells.A)
    assert again.schema is not None
    assert set(again.schema["$defs"]["B"]["properties"]) == {"name"}


@pytest.mark.parametrize(
    ("head", "body", "expression"),
    [
        (
            "import dataclasses, typing\n",
            "@dataclasses.dataclass\nclass A:\n    b: typing.List['B']\n",
            "A",
        ),
        (
            "from __future__ import annotations\nimport dataclasses, typing\n"
            "T = typing.TypeVar('T')\n",
            "@dataclasses.dataclass\nclass Box(typing.Generic[T]):\n    item: T\n    b: B\n",
            "Box[int]",
        ),
        (
            "from __future__ import annotations\nimport dataclasses\n",
            "Items = list['B']\n@dataclasses.dataclass\nclass A:\n    items: Items\n",
            "A",
        ),
    ],
    ids=["a ForwardRef in typing.List", "a generic dataclass's alias", "an alias alone"],
)
def test_a_late_name_read_only_one_way_is_followed(
    monkeypatch: pytest.MonkeyPatch, head: str, body: str, expression: str
) -> None:
    """``B`` read only through ``typing.List['B']`` (a ``ForwardRef``, no future import),
    through a field of a generic dataclass used as ``Box[int]``, or through an alias with
    no other field reading ``B``: after ``B``'s cell is run again the plan holds the new
    ``B`` (found by mutation testing: each way could be dropped unnoticed)."""
    import sys
    import types

    cells = types.ModuleType("notebook_cells_5")
    monkeypatch.setitem(sys.modules, cells.__name__, cells)
    cell_b = "@dataclasses.dataclass\nclass B:\n    x: int\n"
    exec(head + cell_b + body, cells.__dict__)
    first = plan_output(eval(expression, cells.__dict__))
    assert first.schema is not None
    assert first.schema["$defs"]["B"]["properties"] == {"x": {"title": "X", "type": "integer"}}
    exec(cell_b.replace("x: int", "name: str"), cells.__dict__)  # the cell run again
    again = plan_output(eval(expression, cells.__dict__))
    assert again.schema is not None
    assert again.schema["$defs"]["B"]["properties"] == {"name": {"title": "Name", "type": "string"}}


class _Leaf(typing.TypedDict):
    n: int


class _Holds(typing.TypedDict, total=False):
    optional: typing.NotRequired[_Leaf]
    required: typing.Required[_Leaf]
    me: typing.NotRequired["_Holds | None"]


def test_a_typing_typeddict_in_required_or_not_required_is_planned() -> None:
    """Found by a probe: rebuilding ``NotRequired[B]`` (a ``typing.TypedDict`` inside, made
    portable for Pydantic) raised "NotRequired accepts only a single type"."""
    from outlines_lmstudio._typed import validator_for

    plan = plan_output(_Holds)
    assert plan.schema is not None
    assert plan.schema["required"] == ["required"]
    value = validator_for(plan).validate('{"required": {"n": 1}, "me": {"required": {"n": 2}}}')
    assert value == {"required": {"n": 1}, "me": {"required": {"n": 2}}}


class _WithMapping(pydantic.BaseModel):
    count: int
    meta: collections.abc.Mapping[str, str]


@pydantic.with_config(pydantic.ConfigDict(extra="forbid"))
class _Closed(typing.TypedDict):
    a: int


def test_a_mapping_field_leaves_the_reply_strict_and_a_typeddict_keeps_its_config() -> None:
    """Found by a probe: a ``Mapping`` field (whose dict node Pydantic marks strict=False)
    made the whole reply lax, so ``"3"`` was taken for an int; and ``with_config`` on a
    ``typing.TypedDict`` was dropped when it was made portable (extra keys taken)."""
    from outlines_lmstudio._typed import _Invalid, validator_for

    strict = validator_for(plan_output(_WithMapping))
    assert strict.validate('{"count": 3, "meta": {"a": "b"}}') == _WithMapping(
        count=3, meta={"a": "b"}
    )
    with pytest.raises(_Invalid, match="count: Input should be a valid integer"):
        strict.validate('{"count": "3", "meta": {}}')
    plan = plan_output(_Closed)
    assert plan.schema is not None
    assert plan.schema["additionalProperties"] is False
    with pytest.raises(_Invalid, match="z: Extra inputs are not permitted"):
        validator_for(plan).validate('{"a": 1, "z": 2}')


class _Size(enum.Enum):
    SMALL = (1, 2)
    LARGE = (3, 4)


@pytest.mark.parametrize(
    ("output_type", "said", "not_said"),
    [
        (_Size, r"\(1, 2\) \(tuple\), an array: .*only scalar choices", "values' type"),
        (
            Choice([{"k": 1}, "b"]),
            r"\{'k': 1\} \(dict\), an object: .*union of Pydantic",
            "no JSON",
        ),
        (Choice([[1, 2], "x"]), r"\[1, 2\] \(list\), an array", "values' type"),
        (Choice(["a", Regex("x+")]), r"the Outlines term Regex.*grammar=True", "values' type"),
        (Literal[decimal.Decimal("1.5")], r"no JSON value.*the values' type \(Decimal\)", "array"),
        (Literal[print], r"no JSON value\. Give it JSON values \(str.*None\)\.$", "values' type"),
        (Literal[frozenset({1})], r"\(frozenset\), which is no JSON value", "values' type"),
    ],
)
def test_choices_that_are_no_scalars_are_refused_with_a_fix_that_works(
    output_type: Any, said: str, not_said: str
) -> None:
    """Found by a probe: an object or array choice was called "no JSON value", and the fix
    offered was to make the output type the values' type (tuple, dict, list, Regex), which is
    refused too."""
    with pytest.raises(UnsupportedOutputTypeError, match=said) as refused:
        plan_output(output_type)
    assert not_said not in str(refused.value)


def test_a_choice_holding_a_regex_is_taken_in_grammar_mode_as_its_refusal_says() -> None:
    plan = plan_output(Choice(["a", Regex("x+")]), grammar=True)
    assert plan.response_format == {"type": "gbnf", "gbnfGrammar": 'root ::= "a" | "x"+\n'}
