"""AsyncLMStudio end to end: the real async SDK against the emulator."""

import asyncio
import gc
import io
import os
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import lmstudio as lms
import outlines
import pydantic
import pytest
from outlines.generator import AsyncBlackBoxGenerator
from PIL import Image as PILImage

from outlines_lmstudio import (
    AsyncLMStudio,
    BatchGenerationError,
    InvalidInferenceArgumentError,
    LMStudioConnectionError,
    LMStudioPredictionError,
    LMStudioTimeoutError,
    OutlinesLMStudioError,
    from_lmstudio,
)
from outlines_lmstudio.testing import Fault, LMStudioEmulator

from .conftest import TEXT_MODEL, VISION_MODEL
from .helpers import endpoint_count, png_image, turns_until_sent

pytestmark = pytest.mark.asyncio


class Person(pydantic.BaseModel):
    name: str
    age: int


def socket_count(emulator: LMStudioEmulator) -> int:
    """Websockets the emulator saw opened (each starts with an auth packet)."""
    return sum(
        1
        for frame in emulator.trace
        if frame.direction == "in" and isinstance(frame.data, dict) and "authVersion" in frame.data
    )


async def test_from_lmstudio_async_and_generator(
    async_client: lms.AsyncClient, emulator: LMStudioEmulator
) -> None:
    model = from_lmstudio(async_client, TEXT_MODEL)
    assert type(model) is AsyncLMStudio
    text = await outlines.Generator(model, Person)("John is 32")
    Person.model_validate_json(text)
    assert emulator.predictions[-1].structured == {
        "type": "json",
        "jsonSchema": Person.model_json_schema(),
    }
    assert await model("plain")


async def test_async_stream_and_cancel(
    async_client: lms.AsyncClient, slow_emulator: LMStudioEmulator
) -> None:
    emulator = slow_emulator
    model = from_lmstudio(async_client, TEXT_MODEL)
    chunks = [c async for c in model.stream("json please", Person)]
    assert "".join(chunks) == emulator.predictions[-1].text
    emulator.script(TEXT_MODEL, ["word " * 200])
    stream = model.stream("long")
    async for _chunk in stream:
        break
    await stream.aclose()
    await asyncio.to_thread(emulator.wait_until, lambda: emulator.predictions[-1].done)
    assert emulator.predictions[-1].cancelled
    assert emulator.predictions[-1].stop_reason == "userStopped"


async def test_concurrent_first_calls_enter_the_client_once(
    slow_emulator: LMStudioEmulator,
) -> None:
    emulator = slow_emulator
    client = lms.AsyncClient(emulator.api_host)  # not entered by the user
    model = from_lmstudio(client, TEXT_MODEL)
    results = await asyncio.gather(*(model(f"hi {i}") for i in range(8)))
    assert len(results) == 8
    assert socket_count(emulator) == 5  # llm, embedding, system, files, repository: once
    assert endpoint_count(emulator, "getOrLoad") == 1
    assert 1 < emulator.peak_concurrency(TEXT_MODEL) <= 4
    await model.close()
    await model.close()  # idempotent
    with pytest.raises(LMStudioConnectionError):
        # we entered it, so we closed it; a new model on the same (closed) client cannot talk
        await from_lmstudio(client, TEXT_MODEL)("hi")


async def test_models_made_per_request_on_a_client_not_entered_keep_working(
    emulator: LMStudioEmulator,
) -> None:
    """A model per request on one client the user holds: dropping the model that entered the
    client leaves it open for the next (found by a review of a change that closed it: every
    later request failed with "the client was closed")."""
    client = lms.AsyncClient(emulator.api_host)  # held, never entered by the user

    async def ask(prompt: str) -> str:
        return await from_lmstudio(client, TEXT_MODEL)(prompt, max_tokens=3)

    for i in range(3):
        assert await ask(f"request {i}")
        gc.collect()  # the model that entered the client is gone
        await asyncio.sleep(0)
    assert socket_count(emulator) == 5  # entered once, still open
    await client.aclose()


async def test_a_first_call_cancelled_while_connecting_leaves_the_model_usable(
    emulator: LMStudioEmulator,
) -> None:
    """``wait_for`` around a first call: the client must not be left half entered.

    The SDK cannot enter a client twice, so a cancel between its sessions left one it could
    neither finish nor undo, and every later call failed (``KeyError: 'llm'``).
    """
    client = lms.AsyncClient(emulator.api_host)
    model = from_lmstudio(client, TEXT_MODEL)
    first = asyncio.create_task(model("cancelled while connecting"))
    async with asyncio.timeout(30):
        while True:  # the SDK opens its sessions one by one: cancel once the first exists
            try:
                client.embedding  # noqa: B018 - raises KeyError until that session exists
            except KeyError:
                await asyncio.sleep(0)
            else:
                break
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await model("hello")
    await model.close()
    assert not client.llm.connected  # the model entered it, so it closed it


async def test_close_leaves_a_user_entered_client_open(async_client: lms.AsyncClient) -> None:
    async with from_lmstudio(async_client, TEXT_MODEL) as model:
        assert await model("hi")
    # the user's client is still usable after our model closed
    handle = await async_client.llm.model(TEXT_MODEL)
    assert (await handle.respond("still here")).content


async def test_async_images_upload_once(
    async_client: lms.AsyncClient, emulator: LMStudioEmulator
) -> None:
    model = from_lmstudio(async_client, VISION_MODEL)
    image = png_image("green")
    await asyncio.gather(*(model(["What colour?", image]) for _ in range(4)))
    assert len(emulator.uploads) == 1
    assert all(p.images == [emulator.uploads[0].data] for p in emulator.predictions)


def noise_image(size: int = 1024) -> PILImage.Image:
    """A PIL image of random pixels, encoded as PNG to upload: about 0.6 s of work here."""
    return PILImage.frombytes("RGB", (size, size), os.urandom(size * size * 3))


async def test_async_image_work_leaves_the_event_loop_free(
    async_client: lms.AsyncClient, emulator: LMStudioEmulator
) -> None:
    """A large image is checked and encoded in a worker thread, not on the event loop.

    Until the call's first frame reaches the server, it prepares its image (ours: 0.6 s),
    then the SDK its upload. A ticker that sleeps 1 ms ticked 126-160 times in that span
    on a 2-core machine; with our work on the loop, 8-14 times (during the SDK's part).
    """
    model = from_lmstudio(async_client, VISION_MODEL)
    await model(["Warm up", png_image()])  # the handle and traits are cached: no lookup
    reply, ticks = await turns_until_sent(emulator, model(["Describe", noise_image()]))
    assert reply
    assert ticks >= 50
    assert len(emulator.uploads) == 2


async def test_concurrent_calls_share_a_lazily_opened_image(
    async_client: lms.AsyncClient, emulator: LMStudioEmulator, tmp_path: Path
) -> None:
    """One ``PIL.Image.open(...)`` image in gathered calls: each gets the file's pixels.

    Each call normalises it in its own worker thread, and Pillow's lazy decode is not safe
    from two threads: calls failed ("corrupt or truncated", "closed file") or uploaded
    scrambled pixels, and the caller's image kept them.
    """
    source = noise_image(600)
    source.save(tmp_path / "photo.png")
    model = from_lmstudio(async_client, VISION_MODEL)
    photo = PILImage.open(tmp_path / "photo.png")  # lazily opened: not decoded yet
    replies = await asyncio.gather(*(model([f"Describe #{i}", photo]) for i in range(4)))
    assert all(replies)
    assert len(emulator.uploads) == 1
    sent = PILImage.open(io.BytesIO(emulator.uploads[0].data))
    assert sent.convert("RGB").tobytes() == source.tobytes()
    assert all(p.images == [emulator.uploads[0].data] for p in emulator.predictions)
    assert photo.tobytes() == source.tobytes()


async def test_async_call_cancelled_while_its_image_is_prepared(
    async_client: lms.AsyncClient, emulator: LMStudioEmulator
) -> None:
    """Cancelled during the image work: nothing is sent; the next call sends it once."""
    model = from_lmstudio(async_client, VISION_MODEL)
    image = noise_image()
    call = asyncio.ensure_future(model(["Describe", image]))
    await asyncio.sleep(0.05)  # in the worker thread
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert emulator.uploads == []
    assert emulator.predictions == []
    assert await model(["Describe", image])
    assert len(emulator.uploads) == 1
    assert len(emulator.predictions) == 1


async def test_async_batch_order_and_failures(
    async_client: lms.AsyncClient, emulator: LMStudioEmulator
) -> None:
    emulator.script(TEXT_MODEL, lambda prediction: f"echo: {prediction.last_user_text}")
    model = from_lmstudio(async_client, TEXT_MODEL)
    prompts = [f"p{i}" for i in range(9)]
    generator = cast(AsyncBlackBoxGenerator, outlines.Generator(model))
    assert await generator.batch(prompts, max_concurrency=2) == [f"echo: {p}" for p in prompts]
    assert emulator.peak_concurrency(TEXT_MODEL) <= 2
    emulator.add_fault(Fault(kind="error", message="nope"))
    with pytest.raises(BatchGenerationError) as info:
        await model.batch(["a", "b"], max_concurrency=1)
    assert info.value.results == [None, "echo: b"]
    assert isinstance(info.value.errors[0], LMStudioPredictionError)


async def test_async_errors_and_timeout(
    async_client: lms.AsyncClient, emulator: LMStudioEmulator
) -> None:
    model = from_lmstudio(async_client, TEXT_MODEL)
    before = len(emulator.requests)
    with pytest.raises(InvalidInferenceArgumentError):
        model.stream("hi", nonsense=True)
    with pytest.raises(InvalidInferenceArgumentError):
        await model("hi", nonsense=True)
    assert len(emulator.requests) == before
    emulator.add_fault(Fault(kind="hang"))
    with pytest.raises(LMStudioTimeoutError):
        await model("hi", timeout=0.3)
    emulator.add_fault(Fault(kind="error", after_fragments=2, message="mid-stream"))
    with pytest.raises(LMStudioPredictionError, match="mid-stream"):
        async for _chunk in model.stream("hi"):
            pass


async def test_model_gone_is_resolved_again(
    async_client: lms.AsyncClient, emulator: LMStudioEmulator
) -> None:
    model = from_lmstudio(async_client, TEXT_MODEL)
    await model("one")
    emulator.unload(TEXT_MODEL)
    assert await model("two")
    assert endpoint_count(emulator, "getOrLoad") == 2


async def test_an_async_reply_stream_read_with_for_says_how_to_read_it(
    async_client: lms.AsyncClient, emulator: LMStudioEmulator
) -> None:
    model = from_lmstudio(async_client, TEXT_MODEL)
    stream = model.reply_stream("Hello")
    with pytest.raises(TypeError, match=r"AsyncLMStudio.*read it with async for"):
        iter(stream)  # type: ignore[call-overload]  # wrong on purpose (checkers say so too)
    with pytest.raises(TypeError, match=r"leave it early with await aclose\(\)"):
        stream.close()  # type: ignore[attr-defined]
    assert [chunk async for chunk in stream]  # the stream itself is untouched
    assert stream.reply is not None


@pytest.mark.parametrize("method", ["stream", "generate_stream", "parse_stream"])
async def test_an_async_stream_read_with_for_says_how_to_read_it(
    async_client: lms.AsyncClient, emulator: LMStudioEmulator, method: str
) -> None:
    """Python's own "'async_generator' object is not iterable" named no way out."""
    model = from_lmstudio(async_client, TEXT_MODEL)
    stream = getattr(model, method)("Describe a person", Person)
    with pytest.raises(TypeError, match=r"AsyncLMStudio.*read it with async for.*aclose\(\)"):
        iter(stream)
    assert emulator.predictions == []  # nothing was sent
    assert isinstance(stream, AsyncIterator)
    first = await anext(stream)
    rest = [item async for item in stream]
    assert [first, *rest]
    assert emulator.predictions[-1].done


async def test_an_async_stream_left_with_aclose_cancels_on_the_server(
    async_client: lms.AsyncClient, slow_emulator: LMStudioEmulator
) -> None:
    emulator = slow_emulator
    emulator.script(TEXT_MODEL, ["word " * 200])
    stream = from_lmstudio(async_client, TEXT_MODEL).stream("long")
    assert await stream.__anext__()
    await stream.aclose()
    await asyncio.to_thread(emulator.wait_until, lambda: emulator.predictions[-1].done)
    assert emulator.predictions[-1].cancelled


@pytest.mark.parametrize("method", ["stream", "reply_stream"])
async def test_aclose_from_another_task_says_to_cancel_the_reader(
    async_client: lms.AsyncClient, slow_emulator: LMStudioEmulator, method: str
) -> None:
    """Python's "asynchronous generator is already running" said nothing of the prediction."""
    emulator = slow_emulator
    emulator.script(TEXT_MODEL, ["word " * 200])
    stream = getattr(from_lmstudio(async_client, TEXT_MODEL), method)("long")
    seen = asyncio.Event()

    async def read() -> None:
        async for _ in stream:
            seen.set()

    reader = asyncio.ensure_future(read())
    await seen.wait()
    with pytest.raises(RuntimeError, match=r"read by another task.*task\.cancel\(\)"):
        await stream.aclose()
    reader.cancel()  # the way the message gives
    with pytest.raises(asyncio.CancelledError):
        await reader
    await asyncio.to_thread(emulator.wait_until, lambda: emulator.predictions[-1].done)
    assert emulator.predictions[-1].cancelled


@pytest.mark.parametrize(
    "call",
    [
        lambda m, p: m(p),
        lambda m, p: m.generate(p),
        lambda m, p: m.parse(p, int),
        lambda m, p: m.reply(p),
        lambda m, p: m.batch([p]),
        lambda m, p: m.generate_batch([p]),
        lambda m, p: m.reply_batch([p]),
        lambda m, p: m(p, backend=None if p else "outlines_core"),
    ],
    ids=["call", "generate", "parse", "reply", "batch", "generate_batch", "reply_batch", "backend"],
)
async def test_bad_input_raises_at_the_await_among_gathered_calls(
    async_client: lms.AsyncClient, emulator: LMStudioEmulator, call: Any
) -> None:
    """Found by a probe: the input was checked when the coroutine was made, so an error
    escaped ``gather(..., return_exceptions=True)`` while its arguments were built, and
    the calls made before it were never awaited. Outlines declares these ``async def``."""
    emulator.script(TEXT_MODEL, ["1", "2"])
    model = from_lmstudio(async_client, TEXT_MODEL)
    awaitables = [call(model, p) for p in ["one", "two", ""]]  # no error while they are made
    results = await asyncio.gather(*awaitables, return_exceptions=True)
    assert not isinstance(results[0], BaseException)
    assert not isinstance(results[1], BaseException)
    assert isinstance(results[2], OutlinesLMStudioError | ValueError | TypeError)
    assert len(emulator.predictions) == 2  # the bad one sent nothing


class _Stop(BaseException):
    """What a callback may raise that is no Exception (pytest.fail()'s is one such)."""


# What a callback may raise that is no Exception.
_NOT_EXCEPTIONS = pytest.mark.parametrize(
    "exc",
    [
        _Stop("from the callback"),
        KeyboardInterrupt(),
        SystemExit(3),
        asyncio.CancelledError("from the callback"),
    ],
    ids=type,
)


def _raising_at_the_second_fragment(exc: BaseException) -> Any:
    seen: list[object] = []

    def callback(fragment: object) -> None:
        seen.append(fragment)
        if len(seen) == 2:
            raise exc

    return callback


@pytest.mark.parametrize("call", ["generate", "stream", "parse"])
@_NOT_EXCEPTIONS
async def test_what_a_callback_raises_that_is_no_exception_reaches_the_awaiting_coroutine(
    async_client: lms.AsyncClient,
    slow_emulator: LMStudioEmulator,
    call: str,
    exc: BaseException,
) -> None:
    """As with the SDK by hand, and the prediction is cancelled. Found by a probe: left to
    end the library's reading task, such an exception made the call wait out its
    read_timeout (60 s by default) and blame LM Studio, with nothing cancelled, and a
    KeyboardInterrupt or sys.exit() left the event loop instead of the coroutine. A
    CancelledError (the callback's own, not a cancel of the call) was taken for the reading
    task's stop: the call waited out its read_timeout, and for good without one."""
    slow_emulator.script(TEXT_MODEL, ["word " * 400, "again"])
    model = from_lmstudio(async_client, TEXT_MODEL, read_timeout=30)
    callback = _raising_at_the_second_fragment(exc)

    async def calling() -> object:
        if call == "generate":
            return await model("long", on_prediction_fragment=callback)
        if call == "stream":
            return [c async for c in model.stream("long", on_prediction_fragment=callback)]
        return await model.parse("long", str, on_prediction_fragment=callback)

    started = asyncio.get_running_loop().time()
    with pytest.raises(type(exc)) as raised:
        await calling()
    assert raised.value is exc
    assert asyncio.get_running_loop().time() - started < 10  # not the read_timeout
    await asyncio.to_thread(slow_emulator.wait_until, lambda: slow_emulator.predictions[-1].done)
    assert slow_emulator.predictions[-1].stop_reason == "userStopped"
    assert await model("again") == "again"


@_NOT_EXCEPTIONS
async def test_what_an_items_callback_raises_that_is_no_exception_stops_the_batch(
    async_client: lms.AsyncClient, slow_emulator: LMStudioEmulator, exc: BaseException
) -> None:
    """As on the sync front (and as it stops a call): raised as it is, the other items'
    predictions cancelled, the queued never started. Found by a probe: it was one of a
    `BatchGenerationError`'s errors, which ``except Exception`` catches (a CancelledError
    without its message), or a sys.exit() and a Ctrl-C left the event loop, with the other
    items' predictions going on."""
    slow_emulator.script(TEXT_MODEL, ["word " * 400] * 6)
    model = from_lmstudio(async_client, TEXT_MODEL, max_concurrency=2, read_timeout=30)
    seen: list[object] = []

    def callback(fragment: object) -> None:
        seen.append(fragment)
        if len(seen) == 3:
            raise exc

    started = asyncio.get_running_loop().time()
    with pytest.raises(type(exc)) as raised:
        await model.batch(["long"] * 6, on_prediction_fragment=callback)
    assert raised.value is exc
    assert asyncio.get_running_loop().time() - started < 10  # not the read_timeout
    predictions = slow_emulator.predictions
    await asyncio.to_thread(slow_emulator.wait_until, lambda: all(p.done for p in predictions))
    assert 1 <= len(predictions) <= 3  # the running two, and one that took a freed slot
    assert all(p.stop_reason == "userStopped" for p in predictions)
    slow_emulator.script(TEXT_MODEL, ["again"])
    assert await model("again") == "again"


async def test_an_error_while_a_batch_makes_its_tasks_sends_nothing_and_leaves_nothing(
    async_client: lms.AsyncClient, emulator: LMStudioEmulator
) -> None:
    """Found by a probe (a signal handler's error there): `gather` made every item's
    coroutine first, then a task for each; an error meanwhile left the tasks made so far
    running (their predictions were sent), and the rest "never awaited". A task factory
    that refuses the third task makes that error here without timing luck."""
    emulator.script(TEXT_MODEL, ["warm", "after"])
    model = from_lmstudio(async_client, TEXT_MODEL)
    assert await model("warm up") == "warm"  # connected: the client's tasks are made
    loop = asyncio.get_running_loop()
    made: list[object] = []

    def refusing_the_third(
        loop: asyncio.AbstractEventLoop, coro: Any, /, **kwargs: Any
    ) -> asyncio.Task[Any]:
        made.append(coro)
        if len(made) == 3:
            raise RuntimeError("no third task")
        return asyncio.Task(coro, loop=loop, **kwargs)

    before = len(emulator.predictions)
    loop.set_task_factory(refusing_the_third)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(RuntimeError, match="no third task"):
                await model.batch(["one", "two", "three", "four", "five"])
            await asyncio.sleep(0.2)  # time for a task left running to send its prediction
            del made[:]
            gc.collect()
    finally:
        loop.set_task_factory(None)
    assert len(emulator.predictions) == before
    assert [str(w.message) for w in caught if "never awaited" in str(w.message)] == []
    assert await model("after") == "after"
