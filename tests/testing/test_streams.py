"""Cancelled and abandoned streams, stop conditions and scripted replies."""

from __future__ import annotations

import json
from typing import Any

import lmstudio as lms
import pytest

from outlines_lmstudio.testing import LMStudioEmulator, Prediction
from outlines_lmstudio.testing._engine import Fragment
from outlines_lmstudio.testing._synthetic import _cut

from .conftest import EMBED, MLX, TEXT, UNLOADED, MakeEmulator

LONG = " ".join(f"word{i}" for i in range(200))


def test_cancel_after_first_fragment_sync(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator(token_latency=0.01)
    emulator.script(TEXT, [LONG])
    with lms.Client(emulator.api_host) as client:
        stream = client.llm.model(TEXT).respond_stream("go")
        for _fragment in stream:
            stream.cancel()
        result = stream.result()
        assert result.stats.stop_reason == "userStopped"
        emulator.wait_until(lambda: emulator.predictions[-1].done)
        prediction = emulator.predictions[-1]
        assert prediction.cancelled
        assert prediction.stop_reason == "userStopped"
        # Long before the reply's 300 fragments; 20 was passed once on a loaded machine (48).
        assert len(prediction.fragments) < 150
        assert client.llm.model(TEXT).respond("next").content  # the socket still works


@pytest.mark.asyncio
async def test_cancel_after_first_fragment_async(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator(token_latency=0.01)
    emulator.script(TEXT, [LONG])
    async with lms.AsyncClient(emulator.api_host) as client:
        model = await client.llm.model(TEXT)
        stream = await model.respond_stream("go")
        async with stream:
            async for _fragment in stream:
                await stream.cancel()
        assert stream.result().stats.stop_reason == "userStopped"
    assert emulator.predictions[-1].cancelled


def test_unloading_the_model_ends_its_prediction(make_emulator: MakeEmulator) -> None:
    """LM Studio stops a model's predictions when it is unloaded: ``modelUnloaded``."""
    emulator = make_emulator(token_latency=0.01)
    emulator.script(TEXT, [LONG])
    with lms.Client(emulator.api_host) as client:
        stream = client.llm.model(TEXT).respond_stream("go")
        seen = 0
        for _fragment in stream:
            seen += 1
            if seen == 2:
                client.llm.unload(TEXT)
        assert stream.result().stats.stop_reason == "modelUnloaded"
        assert seen < 50
    prediction = emulator.predictions[-1]
    assert (prediction.stop_reason, prediction.cancelled) == ("modelUnloaded", False)
    assert prediction.text == stream.result().content


def test_a_generating_model_is_not_idle(make_emulator: MakeEmulator) -> None:
    """The time-to-live counts from the last use: a long prediction does not expire it."""
    emulator = make_emulator(token_latency=0.02, only_keep_last_jit_model=False)
    emulator.script(UNLOADED, [LONG])  # 200 fragments: 4 s, longer than the 1 s TTL
    with lms.Client(emulator.api_host) as client:
        stream = client.llm.model(UNLOADED, ttl=1).respond_stream("go")
        for index, _fragment in enumerate(stream):
            if index % 20 == 0:
                assert UNLOADED in [m.identifier for m in client.llm.list_loaded()]
        assert stream.result().stats.stop_reason == "eosFound"


def test_abandoned_stream_keeps_the_socket_usable(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator(token_latency=0.002)
    emulator.script(TEXT, ["one two three four five six seven eight nine ten"])
    with lms.Client(emulator.api_host) as client:
        model = client.llm.model(TEXT)
        stream = model.respond_stream("go")
        for _fragment in stream:
            break  # leaves without cancel(): the SDK tells the server nothing
        stream.close()
        assert model.respond("again").content
        emulator.wait_until(lambda: all(p.done for p in emulator.predictions))
    abandoned = emulator.predictions[0]
    assert not abandoned.cancelled
    assert abandoned.stop_reason == "eosFound"


def test_max_tokens_truncates_json(emu: LMStudioEmulator, client: lms.Client) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    result = client.llm.model(TEXT).respond("?", response_format=schema, config={"maxTokens": 2})
    assert result.stats.stop_reason == "maxPredictedTokensReached"
    assert result.stats.predicted_tokens_count == 2
    assert not result.structured
    with pytest.raises(json.JSONDecodeError):
        json.loads(result.content)


def test_max_tokens_false_means_no_limit(emu: LMStudioEmulator, client: lms.Client) -> None:
    """The Python SDK sends ``maxTokens=False`` as ``{checked: true, value: false}``."""
    emu.script(TEXT, [LONG])
    result = client.llm.model(TEXT).respond("go", config={"maxTokens": False})
    assert (result.stats.stop_reason, result.content) == ("eosFound", LONG)


def test_stop_string_cuts_before_it(emu: LMStudioEmulator, client: lms.Client) -> None:
    emu.script(TEXT, ["alpha beta STOP gamma"])
    result = client.llm.model(TEXT).respond("?", config={"stopStrings": ["STOP"]})
    assert result.content == "alpha beta "
    assert result.stats.stop_reason == "stopStringFound"


def _success_stats(emu: LMStudioEmulator) -> dict[str, Any]:
    """The ``stats`` of the last ``success`` packet sent (the SDK 1.5.0 drops newer keys)."""
    for frame in reversed(emu.trace):
        message = frame.data.get("message") if frame.direction == "out" else None
        if isinstance(message, dict) and message.get("type") == "success" and "stats" in message:
            stats: dict[str, Any] = message["stats"]
            return stats
    raise AssertionError("no success packet in the trace")


def test_stats_name_the_stop_string_and_total_time(
    emu: LMStudioEmulator, client: lms.Client
) -> None:
    """LM Studio's stats say which stop string ended the reply (lmstudio-js #521)."""
    emu.script(TEXT, ["alpha beta STOP gamma END", "alpha beta"])
    model = client.llm.model(TEXT)
    model.respond("?", config={"stopStrings": ["END", "STOP"]})
    stats = _success_stats(emu)
    assert (stats["stopReason"], stats["stopString"]) == ("stopStringFound", "STOP")
    assert stats["totalTimeSec"] >= 0
    model.respond("?", config={"stopStrings": ["END"]})
    assert "stopString" not in _success_stats(emu)  # only when a stop string ended it


def test_stop_string_spanning_fragments(emu: LMStudioEmulator, client: lms.Client) -> None:
    emu.script(TEXT, ["abcdefghij klm"])  # fragments: "abcdef", "ghij", " klm"
    result = client.llm.model(TEXT).respond("?", config={"stopStrings": ["fgh"]})
    assert result.content == "abcde"


@pytest.mark.timeout(30)  # the old scan took minutes here
def test_a_long_reply_is_scanned_for_stop_strings_in_linear_time() -> None:
    """The scan for stop strings made the whole text again for each token: a 2 MB scripted
    reply held the emulator's event loop for minutes before its first fragment, so no ping
    was answered (the SDK dropped the socket) and the emulator could not stop (found by a
    probe). Only the text's end is kept now, as long as a stop string may reach back."""
    tokens = [Fragment("xxxxxx")] * 400_000 + [Fragment("ST"), Fragment("OP and"), Fragment("!")]
    kept, reason, stop = _cut(tokens, {"llm.prediction.stopStrings": ["never", "STOP"]})
    assert (reason, stop) == ("stopStringFound", "STOP")
    assert "".join(t.content for t in kept) == "xxxxxx" * 400_000
    kept, reason, stop = _cut(tokens, {})
    assert (kept, reason, stop) == (tokens, "eosFound", None)


def test_scripts_in_order_then_generated(emu: LMStudioEmulator, client: lms.Client) -> None:
    emu.script(TEXT, ["first reply", lambda p: f"echo: {p.last_user_text}"])
    model = client.llm.model(TEXT)
    assert model.respond("a").content == "first reply"
    assert model.respond("b").content == "echo: b"
    generated = model.respond("c").content
    assert generated not in ("first reply", "echo: c")
    assert generated


def test_callable_script_is_used_for_every_request(
    emu: LMStudioEmulator, client: lms.Client
) -> None:
    def reply(prediction: Prediction) -> str:
        return prediction.last_user_text.upper()

    emu.script(MLX, reply)
    model = client.llm.model(MLX)
    assert [model.respond(t).content for t in ("x", "yz")] == ["X", "YZ"]


def test_scripted_invalid_json_is_sent_verbatim(emu: LMStudioEmulator, client: lms.Client) -> None:
    emu.script(TEXT, ['{"name": oops'])
    result = client.llm.model(TEXT).respond("?", response_format={"type": "object"})
    assert result.content == '{"name": oops'
    assert not result.structured


def test_failing_script_is_a_server_error(emu: LMStudioEmulator, client: lms.Client) -> None:
    def broken(prediction: Prediction) -> str:
        raise RuntimeError("script bug")

    emu.script(TEXT, broken)
    with pytest.raises(lms.LMStudioServerError, match="script bug"):
        client.llm.model(TEXT).respond("?")


def test_a_script_by_path_or_alias_applies_to_the_model(make_emulator: MakeEmulator) -> None:
    from outlines_lmstudio.testing import EmulatedModel

    alias = "hugging-quants/llama-3.2-1b-instruct"
    path = "hugging-quants/Llama-3.2-1B-Instruct-Q8_0-GGUF/llama-3.2-1b-instruct-q8_0.gguf"
    llama = EmulatedModel("llama-3.2-1b-instruct", path=path, aliases=[alias])
    emulator = make_emulator(models=[llama])
    with lms.Client(emulator.api_host) as client:
        model = client.llm.model(alias)
        emulator.script(alias, ["by alias"])
        assert model.respond("?").content == "by alias"
        emulator.script(path.upper(), ["by path"])  # paths ignore case, as in LM Studio
        assert model.respond("?").content == "by path"


def test_a_script_for_an_unknown_name_is_refused(emu: LMStudioEmulator) -> None:
    with pytest.raises(KeyError, match="no model or loaded instance named 'qwen-typo'"):
        emu.script("qwen-typo", ["never sent"])


def test_a_model_name_that_is_not_a_string_is_a_type_error(emu: LMStudioEmulator) -> None:
    from outlines_lmstudio.testing import Fault

    # Before: AttributeError: 'int' object has no attribute 'casefold'.
    with pytest.raises(TypeError, match="A model name must be a string"):
        emu.script(7, ["never sent"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Fault\.model must be a string"):  # when made
        emu.add_fault(Fault("predict", model=7))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="A model name must be a string"):
        emu.peak_concurrency(7)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="as strings"):
        emu.load(7)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="as strings"):
        emu.load(TEXT, 7)  # type: ignore[arg-type]  # was loaded, with an identifier of 7


@pytest.mark.parametrize("replies", [None, b"abc", {"a": 1}, [42], ["ok", None], 3.5])
def test_script_values_that_are_not_replies_are_refused(
    emu: LMStudioEmulator, replies: object
) -> None:
    with pytest.raises(TypeError, match="a str, a ToolCall, a ReasoningReply"):
        emu.script(TEXT, replies)  # type: ignore[arg-type]


def test_a_reply_function_must_return_a_reply(emu: LMStudioEmulator, client: lms.Client) -> None:
    emu.script(TEXT, lambda prediction: None)  # type: ignore[arg-type]
    with pytest.raises(lms.LMStudioServerError, match="returned NoneType"):
        client.llm.model(TEXT).respond("?")  # was the text "None"


@pytest.mark.timeout(10)
def test_stop_from_a_reply_function_fails_at_once(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator()

    def stop_here(prediction: Prediction) -> str:
        emulator.stop()  # waited 15 s for its own thread, then left the emulator half stopped
        return "unreachable"

    emulator.script(TEXT, stop_here)
    with lms.Client(emulator.api_host) as client:
        model = client.llm.model(TEXT)
        with pytest.raises(lms.LMStudioServerError, match="the emulator's own thread"):
            model.respond("?")
        emulator.script(TEXT, ["still serving"])
        assert model.respond("?").content == "still serving"


def test_a_script_for_a_llama_cpp_model_is_refused(make_emulator: MakeEmulator) -> None:
    from outlines_lmstudio.testing import EmulatedModel, embedded_available, embedded_model

    if not embedded_available():
        pytest.skip("the embedded GGUF model is not installed")
    gemma = embedded_model()
    emulator = LMStudioEmulator([gemma])  # not started: scripting needs no server
    with pytest.raises(ValueError, match="writes its own replies"):
        emulator.script(gemma.key, ["never used"])
    with pytest.raises(ValueError, match="writes its own replies"):
        EmulatedModel("g", gguf=gemma.gguf, replies=["never used"])


def test_model_replies_from_an_iterator_are_kept(make_emulator: MakeEmulator) -> None:
    from outlines_lmstudio.testing import EmulatedModel

    # Typed as a sequence, but any iterable is taken at run time. Before: checking
    # the replies spent the iterator, so the model had none.
    model = EmulatedModel("m", replies=(text for text in ["one", "two"]))  # type: ignore[arg-type]
    emulator = make_emulator(models=[model])
    with lms.Client(emulator.api_host) as client:
        handle = client.llm.model("m")
        assert [handle.respond("?").content for _ in range(2)] == ["one", "two"]
        emulator.reset()
        assert handle.respond("?").content == "one"


def test_a_script_for_an_embedding_model_is_refused(emu: LMStudioEmulator) -> None:
    from outlines_lmstudio.testing import EmulatedModel

    # Before: both were taken and never used (an embedding model returns vectors).
    with pytest.raises(ValueError, match="embedding model"):
        emu.script(EMBED, ["never used"])
    with pytest.raises(ValueError, match="embedding model"):
        EmulatedModel("e", type="embedding", replies=["never used"])
    with pytest.raises(ValueError, match="embedding model never replies"):
        EmulatedModel("e", type="embedding", reasoning="think")
    # Found by a probe: vision and tool use were taken for an embedding model and dropped.
    with pytest.raises(ValueError, match=r"so vision=True would never be used"):
        EmulatedModel("e", type="embedding", vision=True)
    with pytest.raises(ValueError, match=r"so tool_use=True would never be used"):
        EmulatedModel("e", type="embedding", tool_use=True)


def test_model_replies_from_the_catalogue(make_emulator: MakeEmulator) -> None:
    from outlines_lmstudio.testing import EmulatedModel

    emulator = make_emulator(models=[EmulatedModel("m", replies=["canned"])])
    with lms.Client(emulator.api_host) as client:
        assert client.llm.model("m").respond("?").content == "canned"
        emulator.reset()  # restores the catalogue's scripts
        assert client.llm.model("m").respond("?").content == "canned"


@pytest.mark.asyncio
async def test_a_cancel_right_behind_the_request_stops_the_prediction(
    make_emulator: MakeEmulator,
) -> None:
    """The socket is ordered: a cancel sent right after the request finds its channel."""
    emulator = make_emulator(token_latency=0.002)
    emulator.script(TEXT, [LONG] * 30)
    async with lms.AsyncClient(emulator.api_host) as client:
        model = await client.llm.model(TEXT)
        reasons = []
        for _ in range(30):
            stream = await model.respond_stream("go")
            await stream.start()  # sends the request
            await stream.cancel()  # sent at once after it
            async with stream:
                async for _fragment in stream:
                    pass
            reasons.append(stream.result().stats.stop_reason)
    assert reasons == ["userStopped"] * 30
    assert all(p.cancelled for p in emulator.predictions)


def test_the_prompt_tokens_are_those_of_the_templated_prompt(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator()
    emulator.script(TEXT, [LONG, LONG])
    chat = lms.Chat("You answer briefly.")
    chat.add_user_message("Tell me about rivers.")
    with lms.Client(emulator.api_host) as client:
        small = client.llm.load_new_instance(TEXT, "small", config={"contextLength": 40})
        prompt = small.count_tokens(small.apply_prompt_template(chat))
        stats = small.respond(chat, config={"contextOverflowPolicy": "stopAtLimit"}).stats
        completed = small.complete("Once upon a time", config={"maxTokens": 1}).stats
        raw = small.count_tokens("Once upon a time")
    # Before: only the messages' text was counted (9 tokens where the prompt has 22), and
    # the reply ran past the context the SDK's own count_tokens measures.
    assert stats.prompt_tokens_count == prompt
    assert stats.stop_reason == "contextLengthReached"
    assert prompt + (stats.predicted_tokens_count or 0) == 40
    assert completed.prompt_tokens_count == raw  # complete(): the prompt as it is


def test_stop_at_limit_stops_where_the_context_is_full(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator()
    emulator.script(TEXT, [LONG, LONG])
    with lms.Client(emulator.api_host) as client:
        small = client.llm.load_new_instance(TEXT, "small", config={"contextLength": 32})
        stopped = small.respond("go on", config={"contextOverflowPolicy": "stopAtLimit"})
        stats = stopped.stats
        assert stats.stop_reason == "contextLengthReached"
        assert (stats.prompt_tokens_count or 0) + (stats.predicted_tokens_count or 0) <= 32
        assert stats.predicted_tokens_count  # the reply began
        assert stopped.content
        assert LONG.startswith(stopped.content)
        # LM Studio's other policies make room by truncating: the reply goes on.
        rolling = small.respond("go on", config={"contextOverflowPolicy": "rollingWindow"})
        assert (rolling.stats.stop_reason, rolling.content) == ("eosFound", LONG)
