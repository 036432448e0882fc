"""A GGUF model's sampled JSON is in llama.cpp's grammar for the schema, not only valid.

LM Studio runs a GGUF model's schema through llama.cpp's C++ converter. Its grammar has
whitespace (its ``space`` rule) only after ``{``, ``[``, ``,``, ``:`` and a declared key,
and before ``}`` and ``]``; an ``enum`` or ``const`` value is the compact JSON text; a
``time`` has a zone. The synthetic engine samples with outlines-core, which writes
whitespace on both sides of every ``,`` and ``:`` and inside such values, and a time
without a zone: a differential fuzz against the C++ converter's grammar found replies a
GGUF model never writes. An MLX model (LM Studio's MLX engine is outlines-core) keeps
outlines-core's.

When ``LLAMA_JSON_SCHEMA_TO_GRAMMAR`` points at a build of the C++ converter (and
llama-cpp-python is installed), each reply is also matched, whitespace and all, by
llama.cpp's own grammar code against the converter's grammar.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import lmstudio as lms
import pydantic
import pytest

from ..cpp_converter import CPP_CONVERTER, run_cpp_converter
from .conftest import MLX, TEXT

INT = {"type": "integer"}
BOOL = {"type": "boolean"}
# Schemas of enum and const values, with every text llama.cpp's grammar has for them.
_LITERALS: list[tuple[dict[str, Any], str]] = [
    ({"enum": [[1]]}, r"\[1\]"),
    ({"const": {"k": 1}}, r'\{"k":1\}'),
    ({"enum": [{"x": [1, {"y": None}]}, [], "s"]}, r'\{"x":\[1,\{"y":null\}\]\}|\[\]|"s"'),
    (
        {"type": "object", "properties": {"p": {"const": [True, {}]}}, "required": ["p"]},
        r'\{ ?"p": ?\[true,\{\}\] ?\}',
    ),
]
_SCHEMAS: list[dict[str, Any]] = [
    {"type": "object", "properties": {"a": INT, "b": INT}, "required": ["a", "b"]},
    {"type": "object", "additionalProperties": INT, "minProperties": 1},
    {"type": "object", "properties": {"a": INT, "b": INT, "c": {"type": "string"}}},
    {  # a tuple, as zod writes it
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "array",
        "items": [INT, {"type": "boolean"}],
    },
    {
        "type": "array",
        "items": {"type": "object", "properties": {"n": INT, "t": {"type": "array", "items": INT}}},
        "minItems": 2,
    },
    *(schema for schema, _ in _LITERALS),
    # Any value in an anyOf: scalars (llama.cpp's grammar has any value there).
    {"type": "array", "items": {"anyOf": [{}, {"type": "null"}]}, "minItems": 2},
    {"type": "object", "additionalProperties": {"anyOf": [{}, INT]}, "minProperties": 1},
]
# llama.cpp's time rule (``STRING_FORMAT_RULES["time"]``): a zone, ``Z`` or an offset.
_LLAMA_CPP_TIME = re.compile(
    r"([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{3})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
)
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\s+|.', re.DOTALL)


def misplaced_spaces(text: str) -> list[int]:
    """Return where ``text`` has whitespace (outside strings) llama.cpp's grammar has not.

    Whitespace is allowed after ``{``, ``[``, ``,`` and ``:``, and before ``}`` and ``]``
    (also after a declared key, which the emulator never writes: it is refused here).
    """
    tokens = _TOKEN.findall(text)
    at, misplaced = 0, []
    for i, token in enumerate(tokens):
        if token.isspace():
            before = tokens[i - 1] if i else ""
            after = tokens[i + 1] if i + 1 < len(tokens) else ""
            if before not in ("{", "[", ",", ":") and after not in ("}", "]"):
                misplaced.append(at)
        at += len(token)
    return misplaced


@pytest.fixture
def llama_cpp(tmp_path: Path) -> Iterator[Any]:
    """llama.cpp's grammar matcher when the C++ converter and llama.cpp are at hand, or None.

    None leaves the optional check out.
    """
    if not CPP_CONVERTER or any(importlib.util.find_spec(m) is None for m in ("llama_cpp", "gguf")):
        yield None
        return
    from ..unit.grammar._llama_harness import LlamaGrammarHarness, write_byte_vocab

    write_byte_vocab(tmp_path / "bytes.gguf")
    harness = LlamaGrammarHarness(tmp_path / "bytes.gguf")
    yield harness
    harness.close()


def cpp_grammar(schema: Any) -> str:
    """Return the C++ converter's grammar for ``schema``."""
    done = run_cpp_converter(schema)
    assert done.stdout.startswith("OK "), done.stdout
    return done.stdout[3:].rstrip("\n").replace("\x01", "\n")


@pytest.mark.parametrize("schema", _SCHEMAS, ids=json.dumps)
def test_a_gguf_model_writes_whitespace_only_where_llama_cpp_has_it(
    client: lms.Client,
    sync_timeout: Callable[[float], None],
    llama_cpp: Any,
    schema: dict[str, Any],
) -> None:
    """Found by a differential fuzz: ``{ "a":8 , "b" :1902064}``, ``[1 ]`` for the enum
    value ``[1]``, ``{"k" :1 }`` for a const ``{"k": 1}``."""
    sync_timeout(10)  # any value in an anyOf took minutes (`test_sampler`)
    model = client.llm.model(TEXT)
    grammar = cpp_grammar(schema) if llama_cpp is not None else None
    texts = {json.dumps(literal): pattern for literal, pattern in _LITERALS}
    for i in range(10):
        reply = model.respond(
            f"Give me {i}.", response_format={"type": "json", "jsonSchema": schema}
        )
        text = reply.content
        jsonschema.validate(json.loads(text), schema)
        assert misplaced_spaces(text) == [], text
        if json.dumps(schema) in texts:
            assert re.fullmatch(texts[json.dumps(schema)], text), text
        if grammar is not None:
            assert llama_cpp.matches(grammar, text), text


def test_an_mlx_model_keeps_outlines_cores_whitespace(client: lms.Client) -> None:
    # LM Studio's MLX engine is outlines-core: a space may come before a "," or a ":".
    schema = {"type": "object", "properties": {"a": INT, "b": INT}, "required": ["a", "b"]}
    model = client.llm.model(MLX)
    replies = [
        model.respond(f"Give me {i}.", response_format={"type": "json", "jsonSchema": schema})
        for i in range(12)
    ]
    assert any(misplaced_spaces(reply.content) for reply in replies)


def test_the_whitespace_check_finds_what_llama_cpp_refuses() -> None:
    assert misplaced_spaces('{ "a": 1, "b": [ 2, 3 ], "c": "x , y" }') == []
    assert misplaced_spaces('{"a" :1}') == [4]
    assert misplaced_spaces('{"a":1 ,"b":2}') == [6]
    assert misplaced_spaces("[1 ,2]") == [2]


def test_a_gguf_model_writes_times_with_a_zone(client: lms.Client, llama_cpp: Any) -> None:
    """Found by a differential fuzz: ``"06:59:08"``, which llama.cpp's ``time`` rule refuses
    (it requires ``Z`` or an offset); the emulator wrote a zone only sometimes."""

    class Alarm(pydantic.BaseModel):
        at: datetime.time
        times: list[datetime.time]

    schemas: list[dict[str, Any]] = [
        {"type": "array", "items": {"type": "string", "format": "time"}, "minItems": 3},
        Alarm.model_json_schema(),
    ]
    model = client.llm.model(TEXT)
    for schema in schemas:
        grammar = cpp_grammar(schema) if llama_cpp is not None else None
        for i in range(8):
            structured = {"type": "json", "jsonSchema": schema}
            text = model.respond(f"When? {i}", response_format=structured).content
            value = json.loads(text)
            times = value if isinstance(value, list) else [value["at"], *value["times"]]
            assert times, text
            for time in times:
                assert _LLAMA_CPP_TIME.fullmatch(time), text
                assert jsonschema.Draft202012Validator.FORMAT_CHECKER.conforms(time, "time")
            if isinstance(value, dict):
                Alarm.model_validate_json(text)
            if grammar is not None:
                assert llama_cpp.matches(grammar, text), text


@pytest.mark.parametrize(
    "schema",
    [
        {"type": ["object", "null"], "additionalProperties": False},  # seed 3427 of the fuzz
        {"type": ["null", "object"], "additionalProperties": False, "title": "Nothing"},
        {"type": "array", "items": {"type": ["object", "null"], "additionalProperties": False}},
    ],
    ids=json.dumps,
)
def test_a_gguf_model_answers_a_closed_object_in_a_type_list(
    client: lms.Client, llama_cpp: Any, schema: dict[str, Any]
) -> None:
    """llama.cpp's converter writes one copy of the node per type, the object's copy of
    ``additionalProperties: false`` and no ``properties`` as the empty object; the
    emulator refused the schema (outlines-core's "Unsupported JSON Schema structure
    false": found by a differential fuzz)."""
    model = client.llm.model(TEXT)
    grammar = cpp_grammar(schema) if llama_cpp is not None else None
    seen: set[str] = set()
    for i in range(12):
        structured = {"type": "json", "jsonSchema": schema}
        text = model.respond(f"Anything? {i}", response_format=structured).content
        value = json.loads(text)
        jsonschema.validate(value, schema)
        seen.update(json.dumps(item) for item in (value if isinstance(value, list) else [value]))
        if grammar is not None:
            assert llama_cpp.matches(grammar, text), text
    assert seen <= {"{}", "null"}


# One-sided integer ranges, and integers beyond the bound llama.cpp's grammar for them
# misses (its ``build_min_max_int`` reads the digits after the first as a bound of their
# own, with no leading zeros).
_MISSED: list[tuple[dict[str, Any], range]] = [
    ({"type": "integer", "maximum": -115}, range(-1099, -999)),  # seed 5139 of the fuzz
    ({"type": "integer", "maximum": -1015}, range(-1099, -1014)),
    ({"type": "integer", "exclusiveMinimum": 1014}, range(1015, 1100)),
]


@pytest.mark.parametrize(("item", "missed"), _MISSED, ids=[json.dumps(i) for i, _ in _MISSED])
def test_a_gguf_model_writes_integers_llama_cpps_range_allows(
    client: lms.Client, llama_cpp: Any, item: dict[str, Any], missed: range
) -> None:
    """With one bound, llama.cpp's grammar allows some of the integers beyond it only:
    ``maximum: -115`` not -1000 to -1099. The emulator wrote any of them (``-1079``)."""
    schema = {"type": "array", "items": item, "minItems": 10}
    model = client.llm.model(TEXT)
    grammar = cpp_grammar(schema) if llama_cpp is not None else None
    for i in range(12):
        structured = {"type": "json", "jsonSchema": schema}
        text = model.respond(f"Numbers {i}?", response_format=structured).content
        values = json.loads(text)
        jsonschema.validate(values, schema)
        assert not [value for value in values if value in missed], text
        if grammar is not None:
            assert llama_cpp.matches(grammar, text), text


def test_the_integer_ranges_are_llama_cpps() -> None:
    """`integer_range` is the text llama.cpp's ``build_min_max_int`` allows, gaps and all."""
    from outlines_lmstudio.testing._llama_integers import integer_range

    cases = [
        (
            {"type": "integer", "maximum": -115},
            ["-115", "-999", "-1100", "-20000"],
            ["-1079", "-1"],
        ),
        ({"type": "integer", "minimum": 115}, ["115", "999", "1100"], ["1000", "1099", "114"]),
        ({"type": "integer", "minimum": -3, "maximum": 12}, ["-3", "-0", "0", "12"], ["-4", "13"]),
        ({"type": "integer", "exclusiveMaximum": 0.5}, ["0", "-7"], ["1", "01"]),
    ]
    for node, taken, refused in cases:
        allowed = integer_range(node)
        assert allowed is not None
        assert [text for text in taken if not allowed.fullmatch(text)] == [], node
        assert [text for text in refused if allowed.fullmatch(text)] == [], node
    assert integer_range({"type": "number", "maximum": 3}) is None
    assert integer_range({"type": "integer"}) is None


@pytest.mark.parametrize(
    "schema",
    [
        {
            "allOf": [
                {"type": "object", "properties": {"b": BOOL, "n": INT}, "required": ["n"]},
                {"type": "object", "properties": {"z": INT}},
            ]
        },
        {  # seed 5009 of the fuzz, shortened
            "allOf": [
                {
                    "type": "object",
                    "properties": {"b": BOOL, "n1": {"type": "number"}, 'q"q': {"type": "string"}},
                    "required": ["n1"],
                },
                {"type": "object", "additionalProperties": {"type": "object"}},
            ]
        },
    ],
    ids=["two members", "fuzzed"],
)
def test_a_gguf_model_writes_an_all_of_in_its_members_order(
    client: lms.Client, llama_cpp: Any, schema: dict[str, Any]
) -> None:
    """llama.cpp's converter writes an ``allOf``'s properties all required, in the members'
    order; the emulator put a member's own required properties first (``{"n": 1, "b":
    true}``, which its grammar refuses: found by a differential fuzz)."""
    model = client.llm.model(TEXT)
    grammar = cpp_grammar(schema) if llama_cpp is not None else None
    names = [name for member in schema["allOf"] for name in member.get("properties", {})]
    for i in range(4):
        structured = {"type": "json", "jsonSchema": schema}
        text = model.respond(f"Both {i}?", response_format=structured).content
        assert list(json.loads(text)) == names, text
        if grammar is not None:
            assert llama_cpp.matches(grammar, text), text
