"""Property tests: every JSON the emulator samples validates against its schema."""

from __future__ import annotations

import datetime
import json
import random
import re
import urllib.parse
from collections.abc import Callable
from typing import Any

import jsonschema
import lmstudio as lms
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outlines_lmstudio.testing import LMStudioEmulator
from outlines_lmstudio.testing._sampler import (
    JsonSampler,
    SchemaError,
    _tighten,
    count_tokens,
    plain_text,
    split_fragments,
    token_ids,
)

from .conftest import MLX, TEXT

NAMES = st.sampled_from(["name", "id", "tags", "score", "kind", "nested", "x", "é"])

scalars = st.one_of(
    st.just({"type": "string"}),
    st.builds(
        lambda lo, extra: {"type": "string", "minLength": lo, "maxLength": lo + extra},
        st.integers(0, 4),
        st.integers(0, 6),
    ),
    st.just({"type": "integer"}),
    st.builds(
        lambda lo, span: {"type": "integer", "minimum": lo, "maximum": lo + span},
        st.integers(-50, 50),
        st.integers(0, 5000),
    ),
    st.integers(-50, 50).map(lambda lo: {"type": "integer", "minimum": lo}),
    st.integers(-50, 50).map(lambda hi: {"type": "integer", "exclusiveMaximum": hi}),
    st.builds(
        lambda lo, span: {"type": "number", "minimum": lo, "exclusiveMaximum": lo + span},
        st.floats(-10, 10),
        st.floats(0.001, 100),
    ),
    st.just({"type": "number"}),
    st.just({"type": "boolean"}),
    st.just({"type": "null"}),
    st.lists(
        st.one_of(st.text(max_size=5), st.integers(-9, 9), st.booleans(), st.none()),
        min_size=1,
        max_size=4,
        unique_by=lambda v: (type(v).__name__, v),
    ).map(lambda values: {"enum": values}),
    st.sampled_from(["a", 1, True, None, "naïve"]).map(lambda v: {"const": v}),
    st.sampled_from(["date", "date-time", "email", "uuid"]).map(
        lambda f: {"type": "string", "format": f}
    ),
)


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": [r for r in required if r in properties],
    }


schemas = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.builds(
            lambda items, lo, extra: {
                "type": "array",
                "items": items,
                "minItems": lo,
                "maxItems": lo + extra,
            },
            children,
            st.integers(0, 2),
            st.integers(0, 3),
        ),
        st.builds(
            _object,
            st.dictionaries(NAMES, children, max_size=4),
            st.lists(NAMES, max_size=4, unique=True),
        ),
        st.lists(children, min_size=2, max_size=3).map(lambda options: {"anyOf": options}),
    ),
    max_leaves=8,
)


def _with_defs(schema: dict[str, Any]) -> dict[str, Any]:
    """Move the schema into $defs and point at it with $ref (as pydantic does)."""
    return {
        "type": "object",
        "properties": {"item": {"$ref": "#/$defs/Item"}},
        "required": ["item"],
        "$defs": {"Item": schema},
    }


SAMPLER = JsonSampler()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=schemas, use_defs=st.booleans(), seed=st.integers(0, 2**32))
def test_sampled_json_validates(schema: dict[str, Any], use_defs: bool, seed: int) -> None:
    if use_defs:
        schema = _with_defs(schema)
    rng = random.Random(seed)
    for _ in range(3):
        text = "".join(SAMPLER.sample(schema, rng))
        jsonschema.validate(json.loads(text), schema)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "additionalProperties": {}},  # outlines-core's regex wrote {12}
        {"type": "array", "items": True},
        {"type": ["object", "null"], "title": "maybe"},
        {"anyOf": [{"type": ["object", "null"]}, {"type": "array"}]},  # took ~1 min to index
    ],
    ids=repr,
)
def test_arrays_and_objects_of_anything_sample_valid_json(schema: dict[str, Any]) -> None:
    rng = random.Random(1)
    for _ in range(5):
        jsonschema.validate(json.loads("".join(JsonSampler().sample(schema, rng))), schema)
    assert _tighten(schema) != schema  # sampled as containers of scalars (a valid subset)


def test_pydantic_schema_with_refs_and_unions() -> None:
    from enum import Enum

    from pydantic import BaseModel

    class Colour(Enum):
        RED = "red"
        BLUE = "blue"

    class Part(BaseModel):
        name: str
        colour: Colour

    class Order(BaseModel):
        parts: list[Part]
        note: str | None
        count: int | float

    schema = Order.model_json_schema()
    rng = random.Random(0)
    outputs = {"".join(SAMPLER.sample(schema, rng)) for _ in range(20)}
    for text in outputs:
        Order.model_validate_json(text)
    assert len(outputs) > 10  # varied, not one fixed document


@pytest.mark.parametrize(
    "pattern", [r"^[^\x00-\x7F]{1,4}$", r"^[^\x00-\x7f]{2}$", r"^[^\x00-\u00ff]+$"]
)
def test_a_class_of_characters_outside_ascii_only_is_sampled(pattern: str) -> None:
    """The vocabulary held no character such a class allows (no escape names one), so the
    prediction failed for a valid schema the real engine answers (found by a probe)."""
    schema = {"type": "object", "properties": {"k": {"type": "string", "pattern": pattern}}}
    schema["required"] = ["k"]
    rng = random.Random(0)
    for _ in range(3):
        value = json.loads("".join(JsonSampler().sample(schema, rng)))
        jsonschema.validate(value, schema)
        assert not value["k"].isascii()


def test_outputs_end_and_stay_short() -> None:
    schema = {"type": "array", "items": {"type": "string"}}
    rng = random.Random(1)
    lengths = [len(SAMPLER.sample(schema, rng)) for _ in range(50)]
    assert max(lengths) < 400


def test_unbuildable_schema_is_a_schema_error() -> None:
    with pytest.raises(SchemaError):
        SAMPLER.automaton({"type": "string", "pattern": "(?<=a)b"})
    with pytest.raises(SchemaError):  # cached errors are raised again
        SAMPLER.automaton({"type": "string", "pattern": "(?<=a)b"})


def test_unbuildable_schema_fails_the_prediction(emu: LMStudioEmulator, client: lms.Client) -> None:
    bad = {"type": "json", "jsonSchema": {"type": "string", "pattern": "(?<=a)b"}}
    with pytest.raises(lms.LMStudioServerError, match="JSON schema"):
        client.llm.model(TEXT).respond("?", response_format=bad)


@settings(
    max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(schema=schemas)
def test_through_the_sdk(lmstudio_emulator: LMStudioEmulator, schema: dict[str, Any]) -> None:
    with lms.Client(lmstudio_emulator.api_host) as client:
        result = client.llm.model(TEXT).respond(
            "?", response_format={"type": "json", "jsonSchema": schema}
        )
    jsonschema.validate(json.loads(result.content), schema)


def test_same_request_same_output(emu: LMStudioEmulator, client: lms.Client) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    model = client.llm.model(TEXT)
    first = model.respond("one", response_format=schema).content
    assert model.respond("one", response_format=schema).content == first
    assert len({model.respond(f"n{i}", response_format=schema).content for i in range(5)}) > 1


def test_text_helpers() -> None:
    text = "Hello,  brave new\nworld!! extraordinarily"
    assert "".join(split_fragments(text)) == text
    assert len(token_ids(text)) == count_tokens(text) == len(split_fragments(text))
    tokens = plain_text("key", 0)
    assert tokens == plain_text("key", 0) != plain_text("key", 1)
    assert "".join(tokens)[-1] in ".!?"


def test_email_fields_under_repeated_arrays_sample_fast() -> None:
    """outlines-core's exact e-mail pattern made this schema's automaton take over 100 s
    (past the suite's 60 s timeout); the sampler narrows it to simple valid addresses."""
    person = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "format": "date"},
            "id": {"type": "string", "format": "email"},
            "nested": {"type": "string", "minLength": 4, "maxLength": 6},
        },
        "required": ["id"],
    }
    schema = {
        "type": "array",
        "items": {"type": "array", "items": person, "minItems": 2, "maxItems": 5},
        "minItems": 1,
        "maxItems": 3,
    }
    rng = random.Random(3)
    for _ in range(5):
        document = json.loads("".join(JsonSampler().sample(schema, rng)))
        jsonschema.validate(document, schema)
        emails = {"type": "string", "format": "email"}
        for item in (item for inner in document for item in inner):
            jsonschema.validate(item["id"], emails, format_checker=jsonschema.FormatChecker())
    for low, high in ((None, 40), (20, 22), (None, 13)):  # length bounds are kept
        bounded = {"type": "string", "format": "email", "minLength": low, "maxLength": high}
        bounded = {k: v for k, v in bounded.items() if v is not None}
        text = json.loads("".join(JsonSampler().sample(bounded, rng)))
        jsonschema.validate(text, bounded, format_checker=jsonschema.FormatChecker())


URI = {"type": "string", "format": "uri"}


@pytest.mark.parametrize("model_key", [TEXT, MLX])
@pytest.mark.parametrize(
    "schema",
    [
        {"type": "array", "items": URI},
        {"type": "object", "properties": {"links": {"type": "array", "items": URI}}},
        {"type": "array", "items": {"type": "array", "items": URI, "minItems": 1}},
        {"type": "array", "items": {**URI, "minLength": 30, "maxLength": 40}},
    ],
    ids=["list", "in an object", "lists", "bounded"],
)
def test_uri_lists_are_answered_in_time(
    client: lms.Client,
    sync_timeout: Callable[[float], None],
    model_key: str,
    schema: dict[str, Any],
) -> None:
    """outlines-core's ``uri`` pattern (``[^\\s]``: any character but a space) under an
    array made its automaton take minutes to build, a core busy while the SDK timed out
    (found by a probe, GGUF and MLX alike). The emulator writes simple valid URIs."""
    sync_timeout(10)
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    for i in range(3):
        structured = {"type": "json", "jsonSchema": schema}
        value = json.loads(
            client.llm.model(model_key).respond(f"Links {i}?", response_format=structured).content
        )
        jsonschema.validate(value, schema, format_checker=checker)
        for uri in _strings(value):
            parts = urllib.parse.urlsplit(uri)
            assert parts.scheme in ("http", "https"), uri
            assert parts.netloc, uri


ANY_OR_NULL = {"anyOf": [{}, {"type": "null"}]}


@pytest.mark.parametrize("model_key", [TEXT, MLX])
@pytest.mark.parametrize(
    "schema",
    [
        {"type": "array", "items": ANY_OR_NULL},
        {"type": "array", "items": {"oneOf": [{}, {"type": "null"}]}},
        {"type": "array", "items": {"allOf": [{}]}},
        {"type": "array", "items": {"type": "array", "items": {"anyOf": [{}, {"type": "string"}]}}},
        {"type": "array", "prefixItems": [ANY_OR_NULL]},
        {"type": "object", "additionalProperties": ANY_OR_NULL},
        {"type": "array", "items": {"type": "object", "additionalProperties": ANY_OR_NULL}},
        {"type": "array", "items": {"$ref": "#/$defs/a"}, "$defs": {"a": ANY_OR_NULL}},
        {"type": "array", "items": {"anyOf": [ANY_OR_NULL, {"type": "integer"}]}},
        {  # seed 5145 of the fuzz
            "type": "array",
            "items": {
                "type": "array",
                "items": {
                    "anyOf": [
                        {
                            "anyOf": [
                                {"const": "b"},
                                {"type": "array", "items": {"type": "null"}},
                                {},
                            ]
                        },
                        {
                            "type": "array",
                            "items": {
                                "allOf": [
                                    {"type": "object", "properties": {"Über": {"type": "string"}}}
                                ]
                            },
                            "minItems": 2,
                            "maxItems": 4,
                        },
                    ]
                },
                "uniqueItems": True,
            },
            "minItems": 3,
            "maxItems": 3,
            "uniqueItems": True,
        },
    ],
    ids=[
        "anyOf items",
        "oneOf items",
        "allOf items",
        "nested items",
        "prefixItems",
        "additionalProperties",
        "map items",
        "definition",
        "nested anyOf",
        "fuzzed",
    ],
)
def test_any_value_members_are_answered_in_time(
    client: lms.Client,
    sync_timeout: Callable[[float], None],
    model_key: str,
    schema: dict[str, Any],
) -> None:
    """``{}`` (any value) as a member of an ``anyOf``, ``oneOf`` or ``allOf`` under an array
    or a map: outlines-core writes any value as every JSON document nested a few levels deep,
    and its automaton took minutes to build while the SDK timed out (found by a differential
    fuzz, GGUF and MLX alike; a bare ``{}`` there was narrowed to scalars already)."""
    sync_timeout(10)
    model = client.llm.model(model_key)
    for i in range(3):
        structured = {"type": "json", "jsonSchema": schema}
        value = json.loads(model.respond(f"Values {i}?", response_format=structured).content)
        jsonschema.validate(value, schema)


def _strings(value: Any) -> list[str]:
    """Return the strings inside a JSON value (not its keys)."""
    if isinstance(value, str):
        return [value]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return [text for item in items for text in _strings(item)]


def test_dates_and_times_are_ones_pydantic_takes() -> None:
    """outlines-core's date-time pattern allows years of any length and day 31 in any month."""

    class Event(pydantic.BaseModel):
        when: datetime.datetime
        day: datetime.date
        at: datetime.time
        maybe: datetime.datetime | None = None

    schema = Event.model_json_schema()
    rng = random.Random(5)
    for _ in range(40):
        text = "".join(JsonSampler().sample(schema, rng))
        event = Event.model_validate_json(text)
        assert 1000 <= event.when.year <= 2999


@pytest.mark.parametrize(
    "schema",
    [
        {"const": {"type": "integer", "minimum": 1}},
        {"enum": [{"type": "string", "maxLength": 2}, 3]},
    ],
    ids=["const", "enum"],
)
def test_const_and_enum_values_that_look_like_schemas_are_kept(
    emu: LMStudioEmulator, client: lms.Client, schema: dict[str, Any]
) -> None:
    """A ``const``/``enum`` value is data: narrowing it like a subschema changed the value
    the model had to write (``{"enum": [1, 2, ...]}`` for the const above)."""
    model = client.llm.model(TEXT)
    for i in range(4):
        wrapped = {"type": "json", "jsonSchema": schema}
        result = model.respond(f"value {i}", response_format=wrapped)
        jsonschema.validate(json.loads(result.content), schema)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "maxLength": 40},
        {"type": "string", "minLength": 2000},
        {"anyOf": [{"type": "string", "maxLength": 30}, {"type": "null"}]},
    ],
    ids=["maxLength", "minLength", "optional"],
)
def test_length_bounded_strings_are_answered_in_time(
    emu: LMStudioEmulator,
    client: lms.Client,
    sync_timeout: Callable[[float], None],
    schema: dict[str, Any],
) -> None:
    """outlines-core's automaton for a length-bounded string outside an object grows
    exponentially with the bound (``maxLength: 20`` took over a minute): the SDK timed out
    on a root ``Annotated[str, Field(max_length=40)]``. The emulator writes such strings
    from letters, digits and spaces within the bounds."""
    sync_timeout(10)
    result = client.llm.model(TEXT).respond(
        "?", response_format={"type": "json", "jsonSchema": schema}
    )
    jsonschema.validate(json.loads(result.content), schema)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "integer", "multipleOf": 7, "minimum": 100, "maximum": 110},
        {"type": "integer", "multipleOf": 7},
        {"type": "number", "multipleOf": 5, "exclusiveMinimum": 0},
    ],
    ids=repr,
)
def test_multiple_of_is_honoured(
    emu: LMStudioEmulator, client: lms.Client, schema: dict[str, Any]
) -> None:
    """outlines-core ignores ``multipleOf``: re-draws missed it (1 in 6 outputs of a bare
    ``multipleOf: 7``), and with bounds every output was out of them (``411``)."""
    model = client.llm.model(TEXT)
    for i in range(12):
        wrapped = {"type": "json", "jsonSchema": schema}
        result = model.respond(f"number {i}", response_format=wrapped)
        jsonschema.validate(json.loads(result.content), schema)


def test_bounds_with_no_multiple_inside_keep_the_bounds(client: lms.Client) -> None:
    """No multiple of 5 lies in (5, 8]: the emulator wrote any integer (0, 7116349582;
    found by a probe), where llama.cpp keeps integer bounds and leaves multipleOf loose."""
    schema = {"type": "integer", "exclusiveMinimum": 5, "maximum": 8, "multipleOf": 5}
    model = client.llm.model(TEXT)
    for i in range(12):
        wrapped = {"type": "json", "jsonSchema": schema}
        assert 5 < json.loads(model.respond(f"n {i}", response_format=wrapped).content) <= 8


def _nested(depth: int, wrap: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer"}
    for _ in range(depth):
        schema = wrap(schema)
    return schema


def _array_of(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item}


@pytest.mark.parametrize("depth", [11, 20, 63])
def test_deeply_nested_arrays_are_answered_without_exhausting_memory(
    emu: LMStudioEmulator,
    client: lms.Client,
    sync_timeout: Callable[[float], None],
    depth: int,
) -> None:
    """outlines-core writes an array's item schema twice, so its regex doubles per level:
    20 levels made its index allocate gigabytes and abort the process the emulator (and,
    with the pytest fixture, the whole test session) ran in. Deep arrays are answered with
    one item per level, which the regex holds once."""
    sync_timeout(10)
    schema = _nested(depth, _array_of)
    result = client.llm.model(TEXT).respond(
        "?", response_format={"type": "json", "jsonSchema": schema}
    )
    jsonschema.validate(json.loads(result.content), schema)


def test_shallow_arrays_keep_their_many_items() -> None:
    sampler = JsonSampler()
    schema = _nested(3, _array_of)
    lengths = set()
    for seed in range(30):
        value = json.loads("".join(sampler.sample(schema, random.Random(seed))))
        lengths.add(len(value))
    assert len(lengths) > 1  # not narrowed to one item: only deep nesting is


def test_maps_nested_too_deeply_fail_the_prediction_with_a_reason(
    emu: LMStudioEmulator, client: lms.Client
) -> None:
    schema = _nested(15, lambda value: {"type": "object", "additionalProperties": value})
    with pytest.raises(lms.LMStudioServerError, match="nests lists and maps too deeply"):
        client.llm.model(TEXT).respond("?", response_format={"type": "json", "jsonSchema": schema})


def test_objects_with_many_optional_properties_are_answered_in_time(
    emu: LMStudioEmulator, client: lms.Client, sync_timeout: Callable[[float], None]
) -> None:
    """outlines-core's regex grows with the square of an object's optional properties (and
    more): 5,000 of them (a generated schema) were never answered before the client's
    timeout. The emulator answers with the required ones and the first few optional ones."""
    sync_timeout(20)
    properties = {f"p{i}": {"type": "integer"} for i in range(5000)}
    schema = {"type": "object", "properties": properties, "required": ["p4999"]}
    result = client.llm.model(TEXT).respond(
        "?", response_format={"type": "json", "jsonSchema": schema}
    )
    value = json.loads(result.content)
    jsonschema.validate(value, schema)
    assert "p4999" in value


def test_optional_properties_are_narrowed_only_where_that_keeps_documents_valid() -> None:
    properties = {f"p{i}": {"type": "string"} for i in range(100)}
    narrowed = _tighten({"type": "object", "properties": properties, "required": ["p99"]})
    assert list(narrowed["properties"]) == [f"p{i}" for i in range(48)] + ["p99"]
    assert narrowed["additionalProperties"] is False
    counted = {"type": "object", "properties": properties, "minProperties": 60}
    assert _tighten(counted)["properties"] == properties  # fewer would break minProperties
    few = {"type": "object", "properties": {"a": {"type": "string"}}}
    assert _tighten(few) == few


@pytest.mark.parametrize(
    "pattern",
    [
        r"^[\u3041-\u3093]+$",
        r"^[\u03b1-\u03c9]{2}$",
        r"^[\u0400-\u04ff]+ [a-z]+$",
        "^[ぁ-ん]+$",
        r"^caf[\xe8-\xe9]$",  # how the library sends [éè]: U+0080-U+00FF as \xNN
        r"^[\xdf\xfc]+$",
    ],
)
def test_patterns_with_ranges_outside_ascii_are_answered(
    emu: LMStudioEmulator, client: lms.Client, pattern: str
) -> None:
    """The library sends such ranges as escapes (``[ぁ-ん]`` as ``[\\u3041-\\u3093]``, ``[éè]``
    as ``[\\xe8-\\xe9]``): the emulator's vocabulary lacked their characters, and the
    prediction failed ("vocabulary provided is incompatible with the regex", "missing tokens")."""
    schema = {"type": "string", "pattern": pattern}
    result = client.llm.model(TEXT).respond(
        "?", response_format={"type": "json", "jsonSchema": schema}
    )
    jsonschema.validate(json.loads(result.content), schema)


def test_the_kept_automatons_are_bounded() -> None:
    """Found by a probe: one automaton was kept for every schema ever asked for, so a
    long-running `emulator` command grew by about 44 kB a distinct schema, for good."""
    sampler = JsonSampler()
    sampler.kept = 3
    schemas = [{"type": "integer", "minimum": n} for n in range(5)]
    for schema in schemas[:3]:
        sampler.automaton(schema)
    sampler.automaton(schemas[0])  # used again: now the most recently used
    for schema in schemas[3:]:
        sampler.automaton(schema)
    assert [sampler.is_cached(s) for s in schemas] == [True, False, False, True, True]


def test_exponents_have_no_leading_zero() -> None:
    # llama.cpp's grammar writes an exponent as ``[eE] [-+]? integral-part``, without a
    # leading zero; outlines-core's regex allowed ``35E+01``, which a GGUF model never writes.
    sampler = JsonSampler()
    schema = {"type": "array", "items": {"type": "number"}, "minItems": 8}
    exponents = [
        exponent
        for seed in range(60)
        for exponent in re.findall(
            r"[eE][+-]?([0-9]+)", "".join(sampler.sample(schema, random.Random(seed)))
        )
    ]
    assert len(exponents) > 20  # the walk writes exponents...
    assert all(e == "0" or not e.startswith("0") for e in exponents), exponents  # ...as JSON's
