"""The llama.cpp engine at its edges: model and context lifetimes, stopped and refused requests."""

from __future__ import annotations

import os
import time
import weakref
from pathlib import Path
from typing import Any, cast

import lmstudio as lms
import pytest

from outlines_lmstudio.testing import EmulatedModel, LMStudioEmulator, embedded_model
from tests.e2e.helpers import interrupted
from tests.real_engine.conftest import EMBED_KEY, EMBEDDED_MODEL_KEY


def test_a_model_outlives_the_contexts_made_on_it(real_emulator: LMStudioEmulator) -> None:
    """A llama.cpp context borrows its model. The garbage collector finalises an unreachable
    engine's model and decoder in any order (a stopped emulator in a reference cycle): the
    weights were freed first, and freeing the context then read freed memory."""
    from outlines_lmstudio.testing._llama_native import Decoder, NativeModel

    gguf = real_emulator._catalogue.find_model(EMBEDDED_MODEL_KEY)
    assert gguf is not None
    assert gguf.gguf is not None
    model = NativeModel(str(gguf.gguf))
    decoder = Decoder(model, 64, 1)
    model.close()  # the order the garbage collector may take
    assert model.model is not None  # still under the live context
    decoder.close()
    assert model.model is None  # freed with the last context


def _log_callback_address() -> int | None:
    import ctypes

    import llama_cpp.llama_cpp as lib

    current, data = lib.llama_log_callback(), ctypes.c_void_p()
    lib.llama_log_get(ctypes.byref(current), ctypes.byref(data))
    return ctypes.cast(current, ctypes.c_void_p).value


def test_a_load_sets_our_log_callback_again() -> None:
    """llama.cpp's log callback is one process-wide setting. The grammar tests' harness set
    its own and let it be freed, and the next model load (the emulator reading a GGUF's
    facts) called freed memory: the whole test run died with SIGSEGV, now and then."""
    import ctypes

    import llama_cpp.llama_cpp as lib

    from outlines_lmstudio.testing import _llama_native as native

    native._init()  # the backend is set up (as after any earlier load in the process)
    lines: list[bytes] = []
    foreign = lib.llama_log_callback(lambda level, text, data: lines.append(text))
    lib.llama_log_set(foreign, ctypes.c_void_p(0))  # as other code in the process may
    try:
        native._facts_cache.clear()
        facts = native.read_facts(embedded_model().gguf or "")
    finally:
        ours = ctypes.cast(native._LOG_CALLBACK, ctypes.c_void_p).value
        now = _log_callback_address()
        lib.llama_log_set(native._LOG_CALLBACK, ctypes.c_void_p(0))
    assert facts.architecture == "gemma3"
    assert now == ours  # set again before the load: the foreign callback was not called
    assert lines == []


def test_the_grammar_harness_sets_the_previous_log_callback_back(tmp_path: Path) -> None:
    from tests.testing.test_gbnf import _load_harness

    module = _load_harness()
    vocab = tmp_path / "bytes.gguf"
    module.write_byte_vocab(vocab)
    before = _log_callback_address()
    harness = module.LlamaGrammarHarness(vocab)
    assert _log_callback_address() != before
    harness.close()
    assert _log_callback_address() == before


def _released(ref: weakref.ref[Any]) -> bool:
    """Whether the object is freed, by reference counting, within a few seconds.

    Under load a server thread still ending its step may hold it a moment (a full run
    failed once so): waited for, without a garbage collection, which would free it anyway.
    """
    deadline = time.monotonic() + 5
    while ref() is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    return ref() is None


def test_stopping_an_emulator_frees_its_models() -> None:
    """A stopped emulator kept each llama.cpp engine, with its model's weights and KV cache
    (about 370 MB for Gemma 3 270M), for as long as it lived: tests that each start one
    grew the process by that much per emulator until a full garbage collection."""
    from outlines_lmstudio.testing._lookup import engine_for

    emulator = LMStudioEmulator([embedded_model()])
    with emulator, lms.Client(emulator.api_host) as client:
        llm = client.llm.model(EMBEDDED_MODEL_KEY)
        assert llm.respond("Say hi", config={"temperature": 0, "maxTokens": 1}).content
        engine = engine_for(emulator, emulator._catalogue.instances[EMBEDDED_MODEL_KEY])
        weights = weakref.ref(cast(Any, engine)._model)
        del engine
    assert _released(weights)
    with emulator, lms.Client(emulator.api_host) as client:  # a restart reads it again
        llm = client.llm.model(EMBEDDED_MODEL_KEY)
        assert llm.respond("Say hi", config={"temperature": 0, "maxTokens": 1}).content


def test_unloading_a_model_frees_its_weights_and_a_reset_keeps_the_defaults(
    emulator: LMStudioEmulator, client: lms.Client
) -> None:
    """The engine of an unloaded instance (its weights and KV cache) was kept until the
    next prediction looked, so unloading a model to make room for another freed nothing
    (found by a probe: RSS and the GGUF's mapping stayed)."""
    from outlines_lmstudio.testing._lookup import engine_for

    config: Any = {"temperature": 0, "maxTokens": 1}
    extra = client.llm.load_new_instance(EMBEDDED_MODEL_KEY, "extra")
    assert extra.respond("Say hi", config=config).content
    engine = engine_for(emulator, emulator._catalogue.instances["extra"])
    weights = weakref.ref(cast(Any, engine)._model)
    del engine
    extra.unload()
    assert _released(weights)  # freed at the unload, before any other prediction
    default = client.llm.model(EMBEDDED_MODEL_KEY)
    assert default.respond("Say hi", config=config).content
    engine = engine_for(emulator, emulator._catalogue.instances[EMBEDDED_MODEL_KEY])
    kept = weakref.ref(cast(Any, engine)._model)
    del engine
    emulator.reset()  # the default instance is loaded again the same way: not read again
    assert kept() is not None


def test_a_cancelled_prediction_counts_its_tokens_consistently(client: lms.Client) -> None:
    """Cancelled mid-reply, the stats said predictedTokensCount 4 (the engine's count) but
    totalTokensCount prompt + 3 (the fragments sent): the total was not the sum; then both
    counted the engine's 4."""
    llm = client.llm.model(EMBEDDED_MODEL_KEY)
    stream = llm.respond_stream(
        "Tell me a long story about a dragon.", config={"temperature": 0, "maxTokens": 200}
    )
    sent = 0
    for count, fragment in enumerate(stream, 1):
        sent += fragment.tokens_count
        if count == 3:
            stream.cancel()
    stats = stream.result().stats
    assert stats.stop_reason == "userStopped"
    assert stats.prompt_tokens_count is not None
    # Found by a probe: the engine's count, one token past the fragments sent.
    assert stats.predicted_tokens_count == sent < 200
    assert stats.total_tokens_count == stats.prompt_tokens_count + stats.predicted_tokens_count


def test_a_cancelled_prediction_counts_the_tokens_a_stop_string_held_back(
    client: lms.Client,
) -> None:
    """Found by a probe: cancelled while its text was held back (it might begin a stop
    string), a reply of 17 decoded tokens reported 0 predicted, and 0 tokens a second."""
    llm = client.llm.model(EMBEDDED_MODEL_KEY)
    llm.complete("1, 2, 3, 4,", config={"temperature": 0, "maxTokens": 1})  # loaded, warm
    holding = " 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, X"  # greedy's own start
    stream = llm.complete_stream(
        "1, 2, 3, 4,", config={"temperature": 0, "maxTokens": 60, "stopStrings": [holding]}
    )
    stream.start()
    time.sleep(1.0)  # a few tokens decoded, all held back
    stream.cancel()
    fragments = list(stream)
    stats = stream.result().stats
    assert stats.stop_reason == "userStopped"
    assert fragments == []
    assert stats.predicted_tokens_count is not None
    assert stats.predicted_tokens_count >= 1
    assert stats.tokens_per_second is not None
    assert stats.tokens_per_second > 0
    assert stats.prompt_tokens_count is not None
    assert stats.total_tokens_count == stats.prompt_tokens_count + stats.predicted_tokens_count


def test_a_history_the_template_cannot_render_is_a_template_error(client: lms.Client) -> None:
    """An empty history made the Gemma template read ``messages[0]``: jinja's UndefinedError
    failed the request as an emulator crash ("failed to serve this request"), not as the
    template error LM Studio reports."""
    llm = client.llm.model(EMBEDDED_MODEL_KEY)
    with pytest.raises(lms.LMStudioServerError, match="Error rendering prompt with jinja"):
        llm.apply_prompt_template(lms.Chat())
    with pytest.raises(lms.LMStudioServerError, match="Error rendering prompt with jinja"):
        llm.respond(lms.Chat(), config={"temperature": 0, "maxTokens": 1})


def test_an_input_longer_than_the_context_is_refused_before_it_is_embedded(
    client: lms.Client,
) -> None:
    """The embedding context was sized for the input before its length was checked: 50,000
    tokens took about 800 MB and failed with "could not create an embedding context"."""
    embedder = client.embedding.model(EMBED_KEY)
    with pytest.raises(
        lms.LMStudioServerError, match=r"Input length 50002 exceeds context length 4096$"
    ):
        embedder.embed("word " * 50_000)


@pytest.mark.usefixtures("sigint_default")
def test_ctrl_c_while_a_gguf_file_is_read_stops_the_caller() -> None:
    """Found by a probe: a Ctrl-C while llama.cpp read a GGUF file's facts on the main
    thread (the demo's first second) was raised in llama.cpp's log callback, where ctypes
    printed "Exception ignored on calling ctypes callback function" and dropped it: the
    demo went on to its end."""
    gguf = embedded_model().gguf
    assert gguf is not None
    script = (
        "import sys\n"
        "from outlines_lmstudio.testing import _llama_native\n"
        "print('STARTED', flush=True)\n"
        "while True:\n"
        "    _llama_native._facts_cache.clear()\n"
        "    _llama_native.read_facts(sys.argv[1])\n"
    )
    # Ctrl-C'd a second in: inside a read, nearly all of the time.
    status, _, err = interrupted(script, [str(gguf)], lambda: time.sleep(1.0))
    assert "KeyboardInterrupt" in err, err
    assert "Exception ignored" not in err, err
    assert status != 0


def test_a_gguf_path_that_is_not_utf_8_is_served(tmp_path: Path) -> None:
    """Found by a probe: a HOME (or ``--gguf`` path) holding a byte that is not UTF-8, which
    Linux allows, made llama.cpp's path ``path.encode()``; the ``UnicodeEncodeError`` was
    taken for a file llama.cpp cannot read, and the user told to reinstall llama-cpp-python.
    The path is given to llama.cpp as the file system's bytes (``os.fsencode``)."""
    folder = tmp_path / os.fsdecode(b"caf\xe9 \xff")
    folder.mkdir()
    gguf = folder / "model.gguf"
    gguf.symlink_to(embedded_model().gguf or "")
    with (
        LMStudioEmulator([EmulatedModel("odd-path", gguf=str(gguf))]) as emulator,
        lms.Client(emulator.api_host) as client,
    ):
        llm = client.llm.model("odd-path")
        assert llm.respond("Say hi", config={"temperature": 0, "maxTokens": 2}).content
        assert llm.get_info().architecture == "gemma3"  # read from the file
