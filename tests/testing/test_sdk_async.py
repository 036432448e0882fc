"""The same calls through the real `lms.AsyncClient`."""

from __future__ import annotations

import lmstudio as lms
import pytest

from outlines_lmstudio.testing import LMStudioEmulator

from .conftest import EMBED, PNG, TEXT, UNLOADED, VISION


@pytest.mark.asyncio
async def test_async_respond_complete_and_stream(
    emu: LMStudioEmulator, aclient: lms.AsyncClient
) -> None:
    model = await aclient.llm.model(TEXT)
    result = await model.respond("Hello")
    assert result.content == emu.predictions[-1].text
    assert result.stats.stop_reason == "eosFound"
    completion = await model.complete("Once", config={"maxTokens": 3})
    assert completion.stats.stop_reason == "maxPredictedTokensReached"
    assert len(emu.predictions[-1].fragments) == 3
    stream = await model.respond_stream("Stream please")
    async with stream:
        fragments = [f.content async for f in stream]
    assert "".join(fragments) == stream.result().content == emu.predictions[-1].text


@pytest.mark.asyncio
async def test_async_structured(aclient: lms.AsyncClient) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    model = await aclient.llm.model(TEXT)
    result = await model.respond("?", response_format=schema)
    assert isinstance(result.parsed, dict)
    assert isinstance(result.parsed["ok"], bool)


@pytest.mark.asyncio
async def test_async_bookkeeping(aclient: lms.AsyncClient) -> None:
    model = await aclient.llm.model(TEXT)
    assert (await model.get_info()).identifier == TEXT
    assert await model.get_context_length() == 4096  # LM Studio's default for a GGUF model
    assert (await model.get_load_config()).context_length == 4096
    assert len(await model.tokenize("a b c")) == 3
    assert await model.count_tokens("a b c") == 3
    assert "hi" in await model.apply_prompt_template(lms.Chat.from_history("hi"))
    assert {m.identifier for m in await aclient.llm.list_loaded()} >= {TEXT, VISION}
    assert {m.model_key for m in await aclient.list_downloaded_models()} >= {TEXT, EMBED}
    progress: list[float] = []
    loaded = await aclient.llm.model(UNLOADED, on_load_progress=progress.append)
    assert loaded.identifier == UNLOADED
    assert progress[-1] == 1.0
    extra = await aclient.llm.load_new_instance(TEXT, "extra")
    await extra.unload()
    with pytest.raises(lms.LMStudioModelNotFoundError):
        await extra.get_info()


@pytest.mark.asyncio
async def test_async_embedding_and_images(emu: LMStudioEmulator, aclient: lms.AsyncClient) -> None:
    embedder = await aclient.embedding.model(EMBED)
    vector = await embedder.embed("hello")
    assert len(vector) == 768
    handle = await aclient.files.prepare_image(PNG, name="dot.png")
    chat = lms.Chat()
    chat.add_user_message("What?", images=[handle])
    vision = await aclient.llm.model(VISION)
    assert (await vision.respond(chat)).content
    assert emu.predictions[-1].images == [PNG]
    text = await aclient.llm.model(TEXT)
    with pytest.raises(lms.LMStudioServerError, match="does not support images"):
        await text.respond(chat)


@pytest.mark.asyncio
async def test_async_errors(aclient: lms.AsyncClient) -> None:
    with pytest.raises(lms.LMStudioServerError, match="Cannot find a model"):
        await aclient.llm.model("missing-model")
    model = await aclient.llm.model(TEXT)
    await model.unload()
    with pytest.raises(lms.LMStudioModelNotFoundError):
        await model.respond("x")


@pytest.mark.asyncio
async def test_async_context_manager_does_not_block_the_loop() -> None:
    async with LMStudioEmulator() as emulator, lms.AsyncClient(emulator.api_host) as client:
        model = await client.llm.model(TEXT)
        assert (await model.respond("hi")).content
    assert not emulator.running


@pytest.mark.asyncio
async def test_async_embedding_longer_than_the_context_is_refused(aclient: lms.AsyncClient) -> None:
    # Before: embedded. LM Studio: "Input length 6491 exceeds context length 1500".
    embedder = await aclient.embedding.model(EMBED)
    with pytest.raises(
        lms.LMStudioServerError, match=r"Input length 5003 exceeds context length 2048$"
    ):
        await embedder.embed("word " * 5000)
