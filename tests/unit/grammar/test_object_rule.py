"""The llama.cpp engine writes objects with additional properties as LM Studio's C++ converter.

llama-cpp-python's Python port left out the comma between the last declared property and
the first additional one, so Gemma 3 270M wrote ``{ "name": "Mary Smith" "height": 170}``
(not JSON) for ``properties`` beside ``additionalProperties``. It also let a declared name
be written again as an additional key (``{"a": 1, "a": "x"}``, which reads as ``a: "x"``),
and wrote only objects as the values of ``additionalProperties: true``. The C++ converter
(``_build_object_rule``, ``_not_strings``) does none of these. Each grammar here is parsed
and matched by llama.cpp's own grammar code (the vocab-only harness).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from outlines_lmstudio._dialects import dialect_schema
from outlines_lmstudio.testing._llama import json_schema_grammar

if TYPE_CHECKING:
    from ._llama_harness import LlamaGrammarHarness


@pytest.mark.parametrize(
    ("schema", "taken", "refused"),
    [
        (
            {
                "type": "object",
                "properties": {"age": {"type": "integer"}, "name": {"type": "string"}},
                "additionalProperties": {"type": "integer"},
            },
            [
                '{"age": 4, "name": "M", "height": 170}',
                '{"name": "M", "height": 170, "weight": 60}',
                '{"height": 170}',
                "{}",
            ],
            [
                '{"name": "M" "height": 170}',
                '{"age": 4 "height": 170}',
                '{"name": "M", "name": 3}',
                '{"age": 4, "age": 5}',
            ],
        ),
        (
            {
                "type": "object",
                "properties": {"a": {"type": "integer"}},
                "required": ["a"],
                "additionalProperties": True,
            },
            ['{"a": 1, "b": [1, "x", null]}', '{"a": 1, "b": true, "c": {}}'],
            ['{"a": 1 "b": 2}', '{"a": 1, "a": 2}'],
        ),
        (
            {
                "type": "object",
                "properties": {"x-]": {"type": "integer"}},
                "additionalProperties": {"type": "boolean"},
            },
            ['{"x-]": 1, "y": true}', '{"x-a": true}', '{"-": false}'],
            ['{"x-]": true}', '{"x-]": 1 "y": true}'],
        ),
    ],
)
def test_additional_properties_beside_properties(
    llama: LlamaGrammarHarness, schema: dict[str, Any], taken: list[str], refused: list[str]
) -> None:
    gbnf = json_schema_grammar(schema)
    llama.check_parses(gbnf)
    for text in taken:
        assert llama.matches(gbnf, text), text
    for text in refused:
        assert not llama.matches(gbnf, text), text


@pytest.mark.parametrize(
    ("schema", "taken", "refused"),
    [
        (
            {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a", "b"]},
            ['{"a": 1, "b": "x"}', '{"a": 1, "b": [true]}'],
            ['{"a": 1}', "{}"],
        ),
        (
            {"type": "object", "required": ["x"], "additionalProperties": {"type": "integer"}},
            ['{"x": 3}'],
            ["{}", '{"x": "s"}'],
        ),
    ],
)
def test_a_required_name_missing_from_properties_is_written(
    llama: LlamaGrammarHarness, schema: dict[str, Any], taken: list[str], refused: list[str]
) -> None:
    """Found by a probe: the name was never written, so every reply failed validation."""
    sent = dialect_schema(schema, "gguf")
    llama.assert_language(json_schema_grammar(sent), taken, refused)
