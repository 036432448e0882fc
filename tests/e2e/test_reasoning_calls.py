"""Every entry point returns only the answer of a reasoning reply, on both fronts.

The emulator's scripts send text as ``none``-typed fragments, so these replies carry their
reasoning the untyped ways: ``<think>...</think>`` at the start, and LM Studio's synthetic
marker inline. (The typed forms are the reasoning suite's, against the emulator's reasoning
models.)
"""

import json
import re
from typing import Any, Literal

import outlines
import pydantic
import pytest

from outlines_lmstudio import (
    EmptyAnswerError,
    ParseError,
    ReasoningTruncatedError,
    Reply,
    ReplyChunk,
    TruncatedOutputError,
)
from outlines_lmstudio._reasoning import SYNTHETIC_MARKER
from outlines_lmstudio.testing import LMStudioEmulator, ReasoningReply

from .conftest import TEXT_MODEL, MakeModel
from .fronts import Fronts


class Person(pydantic.BaseModel):
    name: str
    age: int


ANSWER = '{"name": "Ann", "age": 3}'
THINKING = 'The user wants JSON. Draft: {"name": "Bob", "age": 9}. No, Ann.'
THINK = f"<think>{THINKING}</think>\n\n{ANSWER}"
MARKER = f"{THINKING}{SYNTHETIC_MARKER}{ANSWER}"


@pytest.mark.parametrize("reply", [THINK, MARKER], ids=["think-tags", "marker"])
def test_whole_calls_return_only_the_answer(
    fronts: Fronts, make_model: MakeModel, emulator: LMStudioEmulator, reply: str
) -> None:
    emulator.script(TEXT_MODEL, lambda prediction: reply)
    model = make_model(TEXT_MODEL)
    assert model("who?", Person) == ANSWER
    assert model.generate("who?", Person) == ANSWER
    assert model.batch(["a", "b"], Person) == [ANSWER, ANSWER]
    assert model.parse("who?", Person) == Person(name="Ann", age=3)
    assert model.parse(["a", "b"], Person) == [Person(name="Ann", age=3)] * 2
    generator = outlines.Generator(fronts.raw(model), Person)
    assert fronts.run(generator("who?")) == ANSWER


def test_streams_yield_only_the_answer(make_model: MakeModel, emulator: LMStudioEmulator) -> None:
    emulator.script(TEXT_MODEL, lambda prediction: THINK)
    model = make_model(TEXT_MODEL)
    assert "".join(model.stream("who?", Person)) == ANSWER
    values = list(model.parse_stream("who?", Person))
    assert values[-1] == Person(name="Ann", age=3)
    assert values[:-1]
    assert all("Ann".startswith(v["name"]) for v in values[:-1] if "name" in v)
    assert all("Bob" not in json.dumps(v) for v in values[:-1])  # nothing from the reasoning


class Note(pydantic.BaseModel):
    note: str


@pytest.mark.parametrize(
    ("reply", "output_type"),
    [
        ('{"note": "a reply ends at </think> here"}', Note),
        ('[{"note": "</think>"}, {"note": "x"}]', list[Note]),
    ],
    ids=["object", "array"],
)
def test_an_end_tag_inside_a_json_answer_is_answer_text(
    make_model: MakeModel, emulator: LMStudioEmulator, reply: str, output_type: object
) -> None:
    # A bare </think> ends untyped reasoning opened in the prompt, but a reply asked to be
    # JSON that opens a JSON object or array is its answer from the start.
    emulator.script(TEXT_MODEL, lambda prediction: reply)
    model = make_model(TEXT_MODEL)
    assert model("q", output_type) == reply
    assert "".join(model.stream("q", output_type)) == reply
    reply_of = model.reply("q", output_type)
    assert (reply_of.text, reply_of.reasoning) == (reply, "")
    assert "</think>" in json.dumps(model.parse("q", output_type), default=repr)


def test_an_end_tag_inside_a_json_string_answer_is_answer_text(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """Found by a probe: a ``str`` answer holding ``</think>`` was cut to what followed it
    (``'."'``), and ``parse`` then failed on invalid JSON. A JSON string opens with ``"``,
    which reasoning text does not."""
    reply = '"Close it with </think>."'
    emulator.script(TEXT_MODEL, lambda prediction: reply)
    model = make_model(TEXT_MODEL)
    assert model("q", str) == reply
    assert "".join(model.stream("q", str)) == reply
    assert model.parse("q", str) == "Close it with </think>."
    assert model.reply("q", str).reasoning == ""


@pytest.mark.parametrize(
    ("reply", "output_type", "text"),
    [
        ('"pos"', Literal["pos", "neg"], "pos"),
        ("true", bool, "True"),
        ("42", int, "42"),
    ],
)
def test_reply_stream_of_a_simple_type_gives_its_answer_as_stream_does(
    make_model: MakeModel, emulator: LMStudioEmulator, reply: str, output_type: Any, text: str
) -> None:
    """Found by a probe: the answer pieces were the raw JSON (``"pos"``), which joined to
    something else than ``reply.text`` (``pos``) and than what ``stream`` gives."""
    emulator.script(TEXT_MODEL, lambda prediction: f"<think>hmm</think>{reply}")
    model = make_model(TEXT_MODEL)
    stream = model.reply_stream("q", output_type)
    chunks = list(stream)
    assert "".join(c.text for c in chunks if not c.reasoning) == text
    assert "".join(c.text for c in chunks if c.reasoning) == "hmm"
    assert stream.reply is not None
    assert stream.reply.text == text
    assert "".join(model.stream("q", output_type)) == text


def test_reasoning_before_a_json_answer_still_ends_at_a_bare_end_tag(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    emulator.script(TEXT_MODEL, lambda prediction: f"{THINKING}</think>\n\n{ANSWER}")
    model = make_model(TEXT_MODEL)
    assert model("who?", Person) == ANSWER
    assert model.reply("who?", Person).reasoning == THINKING


def test_reply_gives_answer_reasoning_and_stats(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    emulator.script(TEXT_MODEL, lambda prediction: THINK)
    model = make_model(TEXT_MODEL)
    reply = model.reply("who?", Person)
    assert isinstance(reply, Reply)
    assert reply.text == ANSWER
    assert reply.reasoning == THINKING
    assert reply.stats.stop_reason == "eosFound"
    assert reply.stats.reasoning_tokens
    assert reply.stats.predicted_tokens
    assert reply.stats.time_to_first_answer_token is not None
    replies = model.reply_batch(["a", "b"], Person)
    assert [r.text for r in replies] == [ANSWER, ANSWER]
    assert [r.reasoning for r in replies] == [THINKING, THINKING]


def test_a_plain_reply_has_its_stats_too(make_model: MakeModel) -> None:
    """A reply with no reasoning is taken whole, and its stats are built when asked."""
    reply = make_model(TEXT_MODEL).reply("who?", Person)
    assert reply.reasoning == ""
    assert reply.stats.stop_reason == "eosFound"
    assert reply.stats.reasoning_tokens == 0
    assert reply.stats.predicted_tokens
    assert reply.stats.prompt_tokens
    assert reply.stats.time_to_first_answer_token is not None


def test_reply_stream_gives_both_sides_then_the_reply(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    emulator.script(TEXT_MODEL, lambda prediction: THINK)
    stream = make_model(TEXT_MODEL).reply_stream("who?", Person)
    chunks = list(stream)
    assert all(isinstance(c, ReplyChunk) for c in chunks)
    assert "".join(c.text for c in chunks if c.reasoning) == THINKING
    assert "".join(c.text for c in chunks if not c.reasoning) == ANSWER
    assert stream.reply is not None
    assert stream.reply.text == ANSWER
    assert stream.reply.reasoning == THINKING


def test_simple_types_render_the_answer(make_model: MakeModel, emulator: LMStudioEmulator) -> None:
    emulator.script(TEXT_MODEL, lambda prediction: "<think>maybe 41?</think>42")
    model = make_model(TEXT_MODEL)
    assert model("how many?", int) == "42"
    assert model.reply("how many?", int).text == "42"
    assert list(model.stream("how many?", int)) == ["42"]


def test_budget_spent_on_reasoning_says_so(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    emulator.script(TEXT_MODEL, lambda prediction: "<think>" + "hmm " * 50 + "</think>" + ANSWER)
    model = make_model(TEXT_MODEL)
    with pytest.raises(TruncatedOutputError, match="spent on reasoning"):
        model("who?", Person, max_tokens=5)
    with pytest.raises(TruncatedOutputError, match="spent on reasoning"):
        model.parse("who?", Person, max_tokens=5, retries=2)
    assert len(emulator.predictions) == 2  # re-asking cannot fix it


def test_a_budget_that_ends_anywhere_in_a_harmony_reply_is_said(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """Every cut of a Harmony reply: the answer, or `ReasoningTruncatedError`. The emulator
    sent the final channel's header as one fragment (found by a probe), so no budget ever
    ended inside it; it sends it a token a fragment, as LM Studio streams it."""
    model = make_model(TEXT_MODEL)
    outcomes = []
    for budget in range(1, 14):
        emulator.script(TEXT_MODEL, [ReasoningReply("Paris.", "hmm ok", form="harmony")])
        try:
            outcomes.append(model.reply("Capital?", max_tokens=budget).text)
        except ReasoningTruncatedError:
            outcomes.append(None)
        fragments = emulator.predictions[-1].fragments
        header = ("<|start|>", "assistant", "<|channel|>", "final")
        if outcomes[-1] is None and "<|end|>" in fragments and fragments[-1] in header:
            outcomes[-1] = "cut in the header"
    assert outcomes[0] is None
    assert outcomes[-1] == "Paris."
    assert "cut in the header" in outcomes
    assert set(outcomes) <= {None, "cut in the header", "Paris."}


def test_a_reply_opening_with_another_familys_tag_names_the_setting(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """Found by a probe: Magistral's [THINK] sent as text failed as "Invalid JSON" with no
    hint; the setting the message names then separates it."""
    reply = '[THINK]Draft {"name": "Bob", "age": 9}? No.[/THINK]' + ANSWER
    emulator.script(TEXT_MODEL, [reply, reply])
    model = make_model(TEXT_MODEL)
    parsing = {"enabled": True, "start_string": "[THINK]", "end_string": "[/THINK]"}
    with pytest.raises(ParseError, match=re.escape(f"pass reasoning_parsing={parsing!r})")):
        model.parse("who?", Person)
    assert model.parse("who?", Person, reasoning_parsing=parsing) == Person(name="Ann", age=3)


def test_a_setting_naming_other_tags_than_the_reply_s_is_told_which_it_opens_with(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """Found by a probe: with ``<thinking>`` set, a reply opening with ``<think>`` failed as
    "Invalid JSON" with no hint (``[THINK]`` had one)."""
    emulator.script(TEXT_MODEL, [THINK])
    model = make_model(TEXT_MODEL)
    wrong = {"enabled": True, "start_string": "<thinking>", "end_string": "</thinking>"}
    parsing = {"enabled": True, "start_string": "<think>", "end_string": "</think>"}
    with pytest.raises(ParseError, match=re.escape("opens with <think>, a reasoning tag")):
        model.parse("who?", Person, reasoning_parsing=wrong)
    emulator.script(TEXT_MODEL, [THINK])
    assert model.parse("who?", Person, reasoning_parsing=parsing) == Person(name="Ann", age=3)


def test_an_empty_answer_after_reasoning_is_an_error(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    emulator.script(TEXT_MODEL, lambda prediction: "<think>I am not sure.</think>")
    model = make_model(TEXT_MODEL)
    with pytest.raises(EmptyAnswerError, match="empty"):
        model("who?")
    with pytest.raises(EmptyAnswerError):
        list(model.stream("who?"))


@pytest.mark.parametrize(
    "reply",
    [
        "<think></think>",
        "<think>\n\n</think>\n\n",  # what Qwen3 writes with /no_think, then nothing
        "<|channel|>analysis<|message|><|end|>",  # an empty Harmony analysis message
    ],
)
def test_an_empty_think_block_then_no_answer_is_an_empty_answer(
    make_model: MakeModel, emulator: LMStudioEmulator, reply: str
) -> None:
    """Found by a probe: it was "Invalid JSON: EOF while parsing a value" from ``parse``,
    and ``""`` from a call without an output type, which the docs say never happens."""
    emulator.script(TEXT_MODEL, lambda prediction: reply)
    model = make_model(TEXT_MODEL)
    with pytest.raises(EmptyAnswerError, match="wrote an empty JSON answer"):
        model.parse("how many?", int)
    with pytest.raises(EmptyAnswerError, match="wrote an empty answer"):
        model("how many?")


def test_a_grammar_answer_cut_in_the_reasoning_is_not_called_json(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """The errors say "JSON answer" only when a JSON document was asked for."""
    from outlines.types import Regex

    emulator.script(TEXT_MODEL, lambda prediction: "<think>" + "hmm " * 50 + "</think>42")
    model = make_model(TEXT_MODEL, grammar=True)
    with pytest.raises(TruncatedOutputError, match="began its answer") as cut:
        model("how many?", Regex(r"\d+"), max_tokens=5)
    assert "JSON" not in str(cut.value)
    with pytest.raises(TruncatedOutputError, match="began its JSON answer"):
        model("how many?", int, max_tokens=5)
    emulator.script(TEXT_MODEL, lambda prediction: "<think>I am not sure.</think>")
    with pytest.raises(EmptyAnswerError, match="wrote an empty answer"):
        model.parse("how many?", Regex(r"\d*"))


def test_custom_tags_are_split_with_reasoning_parsing_off(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """With parsing off, LM Studio sends the model's own tags as text: they are split on.

    The splitter once looked for ``<think>`` whenever parsing was off, whatever strings were
    given, and ``[R]...[/R]`` stayed in the answer.
    """
    emulator.script(TEXT_MODEL, lambda prediction: f"[R]{THINKING}[/R]\n\n{ANSWER}")
    model = make_model(TEXT_MODEL)
    off = {"enabled": False, "start_string": "[R]", "end_string": "[/R]"}
    reply = model.reply("who?", Person, reasoning_parsing=off)
    assert (reply.text, reply.reasoning) == (ANSWER, THINKING)
    value = model.parse("who?", Person, config={"reasoningParsing": off})
    assert value == Person(name="Ann", age=3)


def test_reasoning_ended_within_one_fragment_never_streams_as_answer(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """A fragment holding the reasoning, its end and the answer streams them apart.

    The emulator sends ``ab|cd`` as one fragment; with ``|`` as the end string, ``ab`` once
    streamed as answer (``stream`` gave ``abcd`` where ``generate`` gave ``cd``).
    """
    emulator.script(TEXT_MODEL, lambda prediction: "ab|cd")
    model = make_model(TEXT_MODEL)
    tags = {"start_string": "<r>", "end_string": "|"}
    assert model("q", reasoning_parsing=tags) == "cd"
    assert "".join(model.stream("q", reasoning_parsing=tags)) == "cd"
    stream = model.reply_stream("q", reasoning_parsing=tags)
    assert list(stream) == [ReplyChunk("ab", True), ReplyChunk("cd", False)]


def test_reasoning_tokens_count_reasoning_opened_in_the_prompt(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """Reasoning with no start tag streams as answer until ``</think>``: it counts, all of it.

    The emulator sends 18 fragments, the last 5 the answer's; only the end tag's fragment
    was counted as reasoning (1, not 13).
    """
    emulator.script(TEXT_MODEL, lambda prediction: f"{THINKING}</think>\n\n{ANSWER}")
    stats = make_model(TEXT_MODEL).reply("who?", Person).stats
    assert (stats.reasoning_tokens, stats.predicted_tokens) == (13, 18)


def test_a_stop_string_inside_the_reasoning_is_named(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    emulator.script(TEXT_MODEL, lambda prediction: f"<think>Hmm. {THINKING}</think>{ANSWER}")
    with pytest.raises(EmptyAnswerError, match=r"stop string ended the reply inside") as info:
        make_model(TEXT_MODEL)("who?", Person, stop=["."])
    assert "Drop it from stop=" in str(info.value)
    assert info.value.reasoning == "Hmm"


@pytest.mark.parametrize(
    ("output_type", "reply", "value"),
    [
        (list[int], '"q?" hmm [9]</think>[1, 2]', [1, 2]),
        (
            Person,
            '"Who?" hmm {"name": "X"}</think>{"name": "Ann", "age": 3}',
            Person(name="Ann", age=3),
        ),
    ],
    ids=["list", "object"],
)
def test_parse_stream_gives_no_value_of_another_json_type(
    make_model: MakeModel, emulator: LMStudioEmulator, output_type: Any, reply: str, value: Any
) -> None:
    """Found by a probe: reasoning with no start tag that opens with a quote, before a bare
    ``</think>``, was given out as a str value for a list or an object type."""
    emulator.script(TEXT_MODEL, [reply])
    values = list(make_model(TEXT_MODEL).parse_stream("who?", output_type))
    assert values[-1] == value
    assert not [v for v in values if isinstance(v, str)]
    assert all(isinstance(v, dict if output_type is Person else list) for v in values[:-1])


def test_parse_stream_after_reasoning_opened_in_the_prompt(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """Reasoning that streams as answer until ``</think>``: the answer's partial values follow.

    Only the final value came: the partial parser kept the reasoning's text before the answer.
    """
    emulator.script(TEXT_MODEL, lambda prediction: f"{THINKING}</think>\n\n{ANSWER}")
    values = list(make_model(TEXT_MODEL).parse_stream("who?", Person))
    assert values[-1] == Person(name="Ann", age=3)
    assert {"name": "Ann"} in values[:-1]
    assert all("Bob" not in json.dumps(v) for v in values[:-1])
