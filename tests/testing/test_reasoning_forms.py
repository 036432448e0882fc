"""The emulator's reasoning models, seen through the real SDK (and the pure layout)."""

from __future__ import annotations

import json
from typing import Any

import lmstudio as lms
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from outlines_lmstudio import ReasoningTruncatedError
from outlines_lmstudio._reasoning import ReasoningSplitter, reply_problem
from outlines_lmstudio._reply import ReplyStats
from outlines_lmstudio.testing import (
    EmulatedModel,
    Fault,
    LMStudioEmulator,
    ReasoningReply,
    default_models,
    reasoning_models,
)
from outlines_lmstudio.testing._engine import Fragment
from outlines_lmstudio.testing._reasoning_forms import (
    FORMS,
    SYNTHETIC_MARKER,
    shape_reply,
    write_reasoning,
)
from outlines_lmstudio.testing._sampler import split_fragments
from outlines_lmstudio.testing._tag_parsing import REASONING_PARSING
from tests.reasoning_emulator import fresh_reasoning_emulator, reasoning_emulator  # noqa: F401

MODELS = {m.reasoning: m.key for m in reasoning_models()}
SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}
ANSWER = '{"name": "Ada", "age": 36}'


def fragments(model: Any, prompt: str, **kw: Any) -> tuple[list[tuple[str, str]], Any]:
    stream = model.respond_stream(prompt, **kw)
    got = [(f.content, f.reasoning_type) for f in stream]
    return got, stream.result()


def kinds(got: list[tuple[str, str]]) -> list[str]:
    """The reasoning types in order, runs collapsed."""
    out: list[str] = []
    for _, kind in got:
        if not out or out[-1] != kind:
            out.append(kind)
    return out


def test_every_form_has_a_catalogue_model() -> None:
    assert set(MODELS) == set(FORMS)
    assert all(m.loaded for m in reasoning_models())
    assert not {m.key for m in reasoning_models()} & {m.key for m in default_models()}
    with pytest.raises(ValueError, match="unknown reasoning form 'nope'; use one of think"):
        EmulatedModel("x", reasoning="nope")
    with pytest.raises(ValueError, match="unknown reasoning form"):
        ReasoningReply("a", "b", form="nope")


@pytest.mark.parametrize(("answer", "reasoning"), [(42, "b"), ("a", None), (b"a", "b")])
def test_a_reasoning_reply_of_no_text_is_refused_when_made(answer: Any, reasoning: Any) -> None:
    """It was taken, and the request that used it failed inside the emulator with a bare
    ``TypeError("expected string or bytes-like object")``."""
    with pytest.raises(TypeError, match=r"ReasoningReply\.(answer|reasoning) must be a string"):
        ReasoningReply(answer, reasoning)


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ("think", ["reasoningStartTag", "reasoning", "reasoningEndTag", "none"]),
        ("legacy", ["reasoningStartTag", "reasoning", "reasoningEndTag", "none"]),
        ("marker", ["reasoningStartTag", "reasoning", "reasoningEndTag", "none"]),
        ("marker-inline", ["reasoningStartTag", "reasoning", "none"]),
        ("mlx", ["reasoning", "none"]),
        ("harmony", ["reasoningStartTag", "reasoning", "reasoningEndTag", "none"]),
    ],
)
def test_plain_reply_of_each_form(client: lms.Client, form: str, expected: list[str]) -> None:
    model = client.llm.model(MODELS[form])
    got, result = fragments(model, "Tell me about rivers")
    assert kinds(got) == expected
    assert result.content == "".join(c for c, _ in got)  # the SDK joins everything
    reasoning = "".join(c for c, k in got if k == "reasoning")
    assert "A first draft: {" in reasoning
    assert result.stats.stop_reason == "eosFound"
    tags = [c for c, k in got if k in ("reasoningStartTag", "reasoningEndTag")]
    if form == "harmony":
        assert tags == ["<|channel|>", "analysis", "<|message|>", "<|end|>"]
        assert "<|start|>assistant<|channel|>final<|message|>" in result.content
    elif form == "marker":
        assert tags == ["<think>", SYNTHETIC_MARKER]
    elif form == "marker-inline":
        assert tags == ["<think>"]
        first_answer = next(c for c, k in got if k == "none")
        assert first_answer.startswith(SYNTHETIC_MARKER)
        assert len(first_answer) > len(SYNTHETIC_MARKER)
    elif form in ("think", "legacy"):
        assert tags == ["<think>", "</think>"]


@pytest.mark.parametrize("form", sorted(FORMS))
def test_structured_reply_of_each_form(client: lms.Client, form: str) -> None:
    model = client.llm.model(MODELS[form])
    got, result = fragments(model, "Who?", response_format=SCHEMA)
    answer = "".join(c for c, k in got if k == "none")
    if form == "legacy":  # the schema constrains from the first token: no reasoning
        assert kinds(got) == ["none"]
    else:
        assert "reasoning" in kinds(got)
    answer = answer.removeprefix(SYNTHETIC_MARKER).removeprefix("\n\n")
    answer = answer.removeprefix("<|start|>assistant<|channel|>final<|message|>")
    value = json.loads(answer)
    assert set(value) == {"name", "age"}
    draft = "".join(c for c, k in got if k == "reasoning")
    if form != "legacy":  # a JSON-looking draft, shaped like the answer, with other values
        assert json.loads(draft.split("A first draft: ")[1].split(". Hmm")[0]) != value
    assert result.stats.stop_reason == "eosFound"


def test_budget_spent_inside_the_reasoning(client: lms.Client) -> None:
    model = client.llm.model(MODELS["marker"])
    got, result = fragments(model, "Who?", response_format=SCHEMA, config={"maxTokens": 6})
    assert result.stats.stop_reason == "maxPredictedTokensReached"
    assert result.stats.predicted_tokens_count == 6
    assert kinds(got) == ["reasoningStartTag", "reasoning"]


def test_reasoning_parsing_off_sends_the_tags_as_text(client: lms.Client) -> None:
    model = client.llm.model(MODELS["marker"])
    off = {"enabled": False, "startString": "<think>", "endString": "</think>"}
    got, result = fragments(model, "Hi", config={"reasoningParsing": off})
    assert kinds(got) == ["none"]
    assert result.content.startswith("<think>")
    assert "</think>\n\n" in result.content
    assert SYNTHETIC_MARKER not in result.content


@pytest.mark.parametrize(("enabled", "parsed"), [(True, True), (False, False), (1, False)])
def test_reasoning_parsing_is_on_only_where_enabled_is_true(enabled: object, parsed: bool) -> None:
    """As the parser of a request's tags reads it (``request_tags``): the near twin that
    decided for a thinking model's own tags took any truthy value (found by a duplicates
    check; pinned after mutation testing)."""
    tags = {"enabled": enabled, "startString": "<think>", "endString": "</think>"}
    config = {REASONING_PARSING: tags}
    out, _ = shape_reply("think", ["plan"], [Fragment("42")], "eosFound", config, structured=False)
    assert (out[0].content, out[0].reasoning_type == "reasoningStartTag") == ("<think>", parsed)


def test_scripted_reasoning_reply_chooses_its_form(
    emu: LMStudioEmulator, client: lms.Client
) -> None:
    key = MODELS["think"]
    emu.script(key, [ReasoningReply("42", "six times seven", form="mlx"), ReasoningReply("x", "y")])
    model = client.llm.model(key)
    got, result = fragments(model, "?")
    assert got == [
        ("six", "reasoning"),
        (" times", "reasoning"),
        (" seven", "reasoning"),
        ("42", "none"),
    ]
    got, _ = fragments(model, "?")
    assert got == [
        ("<think>", "reasoningStartTag"),
        ("y", "reasoning"),
        ("</think>", "reasoningEndTag"),
        ("\n\n", "none"),
        ("x", "none"),
    ]
    assert result.stats.predicted_tokens_count == 4


def test_a_plain_model_can_be_scripted_to_reason(emu: LMStudioEmulator, client: lms.Client) -> None:
    emu.script("qwen2.5-7b-instruct", ReasoningReply("ok", "hmm", form="marker-inline"))
    got, _ = fragments(client.llm.model("qwen2.5-7b-instruct"), "?")
    assert got == [
        ("<think>", "reasoningStartTag"),
        ("hmm", "reasoning"),
        (SYNTHETIC_MARKER + "ok", "none"),
    ]


def _by_kind(got: list[tuple[str, str]]) -> dict[str, str]:
    """Each reasoning type's text, joined."""
    out: dict[str, str] = {}
    for content, kind in got:
        out[kind] = out.get(kind, "") + content
    return out


def test_a_requests_own_reasoning_strings_type_the_reply(
    emu: LMStudioEmulator, client: lms.Client
) -> None:
    """lmstudio-js's own test: LM Studio types ``Assistant message 2`` by the strings a
    request names (``sis``, ``es``), whatever the model, splitting tokens where a string
    begins or ends (found by a probe running it: every fragment was typed ``none``)."""
    emu.script("qwen2.5-7b-instruct", ["Assistant message 2"])
    parsing = {"enabled": True, "startString": "sis", "endString": "es"}
    got, result = fragments(
        client.llm.model("qwen2.5-7b-instruct"), "?", config={"reasoningParsing": parsing}
    )
    assert kinds(got) == ["none", "reasoningStartTag", "reasoning", "reasoningEndTag", "none"]
    assert _by_kind(got) == {
        "none": "Assage 2",  # lmstudio-js's nonReasoningContent
        "reasoningStartTag": "sis",
        "reasoning": "tant m",  # its reasoningContent
        "reasoningEndTag": "es",
    }
    assert result.content == "Assistant message 2"
    assert result.stats.predicted_tokens_count == 5  # the tokens, not the pieces


def test_a_token_split_by_reasoning_strings_is_still_one_token_for_faults(
    emu: LMStudioEmulator, client: lms.Client
) -> None:
    """Its pieces go out together, at the token's pace: a fault after N fragments comes
    after N of the engine's tokens, not in the middle of one (a review: after "As", "sis")."""
    reply = "Assistant message 2"
    emu.script("qwen2.5-7b-instruct", [reply])
    emu.add_fault(Fault("predict", "error", after_fragments=2))
    config: Any = {"reasoningParsing": {"enabled": True, "startString": "sis", "endString": "es"}}
    with pytest.raises(lms.LMStudioServerError):
        client.llm.model("qwen2.5-7b-instruct").respond("?", config=config)
    assert emu.predictions[-1].text == "".join(split_fragments(reply)[:2])  # "Assistant"


@pytest.mark.parametrize(
    "parsing", [None, {"enabled": False, "startString": "sis", "endString": "es"}]
)
def test_a_reply_is_not_typed_without_reasoning_strings_turned_on(
    emu: LMStudioEmulator, client: lms.Client, parsing: dict[str, Any] | None
) -> None:
    emu.script("qwen2.5-7b-instruct", ["Assistant message 2"])
    config = {} if parsing is None else {"reasoningParsing": parsing}
    got, _ = fragments(client.llm.model("qwen2.5-7b-instruct"), "?", config=config)
    assert kinds(got) == ["none"]


def test_a_reasoning_models_tags_sent_as_text_are_typed_by_the_requests_strings(
    client: lms.Client,
) -> None:
    """Strings other than the model's own: its ``<think>`` tags come as text, and the
    request's strings type what they enclose."""
    model = client.llm.model(MODELS["think"])
    parsing = {"enabled": True, "startString": "<think>", "endString": "</think>"}
    typed, _ = fragments(model, "Hi", config={"reasoningParsing": parsing})
    parsing = {"enabled": True, "startString": "think>", "endString": "</"}
    got, _ = fragments(model, "Hi", config={"reasoningParsing": parsing})
    assert _by_kind(got)["reasoningStartTag"] == "think>think>"  # opened again after </
    assert _by_kind(got)["reasoning"].startswith(_by_kind(typed)["reasoning"])


@settings(max_examples=200, deadline=None)
@given(
    pieces=st.lists(st.text("abst<>/ ", max_size=6), max_size=12),
    tags=st.sampled_from([("s", "t"), ("<t>", "</t>"), ("ab", "ba"), ("st", "s")]),
)
def test_the_tag_parser_keeps_the_text_and_types_it_as_one_pass_would(
    pieces: list[str], tags: tuple[str, str]
) -> None:
    """However the reply is cut into fragments, the text sent is the text, and each piece
    is typed as reading the whole text at once types it; the tokens are kept."""
    from outlines_lmstudio.testing._tag_parsing import TagParser

    def run(chunks: list[str]) -> list[Fragment]:
        parser = TagParser(*tags)
        out = [f for c in chunks for f in parser.feed(Fragment(c))]
        return out + parser.flush()

    streamed, whole = run(pieces), run(["".join(pieces)])
    assert "".join(f.content for f in streamed) == "".join(pieces)
    assert sum(f.tokens_count for f in streamed) == len(pieces)

    def typed(frags: list[Fragment]) -> list[str]:
        return [f.reasoning_type for f in frags for _ in f.content]

    assert typed(streamed) == typed(whole)


def test_layout_flags_harmony_control_text_structural() -> None:
    out, stop = shape_reply("harmony", ["r"], [Fragment("a")], "eosFound", {}, structured=False)
    assert [(f.content, f.reasoning_type, f.is_structural) for f in out] == [
        ("<|channel|>", "reasoningStartTag", True),
        ("analysis", "reasoningStartTag", True),
        ("<|message|>", "reasoningStartTag", True),
        ("r", "reasoning", False),
        ("<|end|>", "reasoningEndTag", True),
        ("<|start|>", "none", True),  # a token a fragment: a budget can end inside it
        ("assistant", "none", True),
        ("<|channel|>", "none", True),
        ("final", "none", True),
        ("<|message|>", "none", True),
        ("a", "none", False),
    ]
    assert stop == "eosFound"


def test_layout_budget_counts_tags_and_not_the_marker() -> None:
    budget = {"llm.prediction.maxPredictedTokens": {"checked": True, "value": 3}}
    answer = [Fragment("a")]
    out, stop = shape_reply("marker", ["r1", "r2"], answer, "eosFound", budget, structured=True)
    assert [f.content for f in out] == ["<think>", "r1", "r2", SYNTHETIC_MARKER]
    assert stop == "maxPredictedTokensReached"
    out, stop = shape_reply("marker", ["r1"], answer, "eosFound", budget, structured=True)
    assert [f.content for f in out] == ["<think>", "r1", SYNTHETIC_MARKER, "a"]
    assert stop == "eosFound"
    unchecked = {"llm.prediction.maxPredictedTokens": {"checked": False, "value": 1}}
    two = [Fragment("a"), Fragment("b")]
    assert shape_reply(None, [], two, "eosFound", unchecked, structured=False)[1] == "eosFound"


@pytest.mark.parametrize("form", ["think", "marker", "harmony"])
def test_the_reasoning_budget_ends_the_reasoning_and_the_answer_follows(form: str) -> None:
    """TypeScript SDK 2's ``reasoningBudget``: it was ignored (found by a probe)."""
    reasoning, answer = ["r1", "r2", "r3"], [Fragment("a")]

    def sent(value: Any) -> tuple[list[str], list[str]]:
        config = {"llm.prediction.reasoning.budgetTokens": value}
        out, stop = shape_reply(form, reasoning, answer, "eosFound", config, structured=True)
        assert stop == "eosFound"
        kept = [f.content for f in out if f.reasoning_type == "reasoning"]
        answered = [f.content for f in out if f.reasoning_type == "none" and not f.is_structural]
        return kept, [text for text in answered if text.strip()]

    assert sent({"checked": True, "value": 2}) == (["r1", "r2"], ["a"])
    assert sent({"checked": True, "value": 0})[0] == []
    assert sent({"checked": False, "value": 1})[0] == reasoning  # reasoningBudget: false
    assert sent({"checked": True, "value": 0})[1][-1] == "a"  # the answer still comes


@pytest.mark.parametrize("form", ["think", "marker", "harmony"])
def test_a_negative_reasoning_budget_is_no_reasoning(form: str) -> None:
    """Found by mutation testing: nothing checked that a negative ``budgetTokens`` counts as
    0 (no reasoning, then the answer); taken as it is, -5 kept all but the last 5 tokens."""
    reasoning = [f"r{i}" for i in range(8)]
    config = {"llm.prediction.reasoning.budgetTokens": {"checked": True, "value": -5}}
    out, stop = shape_reply(form, reasoning, [Fragment("a")], "eosFound", config, structured=True)
    assert stop == "eosFound"
    assert [f.content for f in out if f.reasoning_type == "reasoning"] == []
    answered = [f.content for f in out if f.reasoning_type == "none" and not f.is_structural]
    assert [text for text in answered if text.strip()][-1] == "a"


def test_reasoning_text_is_deterministic_and_drafts_the_answer() -> None:
    text = write_reasoning(ANSWER, "k", 1)
    assert text == write_reasoning(ANSWER, "k", 1)
    draft = json.loads(text.split("A first draft: ")[1].split(". Hmm")[0])
    assert draft == {"name": "draft Ada", "age": 37}
    assert '{"draft": true' in write_reasoning("not json", "k", 1)


@settings(max_examples=300, deadline=None)
@given(
    reasoning=st.text(alphabet='{}[]":, ab<>/_\n', max_size=40),
    answer=st.sampled_from([ANSWER, "42", "[1, 2]", "Paris."]),
    form=st.sampled_from(sorted(FORMS)),
    structured=st.booleans(),
    budget=st.none() | st.integers(0, 40),
)
def test_layouts_and_splitter_agree(
    reasoning: str, answer: str, form: str, structured: bool, budget: int | None
) -> None:
    """Whatever the reasoning text and budget, the splitter finds what the layout sent."""
    assume(not any(t in reasoning for t in ("</think>", SYNTHETIC_MARKER[:12], "<|")))
    assume(not reasoning.lstrip().startswith("<think>"))
    config: dict[str, Any] = {}
    if budget is not None:
        config["llm.prediction.maxPredictedTokens"] = {"checked": True, "value": budget}
    answer_fragments = [Fragment(t) for t in split_fragments(answer)]
    thought = split_fragments(reasoning)
    out, stop = shape_reply(
        form, thought, answer_fragments, "eosFound", config, structured=structured
    )
    splitter = ReasoningSplitter()
    for f in out:
        splitter.feed(
            f.content, f.reasoning_type, tokens_count=f.tokens_count, structural=f.is_structural
        )
    splitter.close()
    reasons = not (form == "legacy" and structured)
    assert answer.startswith(splitter.answer)
    assert reasoning.startswith(splitter.reasoning) if reasons else splitter.reasoning == ""
    total = sum(f.tokens_count for f in out)
    assert splitter.reasoning_tokens <= total
    if stop == "eosFound":
        assert splitter.answer == answer
        assert splitter.reasoning_tokens >= len(thought) * reasons
    problem = reply_problem(
        splitter.answer,
        splitter.reasoning,
        ReplyStats(stop, predicted_tokens=total),
        structured=structured,
    )
    if not splitter.answer and splitter.reasoning.strip():
        assert stop == "maxPredictedTokensReached"
        assert isinstance(problem, ReasoningTruncatedError)
    else:
        assert problem is None
