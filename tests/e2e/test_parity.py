"""The same call on both fronts gives the same outcome: value, error, message, notes, requests.

The other end-to-end tests check each front against what they expect; these compare the two
fronts with each other, so a difference nobody thought to expect (a message, a batch's
assembly, an error's type or cause, what reached the server) fails too. Each scenario runs
on the sync front, then on the async one, against the same emulator reset in between.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from typing import Any

import pydantic
import pytest
from outlines.types import Regex

from outlines_lmstudio import BatchGenerationError
from outlines_lmstudio.testing import Fault, LMStudioEmulator

from .conftest import TEXT_MODEL
from .fronts import Fronts


class Person(pydantic.BaseModel):
    name: str
    age: int


TIMINGS = {"time_to_first_token", "time_to_first_answer_token", "tokens_per_second"}


def plain(value: Any) -> Any:
    """A value both fronts can be compared by (timings only said to be there or not)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: (getattr(value, f.name) is None)
            if f.name in TIMINGS
            else plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
        }
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump()
    return value


def error(exc: BaseException) -> dict[str, Any]:
    seen: dict[str, Any] = {
        "type": type(exc).__name__,
        "message": str(exc),
        "notes": getattr(exc, "__notes__", []),
        "cause": type(exc.__cause__).__name__,
    }
    if isinstance(exc, BatchGenerationError):
        seen["results"] = plain(exc.results)
        seen["errors"] = {index: error(item) for index, item in exc.errors.items()}
    return seen


def outcome(emulator: LMStudioEmulator, call: Callable[[], Any]) -> dict[str, Any]:
    try:
        result = call()
        if hasattr(result, "__next__"):
            result = list(result)
        seen: dict[str, Any] = {"value": plain(result)}
    except Exception as exc:  # the outcome under test
        seen = {"error": error(exc)}
    sent = [(p.model, p.last_user_text, p.structured) for p in emulator.predictions]
    seen["sent"] = sorted(sent, key=repr)  # a batch's items reach the server in any order
    return seen


TEXT = '{"name": "Ann", "age": 3}'
SCENARIOS: dict[str, tuple[Callable[[LMStudioEmulator], None], Callable[[Any], Any]]] = {
    "parse re-asks": (
        lambda e: e.script(TEXT_MODEL, ['{"name": "A"}', "nope", TEXT]),
        lambda m: m.parse("who?", Person, retries=2),
    ),
    "parse runs out of re-asks": (
        lambda e: e.script(TEXT_MODEL, ['{"name": "A"}', "nope"]),
        lambda m: m.parse("who?", Person, retries=1),
    ),
    "parse_stream of a reply that is not JSON": (
        lambda e: e.script(TEXT_MODEL, ["not json"]),
        lambda m: m.parse_stream("who?", Person),
    ),
    "truncated": (lambda e: None, lambda m: m.parse("who?", Person, max_tokens=2)),
    "truncated stream": (lambda e: None, lambda m: m.parse_stream("who?", Person, max_tokens=2)),
    "reasoning reply": (
        lambda e: e.script(TEXT_MODEL, lambda p: f"<think>hmm</think>{TEXT}"),
        lambda m: [m.reply("who?", Person), m.reply_batch(["a", "b"], Person)],
    ),
    "reasoning stream": (
        lambda e: e.script(TEXT_MODEL, [f"<think>hmm</think>{TEXT}"]),
        lambda m: m.reply_stream("who?", Person),
    ),
    "reasoning without an answer": (
        lambda e: e.script(TEXT_MODEL, lambda p: "<think>hmm</think>"),
        lambda m: m.batch(["a", "b"], Person),
    ),
    "server error mid-stream": (
        lambda e: e.add_fault(Fault(kind="error", after_fragments=2, message="Boom")),
        lambda m: m.stream("hi"),
    ),
    "one batch item fails": (
        lambda e: e.add_fault(Fault(kind="error", message="Boom")),
        lambda m: m.batch(["a", "b", "c"], max_concurrency=1),
    ),
    "dropped before the reply, retried": (
        lambda e: e.add_fault(Fault(kind="drop")),
        lambda m: m.reply("hi", max_tokens=4),
    ),
    "dropped twice": (
        lambda e: e.add_fault(Fault(kind="drop", times=2)),
        lambda m: m.parse("hi", int),
    ),
    "model unloaded before the reply": (
        lambda e: e.add_fault(Fault(kind="unload")),
        lambda m: m.reply_stream("hi", max_tokens=4),
    ),
    "unknown model": (lambda e: None, lambda m: m("hi", model="no-such-model")),
    "unknown preset": (lambda e: None, lambda m: m("hi", preset="nope")),
    "grammar mode off GGUF": (
        lambda e: None,
        lambda m: m.parse("hi", Regex(r"\d+"), model="llama-3.2-1b-instruct-mlx"),
    ),
    "stop string": (
        lambda e: e.script(TEXT_MODEL, ["hello STOP world"] * 2),
        lambda m: [m.reply("hi", stop="STOP"), m.parse("hi", str, stop="STOP")],
    ),
    "no answer in time": (
        lambda e: e.add_fault(Fault(kind="hang")),
        # 0.3 s ran out before the prediction opened on a loaded machine (once, locally).
        lambda m: m.parse("hi", Person, timeout=1.5, retries=2),
    ),
    "silent past read_timeout": (
        lambda e: e.add_fault(Fault(kind="hang", after_fragments=1)),
        lambda m: m.reply_stream("hi"),
    ),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_both_fronts_give_the_same_outcome(emulator: LMStudioEmulator, name: str) -> None:
    arrange, act = SCENARIOS[name]
    seen = {}
    for front in ("sync", "async"):
        emulator.reset()
        arrange(emulator)
        fronts = Fronts(front, emulator.api_host)
        try:
            # read_timeout: for "silent past read_timeout"; 0.5 s ran out on a healthy batch
            # item in CI, under parallel tests.
            model = fronts.model(fronts.client(), TEXT_MODEL, grammar=True, read_timeout=2.0)
            seen[front] = outcome(emulator, partial(act, model))
        finally:
            fronts.close()
    assert seen["sync"] == seen["async"]
