"""Schemas in the engines' dialect, end to end: what reaches LM Studio, and what comes back."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

import pydantic
import pytest

from outlines_lmstudio import InvalidSchemaError, UnsupportedOutputTypeError
from outlines_lmstudio.testing import LMStudioEmulator

from .conftest import TEXT_MODEL, MakeModel


class Ticket(pydantic.BaseModel):
    code: str = pydantic.Field(pattern=r"[A-Z]{3}-\d+")


def test_unanchored_pydantic_pattern_is_sent_anchored_and_parses(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """The emulator's engine (outlines-core) generates from what we send; parse validates."""
    ticket = make_model(TEXT_MODEL).parse("Open a ticket", Ticket)
    assert re.search(r"[A-Z]{3}-\d+", ticket.code)
    sent = emulator.predictions[-1].structured
    assert sent is not None
    pattern = sent["jsonSchema"]["properties"]["code"]["pattern"]
    assert pattern.startswith("^")
    assert pattern.endswith("$")
    assert r"\d" not in pattern  # llama.cpp's converter cannot read \d


def test_dollar_schema_is_never_sent(make_model: MakeModel, emulator: LMStudioEmulator) -> None:
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {"n": {"type": "integer"}},
        "required": ["n"],
    }
    value = make_model(TEXT_MODEL).parse("a number", schema)
    assert isinstance(value["n"], int)
    sent = emulator.predictions[-1].structured
    assert sent is not None
    assert "$schema" not in sent["jsonSchema"]


def test_a_field_with_only_keywords_no_draft_defines_takes_any_value(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """``{"ge": "x", "title": "X"}`` (Pydantic's ``x: object = Field(ge="x")``) means any
    value: validators ignore keywords no draft defines. It was sent as it is, and both
    engines refused it ("Unsupported JSON Schema structure"): the prediction failed."""
    schema = {
        "type": "object",
        "properties": {"x": {"ge": "x", "title": "X"}, "n": {"type": "integer"}},
        "required": ["x", "n"],
    }
    value = make_model(TEXT_MODEL).parse("anything", schema)
    assert set(value) == {"x", "n"}
    sent = emulator.predictions[-1].structured
    assert sent is not None
    assert len(sent["jsonSchema"]["properties"]["x"]["anyOf"]) == 6  # every JSON type


def test_unsupported_keyword_is_refused_before_sending(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    before = len(emulator.predictions)
    schema = {"type": "object", "properties": {"a": {"type": "string", "not": {"const": ""}}}}
    with pytest.raises(UnsupportedOutputTypeError, match="/properties/a/not"):
        make_model(TEXT_MODEL).parse("x", schema)
    assert len(emulator.predictions) == before


class Quoted(pydantic.BaseModel):
    said: int = pydantic.Field(alias='he said "hi"')


def test_a_property_name_outlines_core_cannot_write_is_refused_before_sending(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """outlines-core writes a property name unescaped: '{"he said "hi"": 1}' is no JSON."""
    before = len(emulator.predictions)
    with pytest.raises(UnsupportedOutputTypeError, match=re.escape("""'he said "hi"'""")) as info:
        make_model(TEXT_MODEL).parse("x", Quoted)
    assert "at /properties " in str(info.value)
    assert len(emulator.predictions) == before


def test_an_integer_literal_beyond_64_bits_is_refused_before_sending(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """outlines-core would write 2**64 + 1 as 1.8446744073709552e+19, another number."""
    before = len(emulator.predictions)
    with pytest.raises(UnsupportedOutputTypeError, match=r"/const .*18446744073709551617"):
        make_model(TEXT_MODEL).parse("x", Literal[2**64 + 1])
    assert len(emulator.predictions) == before


class Account(pydantic.BaseModel):
    number: int = pydantic.Field(ge=2**53)  # a JavaScript-unsafe id


def test_a_long_one_sided_integer_bound_is_not_sent(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """Found by a probe: ``ge=2**53`` was sent, which llama.cpp's C++ converter writes as a
    repetition ``[0-9]{16,15}``, and llama.cpp's grammar parser then takes memory until the
    process dies: on LM Studio every call failed, or worse (the emulator's GGUF models fail
    it). It is left out (loose, as documented), and ``parse`` still checks it."""
    text = make_model(TEXT_MODEL)("An account", Account)
    assert set(json.loads(text)) == {"number"}
    sent = emulator.predictions[-1].structured
    assert sent is not None
    assert sent["jsonSchema"]["properties"]["number"] == {"title": "Number", "type": "integer"}


def test_remote_dynamic_ref_reads_nothing(
    make_model: MakeModel, emulator: LMStudioEmulator, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text('{"x": {"type": "string"}, "secret": "TOP-SECRET"}')
    before = len(emulator.predictions)
    schema = {"type": "string", "$dynamicRef": secret.as_uri() + "#x"}
    with pytest.raises(InvalidSchemaError, match="never fetched") as info:
        make_model(TEXT_MODEL).parse("x", schema, timeout=2)
    assert "TOP-SECRET" not in str(info.value)
    assert len(emulator.predictions) == before


def test_enum_values_the_keywords_beside_them_refuse_are_never_written(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """The engines ignore keywords beside an enum: ``"big"`` and ``3`` were sent, so the
    engine could write them, and the reply failed the user's schema."""
    schema = {
        "type": "object",
        "properties": {"size": {"type": "integer", "enum": [1, "big", 3, 2], "maximum": 2}},
        "required": ["size"],
    }
    model = make_model(TEXT_MODEL)
    for _ in range(8):
        assert model.parse("a size", schema)["size"] in (1, 2)
    sent = emulator.predictions[-1].structured
    assert sent is not None
    assert sent["jsonSchema"]["properties"]["size"] == {"enum": [1, 2]}


def test_a_union_branch_no_value_satisfies_is_left_out(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """The other branches still make a schema: only the impossible one goes."""
    empty = {"type": "string", "enum": ["abc", "de"], "maxLength": 1}
    schema = {
        "type": "object",
        "properties": {"v": {"anyOf": [empty, {"type": "integer"}]}},
        "required": ["v"],
    }
    emulator.script(TEXT_MODEL, ['{"v": 3}'])
    assert make_model(TEXT_MODEL).parse("x", schema) == {"v": 3}
    sent = emulator.predictions[-1].structured
    assert sent is not None
    assert sent["jsonSchema"]["properties"]["v"] == {"anyOf": [{"type": "integer"}]}


def test_an_enum_no_value_of_which_is_allowed_is_refused_before_sending(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    before = len(emulator.predictions)
    schema = {"type": "string", "enum": ["abc", "de"], "maxLength": 1}
    with pytest.raises(InvalidSchemaError, match=r"accepts no value: at /enum, no enum value"):
        make_model(TEXT_MODEL).parse("x", schema)
    assert len(emulator.predictions) == before


class Pair_A(pydantic.BaseModel):  # the name is the point
    i: int


class Pair__A(pydantic.BaseModel):
    s: str


class Both(pydantic.BaseModel):
    x: Pair_A
    y: Pair__A


def test_definitions_llama_cpp_would_give_one_rule_are_renamed(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """Found by a probe: llama.cpp names a reference's rule after its path with each run of
    characters other than letters, digits and '-' as one '-', and reuses a rule of that
    name: ``Pair_A`` and ``Pair__A`` got one rule, and every reply on a GGUF model wrote
    ``{"i": ...}`` for both (the grammar itself: ``tests/unit/grammar/test_ref_rules.py``).
    What is sent renames one; ``parse`` validates against the user's own names."""
    for _ in range(3):
        both = make_model(TEXT_MODEL).parse("Two parts", Both)
        assert isinstance(both.x.i, int)
        assert isinstance(both.y.s, str)
    sent = emulator.predictions[-1].structured
    assert sent is not None
    refs = {sent["jsonSchema"]["properties"][k]["$ref"] for k in ("x", "y")}
    assert refs == {"#/$defs/Pair_A", "#/$defs/Pair-A-2"}
