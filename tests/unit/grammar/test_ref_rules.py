"""References LM Studio's llama.cpp converter would give one grammar rule are told apart.

The C++ converter names a reference's rule after its path, each run of characters other
than letters, digits and ``-`` as one ``-``, and reuses a rule of that name: two Pydantic
models ``Pair_A`` and ``Pair__A`` got one rule (found by a probe: every reply on a GGUF
model failed validation). Each grammar here is matched by llama.cpp's own grammar code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from outlines_lmstudio._dialects import dialect_schema
from outlines_lmstudio.testing._llama import json_schema_grammar
from tests.e2e.test_schema_dialects import Both  # Pair_A and Pair__A

if TYPE_CHECKING:
    from ._llama_harness import LlamaGrammarHarness


def test_two_definitions_named_alike_keep_their_own_rules(llama: LlamaGrammarHarness) -> None:
    sent = dialect_schema(Both.model_json_schema(), "gguf")
    llama.assert_language(
        json_schema_grammar(sent),
        ['{"x": {"i": 1}, "y": {"s": "a"}}'],
        ['{"x": {"i": 1}, "y": {"i": 2}}'],
    )
