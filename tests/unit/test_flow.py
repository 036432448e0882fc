"""The flows' decisions, driven by a scripted driver: no server, no SDK client."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import lmstudio as lms
import pydantic
import pytest

from outlines_lmstudio import (
    EmptyAnswerError,
    LMStudioConnectionError,
    ParseError,
    TruncatedOutputError,
    UnsupportedOutputTypeError,
)
from outlines_lmstudio import LMStudioModelNotFoundError as NotFound
from outlines_lmstudio import LMStudioPredictionError as Failed
from outlines_lmstudio._common import Completion, ModelTraits, Request
from outlines_lmstudio._config import parse_inference_kwargs
from outlines_lmstudio._flow import (
    Call,
    Complete,
    Deadline,
    Effect,
    Emit,
    Flow,
    Forget,
    ModelInfo,
    NoteTraits,
    Open,
    Read,
    Reconnect,
    Resolve,
    Sink,
    parse,
    predict,
    sink_for_parse_stream,
    sink_for_stream,
    wait_limit,
)
from outlines_lmstudio._inputs import format_input
from outlines_lmstudio._output import OutputPlan, plan_output
from outlines_lmstudio._reasoning import SYNTHETIC_MARKER
from outlines_lmstudio._sdk_errors import translate_sdk_error
from outlines_lmstudio._sinks import _of_kinds, _root_kinds
from outlines_lmstudio._typed import validator_for


class Person(pydantic.BaseModel):
    name: str
    age: int


def request(output_type: Any = None) -> Request:
    return Request(format_input("hi"), plan_output(output_type), parse_inference_kwargs({}), "m")


def fragment(text: str, kind: str = "none") -> lms.LlmPredictionFragment:
    return lms.LlmPredictionFragment(
        content=text,
        tokens_count=1,
        contains_drafted=False,
        reasoning_type=kind,  # type: ignore[arg-type]
    )


def errors(exc: BaseException, key: str | None, stage: Any) -> BaseException:
    translated = translate_sdk_error(exc, host="h", model=key, stage=stage)
    return translated if translated is not None else exc


_INFO = SimpleNamespace(model_key="m")
"""The model info of every reply (the SDK's ``PredictionResult.model_info``)."""


class Server:
    """Answers a flow's effects from a script of attempts (each: fragments, then an end)."""

    def __init__(
        self, *attempts: list[Any], stop_reason: str = "eosFound", whole: bool = False
    ) -> None:
        self.attempts = list(attempts)
        self.stop_reason = stop_reason
        self.whole = whole  # each read is a whole read: the reader says when each one arrived
        self.effects: list[Effect] = []
        self._reads: list[Any] = []

    def answer(self, effect: Effect) -> Any:
        self.effects.append(effect)
        if isinstance(effect, Resolve):
            return SimpleNamespace(identifier="m")
        if isinstance(effect, Open):
            self._reads = list(self.attempts.pop(0))
            stats = SimpleNamespace(stop_reason=self.stop_reason)
            effect.call.reader = SimpleNamespace(
                result=lambda: SimpleNamespace(stats=stats, model_info=_INFO),
                arrived=None,
                at_end=False,
            )
            return None
        if isinstance(effect, Read):
            item = self._reads.pop(0) if self._reads else None
            if isinstance(item, BaseException):
                raise item
            if self.whole and item is not None:
                effect.call.reader.arrived = [float(i) for i in range(len(item))]
                effect.call.reader.at_end = not self._reads  # a whole read takes the end too
            return item
        return None  # Reconnect, Forget

    def kinds(self) -> list[str]:
        return [type(e).__name__ for e in self.effects]


def drive(flow: Flow[Any], answer: Callable[[Effect], Any]) -> tuple[list[Any], Any]:
    """Step a flow as a front does: each effect's answer (or error) goes back in."""
    emitted: list[Any] = []
    try:
        step = flow.send(None)
        while True:
            if isinstance(step, Emit):
                emitted.append(step.value)
                step = flow.send(None)
                continue
            try:
                value = answer(step)
            except Exception as exc:
                step = flow.throw(exc)
            else:
                step = flow.send(value)
    except StopIteration as stop:
        return emitted, stop.value
    finally:
        flow.close()


def test_a_read_that_took_the_end_is_the_last_read() -> None:
    server = Server([[fragment("a"), fragment("b")]], whole=True)
    _, done = drive(predict(Call(request()), Sink(), errors), server.answer)
    assert done.text == "ab"
    assert server.kinds().count("Read") == 1  # no read after the end


DROP = lms.LMStudioWebsocketError("Client unexpectedly disconnected.")
GONE = lms.LMStudioModelNotFoundError("no such model")


def test_a_whole_reply_lost_to_a_drop_is_asked_again_once() -> None:
    server = Server([[fragment("a")], DROP], [[fragment("b")]])
    call = Call(request())
    emitted, done = drive(predict(call, Sink(), errors), server.answer)
    assert emitted == []
    assert (done.text, done.stop_reason, done.reasoning) == ("b", "eosFound", "")
    assert server.kinds().count("Reconnect") == 1
    assert server.kinds().count("Open") == 2
    assert call.finished
    assert call.done == done


def test_a_stream_the_caller_has_seen_is_not_asked_again() -> None:
    server = Server([[fragment("a")], DROP], [[fragment("b")]])
    call = Call(request())
    seen: list[Any] = []
    with pytest.raises(LMStudioConnectionError, match="next call reconnects"):
        seen.extend(drive(predict(call, sink_for_stream(call.request), errors), server.answer)[0])
    assert server.kinds().count("Reconnect") == 1  # the next call finds it working
    assert server.kinds().count("Open") == 1


def test_two_drops_give_up() -> None:
    server = Server([DROP], [DROP])
    with pytest.raises(LMStudioConnectionError):
        drive(predict(Call(request()), Sink(), errors), server.answer)
    assert server.kinds().count("Open") == 2


def test_a_vanished_model_is_forgotten_and_resolved_again() -> None:
    server = Server([GONE], [[fragment("ok")]])
    _, done = drive(predict(Call(request()), Sink(), errors), server.answer)
    assert done.text == "ok"
    assert server.kinds() == [
        "Resolve",
        "Open",
        "Read",
        "Forget",
        "Resolve",
        "Open",
        "Read",
        "Read",
    ]
    assert isinstance(server.effects[3], Forget)


def test_a_drop_resets_the_generation_its_attempt_began_with() -> None:
    """The front notes the client's generation as it resolves; a lost socket resets that one."""
    server = Server([DROP], [[fragment("ok")]])
    generations = iter([7, 8])

    def answer(effect: Effect) -> Any:
        if isinstance(effect, Resolve):
            effect.call.generation = next(generations)  # what a front does
        return server.answer(effect)

    _, done = drive(predict(Call(request()), Sink(), errors), answer)
    assert done.text == "ok"
    assert [e.generation for e in server.effects if isinstance(e, Reconnect)] == [7]


def test_reasoning_fragments_are_not_part_of_the_answer() -> None:
    server = Server([[fragment("think", "reasoning"), fragment("answer")]])
    emitted, done = drive(
        predict(Call(request()), sink_for_stream(request()), errors), server.answer
    )
    assert emitted == ["answer"]
    assert done.text == "answer"


WHOLE_REPLIES = {
    "plain": [[fragment('{"a": '), fragment("1}")]],
    "blank": [[fragment(" "), fragment("\n")]],
    "empty": [],
    "think tags": [[fragment("<think>"), fragment("a</think>"), fragment("b")]],
    "bare end tag": [[fragment("a</think>"), fragment(" b")]],
    "typed reasoning": [[fragment("a", "reasoning"), fragment("b")]],
    "marker": [[fragment("a" + SYNTHETIC_MARKER), fragment("b")]],
    "harmony": [
        [
            fragment("<|channel|>analysis<|message|>a<|end|>"),
            fragment("<|start|>assistant<|channel|>final<|message|>b"),
        ]
    ],
    "end tag across two reads": [[fragment("x</thi")], [fragment("nk>y")]],
    "plain across two reads": [[fragment("x")], [fragment("y")]],
}


@pytest.mark.parametrize("reads", WHOLE_REPLIES.values(), ids=WHOLE_REPLIES.keys())
def test_a_whole_read_splits_as_a_read_per_fragment(reads: list[list[Any]]) -> None:
    """A whole reply taken as it is, or split, ends as the same completion as fragments."""
    per_fragment = [[f] for read in reads for f in read]
    _, whole = drive(predict(Call(request()), Sink(), errors), Server(reads, whole=True).answer)
    _, one_by_one = drive(predict(Call(request()), Sink(), errors), Server(per_fragment).answer)
    timing = {"time_to_first_answer_token": None}  # clock readings, not the same here

    def seen(done: Completion) -> tuple[Any, ...]:  # its stats as built when asked
        assert done.stats is not None
        return (done.text, done.stop_reason, done.reasoning, replace(done.stats, **timing))

    assert seen(whole) == seen(one_by_one)
    began = (whole.stats.time_to_first_answer_token, one_by_one.stats.time_to_first_answer_token)
    assert (began[0] is None) == (began[1] is None)  # both saw the answer begin, or neither


@pytest.mark.parametrize("whole", [False, True])
def test_time_to_first_answer_is_after_reasoning_taken_back(whole: bool) -> None:
    """Untyped reasoning that ends at a bare end tag is not where the answer began.

    The time was that of the reasoning's first fragment.
    """
    pieces = ["plan", " more", "</think>", "\n\nok"]
    reads = [[fragment(p) for p in pieces]] if whole else [[fragment(p)] for p in pieces]
    ticks = iter(range(100))  # a clock reading per call: 0 when the reply is made
    _, done = drive(
        predict(Call(request()), Sink(), errors, clock=lambda: float(next(ticks))),
        Server(*[reads], whole=whole).answer,
    )
    assert (done.text, done.reasoning) == ("ok", "plan more")
    assert done.stats is not None
    # a read per fragment: the clock's 2nd reading, at "ok"; a whole read: when it arrived
    assert done.stats.time_to_first_answer_token == (3.0 if whole else 2.0)


def test_untyped_reasoning_ended_within_one_read_never_streams_as_answer() -> None:
    """A read of several fragments (all that arrived since the last) is not handed out yet.

    Reasoning in it that a later fragment of it ends (a bare end tag) once streamed as answer.
    """
    pieces = ["plan", " more", "</think>", "\n\n{}"]
    server = Server([[fragment(p) for p in pieces]])
    emitted, done = drive(
        predict(Call(request()), sink_for_stream(request()), errors), server.answer
    )
    assert (emitted, done.text, done.reasoning) == (["{}"], "{}", "plan more")


def test_partial_values_begin_again_after_reasoning_taken_back() -> None:
    """Reasoning streamed as answer until ``</think>``: the answer's partial values follow.

    The partial JSON parser kept the reasoning's text, and no partial value came at all.
    """
    pieces = ["Okay,", " so", "</think>", '\n\n{"name": "A"', ', "age": 3}']
    server = Server([[fragment(p)] for p in pieces])
    emitted, _ = drive(
        predict(Call(request(Person)), sink_for_parse_stream(request(Person)), errors),
        server.answer,
    )
    assert emitted == [{"name": "A"}, {"name": "A", "age": 3}, Person(name="A", age=3)]


@pytest.mark.parametrize(
    ("schema", "value", "given"),
    [
        ({"type": "integer"}, 1.0, True),  # an integer to JSON Schema
        ({"type": "integer"}, 1.5, False),
        ({"type": "integer"}, True, False),  # a bool is no integer, though an int to Python
        ({"type": "number"}, 2, True),
        ({"type": "boolean"}, False, True),
        ({"type": "array"}, "q?", False),  # reasoning quoting the question (a probe)
        ({"type": "object"}, "q?", False),
        ({"type": ["object", "null"]}, None, True),
        ({"type": "string"}, "q?", True),
        ({"anyOf": [{"type": "string"}, {"type": "object"}]}, 3, True),  # no type named: any
        ({"anyOf": [{"type": "string"}]}, 3, False),  # one branch: its type (root shielded)
        ({"anyOf": [{"type": "object"}]}, {}, True),
        ({"type": "nonsense"}, 3, True),
        (None, [], True),
    ],
)
def test_partial_values_are_of_a_json_type_the_root_allows(
    schema: dict[str, Any] | None, value: Any, given: bool
) -> None:
    """Found by a probe: text that opened as another JSON type (reasoning quoting the
    question, before a bare end tag) was given out as a partial value of it."""
    kinds = _root_kinds(schema)
    assert (kinds is None or _of_kinds(value, kinds)) is given


def test_partial_values_only_when_changed_then_the_value() -> None:
    chunks = ['{"name": "A', '"', ", ", '"age": 3', "}"]
    server = Server([[fragment(c)] for c in chunks])
    emitted, _ = drive(
        predict(Call(request(Person)), sink_for_parse_stream(request(Person)), errors),
        server.answer,
    )
    assert emitted[-1] == Person(name="A", age=3)
    partials = emitted[:-1]
    assert partials == [{"name": "A"}, {"name": "A", "age": 3}]


def test_parse_re_asks_with_the_errors_then_raises() -> None:
    asked: list[Request] = []

    def complete(effect: Effect) -> Completion | None:
        if isinstance(effect, Deadline):
            return None  # no time limit
        assert isinstance(effect, Complete)
        asked.append(effect.request)
        return Completion('{"name": "x"}', "eosFound")

    with pytest.raises(ParseError) as info:
        drive(parse(request(Person), 1, validator_for(request(Person).plan)), complete)
    assert len(asked) == 2
    assert info.value.attempts == 2
    assert [m.role for m in asked[1].prompt.messages] == ["user", "assistant", "user"]


def test_parse_never_re_asks_a_truncated_reply() -> None:
    def complete(effect: Effect) -> Completion | None:
        if isinstance(effect, Deadline):
            return None
        return Completion('{"name": "x', "maxPredictedTokensReached")

    with pytest.raises(TruncatedOutputError):
        drive(parse(request(Person), 3, validator_for(request(Person).plan)), complete)


def test_a_reasoning_reply_error_on_a_re_ask_counts_the_attempts() -> None:
    """A re-asked reply that spent its budget on reasoning names every attempt, as others do.

    It said ``attempts == 1`` after two predictions.
    """
    replies: list[Completion | Exception] = [
        Completion('{"name": "x"}', "eosFound"),
        EmptyAnswerError("empty", raw="", errors=["empty answer after reasoning"]),
    ]

    def complete(effect: Effect) -> Completion | None:
        if isinstance(effect, Deadline):
            return None
        reply = replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    with pytest.raises(EmptyAnswerError) as info:
        drive(parse(request(Person), 3, validator_for(request(Person).plan)), complete)
    assert (info.value.attempts, replies) == (2, [])


def test_parse_re_asks_within_the_deadline_of_the_whole_call() -> None:
    deadlines: list[float | None] = []

    def complete(effect: Effect) -> Completion | float:
        if isinstance(effect, Deadline):
            return 12.5  # read once: the front's clock, plus the call's limit
        assert isinstance(effect, Complete)
        deadlines.append(effect.deadline)
        return Completion('{"name": "x"}', "eosFound")

    with pytest.raises(ParseError):
        drive(parse(request(Person), 2, validator_for(request(Person).plan)), complete)
    assert deadlines == [12.5, 12.5, 12.5]


def test_a_failed_reconnect_says_why() -> None:
    refused = lms.LMStudioWebsocketError("LM Studio is not reachable at ws://h/llm")
    server = Server([DROP])

    def answer(effect: Effect) -> Any:
        if isinstance(effect, Reconnect):
            raise refused
        return server.answer(effect)

    with pytest.raises(LMStudioConnectionError, match="Cannot talk") as info:
        drive(predict(Call(request()), Sink(), errors), answer)
    assert info.value.__cause__ is refused


def test_a_failed_reconnect_after_a_shown_stream_keeps_the_lost_stream_s_error() -> None:
    """Found by a probe: a stream cut after it had yielded text, with the server still
    stalled, raised the failed reconnection's error (LM Studio "not reachable"), though
    nothing was to be asked again: the error is the stream's, "Lost the connection"."""
    refused = lms.LMStudioWebsocketError("LM Studio is not reachable at ws://h/llm")
    server = Server([[fragment("a")], DROP])
    call = Call(request())

    def answer(effect: Effect) -> Any:
        if isinstance(effect, Reconnect):
            raise refused
        return server.answer(effect)

    with pytest.raises(LMStudioConnectionError, match="Lost the connection") as info:
        drive(predict(call, sink_for_stream(call.request), errors), answer)
    assert "not reachable" not in str(info.value)
    assert info.value.__cause__ is DROP


def test_wait_limit_takes_the_nearer_bound() -> None:
    assert wait_limit(None, 60.0, 0.0) == (60.0, False)
    assert wait_limit(None, None, 0.0) == (None, False)
    assert wait_limit(10.0, 60.0, 5.0) == (5.0, True)
    assert wait_limit(100.0, 60.0, 5.0) == (60.0, False)
    assert wait_limit(1.0, None, 5.0) == (0.0, True)  # already past: no wait at all


def test_a_left_call_is_not_asked_again() -> None:
    server = Server([DROP], [[fragment("b")]])
    call = Call(request())
    call.stopped = True
    with pytest.raises(LMStudioConnectionError):
        drive(predict(call, Sink(), errors), server.answer)
    assert server.kinds().count("Open") == 1


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (lms.LMStudioServerError("Cannot find a model with path or key 'x'"), NotFound),
        (lms.LMStudioChannelClosedError("Server failed to load requested model."), Failed),
        (lms.LMStudioRuntimeError("Attempted to read result from an active channel."), Failed),
    ],
)
def test_only_a_server_that_says_so_means_model_not_found(
    failure: lms.LMStudioError, expected: type[Exception]
) -> None:
    def answer(effect: Effect) -> Any:
        if isinstance(effect, Resolve):
            raise failure
        return 0

    with pytest.raises(expected) as info:
        drive(predict(Call(request()), Sink(), errors), answer)
    assert isinstance(info.value, NotFound) == (expected is NotFound)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork only")
def test_later_runs_in_a_forked_child() -> None:
    """Found by a probe: a child forked while the watcher thread ran inherited its name
    but not the thread: no timer ever ran there (a call left hung was never freed)."""
    import threading

    from outlines_lmstudio import _threads

    parked = threading.Event()
    _threads.later(30, parked.set)  # the watcher thread runs, waiting for it
    from ._forking import in_child

    def a_timer_runs() -> bool:
        ran = threading.Event()
        _threads.later(0.05, ran.set)
        return ran.wait(5)

    assert in_child(a_timer_runs)


def test_later_runs_actions_in_one_shared_thread() -> None:
    import functools
    import threading

    from outlines_lmstudio import _threads

    done: list[int] = []
    finished = threading.Event()
    for i in range(20):
        _threads.later(0.01 * (20 - i), functools.partial(done.append, i))
    _threads.later(0.3, finished.set)
    assert finished.wait(20)
    assert sorted(done) == list(range(20))
    assert done == sorted(done, reverse=True)  # by due time, not by order of arming
    watchers = [t for t in threading.enumerate() if t.name == "outlines-lmstudio-watch"]
    assert len(watchers) == 1


def test_a_reply_ended_by_an_unload_is_asked_again_once() -> None:
    server = Server([[fragment("a")]], [[fragment("b")]], stop_reason="modelUnloaded")
    with pytest.raises(Failed, match="unloaded while it answered, again after") as info:
        drive(predict(Call(request()), Sink(), errors), server.answer)
    assert server.kinds().count("Forget") == 2
    assert server.kinds().count("Open") == 2
    assert "auto-evict" in str(info.value)


def test_an_unload_on_the_attempt_after_a_drop_is_asked_again_once() -> None:
    # Each recovery once (found by a soak test: LM Studio restarted with the model not
    # loaded is a drop, then a model gone): a third attempt, then the unload's error.
    server = Server([DROP], [[fragment("b")]], [[fragment("c")]], stop_reason="modelUnloaded")
    with pytest.raises(Failed, match="unloaded while it answered, again after"):
        drive(predict(Call(request()), Sink(), errors), server.answer)
    assert server.kinds().count("Open") == 3
    assert server.kinds().count("Reconnect") == 1
    assert server.kinds().count("Forget") == 2


def test_a_drop_then_a_model_not_found_is_reconnected_then_resolved_again() -> None:
    server = Server([DROP], [[fragment("c")]])
    opened = 0

    def answer(effect: Effect) -> Any:
        nonlocal opened
        if isinstance(effect, Open):
            opened += 1
            if opened == 2:  # the restarted server has not loaded the model yet
                server.effects.append(effect)
                raise lms.LMStudioModelNotFoundError("No loaded model satisfies all requirements")
        return server.answer(effect)

    _, done = drive(predict(Call(request()), Sink(), errors), answer)
    assert done.text == "c"
    assert server.kinds().count("Open") == 3
    assert server.kinds().count("Reconnect") == 1
    assert server.kinds().count("Forget") == 1


def test_a_second_drop_is_not_asked_a_third_time() -> None:
    server = Server([DROP], [DROP], [[fragment("c")]])
    with pytest.raises(LMStudioConnectionError):
        drive(predict(Call(request()), Sink(), errors), server.answer)
    assert server.kinds().count("Open") == 2


def test_an_unload_under_a_closed_client_says_the_client_was_closed() -> None:
    closed = LMStudioConnectionError("the client was closed")
    server = Server([[fragment("a")]], [[fragment("b")]], stop_reason="modelUnloaded")
    with pytest.raises(LMStudioConnectionError) as info:
        drive(predict(Call(request()), Sink(), lambda *_: closed), server.answer)
    assert info.value is closed


def grammar_request() -> Request:
    plan = OutputPlan("grammar", {"type": "gbnf", "gbnfGrammar": 'root ::= "a"'})
    return Request(format_input("hi"), plan, parse_inference_kwargs({}), "m")


GGUF = ModelTraits("gguf", False, "k")
MLX = ModelTraits("safetensors", False, "other")


@pytest.mark.parametrize(
    ("fresh", "raised"),
    [
        (MLX, UnsupportedOutputTypeError),  # another model now: our error, LM Studio's as cause
        (GGUF, Failed),  # the same model: LM Studio's own error stands
        (lms.LMStudioServerError("gone"), Failed),  # no fresh traits: LM Studio's error stands
    ],
)
def test_a_refusal_by_lm_studio_is_checked_against_fresh_traits(
    fresh: Any, raised: type[Exception]
) -> None:
    refused = lms.LMStudioServerError("GBNF grammars need a GGUF model")
    server = Server([refused])
    asked: list[float | None] = []

    def answer(effect: Effect) -> Any:
        if isinstance(effect, ModelInfo):
            asked.append(effect.since)
            if effect.since is None:
                return GGUF
            if isinstance(fresh, Exception):
                raise fresh
            return fresh
        return server.answer(effect)

    request = grammar_request()
    with pytest.raises(raised) as info:
        drive(predict(Call(request), Sink(), errors), answer)
    assert asked == [None, request.made]  # cached, then traits asked since the call was made
    if raised is UnsupportedOutputTypeError:
        assert info.value.__cause__ is refused
    else:
        assert "GBNF grammars need a GGUF model" in str(info.value)


def test_traits_are_asked_again_before_a_refusal_and_replaced_after_another_models_reply() -> None:
    server = Server([[fragment("a")]])
    notes: list[NoteTraits] = []

    def answer(effect: Effect) -> Any:
        if isinstance(effect, ModelInfo):
            # cached: MLX (stale); LM Studio since the call was made: GGUF
            return MLX if effect.since is None else GGUF
        if isinstance(effect, NoteTraits):
            notes.append(effect)
            return None
        value = server.answer(effect)
        if isinstance(effect, Open):
            info = SimpleNamespace(format="gguf", vision=True, model_key="new")
            stats = SimpleNamespace(stop_reason="eosFound")
            effect.call.reader.result = lambda: SimpleNamespace(stats=stats, model_info=info)
        return value

    ticks = iter([5.0, 6.0, 7.0])
    clock = lambda: next(ticks)  # noqa: E731
    _, done = drive(predict(Call(grammar_request()), Sink(), errors, clock), answer)
    assert done.text == "a"
    assert [(n.identifier, n.traits) for n in notes] == [("m", ModelTraits("gguf", True, "new"))]
    assert notes[0].at == 5.0  # read before the prediction opened: its traits are of then or later
