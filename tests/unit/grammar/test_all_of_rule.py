"""The llama.cpp engine reads an ``allOf``'s members as LM Studio's C++ converter does.

The C++ converter's ``_visit_all_of`` (``common/json-schema-to-grammar.cpp``) takes each
member as the kind its schema builder gives it: a ``oneOf`` member and a type-list member
are ``anyOf`` members (their alternatives' properties optional), and a member whose
``type`` is ``string`` or which has an ``enum`` gives no property, whatever ``properties``
it holds. The engine's converter looked only for an ``anyOf`` key and a ``properties`` key,
so a type-list member's properties came out required and a ``oneOf`` member's not at all.
Each grammar is parsed and matched by llama.cpp's own grammar code (the vocab-only
harness), and, when ``LLAMA_JSON_SCHEMA_TO_GRAMMAR`` points at a build of the C++ converter,
the C++ grammar must take and refuse the same texts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from outlines_lmstudio.testing._llama import json_schema_grammar
from tests.cpp_converter import CPP_CONVERTER, run_cpp_converter

if TYPE_CHECKING:
    from ._llama_harness import LlamaGrammarHarness

INT = {"type": "integer"}


@pytest.mark.parametrize(
    ("schema", "taken", "refused"),
    [
        (  # a type list is an anyOf of its types: "a" optional
            {
                "allOf": [
                    {"type": ["object", "null"], "properties": {"a": INT}, "required": ["a"]},
                    {"properties": {"b": INT}},
                ]
            },
            ['{"b": 1}', '{"b": 1, "a": 2}'],
            ['{"a": 2, "b": 1}', "{}", "null"],
        ),
        (  # a oneOf member, as an anyOf member
            {"allOf": [{"oneOf": [{"properties": {"c": INT}}]}, {"properties": {"b": INT}}]},
            ['{"b": 1}', '{"b": 1, "c": 2}'],
            ['{"c": 2}', '{"b": 1, "d": 2}'],
        ),
        (  # a string member's properties, and properties beside an enum, are not read
            {
                "allOf": [
                    {"type": "string", "properties": {"s": INT}},
                    {"enum": [1], "properties": {"e": INT}},
                    {"properties": {"b": INT}},
                ]
            },
            ['{"b": 1}'],
            ['{"b": 1, "s": 2}', '{"b": 1, "e": 2}', '{"s": 2, "e": 3, "b": 1}', "1"],
        ),
    ],
)
def test_all_of_members_are_read_as_llama_cpp_builds_them(
    llama: LlamaGrammarHarness, schema: dict[str, Any], taken: list[str], refused: list[str]
) -> None:
    grammars = [json_schema_grammar(schema)]
    if CPP_CONVERTER:
        done = run_cpp_converter(schema)
        assert done.stdout.startswith("OK "), done.stdout
        grammars.append(done.stdout[3:].rstrip("\n").replace("\x01", "\n"))
    for gbnf in grammars:
        llama.check_parses(gbnf)
        for text in taken:
            assert llama.matches(gbnf, text), (text, gbnf)
        for text in refused:
            assert not llama.matches(gbnf, text), (text, gbnf)
