"""A model unloaded, or another loaded under its identifier, while a client keeps calling it.

Each test runs on both fronts (``make_model`` / ``fronts``).
"""

import asyncio
import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import lmstudio as lms
import pytest
from outlines.types import Regex

from outlines_lmstudio import (
    BatchGenerationError,
    LMStudioPredictionError,
    LMStudioTimeoutError,
    UnsupportedInputError,
    UnsupportedOutputTypeError,
    from_lmstudio,
)
from outlines_lmstudio.testing import EmulatedModel, Fault, LMStudioEmulator, Prediction
from outlines_lmstudio.testing._records import message_text

from .conftest import TEXT_MODEL, VISION_MODEL, MakeModel
from .fronts import Fronts
from .helpers import endpoint_count, png_image

MLX_MODEL = "llama-3.2-1b-instruct-mlx"
JIT_MODEL = "gemma-3-1b-it"  # not loaded: loaded on first use


def _swap(emulator: LMStudioEmulator, key: str, identifier: str = "main") -> None:
    """Load ``key`` under ``identifier`` in place of what was there (``lms load --identifier``)."""
    with contextlib.suppress(KeyError):  # nothing loaded under it yet
        emulator.unload(identifier)
    emulator.load(key, identifier)


# -- traits: what an identifier's model takes changes with the model ---------------------------
def test_a_model_swapped_in_with_vision_takes_images(
    fronts: Fronts, emulator: LMStudioEmulator
) -> None:
    """Found by a probe: traits cached per identifier refused images for ever after."""
    client = fronts.client()
    _swap(emulator, TEXT_MODEL)
    model = fronts.model(client, "main")
    with pytest.raises(UnsupportedInputError, match="'main' does not accept images"):
        model(["describe", png_image()], max_tokens=3)
    assert emulator.predictions == []
    _swap(emulator, VISION_MODEL)
    assert model(["describe", png_image()], max_tokens=3)
    assert emulator.predictions[-1].images  # sent, and answered
    assert fronts.model(client, "main")(["again", png_image()], max_tokens=3)


def test_a_model_swapped_to_mlx_refuses_grammar_with_our_error(
    fronts: Fronts, emulator: LMStudioEmulator
) -> None:
    """Found by a probe: cached GGUF traits let a GBNF grammar go to an MLX model."""
    client = fronts.client()
    _swap(emulator, TEXT_MODEL)
    model = fronts.model(client, "main", grammar=True)
    assert model("x", Regex(r"[ab]{3}"))
    _swap(emulator, MLX_MODEL)
    with pytest.raises(UnsupportedOutputTypeError, match=r"'main' is a 'safetensors' model"):
        model("x", Regex(r"[ab]{3}"))
    # The traits were refreshed: the next call is refused before anything is sent.
    sent = len(emulator.predictions)
    with pytest.raises(UnsupportedOutputTypeError, match=r"'main' is a 'safetensors' model"):
        fronts.model(client, "main", grammar=True)("y", Regex(r"[ab]{3}"))
    assert len(emulator.predictions) == sent


def test_an_image_sent_on_stale_traits_is_refused_with_our_error(
    fronts: Fronts, emulator: LMStudioEmulator
) -> None:
    """A vision model swapped for a text model: LM Studio refuses the image; we say why."""
    client = fronts.client()
    _swap(emulator, VISION_MODEL)
    model = fronts.model(client, "main")
    assert model(["describe", png_image()], max_tokens=3)
    _swap(emulator, TEXT_MODEL)
    with pytest.raises(UnsupportedInputError, match="'main' does not accept images") as info:
        model(["describe", png_image()], max_tokens=3)
    assert isinstance(info.value.__cause__, lms.LMStudioError)  # LM Studio's refusal


def test_a_reply_from_another_model_replaces_the_cached_traits(
    fronts: Fronts, emulator: LMStudioEmulator
) -> None:
    """The reply names the model that answered: no model-info request to learn its traits."""
    client = fronts.client()
    _swap(emulator, TEXT_MODEL)
    model = fronts.model(client, "main", grammar=True)
    assert model("x", Regex(r"[ab]{3}"))
    _swap(emulator, VISION_MODEL)  # GGUF too: the grammar call is sent, and answered
    assert model("x", Regex(r"[ab]{3}"))
    infos = endpoint_count(emulator, "getModelInfo")
    assert model(["describe", png_image()], max_tokens=3)  # no refusal, nothing asked
    assert endpoint_count(emulator, "getModelInfo") == infos
    assert emulator.predictions[-1].images  # sent, and answered


def _named_main(emulator: LMStudioEmulator, key: str) -> None:
    """Have ``key``'s only loaded instance be ``main`` (``lms load KEY --identifier main``)."""
    with contextlib.suppress(KeyError):
        emulator.unload(key)
    _swap(emulator, key)


def test_a_key_whose_instance_now_holds_another_model_is_looked_up_again(
    fronts: Fronts, emulator: LMStudioEmulator
) -> None:
    """The handle cached for a key kept naming its instance, ``main``, after another model
    was loaded under that identifier: every call for the key went to the other model, with
    no word, on every model object of the client (found by a probe)."""
    client = fronts.client()
    _named_main(emulator, TEXT_MODEL)
    model = fronts.model(client, TEXT_MODEL)
    assert model("first")
    assert emulator.predictions[-1].model == "main"  # the key's instance
    _swap(emulator, MLX_MODEL)
    assert model("second")
    assert [p.model for p in emulator.predictions[-2:]] == ["main", TEXT_MODEL]
    assert fronts.model(client, TEXT_MODEL)("third")
    assert emulator.predictions[-1].model == TEXT_MODEL
    assert fronts.model(client, "main")("by identifier")  # asks for whatever main is
    assert emulator.predictions[-1].model == "main"


def test_calls_at_once_after_a_swap_all_go_to_the_key(
    fronts: Fronts, emulator: LMStudioEmulator
) -> None:
    """A record per key raced: the first stale reply was caught, and the calls holding the
    same stale handle took the other model's reply (63 of 64; found by a review). Also with
    the key's model loaded under a second identifier, none is refused."""
    client = fronts.client()
    _named_main(emulator, TEXT_MODEL)
    model = fronts.model(client, TEXT_MODEL, max_concurrency=8)
    assert model("warm")
    _swap(emulator, MLX_MODEL)
    emulator.load(TEXT_MODEL, "main2")
    start = len(emulator.predictions)
    assert len(model.batch([f"p{i}" for i in range(16)], max_tokens=3)) == 16
    answered = [p.model for p in emulator.predictions[start:] if p.stop_reason != "userStopped"]
    stale = answered.count("main")  # asked of the other model, then asked again
    assert answered.count("main2") == 16, answered
    assert stale + 16 == len(answered)
    assert len(model.batch([f"q{i}" for i in range(16)], max_tokens=3)) == 16
    assert {p.model for p in emulator.predictions[-16:]} == {"main2"}


def test_an_image_for_a_key_whose_instance_lost_vision_goes_to_the_key(
    fronts: Fronts, emulator: LMStudioEmulator
) -> None:
    """It was refused: "'main' does not accept images", for the vision model the user
    named (found by a probe)."""
    client = fronts.client()
    _named_main(emulator, VISION_MODEL)
    model = fronts.model(client, VISION_MODEL)
    assert model(["describe", png_image()], max_tokens=3)
    _swap(emulator, TEXT_MODEL)
    assert model(["describe", png_image()], max_tokens=3)
    assert emulator.predictions[-1].model == VISION_MODEL
    assert emulator.predictions[-1].images


def test_a_stream_another_model_answered_says_so_at_its_end(
    fronts: Fronts, emulator: LMStudioEmulator
) -> None:
    """Its text was shown, so it cannot be asked again: an error, not a silent answer."""
    client = fronts.client()
    _named_main(emulator, TEXT_MODEL)
    model = fronts.model(client, TEXT_MODEL)
    assert model("first")
    _swap(emulator, MLX_MODEL)
    with pytest.raises(LMStudioPredictionError, match=f"the reply came from '{MLX_MODEL}'"):
        list(model.stream("second", max_tokens=5))
    assert model("third")
    assert emulator.predictions[-1].model == TEXT_MODEL


def test_an_image_stream_failing_after_its_text_asks_nothing_more(
    fronts: Fronts, emulator: LMStudioEmulator
) -> None:
    """A failure after text was shown is not a refusal: no model info is asked again (a
    review: any failure of an image or grammar call asked LM Studio for fresh traits)."""
    model = fronts.model(fronts.client(), VISION_MODEL)
    assert model(["describe", png_image()], max_tokens=3)
    infos = endpoint_count(emulator, "getModelInfo")
    emulator.add_fault(Fault("predict", "error", after_fragments=3))
    stream = iter(model.stream(["describe", png_image()], max_tokens=20))
    assert next(stream)  # text was shown
    with pytest.raises(LMStudioPredictionError):
        list(stream)
    assert endpoint_count(emulator, "getModelInfo") == infos


def test_a_batch_of_refused_image_items_asks_for_the_traits_once(
    fronts: Fronts, emulator: LMStudioEmulator
) -> None:
    """Found by a probe: each refused item asked LM Studio for the traits again (500 image
    items of a batch for a model without vision: 501 getModelInfo requests)."""
    model = fronts.model(fronts.client(), TEXT_MODEL)
    infos = endpoint_count(emulator, "getModelInfo")
    with pytest.raises(UnsupportedInputError):  # the traits asked during the call: once
        model(["describe", png_image()], max_tokens=3)
    assert endpoint_count(emulator, "getModelInfo") == infos + 1
    items: list[Any] = [["look", png_image()] if i % 2 else f"p{i}" for i in range(40)]
    with pytest.raises(BatchGenerationError) as info:  # traits cached before it: asked again
        model.batch(items, max_tokens=3)
    assert endpoint_count(emulator, "getModelInfo") == infos + 2  # once for the 20 items
    assert sorted(info.value.errors) == list(range(1, 40, 2))
    assert all(isinstance(e, UnsupportedInputError) for e in info.value.errors.values())
    assert not emulator.uploads


def test_calls_made_before_a_refusal_share_its_ask(
    fronts: Fronts, emulator: LMStudioEmulator
) -> None:
    """Calls made before the traits are asked again, and refused at once, wait for one ask."""
    model = fronts.model(fronts.client(), TEXT_MODEL)
    with pytest.raises(UnsupportedInputError):  # the traits are cached
        model(["describe", png_image()], max_tokens=3)
    infos = endpoint_count(emulator, "getModelInfo")
    emulator.add_fault(Fault("getModelInfo", "delay", seconds=0.3))  # the others come meanwhile
    streams = [model.stream(["describe", png_image()], max_tokens=3) for _ in range(4)]

    def refused(stream: Any) -> BaseException | None:
        try:
            next(iter(stream))
        except UnsupportedInputError as exc:
            return exc
        return None

    with ThreadPoolExecutor(len(streams)) as pool:
        errors = list(pool.map(refused, streams))
    assert all(isinstance(e, UnsupportedInputError) for e in errors)
    assert endpoint_count(emulator, "getModelInfo") == infos + 1


def test_a_call_made_after_the_traits_were_asked_asks_again_before_a_refusal(
    fronts: Fronts, emulator: LMStudioEmulator
) -> None:
    """Traits asked before a call was made may be of a model since replaced: asked again."""
    client = fronts.client()
    _swap(emulator, TEXT_MODEL)
    model = fronts.model(client, "main")
    with pytest.raises(UnsupportedInputError):  # the traits are cached
        model(["describe", png_image()], max_tokens=3)
    infos = endpoint_count(emulator, "getModelInfo")
    stream = model.stream(["describe", png_image()], max_tokens=3)  # made after that ask
    _swap(emulator, VISION_MODEL)
    assert "".join(stream)  # not refused: asked again, a vision model now
    assert endpoint_count(emulator, "getModelInfo") == infos + 1
    assert emulator.predictions[-1].images


# -- a model unloaded while it answers ---------------------------------------------------------
def _unload_first(emulator: LMStudioEmulator, times: int = 1) -> list[int]:
    """Script replies that unload their model while they answer, the first ``times`` times."""
    count = [0]

    def reply(prediction: Prediction) -> str:
        count[0] += 1
        if count[0] <= times:
            emulator.unload(prediction.model)
        return "a whole answer"

    emulator.script(TEXT_MODEL, reply)
    return count


def test_a_whole_reply_whose_model_is_unloaded_is_asked_again(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """Found by a probe: docs/models.md promises a retry; the call failed."""
    model = make_model(TEXT_MODEL)
    _unload_first(emulator)
    assert model("hi") == "a whole answer"
    assert [p.stop_reason for p in emulator.predictions] == ["modelUnloaded", "eosFound"]
    assert endpoint_count(emulator, "getOrLoad") == 2  # resolved (loaded) again


@pytest.mark.parametrize("how", ["reply", "batch"])
def test_a_reply_cut_by_an_unload_is_asked_of_the_same_model_when_none_was_named(
    fronts: Fronts, emulator: LMStudioEmulator, how: str
) -> None:
    """Found by a probe: with ``model_name=None`` the retry went to "any loaded model", and
    another model's answer came back as this one's, with a normal stop reason."""
    model = fronts.model(fronts.client())  # the model LM Studio has loaded
    first = model.reply("which one?", max_tokens=2).stats
    assert first.model_key is not None
    assert first.identifier is not None
    with lms.Client(emulator.api_host) as by_hand:
        keys = {h.get_info().model_key for h in by_hand.llm.list_loaded()}
    assert len(keys) > 1  # another model the retry could have reached
    emulator.reset()
    count = [0]

    def unload_first(prediction: Prediction) -> str:
        count[0] += 1
        if count[0] == 1:
            emulator.unload(prediction.model)
        return "a whole answer"

    for key in keys:
        emulator.script(key, unload_first)
    if how == "reply":
        stats = [model.reply("hi").stats]
    else:
        stats = [r.stats for r in model.reply_batch(["a", "b", "c"], max_concurrency=1)]
    answered = [p.model for p in emulator.predictions]
    assert [p.stop_reason for p in emulator.predictions][:2] == ["modelUnloaded", "eosFound"]
    assert answered[1] == answered[0] == first.identifier  # loaded anew under its key
    assert (stats[0].model_key, stats[0].identifier) == (first.model_key, answered[1])
    # a later item finds the loaded model anew, as a later call does, and says which it was
    assert [s.identifier for s in stats[1:]] == [p.model for p in emulator.predictions[2:]]


def test_batch_items_whose_model_is_unloaded_are_asked_again(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    model = make_model(TEXT_MODEL)
    _unload_first(emulator)
    assert model.batch(["a", "b", "c"], max_concurrency=1) == ["a whole answer"] * 3
    assert [p.stop_reason for p in emulator.predictions].count("modelUnloaded") == 1


def test_batch_items_whose_model_was_unloaded_share_one_lookup(
    fronts: Fronts, emulator: LMStudioEmulator
) -> None:
    """Each async item dropped the lookup another item had just begun and sent its own: 4
    loads asked of LM Studio, which loads as many instances when JIT-loading (found by a
    probe; lmstudio-bug-tracker#1751)."""
    model = fronts.model(fronts.client(), TEXT_MODEL, max_concurrency=4)
    assert model.batch(["a", "b", "c", "d"], max_tokens=3)
    emulator.unload(TEXT_MODEL)
    lookups = endpoint_count(emulator, "getOrLoad")
    assert len(model.batch(["a", "b", "c", "d"], max_tokens=3)) == 4
    assert endpoint_count(emulator, "getOrLoad") - lookups == 1


@pytest.mark.parametrize("checked", ["image", "grammar mode", "a batch of images"])
def test_a_call_checked_against_an_unloaded_models_traits_loads_it_again(
    fronts: Fronts, emulator: LMStudioEmulator, checked: str
) -> None:
    """Found by a probe: after a text call, the model was unloaded (by its user, its TTL or
    a JIT swap); the next call with an image, or in grammar mode, asked the cached handle
    for the model's traits, got "not found", and failed where a text call loads it again."""
    key = TEXT_MODEL if checked == "grammar mode" else VISION_MODEL
    model = fronts.model(fronts.client(), key, grammar=checked == "grammar mode")
    assert model("text only: the traits are not asked", max_tokens=3)
    emulator.unload(key)
    if checked == "grammar mode":
        assert set(model("digits", Regex(r"[0-9]{3}"))) <= set("0123456789")
    elif checked == "image":
        assert model(["describe", png_image()], max_tokens=3)
    else:
        assert len(model.batch([["a", png_image()], ["b", png_image("blue")]], max_tokens=3)) == 2
    assert endpoint_count(emulator, "getOrLoad") == 2  # resolved again, once


def test_a_model_unloaded_again_on_the_retry_says_why_and_what_to_do(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    model = make_model(TEXT_MODEL)
    _unload_first(emulator, times=2)
    with pytest.raises(LMStudioPredictionError, match="unloaded while it answered, again") as info:
        model("hi")
    message = str(info.value)
    assert "ttl=None" in message
    assert "auto-evict" in message
    assert "server log" not in message
    assert info.value.model == TEXT_MODEL
    assert [p.stop_reason for p in emulator.predictions] == ["modelUnloaded"] * 2
    assert model("the next call loads it again") == "a whole answer"


@pytest.mark.parametrize("call", ["whole", "stream"])
def test_on_message_gets_the_reply_returned_only_after_an_unload(
    make_model: MakeModel, emulator: LMStudioEmulator, call: str
) -> None:
    """Found by reviews: a whole call asked again after its model was unloaded while it
    answered gave ``on_message`` the cut reply, then the whole one; with
    ``on_message=chat.append`` the second raised, and the answer was lost. A stream with
    ``on_message`` was not asked again at all (its empty cut reply counted as shown)."""
    model = make_model(TEXT_MODEL)
    _unload_first(emulator, times=1)
    chat = lms.Chat("Be brief.")
    chat.add_user_message("hello")
    got: list[Any] = []

    def on_message(message: Any) -> None:
        got.append(message)
        chat.append(message)

    if call == "whole":
        assert model(chat, on_message=on_message) == "a whole answer"
    else:
        assert "".join(model.stream(chat, on_message=on_message)) == "a whole answer"
    assert [p.stop_reason for p in emulator.predictions] == ["modelUnloaded", "eosFound"]
    assert len(got) == 1
    model(chat)  # the caller's chat as LM Studio receives it
    history = emulator.predictions[-1].messages
    assert [m["role"] for m in history] == ["system", "user", "assistant"]
    assert message_text(history[-1]) == "a whole answer"


@pytest.mark.parametrize("call", ["whole", "stream"])
def test_a_model_unloaded_before_each_prediction_says_why_and_what_to_do(
    make_model: MakeModel, emulator: LMStudioEmulator, call: str
) -> None:
    """Found by a probe: the retry loaded the model, lost it again before predicting, and
    the call said LM Studio had no such model (``LMStudioModelNotFoundError``), though it
    had just loaded it; two JIT models called at once did this on their own."""
    model = make_model(TEXT_MODEL)
    model("warm")  # the handle is cached
    emulator.add_fault(Fault("predict", "unload", times=2))
    with pytest.raises(LMStudioPredictionError) as info:
        model("hi") if call == "whole" else "".join(model.stream("hi"))
    message = str(info.value)
    assert "unloaded before the prediction began, again after the call was retried" in message
    assert "auto-evict" in message
    assert "ttl=None" in message
    assert info.value.model == TEXT_MODEL
    # LM Studio's details of its not-found answer (a review: None, with details sent)
    assert isinstance(info.value.__cause__, lms.LMStudioModelNotFoundError)
    assert info.value.server_error is info.value.__cause__.server_error is not None
    assert model("the next call loads it again")


def test_a_stream_unloaded_before_its_first_fragment_is_asked_again(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    _unload_first(emulator)
    assert "".join(make_model(TEXT_MODEL).stream("hi")) == "a whole answer"
    assert len(emulator.predictions) == 2


@pytest.mark.asyncio
async def test_two_jit_models_called_at_once_are_each_retried() -> None:
    """Found by a probe: with LM Studio's JIT auto-evict, loading one model unloads the other.

    Each call is retried once; one that loses its model again says how to stop it.
    """
    models = [EmulatedModel("a", loaded=False), EmulatedModel("b", loaded=False)]
    with LMStudioEmulator(models, token_latency=0.02, load_latency=0.3) as emulator:
        async with lms.AsyncClient(emulator.api_host) as client:
            a, b = from_lmstudio(client, "a"), from_lmstudio(client, "b")
            await a("load a first", max_tokens=2)
            results = await asyncio.gather(
                a("x", max_tokens=40), b("y", max_tokens=40), return_exceptions=True
            )
    for result in results:
        if isinstance(result, BaseException):
            assert isinstance(result, LMStudioPredictionError)
            assert "auto-evict" in str(result)
            assert "server log" not in str(result)
    # at least one of the two completes; no call ends with LM Studio's bare stop reason
    assert any(isinstance(r, str) for r in results)
    unloaded = [p for p in emulator.predictions if p.stop_reason == "modelUnloaded"]
    assert unloaded  # the scenario did happen


# -- a time limit during the reload after an unload --------------------------------------------
def test_a_time_limit_during_a_reload_says_no_prediction_had_started(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """Found by a probe: it said a cancel of its prediction was sent; none was running."""
    model = make_model(JIT_MODEL)
    model("hi", max_tokens=3)  # loaded on first use; its handle is cached
    emulator.unload(JIT_MODEL)
    emulator.load_latency = 5.0
    started = time.monotonic()
    with pytest.raises(LMStudioTimeoutError, match="no prediction had started yet") as info:
        model("hi", max_tokens=3, timeout=0.5)
    assert time.monotonic() - started < 4.5  # not the reload's 5 s
    assert "cancel" not in str(info.value)
    assert not any(p.cancelled for p in emulator.predictions)
