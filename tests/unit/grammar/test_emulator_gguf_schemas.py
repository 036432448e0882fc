"""Differential: the emulator's GGUF model answers the schemas llama.cpp's converter takes.

LM Studio runs a GGUF model's JSON schema through llama.cpp's C++ converter, which ignores
the keywords it does not know (``patternProperties``, ``not``, ``minimum`` without a type...)
and reads a string's ``pattern`` before its format and lengths. The emulator samples with
outlines-core, which refused such schemas ("Unsupported JSON Schema structure") or wrote
what llama.cpp would not (``"2%h"`` for ``^a+$`` with ``maxLength: 3``). Each case here
is a schema the C++ converter takes (checked with ``tests/unit/grammar/cpp``'s build), with
the schema it reads, written from its source (``common/json-schema.cpp``). The GGUF model's
reply must validate against the latter, and be in the language of llama.cpp's grammar for
the schema (the emulator's copy of llama-cpp-python's port, when the port takes it, and the
C++ converter when ``LLAMA_JSON_SCHEMA_TO_GRAMMAR`` points at a build of it), matched by
llama.cpp's own grammar code. Whitespace is left out of that match: outlines-core writes a
space where llama.cpp's grammar has none (before the colon of an additional key).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import jsonschema
import lmstudio as lms
import pytest

from outlines_lmstudio.testing import LMStudioEmulator
from outlines_lmstudio.testing._llama import json_schema_grammar
from outlines_lmstudio.testing._llama_all_of import all_of_as_llama_cpp
from tests.cpp_converter import CPP_CONVERTER, run_cpp_converter

if TYPE_CHECKING:
    from ._llama_harness import LlamaGrammarHarness

GGUF = "qwen2.5-7b-instruct"
MLX = "llama-3.2-1b-instruct-mlx"
INT = {"type": "integer"}
DATE = {"type": "string", "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}
UUID = {"type": "string", "pattern": r"^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}$"}
STRING = {"type": "string"}
EMPTY_OBJECT = {"type": "object", "properties": {}, "additionalProperties": False}


def closed(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """Return the object of exactly ``properties``, ``required`` among them."""
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


# (schema sent, the schema llama.cpp's C++ converter reads of it)
CASES: list[tuple[dict[str, Any], dict[str, Any]]] = [
    # patternProperties is ignored: with additionalProperties false, the empty object.
    (
        {"type": "object", "patternProperties": {"^x_": INT}, "additionalProperties": False},
        EMPTY_OBJECT,
    ),
    ({"patternProperties": {"^x_": INT}, "additionalProperties": False}, EMPTY_OBJECT),
    (
        {
            "type": "object",
            "properties": {"a": INT},
            "required": ["a"],
            "patternProperties": {"^x_": INT},
            "additionalProperties": False,
        },
        {"type": "object", "properties": {"a": INT}, "required": ["a"]},
    ),
    # minProperties is ignored (the empty object, which the schema itself refuses).
    ({"type": "object", "additionalProperties": False, "minProperties": 1}, EMPTY_OBJECT),
    # Without type: the kind the converter reads from the keywords.
    ({"format": "date"}, DATE),
    ({"format": "uuid4"}, UUID),
    ({"pattern": "^ab$", "maxLength": 1}, {"type": "string", "const": "ab"}),
    (
        {"additionalProperties": INT},
        {"type": "object", "additionalProperties": INT},
    ),
    ({"additionalProperties": True}, {}),  # any value
    ({"not": {"type": "string"}}, {}),
    ({"minimum": 3}, {}),
    ({"$defs": {"x": INT}, "description": "d"}, {}),
    (
        {
            "type": "object",
            "properties": {"a": {"not": {"type": "string"}}, "b": {"title": "B"}},
            "required": ["a", "b"],
        },
        {"type": "object", "required": ["a", "b"]},
    ),
    # A string's pattern comes before its format and lengths, a format before the lengths.
    ({"type": "string", "pattern": "^a+$", "maxLength": 3}, {"type": "string", "pattern": "^a+$"}),
    ({"type": "string", "format": "date", "minLength": 3}, DATE),
    ({"type": "string", "format": "uuid", "minLength": 40}, UUID),  # outlines-core hung
    (
        {"type": ["string", "null"], "pattern": "^b+$", "minLength": 5},
        {"anyOf": [{"type": "string", "pattern": "^b+$"}, {"type": "null"}]},
    ),
    (
        {
            "type": "object",
            "properties": {"d": {"type": "string", "format": "date", "maxLength": 4}},
            "required": ["d"],
            "additionalProperties": False,
        },
        {"type": "object", "properties": {"d": DATE}, "required": ["d"]},
    ),
    # allOf: one closed object of the members' properties (``_visit_all_of``); every
    # property of a member that is not an anyOf is required, whatever its "required" says.
    (
        {
            "allOf": [
                {"type": "object", "properties": {"a": INT}, "required": ["a"]},
                {"type": "object", "properties": {"b": STRING}},
            ]
        },
        closed({"a": INT, "b": STRING}, ["a", "b"]),
    ),
    (
        {"allOf": [{"properties": {"a": INT}}, {"properties": {"b": INT}}]},
        closed({"a": INT, "b": INT}, ["a", "b"]),
    ),
    # A $ref member is followed (outlines-core wrote {"a": 1}{"b": ""}).
    (
        {
            "$defs": {"A": {"type": "object", "properties": {"a": INT}}},
            "allOf": [{"$ref": "#/$defs/A"}, {"type": "object", "properties": {"b": STRING}}],
        },
        closed({"a": INT, "b": STRING}, ["a", "b"]),
    ),
    # An anyOf member's alternatives give optional properties, each of them.
    (
        {
            "allOf": [
                {"anyOf": [{"properties": {"a": INT}, "required": ["a"]}, {"$ref": "#/$defs/C"}]},
                {"type": "object", "properties": {"b": STRING}},
            ],
            "$defs": {"C": {"type": "object", "properties": {"c": {"type": "boolean"}}}},
        },
        closed({"b": STRING, "a": INT, "c": {"type": "boolean"}}, ["b"]),
    ),
    (  # a type list is an anyOf of its types
        {
            "allOf": [
                {"type": ["object", "null"], "properties": {"a": INT}, "required": ["a"]},
                {"oneOf": [{"properties": {"c": INT}}]},
                {"properties": {"b": INT}},
            ]
        },
        closed({"b": INT, "a": INT, "c": INT}, ["b"]),
    ),
    # A member of another kind adds nothing; the keywords beside the allOf are not read.
    (
        {
            "type": "object",
            "required": ["z"],
            "allOf": [{"properties": {"a": INT}}, {"type": "string", "minLength": 3}],
        },
        closed({"a": INT}, ["a"]),
    ),
    ({"type": "string", "allOf": [{"minLength": 3}]}, EMPTY_OBJECT),
    # Members' enums: the values all of them list.
    (
        {"allOf": [{"enum": ["x", "y", "z"]}, {"enum": ["w", "y", "z"]}]},
        {"enum": ["y", "z"]},
    ),
    ({"allOf": [{"enum": ["x"]}, {"enum": ["y"]}]}, EMPTY_OBJECT),  # none in common
    # Where the converter reads another keyword first, the allOf is not read at all.
    (
        {"type": "object", "properties": {"a": INT}, "allOf": [{"required": ["a", "b"]}]},
        closed({"a": INT}, []),
    ),
    (
        {"type": ["integer", "object"], "allOf": [{"properties": {"a": INT}}]},
        {"anyOf": [INT, closed({"a": INT}, ["a"])]},
    ),
    # Below a property too.
    (
        {
            "type": "object",
            "properties": {"p": {"allOf": [{"properties": {"a": INT}}, {"properties": {}}]}},
            "required": ["p"],
        },
        {"type": "object", "properties": {"p": closed({"a": INT}, ["a"])}, "required": ["p"]},
    ),
]

_STRING_OR_SPACE = re.compile(r'("(?:[^"\\]|\\.)*")|\s+')


def without_whitespace(text: str) -> str:
    """Return JSON text without the whitespace between its tokens."""
    return _STRING_OR_SPACE.sub(lambda m: m.group(1) or "", text)


def cpp_grammar(schema: dict[str, Any]) -> str:
    """Return the C++ converter's grammar for ``schema`` (it must take it)."""
    done = run_cpp_converter(schema)
    assert done.stdout.startswith("OK "), done.stdout
    return done.stdout[3:].rstrip("\n").replace("\x01", "\n")


@pytest.fixture
def gguf(lmstudio_emulator: LMStudioEmulator) -> Iterator[Any]:
    """A GGUF model of the plugin's shared emulator (LM Studio runs it on llama.cpp)."""
    with lms.Client(lmstudio_emulator.api_host) as client:
        yield client.llm.model(GGUF)


@pytest.mark.parametrize(
    ("schema", "reads"), CASES, ids=[json.dumps(schema) for schema, _ in CASES]
)
def test_a_gguf_model_answers_as_llama_cpp_reads_the_schema(
    gguf: Any, llama: LlamaGrammarHarness, schema: dict[str, Any], reads: dict[str, Any]
) -> None:
    try:
        port = json_schema_grammar(schema)
    except ValueError:  # the port refuses some ({"not": ...}); the C++ converter does not
        port = None
    for prompt in ("a", "b", "c"):
        structured = {"type": "json", "jsonSchema": schema}
        reply = gguf.respond(prompt, response_format=structured).content
        jsonschema.validate(json.loads(reply), reads)
        compact = without_whitespace(reply)
        if port is not None:
            assert llama.matches(port, compact), (reply, port)
        if CPP_CONVERTER:
            assert llama.matches(cpp_grammar(schema), compact), reply


def test_a_property_two_all_of_members_declare_is_written_twice(
    gguf: Any, llama: LlamaGrammarHarness
) -> None:
    # The converter keeps one rule per name, the last member's, and writes the name once
    # per member: {"a": "", "a": ""}. The emulator samples the second under a stand-in
    # name, one the schema does not hold.
    schema = {
        "allOf": [
            {"properties": {"a": INT, "emulatedRepeat0": INT}},
            {"properties": {"a": STRING}},
        ]
    }
    port = json_schema_grammar(schema)
    for prompt in ("a", "b", "c"):
        structured = {"type": "json", "jsonSchema": schema}
        reply = gguf.respond(prompt, response_format=structured).content
        pairs = json.loads(reply, object_pairs_hook=list)
        assert [name for name, _ in pairs] == ["a", "emulatedRepeat0", "a"], reply
        assert [type(value) for _, value in pairs] == [str, int, str], reply
        assert llama.matches(port, without_whitespace(reply)), (reply, port)
        if CPP_CONVERTER:
            assert llama.matches(cpp_grammar(schema), without_whitespace(reply)), reply


def test_all_of_members_are_read_wherever_references_point() -> None:
    # A reference into a list is followed; a cycle of references, one that resolves to
    # nothing, and members the builder refuses before (left to it) add nothing.
    defs = {"L": [{"properties": {"a": INT}}], "A": {"$ref": "#/$defs/A"}}
    listed = {"$defs": defs, "allOf": [{"$ref": "#/$defs/L/0"}]}
    assert all_of_as_llama_cpp(listed) == ({"$defs": defs, **closed({"a": INT}, ["a"])}, {})
    for member in (
        {"$ref": "#/$defs/A"},
        {"$ref": "#/$defs/L/1"},
        {"$ref": "#/$defs/L/x"},
        {"$ref": "https://example.com/a.json"},
        {"$ref": 5},
        True,
        {"anyOf": {"properties": {"a": INT}}},
    ):
        read = all_of_as_llama_cpp({"$defs": defs, "allOf": [member]})
        assert read == ({"$defs": defs, **closed({}, [])}, {}), member


def test_an_mlx_model_still_refuses_what_outlines_core_refuses(
    lmstudio_emulator: LMStudioEmulator,
) -> None:
    # LM Studio's MLX engine is outlines-core: the GGUF rewrites are not applied there.
    schema = {"type": "object", "patternProperties": {"^x_": INT}, "additionalProperties": False}
    with lms.Client(lmstudio_emulator.api_host) as client:
        model = client.llm.model(MLX)
        with pytest.raises(lms.LMStudioServerError, match="Unsupported JSON Schema structure"):
            model.respond("a", response_format=schema)
        not_string = {"type": "json", "jsonSchema": {"not": {"type": "string"}}}
        with pytest.raises(lms.LMStudioServerError, match="Unsupported JSON Schema structure"):
            model.respond("a", response_format=not_string)
