"""The reasoning splitter, the reply stats and the reasoning-reply errors (pure code)."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from outlines_lmstudio import EmptyAnswerError, ReasoningTruncatedError, TruncatedOutputError
from outlines_lmstudio._reasoning import (
    HARMONY_TOKENS,
    SYNTHETIC_MARKER,
    ReasoningSplitter,
    json_openers,
    plain_reply,
    reply_problem,
)
from outlines_lmstudio._reply import ReplyChunk, ReplyStats, reply_stats

Fragment = tuple[str, str]


def split(
    fragments: list[Fragment], start_tag: str = "<think>", end_tag: str = "</think>"
) -> tuple[ReasoningSplitter, list[ReplyChunk]]:
    splitter = ReasoningSplitter(start_tag=start_tag, end_tag=end_tag)
    chunks: list[ReplyChunk] = []
    for content, kind in fragments:
        chunks += splitter.feed(content, kind)
    chunks += splitter.close()
    return splitter, chunks


def answer_of(chunks: list[ReplyChunk]) -> str:
    return "".join(c.text for c in chunks if not c.reasoning)


CASES: dict[str, tuple[list[Fragment], str, str]] = {
    "plain": ([("Hello", "none"), (" world", "none")], "Hello world", ""),
    "plain keeps leading space": ([("  hi", "none")], "  hi", ""),
    "typed think": (
        [
            ("<think>", "reasoningStartTag"),
            ("plan {a}", "reasoning"),
            ("</think>", "reasoningEndTag"),
            ('\n\n{"a": 1}', "none"),
        ],
        '{"a": 1}',
        "plan {a}",
    ),
    "marker as end tag": (
        [("plan", "reasoning"), (SYNTHETIC_MARKER, "reasoningEndTag"), ("{}", "none")],
        "{}",
        "plan",
    ),
    "marker inline, split": (
        [
            ("plan", "reasoning"),
            (SYNTHETIC_MARKER[:7], "none"),
            (SYNTHETIC_MARKER[7:40], "none"),
            (SYNTHETIC_MARKER[40:] + "[1", "none"),
            (", 2]", "none"),
        ],
        "[1, 2]",
        "plan",
    ),
    "marker with another build id": (
        [
            ("plan", "reasoning"),
            ("__LM_STUDIO_INTERNAL_LSEP_SYNTHETIC_REASONING_END_" + "0" * 32 + "__x", "none"),
        ],
        "x",
        "plan",
    ),
    "mlx channel": ([("plan", "reasoning"), ("\n42", "none")], "42", "plan"),
    "untyped think": (
        [("<th", "none"), ("ink>plan</th", "none"), ("ink>\n ok", "none")],
        "ok",
        "plan",
    ),
    "think mentioned later is answer": ([("say <think>", "none")], "say <think>", ""),
    "end tag after typed reasoning is answer": (
        [("plan", "reasoning"), ("a </think> b", "none")],
        "a </think> b",
        "plan",
    ),
    "second end tag is answer": (
        [("<think>p</think>", "none"), ("x </think>", "none")],
        "x </think>",
        "p",
    ),
    "harmony untyped": (
        [
            ("<|channel|>analysis<|mess", "none"),
            ("age|>plan {}<|end|><|start|>assistant<|chan", "none"),
            ("nel|>final<|message|>ans", "none"),
            ("wer<|return|>", "none"),
        ],
        "answer",
        "plan {}",
    ),
    "harmony constrain header": (
        [("<|channel|>final <|constrain|>json<|message|>{}", "none")],
        "{}",
        "",
    ),
    "held prefix released at the end": (
        [("a <", "none"), ("|x __LM_ST", "none")],
        "a <|x __LM_ST",
        "",
    ),
    "harmony tokens in a plain answer are answer text": (
        [('{"t": "<|e', "none"), ('nd|> <|start|>"}', "none")],
        '{"t": "<|end|> <|start|>"}',
        "",
    ),
    "harmony tokens in the answer after reasoning are answer text": (
        [("plan", "reasoning"), ("</think>", "reasoningEndTag"), ('["<|return|>", "<|ch', "none")],
        '["<|return|>", "<|ch',
        "plan",
    ),
    "harmony final header after typed reasoning": (
        [
            ("plan", "reasoning"),
            ("<|end|>", "reasoningEndTag"),
            (" <|start|>assistant<|channel|>final<|message|>", "none"),
            ('{"t": 1}<|return|>', "none"),
        ],
        '{"t": 1}',
        "plan",
    ),
    "harmony control text inside the final message is answer text": (
        [
            ("<|channel|>analysis<|message|>plan<|end|>", "none"),
            ("<|start|>assistant<|channel|>final<|message|>", "none"),
            ('{"t": "<|start|>assistant<|channel|>final<|mess', "none"),
            ("age|>x<|end|>y<|ret", "none"),
            ('urn|>"}<|return|>', "none"),
        ],
        '{"t": "<|start|>assistant<|channel|>final<|message|>x<|end|>y<|return|>"}',
        "plan",
    ),
    "harmony final message closed, then another message": (
        [
            (
                "<|channel|>final<|message|>draft<|end|>"
                "<|start|>assistant<|channel|>final<|message|>x<|return|>",
                "none",
            ),
        ],
        "x",
        "draft",
    ),
    "harmony typed, a control token in the final answer is answer text": (
        [
            ("<|channel|>analysis<|message|>", "reasoningStartTag"),
            ("plan", "reasoning"),
            ("<|end|>", "reasoningEndTag"),
            ("<|start|>assistant<|channel|>final<|message|>", "none"),
            ('{"note": "use <|channel|> then <|end|>"}', "none"),
        ],
        '{"note": "use <|channel|> then <|end|>"}',
        "plan",
    ),
    # found by mutation testing: the held "<|sta" lost a character when flushed
    "harmony final message closed, then cut inside the next header": (
        [
            ("<|channel|>analysis<|message|>think", "none"),
            ("<|end|><|start|>assistant<|channel|>final<|message|>", "none"),
            ("Paris", "none"),
            ("<|end|>", "none"),
            ("<|sta", "none"),
        ],
        "Paris<|sta",
        "think",
    ),
    "whitespace before reasoning is dropped": (
        [("\n", "none"), ("plan", "reasoning"), ("</think>", "reasoningEndTag"), ("x", "none")],
        "x",
        "plan",
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_split(name: str) -> None:
    fragments, answer, reasoning = CASES[name]
    splitter, chunks = split(fragments)
    assert splitter.answer == answer
    assert splitter.reasoning == reasoning
    assert answer_of(chunks) == answer
    assert "".join(c.text for c in chunks if c.reasoning) == reasoning
    assert not splitter.retracted
    assert all(c.text for c in chunks)


def test_chunks_are_released_as_soon_as_they_are_certain() -> None:
    splitter = ReasoningSplitter()
    states = [splitter.in_reasoning]
    assert splitter.feed("<think>", "reasoningStartTag") == []
    states.append(splitter.in_reasoning)
    assert splitter.feed("a", "reasoning") == [ReplyChunk("a", True)]
    assert splitter.feed("</think>", "reasoningEndTag") == []
    states.append(splitter.in_reasoning)
    assert states == [False, True, False]
    assert splitter.feed('{"x": "__LM', "none") == [ReplyChunk('{"x": "', False)]
    assert splitter.feed('"}', "none") == [ReplyChunk('__LM"}', False)]
    assert splitter.close() == []


def test_untyped_reasoning_before_a_marker_is_retracted() -> None:
    splitter, chunks = split([("thinking aloud ", "none"), (SYNTHETIC_MARKER + "{}", "none")])
    assert splitter.answer == "{}"
    assert splitter.reasoning == "thinking aloud "
    assert splitter.retracted
    assert chunks[0] == ReplyChunk("thinking aloud ", False)  # could not be known then


@pytest.mark.parametrize("end", ["</think>", SYNTHETIC_MARKER])
def test_untyped_reasoning_in_the_fragment_that_ends_it_goes_out_as_reasoning(end: str) -> None:
    """A fragment of several tokens (speculative decoding) may hold reasoning, end and answer.

    The reasoning once went out as answer, in one chunk with it (``'plan {a}{}'``), though
    nothing of it had been handed out before.
    """
    splitter, chunks = split([("plan {a}" + end + "\n\n{}", "none")])
    assert chunks == [ReplyChunk("plan {a}", True), ReplyChunk("{}", False)]
    assert (splitter.reasoning, splitter.answer, splitter.retracted) == ("plan {a}", "{}", False)
    splitter, chunks = split([("plan ", "none"), ("{a}" + end + "{}", "none")])
    assert chunks == [
        ReplyChunk("plan ", False),  # handed out before the end showed: cannot be taken back
        ReplyChunk("{a}", True),
        ReplyChunk("{}", False),
    ]
    assert splitter.retracted


def test_a_model_that_thinks_again_after_answering_keeps_the_last_answer() -> None:
    """The documented decision (docs/reasoning.md): answer text followed by a second typed
    think block is moved to the reasoning; what `stream` gave of it stays given."""
    splitter, chunks = split(
        [
            ("<think>", "reasoningStartTag"),
            ("plan", "reasoning"),
            ("</think>", "reasoningEndTag"),
            ("Part one. ", "none"),
            ("<think>", "reasoningStartTag"),
            ("more", "reasoning"),
            ("</think>", "reasoningEndTag"),
            ("Part two.", "none"),
        ]
    )
    assert (splitter.answer, splitter.reasoning) == ("Part two.", "planPart one. more")
    assert splitter.retracted
    assert answer_of(chunks) == "Part one. Part two."


def test_bare_end_tag_closes_reasoning_opened_in_the_prompt() -> None:
    splitter, chunks = split([("plan {a}</th", "none"), ("ink>\n\n{}", "none")])
    assert (splitter.reasoning, splitter.answer) == ("plan {a}", "{}")
    assert splitter.retracted  # "plan {a}" streamed as answer before the tag showed
    assert chunks[-1] == ReplyChunk("{}", False)


@pytest.mark.parametrize(
    "pieces",
    [
        ["Wrap the notes in <think> and </think> tags."],
        ["Wrap the notes in <thi", "nk> and </th", "ink> tags."],
        ["answer <think>x</think>"],
    ],
)
def test_an_answer_that_writes_the_start_tag_keeps_the_end_tag_as_text(
    pieces: list[str],
) -> None:
    """Found by a probe: the bare end tag closed "reasoning" that was answer text naming
    the tags ("tags." was the answer, and "answer <think>x</think>" had none)."""
    splitter, _ = split([(p, "none") for p in pieces])
    assert (splitter.reasoning, splitter.answer) == ("", "".join(pieces))
    assert not splitter.retracted


@pytest.mark.parametrize("opener", ['{"a": "', '  [{"a": "'])
def test_a_json_answer_keeps_a_bare_end_tag_as_text(opener: str) -> None:
    pieces = [opener + "x</th", 'ink> y"}' + ("]" if "[" in opener else "")]
    splitter = ReasoningSplitter(json_answer=True)
    chunks = [c for p in pieces for c in splitter.feed(p, "none")] + splitter.close()
    assert splitter.answer == "".join(pieces)
    assert (splitter.reasoning, splitter.retracted) == ("", False)
    assert answer_of(chunks) == splitter.answer
    plain = ReasoningSplitter()  # not asked for JSON: the documented bare-tag rule
    for p in pieces:
        plain.feed(p, "none")
    plain.close()
    assert plain.retracted


def test_a_json_answer_after_untyped_reasoning_still_splits_at_a_bare_end_tag() -> None:
    splitter = ReasoningSplitter(json_answer=True)
    for piece in ("plan {a}</th", "ink>\n\n{}"):
        splitter.feed(piece, "none")
    splitter.close()
    assert (splitter.reasoning, splitter.answer) == ("plan {a}", "{}")


def test_structural_text_is_never_given_out() -> None:
    splitter = ReasoningSplitter()
    chunks = splitter.feed("<|channel|>analysis<|message|>", "reasoningStartTag", structural=True)
    chunks += splitter.feed("plan", "reasoning", tokens_count=1)
    chunks += splitter.feed("<|end|>", "reasoningEndTag", structural=True)
    chunks += splitter.feed(
        "<|start|>assistant<|channel|>final<|message|>", "none", structural=True
    )
    chunks += splitter.feed("ok", "none", tokens_count=1)
    chunks += splitter.close()
    assert chunks == [ReplyChunk("plan", True), ReplyChunk("ok", False)]
    assert splitter.reasoning_tokens == 1


@pytest.mark.parametrize(
    "mention",
    [
        "<|start|>assistant<|channel|>final<|message|>",
        "<|channel|>final<|message|>",
        SYNTHETIC_MARKER,
    ],
)
def test_control_text_inside_typed_reasoning_is_still_reasoning(mention: str) -> None:
    fragments = [("plan ", "reasoning"), (mention + "draft", "reasoning"), (" more", "reasoning")]
    splitter, chunks = split([*fragments, ("ok", "none")])
    assert [c for c in chunks if not c.reasoning] == [ReplyChunk("ok", False)]
    assert splitter.answer == "ok"
    assert splitter.reasoning.startswith("plan ")
    assert splitter.reasoning.endswith("draft more")
    assert not splitter.retracted


@pytest.mark.parametrize("cut", [0, 1, 5])
def test_typed_reasoning_that_ends_an_untyped_final_header_is_still_reasoning(cut: int) -> None:
    """A final-channel header begun in untyped text and ended in a typed reasoning fragment.

    The typed fragment's text after the header's ``<|message|>`` became answer text (and the
    answer that followed was appended to it); cut differently (its last characters in a
    fragment of their own) the same text was reasoning.
    """
    typed = "assistant<|channel|>final<|message|>draft <|end|>{x}"
    head, tail = typed[: len(typed) - cut], typed[len(typed) - cut :]
    typed_fragments = [(head, "reasoning")] + ([(tail, "reasoning")] if tail else [])
    splitter, chunks = split([("<|start|>", "none"), *typed_fragments, ("ok", "none")])
    assert (splitter.answer, splitter.reasoning) == ("ok", "draft {x}")
    assert [c for c in chunks if not c.reasoning] == [ReplyChunk("ok", False)]
    assert not splitter.retracted


def test_reasoning_tokens_count_typed_and_untyped_reasoning() -> None:
    splitter = ReasoningSplitter()
    splitter.feed("<think>", "none", tokens_count=1)
    splitter.feed("a b", "none", tokens_count=2)
    splitter.feed("</think>", "none", tokens_count=1)
    splitter.feed("ok", "none", tokens_count=1)
    splitter.close()
    assert (splitter.reasoning, splitter.answer, splitter.reasoning_tokens) == ("a b", "ok", 4)


@pytest.mark.parametrize("end", ["</think>", SYNTHETIC_MARKER])
def test_reasoning_tokens_count_untyped_reasoning_taken_back(end: str) -> None:
    """Untyped reasoning streamed as answer until its end showed is counted as reasoning.

    Only the fragment of the end tag was counted (1 of 4).
    """
    splitter = ReasoningSplitter()
    for piece in ("plan", " {a}", " more", end, "\n\n{}", " "):
        splitter.feed(piece, "none", tokens_count=1)
    splitter.close()
    assert (splitter.reasoning, splitter.answer) == ("plan {a} more", "{} ")
    assert splitter.reasoning_tokens == 4
    splitter = ReasoningSplitter(json_answer=True)  # an answer never taken back: none
    for piece in ('{"a": "', "</think>", '"}'):
        splitter.feed(piece, "none", tokens_count=1)
    splitter.close()
    assert (splitter.answer, splitter.reasoning_tokens) == ('{"a": "</think>"}', 0)


@pytest.mark.parametrize(
    "pieces",
    [
        ["<", "think>", "plan", "</think>", "ok"],  # the start tag cut across fragments
        ["\n", "<think>", "plan", "</think>", "ok"],  # whitespace before the start tag
        ["plan", "</", "think>", "ok"],  # a bare end tag cut across fragments
        ["</think>", "ok"],  # a bare end tag: its tokens are the tag's, not the answer's
    ],
)
def test_reasoning_tokens_count_every_fragment_of_tags_and_reasoning(pieces: list[str]) -> None:
    """Every fragment before the answer is reasoning or its tags: none is lost or answer.

    Fragments held back as the start of a tag, or whitespace, counted as answer and were then
    dropped when reasoning began (``<`` + ``think>`` counted 4 of 5); a lone bare end tag
    counted as answer.
    """
    splitter = ReasoningSplitter()
    for piece in pieces:
        splitter.feed(piece, "none", tokens_count=1)
    splitter.close()
    assert splitter.answer == "ok"
    assert splitter.reasoning_tokens == len(pieces) - 1


@pytest.mark.parametrize("end", ["</think>", SYNTHETIC_MARKER])
def test_a_fragment_that_ends_untyped_reasoning_and_begins_the_answer_is_answer(end: str) -> None:
    """Its tokens are the answer's, as when the reasoning opened with ``<think>``.

    The answer pieces were counted before and after the retraction in that fragment: the
    answer's first piece did not look new (1 piece before, 1 after), and the fragment was
    counted as reasoning.
    """
    for opening in ("", "<think>"):
        splitter = ReasoningSplitter()
        for piece in (opening + "plan", " more", end + '{"a"', ": 1}"):
            splitter.feed(piece, "none", tokens_count=1)
        splitter.close()
        assert (splitter.reasoning, splitter.answer) == ("plan more", '{"a": 1}')
        assert splitter.reasoning_tokens == 2, opening


def test_custom_reasoning_tags() -> None:
    splitter, _ = split([("[R]x[/R]y", "none")], start_tag="[R]", end_tag="[/R]")
    assert (splitter.reasoning, splitter.answer) == ("x", "y")


@pytest.mark.parametrize("start_tag", ["\n<think>", " <think>\n"])
@pytest.mark.parametrize("step", [1, 3, 100])
def test_a_start_tag_with_leading_whitespace_opens_the_reply(start_tag: str, step: int) -> None:
    """The start tag is looked for after the reply's leading whitespace, its own included.

    A reply opening with ``"\n<think>"`` did not open reasoning: the tag was kept in the
    reasoning (taken back only at the bare end tag), and a reply cut before its end tag was
    all answer.
    """
    for text, reasoning, answer in [
        (start_tag + "plan</think>ok", "plan", "ok"),
        (start_tag + "plan", "plan", ""),
    ]:
        fragments = [(text[i : i + step], "none") for i in range(0, len(text), step)]
        splitter, _ = split(fragments, start_tag=start_tag)
        assert (splitter.reasoning.strip(), splitter.answer) == (reasoning, answer)
        assert not plain_reply(text, start_tag, "</think>")


def test_unclosed_think_ends_in_reasoning() -> None:
    splitter, chunks = split([("<think>still going", "none")])
    assert splitter.in_reasoning
    assert splitter.answer == ""
    assert chunks == [ReplyChunk("still going", True)]


def test_feed_after_close_and_empty_tags_are_refused() -> None:
    splitter = ReasoningSplitter()
    splitter.close()
    with pytest.raises(RuntimeError):
        splitter.feed("x", "none")
    with pytest.raises(ValueError, match="non-empty"):
        ReasoningSplitter(start_tag="")


def test_reply_stats_from_sdk_struct_and_dict() -> None:
    import lmstudio as lms

    wire = {
        "stopReason": "eosFound",
        "promptTokensCount": 5,
        "predictedTokensCount": 7,
        "timeToFirstTokenSec": 0.5,
        "tokensPerSecond": 12.0,
    }
    expected = ReplyStats("eosFound", 5, 7, 3, 0.5, 0.9, 12.0)
    struct = lms.LlmPredictionStats(
        stop_reason="eosFound",
        prompt_tokens_count=5,
        predicted_tokens_count=7,
        time_to_first_token_sec=0.5,
        tokens_per_second=12.0,
    )
    for stats in (wire, struct):
        assert reply_stats(stats, reasoning_tokens=3, time_to_first_answer_token=0.9) == expected
    assert reply_stats(None) == ReplyStats()
    assert reply_stats({"stop_reason": "userStopped"}).stop_reason == "userStopped"


def test_reply_stats_keep_the_model_and_the_draft_figures() -> None:
    """Found by a probe: which model answered, and the SDK's draft figures, were dropped."""
    import lmstudio as lms

    struct = lms.LlmPredictionStats(
        stop_reason="eosFound",
        total_tokens_count=12,
        used_draft_model_key="small",
        total_draft_tokens_count=9,
        accepted_draft_tokens_count=5,
        rejected_draft_tokens_count=3,
        ignored_draft_tokens_count=1,
    )
    wire = struct.to_dict()
    for stats in (wire, struct):
        got = reply_stats(stats, model_key="big", identifier="big:2")
        assert (got.model_key, got.identifier, got.total_tokens) == ("big", "big:2", 12)
        assert got.draft_model_key == "small"
        drafts = (got.accepted_draft_tokens, got.rejected_draft_tokens, got.ignored_draft_tokens)
        assert (got.draft_tokens, *drafts) == (9, 5, 3, 1)


def test_budget_spent_on_reasoning() -> None:
    stats = ReplyStats("maxPredictedTokensReached", 10, 64, 64)
    error = reply_problem("", "thinking...", stats, structured=True)
    assert isinstance(error, ReasoningTruncatedError)
    assert isinstance(error, TruncatedOutputError)
    assert isinstance(error, ValueError)
    message = str(error)
    assert "spent on reasoning" in message
    assert "64 tokens predicted, 64 of them reasoning" in message
    assert "Raise max_tokens (for example to 1024)" in message
    # found by a probe: "turn the model's thinking down or off", which no setting of the
    # Python SDK (nor of this library) can do
    assert "or use a model (or an LM Studio model setting) without thinking;" in message
    assert "turn" not in message
    assert error.reasoning == "thinking..."
    assert (error.reasoning_tokens, error.predicted_tokens) == (64, 64)
    context = reply_problem("", "x", ReplyStats("contextLengthReached"), structured=False)
    assert isinstance(context, ReasoningTruncatedError)
    assert "context length" in str(context)
    assert "token counts not reported" in str(context)
    full = reply_problem(
        "", "x", ReplyStats("contextLengthReached", 32700, 68, 68), structured=False
    )
    # Found by a probe: "for example to 1024" for a 32,768-token context (4 x the reply).
    assert "context length (LM Studio's load setting) (above 32768, the tokens it held)" in str(
        full
    )


@pytest.mark.parametrize("reasoning", ["", "\n"])
def test_a_reply_cut_inside_its_reasoning_without_text_spent_its_budget(reasoning: str) -> None:
    splitter = ReasoningSplitter()
    splitter.feed("<think>", "reasoningStartTag", tokens_count=1)
    if reasoning:
        splitter.feed(reasoning, "reasoning", tokens_count=1)
    splitter.close()
    assert splitter.in_reasoning
    stats = ReplyStats("maxPredictedTokensReached", 5, 1 + len(reasoning))
    error = reply_problem(
        splitter.answer, splitter.reasoning, stats, structured=True, in_reasoning=True
    )
    assert isinstance(error, ReasoningTruncatedError)
    assert error.reasoning == reasoning
    stopped = reply_problem("", "", ReplyStats("eosFound"), structured=False, in_reasoning=True)
    assert isinstance(stopped, EmptyAnswerError)
    assert reply_problem("", "", stats, structured=True) is None  # no sign of reasoning


@pytest.mark.parametrize(
    "fragments",
    [
        ["<|channel|>"],
        ["<|channel|>", "analysis"],
        ["<|start|>", "assistant", "<|channel|>", "final"],
        ["<|channel|>final <|constrain|>", "json"],
    ],
)
def test_a_reply_cut_inside_a_harmony_header_spent_its_budget(fragments: list[str]) -> None:
    """A reply whose budget ran out in its first Harmony header stopped before its answer.

    It was once taken for an empty answer: ``generate`` returned ``""``.
    """
    splitter = ReasoningSplitter()
    for content in fragments:
        assert splitter.feed(content, "none", tokens_count=1) == []
    assert splitter.close() == []
    assert splitter.in_header
    assert not splitter.in_reasoning
    assert (splitter.answer, splitter.reasoning) == ("", "")
    assert splitter.reasoning_tokens == len(fragments)  # control text, as typed tags count
    n = len(fragments)
    error = reply_problem(
        "",
        "",
        ReplyStats("maxPredictedTokensReached", 5, n, splitter.reasoning_tokens),
        structured=False,
        in_reasoning=splitter.in_reasoning or splitter.in_header,
    )
    assert isinstance(error, ReasoningTruncatedError)
    assert f"{n} tokens predicted, {n} of them reasoning" in str(error)
    assert "Raise max_tokens" in str(error)


def test_empty_answer_after_reasoning() -> None:
    error = reply_problem(" \n", "thinking", ReplyStats("eosFound", 1, 9, 8), structured=False)
    assert isinstance(error, EmptyAnswerError)
    assert not isinstance(error, TruncatedOutputError)
    assert "empty answer" in str(error)
    assert "9 tokens predicted, 8 of them reasoning" in str(error)
    # found by a probe: the model ended the reply itself, so no budget is to be raised
    assert "Ask for the answer explicitly in the prompt, or use a model" in str(error)
    assert "max_tokens" not in str(error)
    unknown = reply_problem("", "thinking", ReplyStats(None), structured=False)
    assert "raise max_tokens" in str(unknown)  # no stop reason: the budget may have ended it


def test_a_stop_string_inside_the_reasoning_says_so() -> None:
    """It was told to ask for the answer in the prompt or raise max_tokens: no help."""
    stats = ReplyStats("stopStringFound", 1, 3, 3)
    error = reply_problem("", "Hmm", stats, structured=True, in_reasoning=True)
    assert isinstance(error, EmptyAnswerError)
    assert "A stop string ended the reply inside the reasoning" in str(error)
    assert "Drop it from stop=" in str(error)
    assert error.stop_reason == "stopStringFound"
    after = reply_problem("", "Hmm", stats, structured=True)  # after the reasoning ended
    assert isinstance(after, EmptyAnswerError)
    assert "wrote an empty JSON answer" in str(after)
    # found by a probe: told to raise max_tokens, which cannot help after a stop string
    assert "Drop the stop string that ended it from stop=" in str(after)
    assert "max_tokens" not in str(after)


@pytest.mark.parametrize(
    ("answer", "reasoning", "stop"),
    [
        ("{}", "x", "maxPredictedTokensReached"),  # there is an answer: parse judges it
        ("", "", "maxPredictedTokensReached"),  # no reasoning: not ours to judge
        ("", "x", "userStopped"),  # the caller cancelled
    ],
)
def test_no_reasoning_problem(answer: str, reasoning: str, stop: str) -> None:
    assert reply_problem(answer, reasoning, ReplyStats(stop), structured=True) is None


# -- property: whatever the reasoning holds and however it is cut, the answer is exact --------

_pieces = st.one_of(
    st.text(alphabet='{}[]":, abc<>|/_\n', max_size=12),
    st.sampled_from(['{"name": "draft", "age": 1}', "[1, 2", "}", "{", "<think", "</thi", "<|"]),
    st.integers(1, len(SYNTHETIC_MARKER) - 3).map(lambda k: SYNTHETIC_MARKER[:k]),
)
reasonings = st.lists(_pieces, max_size=6).map("".join)
answers = st.one_of(
    st.sampled_from(['{"name": "Ada", "age": 36}', "42", "pos", "[]", "x"]),
    st.text(alphabet='{}"ab:1 _<', min_size=1, max_size=10).filter(lambda t: not t[0].isspace()),
)


def _forms(reasoning: str, answer: str) -> dict[str, list[Fragment]]:
    m = SYNTHETIC_MARKER
    return {
        "typed think": [
            ("<think>", "reasoningStartTag"),
            (reasoning, "reasoning"),
            ("</think>", "reasoningEndTag"),
            ("\n\n" + answer, "none"),
        ],
        "marker typed": [(reasoning, "reasoning"), (m, "reasoningEndTag"), (answer, "none")],
        "marker inline": [(reasoning, "reasoning"), (m + answer, "none")],
        "marker untyped": [(reasoning + m + answer, "none")],
        "untyped think": [("<think>" + reasoning + "</think>\n" + answer, "none")],
        "untyped end tag only": [(reasoning + "</think>\n\n" + answer, "none")],
        "mlx": [(reasoning, "reasoning"), (answer, "none")],
        "harmony": [
            (
                "<|channel|>analysis<|message|>" + reasoning + "<|end|>"
                "<|start|>assistant<|channel|>final<|message|>" + answer + "<|return|>",
                "none",
            )
        ],
    }


def _cut(fragments: list[Fragment], cuts: list[int]) -> list[Fragment]:
    """Cut each fragment's text at the given positions (modulo its length)."""
    out: list[Fragment] = []
    for content, kind in fragments:
        points = sorted({c % (len(content) + 1) for c in cuts})
        edges = [0, *points, len(content)]
        out += [(content[a:b], kind) for a, b in itertools.pairwise(edges) if b > a]
    return out


@settings(max_examples=400, deadline=None)
@given(
    reasoning=reasonings,
    answer=answers,
    cuts=st.lists(st.integers(0, 200), max_size=8),
    form=st.sampled_from(sorted(_forms("", ""))),
)
def test_answer_is_always_the_final_answer(
    reasoning: str, answer: str, cuts: list[int], form: str
) -> None:
    # What no text can hold without being a control sequence itself:
    assume(SYNTHETIC_MARKER not in reasoning + SYNTHETIC_MARKER[:-1])
    # Nor a marker of another build (any 32 hex digits), which the next "__" would finish:
    # a prefix of the marker cut in its digits, then a hex digit, drew one (seen once here).
    assume(not re.search(re.escape(SYNTHETIC_MARKER[:-34]) + "[0-9a-f]{32}", reasoning))
    assume(not any(t in reasoning or t in answer for t in HARMONY_TOKENS))
    untyped = form in ("untyped think", "untyped end tag only", "marker untyped")
    assume(not untyped or "</think>" not in reasoning + "</think>"[:-1])
    assume(not untyped or not reasoning.lstrip().startswith("<think>"))
    assume(form != "untyped end tag only" or "</think>" not in answer)
    # By design a start tag written after other text is a mention of the tags, and so is the
    # end tag after it (see `_reasoning`'s docstring): no bare end tag ends reasoning then.
    assume(form != "untyped end tag only" or "<think>" not in reasoning)
    splitter, chunks = split(_cut(_forms(reasoning, answer)[form], cuts))
    assert splitter.answer == answer
    assert splitter.reasoning == reasoning
    assert not splitter.in_reasoning
    if not splitter.retracted:
        assert answer_of(chunks) == answer
    else:  # only untyped reasoning needs taking back
        assert form in ("marker untyped", "untyped end tag only")


_TYPED_FORMS = ["typed think", "marker typed", "marker inline", "mlx"]
_control_pieces = st.sampled_from(
    [*HARMONY_TOKENS, "<|start|>assistant<|channel|>final<|message|>", SYNTHETIC_MARKER]
)


@settings(max_examples=300, deadline=None)
@given(
    reasoning=st.lists(_pieces | _control_pieces, max_size=6).map("".join),
    answer=answers,
    cuts=st.lists(st.integers(0, 200), max_size=8),
    form=st.sampled_from(_TYPED_FORMS),
)
def test_typed_reasoning_never_reaches_the_answer_whatever_it_holds(
    reasoning: str, answer: str, cuts: list[int], form: str
) -> None:
    assume(not any(t in answer for t in HARMONY_TOKENS))
    splitter, chunks = split(_cut(_forms(reasoning, answer)[form], cuts))
    assert answer_of(chunks) == splitter.answer == answer
    assert not splitter.retracted
    assert not splitter.in_reasoning


@settings(max_examples=200, deadline=None)
@given(
    answer=answers
    | st.text(max_size=20)
    | st.builds(lambda a, t, b: a + t + b, answers, st.sampled_from(HARMONY_TOKENS), answers),
    cuts=st.lists(st.integers(0, 50), max_size=6),
)
def test_no_reasoning_keeps_the_text_exactly(answer: str, cuts: list[int]) -> None:
    assume(SYNTHETIC_MARKER not in answer)
    assume(not answer.lstrip().startswith("<think>"))  # documented: that opens reasoning
    # Documented: a Harmony header opening the reply makes it Harmony; later, it is text.
    assume(not answer.lstrip().startswith(("<|start|>", "<|channel|>")))
    assume("</think>" not in answer)  # documented: a bare end tag closes reasoning
    splitter, chunks = split(_cut([(answer, "none")], cuts))
    assert answer_of(chunks) == splitter.answer == answer
    assert splitter.reasoning == ""


@settings(max_examples=300, deadline=None)
@given(
    text=st.one_of(
        reasonings,
        answers,
        st.text(alphabet='<>/|_thinkL "{}\n', max_size=30),
        st.builds(
            lambda a, b: a + b,
            answers,
            st.sampled_from(["</think>", "<|end|>", "<|start|>x", "<|channel|>final", " "]),
        ),
    ),
    cuts=st.lists(st.integers(0, 60), max_size=6),
)
def test_a_plain_reply_splits_in_one_piece_as_in_many(text: str, cuts: list[int]) -> None:
    """`plain_reply` vouches that a whole reply is all answer, however it is cut."""
    assume(plain_reply(text, "<think>", "</think>"))
    whole = ReasoningSplitter()
    pieces = _cut([(text, "none")], cuts)
    tokens = [len(content) for content, _ in pieces]
    one = whole.feed(text, "none", tokens_count=sum(tokens)) + whole.close()
    many = ReasoningSplitter()
    chunks = [
        c
        for (content, kind), n in zip(pieces, tokens, strict=True)
        for c in many.feed(content, kind, tokens_count=n)
    ]
    chunks += many.close()
    assert (whole.answer, whole.reasoning, whole.reasoning_tokens) == (text, "", 0)
    assert (many.answer, many.reasoning, many.reasoning_tokens) == (text, "", 0)
    assert answer_of(one) == answer_of(chunks) == text


def test_plain_reply_refuses_what_may_be_reasoning() -> None:
    think = ("<think>", "</think>")
    assert plain_reply('{"a_b": "<x>"}', *think)
    assert plain_reply("  \n", *think)
    assert plain_reply("a<|end|>", *think)  # Harmony control text opens a reply or is text
    for text in ("  <think>x</think>y", "<", "x</think>y", SYNTHETIC_MARKER + "x"):
        assert not plain_reply(text, *think), text
    assert not plain_reply(" <|channel|>final<|message|>x", "[T]", "[/T]")
    assert plain_reply("<think>x", "[T]", "[/T]")
    assert not plain_reply("[x", "[T]", "[/T]")
    assert not plain_reply("x[/T]y", "[T]", "[/T]")


@pytest.mark.parametrize(
    ("schema", "openers"),
    [
        ({"type": "object"}, "{"),
        ({"type": "array"}, "["),
        ({"type": "string"}, '"'),
        ({"type": ["object", "null"]}, "{"),
        ({"type": "integer"}, ""),
        ({"anyOf": [{"type": "object"}, {"type": "string"}]}, '{["'),
        ({"$ref": "#/$defs/Node"}, '{["'),
        (None, '{["'),
    ],
)
def test_json_openers_follow_the_root_type(schema: Any, openers: str) -> None:
    assert json_openers(schema) == frozenset(openers)


def test_untyped_reasoning_opening_with_a_quote_is_reasoning_before_an_object() -> None:
    """Found by a probe: reasoning that quotes the question (``"Who is Ada?" The user...``)
    was taken as the JSON answer's start for an object schema, so its ``</think>`` stayed in
    the answer; only a string-rooted answer opens with a quote."""
    reply = '"Who is Ada?" The user wants JSON.</think>\n\n{"name": "Ada"}'
    split = ReasoningSplitter(json_answer=True, json_openers=json_openers({"type": "object"}))
    split.feed(reply, "none")
    split.close()
    assert split.answer == '{"name": "Ada"}'
    as_string = ReasoningSplitter(json_answer=True, json_openers=json_openers({"type": "string"}))
    as_string.feed('"a </think> b"', "none")
    as_string.close()
    assert as_string.answer == '"a </think> b"'  # a string answer: its end tag is its text


@pytest.mark.parametrize(
    ("fragments", "answer", "reasoning"),
    [
        ([("<think>plan</think>ok", "none")], "<think>plan</think>ok", ""),
        ([("plan</think>\n\nok", "none")], "plan</think>\n\nok", ""),
        ([("plan", "reasoning"), ("\n\nok", "none")], "ok", "plan"),
        ([("plan" + SYNTHETIC_MARKER + "ok", "none")], "ok", "plan"),
    ],
    ids=["think block", "bare end tag", "typed reasoning", "marker"],
)
def test_without_untyped_tags_only_what_the_server_marks_is_reasoning(
    fragments: list[tuple[str, str]], answer: str, reasoning: str
) -> None:
    """A raw completion (the CLI's ``complete``) continues the prompt's text as is."""
    splitter = ReasoningSplitter(untyped_tags=False)
    for content, kind in fragments:
        splitter.feed(content, kind)
    splitter.close()
    assert (splitter.answer, splitter.reasoning) == (answer, reasoning)
