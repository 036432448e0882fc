"""The llama.cpp engine writes JSON literals as LM Studio's C++ converter writes them.

The C++ converter dumps an enum value, a const or a property name with its JSON library:
compact, and a non-ASCII character as it is. llama-cpp-python's port uses ``json.dumps``,
so the grammar asked for ``"caf\\u00e9"`` where LM Studio asks for ``"café"``, and for
``{"a": 1}`` where LM Studio asks for ``{"a":1}``. Each grammar here is matched by
llama.cpp's own grammar code (the vocab-only harness).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from outlines_lmstudio.testing._llama import json_schema_grammar

if TYPE_CHECKING:
    from ._llama_harness import LlamaGrammarHarness


@pytest.mark.parametrize(
    ("schema", "taken", "refused"),
    [
        ({"enum": ["café", "名前"]}, ['"café"', '"名前"'], ['"caf\\u00e9"']),
        ({"const": {"a": [1, "é"]}}, ['{"a":[1,"é"]}'], ['{"a": [1, "\\u00e9"]}']),
        (
            {"type": "object", "properties": {"é": {"type": "integer"}}, "required": ["é"]},
            ['{"é": 1}'],
            ['{"\\u00e9": 1}'],
        ),
        ({"enum": ['a"b\\c', "x\ny"]}, ['"a\\"b\\\\c"', '"x\\ny"'], []),
    ],
)
def test_literals_are_dumped_as_llama_cpp_dumps_them(
    llama: LlamaGrammarHarness, schema: dict[str, Any], taken: list[str], refused: list[str]
) -> None:
    llama.assert_language(json_schema_grammar(schema), taken, refused)
