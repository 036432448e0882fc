"""Every SDK call the library needs, through the real sync `lms.Client`."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import lmstudio as lms
import pytest
from lmstudio import LlmInstanceInfo
from lmstudio._sdk_models import FilesRpcGetLocalFileAbsolutePathParameter

from outlines_lmstudio.testing import LMStudioEmulator

from .conftest import EMBED, MLX, PNG, TEXT, UNLOADED, VISION, MakeEmulator


def test_respond_returns_deterministic_text_and_stats(
    emu: LMStudioEmulator, client: lms.Client
) -> None:
    model = client.llm.model(TEXT)
    first = model.respond("Tell me about rivers")
    second = model.respond("Tell me about rivers")
    other = model.respond("Tell me about stones")
    assert first.content == second.content != other.content
    assert len(first.content.split()) >= 10
    stats = first.stats
    assert stats.stop_reason == "eosFound"
    assert stats.predicted_tokens_count == len(emu.predictions[0].fragments)
    assert stats.prompt_tokens_count is not None
    assert stats.prompt_tokens_count > 0
    assert stats.total_tokens_count == stats.prompt_tokens_count + stats.predicted_tokens_count
    assert first.model_info.model_key == TEXT
    assert emu.predictions[0].text == first.content
    assert emu.predictions[0].stop_reason == "eosFound"
    assert emu.predictions[0].done


def test_seed_changes_the_text(make_emulator: MakeEmulator) -> None:
    texts = []
    for seed in (1, 2):
        emulator = make_emulator(seed=seed)
        with lms.Client(emulator.api_host) as client:
            texts.append(client.llm.model(TEXT).respond("same prompt").content)
    assert texts[0] != texts[1]


def test_respond_stream_fragments_and_progress(emu: LMStudioEmulator, client: lms.Client) -> None:
    progress: list[float] = []
    stream = client.llm.model(TEXT).respond_stream(
        "Hello", on_prompt_processing_progress=progress.append
    )
    fragments = [f.content for f in stream]
    result = stream.result()
    assert fragments == emu.predictions[-1].fragments
    assert "".join(fragments) == result.content
    assert progress[0] == 0.0
    assert progress[-1] == 1.0


def test_complete_sends_the_complete_mode_layer(emu: LMStudioEmulator, client: lms.Client) -> None:
    result = client.llm.model(TEXT).complete("Once upon a time", config={"temperature": 0.3})
    prediction = emu.predictions[-1]
    assert result.content == prediction.text
    assert "llm.prediction.promptTemplate" in prediction.config
    assert prediction.config["llm.prediction.temperature"] == 0.3
    assert prediction.last_user_text == "Once upon a time"
    stream = client.llm.model(TEXT).complete_stream("Once upon a time")
    assert "".join(f.content for f in stream) == stream.result().content


def test_structured_json_conforms(emu: LMStudioEmulator, client: lms.Client) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
        "required": ["name", "age"],
    }
    result = client.llm.model(TEXT).respond("Person?", response_format=schema)
    assert isinstance(result.parsed, dict)
    assert set(result.parsed) == {"name", "age"}
    assert isinstance(result.parsed["age"], int)
    assert result.parsed["age"] >= 0
    assert emu.predictions[-1].structured == {"type": "json", "jsonSchema": schema}


def test_a_draft_07_tuple_is_answered_on_a_gguf_model(client: lms.Client) -> None:
    """Found by a probe: ``items`` as a list (what zod's ``z.tuple`` writes, read by
    llama.cpp's converter as exactly those items) failed the prediction, as outlines-core
    refuses it."""
    tuple_schema = {
        "type": "array",
        "items": [{"type": "string"}, {"type": "number"}],
        "minItems": 2,
        "maxItems": 2,
    }
    schema = {"type": "object", "properties": {"v": tuple_schema}, "required": ["v"]}
    for seed in range(5):
        result = client.llm.model(TEXT).respond(f"Pair {seed}?", response_format=schema)
        assert isinstance(result.parsed, dict)
        first, second = result.parsed["v"]
        assert isinstance(first, str)
        assert isinstance(second, int | float)


def test_json_mode_without_a_schema_writes_json(emu: LMStudioEmulator, client: lms.Client) -> None:
    """``structured: {"type": "json"}`` is LM Studio's "only valid JSON" mode, not an error."""
    model = client.llm.model(TEXT)
    for prompt in ("One", "Two", "Three"):
        result = model.respond(prompt, config={"structured": {"type": "json"}})
        json.loads(result.content)
        assert emu.predictions[-1].structured == {"type": "json"}
    assert emu.predictions[-1].error is None


def test_json_mode_without_a_schema_is_any_json_not_only_objects(client: lms.Client) -> None:
    """Found by mutation testing: nothing checked that ``structured: {"type": "json"}`` with no
    ``jsonSchema`` allows any JSON document (schema ``{}``, as llama.cpp reads it), not only
    objects."""
    model = client.llm.model(TEXT)
    replies = [
        json.loads(model.respond(f"Anything {i}", config={"structured": {"type": "json"}}).content)
        for i in range(12)
    ]
    assert {type(reply) for reply in replies} - {dict}, replies


def test_config_fields_are_recorded_and_echoed(emu: LMStudioEmulator, client: lms.Client) -> None:
    result = client.llm.model(TEXT).respond(
        "Hi", config={"temperature": 0.2, "maxTokens": 50, "topKSampling": 7}
    )
    config = emu.predictions[-1].config
    assert config["llm.prediction.temperature"] == 0.2
    assert config["llm.prediction.maxPredictedTokens"] == {"checked": True, "value": 50}
    assert result.prediction_config.temperature == 0.2
    assert result.prediction_config.max_tokens == 50
    assert result.prediction_config.top_k_sampling == 7


@pytest.mark.parametrize("kind", ["jinja", "manual"])
def test_a_prompt_templates_stop_strings_end_the_reply(
    emu: LMStudioEmulator, client: lms.Client, kind: str
) -> None:
    """A template's ``stopStrings`` are "Additional stop strings to be used with this
    template" (lmstudio-js's ``LLMPromptTemplate``). Found by a probe: the synthetic engine
    read only the config's own, and the reply ran past the template's."""
    emu.script(TEXT, ["alpha beta gamma delta"])
    template: dict[str, Any] = {"type": kind, "stopStrings": ["gamma"]}
    if kind == "jinja":
        template["jinjaPromptTemplate"] = {"template": "{{ messages[0].content }}"}
    else:
        template["manualPromptTemplate"] = {
            "beforeSystem": "",
            "afterSystem": "",
            "beforeUser": "",
            "afterUser": "",
            "beforeAssistant": "",
            "afterAssistant": "",
        }
    config: Any = {"promptTemplate": template, "stopStrings": ["omega"]}
    result = client.llm.model(TEXT).respond("Say four words", config=config)
    assert result.content == "alpha beta "
    assert result.stats.stop_reason == "stopStringFound"


@pytest.mark.parametrize(("max_tokens", "limited"), [(-1, False), (0, True), (3, True)])
def test_max_tokens_minus_one_means_no_limit(
    client: lms.Client, max_tokens: int, limited: bool
) -> None:
    """Found by a probe: ``maxTokens: -1`` (allowed by both SDKs' types: "as many tokens as
    it wants") gave an empty reply, as if the limit were 0."""
    result = client.llm.model(TEXT).respond("Say something long", config={"maxTokens": max_tokens})
    if limited:
        assert result.stats.stop_reason == "maxPredictedTokensReached"
        assert result.stats.predicted_tokens_count == max_tokens
    else:
        assert result.stats.stop_reason == "eosFound"
        assert (result.stats.predicted_tokens_count or 0) > 0
        assert result.content


def test_a_draft_model_is_used_and_reported_in_the_stats(client: lms.Client) -> None:
    stream = client.llm.model(TEXT).respond_stream(
        "Tell me about rivers", config={"draftModel": UNLOADED}
    )
    fragments = list(stream)
    stats = stream.result().stats
    assert stats.used_draft_model_key == UNLOADED
    drafted = sum(f.tokens_count for f in fragments if f.contains_drafted)
    assert 0 < drafted < (stats.predicted_tokens_count or 0)
    assert stats.accepted_draft_tokens_count == drafted
    assert stats.rejected_draft_tokens_count is not None
    assert stats.ignored_draft_tokens_count is not None
    assert stats.total_draft_tokens_count == (
        drafted + stats.rejected_draft_tokens_count + stats.ignored_draft_tokens_count
    )
    plain = client.llm.model(TEXT).respond("Tell me about rivers").stats
    assert plain.used_draft_model_key is None
    assert plain.total_draft_tokens_count is None


@pytest.mark.parametrize(
    ("draft", "message"),
    [
        # LM Studio's words, in lmstudio-js's own test (the emulator's were its "path" error)
        ("no-such-draft", 'Cannot find model "no-such-draft"'),
        (EMBED, "not an LLM"),
        (MLX, "same engine"),
    ],
)
def test_a_draft_model_that_cannot_draft_fails_the_prediction(
    emu: LMStudioEmulator, client: lms.Client, draft: str, message: str
) -> None:
    with pytest.raises(lms.LMStudioServerError, match=message):
        client.llm.model(TEXT).respond("Hi", config={"draftModel": draft})
    assert emu.predictions[-1].error is not None


def test_model_info_and_bookkeeping(client: lms.Client) -> None:
    model = client.llm.model(TEXT)
    info = model.get_info()
    assert isinstance(info, LlmInstanceInfo)
    assert info.identifier == TEXT
    assert info.trained_for_tool_use
    assert not info.vision
    assert model.get_context_length() == 4096  # LM Studio's default for a GGUF model
    load_config = model.get_load_config()
    assert load_config.context_length == 4096
    tokens = model.tokenize("hello brave new world")
    assert tokens == model.tokenize("hello brave new world")
    assert len(tokens) == 4
    assert model.count_tokens("hello brave new world") == 4
    formatted = model.apply_prompt_template(lms.Chat("Be brief."))
    assert "Be brief." in formatted


def test_catalogue_listing(client: lms.Client) -> None:
    downloaded = {m.model_key: m for m in client.list_downloaded_models()}
    assert {TEXT, VISION, MLX, EMBED, UNLOADED} <= set(downloaded)
    assert downloaded[MLX].info.format == "safetensors"
    assert downloaded[VISION].info.vision
    assert [m.model_key for m in client.list_downloaded_models("embedding")] == [EMBED]
    loaded = {m.identifier for m in client.llm.list_loaded()}
    assert loaded == {TEXT, VISION, MLX}
    assert {m.identifier for m in client.list_loaded_models()} == loaded | {EMBED}
    assert client.llm.model().identifier == TEXT  # no key: the first loaded model


def test_get_or_load_reports_progress(emu: LMStudioEmulator, client: lms.Client) -> None:
    progress: list[float] = []
    model = client.llm.model(UNLOADED, on_load_progress=progress.append)
    assert model.identifier == UNLOADED
    assert progress[0] == 0.0
    assert progress[-1] == 1.0
    assert progress == sorted(progress)
    assert UNLOADED in {m.identifier for m in client.llm.list_loaded()}
    assert model.respond("hi").content
    again: list[float] = []
    client.llm.model(UNLOADED, on_load_progress=again.append)
    assert again == [1.0]  # already loaded: no loading steps


def test_get_or_load_context_length_from_config(client: lms.Client) -> None:
    model = client.llm.model(UNLOADED, config={"contextLength": 1234})
    assert model.get_context_length() == 1234


def test_load_new_instance_and_unload(emu: LMStudioEmulator, client: lms.Client) -> None:
    second = client.llm.load_new_instance(TEXT)
    assert second.identifier == f"{TEXT}:2"
    named = client.llm.load_new_instance(TEXT, "mine")
    assert named.identifier == "mine"
    with pytest.raises(lms.LMStudioServerError, match="already exists"):
        client.llm.load_new_instance(TEXT, "mine")
    named.unload()
    client.llm.unload(second.identifier)
    assert {m.identifier for m in client.llm.list_loaded()} == {TEXT, VISION, MLX}
    with pytest.raises(lms.LMStudioModelNotFoundError):
        client.llm.unload("mine")


def test_unloading_names_only_models_of_its_own_kind(client: lms.Client) -> None:
    """Found by mutation testing: nothing checked that ``embedding.unload`` of an LLM's
    identifier fails as on LM Studio (no embedding model matches), leaving the LLM loaded."""
    with pytest.raises(lms.LMStudioModelNotFoundError):
        client.embedding.unload(TEXT)
    with pytest.raises(lms.LMStudioModelNotFoundError):
        client.llm.unload(EMBED)
    assert TEXT in {m.identifier for m in client.llm.list_loaded()}
    assert EMBED in {m.identifier for m in client.embedding.list_loaded()}


def test_unknown_model_errors(client: lms.Client) -> None:
    with pytest.raises(lms.LMStudioServerError, match="Cannot find a model") as info:
        client.llm.model("no-such-model")
    assert not isinstance(info.value, lms.LMStudioModelNotFoundError)
    with pytest.raises(lms.LMStudioServerError, match="embedding model"):
        client.llm.model(EMBED)
    model = client.llm.model(TEXT)
    model.unload()
    for call in (model.get_info, model.get_load_config, lambda: model.respond("x")):
        with pytest.raises(lms.LMStudioModelNotFoundError):
            call()
    with pytest.raises(lms.LMStudioModelNotFoundError):
        model.tokenize("x")


def test_embeddings_are_deterministic_unit_vectors(client: lms.Client) -> None:
    model = client.embedding.model(EMBED)
    first, second = model.embed(["alpha", "beta"])
    assert isinstance(first, list)
    assert len(first) == 768
    assert abs(sum(v * v for v in first) - 1.0) < 1e-9
    assert model.embed("alpha") == first != second
    assert model.get_context_length() == 2048
    assert model.count_tokens("one two") == 2


def test_image_round_trip(emu: LMStudioEmulator, client: lms.Client) -> None:
    handle = client.files.prepare_image(PNG, name="dot.png")
    assert handle.file_type == "image"
    assert handle.size_bytes == len(PNG)
    assert emu.uploads[-1].data == PNG
    assert emu.uploads[-1].name == "dot.png"
    chat = lms.Chat()
    chat.add_user_message("What is this?", images=[handle])
    result = client.llm.model(VISION).respond(chat)
    assert result.content
    assert emu.predictions[-1].images == [PNG]
    assert emu.predictions[-1].last_user_text == "What is this?"


def test_image_to_text_model_fails_like_lm_studio(client: lms.Client) -> None:
    handle = client.files.prepare_image(PNG)
    chat = lms.Chat()
    chat.add_user_message("What is this?", images=[handle])
    with pytest.raises(lms.LMStudioServerError, match="does not support images"):
        client.llm.model(TEXT).respond(chat)


def test_a_file_handle_works_in_another_clients_prediction(
    emu: LMStudioEmulator, client: lms.Client
) -> None:
    # As in LM Studio, which keeps uploads in one folder by name: Outlines' own model uploads
    # with the SDK's default client and predicts with the user's (found by a probe running
    # Outlines' tests: the emulator answered "File not found").
    handle = client.files.prepare_image(PNG)
    chat = lms.Chat()
    chat.add_user_message("What?", images=[handle])
    with lms.Client(emu.api_host) as other:
        assert other.llm.model(VISION).respond(chat).content
    assert emu.predictions[-1].images == [PNG]
    assert emu.predictions[-1].client_id != emu.uploads[-1].client_id


def test_a_file_handle_goes_when_its_client_disconnects(
    emu: LMStudioEmulator, client: lms.Client
) -> None:
    with lms.Client(emu.api_host) as uploader:
        handle = uploader.files.prepare_image(PNG)
        parameter = FilesRpcGetLocalFileAbsolutePathParameter(file_name=handle.identifier)
        path = Path(uploader.files.remote_call("getLocalFileAbsolutePath", parameter)["path"])
    # The server releases the client, and its files, when it sees the sockets close.
    emu.wait_until(lambda: not path.exists())
    chat = lms.Chat()
    chat.add_user_message("What?", images=[handle])
    with pytest.raises(lms.LMStudioServerError, match="File not found") as info:
        client.llm.model(VISION).respond(chat)
    assert "go when the client that uploaded them disconnects" in str(info.value)
    assert "File not found" in str(emu.predictions[-1].error)


def test_a_reset_keeps_the_files_of_a_connected_client(
    emu: LMStudioEmulator, client: lms.Client
) -> None:
    # A session-scoped client (and outlines-lmstudio's upload cache) reuses its handles
    # in the next test. Before: reset() forgot them ("File not found") while connected.
    handle = client.files.prepare_image(PNG)
    emu.reset()
    assert emu.uploads == []
    chat = lms.Chat()
    chat.add_user_message("What?", images=[handle])
    assert client.llm.model(VISION).respond(chat).content
    assert emu.predictions[-1].images == [PNG]


def test_a_file_path_is_a_copy_of_the_upload_while_its_client_is_connected(
    make_emulator: MakeEmulator,
) -> None:
    # FileHandle.getFilePath() of the TypeScript SDK; the Python SDK has no wrapper for it.
    emulator = make_emulator()
    with lms.Client(emulator.api_host) as client:
        handle = client.files.prepare_image(PNG)
        parameter = FilesRpcGetLocalFileAbsolutePathParameter(file_name=handle.identifier)
        answer = client.files.remote_call("getLocalFileAbsolutePath", parameter)
        path = Path(answer["path"])
        assert path.is_absolute()
        assert path.read_bytes() == PNG
    deadline = time.monotonic() + 5
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)  # the server releases the client when it sees the sockets close
    assert not path.exists()
    emulator.stop()
    assert not path.parent.exists()


def test_upload_file_types_are_reported_like_lm_studio(client: lms.Client) -> None:
    def file_type(data: bytes, name: str) -> str:
        return str(client.files.prepare_image(data, name=name).file_type)

    assert file_type(b"just some text", "a.txt") == "text/plain"
    assert file_type(b"# notes", "notes.md") == "text/plain"
    assert file_type(b"a,b\n1,2\n", "data.csv") == "text/other"
    assert file_type(b"%PDF-1.7 ...", "paper.bin") == "application/pdf"
    assert file_type(b"PK\x03\x04...", "letter.docx") == "application/word"
    assert file_type(PNG, "photo.dat") == "image"
    assert file_type(b"\xff\xfe\x00binary", "a.txt") == "unknown"
    assert file_type(b"just some text", "blob.bin") == "unknown"


def test_a_webp_upload_is_an_image_by_its_magic_number(
    emu: LMStudioEmulator, client: lms.Client
) -> None:
    """Found by mutation testing: nothing checked that a WEBP upload (``RIFF....WEBP``) is
    typed "image", whatever its name, as LM Studio types it."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, format="WEBP")
    webp = buffer.getvalue()
    handle = client.files.prepare_image(webp, name="photo.bin")
    assert handle.file_type == "image"
    chat = lms.Chat()
    chat.add_user_message("What is this?", images=[handle])
    assert client.llm.model(VISION).respond(chat).content
    assert emu.predictions[-1].images == [webp]


def test_an_unknown_preset_fails_by_default(emu: LMStudioEmulator, client: lms.Client) -> None:
    # Like LM Studio: a preset that does not exist is an error, not ignored.
    with pytest.raises(lms.LMStudioPresetNotFoundError):
        client.llm.model(TEXT).respond("hi", preset="concise")
    assert emu.predictions[-1].preset == "concise"


def test_presets_none_accepts_any_preset(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator(presets=None)
    with lms.Client(emulator.api_host) as client:
        assert client.llm.model(TEXT).respond("hi", preset="anything").content
    assert emulator.predictions[-1].preset == "anything"


def test_unknown_preset_when_presets_are_listed(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator(presets=["concise"])
    with lms.Client(emulator.api_host) as client:
        model = client.llm.model(TEXT)
        assert model.respond("hi", preset="concise").content
        with pytest.raises(lms.LMStudioPresetNotFoundError):
            model.respond("hi", preset="verbose")


def test_requests_are_recorded(emu: LMStudioEmulator, client: lms.Client) -> None:
    client.llm.model(TEXT).respond("hi")
    endpoints = [(r.namespace, r.endpoint, r.kind) for r in emu.requests]
    assert endpoints == [("llm", "getOrLoad", "channel"), ("llm", "predict", "channel")]
    predict = emu.requests[-1]
    assert predict.parameter["modelSpecifier"]["query"]["identifier"] == TEXT
    assert predict.client_id == emu.predictions[-1].client_id != ""
    assert json.loads(json.dumps(predict.parameter)) == predict.parameter


def test_keywords_beside_a_type_list_hold(client: lms.Client) -> None:
    # Before: a "type" list hid the bounds from the sampler, and 345 or 97996 came back
    # for an integer fixed at 7 (the re-draws rarely met them).
    schema = {"type": ["integer", "null"], "minimum": 7, "maximum": 7}
    model = client.llm.model(TEXT)
    for prompt in ("a", "b", "c", "d", "e", "f"):
        reply = model.respond(prompt, response_format={"type": "json", "jsonSchema": schema})
        assert json.loads(reply.content) in (7, None)
    person = {
        "type": ["object", "null"],
        "properties": {"age": {"$ref": "#/$defs/Age"}},
        "required": ["age"],
        "$defs": {"Age": {"type": "integer", "minimum": 30, "maximum": 30}},
    }
    reply = model.respond("a", response_format={"type": "json", "jsonSchema": person})
    assert json.loads(reply.content) in ({"age": 30}, None)


def test_an_all_of_of_objects_is_one_object(client: lms.Client) -> None:
    # Before: outlines-core wrote the members one after the other: '{"a" :1 }{ "b" : ""}'.
    schema = {
        "allOf": [
            {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
            {"properties": {"b": {"type": "string"}}, "required": ["b"]},
        ]
    }
    model = client.llm.model(TEXT)
    for prompt in ("a", "b", "c"):
        reply = model.respond(prompt, response_format={"type": "json", "jsonSchema": schema})
        assert isinstance(reply.parsed, dict)
        assert {"a", "b"} <= set(reply.parsed)


def test_a_value_that_may_be_anything_is_written_inside_its_document(client: lms.Client) -> None:
    # Before: outlines-core wrote "any value" as an alternation it does not group, so an
    # object with {"p": {}} came back as a bare number ("9514").
    schemas: list[dict[str, Any]] = [
        {"type": "object", "properties": {"p": {}}, "required": ["p"]},
        {
            "type": "object",
            "properties": {"name": {"type": "string"}, "extra": {}},
            "required": ["name", "extra"],
        },
        {"type": "array", "prefixItems": [{}, {"type": "string"}], "minItems": 2},
    ]
    model = client.llm.model(TEXT)
    for schema in schemas:
        for prompt in ("a", "b", "c"):
            reply = model.respond(prompt, response_format={"type": "json", "jsonSchema": schema})
            jsonschema.validate(json.loads(reply.content), schema)


def test_a_gguf_model_takes_a_string_format_llama_cpp_does_not_know(client: lms.Client) -> None:
    # llama.cpp's converter writes an unknown format as any string; outlines-core refuses it.
    # Before: the GGUF model failed ("Format ipv4 is not supported by Outlines").
    schema = {
        "type": "object",
        "properties": {
            "took": {"type": "string", "format": "duration"},
            "host": {"type": "string", "format": "ipv4"},
            "day": {"type": "string", "format": "date"},
            "id": {"type": "string", "format": "uuid4"},
        },
        "required": ["took", "host", "day", "id"],
    }
    structured = {"type": "json", "jsonSchema": schema}
    reply = client.llm.model(TEXT).respond("a", response_format=structured)
    parsed = json.loads(reply.content)
    assert set(parsed) == {"took", "host", "day", "id"}
    assert len(parsed["day"]) == len("2024-01-31")  # formats llama.cpp constrains still hold
    uuid.UUID(parsed["id"])
    with pytest.raises(lms.LMStudioServerError, match="not supported"):  # MLX: outlines-core
        client.llm.model(MLX).respond("a", response_format=structured)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "additionalProperties": False},
        {"additionalProperties": False},
        {
            "type": "object",
            "properties": {"a": {"type": "object", "additionalProperties": False}},
            "required": ["a"],
        },
    ],
)
def test_a_gguf_model_takes_a_closed_object_without_properties(
    client: lms.Client, schema: dict[str, Any]
) -> None:
    # llama.cpp's converter reads the missing properties as none: the empty object. Found by
    # a probe: the GGUF model failed ("Unsupported JSON Schema structure false"), as MLX does.
    structured = {"type": "json", "jsonSchema": schema}
    reply = client.llm.model(TEXT).respond("a", response_format=structured)
    jsonschema.validate(json.loads(reply.content), schema)
    with pytest.raises(lms.LMStudioServerError, match="Unsupported JSON Schema structure"):
        client.llm.model(MLX).respond("a", response_format=structured)


def test_numbers_have_no_more_digits_than_llama_cpp_writes(client: lms.Client) -> None:
    # llama.cpp's converter allows 16 digits before the point and 16 after it; outlines-core's
    # regex any number. Found by a probe: 17 integers in 60 had 17 to 26 digits (the
    # TypeScript SDK's JSON.parse then rounds them).
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer"},
            "x": {"type": "number"},
            "many": {"type": "array", "items": {"type": "integer"}, "minItems": 1},
        },
        "required": ["n", "x", "many"],
    }
    model = client.llm.model(TEXT)
    runs: list[str] = []
    for prompt in range(40):
        reply = model.respond(f"q{prompt}", response_format={"type": "json", "jsonSchema": schema})
        runs += re.findall(r"[0-9]+", reply.content)
    assert max(map(len, runs)) <= 16
    assert max(map(len, runs)) > 3  # the walk still writes long numbers, within the cap


@pytest.mark.parametrize("jit", [False, True], ids=["load_new_instance", "getOrLoad"])
def test_a_load_overtaken_by_a_reset_does_not_land_in_the_next_test(
    make_emulator: MakeEmulator, jit: bool
) -> None:
    """Found by a probe: a load still running at a reset finished afterwards.

    Its model showed up loaded in the next test (a session-scoped client's load, cut by
    pytest-timeout), and a JIT one unloaded that test's own JIT model.
    """
    emulator = make_emulator(load_latency=0.6)
    with lms.Client(emulator.api_host) as client:
        before = sorted(m.identifier for m in client.llm.list_loaded())
        assert UNLOADED not in before
        errors: list[BaseException] = []

        def load() -> None:
            try:
                if jit:
                    client.llm.model(UNLOADED)
                else:
                    client.llm.load_new_instance(UNLOADED)
            except BaseException as exc:  # kept for the assertions below
                errors.append(exc)

        worker = threading.Thread(target=load)
        worker.start()
        endpoint = "getOrLoad" if jit else "loadModel"
        emulator.wait_until(lambda: any(r.endpoint == endpoint for r in emulator.requests))
        emulator.reset()  # the next test begins while the load runs
        worker.join(10)
        assert not worker.is_alive()
        assert sorted(m.identifier for m in client.llm.list_loaded()) == before
        assert len(errors) == 1
        assert isinstance(errors[0], lms.LMStudioServerError)
        assert "the LM Studio emulator was reset while it loaded" in str(errors[0])
        # A load after the reset is the new test's own, and lands.
        client.llm.load_new_instance(UNLOADED)
        assert UNLOADED in {m.identifier for m in client.llm.list_loaded()}
