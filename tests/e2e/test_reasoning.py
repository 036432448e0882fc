"""Reasoning models: only the answer reaches every entry point, sync and async.

Every reasoning form of the emulator (typed ``<think>``, the synthetic marker typed
or inline, LM Studio before 0.4.19, MLX, Harmony) x every entry point (generate,
stream, batch, Generator, parse, parse_stream, reply, reply_stream, reply_batch)
x both fronts. The replies are scripted, so the answer and the reasoning are known
exactly; the reasoning holds JSON-looking drafts, braces and a fake marker prefix.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

import lmstudio as lms
import outlines
import pytest
import pytest_asyncio
from outlines.types import Regex
from pydantic import BaseModel

from outlines_lmstudio import (
    AsyncLMStudio,
    EmptyAnswerError,
    LMStudio,
    ReasoningTruncatedError,
    TruncatedOutputError,
    from_lmstudio,
)
from outlines_lmstudio._reasoning import HARMONY_TOKENS, SYNTHETIC_MARKER, ReasoningSplitter
from outlines_lmstudio.testing import (
    LMStudioEmulator,
    ReasoningReply,
    reasoning_models,
)
from tests.reasoning_emulator import fresh_reasoning_emulator, reasoning_emulator  # noqa: F401

from .helpers import predicted_counts

FORMS = {m.reasoning: m.key for m in reasoning_models() if m.reasoning}
GGUF_FORMS = sorted(m.reasoning for m in reasoning_models() if m.format == "gguf" and m.reasoning)
ENTRIES = [
    "generate",
    "stream",
    "batch",
    "generator",
    "parse",
    "parse_stream",
    "reply",
    "reply_stream",
    "reply_batch",
]


class Person(BaseModel):
    name: str
    age: int


ANSWER = '{"name": "Ada", "age": 36}'
REASONING = (
    'The user wants a person. Draft: {"name": "Bob", "age": 1} - no. '
    "Braces { and } must balance; __LM_STUDIO_INTERNAL is not the end. "
    '{"name": "Ada"'
)
LEAKS = ("Draft", "Bob", "<think>", "</think>", "__LM_STUDIO", *HARMONY_TOKENS)
Front = Literal["sync", "async"]
Model = LMStudio | AsyncLMStudio


def expected_reasoning(form: str, structured: bool = True) -> str:
    return "" if form == "legacy" and structured else REASONING


@pytest_asyncio.fixture(params=["sync", "async"])
async def front(
    request: pytest.FixtureRequest, emu: LMStudioEmulator
) -> AsyncIterator[Callable[[str], Model]]:
    """Build a model of either front for a model key."""
    if request.param == "sync":
        with lms.Client(emu.api_host) as client:
            yield lambda key, **kw: from_lmstudio(client, key, **kw)
    else:
        async with lms.AsyncClient(emu.api_host) as aclient:
            yield lambda key, **kw: from_lmstudio(aclient, key, **kw)


async def resolve(value: Any) -> Any:
    return await value if isinstance(value, Awaitable) else value


async def collect(stream: Any, model: Model) -> list[Any]:
    if isinstance(model, AsyncLMStudio):
        return [item async for item in stream]
    return list(stream)


async def call(model: Model, entry: str, prompt: str, output_type: Any, **kw: Any) -> Any:
    """Run one entry point; return (answer text or value, the Reply if any)."""
    m: Any = model
    if entry == "generate":
        return await resolve(m(prompt, output_type, **kw)), None
    if entry == "stream":
        return "".join(await collect(m.stream(prompt, output_type, **kw), model)), None
    if entry == "batch":
        texts = await resolve(m.batch([prompt, prompt], output_type, **kw))
        assert texts[0] == texts[1]
        return texts[0], None
    if entry == "generator":
        return await resolve(outlines.Generator(m, output_type)(prompt, **kw)), None
    if entry == "parse":
        return await resolve(m.parse(prompt, output_type, **kw)), None
    if entry == "parse_stream":
        values = await collect(m.parse_stream(prompt, output_type, **kw), model)
        return values, None
    if entry == "reply":
        reply = await resolve(m.reply(prompt, output_type, **kw))
        return reply.text, reply
    if entry == "reply_stream":
        stream = m.reply_stream(prompt, output_type, **kw)
        chunks = await collect(stream, model)
        reply = stream.reply
        assert "".join(c.text for c in chunks if not c.reasoning) == reply.text
        assert "".join(c.text for c in chunks if c.reasoning) == reply.reasoning
        return reply.text, reply
    assert entry == "reply_batch"
    replies = await resolve(m.reply_batch([prompt, prompt], output_type, **kw))
    assert [(r.text, r.reasoning) for r in replies[1:]] == [(replies[0].text, replies[0].reasoning)]
    return replies[0].text, replies[0]


def script(emu: LMStudioEmulator, key: str, answer: str, times: int = 2) -> None:
    emu.script(key, [ReasoningReply(answer, REASONING)] * times)


@pytest.mark.asyncio
@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("form", sorted(FORMS))
async def test_only_the_answer_reaches_every_entry_point(
    emu: LMStudioEmulator, front: Callable[[str], Model], form: str, entry: str
) -> None:
    script(emu, FORMS[form], ANSWER)
    model = front(FORMS[form])
    got, reply = await call(model, entry, "Who?", Person)
    if entry == "parse":
        assert got == Person(name="Ada", age=36)
    elif entry == "parse_stream":
        assert got[-1] == Person(name="Ada", age=36)
        for partial in got[:-1]:  # nothing from the reasoning's drafts
            assert isinstance(partial, dict)
            assert "Ada".startswith(partial.get("name", ""))
            assert partial.get("age") in (None, 3, 36)
    else:
        assert got == ANSWER
        assert not any(leak in got for leak in LEAKS)
    if reply is not None:
        assert reply.reasoning == expected_reasoning(form)
        stats = reply.stats
        assert stats.stop_reason == "eosFound"
        assert stats.predicted_tokens is not None
        if form == "legacy":
            assert stats.reasoning_tokens in (0, None)
        else:
            assert stats.reasoning_tokens is not None
            assert 0 < stats.reasoning_tokens < stats.predicted_tokens
        assert stats.time_to_first_answer_token is not None
        assert stats.time_to_first_answer_token >= 0


@pytest.mark.asyncio
@pytest.mark.parametrize("entry", ["generate", "stream", "reply", "reply_stream"])
@pytest.mark.parametrize("form", sorted(FORMS))
async def test_plain_text_answer(
    emu: LMStudioEmulator, front: Callable[[str], Model], form: str, entry: str
) -> None:
    script(emu, FORMS[form], "Paris is the capital.")
    got, reply = await call(front(FORMS[form]), entry, "Capital?", None)
    assert got == "Paris is the capital."
    if reply is not None:
        assert reply.reasoning == expected_reasoning(form, structured=False)


@pytest.mark.asyncio
@pytest.mark.parametrize("entry", ["reply", "reply_stream", "reply_batch"])
@pytest.mark.parametrize("form", [*sorted(FORMS), "none"])
async def test_time_to_first_answer_is_when_the_answer_began(
    emu: LMStudioEmulator,
    front: Callable[[str], Model],
    monkeypatch: pytest.MonkeyPatch,
    form: str,
    entry: str,
) -> None:
    """Short reasoning, then a long answer: its first token came early, not at the end.

    A whole reply is read in one piece; the time is still that of the fragment where the
    answer began (it once was the time the whole reply had arrived).
    """
    answer = " ".join(f"word{i}" for i in range(40))
    key = FORMS.get(form, "qwen2.5-7b-instruct")
    emu.script(key, [ReasoningReply(answer, "Brief.") if form != "none" else answer] * 2)
    latency = 0.01
    monkeypatch.setattr(emu, "token_latency", latency)
    started = time.monotonic()
    got, reply = await call(front(key), entry, "Say it.", None)
    elapsed = time.monotonic() - started
    assert got == answer
    assert reply is not None
    first = reply.stats.time_to_first_answer_token
    assert first is not None
    assert 0 < first < elapsed - 20 * latency  # 40 answer fragments came after it


@pytest.mark.asyncio
@pytest.mark.parametrize("form", sorted(FORMS))
async def test_unscripted_structured_reply_validates(
    front: Callable[[str], Model], form: str
) -> None:
    """The emulator's own reasoning (with a draft shaped like the answer) is skipped."""
    model: Any = front(FORMS[form])
    text, _ = await call(model, "generate", "Who?", Person)
    assert set(json.loads(text)) == {"name", "age"}
    reply = await resolve(model.reply("Who?", Person))
    assert reply.text == text
    assert ("A first draft: {" in reply.reasoning) == (form != "legacy")
    assert isinstance(await resolve(model.parse("Who?", Person)), Person)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("output_type", "answer", "text", "value"),
    [
        (int, "42", "42", 42),
        (Literal["pos", "neg"], '"pos"', "pos", "pos"),
        (bool, "true", "True", True),
    ],
)
@pytest.mark.parametrize("form", sorted(FORMS))
async def test_simple_types_on_reasoning_models(
    emu: LMStudioEmulator,
    front: Callable[[str], Model],
    form: str,
    output_type: Any,
    answer: str,
    text: str,
    value: Any,
) -> None:
    emu.script(FORMS[form], [ReasoningReply(answer, REASONING)] * 3)
    model = front(FORMS[form])
    assert (await call(model, "generate", "?", output_type))[0] == text
    assert (await call(model, "stream", "?", output_type))[0] == text
    assert (await call(model, "parse", "?", output_type))[0] == value


@pytest.mark.asyncio
@pytest.mark.parametrize("form", GGUF_FORMS)
async def test_grammar_mode_on_reasoning_models(
    emu: LMStudioEmulator, front: Callable[..., Model], form: str
) -> None:
    emu.script(FORMS[form], [ReasoningReply("AB-123", REASONING)] * 2)
    model = front(FORMS[form], grammar=True)
    pattern = Regex(r"[A-Z]{2}-[0-9]{3}")
    assert (await call(model, "generate", "Code?", pattern))[0] == "AB-123"
    got, reply = await call(model, "reply", "Code?", pattern)
    assert got == "AB-123"
    assert reply.reasoning == expected_reasoning(form)
    assert emu.predictions[-1].structured["type"] == "gbnf"  # type: ignore[index]


@pytest.mark.asyncio
@pytest.mark.parametrize("entry", ["generate", "stream", "parse", "parse_stream", "reply"])
@pytest.mark.parametrize("form", sorted(set(FORMS) - {"legacy"}))
async def test_budget_spent_on_reasoning_raises_a_clear_error(
    front: Callable[[str], Model], form: str, entry: str
) -> None:
    with pytest.raises(ReasoningTruncatedError) as info:
        await call(front(FORMS[form]), entry, "Who?", Person, max_tokens=8)
    error = info.value
    assert isinstance(error, TruncatedOutputError)
    assert "spent on reasoning" in str(error)
    assert "max_tokens" in str(error)
    assert error.predicted_tokens == 8
    assert error.reasoning  # what was thought before the stop


@pytest.mark.asyncio
@pytest.mark.parametrize("entry", ["generate", "stream", "parse", "parse_stream", "reply"])
@pytest.mark.parametrize("form", ["think", "marker", "marker-inline", "harmony"])
@pytest.mark.parametrize("max_tokens", [1, 2])
async def test_budget_spent_on_the_start_tag_is_spent_on_reasoning(
    emu: LMStudioEmulator,
    front: Callable[[str], Model],
    form: str,
    entry: str,
    max_tokens: int,
) -> None:
    """A reply cut just after ``<think>`` has no reasoning text yet, but it was thinking.

    It was once taken for an empty answer: ``generate`` returned ``""``, ``parse`` raised a
    plain `TruncatedOutputError` about an incomplete JSON document. The emulator's gpt-oss
    once sent nothing at all for one or two tokens (its analysis header was one fragment).
    """
    reasoning = "one two three" if max_tokens > 1 else REASONING
    emu.script(FORMS[form], [ReasoningReply(ANSWER, reasoning)])
    with pytest.raises(ReasoningTruncatedError, match="spent on reasoning") as info:
        await call(front(FORMS[form]), entry, "Who?", Person, max_tokens=max_tokens)
    assert info.value.predicted_tokens == max_tokens
    assert info.value.reasoning_tokens == max_tokens
    assert not any(token in info.value.reasoning for token in HARMONY_TOKENS)


@pytest.mark.asyncio
@pytest.mark.parametrize("entry", ["generate", "stream", "parse", "parse_stream", "reply"])
@pytest.mark.parametrize("max_tokens", [2, 3])
async def test_budget_spent_inside_an_untyped_harmony_header_is_spent_on_reasoning(
    emu: LMStudioEmulator, front: Callable[[str], Model], max_tokens: int, entry: str
) -> None:
    """Harmony sent as plain text, cut before the header's ``<|message|>``: no answer began.

    It was once taken for an empty answer: ``generate`` and ``reply`` returned ``""``.
    """
    key = "qwen2.5-7b-instruct"  # any model: the server sends gpt-oss's text untyped
    raw = "<|channel|>analysis<|message|>plan<|end|><|start|>assistant<|channel|>final"
    emu.script(key, [raw + "<|message|>" + ANSWER])
    with pytest.raises(ReasoningTruncatedError, match="spent on reasoning") as info:
        await call(front(key), entry, "Who?", Person, max_tokens=max_tokens)
    assert "max_tokens" in str(info.value)
    assert emu.predictions[-1].text.startswith("<|channel|>")  # cut inside the header
    assert "<|message|>" not in emu.predictions[-1].text
    assert info.value.predicted_tokens == max_tokens


@pytest.mark.asyncio
@pytest.mark.parametrize("entry", ["generate", "parse", "reply"])
async def test_empty_answer_after_reasoning_is_a_clear_error(
    emu: LMStudioEmulator, front: Callable[[str], Model], entry: str
) -> None:
    emu.script(FORMS["marker"], [ReasoningReply("", REASONING)])
    with pytest.raises(EmptyAnswerError, match="empty JSON answer"):
        await call(front(FORMS["marker"]), entry, "Who?", Person)


@pytest.mark.asyncio
async def test_a_re_asked_reply_with_no_answer_counts_every_attempt(
    emu: LMStudioEmulator, front: Callable[[str], Model]
) -> None:
    """``.attempts`` of an `EmptyAnswerError` on a re-ask counts the replies asked for."""
    key = FORMS["marker"]
    emu.script(key, [ReasoningReply('{"name": 1}', REASONING), ReasoningReply("", REASONING)])
    with pytest.raises(EmptyAnswerError) as info:
        await call(front(key), "parse", "Who?", Person, retries=3)
    assert (info.value.attempts, len(emu.predictions)) == (2, 2)
    # every attempt is kept with its reasoning, the one with no answer last (found by a
    # probe: it was left out, and what it spent with it)
    replies = info.value.replies
    assert [(r.text, r.reasoning) for r in replies] == [('{"name": 1}', REASONING), ("", REASONING)]
    assert [r.stats.predicted_tokens for r in replies] == predicted_counts(emu)


@pytest.mark.asyncio
@pytest.mark.parametrize("entry", ["parse", "parse_reply"])
@pytest.mark.parametrize("retries", [0, 2])
async def test_a_reply_with_no_answer_is_in_the_errors_replies(
    emu: LMStudioEmulator, front: Callable[[str], Model], entry: str, retries: int
) -> None:
    """Found by a probe: `EmptyAnswerError` and `ReasoningTruncatedError` had no
    ``replies``, so the tokens of a call that failed so were not in them."""
    key = FORMS["marker"]
    model: Any = front(key)
    emu.script(key, [ReasoningReply("", REASONING)])
    with pytest.raises(EmptyAnswerError) as empty:
        await resolve(getattr(model, entry)("Who?", Person, retries=retries))
    (reply,) = empty.value.replies
    assert (reply.text, reply.reasoning) == ("", REASONING)
    assert [reply.stats.predicted_tokens] == predicted_counts(emu)[-1:]
    assert reply.stats.reasoning_tokens == empty.value.reasoning_tokens
    emu.script(key, [ReasoningReply('{"name": "Ann"}', REASONING)])
    with pytest.raises(ReasoningTruncatedError) as cut:
        await resolve(getattr(model, entry)("Who?", Person, retries=retries, max_tokens=4))
    (reply,) = cut.value.replies
    assert reply.stats.stop_reason == "maxPredictedTokensReached"
    assert reply.stats.predicted_tokens == cut.value.predicted_tokens == 4


@pytest.mark.asyncio
async def test_reasoning_parsing_setting_reaches_the_server(
    emu: LMStudioEmulator, front: Callable[[str], Model]
) -> None:
    """With parsing off, LM Studio sends the tags as text: still only the answer."""
    script(emu, FORMS["think"], ANSWER, times=2)
    model: Any = front(FORMS["think"])
    off = {"enabled": False, "startString": "<think>", "endString": "</think>"}
    reply = await resolve(model.reply("Who?", Person, reasoning_parsing=off))
    assert (reply.text, reply.reasoning) == (ANSWER, REASONING)
    assert emu.predictions[-1].config["llm.prediction.reasoning.parsing"] == off
    assert "<think>" in emu.predictions[-1].text
    text = await resolve(model("Who?", Person, config={"reasoningParsing": off}))
    assert text == ANSWER


@pytest.mark.asyncio
async def test_untyped_marker_is_taken_out_of_the_answer(
    emu: LMStudioEmulator, front: Callable[[str], Model]
) -> None:
    """A server that types nothing and sends reasoning, marker, answer as plain text."""
    emu.script("qwen2.5-7b-instruct", [REASONING + SYNTHETIC_MARKER + ANSWER] * 2)
    model: Any = front("qwen2.5-7b-instruct")
    assert await resolve(model("Who?", Person)) == ANSWER
    reply = await resolve(model.reply("Who?", Person))
    assert (reply.text, reply.reasoning) == (ANSWER, REASONING)


@pytest.mark.asyncio
@pytest.mark.parametrize("entry", ["stream", "parse_stream", "reply_stream"])
@pytest.mark.parametrize("form", ["mlx", "think", "marker"])
async def test_control_text_inside_typed_reasoning_switches_nothing(
    emu: LMStudioEmulator, front: Callable[[str], Model], form: str, entry: str
) -> None:
    """Reasoning that *mentions* a Harmony final header or the marker stays reasoning.

    Typed ``reasoning`` fragments are never answer text: the draft after the mention once
    streamed out as answer (``'{"name{"name": "Ada", ...'``) before being taken back.
    """
    thinking = (
        "gpt-oss would write <|start|>assistant<|channel|>final<|message|>"
        '{"name": "Bob", "age": 1} then ' + SYNTHETIC_MARKER + '{"name": "Bob"'
    )
    emu.script(FORMS[form], [ReasoningReply(ANSWER, thinking)])
    got, reply = await call(front(FORMS[form]), entry, "Who?", Person)
    if entry == "parse_stream":
        assert got[-1] == Person(name="Ada", age=36)
        assert all("Bob" not in repr(partial) for partial in got)
    else:
        assert got == ANSWER
    if reply is not None:
        assert "Bob" in reply.reasoning
        assert not any(token in reply.reasoning for token in HARMONY_TOKENS)


class Note(BaseModel):
    text: str


@pytest.mark.asyncio
@pytest.mark.parametrize("entry", ["generate", "stream", "parse", "reply_stream"])
@pytest.mark.parametrize("form", ["none", "think", "marker", "harmony"])
async def test_harmony_tokens_in_an_answer_are_kept(
    emu: LMStudioEmulator, front: Callable[[str], Model], form: str, entry: str
) -> None:
    """A model may write Harmony's tokens and the think tags as text: they stay in.

    They were once removed from every answer (``{"text": ""}``, silently). In gpt-oss's own
    final message, ``<|start|>`` or ``<|channel|>final<|message|>`` in a JSON string once
    restarted the answer there, and the whole call and the stream disagreed.
    """
    answer = json.dumps(
        {
            "text": "gpt-oss ends with <|end|> and <|return|>; <|start|> opens, "
            "<|channel|>final<|message|> begins the answer, </think> ends a thought"
        }
    )
    key = FORMS.get(form, "qwen2.5-7b-instruct")
    emu.script(key, [ReasoningReply(answer, REASONING) if form != "none" else answer])
    got, _ = await call(front(key), entry, "Tokens?", Note)
    assert got == (Note.model_validate_json(answer) if entry == "parse" else answer)


@pytest.mark.parametrize("parsing", [None, "off"])
@pytest.mark.parametrize("structured", [False, True])
@pytest.mark.parametrize("form", sorted(FORMS))
def test_splitter_over_the_sdks_own_fragments(
    emu: LMStudioEmulator, form: str, structured: bool, parsing: str | None
) -> None:
    """The pure splitter, fed what the unmodified SDK yields, finds the scripted parts."""
    answer = ANSWER if structured else "Paris."
    emu.script(FORMS[form], [ReasoningReply(answer, REASONING)])
    config: dict[str, Any] = {}
    if parsing == "off":
        config["reasoningParsing"] = {
            "enabled": False,
            "startString": "<think>",
            "endString": "</think>",
        }
    splitter = ReasoningSplitter()
    with lms.Client(emu.api_host) as client:
        kw: dict[str, Any] = {"config": config}
        if structured:
            kw["response_format"] = Person
        stream = client.llm.model(FORMS[form]).respond_stream("Who?", **kw)
        chunks = [
            c
            for f in stream
            for c in splitter.feed(f.content, f.reasoning_type, tokens_count=f.tokens_count)
        ]
        chunks += splitter.close()
        stats = stream.result().stats
    thought = "" if form == "legacy" and structured else REASONING
    assert (splitter.answer, splitter.reasoning) == (answer, thought)
    assert "".join(c.text for c in chunks if not c.reasoning) == answer
    assert not splitter.retracted
    assert stats.predicted_tokens_count is not None
    assert splitter.reasoning_tokens <= stats.predicted_tokens_count
    assert (splitter.reasoning_tokens > 0) == bool(thought)
