"""Schemas for the dialect tests: every output type we support, and generated ones.

`output_type_corpus` is every kind of output type the library turns into a JSON schema
(Pydantic models with constraints, unions, ``$defs``, recursion, Optional, Literal, Enum;
TypedDicts, dataclasses, genson builders, Outlines' simple types). `generated_schemas`
draws JSON schemas with Hypothesis. (hypothesis-jsonschema 0.23.1 cannot draw from a
meta-schema with the installed Hypothesis: its object strategy calls a removed API.)
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
from typing import Annotated, Any, Literal, Optional, TypedDict, Union

import pydantic
from genson import SchemaBuilder
from hypothesis import strategies as st
from outlines.types import Choice
from pydantic import Field

__all__ = ["generated_schemas", "output_type_corpus"]


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


class Size(enum.IntEnum):
    S = 1
    M = 2


class Code(pydantic.BaseModel):
    code: str = Field(pattern=r"[A-Z]{3}-\d+")


class Bounded(pydantic.BaseModel):
    age: int = Field(ge=0, le=130)
    score: float = Field(gt=0, lt=1, multiple_of=0.25)
    name: str = Field(min_length=1, max_length=20)
    tags: list[str] = Field(min_length=1, max_length=3)
    unique: set[int]


class Address(pydantic.BaseModel):
    street: str
    city: str
    postcode: Optional[str] = Field(default=None, pattern=r"^\d{5}$")


class Person(pydantic.BaseModel):
    """A person, with nested models ($defs) and every common field kind."""

    name: str
    age: Optional[int] = None
    colour: Colour
    size: Size = Size.M
    mood: Literal["happy", "sad"]
    level: Literal[1, 2, 3]
    home: Address
    others: list[Address] = []
    extra: dict[str, int] = {}
    pair: tuple[int, str]
    born: datetime.date
    seen: datetime.datetime
    wake: datetime.time
    anything: Any = None
    either: Union[int, str]
    email: Optional[str] = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$")


class Node(pydantic.BaseModel):
    """A recursive model (a tree)."""

    label: str
    children: list[Node] = []


class Cat(pydantic.BaseModel):
    kind: Literal["cat"]
    lives: int


class Dog(pydantic.BaseModel):
    kind: Literal["dog"]
    good: bool


class Pet(pydantic.BaseModel):
    pet: Annotated[Union[Cat, Dog], Field(discriminator="kind")]


class Reasoned(pydantic.BaseModel):
    reasoning: str
    answer: Literal["yes", "no"]


class Movie(TypedDict):
    title: str
    year: int


class Catalogue(TypedDict, total=False):
    movies: list[Movie]
    owner: str


@dataclasses.dataclass
class Point:
    x: float
    y: float
    label: Optional[str] = None


def _genson(*samples: object) -> SchemaBuilder:
    builder = SchemaBuilder()
    for sample in samples:
        builder.add_object(sample)
    return builder


def output_type_corpus() -> dict[str, Any]:
    """Every kind of output type that becomes a JSON schema, by a readable name."""
    return {
        "int": int,
        "float": float,
        "bool": bool,
        "str": str,
        "date": datetime.date,
        "time": datetime.time,
        "datetime": datetime.datetime,
        "Literal[str]": Literal["pos", "neg"],
        "Literal[mixed]": Literal["a", 1, True, None],
        "Enum": Colour,
        "IntEnum": Size,
        "Choice": Choice(["x", "y"]),
        "list[int]": list[int],
        "tuple[int, str]": tuple[int, str],
        "tuple[int, ...]": tuple[int, ...],
        "dict[str, float]": dict[str, float],
        "Optional[int]": Optional[int],
        "Union[int, str]": Union[int, str],
        "list[Literal]": list[Literal["a", "b"]],
        "Code (pattern)": Code,
        "Bounded": Bounded,
        "Address": Address,
        "Person": Person,
        "Node (recursive)": Node,
        "Pet (discriminated union)": Pet,
        "Reasoned": Reasoned,
        "Cat | Dog": Union[Cat, Dog],
        "list[Person]": list[Person],
        "Optional[Address]": Optional[Address],
        "TypedDict": Movie,
        "TypedDict (nested, total=False)": Catalogue,
        "dataclass": Point,
        "genson object": _genson({"name": "Ada", "age": 36, "tags": ["x"]}),
        "genson mixed": _genson({"a": 1}, {"a": "x", "b": [1.5, None]}),
        "genson list": _genson([{"k": True}]),
        "dict schema": {"type": "object", "properties": {"q": {"type": "string"}}},
        "dict schema with $schema": {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "array",
            "items": [{"type": "integer"}, {"type": "string"}],
            "additionalItems": False,
        },
        "str schema": '{"type": "string", "pattern": "^[a-z]+$"}',
        "type list with siblings": {"type": ["string", "null"], "maxLength": 5},
        "anyOf with siblings": {"anyOf": [{"type": "string"}, {"type": "integer"}], "minimum": 3},
        "annotation-only property": {
            "type": "object",
            "properties": {"free": {"title": "Free"}},
            "required": ["free"],
        },
        "empty object": {"type": "object", "additionalProperties": False},
        "ipv4 format": {"type": "string", "format": "ipv4"},
    }


_PATTERNS = ("^[a-z]+$", "[0-9]{2}", "a|b$", r"\d+\.\d", "^(?:ab)+", "(?=x)", r"\bx", "^a.c$")
_FORMATS = ("date", "date-time", "time", "uuid", "email", "uri", "ipv4", "hostname")
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from(["a", "b", "é"]))
_NAMES = st.sampled_from(["a", "b", "id", "name", "x-y"])


def _leaves() -> st.SearchStrategy[dict[str, Any]]:
    """Schemas without subschemas: scalar types with their keywords, enum, const..."""
    return st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["string", "integer", "number", "boolean", "null"]),
            "enum": st.lists(_SCALARS, min_size=1, max_size=4, unique_by=repr),
            "const": _SCALARS,
            "pattern": st.sampled_from(_PATTERNS),
            "minLength": st.integers(0, 4),
            "maxLength": st.integers(4, 9),
            "minimum": st.integers(-5, 5),
            "maximum": st.integers(5, 50),
            "exclusiveMinimum": st.integers(-5, 5),
            "multipleOf": st.sampled_from([2, 0.5]),
            "format": st.sampled_from(_FORMATS),
            "title": st.sampled_from(["T", "Title"]),
            "description": st.just("d"),
            "not": st.just({"type": "string"}),
        },
    )


def _extend(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Schemas whose subschemas are ``inner`` ones: objects, arrays and combinators."""
    objects = st.fixed_dictionaries(
        {"type": st.sampled_from(["object", ["object", "null"]])},
        optional={
            "properties": st.dictionaries(_NAMES, inner, max_size=4),
            "required": st.lists(_NAMES, max_size=3, unique=True),
            "additionalProperties": st.one_of(st.booleans(), inner),
            "minProperties": st.integers(0, 2),
            "patternProperties": st.just({"^z": {"type": "integer"}}),
        },
    )
    arrays = st.fixed_dictionaries(
        {"type": st.sampled_from(["array", ["array", "null"]])},
        optional={
            "items": st.one_of(inner, st.just(False)),
            "prefixItems": st.lists(inner, min_size=1, max_size=3),
            "minItems": st.integers(0, 3),
            "maxItems": st.integers(3, 6),
            "uniqueItems": st.booleans(),
            "contains": inner,
        },
    )
    combinators = st.fixed_dictionaries(
        {},
        optional={
            "anyOf": st.lists(inner, min_size=1, max_size=3),
            "oneOf": st.lists(inner, min_size=1, max_size=3),
            "allOf": st.lists(inner, min_size=1, max_size=2),
            "type": st.sampled_from(["string", "integer", ["integer", "string"]]),
            "minimum": st.integers(0, 3),
            "title": st.just("C"),
            "if": inner,
        },
    )
    return st.one_of(objects, arrays, combinators)


def _with_defs(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Sometimes move the schema under ``$defs`` and refer to it (also recursively)."""
    refer = {"$defs": {"s": schema}, "$ref": "#/$defs/s"}
    recursive = {
        "$defs": {
            "s": {
                "type": "object",
                "properties": {"v": schema, "next": {"$ref": "#/$defs/s"}},
                "required": ["v"],
            }
        },
        "$ref": "#/$defs/s",
    }
    dated = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
    return st.sampled_from([schema, schema, schema, refer, recursive, dated])


def generated_schemas() -> st.SearchStrategy[dict[str, Any]]:
    """JSON schemas (draft 2020-12) of every keyword the dialect module knows about.

    Nested at most three levels; ``$defs``, ``$ref``, recursion and ``$schema`` included.
    Not every draw is a valid schema; callers check it against the meta-schema.
    """
    return st.recursive(_leaves(), _extend, max_leaves=6).flatmap(_with_defs)
