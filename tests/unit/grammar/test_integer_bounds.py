"""The llama.cpp engine constrains integer bounds, as LM Studio's C++ converter does.

llama-cpp-python's Python port of the JSON-schema converter ignores ``minimum``,
``maximum``, ``exclusiveMinimum`` and ``exclusiveMaximum`` on an integer (the C++
converter LM Studio runs turns them into a grammar), so the emulator's llama.cpp
engine wrote ``{"n": 1000000000000000}`` for ``{"minimum": 10, "maximum": 99}``.
Each grammar here is matched by llama.cpp's own grammar code (the vocab-only harness).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outlines_lmstudio.testing._llama import json_schema_grammar

from .conftest import LLAMA_MISSING

if TYPE_CHECKING:
    from ._llama_harness import LlamaGrammarHarness

_BOUND = st.one_of(st.none(), st.integers(-1200, 1200), st.integers(-(10**18), 10**18))


def _contains(low: int | None, high: int | None, value: int) -> bool:
    return (low is None or low <= value) and (high is None or value <= high)


def _near(low: int | None, high: int | None) -> list[int]:
    """Integers around the bounds, where a range grammar goes wrong."""
    values = {0, 1, -1, 9, 10, -10, 99, 100, 10**15, 10**15 - 1, -(10**15)}
    for bound in (low, high):
        if bound is not None:
            values |= {bound + d for d in (-11, -10, -9, -1, 0, 1, 9, 10, 11)}
            values |= {bound * 10, bound // 10}
    return sorted(values)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(low=_BOUND, high=_BOUND, exclusive=st.booleans())
def test_integer_bounds_become_the_grammar(
    llama: LlamaGrammarHarness, low: int | None, high: int | None, exclusive: bool
) -> None:
    if low is None and high is None:
        return
    if low is not None and high is not None and low > high:
        low, high = high, low
    schema: dict[str, Any] = {"type": "integer"}
    if exclusive:
        if low is not None:
            schema["exclusiveMinimum"] = low - 1
        if high is not None:
            schema["exclusiveMaximum"] = high + 1
    else:
        if low is not None:
            schema["minimum"] = low
        if high is not None:
            schema["maximum"] = high
    gbnf = json_schema_grammar(schema)
    for value in _near(low, high):
        if len(str(abs(value))) > 16 and _contains(low, high, value):
            continue  # an unbounded side stops at 16 digits, as the converter's integers do
        assert llama.matches(gbnf, str(value)) == _contains(low, high, value), (value, gbnf)
    for wrong in ("-0", "00", "01", "+1", "1.0", ""):
        assert not llama.matches(gbnf, wrong), (wrong, gbnf)


def test_bounds_in_an_object_and_fractional_bounds(llama: LlamaGrammarHarness) -> None:
    schema = {
        "type": "object",
        "properties": {"age": {"type": "integer", "minimum": 0.5, "maximum": 120.9}},
        "required": ["age"],
    }
    gbnf = json_schema_grammar(schema)
    assert llama.matches(gbnf, '{"age": 120}')
    assert llama.matches(gbnf, '{"age": 1}')
    assert not llama.matches(gbnf, '{"age": 0}')
    assert not llama.matches(gbnf, '{"age": 121}')


@pytest.mark.skipif(LLAMA_MISSING, reason="json_schema_grammar runs llama.cpp's converter")
def test_bounds_no_integer_meets_fail_the_conversion() -> None:
    with pytest.raises(ValueError, match="no integer"):
        json_schema_grammar({"type": "integer", "minimum": 5, "exclusiveMaximum": 5})


def test_an_integer_bound_beside_a_union_or_an_enum_is_left_to_them(
    llama: LlamaGrammarHarness,
) -> None:
    # As in the converter: const, enum, anyOf and $ref come before the type's own keywords.
    assert llama.matches(json_schema_grammar({"enum": [200], "maximum": 9}), "200")
    gbnf = json_schema_grammar({"type": "integer", "const": 200, "maximum": 9})
    assert llama.matches(gbnf, "200")
