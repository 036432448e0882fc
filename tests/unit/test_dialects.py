"""The engines' schema dialects: meaning-keeping rewrites, findings, early refusals."""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from outlines_lmstudio._dialects import (
    ENGINES,
    Engine,
    dialect_schema,
    engine_findings,
    engine_for_format,
)
from outlines_lmstudio._patterns import ANY
from outlines_lmstudio._rewrites import (
    REWRITES,
    anchor_patterns,
    any_value,
    close_tuples,
    close_unevaluated,
    cut_tuples,
    declare_required,
    distinct_ref_rules,
    drop_dollar_schema,
    drop_unsupported_formats,
    drop_unwritable_numbers,
    empty_object_properties,
    inline_deep_refs,
    inline_root_ref,
    inline_single_all_of,
    name_listed_keys,
    narrow_enums,
    normalise_schema,
    ref_rule_clashes,
    root_rule_clashes,
    shield_root_rules,
    split_type_lists,
    spread_one_of,
    unwritable_range,
    uuid_versions,
    whole_numbers,
)
from outlines_lmstudio._schema_checks import check_json_schema
from outlines_lmstudio._schema_walk import ANY_TYPES
from outlines_lmstudio._typed import json_validator
from outlines_lmstudio.errors import InvalidSchemaError, UnsupportedOutputTypeError
from tests.cpp_converter import CPP_CONVERTER, run_cpp_converter, run_cpp_converter_lines
from tests.unit._schema_corpus import generated_schemas

Rewrite = Callable[[dict[str, Any]], dict[str, Any]]

_STRINGS = st.sampled_from(
    ["", "a", "b", "ab", "abab", "xa", "abc", "12", "1.5", "2024-01-31", "x@y.io", "é", "z z"]
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-6, 60),
    st.sampled_from([0.5, 2.5, 3.0, -1.25]),
    _STRINGS,
)
_KEYS = st.sampled_from(["a", "b", "id", "name", "x-y", "z1", "v", "next"])
INSTANCES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_KEYS, inner, max_size=4)),
    max_leaves=8,
)


def valid(schema: dict[str, Any], value: Any) -> bool:
    return bool(json_validator(schema).is_valid(value))


def checked_or_none(schema: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return check_json_schema(schema)
    except InvalidSchemaError:
        return None


def keeps_valid_values(rewrite: Rewrite, schema: dict[str, Any], values: list[Any]) -> None:
    full = checked_or_none(schema)
    if full is None:
        return
    before = json.dumps(full)
    rewritten = rewrite(full)
    assert json.dumps(full) == before  # pure: the input is not modified
    problem: InvalidSchemaError | None = None
    try:
        check_json_schema(rewritten)  # still a valid schema
    except InvalidSchemaError as exc:
        problem = exc
    # A rewrite may spell out a contradiction the schema had implicitly (prefixItems and
    # items: false set a maxItems, below minItems): still the same values, checked below.
    assert problem is None or "can never be satisfied" in str(problem), problem
    for value in values:
        assert valid(rewritten, value) == valid(full, value), (rewritten, value)


@pytest.mark.parametrize("rewrite", REWRITES, ids=lambda f: f.__name__)
@settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(schema=generated_schemas(), values=st.lists(INSTANCES, min_size=1, max_size=8))
def test_each_rewrite_keeps_the_valid_values(
    rewrite: Rewrite, schema: dict[str, Any], values: list[Any]
) -> None:
    keeps_valid_values(rewrite, schema, values)


@settings(max_examples=150, deadline=None, database=None)
@given(
    names=st.lists(
        st.sampled_from(["a_b", "a-b", "a__b", "a.b", "a-b-2", "A_B", "_a_b_", "a b"]),
        min_size=1,
        max_size=6,
        unique=True,
    ),
    types=st.lists(st.sampled_from(["integer", "string", "null", "boolean"]), min_size=6),
    container=st.sampled_from(["$defs", "definitions"]),
    values=st.lists(INSTANCES, min_size=1, max_size=8),
)
def test_definitions_llama_cpp_would_give_one_rule_are_renamed(
    names: list[str], types: list[str], container: str, values: list[Any]
) -> None:
    """Found by a probe: ``#/$defs/a_b`` and ``#/$defs/a-b`` got one llama.cpp rule."""
    schema: dict[str, Any] = {
        container: {n: {"type": t} for n, t in zip(names, types, strict=False)},
        "type": "object",
        "properties": {
            f"p{i}": {"$ref": f"#/{container}/{n}"}
            for i, n in enumerate(names)
            if " " not in n  # (its path needs an escape: refused on its own)
        },
    }
    renamed = distinct_ref_rules(schema)
    assert ref_rule_clashes(renamed) == []
    keeps_valid_values(distinct_ref_rules, schema, values)
    for name, value in (("p0", 1), ("p0", "s"), ("p0", None)):
        if name in schema["properties"]:
            document = {name: value}
            assert valid(renamed, document) == valid(schema, document)


@settings(max_examples=100, deadline=None, database=None)
@given(
    names=st.lists(
        st.sampled_from(
            ["date_time", "integral_part", "decimal_part", "date time", "ref_defs_d", "a", "n"]
        ),
        min_size=1,
        max_size=5,
        unique=True,
    ),
    types=st.lists(st.sampled_from(["integer", "string", "null", "number"]), min_size=5),
    values=st.lists(INSTANCES, min_size=1, max_size=8),
)
def test_root_properties_llama_cpp_would_name_as_its_own_rules_are_shielded(
    names: list[str], types: list[str], values: list[Any]
) -> None:
    """Found by a probe: a root property ``date_time`` got llama.cpp's rule ``date-time``."""
    schema: dict[str, Any] = {
        "$defs": {"d": {"type": "integer", "maximum": 9}},
        "type": "object",
        "properties": {
            n: {"type": t, "maxLength": 3} if t == "string" else {"type": t}
            for n, t in zip(names, types, strict=False)
        }
        | {"r": {"$ref": "#/$defs/d"}},
        "required": names[:2],
    }
    shielded = shield_root_rules(schema)
    assert root_rule_clashes(shielded) == []
    assert (shielded is schema) == (root_rule_clashes(schema) == [])
    keeps_valid_values(shield_root_rules, schema, values)
    for value in ({names[0]: 1, names[-1]: "s", "r": 3}, {"r": 10}, {n: None for n in names}):
        assert valid(shielded, value) == valid(schema, value)


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(schema=generated_schemas(), values=st.lists(INSTANCES, min_size=1, max_size=8))
@example(  # the tuple rewrite makes its implicit contradiction explicit (maxItems 1)
    schema={"type": "array", "items": False, "minItems": 2, "prefixItems": [{}]},
    values=[None, [1], [1, 2]],
)
def test_normalising_keeps_the_valid_values(schema: dict[str, Any], values: list[Any]) -> None:
    keeps_valid_values(normalise_schema, schema, values)


@settings(max_examples=200, deadline=None, database=None)
@given(
    names=st.lists(st.sampled_from(["a", "b", "id"]), min_size=1, max_size=3, unique=True),
    spelling=st.sampled_from(["enum", "const", "ref"]),
    inner=st.sampled_from([None, {}, {"type": "integer"}, {"type": "string", "maxLength": 1}]),
    values=st.lists(INSTANCES, min_size=1, max_size=8),
)
def test_listed_key_names_become_properties(
    names: list[str], spelling: str, inner: dict[str, Any] | None, values: list[Any]
) -> None:
    """``dict[Literal["a", "b"], V]``: its ``propertyNames`` was sent, which no engine reads."""
    listed: dict[str, Any] = {"const": names[0]} if spelling == "const" else {"enum": names}
    schema: dict[str, Any] = {"type": "object", "propertyNames": listed}
    if spelling == "ref":
        schema = {**schema, "propertyNames": {"$ref": "#/$defs/K"}, "$defs": {"K": listed}}
    if inner is not None:
        schema["additionalProperties"] = inner
    rewritten = name_listed_keys(schema)
    assert "propertyNames" not in rewritten
    assert rewritten["additionalProperties"] is False
    for value in values:
        assert valid(rewritten, value) == valid(schema, value), (rewritten, value)


@pytest.mark.parametrize("odd", ["$ref", "", 'a"b', "a\\b", "line\nbreak"])
def test_key_names_an_engine_cannot_take_as_properties_stay_loose(odd: str) -> None:
    """``dict[Literal["$ref", "x"], int]`` became a ``$ref`` property, refused with "rename
    it, with a Pydantic alias", where the user wrote dict keys (found by a probe). Such
    names stay a ``propertyNames``, loose, checked by ``parse``."""
    schema: dict[str, Any] = {
        "type": "object",
        "propertyNames": {"enum": [odd, "x"]},
        "additionalProperties": {"type": "integer"},
    }
    assert name_listed_keys(schema) == schema
    assert dialect_schema(schema, None) == schema  # sent, not refused
    with pytest.raises(UnsupportedOutputTypeError, match=r"'propertyNames' at /propertyNames"):
        dialect_schema(schema, None, strict=True)


def test_an_old_draft_s_oneof_told_apart_by_a_later_keyword_stays_loose() -> None:
    """Found by a review: a draft 4 ``oneOf`` told apart by ``const`` alone (not a draft 4
    keyword: its validator, the reply's check, ignores it) was judged exclusive, and every
    reply matched both branches. The assertions a draft does not have are dropped."""
    branches = [
        {"type": "object", "properties": {"k": {"const": c}}, "required": ["k"]} for c in "ab"
    ]
    old = {"$schema": "http://json-schema.org/draft-04/schema#", "oneOf": branches}
    with pytest.raises(UnsupportedOutputTypeError, match=r"'oneOf'.*'exactly one'"):
        dialect_schema(old, None, strict=True)
    assert "const" not in json.dumps(dialect_schema(old, None))
    new = {"$schema": "https://json-schema.org/draft/2020-12/schema", "oneOf": branches}
    assert dialect_schema(new, None, strict=True)  # const is a keyword there: exclusive
    draft6 = {"$schema": "http://json-schema.org/draft-06/schema#", "if": {"const": 1}}
    assert "if" not in dialect_schema(draft6, None)
    # "draft-05" names no published draft: nothing is dropped (it raised a KeyError)
    draft5 = {"$schema": "http://json-schema.org/draft-05/schema#", "const": 1}
    assert dialect_schema(draft5, None) == {"const": 1}


def test_a_reference_with_escapes_is_refused_even_when_its_spelling_is_a_key() -> None:
    """Found by a review: with both ``Cat`` and ``C%61t`` under ``$defs``, the engines followed
    ``#/$defs/C%61t`` as written, and JSON Pointer (the reply's check) as decoded."""
    definitions = {"Cat": {"type": "string"}, "C%61t": {"type": "integer"}}
    schema = {
        "type": "object",
        "properties": {"p": {"$ref": "#/$defs/C%61t"}},
        "required": ["p"],
        "$defs": definitions,
    }
    with pytest.raises(UnsupportedOutputTypeError, match=r"'\$ref' at /properties/p/\$ref"):
        dialect_schema(schema, None)
    # At the root it is inlined by the library, as JSON Pointer reads it: Cat, a string.
    root = dialect_schema({"$ref": "#/$defs/C%61t", "$defs": definitions}, None)
    assert root["type"] == "string"


_ENUM_SIBLINGS = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["string", "integer", "number", "null", "array"]),
        "maxLength": st.integers(0, 3),
        "pattern": st.sampled_from(["^a", "b$", "[0-9]"]),
        "minimum": st.integers(-5, 30),
        "maxItems": st.integers(0, 2),
        "const": _SCALARS,
    },
)


@settings(max_examples=200, deadline=None, database=None)
@given(
    siblings=_ENUM_SIBLINGS,
    values=st.lists(INSTANCES, min_size=1, max_size=6, unique_by=json.dumps),
    others=st.lists(INSTANCES, max_size=4),
)
def test_narrowed_enums_keep_the_valid_values(
    siblings: dict[str, Any], values: list[Any], others: list[Any]
) -> None:
    """Checked on the enum's own values too, which random values rarely hit."""
    schema = {"type": "object", "properties": {"v": {**siblings, "enum": values}}}
    narrowed = narrow_enums(schema)
    for value in [*values, *others]:
        document = {"v": value}
        assert valid(narrowed, document) == valid(schema, document), (narrowed, value)


OLD_DRAFTS = st.sampled_from(
    [
        {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "array",
            "items": [{"type": "integer"}, {"type": "string"}],
            "additionalItems": False,
        },
        {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "array",
            "items": [{"type": "integer"}],
            "additionalItems": {"type": "string"},
        },
        {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "dependencies": {"a": ["b"], "b": {"required": ["id"]}},
        },
        {
            "$schema": "http://json-schema.org/draft-04/schema#",
            "minimum": 3,
            "exclusiveMinimum": True,
            "maximum": 9,
            "exclusiveMaximum": False,
        },
        {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "definitions": {"s": {"type": "string"}},
            "properties": {"a": {"$ref": "#/definitions/s", "maxLength": 1}},
        },
        {"$schema": "http://json-schema.org/schema#", "type": "object"},  # genson's
        {
            "$schema": "https://json-schema.org/draft/2019-09/schema",
            "type": "array",
            "items": [{"type": "integer"}, {"type": "string"}],
            "additionalItems": False,
        },
        {  # not a 2019-09 keyword: it is no constraint there (a review)
            "$schema": "https://json-schema.org/draft/2019-09/schema",
            "dependencies": {"a": ["b"], "b": {"required": ["id"]}},
        },
        {
            "$schema": "https://json-schema.org/draft/2019-09/schema",
            "$defs": {"s": {"type": "string"}},
            "properties": {"a": {"$ref": "#/$defs/s", "maxLength": 1}},  # siblings count
        },
    ]
)


@settings(max_examples=120, deadline=None, database=None)
@given(schema=OLD_DRAFTS, values=st.lists(INSTANCES, min_size=1, max_size=8))
def test_old_drafts_keep_their_meaning_without_dollar_schema(
    schema: dict[str, Any], values: list[Any]
) -> None:
    rewritten = drop_dollar_schema(schema)
    assert "$schema" not in json.dumps(rewritten)
    for value in values:
        assert valid(rewritten, value) == valid(schema, value), (rewritten, value)


@pytest.mark.parametrize(
    "dialect",
    [
        "http://json-schema.org/draft-07/schema#",
        "https://json-schema.org/draft/2019-09/schema",  # was: sent as it stood (a probe)
    ],
)
@pytest.mark.parametrize(
    ("value", "ok"), [([1, "a"], True), ([1], True), ([1, "a", "b"], False), (["a"], False)]
)
def test_draft_07_tuple_keeps_its_meaning(dialect: str, value: Any, ok: bool) -> None:
    tuple_07 = {
        "$schema": dialect,
        "type": "array",
        "items": [{"type": "integer"}, {"type": "string"}],
        "additionalItems": False,
    }
    rewritten = drop_dollar_schema(tuple_07)
    assert rewritten == {
        "type": "array",
        "prefixItems": [{"type": "integer"}, {"type": "string"}],
        "items": False,
    }
    assert valid(tuple_07, value) is ok
    assert valid(rewritten, value) is ok


@pytest.mark.parametrize(
    ("schema", "values"),
    [
        (
            {
                "$schema": "http://json-schema.org/draft-07/schema#",
                "dependencies": {
                    "a": {
                        "properties": {
                            "b": {"items": [{"type": "string"}], "additionalItems": False}
                        }
                    }
                },
            },
            [
                {"a": 1, "b": ["x"]},
                {"a": 1, "b": ["x", "y"]},
                {"b": ["x", "y"]},
                {"a": 1, "b": [3]},
            ],
        ),
        (
            {
                "$schema": "http://json-schema.org/draft-04/schema#",
                "dependencies": {
                    "a": {"properties": {"b": {"minimum": 0, "exclusiveMinimum": True}}}
                },
            },
            [{"a": 1, "b": 0}, {"a": 1, "b": 1}, {"b": 0}],
        ),
    ],
    ids=["draft 7 tuple", "draft 4 exclusive bound"],
)
def test_old_spellings_inside_dependencies_are_translated(
    schema: dict[str, Any], values: list[Any]
) -> None:
    """Found by a review: the schemas of ``dependencies`` were moved to ``dependentSchemas``
    untranslated (draft 7's tuple refused, draft 4's boolean bound sent as it was)."""
    rewritten = drop_dollar_schema(schema)
    for value in values:
        assert valid(rewritten, value) == valid(schema, value), (rewritten, value)
    assert "additionalItems" not in json.dumps(rewritten)
    assert "true" not in json.dumps(rewritten)


def test_engine_for_format() -> None:
    assert engine_for_format("gguf") == "llama.cpp"
    assert engine_for_format("GGUF") == "llama.cpp"
    assert engine_for_format("safetensors") == "outlines-core"
    assert engine_for_format("mlx") == "outlines-core"
    assert engine_for_format(None) == "outlines-core"


def test_examples_of_each_rewrite() -> None:
    assert narrow_enums(
        {"type": "string", "enum": ["a", 1, "bc"], "maxLength": 1, "title": "t"}
    ) == {
        "title": "t",
        "enum": ["a"],
    }
    assert narrow_enums({"const": 3, "minimum": 2}) == {"const": 3}
    assert narrow_enums({"enum": ["a", 1]}) == {"enum": ["a", 1]}  # nothing beside it
    # found by a probe: a boolean unevaluated* was refused, though both engines keep to it
    closed = {"type": "object", "properties": {"a": {}}, "unevaluatedProperties": False}
    assert close_unevaluated(closed) == {
        "type": "object",
        "properties": {"a": {}},
        "additionalProperties": False,
    }
    pair = {"prefixItems": [{}, {}], "unevaluatedItems": False}
    assert close_unevaluated(pair) == {"prefixItems": [{}, {}], "items": False}
    assert close_unevaluated({"items": {}, "unevaluatedItems": False}) == {"items": {}}
    assert close_unevaluated({"unevaluatedProperties": True}) == {}
    evaluating_ones: list[dict[str, Any]] = [{"allOf": [{}]}, {"$ref": "#"}, {"contains": {}}]
    for evaluating in evaluating_ones:
        left = {**evaluating, "unevaluatedItems": False}
        assert close_unevaluated(left) == left
    assert dialect_schema(closed, None, strict=True)["additionalProperties"] is False
    # found by a review: without prefixItems, no item at all (items: false is refused)
    assert close_unevaluated({"type": "array", "unevaluatedItems": False}) == {
        "type": "array",
        "maxItems": 0,
    }
    # found by a review: a listed name counts as evaluated by an enclosing node's
    # unevaluatedProperties, so nothing is listed where that keyword is
    enclosed = {
        "anyOf": [{"type": "object", "required": ["a"]}, {"type": "object"}],
        "unevaluatedProperties": False,
    }
    assert declare_required(enclosed) is enclosed
    assert (
        jsonschema.Draft202012Validator(dialect_schema(enclosed, None)).is_valid({"a": 1}) is False
    )
    # found by a review: uuid4 is not asserted, so an enum beside it keeps every value
    versioned = {"type": "string", "enum": ["abc", "x"], "format": "uuid4"}
    assert dialect_schema(versioned, None) == {"enum": ["abc", "x"]}
    # found by a probe: Pydantic's UUID4 in a schema given as a dict was sent as any string
    uuid4 = {"type": "string", "format": "uuid4"}
    assert dialect_schema(uuid4, None) == {"type": "string", "format": "uuid"}
    assert dialect_schema(uuid4, None, strict=True) == {"type": "string", "format": "uuid"}
    assert uuid_versions({"format": "uuid9"}) == {"format": "uuid9"}
    # found by a probe: format was not asserted, and a const beside an enum not checked
    dates = {"type": "string", "enum": ["2024-01-01", "nope"], "format": "date"}
    assert narrow_enums(dates) == {"enum": ["2024-01-01"]}
    assert narrow_enums({"enum": [1, 2], "const": 2}) == {"enum": [2]}
    assert narrow_enums({"enum": [1, 2], "const": 3}) == {"enum": [1, 2], "const": 3}  # refused
    assert dialect_schema(
        {"type": "object", "properties": {"to": {"enum": ["a@b.co", "x"], "format": "email"}}},
        None,
    ) == {"type": "object", "properties": {"to": {"enum": ["a@b.co"]}}}
    for no_value in (
        {"enum": [1, 2], "const": 3},
        {"type": "string", "const": "x", "format": "date"},
    ):
        with pytest.raises(InvalidSchemaError, match="accepts no value"):
            dialect_schema(no_value, None)
    empty = {"type": "string", "enum": ["abc"], "maxLength": 1}  # no value is valid
    assert narrow_enums({"anyOf": [empty, {"type": "integer"}]}) == {"anyOf": [{"type": "integer"}]}
    assert narrow_enums({"oneOf": [{"type": "null"}, empty]}) == {"oneOf": [{"type": "null"}]}
    assert narrow_enums({"anyOf": [empty]}) == {"anyOf": [empty]}  # refused as a whole
    assert drop_dollar_schema({"$schema": "x", "type": "string"}) == {"type": "string"}
    assert anchor_patterns({"type": "string", "pattern": "^a$"}) == {
        "type": "string",
        "pattern": "^a$",
    }
    # inside allOf too: the walk enters its branches (found by mutation testing)
    assert anchor_patterns({"allOf": [{"type": "string", "pattern": "ab"}, {"maxLength": 3}]}) == {
        "allOf": [{"type": "string", "pattern": f"^{ANY}*ab{ANY}*$"}, {"maxLength": 3}]
    }
    assert split_type_lists({"type": ["string", "null"], "maxLength": 3}) == {
        "anyOf": [{"type": "string", "maxLength": 3}, {"type": "null"}]
    }
    # each branch keeps its own type's keywords (found by mutation testing)
    properties = {"a": {"type": "integer"}}
    assert split_type_lists(
        {
            "type": ["object", "null"],
            "properties": properties,
            "required": ["a"],
            "additionalProperties": False,
        }
    ) == {
        "anyOf": [
            {
                "type": "object",
                "properties": properties,
                "required": ["a"],
                "additionalProperties": False,
            },
            {"type": "null"},
        ]
    }
    assert split_type_lists({"type": ["string", "null"], "format": "date"}) == {
        "anyOf": [{"type": "string", "format": "date"}, {"type": "null"}]
    }
    assert spread_one_of({"anyOf": [{"type": "integer"}], "minimum": 3, "title": "t"}) == {
        "title": "t",
        "anyOf": [{"type": "integer", "minimum": 3}],
    }
    assert inline_single_all_of({"allOf": [{"type": "string"}], "title": "t"}) == {
        "type": "string",
        "title": "t",
    }
    assert any_value({"title": "x"}) == {"title": "x", "anyOf": ANY_TYPES}
    assert empty_object_properties({"type": "object", "additionalProperties": False}) == {
        "type": "object",
        "additionalProperties": False,
        "properties": {},
    }
    assert close_tuples({"prefixItems": [{}, {}], "items": False, "maxItems": 5}) == {
        "prefixItems": [{}, {}],
        "maxItems": 2,
    }
    assert cut_tuples({"prefixItems": [{}, {"type": "integer"}], "maxItems": 1}) == {
        "prefixItems": [{}],
        "maxItems": 1,
    }
    assert drop_unsupported_formats({"type": "string", "format": "ipv4"}) == {"type": "string"}
    assert drop_unsupported_formats({"type": "string", "format": "date"})["format"] == "date"
    rooted = {"$ref": "#/$defs/A", "$defs": {"A": {"type": "integer"}}, "title": "r"}
    assert inline_root_ref(rooted) == {"type": "integer", "$defs": rooted["$defs"], "title": "r"}


# Each row of docs/output-types.md's engine table, as (schema, engine, status or None).
_ARRAY_RECURSION = {
    "$defs": {
        "t": {"anyOf": [{"type": "integer"}, {"type": "array", "items": {"$ref": "#/$defs/t"}}]}
    },
    "type": "object",
    "properties": {"p": {"type": "integer"}, "t": {"$ref": "#/$defs/t"}},
    "required": ["p", "t"],
}
"""A recursion through array items and an anyOf only (``Tree = int | list[Tree]``)."""

ROWS: list[tuple[str, dict[str, Any], str, str | None, str | None]] = [
    # constrained by both engines
    ("type", {"type": "integer"}, "llama.cpp", None, None),
    ("properties", {"type": "object", "properties": {"a": {"type": "string"}}}, "both", None, None),
    ("enum", {"enum": ["a", 1, None]}, "both", None, None),
    ("const", {"const": "a"}, "both", None, None),
    ("anyOf", {"anyOf": [{"type": "string"}, {"type": "integer"}]}, "both", None, None),
    ("items", {"type": "array", "items": {"type": "integer"}, "minItems": 1}, "both", None, None),
    ("prefixItems", {"type": "array", "prefixItems": [{"type": "integer"}]}, "both", None, None),
    ("pattern", {"type": "string", "pattern": "^[a-z]+$"}, "both", None, None),
    ("minLength", {"type": "string", "minLength": 2, "maxLength": 4}, "both", None, None),
    ("format date", {"type": "string", "format": "date"}, "both", None, None),
    ("format uuid", {"type": "string", "format": "uuid"}, "both", None, None),
    ("integer bounds", {"type": "integer", "minimum": 0, "maximum": 9}, "llama.cpp", None, None),
    (
        "exclusive integer bounds",
        {"type": "integer", "exclusiveMaximum": 9},
        "llama.cpp",
        None,
        None,
    ),
    ("minimum 123, one-sided", {"type": "integer", "minimum": 123}, "llama.cpp", None, None),
    ("maximum -123, one-sided", {"type": "integer", "maximum": -123}, "llama.cpp", None, None),
    (
        "minimum 105 beside a maximum",
        {"type": "integer", "minimum": 105, "maximum": 2000},
        "llama.cpp",
        None,
        None,
    ),
    (
        "properties '' below the root",
        {"type": "object", "properties": {"a": {"type": "object", "properties": {"": {}}}}},
        "both",
        None,
        None,
    ),
    # loose
    ("minimum", {"type": "integer", "minimum": 0}, "outlines-core", "minimum", "loose"),
    # llama.cpp's C++ converter writes these one-sided ranges wrongly: 100 passes a minimum
    # of 105 (the 0 after the first digit is dropped), -01 passes a maximum of -1
    ("one-sided minimum", {"type": "integer", "minimum": 105}, "llama.cpp", "minimum", "loose"),
    ("one-sided minimum", {"type": "integer", "minimum": 10**16}, "llama.cpp", "minimum", "loose"),
    (
        "one-sided maximum",
        {"type": "integer", "exclusiveMaximum": 0},
        "llama.cpp",
        "exclusiveMaximum",
        "loose",
    ),
    ("one-sided maximum", {"type": "integer", "maximum": -25}, "llama.cpp", "maximum", "loose"),
    (
        "minimum beside a maximum beyond 64 bits (read as -1)",
        {"type": "integer", "minimum": 0, "maximum": 2**64 - 1},
        "llama.cpp",
        "minimum",
        "loose",
    ),
    (
        "exclusiveMinimum beside minimum (ignored)",
        {"type": "integer", "minimum": 0, "exclusiveMinimum": 5},
        "llama.cpp",
        "exclusiveMinimum",
        "loose",
    ),
    ("number minimum", {"type": "number", "minimum": 0}, "llama.cpp", "minimum", "loose"),
    ("fractional minimum", {"type": "integer", "minimum": 0.5}, "llama.cpp", "minimum", "loose"),
    ("huge maximum", {"type": "integer", "maximum": 2**64}, "llama.cpp", "maximum", "loose"),
    ("multipleOf", {"type": "number", "multipleOf": 2}, "both", "multipleOf", "loose"),
    ("uniqueItems", {"type": "array", "uniqueItems": True}, "both", "uniqueItems", "loose"),
    ("oneOf", {"oneOf": [{"type": "number"}, {"type": "integer"}]}, "both", "oneOf", "loose"),
    ("format email", {"type": "string", "format": "email"}, "llama.cpp", "format", "loose"),
    ("format email", {"type": "string", "format": "email"}, "outlines-core", None, None),
    ("format ipv4", {"type": "string", "format": "ipv4"}, "both", "format", "loose"),
    (
        "pattern+length",
        {"type": "string", "pattern": "^a+$", "maxLength": 3},
        "both",
        "maxLength",
        "loose",
    ),
    (
        "minProperties",
        {"type": "object", "minProperties": 1},
        "llama.cpp",
        "minProperties",
        "loose",
    ),
    (
        "minProperties (outlines-core, a count above 1)",
        {"type": "object", "additionalProperties": {"type": "integer"}, "minProperties": 3},
        "outlines-core",
        "minProperties",
        "loose",
    ),
    (
        "maxProperties (outlines-core, a count above 0)",
        {"type": "object", "maxProperties": 2},
        "outlines-core",
        "maxProperties",
        "loose",
    ),
    ("minProperties 1", {"type": "object", "minProperties": 1}, "outlines-core", None, None),
    ("maxProperties 0", {"type": "object", "maxProperties": 0}, "outlines-core", None, None),
    ("contains", {"type": "array", "contains": {"const": 1}}, "both", "contains", "loose"),
    ("maxItems without items", {"type": "array", "maxItems": 0}, "llama.cpp", "maxItems", "loose"),
    ("minItems without items", {"type": "array", "minItems": 3}, "llama.cpp", "minItems", "loose"),
    ("maxItems without items", {"type": "array", "maxItems": 0}, "outlines-core", None, None),
    (
        "patternProperties",
        {"type": "object", "patternProperties": {"^x": {}}},
        "both",
        "patternProperties",
        "loose",
    ),
    (
        "contentSchema",  # Pydantic's Json[list[int]]: a string holding JSON
        {"type": "string", "contentSchema": {"type": "array", "items": {"type": "integer"}}},
        "both",
        "contentSchema",
        "loose",
    ),
    (
        "$ref siblings",
        {
            "$defs": {"s": {"type": "string"}},
            "type": "object",
            "properties": {"a": {"$ref": "#/$defs/s", "maxLength": 2}},
        },
        "both",
        "maxLength",
        "loose",
    ),
    (
        "recursion",
        {
            "$defs": {"n": {"type": "object", "properties": {"k": {"$ref": "#/$defs/n"}}}},
            "$ref": "#/$defs/n",
        },
        "outlines-core",
        "$ref",
        "loose",
    ),
    (
        "recursion",
        {
            "$defs": {"n": {"type": "object", "properties": {"k": {"$ref": "#/$defs/n"}}}},
            "$ref": "#/$defs/n",
        },
        "llama.cpp",
        None,
        None,
    ),
    # refused
    ("not", {"type": "string", "not": {"const": "a"}}, "both", "not", "refused"),
    ("if", {"if": {"type": "string"}, "then": {"maxLength": 2}}, "both", "if", "refused"),
    ("allOf", {"allOf": [{"type": "object"}, {"required": ["a"]}]}, "both", "allOf", "refused"),
    (
        "allOf (one branch the keywords beside it contradict: not merged, so dropped)",
        {"type": "string", "maxLength": 3, "allOf": [{"type": "string", "maxLength": 5}]},
        "both",
        "allOf",
        "refused",
    ),
    ("lookaround", {"type": "string", "pattern": "(?=a)a"}, "both", "pattern", "refused"),
    ("backreference", {"type": "string", "pattern": r"(a)\1"}, "both", "pattern", "refused"),
    (
        "items+prefixItems",
        {"type": "array", "prefixItems": [{"type": "integer"}], "items": {"type": "string"}},
        "both",
        "items",
        "refused",
    ),
    (
        "boolean schema",
        {"type": "object", "properties": {"a": False}},
        "both",
        "properties",
        "refused",
    ),
    ("boolean branch", {"anyOf": [True, {"type": "string"}]}, "both", "anyOf", "refused"),
    ("boolean branch", {"oneOf": [False, {"type": "string"}]}, "both", "oneOf", "refused"),
    ("boolean branch", {"allOf": [True]}, "both", "allOf", "refused"),
    (
        "boolean tuple item",
        {"type": "array", "prefixItems": [True, {"type": "integer"}]},
        "both",
        "prefixItems",
        "refused",
    ),
    (
        "property name with a quote",
        {"type": "object", "properties": {'say "hi"': {"type": "integer"}}},
        "outlines-core",
        "properties",
        "refused",
    ),
    (
        "property name with a backslash",
        {"type": "object", "properties": {"a\\b": {"type": "integer"}}},
        "outlines-core",
        "properties",
        "refused",
    ),
    (
        "property name with a line break",
        {"type": "object", "properties": {"a\nb": {"type": "integer"}}},
        "outlines-core",
        "properties",
        "refused",
    ),
    (  # llama.cpp's C++ converter escapes the name ("\\" included since 2024)
        "property name with a quote",
        {"type": "object", "properties": {'say "hi"': {"type": "integer"}}},
        "llama.cpp",
        None,
        None,
    ),
    (  # llama.cpp reads every "$ref" key as a reference: a schema there fails the conversion
        "property named $ref",
        {"type": "object", "properties": {"$ref": {"type": "string"}}, "required": ["$ref"]},
        "llama.cpp",
        "properties",
        "refused",
    ),
    (
        "definition named $ref",
        {"$defs": {"$ref": {"type": "string"}}, "type": "integer"},
        "llama.cpp",
        "$defs",
        "refused",
    ),
    (
        "dependentRequired named $ref",
        {"type": "object", "dependentRequired": {"$ref": ["a"]}},
        "llama.cpp",
        "dependentRequired",
        "refused",
    ),
    (
        "property named $ref",
        {"type": "object", "properties": {"$ref": {"type": "string"}}},
        "outlines-core",
        None,
        None,
    ),
    # llama.cpp's grammar parser refuses repeating more than 2000 times at least
    (
        "minLength over 2000",
        {"type": "string", "minLength": 2001},
        "llama.cpp",
        "minLength",
        "refused",
    ),
    ("minLength over 2000", {"type": "string", "minLength": 2001}, "outlines-core", None, None),
    ("minLength of 2000", {"type": "string", "minLength": 2000}, "llama.cpp", None, None),
    (
        "maxLength over 2000",
        {"type": "string", "maxLength": 5000},
        "llama.cpp",
        "maxLength",
        "loose",
    ),
    (  # the format is not sent (outlines-core does not know it): the length is read
        "minLength over 2000 beside ipv4",
        {"type": "string", "format": "ipv4", "minLength": 2001},
        "llama.cpp",
        "minLength",
        "refused",
    ),
    (
        "minItems over 2001",
        {"type": "array", "items": {"type": "integer"}, "minItems": 2002},
        "llama.cpp",
        "minItems",
        "refused",
    ),
    (
        "maxItems over 2001",
        {"type": "array", "items": {"type": "integer"}, "maxItems": 3000},
        "llama.cpp",
        "maxItems",
        "loose",
    ),
    (
        "pattern count over 2000",
        {"type": "string", "pattern": "^a{2001}$"},
        "llama.cpp",
        "pattern",
        "refused",
    ),
    (
        "pattern bound over 2000",
        {"type": "string", "pattern": "^a{0,3000}$"},
        "llama.cpp",
        "pattern",
        "loose",
    ),
    # Both engines follow a reference's path through object keys as written
    (
        "reference with an escape",
        {"$defs": {"a/b": {"type": "string"}}, "properties": {"x": {"$ref": "#/$defs/a~1b"}}},
        "both",
        "$ref",
        "refused",
    ),
    (
        "reference with an escape",
        {"$defs": {"a b": {"type": "string"}}, "properties": {"x": {"$ref": "#/$defs/a%20b"}}},
        "both",
        "$ref",
        "refused",
    ),
    (
        "reference through an array",
        {"type": "array", "prefixItems": [{"type": "string"}, {"$ref": "#/prefixItems/0"}]},
        "both",
        "$ref",
        "refused",
    ),
    (
        "reference to the root",
        {"type": "object", "properties": {"next": {"$ref": "#"}}},
        "llama.cpp",
        "$ref",
        "refused",
    ),
    (
        "reference to the root",
        {"type": "object", "properties": {"next": {"$ref": "#"}}},
        "outlines-core",
        None,
        None,
    ),
    (  # ... data included: a "#/..." value is rewritten in place ("input#/..."), others fail
        "const holding a $ref key",
        {"type": "object", "properties": {"a": {"const": {"$ref": "#/properties"}}}},
        "llama.cpp",
        "const",
        "refused",
    ),
    (
        "enum holding a $ref key",
        {"enum": [1, [{"k": {"$ref": 5}}]]},
        "llama.cpp",
        "enum",
        "refused",
    ),
    (
        "examples holding a $ref key",
        {"type": "string", "examples": [{"$ref": "https://example.com/s.json"}]},
        "llama.cpp",
        "examples",
        "refused",
    ),
    (
        "default holding a $ref key",
        {"type": "object", "default": {"$ref": "#/nope"}},
        "llama.cpp",
        "default",
        "refused",
    ),
    (
        "examples holding a $ref key",
        {"type": "string", "examples": [{"$ref": "https://example.com/s.json"}]},
        "outlines-core",
        None,
        None,
    ),
    # sent with its pattern (test_a_time_format_is_sent_as_the_pattern_it_stands_for)
    ("format time, without a pattern", {"type": "string", "format": "time"}, "both", None, None),
    (  # the converter reads every "$ref" key of the JSON (found by a probe)
        "extension keyword holding a $ref key",
        {"type": "string", "x-source": {"$ref": "#/components/schemas/Name"}},
        "llama.cpp",
        "x-source",
        "refused",
    ),
    (
        "extension keyword holding a $ref key",
        {"type": "string", "x-source": {"$ref": "#/components/schemas/Name"}},
        "outlines-core",
        None,
        None,
    ),
    (  # ... one that resolves is resolved, as OpenAPI's components are (a review)
        "extension keywords holding references that resolve",
        {
            "type": "object",
            "properties": {"pet": {"$ref": "#/components/schemas/Pet"}},
            "components": {
                "schemas": {
                    "Pet": {"type": "object", "properties": {"o": {"$ref": "#/$defs/O"}}},
                }
            },
            "$defs": {"O": {"type": "string"}},
            "x-origin": {"$ref": "#/$defs/O"},
        },
        "llama.cpp",
        None,
        None,
    ),
    (  # draft 6 and 7: an $id that is a plain name names a place, the base stays (a review)
        "subschema with a plain-name $id and a reference inside",
        {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "definitions": {
                "country": {"type": "string"},
                "address": {
                    "$id": "#address",
                    "type": "object",
                    "properties": {"country": {"$ref": "#/definitions/country"}},
                },
            },
            "properties": {"home": {"$ref": "#/definitions/address"}},
        },
        "both",
        None,
        None,
    ),
    (
        "subschema with the root's own $id and a reference inside",
        {
            "$id": "https://example.com/s.json",
            "$defs": {
                "c": {"type": "string"},
                "a": {
                    "$id": "https://example.com/s.json",
                    "properties": {"c": {"$ref": "#/$defs/c"}},
                },
            },
            "properties": {"a": {"$ref": "#/$defs/a"}},
        },
        "both",
        None,
        None,
    ),
    (  # a reference inside resolves against the $id (found by a probe)
        "subschema with its own $id and a reference inside",
        {
            "$defs": {"B": {"type": "string"}},
            "properties": {
                "x": {
                    "$id": "https://example.com/x",
                    "$defs": {"B": {"type": "integer"}},
                    "properties": {"y": {"$ref": "#/$defs/B"}},
                }
            },
        },
        "both",
        "$id",
        "refused",
    ),
    (  # draft 4 spells it "id": it was sent, and only parse failed (found by a probe)
        "subschema with its own draft-4 id and a reference inside",
        {
            "$schema": "http://json-schema.org/draft-04/schema#",
            "definitions": {"B": {"type": "string"}},
            "properties": {
                "x": {
                    "id": "https://example.com/x",
                    "definitions": {"B": {"type": "integer"}},
                    "properties": {"y": {"$ref": "#/definitions/B"}},
                }
            },
        },
        "both",
        "$id",
        "refused",
    ),
    (  # "id" is no keyword after draft 4: an annotation, left alone
        "subschema with an id after draft 4 and a reference inside",
        {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "definitions": {"B": {"type": "string"}},
            "properties": {
                "x": {
                    "id": "https://example.com/x",
                    "properties": {"y": {"$ref": "#/definitions/B"}},
                }
            },
        },
        "both",
        None,
        None,
    ),
    (
        "subschema with its own $id, no reference inside",
        {"properties": {"x": {"$id": "https://example.com/x", "type": "string"}}},
        "both",
        None,
        None,
    ),
    (  # two rules in one name, under a definition the rename does not reach (a probe)
        "references llama.cpp gives one rule",
        {
            "properties": {
                "p": {"$defs": {"a_b": {"type": "integer"}, "a-b": {"type": "string"}}},
                "x": {"$ref": "#/properties/p/$defs/a_b"},
                "y": {"$ref": "#/properties/p/$defs/a-b"},
            }
        },
        "llama.cpp",
        "$ref",
        "refused",
    ),
    (
        "references llama.cpp gives one rule, renamed",
        {
            "$defs": {"a_b": {"type": "integer"}, "a-b": {"type": "string"}},
            "properties": {"x": {"$ref": "#/$defs/a_b"}, "y": {"$ref": "#/$defs/a-b"}},
        },
        "llama.cpp",
        None,
        None,
    ),
    (
        "examples without a $ref key",
        {"type": "string", "examples": [{"ref": 1}, "x"]},
        "llama.cpp",
        None,
        None,
    ),
    ("integer enum beyond 64 bits", {"enum": [2**64 + 1, 3]}, "outlines-core", "enum", "refused"),
    ("integer const beyond 64 bits", {"const": -(2**63) - 1}, "outlines-core", "const", "refused"),
    ("integer enum within 64 bits", {"enum": [2**64 - 1, -(2**63)]}, "outlines-core", None, None),
    ("integer enum beyond 64 bits", {"enum": [2**64 + 1]}, "llama.cpp", None, None),
    ("object enum", {"enum": [{"a": 1}]}, "outlines-core", "enum", "refused"),
    ("object enum", {"enum": [{"a": 1}]}, "llama.cpp", None, None),
    (
        "enum siblings (beside a reference: not narrowed)",
        {
            "$defs": {"s": {"type": "string"}},
            "enum": [["a"], [1]],
            "items": {"$ref": "#/$defs/s"},
        },
        "both",
        "items",
        "loose",
    ),
    (
        "enum siblings narrowed",
        {"type": "integer", "enum": [1, 9], "maximum": 5},
        "both",
        None,
        None,
    ),
    (
        "recursive $ref through no object property",
        _ARRAY_RECURSION,
        "outlines-core",
        "$ref",
        "refused",
    ),
    (
        "recursive $ref through no object property",
        _ARRAY_RECURSION,
        "llama.cpp",
        None,
        None,
    ),
    (
        "recursive $ref through additionalProperties",
        {
            "$defs": {
                "v": {
                    "anyOf": [
                        {"type": "string"},
                        {"type": "object", "additionalProperties": {"$ref": "#/$defs/v"}},
                    ]
                }
            },
            "$ref": "#/$defs/v",
        },
        "outlines-core",
        "$ref",
        "refused",
    ),
    (
        "maxLength of 2**31 or more (not sent)",
        {"type": "string", "maxLength": 2**31},
        "both",
        "maxLength",
        "loose",
    ),
    ("maxLength 3.0 (sent as 3)", {"type": "string", "maxLength": 3.0}, "both", None, None),
    (  # found by mutation testing
        "required names missing from properties, beside patternProperties",
        {
            "type": "object",
            "properties": {"a": {"type": "string"}},
            "patternProperties": {"^c": {"type": "string"}},
            "required": ["a", "b"],
        },
        "both",
        "required",
        "loose",
    ),
    (  # found by a probe: said "loose", yet never written, so every reply failed
        "required names missing from properties (listed by a rewrite)",
        {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a", "b"]},
        "both",
        None,
        None,
    ),
    (
        "unsatisfiable enum",
        {"type": "string", "enum": ["ab"], "maxLength": 1},
        "both",
        "enum",
        "empty",
    ),
]


@pytest.mark.parametrize(("row", "schema", "engines", "keyword", "status"), ROWS)
def test_engine_table_rows(
    row: str, schema: dict[str, Any], engines: str, keyword: str | None, status: str | None
) -> None:
    chosen: tuple[Engine, ...] = (
        ENGINES
        if engines == "both"
        else (engine_for_format("gguf" if engines == "llama.cpp" else "mlx"),)
    )
    for engine in chosen:
        findings = engine_findings(schema, engine)
        if keyword is None:
            assert [f for f in findings if f.status == "refused"] == [], (row, engine)
            assert not [f for f in findings if f.keyword == row.split()[0]], (row, engine)
        else:
            assert any(f.keyword == keyword and f.status == status for f in findings), (
                row,
                engine,
                findings,
            )


def test_a_root_property_named_empty_is_refused_for_llama_cpp() -> None:
    """llama.cpp's converter named its rule "root": the grammar asked for a bare integer."""
    schema = {"type": "object", "properties": {"": {"type": "integer"}}, "required": [""]}
    with pytest.raises(UnsupportedOutputTypeError, match="named ''"):
        dialect_schema(schema, "gguf")
    assert dialect_schema(schema, "mlx") == schema


def test_refusal_names_keyword_pointer_engine_and_ways_out() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string", "not": {"const": ""}}}}
    with pytest.raises(UnsupportedOutputTypeError) as info:
        dialect_schema(schema, "gguf")
    message = str(info.value)
    assert "'not'" in message
    assert "/properties/a/not" in message
    assert "llama.cpp" in message
    assert "grammar=True" in message
    assert "retries" in message
    assert isinstance(info.value, TypeError)


@pytest.mark.parametrize(
    ("pattern", "grammar_mode"),
    [(r"\bfoo", False), (r"^a\Bb$", False), (r"^a++$", False), (r"\Aab", True)],
)
def test_grammar_mode_is_advised_for_a_pattern_only_where_it_takes_it(
    pattern: str, grammar_mode: bool
) -> None:
    """Found by a probe: ``\b`` in a pattern was told to try grammar mode's Regex (the CLI's
    ``--regex``), which refuses it as well."""
    from outlines_lmstudio._grammar import regex_to_gbnf

    with pytest.raises(UnsupportedOutputTypeError) as info:
        dialect_schema({"type": "string", "pattern": pattern}, None)
    assert ("grammar=True" in str(info.value)) is grammar_mode
    told = "write the pattern without it (grammar mode's Regex cannot hold it either)"
    assert (told in str(info.value)) is not grammar_mode
    try:
        regex_to_gbnf(pattern)
    except ValueError:
        assert not grammar_mode
    else:
        assert grammar_mode


def test_strict_refuses_loose_keywords_only_when_asked() -> None:
    schema = {"type": "integer", "multipleOf": 5}
    assert dialect_schema(schema, "gguf") == schema
    with pytest.raises(
        UnsupportedOutputTypeError, match=r"does not enforce .*multipleOf.*/multipleOf"
    ):
        dialect_schema(schema, "gguf", strict=True)
    with pytest.raises(UnsupportedOutputTypeError, match="outlines-core"):
        dialect_schema(schema, "mlx", strict=True)


def test_unknown_engine_checks_both() -> None:
    schema = {"enum": [{"a": 1}, {"b": 2}]}
    assert dialect_schema(schema, "gguf") == schema
    with pytest.raises(UnsupportedOutputTypeError, match="LM Studio's outlines-core engine"):
        dialect_schema(schema, None)


def test_a_keyword_the_engines_refuse_for_other_reasons_names_one() -> None:
    """Found by a review: "Neither..." with llama.cpp's reason alone."""
    with pytest.raises(UnsupportedOutputTypeError, match=r"^LM Studio's llama.cpp engine") as info:
        dialect_schema({"enum": [{"$ref": "#/x"}, 1]}, None)
    # Found by a probe: an MLX model's call was refused for llama.cpp, with no word of why.
    assert "The schema is checked for both engines, since which one the model uses" in str(
        info.value
    )


def test_a_keyword_both_engines_refuse_names_both() -> None:
    """Was: "LM Studio's llama.cpp engine cannot constrain" for an MLX model's schema."""
    schema = {"type": "string", "not": {"const": ""}}
    with pytest.raises(
        UnsupportedOutputTypeError,
        match=r"^Neither of LM Studio's engines \(llama.cpp, outlines-core\) can constrain ",
    ):
        dialect_schema(schema, None)
    with pytest.raises(
        UnsupportedOutputTypeError,
        match=r"^Neither of LM Studio's engines \(llama.cpp, outlines-core\) enforces ",
    ):
        dialect_schema({"type": "integer", "multipleOf": 5}, None, strict=True)


_OBJECT_PARTS = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["object", "integer"]),
        "properties": st.dictionaries(
            _KEYS, st.sampled_from([{"type": "integer"}, {"type": "string"}, {}]), max_size=2
        ),
        "required": st.lists(_KEYS, max_size=2, unique=True),
        "additionalProperties": st.sampled_from([False, {"type": "integer"}]),
        "title": st.just("t"),
    },
)


@settings(max_examples=200, deadline=None, database=None)
@given(
    rest=_OBJECT_PARTS,
    branch=_OBJECT_PARTS,
    values=st.lists(INSTANCES, min_size=1, max_size=6),
)
def test_merged_all_of_keeps_the_valid_values(
    rest: dict[str, Any], branch: dict[str, Any], values: list[Any]
) -> None:
    keeps_valid_values(inline_single_all_of, {**rest, "allOf": [branch]}, values)


@settings(max_examples=200, deadline=None, database=None)
@given(
    rest=_OBJECT_PARTS,
    branches=st.lists(_OBJECT_PARTS, min_size=1, max_size=2),
    key=st.sampled_from(["anyOf", "oneOf"]),
    values=st.lists(INSTANCES, min_size=1, max_size=6),
)
@example(  # additionalProperties beside the anyOf forbids the branch's property
    rest={"type": "object", "additionalProperties": False},
    branches=[{"properties": {"a": {"type": "integer"}}}],
    key="anyOf",
    values=[{}, {"a": 1}],
)
def test_spread_any_of_keeps_the_valid_values(
    rest: dict[str, Any], branches: list[dict[str, Any]], key: str, values: list[Any]
) -> None:
    keeps_valid_values(spread_one_of, {**rest, key: branches}, values)


def test_a_tuple_bounded_below_its_prefix_items() -> None:
    """Both engines write exactly one item per prefixItems entry, ignoring min/maxItems:
    beside maxItems 1, two entries gave only invalid arrays (now cut to one), and a
    minItems above their number cannot be met (refused, naming minItems)."""
    pair = {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}]}
    for engine in (None, "gguf", "mlx"):
        sent = dialect_schema({**pair, "maxItems": 1}, engine)
        assert sent["prefixItems"] == [{"type": "integer"}]
        with pytest.raises(UnsupportedOutputTypeError, match="'minItems' at /minItems"):
            dialect_schema({**pair, "minItems": 3}, engine)
        dialect_schema({**pair, "minItems": 2, "maxItems": 2}, engine)  # exactly the pair


def test_one_branch_all_of_beside_its_own_keywords_is_merged() -> None:
    """The engines read the properties beside an allOf and drop its branch."""
    base = {"properties": {"a": {"type": "integer"}}, "required": ["a"]}
    schema = {
        "type": "object",
        "allOf": [{"type": "object", **base}],
        "properties": {"b": {"type": "string"}},
        "required": ["b"],
    }
    sent = dialect_schema(schema, None)
    assert "allOf" not in sent
    assert sent["properties"] == {"a": {"type": "integer"}, "b": {"type": "string"}}
    assert sorted(sent["required"]) == ["a", "b"]
    # A $ref branch is kept as a $ref with the keywords beside it (reported loose there).
    ref = {"$defs": {"x": base}, "allOf": [{"$ref": "#/$defs/x"}], "minProperties": 1}
    assert dialect_schema(ref, None)["$ref"] == "#/$defs/x"


def test_one_branch_all_of_is_not_merged_under_additional_properties() -> None:
    """``additionalProperties: false`` reads only the properties beside it: this schema
    takes ``{}`` alone. Merged, it took ``{"id": 0}`` (found by the property test above)."""
    branch = {"type": "object", "properties": {"id": {"type": "integer"}}}
    for schema in (
        {"additionalProperties": False, "allOf": [branch]},
        {"properties": {"id": {"type": "integer"}}, "allOf": [{"additionalProperties": False}]},
        {"patternProperties": {"^x": {}}, "allOf": [{"unevaluatedProperties": False}]},
    ):
        keeps_valid_values(inline_single_all_of, schema, [{}, {"id": 0}, {"x": 1}])
        assert "allOf" in inline_single_all_of(schema)
        with pytest.raises(UnsupportedOutputTypeError, match="'allOf'"):
            dialect_schema(schema, None)


def test_dollar_schema_never_sent() -> None:
    schema = {"$schema": "http://json-schema.org/schema#", "type": "object", "properties": {}}
    assert "$schema" not in dialect_schema(schema, None)


def test_unanchored_pattern_is_sent_anchored_with_search_meaning() -> None:
    sent = dialect_schema({"type": "string", "pattern": r"[A-Z]{3}-\d+"}, None)
    pattern = sent["pattern"]
    assert pattern.startswith("^")
    assert pattern.endswith("$")
    assert re.search(pattern, "see ABC-12 here")
    assert not re.search(pattern, "AB-12")


@pytest.mark.parametrize(
    ("schema", "where"),
    [
        (  # the root $ref is inlined before the check: the pointer is the user's still
            {"$ref": "#/$defs/x", "$defs": {"x": {"type": "string", "pattern": "(?<=a)b"}}},
            "/$defs/x/pattern",
        ),
        (  # oneOf is spread into anyOf before the check
            {"oneOf": [{"type": "integer"}, {"type": "string", "pattern": "(?!a)b"}]},
            "/oneOf/1/pattern",
        ),
        ({"type": "object", "properties": {"a": {"not": {"type": "string"}}}}, "/properties/a/not"),
    ],
)
def test_a_refusal_points_into_the_schema_the_user_wrote(
    schema: dict[str, Any], where: str
) -> None:
    with pytest.raises(UnsupportedOutputTypeError) as info:
        dialect_schema(schema, "gguf")
    assert f" at {where} (" in str(info.value)


@settings(max_examples=200, deadline=None, database=None)
@given(
    text=st.one_of(
        st.from_regex(
            r"\A[0-2][0-9]:[0-6][0-9]:[0-6][0-9](\.[0-9]{1,3})?(Z|z|[+-][0-2][0-9]:[0-5][0-9])?\Z"
        ),
        st.text(max_size=12),
    )
)
def test_a_time_format_is_sent_as_the_pattern_it_stands_for(text: str) -> None:
    """Found by a probe: outlines-core's regex for ``format: time`` (LM Studio's MLX engine)
    reads ``\\.`` as a backslash then any character, so ``"13:13:25\\d1"`` (not JSON)
    matched. Both engines take a pattern first; what it takes, the format check takes."""
    from outlines_core.json_schema import build_regex_from_schema

    schema = {"type": "string", "format": "time"}
    sent = dialect_schema(schema, None)
    assert sent["format"] == "time"
    regex = build_regex_from_schema(json.dumps(sent))
    assert re.fullmatch(regex, json.dumps("13:13:25Z"))
    assert re.fullmatch(regex, json.dumps("23:59:59.123+02:00"))
    assert not re.fullmatch(regex, '"13:13:25\\d1"')
    assert not re.fullmatch(regex, json.dumps("12:00:00." + "0" * 10 + "Z"))  # ends, at 9
    if re.fullmatch(regex, json.dumps(text)):
        assert json_validator(schema, formats=True).is_valid(text), text
    # A pattern of the user's own is left as it is (both engines read it first).
    own = dialect_schema({"type": "string", "format": "time", "pattern": "^1"}, None)
    assert own["pattern"] == dialect_schema({"type": "string", "pattern": "^1"}, None)["pattern"]


_WHOLE = st.sampled_from([0.0, 1.0, 2.0, 3.0, -2.0, 5.0, 1e19, 0.5])


@settings(max_examples=200, deadline=None, database=None)
@given(
    counts=st.dictionaries(
        st.sampled_from(["minLength", "maxLength", "minItems", "maxItems", "minProperties"]),
        st.sampled_from([0.0, 1.0, 2.0, 3.0]),
        max_size=3,
    ),
    bounds=st.dictionaries(st.sampled_from(["minimum", "exclusiveMaximum"]), _WHOLE, max_size=2),
    kind=st.sampled_from(["integer", "number", "string", "array", "object"]),
    values=st.lists(INSTANCES, min_size=1, max_size=6),
)
def test_whole_numbers_keep_the_valid_values(
    counts: dict[str, float], bounds: dict[str, float], kind: str, values: list[Any]
) -> None:
    keeps_valid_values(whole_numbers, {"type": kind, **counts, **bounds}, values)


def test_counts_and_bounds_with_a_zero_fraction_are_sent_as_integers() -> None:
    """Found by a probe: ``maxLength: 3.0`` (the integer 3 in JSON Schema) was sent as it
    was, and llama.cpp's C++ converter failed the prediction ("maxLength must be a
    non-negative integer"); so did minLength, minItems and maxItems."""
    schema = {
        "type": "object",
        "properties": {
            "code": {"type": "string", "minLength": 1.0, "maxLength": 3.0},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2.0},
            "n": {"type": "integer", "minimum": 5.0, "maximum": 9.5},
        },
    }
    sent = dialect_schema(schema, "gguf", strict=False)["properties"]
    assert sent["code"] == {"type": "string", "minLength": 1, "maxLength": 3}
    assert type(sent["code"]["maxLength"]) is int
    assert type(sent["tags"]["maxItems"]) is int
    assert type(sent["n"]["minimum"]) is int
    assert sent["n"]["maximum"] == 9.5  # a fraction stays: reported loose
    assert not [f for f in engine_findings(schema, "llama.cpp") if f.keyword == "minimum"]


@pytest.mark.parametrize(
    ("schema", "dropped"),
    [
        ({"type": "integer", "maximum": 2**63}, "maximum"),
        ({"type": "integer", "maximum": 1e19}, "maximum"),
        ({"type": "integer", "minimum": -(2**63) - 1}, "minimum"),
        ({"type": "integer", "exclusiveMaximum": 2**63 + 1}, "exclusiveMaximum"),
        ({"type": "integer", "minimum": 0, "maximum": 2**64 - 1}, "maximum"),
        ({"type": "string", "maxLength": 2**31}, "maxLength"),
        ({"type": "array", "items": {"type": "integer"}, "maxItems": 2**40}, "maxItems"),
        # Found by a probe: a whole float that large escaped both steps (sent as 1e+19).
        ({"type": "string", "maxLength": 1e19}, "maxLength"),
        ({"type": "array", "items": {"type": "integer"}, "maxItems": 1e300}, "maxItems"),
    ],
)
def test_numbers_llama_cpp_fails_on_are_reported_loose_and_not_sent(
    schema: dict[str, Any], dropped: str
) -> None:
    """Found by a probe (llama.cpp's C++ converter, which LM Studio runs): an integer's
    bound alone beyond 64 bits failed the conversion ("At least one of min_value or
    max_value must be set"), as did a maxLength or maxItems of 2**31 or more; the prediction
    failed although the docs called these keywords loose."""
    for engine in ("gguf", "mlx", None):
        sent = dialect_schema(schema, engine)
        assert dropped not in sent
        assert {k: v for k, v in schema.items() if k != dropped}.items() <= sent.items()
        with pytest.raises(UnsupportedOutputTypeError, match="Strict schema checking is on"):
            dialect_schema(schema, engine, strict=True)
    for name in ENGINES:
        assert any(f.keyword == dropped for f in engine_findings(schema, name)), name
    # A bound within 64 bits, and a number's bounds, are sent as they are.
    for kept in ({"type": "integer", "maximum": 2**63 - 1}, {"type": "number", "maximum": 1e19}):
        assert drop_unwritable_numbers(kept) == kept


_LONG_ONE_SIDED = [
    {"type": "integer", "minimum": 2**53},  # Pydantic's conint(ge=2**53)
    {"type": "integer", "minimum": 9_999_999_999_999_999},
    {"type": "integer", "exclusiveMinimum": 12_345_678_901_234_567},
    {"type": "integer", "maximum": -(10**16)},
    {"type": "integer", "exclusiveMaximum": -(2**62)},
    {"type": "integer", "minimum": 1_234_567_890_123_456.5},  # rounded up, as llama.cpp reads it
    # The ends of int64_t are "no bound" to the converter: each range is one-sided there
    # (found by a review: they were sent).
    {"type": "integer", "minimum": 2**53, "maximum": 2**63 - 1},
    {"type": "integer", "minimum": -(2**63), "maximum": -(2**53)},
    {"type": "integer", "minimum": -(2**63 - 1), "exclusiveMaximum": -(2**53) - 1},
    # The wide maximum is not sent, and the minimum left alone is written reversed.
    {"type": "integer", "minimum": 2**53, "maximum": 2**64},
    # Its magnitude overflows: "At least one of min_value or max_value must be set".
    {"type": "integer", "maximum": -(2**63)},
]


@pytest.mark.parametrize("schema", _LONG_ONE_SIDED)
def test_a_long_one_sided_integer_range_is_reported_loose_and_not_sent(
    schema: dict[str, Any],
) -> None:
    """Found by a probe: llama.cpp's C++ converter writes such a range with a repetition
    whose maximum is below its minimum (``[0-9]{16,15}``), and llama.cpp's grammar parser
    then makes rules until memory runs out (the probe's process took 21 GB before the OOM
    killer ended it): every call with ``conint(ge=2**53)`` would fail on LM Studio, or
    take the machine down. The docs called the bound loose."""
    for engine in ("gguf", "mlx", None):
        sent = dialect_schema(schema, engine)
        assert sent == {"type": "integer"}
        with pytest.raises(UnsupportedOutputTypeError, match="Strict schema checking is on"):
            dialect_schema(schema, engine, strict=True)
    assert any(f.keyword in schema for f in engine_findings(schema, "llama.cpp"))
    if CPP_CONVERTER:  # the range as sent: no reversed repetition (as written: one)
        grammar = run_cpp_converter(dialect_schema(schema, "gguf")).stdout
        assert grammar.startswith("OK")
        assert not _has_reversed_repetition(grammar)
        if all(abs(v) < 2**63 for v in schema.values() if isinstance(v, int | float)):
            assert _has_reversed_repetition(run_cpp_converter(schema).stdout)


def _has_reversed_repetition(grammar: str) -> bool:
    return any(int(high) < int(low) for low, high in re.findall(r"\{(\d+),(\d+)\}", grammar))


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "integer", "minimum": 10**15},  # 16 digits, written loose but not reversed
        {"type": "integer", "minimum": 999_999_999_999_999},  # 15 digits
        {"type": "integer", "minimum": -(2**62)},  # a negative minimum alone
        {"type": "integer", "maximum": 2**62},  # a positive maximum alone
        {"type": "integer", "minimum": 2**53, "maximum": 2**62},  # both: written exactly
    ],
)
def test_a_long_integer_range_llama_cpp_writes_unreversed_is_sent(schema: dict[str, Any]) -> None:
    assert drop_unwritable_numbers(schema) == schema
    if CPP_CONVERTER:
        assert not _has_reversed_repetition(run_cpp_converter(schema).stdout)


def test_the_reversed_range_check_agrees_with_llama_cpp() -> None:
    """Over 2,000 one-sided ranges of 1 to 19 digits, where a build of the C++ converter is
    given: a bound is dropped exactly where the converter writes a reversed repetition or
    fails, also with the other bound at an end of ``int64_t`` (found by a review)."""
    if not CPP_CONVERTER:
        # Without the build, the cases above and the known counts: 16 digits is where a
        # minimum over 1... starts to reverse, as the converter's 16 decimals give.
        assert unwritable_range(2 * 10**15, None)
        assert not unwritable_range(10**15, None)
        assert unwritable_range(None, -2 * 10**15)
        assert not unwritable_range(None, 2 * 10**15)
        assert not unwritable_range(2 * 10**15, 3 * 10**15)
        assert unwritable_range(-(2**63 - 1), -(2**53))  # negated: a minimum alone
        assert unwritable_range(-(2**63 - 1), None)  # the converter's own failure
        return
    rng = random.Random(11)
    schemas = []
    ends = (2**63 - 1, 2**63 - 2, -(2**63), -(2**63) + 1)  # the converter's "none", wrapping
    for _ in range(2000):
        digits = rng.randint(1, 19)
        value = min(rng.randint(10 ** (digits - 1), 10**digits - 1), 2**63 - 2)
        key = rng.choice(["minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"])
        schema: dict[str, Any] = {"type": "integer", key: -value if "ax" in key else value}
        if rng.random() < 0.3:  # the other side at an end of int64_t
            other = {"min": "maximum", "max": "minimum"}[key.lower()[-7:-4]]
            other = rng.choice([other, "exclusiveM" + other[1:]])
            schema[other] = rng.choice(ends)
        schemas.append(schema)
    grammars = run_cpp_converter_lines(schemas)
    failing = [g.startswith("ERR") or _has_reversed_repetition(g) for g in grammars]
    assert sum(failing) > 300  # both kinds are well present
    for schema, fails in zip(schemas, failing, strict=True):
        assert (drop_unwritable_numbers(schema) != schema) == fails, schema


def test_required_beside_and_in_any_of_branches_is_spread() -> None:
    """Found by a probe: "a name, and an email or a phone" was not spread (both sides set
    ``required``), and both engines then read branches of ``required`` alone, which any
    JSON value meets: Gemma 270M wrote an object with none of the properties."""
    properties = {"name": {"type": "string"}, "email": {"type": "string"}}
    schema = {
        "type": "object",
        "properties": {**properties, "phone": {"type": "string"}},
        "required": ["name"],
        "additionalProperties": False,
        "anyOf": [{"required": ["email"]}, {"required": ["phone"]}],
    }
    sent = dialect_schema(schema, None)
    assert [sorted(branch["required"]) for branch in sent["anyOf"]] == [
        ["email", "name"],
        ["name", "phone"],
    ]
    for branch in sent["anyOf"]:
        assert branch["type"] == "object"
        assert branch["additionalProperties"] is False
    keeps_valid_values(
        spread_one_of,
        schema,
        [{"name": "a"}, {"name": "a", "email": "e"}, {"phone": "p"}, {"x": 1}, "s", {}],
    )


def test_a_huge_minimum_count_written_as_a_float_is_refused_for_llama_cpp() -> None:
    """Found by a probe: ``minItems: 1e19`` passed, as ``2**70`` did not."""
    for schema in (
        {"type": "array", "items": {"type": "integer"}, "minItems": 1e19},
        {"type": "string", "minLength": 1e19},
    ):
        with pytest.raises(UnsupportedOutputTypeError, match="repetition of more than 2000"):
            dialect_schema(schema, "gguf")


def test_contains_is_not_spread_next_to_a_branch_that_counts_it() -> None:
    """Found by a probe: ``maxContains`` counts the items matching the ``contains`` beside
    it and is ignored without one; spread into its branch, it refused ``[1, 2]``."""
    schema = {
        "type": "array",
        "contains": {"type": "integer"},
        "anyOf": [{"maxContains": 1}, {"minItems": 5}],
    }
    keeps_valid_values(spread_one_of, schema, [[1, 2], [1], ["a"], [1, 2, 3, 4, 5], []])
    assert spread_one_of(schema) == schema


def _chain(levels: int) -> dict[str, Any]:
    """A chain of ``levels`` nested models, each a ``$ref`` (as Pydantic writes them)."""
    defs: dict[str, Any] = {"L0": {"type": "object", "properties": {"v": {"type": "integer"}}}}
    defs["L0"]["required"] = ["v"]
    for level in range(1, levels + 1):
        defs[f"L{level}"] = {
            "type": "object",
            "properties": {"a": {"$ref": f"#/$defs/L{level - 1}", "description": "inner"}},
            "required": ["a"],
        }
    return {**defs[f"L{levels}"], "$defs": defs}


def test_a_deep_chain_of_references_is_inlined_for_outlines_core() -> None:
    """outlines-core cuts any path past 3 references to ``{}``: a chain of six nested
    models got replies invalid four levels down, on every retry (found by a probe)."""
    from outlines_core.json_schema import build_regex_from_schema

    schema = _chain(5)
    document = {"a": {"a": {"a": {"a": {"a": {"v": 1}}}}}}
    sent = inline_deep_refs(schema)
    assert "$defs" not in sent
    assert "$ref" not in json.dumps(sent)
    assert sent["properties"]["a"]["description"] == "inner"  # annotations kept
    regex = build_regex_from_schema(json.dumps(sent), r"[ ]?")
    assert re.fullmatch(regex, json.dumps(document, separators=(",", ":")))
    cut = build_regex_from_schema(json.dumps(schema), r"[ ]?")
    assert not re.fullmatch(cut, json.dumps(document, separators=(",", ":")))  # why
    values: list[dict[str, Any]] = [document, {"a": {"a": {"a": {"a": {"a": {}}}}}}]
    for value in values:
        assert json_validator(sent).is_valid(value) == json_validator(schema).is_valid(value)


def test_a_chain_exactly_as_deep_as_outlines_core_follows_is_inlined() -> None:
    """Three references on one path are already cut by outlines-core: inlined; two are sent
    as they are (found by mutation testing: ``REF_DEPTH`` one more went unnoticed)."""
    schema = _chain(3)
    sent = inline_deep_refs(schema)
    assert "$ref" not in json.dumps(sent)
    assert sent == {
        "type": "object",
        "properties": {
            "a": {
                "type": "object",
                "properties": {
                    "a": {
                        "type": "object",
                        "properties": {"a": {**schema["$defs"]["L0"], "description": "inner"}},
                        "required": ["a"],
                        "description": "inner",
                    }
                },
                "required": ["a"],
                "description": "inner",
            }
        },
        "required": ["a"],
    }
    shallow = _chain(2)
    assert inline_deep_refs(shallow) is shallow


def test_shallow_recursive_and_exploding_references_stay() -> None:
    shallow = _chain(2)
    assert inline_deep_refs(shallow) is shallow  # sent as it is: fewer than 3 on any path
    tree = {
        "type": "object",
        "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/Tree"}}},
        "$defs": {"Tree": {"type": "object", "properties": {"k": {"$ref": "#/$defs/Tree"}}}},
    }
    assert inline_deep_refs(tree) == tree  # a recursive model keeps its references
    # Each level uses the one below twice: inlined, 2**30 objects.
    defs: dict[str, Any] = {"D0": {"type": "integer"}}
    for level in range(1, 31):
        inner = {"$ref": f"#/$defs/D{level - 1}"}
        defs[f"D{level}"] = {"type": "object", "properties": {"x": inner, "y": inner}}
    exploding = {"$ref": "#/$defs/D30", "$defs": defs}
    assert inline_deep_refs(exploding) is exploding


def test_a_recursive_definition_keeps_the_definitions_it_still_uses() -> None:
    chain = _chain(4)
    schema = {
        "type": "object",
        "properties": {"tree": {"$ref": "#/$defs/Tree"}, "deep": {"$ref": "#/$defs/L4"}},
        "$defs": {
            **chain["$defs"],
            "Tree": {
                "type": "object",
                "properties": {"k": {"$ref": "#/$defs/Tree"}, "leaf": {"$ref": "#/$defs/L0"}},
            },
        },
    }
    sent = inline_deep_refs(schema)
    assert set(sent["$defs"]) == {"Tree"}
    assert "$ref" not in json.dumps(sent["properties"]["deep"])
    assert sent["$defs"]["Tree"]["properties"]["leaf"] == chain["$defs"]["L0"]
    value = {"tree": {"k": {"leaf": {"v": 1}}}, "deep": _chain_value(4)}
    assert json_validator(sent).is_valid(value)
    assert json_validator(schema).is_valid(value)


def _chain_value(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"v": 1}
    for _ in range(levels):
        value = {"a": value}
    return value


def test_inlining_is_bounded_by_what_it_makes_not_what_the_root_reaches() -> None:
    """The guard counted only what the root reached: an unused definition, or one behind a
    reference with another keyword beside it, doubling at each of 18 levels, took 14 s
    and sent 14 MB (found by a review)."""
    defs: dict[str, Any] = {"D0": {"type": "integer"}}
    for level in range(1, 19):
        inner = {"$ref": f"#/$defs/D{level - 1}"}
        defs[f"D{level}"] = {"type": "object", "properties": {"x": inner, "y": inner}}
    for link in ({"$ref": "#/$defs/D18", "minProperties": 0}, {"type": "integer"}):
        chain = _chain(4)
        schema = {**chain, "properties": {**chain["properties"], "big": link}}
        schema["$defs"] = {**chain["$defs"], **defs}
        started = time.monotonic()
        sent = inline_deep_refs(schema)
        assert time.monotonic() - started < 5
        assert len(json.dumps(sent)) < 20 * len(json.dumps(schema))


def test_inlining_keeps_the_sent_depth_and_the_discriminator_mapping() -> None:
    """40 nested definitions became 81 levels, past the 64 allowed; a discriminator's
    mapping was left pointing at dropped definitions (found by a review)."""
    deep = _chain(40)
    assert inline_deep_refs(deep) is deep
    chain = _chain(4)
    schema = {
        **chain,
        "properties": {
            **chain["properties"],
            "pet": {
                "oneOf": [{"$ref": "#/$defs/L1"}, {"$ref": "#/$defs/L0"}],
                "discriminator": {"propertyName": "a", "mapping": {"x": "#/$defs/L1"}},
            },
        },
    }
    sent = inline_deep_refs(schema)
    assert set(sent["$defs"]) == {"L1"}  # kept for the mapping only
    assert "$ref" not in json.dumps(sent["properties"])


def test_a_reference_by_anchor_is_refused_as_such() -> None:
    """Found by a probe: '#pt' was told that only references inside the schema work."""
    schema = {
        "type": "object",
        "properties": {"p": {"$ref": "#pt"}},
        "$defs": {"P": {"$anchor": "pt", "type": "integer"}},
    }
    with pytest.raises(UnsupportedOutputTypeError, match=r"an anchor \('#pt'\) names no path"):
        dialect_schema(schema, None)
