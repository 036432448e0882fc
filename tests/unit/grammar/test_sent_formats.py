"""A ``format: time`` sent as its pattern is read by llama.cpp as the time it stands for.

The pattern is sent for outlines-core's sake (its ``time`` regex is miswritten); llama.cpp
reads a pattern before a format too, so its grammar must still take every time and only
times. Matched by llama.cpp's own grammar code (the vocab-only harness).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from outlines_lmstudio._dialects import dialect_schema
from outlines_lmstudio.testing._llama import json_schema_grammar

if TYPE_CHECKING:
    from ._llama_harness import LlamaGrammarHarness


def test_the_time_pattern_is_a_time_to_llama_cpp(llama: LlamaGrammarHarness) -> None:
    sent = dialect_schema({"type": "string", "format": "time"}, "gguf")
    llama.assert_language(
        json_schema_grammar(sent),
        ['"13:13:25Z"', '"23:59:59.5+02:00"', '"00:00:00-11:30"'],
        ['"13:13:25"', '"24:00:00Z"', '"13:13:25\\\\d1Z"', '"1:2:3Z"'],
    )
