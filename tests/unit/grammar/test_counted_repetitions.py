"""The llama.cpp engine writes length and item bounds as LM Studio's C++ converter does.

llama-cpp-python's Python port nests one optional group per repetition
(``(char (char ...)?)?``), which llama.cpp's grammar parser refuses from about 1500 on,
so the emulator's llama.cpp engine failed ``maxLength: 1500`` ("failed to parse
grammar") where LM Studio's converter writes ``char{0,1500}`` and runs it. Each grammar
here is parsed and matched by llama.cpp's own grammar code (the vocab-only harness).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from outlines_lmstudio.testing._llama import cpp_repetition, json_schema_grammar

if TYPE_CHECKING:
    from ._llama_harness import LlamaGrammarHarness


def _array(count: int) -> str:
    return "[" + ", ".join(["1"] * count) + "]"


@pytest.mark.parametrize(
    ("schema", "taken", "refused"),
    [
        (
            {"type": "string", "maxLength": 1500},
            ['""', '"' + "a" * 1500 + '"'],
            ['"' + "a" * 1501 + '"'],
        ),
        (
            {"type": "string", "minLength": 2, "maxLength": 3},
            ['"ab"', '"a\\"c"'],
            ['"a"', '"abcd"'],
        ),
        ({"type": "string", "minLength": 1}, ['"a"', '"abc"'], ['""']),
        (
            {"type": "array", "items": {"type": "integer"}, "maxItems": 1500},
            ["[]", _array(1500)],
            [_array(1501)],
        ),
        (
            {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 3},
            ["[1, 1]", "[1,1,1]"],
            ["[]", "[1]", _array(4)],
        ),
        (
            {"type": "array", "items": {"type": "integer"}, "minItems": 1},
            ["[1]", _array(9)],
            ["[]"],
        ),
        (
            {
                "type": "object",
                "properties": {"t": {"type": "array", "items": {"type": "string", "maxLength": 2}}},
                "required": ["t"],
            },
            ['{"t": ["ab", ""]}', '{"t": []}'],
            ['{"t": ["abc"]}'],
        ),
    ],
)
def test_lengths_and_item_counts_are_counted_repetitions(
    llama: LlamaGrammarHarness, schema: dict[str, Any], taken: list[str], refused: list[str]
) -> None:
    llama.assert_language(json_schema_grammar(schema), taken, refused)


def test_the_repetition_is_the_cpp_converters() -> None:
    assert cpp_repetition("c", 0, 5) == "c{0,5}"
    assert cpp_repetition("c", 1, None) == "c+"
    assert cpp_repetition("c", 0, None) == "c*"
    assert cpp_repetition("c", 0, 1) == "c?"
    assert cpp_repetition("c", 3, 0) == ""
    assert cpp_repetition("i", 0, 3, '","') == '(i ("," i){0,2})?'
    assert cpp_repetition("i", 2, None, '","') == 'i ("," i)+'
