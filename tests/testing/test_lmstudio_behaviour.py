"""What the emulator does the way the current LM Studio does it (issue 11), and its safety."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict, get_args

import jsonschema
import lmstudio as lms
import pytest

from outlines_lmstudio.testing import (
    EmulatedModel,
    EmulatorExposedWarning,
    Fault,
    LMStudioEmulator,
    ToolCall,
    default_models,
    reasoning_models,
)
from outlines_lmstudio.testing._catalogue import MODEL_FORMATS, Catalogue
from outlines_lmstudio.testing._server import is_loopback

from ..cpp_converter import CPP_CONVERTER, run_cpp_converter
from ..private_network import require_private_network
from .conftest import EMBED, MLX, TEXT, UNLOADED, MakeEmulator, raw_rpc, raw_socket

LLAMA_PATH = "hugging-quants/Llama-3.2-1B-Instruct-Q8_0-GGUF/llama-3.2-1b-instruct-q8_0.gguf"


def _llama(**kwargs: object) -> EmulatedModel:
    return EmulatedModel(
        "llama-3.2-1b-instruct",
        path=LLAMA_PATH,
        aliases=["hugging-quants/llama-3.2-1b-instruct"],
        **kwargs,  # type: ignore[arg-type]
    )


# -- names: paths, publishers, alternative names ---------------------------------------


def test_a_model_has_lm_studio_style_path_and_publisher(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator(models=[_llama()])
    with lms.Client(emulator.api_host) as client:
        (info,) = [m.info for m in client.list_downloaded_models()]
    assert info.path == LLAMA_PATH
    assert emulator.trace  # publisher and indexedModelIdentifier are on the wire
    listed = [
        f.data for f in emulator.trace if f.direction == "out" and f.data.get("type") == "rpcResult"
    ][-1]["result"][0]
    assert listed["publisher"] == "hugging-quants"
    assert listed["indexedModelIdentifier"] == LLAMA_PATH
    assert listed["deviceIdentifier"] is None


@pytest.mark.parametrize(
    "name", ["llama-3.2-1b-instruct", "hugging-quants/llama-3.2-1b-instruct", LLAMA_PATH]
)
def test_key_alias_and_path_resolve_like_lm_studio(make_emulator: MakeEmulator, name: str) -> None:
    emulator = make_emulator(models=[_llama()])
    with lms.Client(emulator.api_host) as client:
        assert client.llm.model(name).identifier == "llama-3.2-1b-instruct"
        # A model-specific call may name the model too, not only the instance.
        assert client.llm.get_model_info(name).identifier == "llama-3.2-1b-instruct"
        with pytest.raises(lms.LMStudioModelNotFoundError):
            client.llm.get_model_info("hugging-quants/no-such-model")


def test_a_path_query_ignores_case(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator(models=[_llama(loaded=False)])
    with lms.Client(emulator.api_host) as client:
        model = client.llm.model(LLAMA_PATH.upper())
    assert model.identifier == "llama-3.2-1b-instruct"


def test_a_variant_s_key_without_its_variant_names_the_model(make_emulator: MakeEmulator) -> None:
    """LM Studio takes a model's default variant for its key without ``@variant`` (found by
    a probe: the emulator said "Cannot find a model with path")."""
    emulator = make_emulator(models=[EmulatedModel("qwen/qwen3-4b@q4_k_m", loaded=False)])
    with lms.Client(emulator.api_host) as client:
        assert client.llm.model("qwen/qwen3-4b").get_info().model_key == "qwen/qwen3-4b@q4_k_m"
        with pytest.raises(lms.LMStudioServerError, match="Cannot find a model with path"):
            client.llm.model("qwen/qwen3-4b@q8_0")


def test_a_display_name_is_not_a_model_name(make_emulator: MakeEmulator) -> None:
    """Found by a probe: getOrLoad by display name loaded a second instance (``key:2``)."""
    emulator = make_emulator(models=[_llama(display_name="Llama 3.2 1B Instruct")])
    with lms.Client(emulator.api_host) as client:
        display = client.llm.get_model_info("llama-3.2-1b-instruct").display_name
        assert display == "Llama 3.2 1B Instruct"
        with pytest.raises(lms.LMStudioServerError, match="Cannot find a model with path"):
            client.llm.model(display)
        with pytest.raises(lms.LMStudioServerError, match="Cannot find a model with path"):
            client.llm.load_new_instance(display)
        with pytest.raises(lms.LMStudioModelNotFoundError):
            client.llm.get_model_info(display)
        assert [m.identifier for m in client.llm.list_loaded()] == ["llama-3.2-1b-instruct"]


def test_catalogue_names_must_be_unique() -> None:
    with pytest.raises(ValueError, match=r"hugging-quants/llama-3\.2-1b-instruct"):
        Catalogue(
            [_llama(), EmulatedModel("other", aliases=["hugging-quants/llama-3.2-1b-instruct"])]
        )
    with pytest.raises(TypeError, match="aliases"):
        EmulatedModel("x", aliases="not-a-list")


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"type": "bogus"}, "type must be one of"),
        ({"format": "mlx"}, "an MLX model is 'safetensors'"),
        ({"context_length": 0}, "context_length must be a positive integer"),
        ({"embedding_dims": -1}, "embedding_dims must be a positive integer"),
        ({"key": ""}, "key must be a non-empty string"),
        # found by a probe (a models file for `outlines-lmstudio emulator --models`): these
        # broke every listing ("unexpected ValidationError ... a bug" in the CLI), or were
        # read as true ("loaded": "no")
        ({"size_bytes": "big"}, "size_bytes must be a whole number of bytes"),
        ({"size_bytes": 1.5}, "size_bytes must be a whole number of bytes"),
        ({"size_bytes": -1}, "size_bytes must be a whole number of bytes"),
        ({"vision": "yes"}, "vision must be True or False"),
        ({"tool_use": 1}, "tool_use must be True or False"),
        ({"loaded": "no"}, "loaded must be True or False"),
        ({"identifier": 5}, "identifier must be a string"),
        ({"display_name": 5}, "display_name must be a string"),
        ({"params": 7}, "params must be a string"),
        ({"architecture": 5}, "architecture must be a string"),
        ({"path": 5}, "path must be a string"),
        ({"publisher": 5}, "publisher must be a string"),
        # found by a probe: served, where the library refuses such a name before sending
        (
            {"key": " m "},
            "the key has whitespace around it, which LM Studio's names do not: use 'm'",
        ),
        ({"identifier": "main\n"}, "the identifier has whitespace around it"),
    ],
)
def test_a_model_the_sdk_could_not_decode_is_refused(fields: dict[str, Any], problem: str) -> None:
    # Before, such a model broke every listing in the client (LMStudioClientError or a
    # msgspec ValidationError) instead of failing where it was written.
    with pytest.raises(ValueError, match=problem):
        EmulatedModel(**{"key": "x", **fields})


def test_a_gguf_model_cannot_claim_vision(tmp_path: Any) -> None:
    # The llama.cpp engine serves GGUF files text-only (no vision projector). Before, such a
    # model was listed with vision, took images, and answered without them, silently.
    with pytest.raises(ValueError, match="text-only"):
        EmulatedModel("x", gguf=tmp_path / "missing.gguf", vision=True)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("format", "safetensors"),
        ("context_length", 2048),
        ("embedding_dims", 17),
        ("reasoning", "think"),
    ],
)
def test_what_a_gguf_file_says_is_not_given_as_well(
    tmp_path: Any, field: str, value: object
) -> None:
    """Found by a probe: each was silently replaced by the file's value, or never used."""
    with pytest.raises(ValueError, match=f"so {field}={value!r} would not be used: leave it out"):
        EmulatedModel("x", gguf=tmp_path / "missing.gguf", **{field: value})  # type: ignore[arg-type]


def test_the_model_formats_are_the_sdks() -> None:
    from lmstudio._sdk_models import ModelCompatibilityType

    assert set(MODEL_FORMATS) == set(get_args(ModelCompatibilityType))


# -- JIT loading and time-to-live --------------------------------------------------------


def test_get_or_load_is_jit_with_the_clients_ttl(emu: LMStudioEmulator, client: lms.Client) -> None:
    model = client.llm.model(UNLOADED, ttl=300)
    info = [
        f.data["message"]["info"]
        for f in emu.trace
        if f.direction == "out" and f.data.get("message", {}).get("type") == "loadSuccess"
    ][-1]
    assert info["ttlMs"] == 300_000
    assert isinstance(info["lastUsedTime"], int)
    assert model.identifier == UNLOADED


def test_a_new_jit_model_unloads_the_other_jit_model(
    make_emulator: MakeEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    models = [_llama(loaded=False), EmulatedModel("smollm2-135m-instruct", loaded=False)]
    emulator = make_emulator(models=models)
    with lms.Client(emulator.api_host) as client:
        first = client.llm.model("llama-3.2-1b-instruct", ttl=300)
        client.llm.model("smollm2-135m-instruct", ttl=300)
        with pytest.raises(lms.LMStudioModelNotFoundError):
            first.get_info()
        loaded = [m.identifier for m in client.llm.list_loaded()]
    assert loaded == ["smollm2-135m-instruct"]
    sent = [
        f.data["message"] for f in emulator.trace if f.direction == "out" and "message" in f.data
    ]
    (notice,) = [m for m in sent if m.get("type") == "unloadingOtherJITModel"]
    assert notice["info"]["identifier"] == "llama-3.2-1b-instruct"


def test_of_two_overlapping_jit_loads_only_the_last_stays(make_emulator: MakeEmulator) -> None:
    # Found by a probe: a model still loading was not loaded yet when the second JIT load
    # started, so nothing evicted it and both stayed loaded.
    models = [EmulatedModel("a", loaded=False), EmulatedModel("b", loaded=False)]
    emulator = make_emulator(models=models, load_latency=0.6)

    def started(key: str) -> bool:
        return any(
            f.data.get("message", {}).get("type") == "startLoading"
            and f.data["message"]["identifier"] == key
            for f in emulator.trace
            if f.direction == "out"
        )

    with lms.Client(emulator.api_host) as c1, lms.Client(emulator.api_host) as c2:
        first = threading.Thread(target=c1.llm.model, args=("a",))
        first.start()
        emulator.wait_until(lambda: started("a"), timeout=10)
        second = threading.Thread(target=c2.llm.model, args=("b",))
        second.start()
        first.join(timeout=30)
        second.join(timeout=30)
        assert [m.identifier for m in c1.llm.list_loaded()] == ["b"]
    sent = [
        f.data["message"] for f in emulator.trace if f.direction == "out" and "message" in f.data
    ]
    (notice,) = [m for m in sent if m.get("type") == "unloadingOtherJITModel"]
    assert notice["info"]["identifier"] == "a"


def test_jit_eviction_can_be_turned_off(make_emulator: MakeEmulator) -> None:
    models = [_llama(loaded=False), EmulatedModel("smollm2-135m-instruct", loaded=False)]
    emulator = make_emulator(models=models, only_keep_last_jit_model=False)
    with lms.Client(emulator.api_host) as client:
        client.llm.model("llama-3.2-1b-instruct")
        client.llm.model("smollm2-135m-instruct")
        assert len(client.llm.list_loaded()) == 2


def test_an_explicit_load_is_not_jit_and_keeps_its_ttl(make_emulator: MakeEmulator) -> None:
    models = [_llama(loaded=False), EmulatedModel("smollm2-135m-instruct", loaded=False)]
    emulator = make_emulator(models=models)
    with lms.Client(emulator.api_host) as client:
        client.llm.load_new_instance("llama-3.2-1b-instruct", "kept", ttl=60)
        client.llm.model("smollm2-135m-instruct")  # a JIT load evicts JIT models only
        loaded = {m.identifier: m for m in client.llm.list_loaded()}
    assert set(loaded) == {"kept", "smollm2-135m-instruct"}
    kept = [
        i for i in emulator.trace if i.direction == "out" and i.data.get("type") == "rpcResult"
    ][-1].data["result"][0]
    assert kept["identifier"] == "kept"
    assert kept["ttlMs"] == 60_000


def test_integral_floats_are_numbers_as_lm_studio_reads_them(make_emulator: MakeEmulator) -> None:
    # The Python SDK sends ttl=1.5 as "ttlMs": 1500.0 and maxTokens=3.0 as the value 3.0;
    # LM Studio (JavaScript) reads both as integers. The SDK's own schema wants an int for
    # ttlMs, so the drift guard is off here.
    emulator = make_emulator(validate_frames=False)
    with lms.Client(emulator.api_host) as client:
        client.llm.load_new_instance(UNLOADED, "short", ttl=1.5)  # type: ignore[arg-type]
        result = client.llm.model(TEXT).respond("Hi", config={"maxTokens": 3.0})
        loaded = client.llm.list_loaded()
    assert [m.identifier for m in loaded][-1] == "short"
    listed = [
        i for i in emulator.trace if i.direction == "out" and i.data.get("type") == "rpcResult"
    ][-1].data["result"]
    # Before: a float was no number to the emulator: no time-to-live, no token limit.
    assert listed[-1]["ttlMs"] == 1_500
    assert result.stats.stop_reason == "maxPredictedTokensReached"
    assert result.stats.predicted_tokens_count == 3


def test_an_instance_unused_for_its_ttl_is_unloaded() -> None:
    catalogue = Catalogue([EmulatedModel("m", loaded=False)])
    instance = catalogue.load(catalogue.models["m"], ttl_ms=1_000)
    now = instance.last_used
    assert catalogue.expire(now + 0.5) == []
    assert catalogue.expire(now + 1.5) == [instance]
    assert catalogue.find_instance("m") is None


# -- tool calls ------------------------------------------------------------------------


def _add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def test_act_runs_a_scripted_tool_round(emu: LMStudioEmulator, client: lms.Client) -> None:
    emu.script(TEXT, [ToolCall("_add", {"a": 20, "b": 22}, text="Adding. "), "It is 42."])
    calls: list[tuple[int, int]] = []

    def add(a: int, b: int) -> int:
        """Add two integers."""
        calls.append((a, b))
        return a + b

    add.__name__ = "_add"
    results: list[lms.PredictionResult] = []
    act = client.llm.model(TEXT).act("Add them", [add], on_prediction_completed=results.append)
    assert calls == [(20, 22)]
    assert act.rounds == 2
    assert [r.content for r in results] == ["Adding. ", "It is 42."]
    assert results[0].stats.stop_reason == "toolCalls"
    tool_message = emu.predictions[-1].messages[-1]
    assert tool_message["role"] == "tool"
    assert tool_message["content"][0]["content"] == "42"
    assert emu.predictions[0].tool_calls[0].arguments == {"a": 20, "b": 22}
    # The record keeps the id the call was sent with, which the tool result names (found by
    # a probe: id=None was recorded for a call scripted without one).
    sent_id = emu.predictions[0].tool_calls[0].id
    assert sent_id is not None
    assert sent_id.startswith("call_")
    assert tool_message["content"][0]["toolCallId"] == sent_id


def test_the_prompt_template_keeps_tool_calls_and_results(
    emu: LMStudioEmulator, client: lms.Client
) -> None:
    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        return a * b

    emu.script(TEXT, [ToolCall("multiply", {"a": 6, "b": 7}, text="Let me see. "), "It is 42."])
    chat = lms.Chat()
    chat.add_user_message("What is 6 times 7?")
    model = client.llm.model(TEXT)
    model.act(chat, [multiply], on_message=chat.append)
    formatted = model.apply_prompt_template(chat)
    # Qwen2.5's template (the ChatML family the emulator writes) renders both.
    call = json.dumps({"name": "multiply", "arguments": {"a": 6, "b": 7}})
    assert f"<|im_start|>assistant\nLet me see. \n<tool_call>\n{call}\n</tool_call><|im_end|>" in (
        formatted
    )
    assert "<|im_start|>user\n<tool_response>\n42\n</tool_response><|im_end|>" in formatted
    assert formatted.endswith("It is 42.<|im_end|>\n<|im_start|>assistant\n")


def test_the_prompt_template_lists_the_tool_definitions(
    emu: LMStudioEmulator, client: lms.Client
) -> None:
    emu.script(TEXT, ["It is 5."])
    chat = lms.Chat("Answer briefly.")
    chat.add_user_message("What is 2 + 3?")
    model = client.llm.model(TEXT)
    stats: list[lms.LlmPredictionStats] = []
    model.act(chat, [_add], on_prediction_completed=lambda r: stats.append(r.stats))
    tools = emu.predictions[-1].config["llm.prediction.tools"]["tools"]
    formatted = model.apply_prompt_template(chat, {"toolDefinitions": tools})
    # Before: toolDefinitions were dropped, and a prediction's tools were not in its prompt.
    assert formatted.startswith("<|im_start|>system\nAnswer briefly.\n\n# Tools\n")
    listed = formatted.split("<tools>\n")[1].split("\n</tools>")[0]
    assert json.loads(listed) == tools[0]
    assert stats[0].prompt_tokens_count == model.count_tokens(formatted)


class _Point(TypedDict):
    x: int
    y: int


def _distance(p: _Point, q: _Point) -> float:
    """Distance between two points."""
    return float(((p["x"] - q["x"]) ** 2 + (p["y"] - q["y"]) ** 2) ** 0.5)


def test_a_tool_whose_parameters_refer_to_missing_defs_is_called(client: lms.Client) -> None:
    # The SDK writes a TypedDict parameter as {"$ref": "#/$defs/_Point"} without "$defs".
    # Before: the default call failed the prediction ("Cannot build a grammar for the tool
    # parameters: ... Invalid reference path"); a model is still offered the tool and
    # calls it, and the SDK reports arguments that do not fit.
    invalid: list[str] = []

    def report(exc: lms.LMStudioPredictionError, request: object) -> None:
        invalid.append(str(exc))

    result = client.llm.model(TEXT).act(
        "How far is (1, 2) from (4, 6)?", [_distance], handle_invalid_tool_request=report
    )
    assert result.rounds == 2
    assert len(invalid) == 1
    assert "_distance" in invalid[0]


def test_a_scripted_tool_call_without_tools_offered_is_an_error(
    emu: LMStudioEmulator, client: lms.Client
) -> None:
    # Before: the reply ended with stopReason "toolCalls" and no tool had been offered,
    # which LM Studio never does; .respond() returned "" and said nothing.
    emu.script(TEXT, [ToolCall("add", {"a": 1})])
    with pytest.raises(lms.LMStudioServerError, match="offered none"):
        client.llm.model(TEXT).respond("What is 1 + 0?")


def test_a_scripted_tool_call_on_acts_last_round_says_why_no_tool_was_offered(
    emu: LMStudioEmulator, client: lms.Client
) -> None:
    """Found by a probe: the SDK offers no tools on .act()'s last round, and the error's
    advice ("call .act() with tools") was what the test already did."""
    emu.script(TEXT, [ToolCall("_add", {"a": 1, "b": 2}), ToolCall("_add", {"a": 3, "b": 4})])
    with pytest.raises(lms.LMStudioServerError, match="no tools on its last round"):
        client.llm.model(TEXT).act("Add twice.", [_add], max_prediction_rounds=2)


def test_a_reply_function_that_is_async_is_refused_when_scripted(emu: LMStudioEmulator) -> None:
    """Found by a probe: it failed the prediction when called, and Python printed "coroutine
    'reply' was never awaited" into the test's output."""

    async def reply(prediction: object) -> str:
        return "never"

    class Replier:
        async def __call__(self, prediction: object) -> str:
            return "never"

    for script in (reply, [reply], Replier(), ["text", Replier()]):
        with pytest.raises(TypeError, match="is an async function"):
            emu.script(TEXT, script)  # type: ignore[arg-type]
    assert emu.predictions == []


def test_a_tool_model_calls_an_offered_tool_by_default(client: lms.Client) -> None:
    results: list[lms.PredictionResult] = []
    client.llm.model(TEXT).act("What is 2 + 3?", [_add], on_prediction_completed=results.append)
    assert len(results) == 2
    assert results[-1].content.startswith("The tool returned 5.")


@pytest.mark.parametrize("key", ["openai/gpt-oss-20b", "qwen3-4b-thinking-2507"])
def test_reasoning_models_trained_for_tools_call_an_offered_tool(
    make_emulator: MakeEmulator, key: str
) -> None:
    """Found by a probe: LM Studio reports gpt-oss and Qwen3 2507 as trained for tool use,
    the emulator's reasoning models did not, and ``.act()`` on them answered in text."""
    emu = make_emulator(models=[*default_models(), *reasoning_models()])
    with lms.Client(emu.api_host) as client:
        model = client.llm.model(key)
        info = model.get_info()
        assert isinstance(info, lms.LlmInstanceInfo)
        assert info.trained_for_tool_use
        model.act("What is 2 + 3?", [_add])
    assert emu.predictions[0].tool_calls[0].name == "_add"


def _tool_frames(emu: LMStudioEmulator, cancel_at: str | None = None) -> list[dict[str, Any]]:
    """Ask for a tool call over a raw socket; send a cancel on the first frame of a type."""
    tools = {
        "type": "toolArray",
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "add",
                    "parameters": {
                        "type": "object",
                        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                        "required": ["a", "b"],
                    },
                },
            }
        ],
    }
    fields = [{"key": "llm.prediction.tools", "value": tools}]
    parameter = {
        "modelSpecifier": {"type": "query", "query": {"identifier": TEXT}},
        "history": {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "What is 20 + 22?"}]}
            ]
        },
        "predictionConfigStack": {
            "layers": [{"layerName": "apiOverride", "config": {"fields": fields}}]
        },
    }
    frames: list[dict[str, Any]] = []
    with raw_socket(emu, "llm") as ws:
        ws.send(
            json.dumps(
                {
                    "type": "channelCreate",
                    "endpoint": "predict",
                    "channelId": 0,
                    "creationParameter": parameter,
                }
            )
        )
        while not frames or frames[-1].get("type") != "channelClose":
            frame = json.loads(ws.recv(timeout=10))
            frames.append(frame)
            if cancel_at is not None and frame.get("message", {}).get("type") == cancel_at:
                ws.send(
                    json.dumps(
                        {"type": "channelSend", "channelId": 0, "message": {"type": "cancel"}}
                    )
                )
                cancel_at = None
    return [f["message"] for f in frames if f.get("type") == "channelSend"]


def test_a_tool_call_s_arguments_stream_a_token_at_a_time(
    make_emulator: MakeEmulator,
) -> None:
    """Found by a probe: the arguments came as one fragment, in one burst after the text,
    uncounted, so a cancel never reached them."""
    emu = make_emulator(token_latency=0.02)
    messages = _tool_frames(emu)
    kinds = [m["type"] for m in messages]
    arguments = [m["content"] for m in messages if m["type"].endswith("ArgumentFragmentGenerated")]
    assert len(arguments) > 3
    assert json.loads("".join(arguments)) == {"a": 20, "b": 22}
    assert kinds[-2:] == ["toolCallGenerationEnd", "success"]
    stats = messages[-1]["stats"]
    text_tokens = sum(m["fragment"]["tokensCount"] for m in messages if m["type"] == "fragment")
    assert stats["stopReason"] == "toolCalls"
    assert stats["predictedTokensCount"] == text_tokens + len(arguments)


def test_a_cancel_during_a_tool_call_stops_its_arguments(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(token_latency=0.02)
    messages = _tool_frames(emu, cancel_at="toolCallGenerationArgumentFragmentGenerated")
    kinds = [m["type"] for m in messages]
    assert "toolCallGenerationEnd" not in kinds
    assert kinds.count("toolCallGenerationArgumentFragmentGenerated") < 4
    assert messages[-1]["stats"]["stopReason"] == "userStopped"
    assert emu.predictions[-1].tool_calls == []
    assert emu.predictions[-1].cancelled


def test_a_tool_model_passes_the_prompts_quoted_words_to_string_parameters(
    emu: LMStudioEmulator, client: lms.Client
) -> None:
    """Found by a probe running lmstudio-python's file-writing tool examples: string
    arguments were sampled text, so the tool wrote random words to a random file name."""
    written: dict[str, str] = {}

    def write_file(path: str, text: str) -> str:
        """Write text to a file."""
        written[path] = text
        return "done"

    client.llm.model(TEXT).act('Write to "notes.txt" the words "hello there".', [write_file])
    # In the order the parameters are declared, as the prompt's numbers are.
    assert written == {"notes.txt": "hello there"}
    call = emu.predictions[0].tool_calls[0]
    assert call.arguments == {"path": "notes.txt", "text": "hello there"}


def test_default_tool_arguments_take_quoted_words_their_parameter_takes() -> None:
    import random

    from outlines_lmstudio.testing._sampler import JsonSampler
    from outlines_lmstudio.testing._tools import default_tool_call

    parameters = {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer"},
            "note": {"type": "string", "maxLength": 3},
        },
        "required": ["city", "unit", "days", "note"],
    }
    tools = [{"name": "forecast", "parameters": parameters}]
    sampler = JsonSampler()
    prompt = "What's the 3-day forecast for 'Paris' in `celsius`? Note: \u201ctoo long\u201d"
    call = default_tool_call(tools, prompt, sampler.sample, random.Random(0))
    # An apostrophe is no quote; a number stays a number; a quoted piece the schema
    # refuses (longer than 3) leaves the sampled value.
    assert call.arguments["city"] == "Paris"
    assert call.arguments["unit"] == "celsius"
    assert call.arguments["days"] == 3
    assert call.arguments["note"] != "too long"
    assert len(call.arguments["note"]) <= 3
    for written in ("\u2018Rome\u2019", "\u00abRome\u00bb", "\u201eRome\u201c"):
        call = default_tool_call(tools, f"Weather in {written}?", sampler.sample, random.Random(0))
        assert call.arguments["city"] == "Rome"
    # Found by a review: a parameter whose type is a list crashed the emulator's reply.
    nullable = {"type": "object", "properties": {"n": {"type": ["integer", "null"]}}}
    call = default_tool_call(
        [{"name": "f", "parameters": nullable}], "Use 3", sampler.sample, random.Random(0)
    )
    assert call.arguments["n"] is None or isinstance(call.arguments["n"], int)


def _fetch_page(page: int) -> str:
    """Return a page of a large document."""
    return "word " * 200_000  # a megabyte


def test_a_large_tool_result_is_quoted_in_part(emu: LMStudioEmulator, client: lms.Client) -> None:
    # Before: the next reply quoted the whole result, a megabyte streamed one word piece at a
    # time (100 s, and a reply longer than the model's context).
    act = client.llm.model(TEXT).act("Fetch page 3", [_fetch_page])
    reply = emu.predictions[-1]
    assert act.rounds == 2
    assert reply.text.startswith('The tool returned "word word')  # the SDK sends it as JSON
    assert re.search(r"\.\.\. \(9998\d\d more characters\)\. ", reply.text)
    assert len(reply.text) < 2_000
    assert len(reply.fragments) < 500


def test_a_model_without_tool_use_answers_in_text(
    emu: LMStudioEmulator, client: lms.Client
) -> None:
    act = client.llm.model("qwen2-vl-2b-instruct").act("What is 2 + 3?", [_add])
    assert act.rounds == 1
    assert emu.predictions[-1].tool_calls == []


def test_tool_call_arguments_must_be_json() -> None:
    with pytest.raises(TypeError):
        ToolCall("f", {"x": object()})
    with pytest.raises(ValueError, match="name must be a non-empty string, not ''"):
        ToolCall("")
    # found by a probe: sent as "1" (a frame the SDK's schema refuses) and as NaN (not JSON)
    with pytest.raises(TypeError, match="keys must be strings, not 1"):
        ToolCall("f", {"a": [{1: 2}]})
    with pytest.raises(ValueError, match="must be JSON"):
        ToolCall("f", {"a": float("nan")})


@pytest.mark.parametrize("aliases", [[3], [""], [None]])
def test_an_alias_that_is_not_a_name_is_refused(aliases: list[Any]) -> None:
    """Found by a probe: ``aliases=[3]`` was taken; every lookup by another name then failed
    on it, and the request was never answered."""
    with pytest.raises(TypeError, match="aliases must hold non-empty strings"):
        EmulatedModel("x", aliases=aliases)


# -- tokens, files, system -------------------------------------------------------------


def test_embedding_tokenize_adds_start_and_end_tokens(client: lms.Client) -> None:
    model = client.embedding.model(EMBED)
    assert len(model.tokenize("Hello, world!")) == model.count_tokens("Hello, world!") + 2
    llm = client.llm.model(TEXT)
    assert len(llm.tokenize("Hello, world!")) == llm.count_tokens("Hello, world!")


def test_system_info_channel_ids_from_zero_and_instance_references(emu: LMStudioEmulator) -> None:
    with raw_socket(emu, "system") as ws:
        reply = raw_rpc(ws, "info", 0)
    assert reply["callId"] == 0
    assert set(reply["result"]) == {"pid", "isDaemon", "version"}
    with raw_socket(emu, "llm") as ws:
        empty = {"type": "query", "query": {}}  # llm.model() in the 2.x SDK
        first = raw_rpc(ws, "getModelInfo", 0, {"specifier": empty, "throwIfNotFound": True})[
            "result"
        ]
        reference = {"type": "instanceReference", "instanceReference": first["instanceReference"]}
        by_reference = raw_rpc(
            ws, "getModelInfo", 1, {"specifier": reference, "throwIfNotFound": True}
        )["result"]
        assert by_reference["identifier"] == first["identifier"]
        create = {
            "type": "channelCreate",
            "endpoint": "getOrLoad",
            "channelId": 0,
            "creationParameter": {"identifier": TEXT, "loadConfigStack": {"layers": []}},
        }
        ws.send(json.dumps(create))
        packets = [json.loads(ws.recv(timeout=5)) for _ in range(2)]
    assert [p["type"] for p in packets] == ["channelSend", "channelClose"]
    assert packets[0]["channelId"] == 0
    assert packets[0]["message"]["type"] == "alreadyLoaded"


def test_a_reference_to_an_unloaded_instance_says_so(emu: LMStudioEmulator) -> None:
    """Not "no model matches the query" with an empty query (the TS SDK prints "Any Model")."""
    with raw_socket(emu, "llm") as ws:
        stale = {"type": "instanceReference", "instanceReference": "gone-instance"}
        reply = raw_rpc(ws, "getModelInfo", 0, {"specifier": stale, "throwIfNotFound": True})
    assert reply["type"] == "rpcError"
    assert reply["error"]["displayData"] == {"code": "generic.specificModelUnloaded"}
    assert reply["error"]["title"] == "This model has already been unloaded."


# -- cancel at every latency -----------------------------------------------------------


def test_cancel_after_the_first_fragment_at_zero_latency_sync(client: lms.Client) -> None:
    stream = client.llm.model(TEXT).respond_stream("A long answer", config={"maxTokens": 300})
    seen = 0
    for _ in stream:
        seen += 1
        stream.cancel()
    assert seen == 1
    assert stream.stats is not None
    assert stream.stats.stop_reason == "userStopped"


@pytest.mark.asyncio
async def test_cancel_after_the_first_fragment_at_zero_latency_async(
    aclient: lms.AsyncClient,
) -> None:
    model = await aclient.llm.model(TEXT)
    stream = await model.respond_stream("A long answer", config={"maxTokens": 300})
    async for _ in stream:
        await stream.cancel()
    assert stream.stats is not None
    assert stream.stats.stop_reason == "userStopped"


# -- safety (issue 13) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "told"),
    [
        ("127.0.0.1:1234", "give host='127.0.0.1', port=1234 (CLI: --host 127.0.0.1 --port 1234)"),
        ("localhost:1234", "give host='localhost', port=1234"),
        ("[::1]:1234", "give host='[::1]', port=1234"),
        ("http://127.0.0.1:1234", "is a URL: give the address alone"),
    ],
)
def test_a_host_written_with_its_port_is_refused_as_such(host: str, told: str) -> None:
    # Found by a probe: `emulator --host 127.0.0.1:1234` (HOST:PORT, as the CLI's other
    # --host options take it) was "not a loopback address ... Pass allow_remote=True";
    # with the opt-in it then failed to bind ("Name or service not known").
    for allow_remote in (False, True):
        with pytest.raises(ValueError, match=r"holds a port|is a URL") as info:
            LMStudioEmulator(host=host, allow_remote=allow_remote)
        assert told in str(info.value)
        assert "allow_remote" not in str(info.value)


@pytest.mark.parametrize("allow_remote", [False, True])
def test_an_empty_host_is_refused_as_empty(allow_remote: bool) -> None:
    """Found by a probe: with the opt-in it served every interface and printed ":PORT" as
    its host, which no client takes."""
    with pytest.raises(ValueError, match=r"host='' is empty: .*'0\.0\.0\.0' with allow_remote"):
        LMStudioEmulator(host="", allow_remote=allow_remote)


@pytest.mark.parametrize("allow_remote", [False, True])
@pytest.mark.parametrize(
    ("host", "told"),
    [
        (
            "::ffff:127.0.0.1",
            "written as IPv6 (IPv4-mapped), which the emulator cannot listen "
            "on: give host='127.0.0.1'",
        ),
        ("[::ffff:10.0.0.1]", "give host='10.0.0.1'"),
        ("127.0.0.300", "is not an IPv4 address: write four numbers from 0 to 255"),
        ("127.0.0.01", "from 0 to 255, without leading zeros (e.g. host='127.0.0.1')"),
        # Found by a probe: "not a loopback address".
        (" 127.0.0.1 ", "has spaces or a line end around it: give host='127.0.0.1'"),
    ],
)
def test_an_address_no_socket_listens_on_is_refused_for_what_it_is(
    host: str, told: str, allow_remote: bool
) -> None:
    """Found by a probe: an IPv4-mapped address passed the loopback check and failed at bind
    with a raw "[Errno 22] Invalid argument" (asyncio's IPv6 sockets are IPv6-only), and
    127.0.0.300 was "not a loopback address"."""
    with pytest.raises(ValueError, match=re.escape(told)):
        LMStudioEmulator(host=host, allow_remote=allow_remote)


@pytest.mark.parametrize(
    ("given", "told"),
    [
        ({"host": "0.0.0.0", "allow_remote": "no"}, "allow_remote must be True or False, not 'no'"),
        ({"cors": "off"}, "cors must be True or False, not 'off'"),
        ({"host": 127}, "host must be an address as a string, e.g. '127.0.0.1', not 127"),
    ],
)
def test_a_switch_or_host_of_another_type_is_refused(given: dict[str, Any], told: str) -> None:
    """Found by an audit: allow_remote="no" (a true string) bound every interface, cors="off"
    took web pages, and host=127 raised "'int' object has no attribute 'strip'"."""
    with pytest.raises(ValueError, match=re.escape(told)):
        LMStudioEmulator(**given)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20"])
def test_binding_outside_loopback_needs_an_opt_in(host: str) -> None:
    with pytest.raises(ValueError, match="allow_remote=True"):
        LMStudioEmulator(host=host)
    with pytest.warns(EmulatorExposedWarning, match="no access control"):
        LMStudioEmulator(host=host, allow_remote=True)


@pytest.mark.parametrize(
    ("setting", "problem"),
    [
        ({"port": -1}, "port must be 0"),
        ({"port": 70000}, "port must be 0"),
        # found by mutation testing: the first port past the range was not checked
        ({"port": 65536}, r"port must be 0 \(a free port\) to 65535, not 65536"),
        ({"token_latency": float("nan")}, "token_latency must be a finite number"),
        ({"token_latency": float("inf")}, "token_latency must be a finite number"),
        ({"prompt_latency": -1.0}, "prompt_latency must be a finite number"),
        ({"load_latency": float("nan")}, "load_latency must be a finite number"),
    ],
)
def test_settings_out_of_range_are_refused_when_made(setting: dict[str, Any], problem: str) -> None:
    # Before: a bad port failed only in start() (OverflowError), a NaN prompt_latency failed
    # every prediction with a bare "ValueError", and an infinite latency hung every reply.
    with pytest.raises(ValueError, match=problem):
        LMStudioEmulator(**setting)


@pytest.mark.parametrize(
    ("setting", "problem"),
    [
        ({"slots": 2.5}, "slots must be an integer"),
        ({"slots": "4"}, "slots must be an integer"),
        ({"seed": "a"}, "seed must be an integer"),
        ({"token_latency": "0.1"}, "token_latency must be a finite number"),
        ({"unknown_endpoint": "ignore"}, "unknown_endpoint must be"),
    ],
)
def test_settings_of_the_wrong_type_are_refused_when_made(
    setting: dict[str, Any], problem: str
) -> None:
    # Before: slots=2.5 and seed="a" were taken and failed later, inside the server;
    # slots="4" raised a bare "'<' not supported between instances of 'str' and 'int'".
    with pytest.raises(ValueError, match=problem):
        LMStudioEmulator(**setting)


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("slots", 0, "slots must be an integer of at least 1"),
        ("token_latency", -1.0, "token_latency must be a finite number"),
        ("prompt_latency", float("inf"), "prompt_latency must be a finite number"),
        ("seed", 1.5, "seed must be an integer"),
        ("unknown_endpoint", "ignore", "unknown_endpoint must be"),
    ],
)
def test_settings_changed_on_a_running_emulator_are_checked(
    emu: LMStudioEmulator, name: str, value: object, problem: str
) -> None:
    # The docs change settings on the fixture's emulator (emu.token_latency = 0.05). Before,
    # any value was taken: slots = 0 made every later prediction wait for ever.
    before = getattr(emu, name)
    with pytest.raises(ValueError, match=problem):
        setattr(emu, name, value)
    assert getattr(emu, name) == before
    emu.token_latency = 0.01  # a valid value is still taken
    assert emu.token_latency == 0.01


def test_a_misspelt_setting_is_refused_not_kept_as_a_new_attribute(emu: LMStudioEmulator) -> None:
    # Before: emu.token_latncy = 0.05 made a new attribute the server never reads, so the
    # test ran at the old latency without a word.
    with pytest.raises(
        AttributeError, match=r"no setting 'token_latncy' \(did you mean 'token_latency'\?\)"
    ):
        emu.token_latncy = 0.05  # type: ignore[attr-defined]  # checkers flag it too (a probe)
    assert not hasattr(emu, "token_latncy")
    with pytest.raises(AttributeError, match="the settings a test may change are: seed, slots"):
        emu.colour = "blue"  # type: ignore[attr-defined]
    emu.token_latency = 0.02  # the real setting is still set as before
    assert emu.token_latency == 0.02


def test_after_a_stop_and_start_only_the_librarys_models_reconnect(
    make_emulator: MakeEmulator,
) -> None:
    """A guard of what docs/testing.md says (found by a probe: it promised that any client
    made before the stop reconnects; the SDK's own do not, as with LM Studio restarted)."""
    from outlines_lmstudio import from_lmstudio

    emulator = make_emulator()
    with lms.Client(emulator.api_host) as ours, lms.Client(emulator.api_host) as theirs:
        model = from_lmstudio(ours, TEXT)
        handle = theirs.llm.model(TEXT)
        assert model("before", max_tokens=3)
        assert handle.respond("before").content
        emulator.stop()
        emulator.start()
        assert model("after", max_tokens=3)
        with pytest.raises(lms.LMStudioWebsocketError, match="unexpectedly disconnected"):
            handle.respond("after")


def test_the_host_cannot_be_changed_after_the_emulator_is_made(
    make_emulator: MakeEmulator,
) -> None:
    """Found by a probe: ``emu.host = "0.0.0.0"`` was kept, without the loopback check or
    the warning (the next start served every network), and outlived the fixture's reset."""
    emulator = make_emulator()
    where = emulator.api_host
    with pytest.raises(AttributeError, match=r"host is fixed when the emulator is made \(it is "):
        emulator.host = "0.0.0.0"
    emulator.stop()
    emulator.start()
    assert emulator.host == "127.0.0.1"
    assert emulator.api_host == where  # the same address, and port


def test_a_relative_gguf_path_is_kept_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from outlines_lmstudio.testing import EmulatedModel, embedded_available, embedded_model

    if not embedded_available():
        pytest.skip("the embedded GGUF model is not installed")
    source = Path(embedded_model().gguf or "")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny.gguf").symlink_to(source)
    monkeypatch.chdir(tmp_path)
    model = EmulatedModel("tiny", gguf="models/tiny.gguf")
    # Before: kept as "models/tiny.gguf", read again from whatever the cwd was at load time.
    assert model.gguf == str(tmp_path / "models" / "tiny.gguf")
    monkeypatch.chdir(tmp_path / "models")
    assert Path(model.gguf).is_file()


def test_wait_until_checks_its_arguments(emu: LMStudioEmulator) -> None:
    # Before: a str timeout raised "unsupported operand type(s) for +", and a predicate
    # that is no function ("emu.predictions", not "lambda: emu.predictions") a bare TypeError.
    with pytest.raises(ValueError, match="timeout must be a finite number"):
        emu.wait_until(lambda: True, timeout="5")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout must be a finite number"):
        emu.wait_until(lambda: True, timeout=-1)
    with pytest.raises(TypeError, match="a function of no arguments"):
        emu.wait_until(emu.predictions)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_waits_refuse_an_async_predicate(emu: LMStudioEmulator) -> None:
    """Found by a probe: its coroutine is true, so the waits passed at once, unchecked."""

    async def two() -> bool:
        return len(emu.predictions) == 2

    class Two:
        async def __call__(self) -> bool:
            return len(emu.predictions) == 2

    for predicate in (two, Two(), lambda: two()):  # a lambda too (found by a review)
        with pytest.raises(TypeError, match="not an async one"):
            await emu.await_until(predicate, timeout=0.1)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="not an async one"):
            emu.wait_until(predicate, timeout=0.1)  # type: ignore[arg-type]


@pytest.mark.parametrize("last", [-1, "5", 2.5, True])
def test_format_trace_refuses_a_count_that_is_no_count(emu: LMStudioEmulator, last: object) -> None:
    """Found by a probe: -1 rendered no frame, "5" raised a raw TypeError."""
    with pytest.raises(ValueError, match="a number of frames >= 0, or None"):
        emu.format_trace(last)  # type: ignore[arg-type]
    assert "(0 frames" in emu.format_trace(0)


def test_the_models_must_be_emulated_models() -> None:
    # Before: AttributeError: 'dict' object has no attribute 'names'.
    with pytest.raises(TypeError, match=r"EmulatedModel\(\*\*fields\)"):
        LMStudioEmulator([{"key": "my-model"}])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="a list of EmulatedModel"):
        LMStudioEmulator("qwen2.5-7b-instruct")  # type: ignore[arg-type]


def test_a_nested_with_leaves_the_emulator_running(make_emulator: MakeEmulator) -> None:
    # Before, the inner ``with`` stopped the emulator the outer one (or the pytest fixture)
    # was still using: every later test of the session failed with "not running".
    emulator = make_emulator()
    with emulator:
        with emulator as inner:
            assert inner is emulator
        assert emulator.running
        with lms.Client(emulator.api_host) as client:
            assert client.llm.model(TEXT).respond("hi").content
    assert not emulator.running  # the outermost with (after start()) stops it


@pytest.mark.asyncio
async def test_a_nested_async_with_leaves_the_emulator_running() -> None:
    emulator = LMStudioEmulator()
    async with emulator:
        async with emulator:
            pass
        assert emulator.running
    assert not emulator.running


class _SlowToStart(LMStudioEmulator):
    def start(self) -> LMStudioEmulator:
        time.sleep(0.3)  # a cancel arrives while the server starts
        return super().start()


@pytest.mark.asyncio
async def test_a_cancel_while_async_with_starts_the_emulator_stops_it() -> None:
    """Found by a probe: the start went on in its thread, no __aexit__ came, and the server
    kept its port until the process ended."""
    emulator = _SlowToStart()

    async def enter() -> None:
        async with emulator:
            raise AssertionError("the block never runs")

    task = asyncio.create_task(enter())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    def stopped() -> bool:  # the start ends, then the stop
        deadline = time.monotonic() + 10
        while emulator.running and time.monotonic() < deadline:
            time.sleep(0.02)
        return not emulator.running

    assert await asyncio.to_thread(stopped)


def _in_a_forked_child(action: Callable[[], list[str]]) -> list[str]:
    """Fork, run ``action`` in the child; return what it reported (one line per step)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave at once (no finalizers, no pytest)
        try:
            lines = action()
        except BaseException as exc:  # reported to the parent, which fails the test
            lines = [f"raised {exc!r}"]
        os.write(write_end, "\n".join(lines).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        report = reader.read().decode()
    os.waitpid(pid, 0)
    return report.splitlines()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork only")
def test_a_forked_child_leaving_the_with_block_does_not_stop_the_parents_emulator() -> None:
    """Found by a tester: a forked child leaving ``with LMStudioEmulator()`` waited 15 s in
    stop() for the server thread, which is the parent's, then raised a bare TimeoutError."""
    with LMStudioEmulator() as emulator:

        def child() -> list[str]:
            started = time.monotonic()
            emulator.__exit__(None, None, None)  # the child leaves the with block
            emulator.stop()
            return [f"{time.monotonic() - started < 1} {emulator.running}"]

        assert _in_a_forked_child(child) == ["True True"]
        assert emulator.running
        with lms.Client(emulator.api_host) as client:  # the parent's server still serves
            assert client.llm.model(TEXT).respond("hi").content
    assert not emulator.running


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork only")
def test_a_forked_child_is_told_it_cannot_control_the_parents_emulator(
    make_emulator: MakeEmulator,
) -> None:
    emulator = make_emulator()
    controls: dict[str, Callable[[], object]] = {
        "reset": emulator.reset,
        "wait_until": lambda: emulator.wait_until(lambda: False, timeout=5),
        "await_until": lambda: asyncio.run(emulator.await_until(lambda: False, timeout=5)),
        "script": lambda: emulator.script(TEXT, ["x"]),
        "add_fault": lambda: emulator.add_fault(Fault("predict", "error")),
        "clear_faults": emulator.clear_faults,
        "load": lambda: emulator.load(TEXT),
        "unload": lambda: emulator.unload(TEXT),
        "token_latency": lambda: setattr(emulator, "token_latency", 0.1),
        # The records, a copy as of the fork: the child's own request never shows there
        # (found by a probe: "child saw 0 predictions; parent has 1", silently).
        "predictions": lambda: emulator.predictions,
        "requests": lambda: emulator.requests,
        "uploads": lambda: emulator.uploads,
        "trace": lambda: emulator.trace,
        "protocol_violations": lambda: emulator.protocol_violations,
        "format_trace": emulator.format_trace,
    }

    def child() -> list[str]:
        lines = []
        for name, control in controls.items():
            started = time.monotonic()
            try:
                control()
            except RuntimeError as exc:
                told = "forked child" in str(exc) and "emu.api_host" in str(exc)
                lines.append(f"{name} {told} {time.monotonic() - started < 1}")
            else:
                lines.append(f"{name} not refused")
        with lms.Client(emulator.api_host) as client:  # a client made here works
            lines.append(str(bool(client.llm.model(TEXT).respond("hi").content)))
        return lines

    assert _in_a_forked_child(child) == [f"{name} True True" for name in controls] + ["True"]
    assert len(emulator.predictions) == 1  # the child's request reached the parent's server


def test_loopback_hosts_need_no_opt_in() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.1", "example.com", ""]))
    # Found by a probe: Python 3.11 says an IPv4-mapped loopback address is not one.
    assert is_loopback("::ffff:127.0.0.1")
    assert not is_loopback("::ffff:10.0.0.1")


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
@pytest.mark.parametrize("host", ["::1", "[::1]"])
def test_an_ipv6_host_gives_an_api_host_the_sdk_takes(
    make_emulator: MakeEmulator, host: str
) -> None:
    emulator = make_emulator(host=host)
    assert emulator.api_host.startswith("[::1]:")
    with lms.Client(emulator.api_host) as client:
        assert client.llm.model(TEXT).respond("hi").content


_DUAL_STACK_PROBE = """
import lmstudio as lms
from outlines_lmstudio.testing import LMStudioEmulator
with LMStudioEmulator(host="localhost") as emulator:
    port = emulator.api_host.rsplit(":", 1)[1]
    for host in (emulator.api_host, f"127.0.0.1:{port}", f"[::1]:{port}"):
        with lms.Client(host) as client:
            reply = client.llm.model("qwen2.5-7b-instruct").respond("hi")
            print(host.rsplit(":", 1)[0], bool(reply.content))
"""


def test_localhost_on_a_dual_stack_machine_listens_on_one_port(tmp_path: Path) -> None:
    # Found by a probe: where localhost is ::1 and 127.0.0.1 (Debian, Ubuntu and macOS
    # hosts files), host="localhost" with port 0 listened on a different free port per
    # address; api_host named the first, so 127.0.0.1:PORT was refused ("LM Studio is
    # not reachable"), as was `--host localhost` then `--host 127.0.0.1:PORT`. Run with
    # such a hosts file, in a private mount and network namespace.
    require_private_network()
    hosts = tmp_path / "hosts"
    hosts.write_text("::1 localhost\n127.0.0.1 localhost\n", "utf-8")
    result = subprocess.run(
        [
            "unshare",
            "-m",
            "-n",
            "--",
            "sh",
            "-c",
            'mount --bind "$0" /etc/hosts && ip link set lo up && exec "$@"',
            str(hosts),
            sys.executable,
            "-c",
            _DUAL_STACK_PROBE,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.stderr.startswith("mount:"):
        pytest.skip(f"no private mount namespace here: {result.stderr.strip()[-200:]}")
    assert result.stdout.split() == ["localhost", "True", "127.0.0.1", "True", "[::1]", "True"], (
        result.stdout + result.stderr[-2000:]
    )


def test_the_command_refuses_a_public_host_without_the_flag() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "outlines_lmstudio.testing", "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--allow-remote" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_trace_never_keeps_the_client_passkey(
    emu: LMStudioEmulator, client: lms.Client
) -> None:
    client.llm.model(TEXT).respond("hi")
    auth = [f.data for f in emu.trace if f.direction == "in" and "authVersion" in f.data]
    assert auth
    assert all(a["clientPasskey"] == "<redacted>" for a in auth)
    assert 'clientPasskey":"<redacted>' in emu.format_trace(last=None)
    assert all(len(a["clientIdentifier"]) == 36 for a in auth)  # the identifier stays


def test_a_prompt_with_a_lone_surrogate_is_answered(
    emu: LMStudioEmulator, client: lms.Client
) -> None:
    model = client.llm.model(TEXT)
    assert model.respond("a \ud800").content
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    assert json.loads(model.respond("a \ud800", response_format=schema).content)
    assert all(p.done for p in emu.predictions)


def test_a_lone_surrogate_is_tokenized_and_embedded_as_u_fffd(client: lms.Client) -> None:
    # Before: tokenize and embed failed with "The LM Studio emulator failed to serve this
    # request: UnicodeEncodeError". LM Studio's engines get the text as UTF-8, where a lone
    # surrogate is U+FFFD (inferred).
    model = client.llm.model(TEXT)
    assert model.tokenize("a \ud800") == model.tokenize("a \ufffd")
    assert model.count_tokens("a \ud800") == 2
    embedder = client.embedding.model(EMBED)
    assert embedder.tokenize("a \ud800") == embedder.tokenize("a \ufffd")
    assert embedder.embed("a \ud800") == embedder.embed("a \ufffd")


def test_a_failing_channel_handler_answers(
    emu: LMStudioEmulator, client: lms.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from outlines_lmstudio.testing import _endpoints

    async def boom(*args: object) -> None:
        raise UnicodeEncodeError("utf-8", "a \ud800", 2, 3, "surrogates not allowed")

    model = client.llm.model(TEXT)
    monkeypatch.setitem(_endpoints.CHANNEL_HANDLERS, ("llm", "predict"), boom)
    started = time.monotonic()
    with pytest.raises(lms.LMStudioServerError, match="failed to serve"):
        model.respond("hi")
    assert time.monotonic() - started < 30  # an answer, not the SDK's 60 s timeout


def test_a_failing_rpc_handler_answers(
    emu: LMStudioEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from outlines_lmstudio.testing import _endpoints

    async def boom(*args: object) -> None:
        raise RuntimeError("handler bug")

    monkeypatch.setitem(_endpoints.RPC_HANDLERS, ("system", "version"), boom)
    with raw_socket(emu, "system") as ws:
        reply = raw_rpc(ws, "version", 3)
    assert reply["type"] == "rpcError"
    assert reply["callId"] == 3
    assert "handler bug" in reply["error"]["title"]


@pytest.mark.asyncio
async def test_async_sdk_gets_an_answer_for_a_lone_surrogate(aclient: lms.AsyncClient) -> None:
    model = await aclient.llm.model(TEXT)
    result = await asyncio.wait_for(model.respond("a \ud800"), timeout=30)
    assert result.content


def test_a_gguf_model_refuses_an_unanchored_pattern(client: lms.Client) -> None:
    # Before: the synthetic engine sampled it with outlines-core for every model; LM Studio
    # runs a GGUF model's schema through llama.cpp's converter, which refuses it (#2168).
    nested = {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": "[A-Z]{3}"}},
        "required": ["code"],
    }
    with pytest.raises(lms.LMStudioServerError, match='Pattern must start with "\\^"'):
        client.llm.model(TEXT).respond("Code?", response_format=nested)
    anchored = {**nested, "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}$"}}}
    reply = client.llm.model(TEXT).respond("Code?", response_format=anchored).content
    jsonschema.validate(json.loads(reply), anchored)
    # MLX models use outlines-core, which takes it (and keeps to it).
    reply = client.llm.model(MLX).respond("Code?", response_format=nested).content
    jsonschema.validate(json.loads(reply), nested)


def test_a_gguf_model_fails_a_quantified_non_ascii_character_as_llama_cpp_does(
    client: lms.Client,
) -> None:
    """Found by a differential fuzz: LM Studio's C++ converter repeats only the last UTF-8
    byte of ``é`` in ``^Café?$``, and llama.cpp's grammar parser refuses what it wrote. The
    synthetic engine answered; the llama.cpp engine fails so (tests/real_engine)."""
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "pattern": "^Café?$"}},
        "required": ["name"],
    }
    refused = r"Failed to parse the grammar: failed to parse grammar: expected '\)'"
    with pytest.raises(lms.LMStudioServerError, match=refused):
        client.llm.model(TEXT).respond("Drink?", response_format=schema)
    # In a group, as outlines-lmstudio sends it, the character's bytes stay together.
    grouped = {**schema, "properties": {"name": {"type": "string", "pattern": "^Caf(é)?$"}}}
    reply = client.llm.model(TEXT).respond("Drink?", response_format=grouped).content
    jsonschema.validate(json.loads(reply), grouped)
    # MLX models use outlines-core, which reads characters.
    reply = client.llm.model(MLX).respond("Drink?", response_format=schema).content
    jsonschema.validate(json.loads(reply), schema)


_REVERSED = "Failed to parse the grammar: the repetition {} has a maximum below its minimum"


@pytest.mark.parametrize(
    ("schema", "refused"),
    [
        ({"type": "integer", "minimum": 2**53}, _REVERSED.format("{16,15}")),
        ({"type": "integer", "exclusiveMaximum": -(10**17)}, _REVERSED.format("{17,15}")),
        (
            {"type": "object", "properties": {"id": {"type": "integer", "minimum": 2**62}}},
            _REVERSED.format("{19,15}"),
        ),
        # The ends of int64_t are "no bound" to the converter (found by a review).
        ({"type": "integer", "minimum": 2**53, "maximum": 2**63 - 1}, _REVERSED.format("{16,15}")),
        (
            {"type": "integer", "minimum": -(2**63 - 1)},
            "Failed to convert the JSON schema to a grammar: JSON schema conversion failed: "
            "At least one of min_value or max_value must be set",
        ),
    ],
)
def test_a_gguf_model_fails_a_long_one_sided_integer_range_as_llama_cpp_does(
    client: lms.Client, schema: dict[str, Any], refused: str
) -> None:
    """Found by a probe: LM Studio's C++ converter writes such a range with a repetition
    whose maximum is below its minimum, and llama.cpp's grammar parser makes rules for it
    until memory runs out; the synthetic engine answered. Both engines fail it now, as the
    llama.cpp engine fails such a GBNF grammar (tests/real_engine)."""
    with pytest.raises(lms.LMStudioServerError, match=re.escape(refused)):
        client.llm.model(TEXT).respond("Id?", response_format=schema)
    # Both bounds: the converter writes exactly the range; a 16-digit minimum alone it
    # writes loosely but not reversed.
    for kept in (
        {"type": "integer", "minimum": 2**53, "maximum": 2**62},
        {"type": "integer", "minimum": 10**15},
        {"type": "integer", "exclusiveMinimum": 2**63 - 1},  # wraps to none: any integer
    ):
        reply = client.llm.model(TEXT).respond("Id?", response_format=kept).content
        jsonschema.validate(json.loads(reply), kept)
    # MLX models use outlines-core, which reads no integer bound.
    reply = client.llm.model(MLX).respond("Id?", response_format=schema).content
    assert isinstance(json.loads(reply), dict | int)


def test_a_gguf_model_writes_the_required_properties_first_as_llama_cpp_does(
    client: lms.Client,
) -> None:
    """Found by a differential fuzz: llama.cpp's converter writes an object's required
    properties first, then the others; the synthetic engine wrote them in the schema's
    order (``{"a": 24, "b": 19}`` with only ``b`` required), which llama.cpp's grammar
    refuses. An MLX model (outlines-core) keeps the schema's order."""
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["b"],
        "additionalProperties": False,
    }
    orders = set()
    for seed in range(12):
        reply = client.llm.model(TEXT).respond(f"Numbers {seed}?", response_format=schema)
        keys = list(json.loads(reply.content))
        assert keys[0] == "b", reply.content
        orders.add(tuple(keys))
    assert ("b", "a") in orders  # the optional one was written too, after
    mlx = set()
    for seed in range(12):
        reply = client.llm.model(MLX).respond(f"Numbers {seed}?", response_format=schema)
        mlx.add(tuple(json.loads(reply.content)))
    assert ("a", "b") in mlx


_INT, _BOOL, _NULL = {"type": "integer"}, {"type": "boolean"}, {"type": "null"}
_A = {"properties": {"a": _INT}, "required": ["a"]}
# (schema sent, the schema llama.cpp's C++ converter reads of it): its builder gives a node
# its kind by $ref, oneOf, anyOf, a type list (one copy per type), const, enum, then type
# (common/json-schema.cpp's build_node); outlines-core reads properties, allOf, anyOf,
# oneOf, prefixItems, enum, const and $ref before type.
_MIXED_NODES: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"type": "string", **_A}, {"type": "string"}),
    ({"type": "array", "items": _BOOL, **_A}, {"type": "array", "items": _BOOL}),
    ({"type": "integer", "items": [_INT, _BOOL]}, _INT),
    ({"type": "object", "prefixItems": [_INT]}, {"type": "object"}),
    ({"type": ["string", "number"], **_A}, {"type": ["string", "number"]}),
    ({"anyOf": [_BOOL, _NULL], **_A}, {"anyOf": [_BOOL, _NULL]}),
    ({"type": "object", **_A, "enum": [1, 2]}, {"enum": [1, 2]}),
    ({"enum": ["x", 3], "const": 7}, {"const": 7}),
    ({"$defs": {"B": _BOOL}, "$ref": "#/$defs/B", **_A}, _BOOL),
    ({"type": "integer", "minimum": 2, "anyOf": [_BOOL, _NULL]}, {"anyOf": [_BOOL, _NULL]}),
    ({"oneOf": [_NULL], "anyOf": [_BOOL]}, _NULL),
    ({"type": "array", "items": _INT, "prefixItems": [_BOOL]}, {"items": _INT}),
    (
        {"items": [_INT, _BOOL], "prefixItems": [_INT]},
        {"prefixItems": [_INT, _BOOL], "items": False, "minItems": 2},
    ),
    (  # the allOf is not read beside additionalProperties (outlines-core refused the rest)
        {"additionalProperties": _INT, "allOf": [{"properties": {"b": _BOOL}}]},
        {"type": "object", "additionalProperties": _INT},
    ),
    # Found by a review: a closed object's enum or const came out as {}.
    (
        {"type": "object", "enum": [{"a": 1}, {"a": 2}], "additionalProperties": False},
        {"enum": [{"a": 1}, {"a": 2}]},
    ),
    ({"enum": [1, 2], "additionalProperties": False}, {"enum": [1, 2]}),
    ({"type": "object", "const": {"a": 1}, "additionalProperties": False}, {"const": {"a": 1}}),
]


@pytest.mark.parametrize(
    ("schema", "reads"), _MIXED_NODES, ids=[json.dumps(schema) for schema, _ in _MIXED_NODES]
)
def test_a_gguf_model_gives_a_node_the_kind_llama_cpp_reads(
    client: lms.Client, tmp_path: Path, schema: dict[str, Any], reads: dict[str, Any]
) -> None:
    """Found by a differential fuzz: ``{"type": "string", "properties": ...}`` came out of a
    GGUF model as an object (outlines-core reads ``properties`` first), where llama.cpp's
    converter goes by ``type`` and writes a string; so for each keyword outlines-core reads
    before ``type``. The reply must be of the schema llama.cpp reads, and in the C++
    converter's grammar when ``LLAMA_JSON_SCHEMA_TO_GRAMMAR`` points at a build of it."""
    replies = []
    for i in range(3):
        structured = {"type": "json", "jsonSchema": schema}
        reply = client.llm.model(TEXT).respond(f"Value {i}?", response_format=structured)
        jsonschema.validate(json.loads(reply.content), reads)
        replies.append(reply.content)
    if CPP_CONVERTER:
        from ..unit.grammar._llama_harness import LlamaGrammarHarness, write_byte_vocab

        done = run_cpp_converter(schema)
        assert done.stdout.startswith("OK "), done.stdout
        grammar = done.stdout[3:].rstrip("\n").replace("\x01", "\n")
        write_byte_vocab(tmp_path / "bytes.gguf")
        harness = LlamaGrammarHarness(tmp_path / "bytes.gguf")
        try:
            for text in replies:  # without whitespace, which outlines-core writes otherwise
                compact = re.sub(r'("(?:[^"\\]|\\.)*")|\s+', lambda m: m.group(1) or "", text)
                assert harness.matches(grammar, compact), text
        finally:
            harness.close()


def test_a_gguf_model_writes_a_string_for_type_string_beside_properties(
    client: lms.Client,
) -> None:
    """The case as found; an MLX model (LM Studio's MLX engine is outlines-core) reads
    ``properties`` before ``type``, as outlines-core does, and writes an object."""
    schema = {"type": "object", "properties": {"p": {"type": "string", **_A}}, "required": ["p"]}
    gguf = client.llm.model(TEXT).respond("Value?", response_format=schema)
    assert isinstance(json.loads(gguf.content)["p"], str), gguf.content
    mlx = client.llm.model(MLX).respond("Value?", response_format=schema)
    assert isinstance(json.loads(mlx.content)["p"], dict), mlx.content


def test_a_gguf_model_reads_an_empty_pattern_as_none(client: lms.Client) -> None:
    """Found by a differential fuzz: llama.cpp's C++ converter reads ``"pattern": ""`` as no
    pattern (the lengths apply); the emulator refused it as not anchored."""
    schema = {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": "", "minLength": 3}},
        "required": ["code"],
    }
    for i in range(3):
        reply = client.llm.model(TEXT).respond(f"Code {i}?", response_format=schema).content
        assert len(json.loads(reply)["code"]) >= 3


@pytest.mark.parametrize("name", ['q"', "back\\slash", "line\nbreak", "tab\tkey", '"\\"'])
def test_a_gguf_model_writes_a_property_name_json_escapes_as_json(
    client: lms.Client, name: str
) -> None:
    """outlines-core wrote the name unescaped (``{"q"": 1}``, a raw line break): not JSON,
    where llama.cpp's converter, LM Studio's on a GGUF model, escapes it (found by a probe
    with the TypeScript SDK)."""
    schema = {
        "type": "object",
        "properties": {name: {"type": "integer"}, "plain": {"type": "boolean"}},
        "required": [name, "plain"],
        "additionalProperties": False,
    }
    for i in range(3):
        reply = client.llm.model(TEXT).respond(f"Go {i}", response_format=schema)
        document = json.loads(reply.content)
        assert sorted(document) == sorted([name, "plain"])
        assert isinstance(document[name], int)


def test_a_schema_the_synthetic_engine_cannot_constrain_is_refused_without_outlines_advice(
    client: lms.Client,
) -> None:
    """The error asked the LM Studio client's user to open an issue with Outlines.

    On an MLX model (outlines-core): a GGUF model takes the schema, as llama.cpp's converter
    reads ``{"not": ...}`` as any value.
    """
    schema = {"type": "object", "properties": {"k": {"not": {"type": "string"}}}}
    with pytest.raises(lms.LMStudioServerError) as info:
        client.llm.model(MLX).respond("Go", response_format=schema)
    assert "Unsupported JSON Schema structure" in str(info.value)
    assert "open an issue" not in str(info.value)


@pytest.mark.parametrize(
    ("schema", "refused"),
    [
        ({"type": "string", "pattern": "a+"}, "a+"),
        ({"type": "string", "pattern": "^a+$"}, None),
        ({"type": "string", "pattern": ""}, None),  # no pattern to the converter
        ({"pattern": "a"}, "a"),  # no type: a string pattern all the same
        ({"type": "string", "enum": ["b"], "pattern": "a"}, None),  # enum comes first
        ({"type": "integer", "pattern": "a"}, None),
        ({"type": ["string", "null"], "pattern": "a"}, "a"),
        ({"anyOf": [{"type": "integer"}, {"type": "string", "pattern": "a"}]}, "a"),
        ({"type": "array", "items": {"type": "string", "pattern": "a"}}, "a"),
        ({"type": "object", "additionalProperties": {"type": "string", "pattern": "a"}}, "a"),
        ({"allOf": [{"properties": {"x": {"type": "string", "pattern": "a"}}}]}, "a"),
        ({"$ref": "#/$defs/S", "$defs": {"S": {"type": "string", "pattern": "a"}}}, "a"),
        ({"$defs": {"S": {"type": "string", "pattern": "a"}}, "type": "string"}, None),
        ({"$ref": "#/$defs/N", "$defs": {"N": {"properties": {"n": {"$ref": "#/$defs/N"}}}}}, None),
        (  # the first one read, in the converter's order: an allOf member's reference first
            {
                "allOf": [{"$ref": "#/$defs/A"}, {"properties": {"y": {"pattern": "b"}}}],
                "$defs": {"A": {"properties": {"x": {"pattern": "a"}, "z": {"pattern": "^c$"}}}},
            },
            "a",
        ),
        (  # a reference chain 1,000 long: it overflowed Python's recursion (found by a probe)
            {
                "$ref": "#/$defs/d0",
                "$defs": {
                    **{f"d{i}": {"$ref": f"#/$defs/d{i + 1}"} for i in range(1000)},
                    "d1000": {"type": "string", "pattern": "a"},
                },
            },
            "a",
        ),
    ],
)
def test_the_patterns_llama_cpp_reads(schema: dict[str, Any], refused: str | None) -> None:
    from outlines_lmstudio.testing._llama_schema import refused_pattern

    assert refused_pattern(schema) == refused


# What llama.cpp's C++ converter (built from llama-cpp-python 0.3.36's sources) said of
# each: its builder's "JSON schema error at <where>: <what>", or nothing.
_BUILDER_VERDICTS: list[tuple[Any, str | None]] = [
    (
        {"type": "array", "prefixItems": [{"type": "integer"}], "items": False},
        "#/items: schema must be an object",
    ),
    ({"type": "array", "items": True}, "#/items: schema must be an object"),
    ({"type": "object", "properties": {"a": True}}, "#/properties/a: schema must be an object"),
    ({"anyOf": [True, {"type": "string"}]}, "#/anyOf/0: schema must be an object"),
    ({"allOf": [True]}, "#/allOf/0: schema must be an object"),
    ({"type": "array", "prefixItems": [True]}, "#/prefixItems/0: schema must be an object"),
    ({"$defs": {"x": True}, "$ref": "#/$defs/x"}, "#/$defs/x: schema must be an object"),
    (
        {"type": "object", "additionalProperties": {"type": "object", "properties": {"b": True}}},
        "#/additionalProperties/properties/b: schema must be an object",
    ),
    # Found by a review: a property named additionalProperties, an allOf member's items,
    # and the branches of a type list, which the builder names.
    (
        {"type": "object", "properties": {"additionalProperties": True}},
        "#/properties/additionalProperties: schema must be an object",
    ),
    (
        {"allOf": [{"type": "array", "prefixItems": [{"type": "string"}], "items": False}]},
        "#/allOf/0/items: schema must be an object",
    ),
    (
        {"type": ["array", "null"], "prefixItems": [{"type": "string"}], "items": False},
        "#/type/0/items: schema must be an object",
    ),
    ({"anyOf": []}, "#/anyOf: must not be empty"),
    ({"oneOf": {"type": "string"}}, "#/oneOf: must be an array of schemas"),
    ({"type": []}, "#: type must not be empty"),
    ({"type": 5}, "#: type must be a string or an array of strings"),
    ({"type": "date"}, "#: unrecognized type date"),
    ({"enum": []}, "#: enum must be a non-empty array"),
    ({"type": "object", "properties": []}, "#: properties must be an object"),
    (
        {"type": "object", "additionalProperties": 1},
        "#: additionalProperties must be a boolean or a schema",
    ),
    (
        {"type": "array", "items": {"type": "string"}, "minItems": 1.5},
        "#: minItems must be a non-negative integer",
    ),
    ({"type": "string", "maxLength": -1}, "#: maxLength must be a non-negative integer"),
    ({"type": "string", "maxLength": 2**31}, "#: maxLength must be a non-negative integer"),
    ({"type": "string", "format": 5}, "#: format must be a string"),
    ({"type": "string", "pattern": 5}, "#: pattern must be a string"),
    ({"type": "integer", "minimum": "3"}, "#: minimum must be a number"),
    ({"$ref": 5}, "#: $ref must be a string"),
    (
        {"$ref": "other.json#/x"},
        "#: unsupported $ref other.json#/x, only references into the same document are supported",
    ),
    (
        {"$ref": "#/$defs/missing", "$defs": {}},
        "#: cannot resolve $ref #/$defs/missing, missing not found",
    ),
    (
        {"$ref": "#/prefixItems/3", "prefixItems": [{}]},
        "#: cannot resolve $ref #/prefixItems/3, 3 is out of range",
    ),
    (
        {"type": "object", "properties": {"c": {"$ref": "#"}}, "required": ["c"]},
        "#/properties/c: unsupported $ref #, only references into the same document are supported",
    ),
    ({"type": "object", "additionalProperties": True}, None),
    (
        {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False},
        None,
    ),
    ({"type": "object", "$defs": {"x": True}}, None),  # never reached
    ({"type": "string", "not": True}, None),
    ({"type": "array", "contains": True}, None),
    ({"type": "object", "patternProperties": {"a": True}}, None),
    ({"type": "object", "properties": {"a": {"const": True}}}, None),
    ({"type": "integer", "minimum": 3, "exclusiveMinimum": "x"}, None),  # read only alone
    ({"type": "array", "prefixItems": [{}], "minItems": -1}, None),  # a tuple's counts: unread
    ({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}, None),  # a cycle
]


@pytest.mark.parametrize(("schema", "error"), _BUILDER_VERDICTS)
def test_what_llama_cpps_schema_builder_refuses(schema: Any, error: str | None) -> None:
    """Found by an audit: a GGUF model answered ``items: false`` after ``prefixItems``
    (and other schemas llama.cpp's builder fails on), which LM Studio refuses. With a build
    of llama.cpp's C++ converter (``LLAMA_JSON_SCHEMA_TO_GRAMMAR``, see
    tests/unit/grammar/cpp/README.md), each verdict is checked against it too."""
    from outlines_lmstudio.testing._llama_builder import schema_error

    assert schema_error(schema) == (None if error is None else f"JSON schema error at {error}")
    if CPP_CONVERTER:
        said = run_cpp_converter(schema).stdout.strip()
        prefix = "ERR JSON schema conversion failed: JSON schema error at "
        assert (None if said.startswith("OK ") else said.removeprefix(prefix)) == error


def test_a_boolean_schema_llama_cpp_refuses_fails_a_gguf_prediction(client: lms.Client) -> None:
    schema = {"type": "array", "prefixItems": [{"type": "integer"}], "items": False}
    with pytest.raises(lms.LMStudioServerError, match="at #/items: schema must be an object"):
        client.llm.model(TEXT).respond("?", response_format=schema)
    assert client.llm.model(MLX).respond("?", response_format=schema).parsed is not None


def test_default_tool_arguments_take_only_prompt_numbers_their_parameter_takes() -> None:
    """Found by a probe: "2.5 times at level 7" called ``repeat(times=2.5, level=7)`` for an
    integer in 1..3 and an enum of 1 and 2, which the SDK refused before the tool ran."""
    import random

    from outlines_lmstudio.testing._sampler import JsonSampler
    from outlines_lmstudio.testing._tools import default_tool_call

    parameters = {
        "type": "object",
        "properties": {
            "times": {"type": "integer", "minimum": 1, "maximum": 3},
            "level": {"type": "integer", "enum": [1, 2]},
        },
        "required": ["times", "level"],
    }
    tools = [{"name": "repeat", "parameters": parameters}]
    sampler = JsonSampler()
    for seed in range(10):
        call = default_tool_call(
            tools, "Say hi 2.5 times at level 7", sampler.sample, random.Random(seed)
        )
        assert call.arguments["times"] in (1, 2, 3)
        assert call.arguments["level"] in (1, 2)
    fitting = default_tool_call(
        tools, "Say hi 3 times at level 2", sampler.sample, random.Random(0)
    )
    assert fitting.arguments == {"times": 3, "level": 2}  # the prompt's numbers, where they fit


def test_a_gguf_model_loads_with_lm_studios_default_context(client: lms.Client) -> None:
    # Before: a synthetic GGUF model loaded at its maximum (32768), and the same model with
    # gguf= (the llama.cpp engine) at 4096.
    gguf = client.llm.load_new_instance(TEXT, "default")
    assert gguf.get_info().max_context_length == 32768
    assert gguf.get_context_length() == 4096
    mlx = client.llm.load_new_instance(MLX, "mlx-default")
    assert mlx.get_info().format == "safetensors"
    assert mlx.get_context_length() == mlx.get_info().max_context_length


def test_a_context_above_the_maximum_is_loaded_as_asked(client: lms.Client) -> None:
    # LM Studio's contextLength has no upper bound (lmstudio-js llmLoadModelConfigSchema:
    # int, min 1) and llama.cpp takes an n_ctx above the trained one with a warning.
    model = client.llm.load_new_instance(TEXT, "long", config={"contextLength": 40_000})
    assert model.get_info().max_context_length == 32768
    assert model.get_context_length() == 40_000


def test_an_embedding_input_longer_than_the_context_is_refused(client: lms.Client) -> None:
    # Before: any length was embedded. LM Studio refuses it: "Input length 6491 exceeds context
    # length 1500" (lmstudio-ai/examples#29); its count includes the start and end tokens.
    embedder = client.embedding.model(EMBED)
    assert embedder.get_context_length() == 2048
    with pytest.raises(
        lms.LMStudioServerError, match=r"Input length 5003 exceeds context length 2048$"
    ):
        embedder.embed("word " * 5000)
    assert len(embedder.embed("word " * 2045)) == 768  # 2046 + start + end = the context
    with pytest.raises(
        lms.LMStudioServerError, match=r"Input length 2049 exceeds context length 2048$"
    ):
        embedder.embed("word " * 2046)
    small = client.embedding.load_new_instance(EMBED, "ctx16", config={"contextLength": 16})
    with pytest.raises(
        lms.LMStudioServerError, match=r"Input length 23 exceeds context length 16$"
    ):
        small.embed("word " * 20)
    assert len(small.embed("word " * 13)) == 768


@pytest.mark.parametrize(
    ("schema", "why"),
    [
        ({"type": "integer", "minimum": 5, "maximum": 3}, "no integer lies within its bounds"),
        ({"type": "integer", "minimum": 1.2, "maximum": 1.8}, "no integer lies within"),
        ({"type": "integer", "exclusiveMinimum": 3, "exclusiveMaximum": 4}, "no integer"),
        ({"type": "number", "exclusiveMinimum": 2, "maximum": 2}, "no number lies within"),
        ({"type": "string", "enum": []}, "its enum lists no value"),
        (
            {
                "type": "object",
                "properties": {"a": {"type": "array", "items": {"enum": []}, "minItems": 1}},
                "required": ["a"],
            },
            r"\$\.properties\.a\.items admits no value",
        ),
        (  # every branch empty
            {
                "type": "object",
                "properties": {
                    "a": {"anyOf": [{"type": "integer", "minimum": 5, "maximum": 3}, {"enum": []}]}
                },
                "required": ["a"],
            },
            r"\$\.properties\.a\.anyOf\[0\] admits no value",
        ),
        (
            {"type": "object", "properties": {"c": {"$ref": "#"}}, "required": ["c"]},
            "nest '#' in itself without end",
        ),
        (
            {
                "$defs": {
                    "N": {
                        "type": "object",
                        "properties": {"next": {"$ref": "#/$defs/N"}},
                        "required": ["next"],
                    }
                },
                "type": "array",
                "items": {"$ref": "#/$defs/N"},
                "minItems": 1,
            },
            "nest '#/\\$defs/N' in itself",
        ),
        ({"type": "string", "minLength": 5, "maxLength": 2}, "outlines-core cannot build"),
    ],
)
def test_a_schema_no_document_matches_is_refused(
    client: lms.Client, schema: dict[str, Any], why: str
) -> None:
    # Before: the bounds case wrote "14", the empty enum "", the required self-reference
    # an object missing "c" (only the string case failed, as LM Studio fails them all).
    # On the MLX model: on a GGUF one, llama.cpp's schema builder fails first on some (an
    # empty enum, a "$ref" of "#"), with its own message (`_BUILDER_VERDICTS`).
    model = client.llm.model(MLX)
    with pytest.raises(lms.LMStudioServerError, match=f"Failed to build a grammar.*{why}"):
        model.respond("x", response_format=schema)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "integer", "minimum": 3, "maximum": 3},
        {"type": "number", "minimum": 1.5, "maximum": 1.5},
        {"type": ["integer", "null"], "minimum": 5, "maximum": 3},
        {"type": "object", "properties": {"c": {"$ref": "#"}}},
        {"type": "array", "items": {"$ref": "#"}},
        {"anyOf": [{"type": "null"}, {"type": "object", "properties": {"c": {"$ref": "#"}}}]},
        # Parts a document need not go through: an optional property, items of an array
        # that may be empty, one branch of several, a not.
        {"type": "object", "properties": {"a": {"enum": []}}},
        {"type": "array", "items": {"type": "integer", "minimum": 5, "maximum": 3}},
        {"anyOf": [{"type": "integer", "minimum": 5, "maximum": 3}, {"type": "string"}]},
        {"type": "string", "not": {"enum": []}},
    ],
)
def test_a_schema_a_document_matches_is_not_refused_as_impossible(schema: Any) -> None:
    from outlines_lmstudio.testing._impossible import impossible

    assert impossible(schema) is None


def test_a_reply_exactly_max_tokens_long_ends_on_the_limit(make_emulator: MakeEmulator) -> None:
    """llama.cpp checks the token budget before the end of generation, as the emulator's
    llama.cpp engine does; the synthetic engine said ``eosFound``, so a scripted
    ``parse(..., int, max_tokens=1)`` returned 123 where LM Studio raises (found by a probe)."""
    emulator = make_emulator(token_latency=0)
    with lms.Client(emulator.api_host) as client:
        model = client.llm.model(TEXT)
        emulator.script(TEXT, ["123 is it"])
        tokens = model.respond("q").stats.predicted_tokens_count
        assert tokens is not None
        results = []
        for limit in (tokens, tokens + 1):
            emulator.script(TEXT, ["123 is it"])
            results.append(model.respond("q", config={"maxTokens": limit}))
    assert results[0].content == "123 is it"
    assert results[0].stats.stop_reason == "maxPredictedTokensReached"
    assert results[1].stats.stop_reason == "eosFound"


def test_a_gguf_llama_cpp_cannot_load_fails_as_a_failed_load(tmp_path: Path) -> None:
    """Found by a probe: a GGUF whose metadata reads but whose model llama.cpp cannot load
    (no weights; in the wild, an architecture it cannot run) failed every prediction with
    "Error rendering prompt with jinja template"; tokenizing, counting tokens and applying
    the template failed as the emulator's own error ("failed to serve this request")."""
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gguf")
    from tests.unit.grammar._llama_harness import write_byte_vocab

    path = tmp_path / "vocab-only.gguf"
    write_byte_vocab(path)
    with (
        LMStudioEmulator([EmulatedModel("vocab-only", gguf=path)]) as emulator,
        lms.Client(emulator.api_host) as client,
    ):
        model = client.llm.model("vocab-only")
        calls: list[Callable[[], object]] = [
            lambda: model.respond("Hello", config={"maxTokens": 3}),
            lambda: model.tokenize("Hello"),
            lambda: model.count_tokens("Hello"),
            lambda: model.apply_prompt_template(lms.Chat.from_history("Hello")),
        ]
        for call in calls:
            with pytest.raises(lms.LMStudioServerError) as info:
                call()
            said = str(info.value)
            assert "Failed to load model" in said
            assert "jinja" not in said
            assert "failed to serve this request" not in said
            # llama.cpp's reason (this file lacks the weights' metadata too)
            assert "could not load this GGUF model: error loading model hyperparameters" in said


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        (
            {"arch": "gemma99"},
            "cannot read this file as a GGUF model: unknown model architecture: 'gemma99'",
        ),
        (
            {"context_length": None},
            "cannot load this GGUF model: key not found in model: llama.context_length",
        ),
    ],
    ids=["an architecture llama.cpp does not know", "no context length"],
)
def test_a_gguf_llama_cpp_refuses_is_refused_with_its_reason(
    tmp_path: Path, how: dict[str, Any], reason: str
) -> None:
    """Found by a probe: llama.cpp's reason was dropped ("cannot read this file as a GGUF
    model" for every file), and a file without a context length was listed with a made-up
    2048 tokens, then failed on every call."""
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gguf")
    from tests.unit.grammar._llama_harness import write_byte_vocab

    path = tmp_path / "m.gguf"
    write_byte_vocab(path, **how)
    with pytest.raises(ValueError, match=re.escape(f"{path}: llama.cpp {reason}")):
        EmulatedModel("m", gguf=path)


def test_a_file_that_is_no_gguf_is_refused_with_llama_cpps_reason_once(tmp_path: Path) -> None:
    """llama.cpp's reason, and the path once (its "failed to load model from PATH" line
    after the reason is left out; found by a review)."""
    pytest.importorskip("llama_cpp")
    path = tmp_path / "notes.gguf"
    path.write_bytes(b"NOTAGGUF" * 64)
    with pytest.raises(ValueError, match="invalid magic characters") as info:
        EmulatedModel("notes", gguf=path)
    assert str(info.value) == (
        f"{path}: llama.cpp cannot read this file as a GGUF model: invalid magic characters: "
        "'NOTA', expected 'GGUF'"
    )


@pytest.mark.parametrize("folder", ["plain", os.fsdecode(b"caf\xe9")])
def test_a_split_gguf_is_listed_with_the_size_of_all_its_shards(
    tmp_path: Path, folder: str
) -> None:
    """Found by a probe: only the first shard's size was listed (and counted in the memory
    a load needs); LM Studio lists a split model's whole size. In a folder whose name is not
    UTF-8 too (found by mutation testing: nothing held the shards' paths to be bytes)."""
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gguf")
    from tests.unit.grammar._llama_harness import write_byte_vocab

    (tmp_path / folder).mkdir()
    write_byte_vocab(tmp_path / folder / "m.gguf", shards=2)
    first, second = sorted((tmp_path / folder).glob("m-0000?-of-00002.gguf"))
    with (
        LMStudioEmulator([EmulatedModel("split", gguf=first)]) as emulator,
        lms.Client(emulator.api_host) as client,
    ):
        (listed,) = [m for m in client.llm.list_downloaded() if m.model_key == "split"]
    assert listed.info.size_bytes == first.stat().st_size + second.stat().st_size


def test_gguf_models_report_their_quantization_and_predictions_their_gpu_layers(
    make_emulator: MakeEmulator,
) -> None:
    """lmstudio-js's own tests expect both of LM Studio: ``quantization`` in a Q4_K_M model's
    info, ``numGpuLayers`` in every prediction's stats (found by a probe running them)."""
    emulator = make_emulator(
        models=[
            EmulatedModel("quantized", path="pub/repo/model-Q4_K_M.gguf"),
            _llama(),
            EmulatedModel("plain"),  # its file's name says no quantization
            EmulatedModel("mlx", format="safetensors", path="pub/model-q4"),
        ]
    )
    with raw_socket(emulator, "system") as ws:
        listed = {m["modelKey"]: m for m in raw_rpc(ws, "listDownloadedModels", 1)["result"]}
    assert listed["quantized"]["quantization"] == {"name": "Q4_K_M", "bits": 4}
    assert listed[_llama().key]["quantization"] == {"name": "Q8_0", "bits": 8}
    assert "quantization" not in listed["plain"]
    assert "quantization" not in listed["mlx"]  # not a GGUF model: no GGUF quantization
    with lms.Client(emulator.api_host) as client:
        model = client.llm.model("quantized")
        assert model.get_info().path == "pub/repo/model-Q4_K_M.gguf"
        assert model.respond("hi").stats.num_gpu_layers == 0
