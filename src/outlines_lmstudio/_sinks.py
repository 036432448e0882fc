"""Sinks: what a call makes of the answer (text, a rendered value, partial values, chunks)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._common import Completion, Request
from ._reasoning import root_types
from ._reply import Reply, ReplyChunk, ReplyStats

if TYPE_CHECKING:
    from ._partial import PartialJson
    from ._typed import Validator


__all__ = [
    "ChunkSink",
    "Sink",
    "as_reply",
    "sink_for_parse_stream",
    "sink_for_stream",
]


# -- sinks: what a call makes of the answer -------------------------------------------------
class Sink:
    """Turns a prediction's reply into what the caller gets (per call, per attempt).

    Attributes
    ----------
    emitted
        Whether the caller has seen anything yet (then a failed attempt is not retried):
        the sink's items, or a callback that sees the reply as it comes (`_watched`).
    """

    emitted = False
    live = False  # whether the caller sees pieces before the end (else it is fed none)

    def begin(self) -> None:
        """Start an attempt (forget what an earlier, failed attempt sent)."""

    def feed(self, chunk: ReplyChunk) -> Iterable[Any]:
        """Take a piece of the reply (answer or reasoning); return what the caller gets now."""
        return ()

    def restart(self) -> None:
        """Forget the answer fed so far: it proved to be reasoning (the answer begins anew)."""

    def finish(self, done: Completion) -> Iterable[Any]:
        """Take the finished reply; return the caller's last items."""
        return ()


class _TextSink(Sink):
    """Answer text as it arrives (never the reasoning)."""

    live = True

    def feed(self, chunk: ReplyChunk) -> Iterable[Any]:
        if chunk.reasoning:
            return ()
        self.emitted = True
        return (chunk.text,)


class _RenderedSink(Sink):
    """The whole answer rendered once (simple types: ``pos``, ``42``, ``True``)."""

    def __init__(self, render: Callable[[str], str]) -> None:
        self._render = render

    def finish(self, done: Completion) -> Iterable[Any]:
        return (self._render(done.text),)


class _TextSoFar:
    """The answer so far, for a reply that is not JSON (grammar mode, free text)."""

    invalid = False  # as `PartialJson.invalid`: never known before the end here

    def __init__(self) -> None:
        self.text = ""

    def feed(self, fragment: str) -> str | None:
        """Add ``fragment``; return the whole text so far (``None`` while it is empty)."""
        self.text += fragment
        return self.text or None


class _PartialSink(Sink):
    """Partial values of the answer while it streams, then the validated value.

    The partial values of a JSON reply are its partial JSON values; those of a reply in
    a grammar's language (or free text) are its text so far, as the final value is.
    """

    live = True

    def __init__(
        self,
        validator: Validator,
        json: bool,
        stops: Sequence[str] = (),
        schema: Mapping[str, Any] | None = None,
    ) -> None:
        self._validator = validator
        self._json = json
        self._stops = stops
        self._kinds = _root_kinds(schema) if json else None
        self.begin()

    def begin(self) -> None:
        from outlines_lmstudio._partial import PartialJson  # parse_stream only (import time)

        self._parser: PartialJson | _TextSoFar = (
            PartialJson(whole_scalars=True) if self._json else _TextSoFar()
        )
        self._last: Any = None

    def restart(self) -> None:
        self.begin()  # the values given out cannot be taken back; the next ones are right

    def feed(self, chunk: ReplyChunk) -> Iterable[Any]:
        if chunk.reasoning:
            return ()
        value = self._parser.feed(chunk.text)  # linear in the reply's length, not quadratic
        if value is None or value == self._last or self._parser.invalid:
            return ()  # invalid: the reply cannot be valid; its values would contradict those given
        if (kinds := self._kinds) is not None and not _of_kinds(value, kinds):
            # Found by a probe: untagged reasoning that quotes the question, before a bare
            # end tag, gave out a str for a list or an object: no value of the type.
            return ()
        self._last = value
        self.emitted = True
        return (value,)

    def finish(self, done: Completion) -> Iterable[Any]:
        from outlines_lmstudio._typed import check_reply  # typed results only (import time)

        reply = check_reply(self._validator, done.text, done.stop_reason, 1, True, self._stops)
        return (reply[1],)


class ChunkSink(Sink):
    """Every piece of the reply, reasoning included; `reply` holds the whole at the end.

    For a simple type (``whole_answer``) the answer is one piece, rendered, at the end, as
    ``stream`` gives it (``pos``, not the JSON ``"pos"`` in pieces): the answer pieces then
    join to ``reply.text``, as they do for every other type (found by a probe).

    Attributes
    ----------
    reply
        The finished `Reply` (``None`` until the stream has ended).
    """

    live = True

    def __init__(self, render: Callable[[str], str], *, whole_answer: bool = False) -> None:
        self._render = render
        self._whole_answer = whole_answer
        self.reply: Reply | None = None

    def feed(self, chunk: ReplyChunk) -> Iterable[Any]:
        if self._whole_answer and not chunk.reasoning:
            return ()  # given out rendered, whole, by `finish`
        self.emitted = True
        return (chunk,)

    def finish(self, done: Completion) -> Iterable[Any]:
        self.reply = reply = as_reply(done, self._render)
        if self._whole_answer and reply.text:
            return (ReplyChunk(reply.text, reasoning=False),)
        return ()


def sink_for_stream(request: Request) -> Sink:
    """Make the sink of ``generate_stream``: fragments, or one rendered value (simple types)."""
    if request.plan.kind == "simple":
        return _RenderedSink(request.plan.render)
    return _TextSink()


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def _root_kinds(schema: Mapping[str, Any] | None) -> frozenset[str] | None:
    """Return the JSON types the schema's root names, or ``None`` if it names none (any)."""
    names = root_types(schema)
    if names is None or not all(isinstance(n, str) and n in _JSON_TYPES for n in names):
        return None
    return frozenset(names)


def _of_kinds(value: Any, kinds: frozenset[str]) -> bool:
    """Whether a JSON value (as Python's ``json`` reads it) is of one of the JSON ``kinds``."""
    if isinstance(value, bool):  # an int to Python, never an integer to JSON
        return "boolean" in kinds
    if isinstance(value, float) and value.is_integer() and "integer" in kinds:
        return True  # 1.0 is an integer to JSON Schema
    return any(isinstance(value, _JSON_TYPES[kind]) for kind in kinds)


def sink_for_parse_stream(request: Request, context: Any = None) -> Sink:
    """Make the sink of ``parse_stream``: partial values, then the validated value."""
    from outlines_lmstudio._typed import (  # typed results only (import time)
        validator_for,
        with_context,
    )

    json = request.plan.kind in ("json", "simple")
    validator = with_context(validator_for(request.plan), context)
    return _PartialSink(validator, json, request.args.stop_strings(), request.plan.schema)


def as_reply(done: Completion, render: Callable[[str], str]) -> Reply:
    """Make the `Reply` of a finished completion (its text as ``generate`` returns it)."""
    return Reply(render(done.text), done.reasoning, done.stats or ReplyStats(done.stop_reason))
