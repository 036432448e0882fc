"""The emulator's llama.cpp engine as LM Studio's: what its JSON-schema converter and its
text handling do with what a client sends (the real Gemma 3 270M, the tier's shared emulator).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import lmstudio as lms
import pydantic

from outlines_lmstudio.testing import LMStudioEmulator
from tests.real_engine.conftest import EMBED_KEY, EMBEDDED_MODEL_KEY


class _Node(pydantic.BaseModel):
    name: str
    children: list[_Node] = []


def test_a_lone_surrogate_reaches_llama_cpp_as_u_fffd(emulator: LMStudioEmulator) -> None:
    with lms.Client(emulator.api_host) as client:
        # Before: each of these failed with UnicodeEncodeError ("surrogates not allowed").
        model = client.llm.model(EMBEDDED_MODEL_KEY)
        assert model.tokenize("a \ud800 b") == model.tokenize("a \ufffd b")
        greedy: lms.LlmPredictionConfigDict = {"temperature": 0, "maxTokens": 3}
        reply = model.respond("a \ud800 b", config=greedy)
        assert reply.content == model.respond("a \ufffd b", config=greedy).content
        vectors = client.embedding.model(EMBED_KEY).embed(["a \ud800", "a \ufffd"])
        assert vectors[0] == vectors[1]


def test_llama_cpp_takes_a_recursive_pydantic_model(emulator: LMStudioEmulator) -> None:
    schema = _Node.model_json_schema()
    assert "$ref" in schema  # Pydantic writes a recursive model as a "$ref" root
    with lms.Client(emulator.api_host) as client:
        # Before: "Failed to convert the JSON schema to a grammar: '#/$defs/_Node'"
        # (llama.cpp's converter resolves the nested reference).
        result = client.llm.model(EMBEDDED_MODEL_KEY).respond(
            "A tree of two nodes, as JSON.",
            response_format=_Node,
            config={"temperature": 0, "maxTokens": 60},
        )
    if result.stats.stop_reason == "eosFound":
        _Node.model_validate_json(result.content)
    else:
        assert result.content.startswith("{")


def test_llama_cpp_keeps_the_keywords_beside_a_type_list(emulator: LMStudioEmulator) -> None:
    person = {
        "type": ["object", "null"],
        "properties": {"age": {"type": "integer", "minimum": 30, "maximum": 30}},
        "required": ["age"],
        "additionalProperties": False,
    }
    seven = {"type": ["integer", "null"], "minimum": 7, "maximum": 7}
    greedy: lms.LlmPredictionConfigDict = {"temperature": 0, "maxTokens": 40}
    with lms.Client(emulator.api_host) as client:
        model = client.llm.model(EMBEDDED_MODEL_KEY)
        # Before: each type was converted alone ({"type": "object"}: any object), so the
        # model wrote '{ "person": {...}, "gender": "female" }' and '-1000000000000000'.
        for schema, allowed in ((person, ({"age": 30}, None)), (seven, (7, None))):
            reply = model.respond(
                "Extract the person as JSON: Mary, aged 30.",
                response_format={"type": "json", "jsonSchema": schema},
                config=greedy,
            )
            assert json.loads(reply.content) in allowed


def test_llama_cpp_reads_an_enum_behind_all_of(emulator: LMStudioEmulator) -> None:
    # A $ref wrapped in allOf (Pydantic 1, OpenAPI generators) to give it a default.
    schema = {
        "type": "object",
        "properties": {"color": {"allOf": [{"$ref": "#/$defs/Color"}], "default": "red"}},
        "required": ["color"],
        "$defs": {"Color": {"type": "string", "enum": ["red", "green"]}},
    }
    with lms.Client(emulator.api_host) as client:
        reply = client.llm.model(EMBEDDED_MODEL_KEY).respond(
            "The car is green. Its color as JSON:",
            response_format={"type": "json", "jsonSchema": schema},
            config={"temperature": 0, "maxTokens": 20},
        )
    # Before: the port read allOf as properties only, so "color" had to be {}.
    assert json.loads(reply.content)["color"] in ("red", "green")


def test_llama_cpp_counts_a_patterns_repetition(emulator: LMStudioEmulator) -> None:
    schema = {"type": "string", "pattern": "^[a-z]{1,3000}$"}
    with lms.Client(emulator.api_host) as client:
        # Before: "The LM Studio emulator failed to serve this request: RecursionError"
        # (the port nested 3000 optional groups; llama.cpp writes [a-z]{1,3000}).
        reply = client.llm.model(EMBEDDED_MODEL_KEY).respond(
            "One word:",
            response_format={"type": "json", "jsonSchema": schema},
            config={"temperature": 0, "maxTokens": 8},
        )
    assert reply.content.startswith('"')
    assert reply.content[1:2].isalpha()


def _complete_raw_text(emulator: LMStudioEmulator, raw: str, fields: list[dict[str, Any]]) -> Any:
    """Send ``completeRawText`` (the TypeScript SDK 2.x's ``complete()``); return its stats."""
    from websockets.sync.client import connect

    with connect(f"ws://{emulator.api_host}/llm") as ws:
        auth = {"authVersion": 1, "clientIdentifier": str(uuid.uuid4()), "clientPasskey": "pk"}
        ws.send(json.dumps(auth))
        assert json.loads(ws.recv(timeout=5)) == {"success": True}
        parameter = {
            "modelSpecifier": {"type": "query", "query": {"identifier": EMBEDDED_MODEL_KEY}},
            "rawPrompt": raw,
            "predictionConfigStack": {
                "layers": [{"layerName": "apiOverride", "config": {"fields": fields}}]
            },
        }
        create = {"type": "channelCreate", "endpoint": "completeRawText", "channelId": 0}
        ws.send(json.dumps({**create, "creationParameter": parameter}))
        while True:
            frame = json.loads(ws.recv(timeout=60))
            assert frame["type"] == "channelSend", frame
            if frame["message"]["type"] == "success":
                return frame["message"]["stats"]


def test_complete_raw_text_reads_the_prompt_without_the_chat_template(
    emulator: LMStudioEmulator,
) -> None:
    raw = "The capital of France is"
    with lms.Client(emulator.api_host) as client:
        model = client.llm.model(EMBEDDED_MODEL_KEY)
        python = model.complete(raw, config={"temperature": 0, "maxTokens": 1})
    fields: list[dict[str, Any]] = [
        {"key": "llm.prediction.temperature", "value": 0},
        {"key": "llm.prediction.maxPredictedTokens", "value": {"checked": True, "value": 1}},
    ]
    stats = _complete_raw_text(emulator, raw, fields)
    # Before: the raw prompt was wrapped in Gemma's turn format (14 tokens, not 6).
    assert stats["promptTokensCount"] == python.stats.prompt_tokens_count
