"""Random JSON schemas through the model and the emulator: every output validates."""

import json
from typing import Any

import jsonschema
import lmstudio as lms
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outlines_lmstudio import from_lmstudio
from outlines_lmstudio.testing import LMStudioEmulator

from .conftest import TEXT_MODEL

names = st.text(alphabet="abcdefghij", min_size=1, max_size=6)
leaves = st.one_of(
    st.just({"type": "string"}),
    st.builds(lambda n: {"type": "string", "maxLength": n}, st.integers(1, 12)),
    st.just({"type": "integer"}),
    st.builds(
        lambda lo: {"type": "integer", "minimum": lo, "maximum": lo + 50}, st.integers(-100, 100)
    ),
    st.just({"type": "number"}),
    st.just({"type": "boolean"}),
    st.just({"type": "null"}),
    st.lists(names, min_size=1, max_size=4, unique=True).map(lambda e: {"enum": e}),
)


def objects(inner: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(names, inner, min_size=1, max_size=3).flatmap(
        lambda props: st.lists(st.sampled_from(sorted(props)), unique=True).map(
            lambda required: {"type": "object", "properties": props, "required": required}
        )
    )


schemas = st.recursive(
    leaves,
    lambda inner: st.one_of(
        objects(inner),
        inner.map(lambda item: {"type": "array", "items": item, "maxItems": 3}),
        st.lists(inner, min_size=2, max_size=3).map(lambda options: {"anyOf": options}),
    ),
    max_leaves=6,
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(schema=schemas, prompt=st.text(min_size=1, max_size=20).filter(str.strip))
def test_random_schemas_round_trip(
    client: lms.Client, emulator: LMStudioEmulator, schema: dict[str, Any], prompt: str
) -> None:
    text = from_lmstudio(client, TEXT_MODEL)(prompt, schema)
    jsonschema.validate(json.loads(text), schema)
    assert emulator.predictions[-1].structured == {"type": "json", "jsonSchema": schema}


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(schema=schemas)
def test_random_schemas_parse_to_valid_values(client: lms.Client, schema: dict[str, Any]) -> None:
    wrapped = {
        "type": "object",
        "properties": {"value": schema},
        "required": ["value"],
        "$defs": {},
    }
    value = from_lmstudio(client, TEXT_MODEL).parse("give me a value", wrapped)
    jsonschema.validate(value, wrapped)
