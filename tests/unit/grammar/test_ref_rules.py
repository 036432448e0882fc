"""References LM Studio's llama.cpp converter would give one grammar rule are told apart.

The C++ converter names a reference's rule after its path, each run of characters other
than letters, digits and ``-`` as one ``-``, and reuses a rule of that name: two Pydantic
models ``Pair_A`` and ``Pair__A`` got one rule (found by a probe: every reply on a GGUF
model failed validation). Each grammar here is matched by llama.cpp's own grammar code.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from typing import TYPE_CHECKING, Annotated, Any

import jsonschema
import pytest
from pydantic import BaseModel, Field

from outlines_lmstudio._dialects import dialect_schema
from outlines_lmstudio._output import plan_output
from outlines_lmstudio._rewrites import ref_rule_clashes, root_rule_clashes
from outlines_lmstudio.errors import UnsupportedOutputTypeError
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


@pytest.mark.parametrize("flags", [[], ["-O"]], ids=["plain", "python -O"])
def test_a_remote_reference_is_refused_and_never_fetched(flags: list[str]) -> None:
    """Found by a probe: the port refuses to fetch with an ``assert``, which ``python -O``
    drops; the emulator's real engine then fetched the URL a client sent, with no timeout."""
    pytest.importorskip("llama_cpp")
    code = (
        "import requests\n"
        "def fetch(url, *args, **kwargs):\n"
        "    raise SystemExit('fetched ' + url)\n"
        "requests.get = fetch\n"
        "from outlines_lmstudio.testing._llama import json_schema_grammar\n"
        "try:\n"
        "    json_schema_grammar({'properties': {'a': {'$ref': 'https://10.255.255.1/x.json'}}})\n"
        "except ValueError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, *flags, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    expected = "Fetching remote schemas is not allowed: https://10.255.255.1/x.json"
    assert done.stdout.strip() == expected


class _Log(BaseModel):
    date_time: str | None = None
    timestamp: datetime.datetime


class _Stat(BaseModel):
    integral_part: Annotated[str, Field(max_length=3)]
    n: int


class A_B(BaseModel):  # the name of a user's model, as found
    n: Annotated[int, Field(ge=1, le=9)]


class A(BaseModel):
    B: Annotated[str, Field(max_length=3)]


class _Root(BaseModel):
    p: A
    q: A_B


_REF_NAMED_PROPERTY = {
    "type": "object",
    "properties": {"ref_defs_A": {"type": "string", "maxLength": 3}, "x": {"$ref": "#/$defs/A"}},
    "required": ["ref_defs_A", "x"],
    "$defs": {"A": {"type": "integer", "minimum": 1, "maximum": 9}},
}


@pytest.mark.parametrize(
    ("schema", "valid", "invalid"),
    [
        (
            _Log.model_json_schema(),
            '{"timestamp": "2024-05-01T10:00:00Z", "date_time": "x"}',
            '{"timestamp": "": 2024-05-01T10:00:00Z, " ","date_time": "x"}',
        ),
        (
            _Stat.model_json_schema(),
            '{"integral_part": "abc", "n": 5}',
            '{"integral_part": "a", "n": ": 5"}',
        ),
        (
            _Root.model_json_schema(),
            '{"p": {"B": "abc"}, "q": {"n": 5}}',
            '{"p": {"B": "abc"}, "q": ":{"}',
        ),
        (_REF_NAMED_PROPERTY, '{"ref_defs_A": "abc", "x": 5}', '{"ref_defs_A": "abc", "x": ":5"}'),
    ],
    ids=["date_time", "integral_part", "ref-and-property", "property-named-as-ref"],
)
def test_rules_named_alike_by_escaping_keep_their_own(
    llama: LlamaGrammarHarness, schema: dict[str, Any], valid: str, invalid: str
) -> None:
    """Found by a probe: a root property ``date_time`` got the rule ``date-time``, so a
    ``format: date-time`` field was built on it (``integral_part``: every integer); the
    property ``B`` of ``A`` got ``A_B``'s reference rule. Replies were invalid JSON (the
    invalid strings here are what Gemma 3 270M wrote on the real engine)."""
    for engine in ("gguf", "mlx", None):
        sent = dialect_schema(schema, engine)
        assert root_rule_clashes(sent) == []
        assert ref_rule_clashes(sent) == []
        jsonschema.validate(json.loads(valid), sent)  # the same valid values as the user's
    llama.assert_language(json_schema_grammar(dialect_schema(schema, "gguf")), [valid], [invalid])


def test_a_clash_with_a_reference_into_the_root_is_refused_before_sending() -> None:
    schema = {
        "type": "object",
        "properties": {
            "date_time": {"type": "string", "maxLength": 3},
            "copy": {"$ref": "#/properties/date_time"},
            "at": {"type": "string", "format": "date-time"},
        },
    }
    with pytest.raises(UnsupportedOutputTypeError, match="gets the grammar rule 'date-time'"):
        plan_output(schema)


def test_a_shielded_root_keeps_its_id_where_its_references_resolve() -> None:
    """Found by a review: the ``$id`` went into the branch, a resource of its own, where
    ``#/$defs/D`` pointed to nothing."""
    schema = {
        "$id": "https://example.com/s",
        "type": "object",
        "properties": {"date_time": {"$ref": "#/$defs/D"}},
        "required": ["date_time"],
        "$defs": {"D": {"type": "integer"}},
    }
    sent = dialect_schema(schema, "gguf")
    assert sent["$id"] == "https://example.com/s"
    assert "anyOf" in sent
    assert jsonschema.Draft202012Validator(sent).is_valid({"date_time": 1})


def test_a_rename_that_would_take_a_root_propertys_rule_is_not_made() -> None:
    """Found by a review: ``A_B`` renamed ``A-B-2`` took the rule of the root property
    ``ref_defs_A_B_2``, with a reference into the root that the shield cannot take: every
    reply failed. The rename avoids it, and what is left is refused."""
    schema = {
        "type": "object",
        "properties": {
            "ref_defs_A_B_2": {"type": "string", "maxLength": 3},
            "x": {"$ref": "#/$defs/A"},
            "y": {"$ref": "#/$defs/A_B"},
            "z": {"$ref": "#/properties/x"},
        },
        "required": ["ref_defs_A_B_2", "x", "y", "z"],
        "$defs": {
            "A": {"type": "object", "properties": {"B": {"type": "boolean"}}, "required": ["B"]},
            "A_B": {"type": "integer"},
        },
    }
    sent = dialect_schema(schema, "gguf")
    assert root_rule_clashes(sent) == []
    assert ref_rule_clashes(sent) == []
    assert "A-B-2" not in sent["$defs"]
