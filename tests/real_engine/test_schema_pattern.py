"""Schemas in the engine's dialect through the real llama.cpp engine (Gemma 3 270M)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import lmstudio as lms
import pydantic
import pytest

from outlines_lmstudio import from_lmstudio
from outlines_lmstudio.testing import LMStudioEmulator
from tests.real_engine.conftest import EMBEDDED_MODEL_KEY


class Ticket(pydantic.BaseModel):
    code: str = pydantic.Field(pattern=r"[A-Z]{3}-\d+")


def test_unanchored_pydantic_pattern_works_end_to_end(
    client: lms.Client, emulator: LMStudioEmulator
) -> None:
    """Sent unanchored, llama.cpp's converter would refuse (Python port) or accept any string
    (C++); sent in the anchored form, the real engine writes a value the pattern finds."""
    model = from_lmstudio(client, EMBEDDED_MODEL_KEY)
    ticket = model.parse(
        'What is the ticket code in "ABC-12 opened"? Answer in JSON with the key code.',
        Ticket,
        max_tokens=48,
        temperature=0,
    )
    assert re.search(r"[A-Z]{3}-\d+", ticket.code)  # a search, as in JSON Schema and Pydantic
    sent = emulator.predictions[-1].structured
    assert sent is not None
    pattern = sent["jsonSchema"]["properties"]["code"]["pattern"]
    assert pattern.startswith("^")
    assert pattern.endswith("$")


class Drink(pydantic.BaseModel):
    name: str = pydantic.Field(pattern=r"^Café?$")


def test_a_quantified_non_ascii_character_works_end_to_end(
    client: lms.Client, emulator: LMStudioEmulator
) -> None:
    """Found by a differential fuzz: sent as it is, ``é?`` had its last UTF-8 byte repeated
    alone by llama.cpp's C++ converter, and llama.cpp refused the grammar. Sent in a group,
    the real engine writes a value."""
    model = from_lmstudio(client, EMBEDDED_MODEL_KEY)
    drink = model.parse(
        'Which drink is ordered in "One Café, please"? Answer in JSON with the key name.',
        Drink,
        max_tokens=32,
        temperature=0,
    )
    assert drink.name in ("Café", "Caf")
    sent = emulator.predictions[-1].structured
    assert sent is not None
    assert sent["jsonSchema"]["properties"]["name"]["pattern"] == "^Caf(é)?$"


def test_a_raw_client_sending_a_quantified_non_ascii_character_fails_as_on_lm_studio(
    client: lms.Client,
) -> None:
    """The engine writes the grammar LM Studio's C++ converter writes (``"Caf\\xc3"
    "\\xa9"?``), which llama.cpp's parser refuses: the prediction fails."""
    schema = {"type": "object", "properties": {"name": {"type": "string", "pattern": "^Café?$"}}}
    refused = r"Failed to parse the grammar: failed to parse grammar: expected '\)'"
    with pytest.raises(lms.LMStudioServerError, match=refused):
        client.llm.model(EMBEDDED_MODEL_KEY).respond(
            "Drink?", response_format={"type": "json", "jsonSchema": schema}
        )


def test_a_raw_client_sending_a_long_one_sided_integer_range_fails_as_on_lm_studio(
    client: lms.Client,
) -> None:
    """LM Studio's C++ converter writes ``minimum: 2**53`` alone as ``[0-9]{16,15}``, on which
    llama.cpp's grammar parser takes memory until the process dies; the engine, whose own
    range is right, fails the prediction as it fails such a grammar (found by a probe)."""
    schema = {"type": "object", "properties": {"id": {"type": "integer", "minimum": 2**53}}}
    refused = r"Failed to parse the grammar: the repetition \{16,15\} has a maximum below"
    with pytest.raises(lms.LMStudioServerError, match=refused):
        client.llm.model(EMBEDDED_MODEL_KEY).respond(
            "Id?", response_format={"type": "json", "jsonSchema": schema}
        )


def test_grammar_mode_off_keeps_dict_patterns_constrained(client: lms.Client) -> None:
    """A dict schema with an unanchored pattern and a \\d: the engine's output validates."""
    model = from_lmstudio(client, EMBEDDED_MODEL_KEY)
    schema = {
        "type": "object",
        "properties": {"zip": {"type": "string", "pattern": r"\d{5}"}},
        "required": ["zip"],
    }
    value = model.parse(
        'What is the postcode in "10178 Berlin"? Answer in JSON with the key zip.',
        schema,
        max_tokens=48,
        temperature=0,
    )
    assert re.search(r"[0-9]{5}", value["zip"])


def test_literals_with_quotes_and_backslashes_are_constrained(client: lms.Client) -> None:
    """Enum values and consts holding ``"`` or a backslash reach the grammar escaped.

    llama-cpp-python's port of the converter left the backslash unescaped: the grammar did not
    parse (the prediction failed) or matched invalid JSON such as ``"C:\\temp"``. (A property
    name holding them is refused before sending: outlines-core, MLX's engine, would write it
    unescaped, and the engine is not known when the schema is checked.)
    """
    key = "path"
    values = ['say "hi"', "C:\\temp"]
    schema = {"type": "object", "properties": {key: {"enum": values}}, "required": [key]}
    model = from_lmstudio(client, EMBEDDED_MODEL_KEY)
    value = model.parse("Pick one of the values, as JSON:", schema, max_tokens=32, temperature=0)
    assert value[key] in values
    for literal in values:
        const = {"const": literal}
        assert model.parse("A value, as JSON:", const, max_tokens=16, temperature=0) == literal


_HUGE_REPETITION = """
import lmstudio as lms
from outlines_lmstudio import LMStudioPredictionError, from_lmstudio
from outlines_lmstudio.testing import LMStudioEmulator, embedded_model

with LMStudioEmulator([embedded_model()]) as emulator, lms.Client(emulator.api_host) as client:
    model = from_lmstudio(client, embedded_model().key)
    try:
        print(repr(model("A string:", {"type": "string", "maxLength": 100000}, max_tokens=4)))
    except LMStudioPredictionError as exc:
        print(exc)
"""


def test_a_huge_max_length_is_a_counted_repetition(real_emulator: LMStudioEmulator) -> None:
    """{"maxLength": 100000} became a grammar nested 100,000 groups deep: llama.cpp's parser
    overflowed the stack and killed the process (run apart, so it cannot kill pytest); later
    the engine refused it. It is now written as LM Studio's C++ converter writes it,
    ``char{0,100000}``, which llama.cpp runs (an upper bound over 2000 is not enforced: the
    library reports it loose), so the prediction runs."""
    done = subprocess.run(
        [sys.executable, "-c", _HUGE_REPETITION], capture_output=True, text=True, timeout=100
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("'\""), done.stdout  # the reply: a JSON string begun


def test_integer_bounds_are_constrained(client: lms.Client) -> None:
    """As LM Studio's C++ converter: before, the port's grammar let 1000000000000000 through."""
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 10, "maximum": 99}},
        "required": ["n"],
    }
    llm = client.llm.model(EMBEDDED_MODEL_KEY)
    config: lms.LlmPredictionConfigDict = {"temperature": 0, "maxTokens": 24}
    result = llm.respond("Give an example as JSON.", response_format=schema, config=config)
    assert isinstance(result.parsed, dict)
    assert 10 <= result.parsed["n"] <= 99


def test_strings_hold_no_raw_control_characters(client: lms.Client) -> None:
    """As LM Studio's C++ converter: the port's ``char`` rule let a raw newline into a string.

    Greedy Gemma 3 270M wrote ``"\\n"`` with a real line break: invalid JSON, from constrained
    decoding.
    """
    llm = client.llm.model(EMBEDDED_MODEL_KEY)
    config: lms.LlmPredictionConfigDict = {"temperature": 0, "maxTokens": 8, "cpuThreads": 1}
    result = llm.respond("Name:", response_format={"type": "string"}, config=config)
    assert not re.search(r"[\x00-\x1f\x7f]", result.content.strip())
    if result.stats.stop_reason == "eosFound":
        assert isinstance(json.loads(result.content), str)


def test_escaped_dots_dollars_and_carets_in_a_pattern_are_the_characters(
    client: lms.Client,
) -> None:
    r"""As LM Studio's C++ converter: ``\.``, ``\$`` and ``\^`` are the characters.

    The port kept the backslash (``"\."``), and llama.cpp's grammar parser refused the
    grammar ("unknown escape"): a version pattern failed the prediction (found by a probe).
    """
    llm = client.llm.model(EMBEDDED_MODEL_KEY)
    config: lms.LlmPredictionConfigDict = {"temperature": 0, "maxTokens": 40}
    patterns = {  # with a value the prompt shows: a base model left to itself may not end
        r"^v[0-9]\.[0-9]{1,2}$": "v1.25",
        r"^\$[0-9]{1,3}\.[0-9]{2}$": "$12.50",
        r"^\^[a-z]+$": "^top",
        r"^[a-z]+\.com$": "example.com",
    }
    for pattern, shown in patterns.items():
        schema = {
            "type": "object",
            "properties": {"v": {"type": "string", "pattern": pattern}},
            "required": ["v"],
        }
        prompt = f'The value is {shown}. As JSON: {{"v": "{shown}"}}. The value as JSON:'
        result = llm.respond(prompt, response_format=schema, config=config)
        assert result.stats.stop_reason == "eosFound", result.content
        assert isinstance(result.parsed, dict)
        assert re.fullmatch(pattern, result.parsed["v"]), result.content


def test_a_schema_that_is_not_an_object_fails_with_llama_cpps_reason(client: lms.Client) -> None:
    """As LM Studio's C++ converter: its schema builder's message, not Python's.

    ``jsonSchema: true`` failed with "'bool' object has no attribute 'get'".
    """
    llm = client.llm.model(EMBEDDED_MODEL_KEY)
    for schema in (True, False, [1], "x"):
        structured: Any = {"type": "json", "jsonSchema": schema}
        with pytest.raises(lms.LMStudioServerError) as caught:
            llm.respond("x", response_format=structured, config={"maxTokens": 5})
        message = str(caught.value)
        assert "JSON schema error at #: schema must be an object" in message
        assert "attribute" not in message
