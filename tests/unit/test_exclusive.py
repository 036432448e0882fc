"""A ``oneOf`` whose branches exclude each other is not loose (`_exclusive`)."""

from __future__ import annotations

import itertools
from typing import Annotated, Any, Literal

import jsonschema
import pydantic
import pytest

from outlines_lmstudio._dialects import ENGINES, dialect_schema, engine_findings
from outlines_lmstudio._exclusive import exclusive_branches
from outlines_lmstudio._output import plan_output

_CAT: dict[str, Any] = {
    "type": "object",
    "properties": {"kind": {"const": "cat"}, "meows": {"type": "integer"}},
    "required": ["kind", "meows"],
}
_DOG: dict[str, Any] = {
    "type": "object",
    "properties": {"kind": {"const": "dog"}, "barks": {"type": "integer"}},
    "required": ["kind"],
}
_OPTIONAL_TAG = {**_DOG, "required": ["barks"]}

EXCLUSIVE: list[tuple[str, dict[str, Any]]] = [
    ("types", {"oneOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]}),
    ("consts", {"oneOf": [{"const": "a"}, {"const": "b"}, {"enum": [1, 2]}]}),
    ("tags", {"oneOf": [_CAT, _DOG]}),
    (
        "tags by reference",
        {
            "$defs": {"Cat": _CAT, "Dog": _DOG},
            "oneOf": [{"$ref": "#/$defs/Cat"}, {"$ref": "#/$defs/Dog"}],
        },
    ),
    (
        "tags by enum",
        {
            "oneOf": [
                {**_CAT, "properties": {**_CAT["properties"], "kind": {"enum": ["cat", "kitten"]}}},
                {**_DOG, "properties": {**_DOG["properties"], "kind": {"enum": ["dog", "puppy"]}}},
            ]
        },
    ),
]

OVERLAPPING: list[tuple[str, dict[str, Any]]] = [
    ("integer and number", {"oneOf": [{"type": "integer"}, {"type": "number"}]}),
    ("one type list", {"oneOf": [{"type": ["string", "null"]}, {"type": "null"}]}),
    ("shared value", {"oneOf": [{"enum": ["a", "b"]}, {"enum": ["b", "c"]}]}),
    ("1 and 1.0", {"oneOf": [{"const": 1}, {"const": 1.0}]}),
    ("true and 1 (doubt counts as overlap)", {"oneOf": [{"const": True}, {"const": 1}]}),
    ("a tag not required", {"oneOf": [_CAT, _OPTIONAL_TAG]}),
    (
        "same tag",
        {"oneOf": [_CAT, {**_DOG, "properties": {**_DOG["properties"], "kind": {"const": "cat"}}}]},
    ),
    ("no tag", {"oneOf": [{"type": "object"}, {"type": "object"}]}),
    ("a branch that does not resolve", {"oneOf": [_CAT, {"$ref": "#/$defs/Nowhere"}]}),
    (
        "a branch beside its reference",
        {"$defs": {"Dog": _DOG}, "oneOf": [_CAT, {"$ref": "#/$defs/Dog", "type": "object"}]},
    ),
]


def _loose_one_of(schema: dict[str, Any]) -> list[str]:
    return [
        engine
        for engine in ENGINES
        for finding in engine_findings(schema, engine)
        if finding.keyword == "oneOf"
    ]


@pytest.mark.parametrize("schema", [s for _, s in EXCLUSIVE], ids=[n for n, _ in EXCLUSIVE])
def test_exclusive_branches_are_not_reported_loose(schema: dict[str, Any]) -> None:
    assert exclusive_branches(schema, schema["oneOf"])
    assert _loose_one_of(schema) == []
    assert dialect_schema(schema, "gguf", strict=True)
    assert dialect_schema(schema, "mlx", strict=True)


@pytest.mark.parametrize("schema", [s for _, s in OVERLAPPING], ids=[n for n, _ in OVERLAPPING])
def test_branches_that_may_overlap_stay_loose(schema: dict[str, Any]) -> None:
    assert not exclusive_branches(schema, schema["oneOf"])


@pytest.mark.parametrize(
    "schema",
    [s for _, s in OVERLAPPING if "resolve" not in _],
    ids=[n for n, _ in OVERLAPPING if "resolve" not in n],
)
def test_overlapping_branches_are_refused_under_strict(schema: dict[str, Any]) -> None:
    assert _loose_one_of(schema) == list(ENGINES)


_VALUES: list[Any] = [
    None, True, False, 0, 1, 1.0, 2, 2.5, "a", "b", "cat", "dog", "kitten", [], {},
    {"kind": "cat", "meows": 1}, {"kind": "dog"}, {"kind": "dog", "barks": 1, "meows": 2},
    {"kind": "puppy", "barks": 1}, {"kind": "kitten", "meows": 1}, {"meows": 1},
]  # fmt: skip


@pytest.mark.parametrize("schema", [s for _, s in EXCLUSIVE], ids=[n for n, _ in EXCLUSIVE])
def test_no_value_matches_two_exclusive_branches(schema: dict[str, Any]) -> None:
    """What `exclusive_branches` claims, checked with jsonschema on values near the edges."""
    branches = [
        {**{k: v for k, v in schema.items() if k != "oneOf"}, **branch}
        for branch in schema["oneOf"]
    ]
    for value in _VALUES:
        matched = [jsonschema.Draft202012Validator(b).is_valid(value) for b in branches]
        assert sum(matched) <= 1, value
    for a, b in itertools.combinations(branches, 2):
        assert a != b


class _Cat(pydantic.BaseModel):
    kind: Literal["cat"]
    meows: int


class _Dog(pydantic.BaseModel):
    kind: Literal["dog"] = "dog"
    barks: int


class _Owner(pydantic.BaseModel):
    pet: Annotated[_Cat | _Dog, pydantic.Field(discriminator="kind")]
    pets: list[Annotated[_Cat | _Dog, pydantic.Field(discriminator="kind")]]


def test_a_discriminated_union_is_planned_under_strict_schema() -> None:
    """``strict_schema=True`` refused every Pydantic discriminated union ("oneOf ...
    'exactly one' is not enforced") and accepted the same union without its
    discriminator, sent as an anyOf (found by a probe)."""
    plan = plan_output(_Owner, strict_schema=True)
    assert plan.kind == "json"
    assert plan.response_format is not None
    schema = plan.response_format["jsonSchema"]
    assert _loose_one_of(schema) == []
    assert dialect_schema(schema, "gguf", strict=True) == dialect_schema(schema, "gguf")
