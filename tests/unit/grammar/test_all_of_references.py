"""References an ``allOf`` reads, and references into lists, as llama.cpp's converter reads them.

Found by a differential fuzz against a build of llama.cpp's C++ converter:

- A recursive ``$ref`` reached through an ``allOf`` member (Pydantic v1 writes
  ``{"allOf": [{"$ref": "#/$defs/Node"}]}`` for a recursive field with a description): the
  C++ converter's ``_visit_all_of`` copies the member's properties in with no guard, so
  where it reaches the loop it recurses until it crashes, and where it never reaches it (a
  definition nothing refers to) it converts the schema. The synthetic engine failed both
  with a raw ``RecursionError``; the llama.cpp engine blamed the schema's depth.
- A ``$ref`` into a list (``#/allOf/0/properties/a``, ``#/properties/x/anyOf/0``), which the
  C++ builder resolves, failed on both engines.
- A ``$ref`` that resolves to nothing, in an ``allOf`` the converter never reads, failed on
  the llama.cpp engine (llama-cpp-python's port resolves every reference first).

When ``LLAMA_JSON_SCHEMA_TO_GRAMMAR`` points at a build of the C++ converter, each verdict is
checked against it too.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import jsonschema
import lmstudio as lms
import pytest

from outlines_lmstudio.testing import LMStudioEmulator
from outlines_lmstudio.testing._llama import json_schema_grammar
from outlines_lmstudio.testing._llama_all_of import all_of_as_llama_cpp, endless_all_of
from tests.cpp_converter import CPP_CONVERTER, run_cpp_converter
from tests.unit.grammar.test_emulator_gguf_schemas import without_whitespace

if TYPE_CHECKING:
    from ._llama_harness import LlamaGrammarHarness

GGUF = "qwen2.5-7b-instruct"
INT = {"type": "integer"}
NODE = {"type": "object", "properties": {"v": INT, "next": {"allOf": [{"$ref": "#/$defs/Node"}]}}}
UNREACHED = {"$defs": {"Node": NODE}, "type": "object", "properties": {"x": INT}, "required": ["x"]}
REACHED = {
    "$defs": {"Node": NODE},
    "type": "object",
    "properties": {"root": {"allOf": [{"$ref": "#/$defs/Node"}]}},
}
LOOPS = [
    REACHED,
    # A chain of references that comes back to itself, as an allOf member.
    {
        "$defs": {"A": {"$ref": "#/$defs/B"}, "B": {"$ref": "#/$defs/A"}},
        "allOf": [{"$ref": "#/$defs/A"}],
    },
    # Reached through a plain $ref first; an anyOf member's alternative.
    {
        "$defs": {
            "N": {
                "type": "object",
                "properties": {"m": {"allOf": [{"anyOf": [{"$ref": "#/$defs/N"}]}]}},
            }
        },
        "properties": {"x": {"$ref": "#/$defs/N"}},
    },
    # Through an array's items, reached through an anyOf's $ref.
    {
        "$defs": {
            "N": {
                "type": "object",
                "properties": {"m": {"type": "array", "items": {"allOf": [{"$ref": "#/$defs/N"}]}}},
            }
        },
        "anyOf": [{"$ref": "#/$defs/N"}, {"type": "null"}],
    },
    # Through a type list's object.
    {
        "$defs": {
            "N": {
                "properties": {
                    "m": {
                        "type": ["object", "null"],
                        "properties": {"k": {"allOf": [{"$ref": "#/$defs/N"}]}},
                    }
                }
            }
        },
        "allOf": [{"$ref": "#/$defs/N"}],
    },
]
ENDS = [
    UNREACHED,
    # A plain $ref ends the recursion, even below an allOf member's properties.
    {
        "$defs": {"N": {"properties": {"n": {"$ref": "#/$defs/N"}, "v": INT}}},
        "allOf": [{"$ref": "#/$defs/N"}],
    },
    # An allOf member whose target is an anyOf adds nothing: nothing comes back.
    {
        "$defs": {
            "N": {
                "type": ["object", "null"],
                "properties": {"m": {"allOf": [{"$ref": "#/$defs/N"}]}},
            }
        },
        "properties": {"x": {"$ref": "#/$defs/N"}},
    },
    # The loop is in an allOf the converter never reads (beside properties).
    {"$defs": {"Node": NODE}, "properties": {"a": INT}, "allOf": [{"$ref": "#/$defs/Node"}]},
    # The same reference twice, not round a loop.
    {
        "$defs": {"P": {"properties": {"a": INT}}},
        "allOf": [{"$ref": "#/$defs/P"}, {"properties": {"q": {"allOf": [{"$ref": "#/$defs/P"}]}}}],
    },
]
INTO_LISTS = [
    {
        "allOf": [
            {"properties": {"a": INT}},
            {"properties": {"b": {"$ref": "#/allOf/0/properties/a"}}},
        ]
    },
    {
        "type": "object",
        "properties": {
            "x": {"allOf": [{"properties": {"a": INT}}]},
            "y": {"$ref": "#/properties/x/allOf/0"},
        },
        "required": ["x", "y"],
    },
    {
        "type": "object",
        "properties": {
            "x": {"anyOf": [{"properties": {"a": INT}, "required": ["a"]}]},  # no allOf
            "y": {"$ref": "#/properties/x/anyOf/0"},
        },
        "required": ["x", "y"],
    },
    # A draft-07 tuple's item, which the GGUF rewrite turns into prefixItems.
    {
        "type": "object",
        "properties": {
            "t": {"items": [INT, {"enum": ["k"]}]},
            "u": {"$ref": "#/properties/t/items/1"},
        },
        "required": ["t", "u"],
    },
]
# What the C++ converter reads of each schema of INTO_LISTS.
A_REQUIRED = {"type": "object", "properties": {"a": INT}, "required": ["a"]}
INTO_LISTS_READ = [
    {
        "type": "object",
        "properties": {"a": INT, "b": INT},
        "required": ["a", "b"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {
            "x": {
                "type": "object",
                "properties": {"a": INT},
                "required": ["a"],
                "additionalProperties": False,
            },
            "y": {"type": "object", "properties": {"a": INT}},
        },
        "required": ["x", "y"],
    },
    {
        "type": "object",
        "properties": {"x": A_REQUIRED, "y": A_REQUIRED},
        "required": ["x", "y"],
    },
    {
        "type": "object",
        "properties": {
            "t": {"prefixItems": [INT, {"enum": ["k"]}], "minItems": 2, "items": False},
            "u": {"enum": ["k"]},
        },
        "required": ["t", "u"],
    },
]


def cpp_finishes(schema: dict[str, Any]) -> bool:
    """Whether the C++ converter's build gives a grammar for ``schema`` (it crashes otherwise)."""
    try:
        done = run_cpp_converter(schema)
    except subprocess.CalledProcessError:
        return False
    assert done.stdout.startswith("OK "), done.stdout
    return True


@pytest.fixture
def gguf(lmstudio_emulator: LMStudioEmulator) -> Iterator[Any]:
    """A GGUF model of the plugin's shared emulator (LM Studio runs it on llama.cpp)."""
    with lms.Client(lmstudio_emulator.api_host) as client:
        yield client.llm.model(GGUF)


@pytest.mark.parametrize("schema", LOOPS, ids=[json.dumps(s) for s in LOOPS])
def test_an_all_of_loop_the_converter_reaches_fails_the_prediction_saying_so(
    gguf: Any, schema: dict[str, Any]
) -> None:
    said = "llama.cpp's JSON-schema converter never finishes this schema"
    with pytest.raises(ValueError, match=said) as refused:
        json_schema_grammar(schema)  # it said "nests deeper than ... can follow"
    assert "LM Studio's C++ converter crashes" in str(refused.value)
    structured = {"type": "json", "jsonSchema": schema}
    with pytest.raises(lms.LMStudioServerError) as failed:
        gguf.respond("a", response_format=structured)  # it failed with RecursionError
    assert f"Failed to convert the JSON schema to a grammar: {refused.value}" in str(failed.value)
    if CPP_CONVERTER:
        assert not cpp_finishes(schema)


def test_an_all_of_loop_is_named_by_its_member() -> None:
    ref = '{"$ref": "#/$defs/Node"}'
    assert endless_all_of(REACHED) == (
        "llama.cpp's JSON-schema converter never finishes this schema: the allOf member "
        f"{ref} brings in properties that lead back to that allOf, and the converter writes "
        "it inside itself without end (LM Studio's C++ converter crashes, out of stack). "
        f"Write {ref} without the allOf around it: the converter ends a recursion through "
        "a plain $ref"
    )
    chain = endless_all_of(LOOPS[1])
    assert chain is not None
    assert 'the allOf member {"$ref": "#/$defs/A"} is a chain of references' in chain


@pytest.mark.parametrize("schema", ENDS, ids=[json.dumps(s) for s in ENDS])
def test_an_all_of_loop_the_converter_never_reaches_is_answered(
    gguf: Any, llama: LlamaGrammarHarness, schema: dict[str, Any]
) -> None:
    gbnf = json_schema_grammar(schema)
    structured = {"type": "json", "jsonSchema": schema}
    reply = gguf.respond("a", response_format=structured).content
    assert llama.matches(gbnf, without_whitespace(reply)), (reply, gbnf)
    if CPP_CONVERTER:
        assert cpp_finishes(schema)


def test_the_all_of_rewrite_stops_at_a_loop_nothing_reaches() -> None:
    assert [endless_all_of(schema) for schema in ENDS] == [None] * len(ENDS)
    # The definition is written once round the loop; its inner copy is {} (never read).
    read, _ = all_of_as_llama_cpp(UNREACHED)
    inner = {
        "type": "object",
        "properties": {"v": INT, "next": {}},
        "required": ["v", "next"],
        "additionalProperties": False,
    }
    assert read["$defs"]["Node"] == {"type": "object", "properties": {"v": INT, "next": inner}}
    assert {key: read[key] for key in ("properties", "required")} == {
        "properties": {"x": INT},
        "required": ["x"],
    }


@pytest.mark.parametrize(
    ("schema", "reads"),
    list(zip(INTO_LISTS, INTO_LISTS_READ, strict=True)),
    ids=[json.dumps(s) for s in INTO_LISTS],
)
def test_a_reference_into_a_list_resolves_as_llama_cpp_resolves_it(
    gguf: Any, llama: LlamaGrammarHarness, schema: dict[str, Any], reads: dict[str, Any]
) -> None:
    gbnf = json_schema_grammar(schema)
    cpp = None
    if CPP_CONVERTER:
        done = run_cpp_converter(schema)
        assert done.stdout.startswith("OK "), done.stdout
        cpp = done.stdout[3:].rstrip("\n").replace("\x01", "\n")
    for prompt in ("a", "b", "c"):
        structured = {"type": "json", "jsonSchema": schema}
        reply = gguf.respond(prompt, response_format=structured).content
        jsonschema.validate(json.loads(reply), reads)
        compact = without_whitespace(reply)
        assert llama.matches(gbnf, compact), (reply, gbnf)
        if cpp is not None:
            assert llama.matches(cpp, compact), (reply, cpp)


def test_a_dangling_reference_the_converter_never_reads_is_taken(
    gguf: Any, llama: LlamaGrammarHarness
) -> None:
    schema = {
        "type": "object",
        "properties": {"a": INT},
        "required": ["a"],
        "allOf": [{"$ref": "#/$defs/Missing"}],  # beside properties: never read
    }
    gbnf = json_schema_grammar(schema)
    llama.assert_language(gbnf, ['{"a": 1}'], ["{}", '{"a": 1, "b": 2}'])
    reply = gguf.respond("a", response_format={"type": "json", "jsonSchema": schema}).content
    assert llama.matches(gbnf, without_whitespace(reply)), (reply, gbnf)
    if CPP_CONVERTER:
        assert cpp_finishes(schema)
    # Where the converter reads it, the builder's error, as before.
    read = {"properties": {"a": {"$ref": "#/$defs/Missing"}}}
    with pytest.raises(ValueError, match=r"at #/properties/a: cannot resolve \$ref"):
        json_schema_grammar(read)
