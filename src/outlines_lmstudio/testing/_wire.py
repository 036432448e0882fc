"""Wire primitives shared by every layer: channels, error replies and the peer interface.

The emulator's modules depend in one direction only::

    _server (LMStudioEmulator: lifecycle, public controls)
      -> _protocol (one websocket: authentication, envelopes, dispatch, faults)
        -> _endpoints (RPC and channel handlers)  -> _predict (the predict channels)
          -> the engine that writes the text (_sampler, _gbnf)
    and below all of them: _wire (this module), _state, _lookup, _catalogue, _records, _faults.

Handlers never import the protocol or server modules: they talk to the socket through
`_state.Peer`, the small interface `_protocol.Connection` implements, and to the shared
state through `_state.EmulatorState`. ``tests/testing/test_layers.py`` checks the order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CancelEvent",
    "Channel",
    "ConnectionDropped",
    "RequestError",
    "acquire_unless_cancelled",
    "embedding_overflow",
    "json_mode_schema",
    "max_predicted_tokens",
    "reasoning_budget",
    "server_error",
    "stop_strings",
    "well_formed",
    "wire_int",
]


class RequestError(Exception):
    """Raised by a handler to answer with ``rpcError`` / ``channelError``."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("title"))
        self.error = error


def server_error(title: str, **extra: Any) -> RequestError:
    """Build a `RequestError` with a generic (``LMStudioServerError``) error object."""
    return RequestError({"title": title, **extra})


def embedding_overflow(length: int, context: int) -> str:
    """LM Studio's error for an embedding input longer than the context (examples#29)."""
    return f"Input length {length} exceeds context length {context}"


class ConnectionDropped(Exception):
    """The connection was aborted on purpose (a ``drop`` fault)."""


class CancelEvent(asyncio.Event):
    """An ``asyncio.Event`` that copies and pickles as its state, set or not.

    Once waited on, an event holds the emulator's event loop: a `Prediction` then could not
    be pickled, deep-copied or given to ``dataclasses.asdict`` (found by a probe), and the
    attempt dragged the running loop along. A copy is a new event, set if this one is.
    """

    def __reduce__(self) -> tuple[Any, tuple[bool]]:
        return _cancel_event, (self.is_set(),)


def _cancel_event(is_set: bool) -> CancelEvent:
    """Make a `CancelEvent` (what a pickled or copied one becomes)."""
    event = CancelEvent()
    if is_set:
        event.set()
    return event


@dataclass
class Channel:
    """Server-side state of one open channel."""

    id: int
    endpoint: str
    cancelled: bool = False
    finished: bool = False
    cancel_event: asyncio.Event = field(default_factory=CancelEvent)  # copied in its record
    epoch: int = 0  # the emulator's reset count when it opened (`EmulatorState._epoch`)


async def acquire_unless_cancelled(
    queue: asyncio.Lock | asyncio.Semaphore, cancelled: asyncio.Event
) -> bool:
    """Wait for ``queue``; False, with nothing taken, if ``cancelled`` is set first.

    A prediction cancelled while it waits for a slot or for its engine leaves the queue at
    once, as LM Studio ends a queued prediction; one cancelled by the time its turn comes
    gives the turn back. The caller releases ``queue`` after a True.
    """
    if cancelled.is_set():
        return False
    acquire = asyncio.ensure_future(queue.acquire())
    cancel = asyncio.ensure_future(cancelled.wait())
    try:
        await asyncio.wait((acquire, cancel), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # cancelled meanwhile (the connection closed): give back a turn we got
        if acquire.done() and not acquire.cancelled():
            queue.release()
        raise
    finally:
        cancel.cancel()
        if not acquire.done():
            acquire.cancel()  # the lock or semaphore hands the turn to the next waiter
    if not acquire.done() or acquire.cancelled():
        return False
    if cancelled.is_set():  # the cancel came with the turn: the next waiter has it
        queue.release()
        return False
    return True


def wire_int(value: Any) -> int | None:
    """Read an integer the way LM Studio reads a JSON number (``None`` if it is not one).

    LM Studio is JavaScript: ``5.0`` on the wire is the number 5, which its schemas take as
    an integer. The Python SDK sends such floats (``ttl=1.5`` becomes ``"ttlMs": 1500.0``,
    ``maxTokens=5.0`` the value ``5.0``). A bool is not a number.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def max_predicted_tokens(config: Mapping[str, Any]) -> int | None:
    """Read the reply's token limit from a merged prediction config (``None``: no limit).

    ``llm.prediction.maxPredictedTokens`` is a ``{checked, value}`` field. The TypeScript
    SDK sends ``maxTokens: false`` unchecked; the Python SDK sends it checked with the value
    ``false``. Both mean no limit, not a limit of 0, and so does -1 (the SDKs' types allow
    it: lmstudio-js's ``maxTokens`` docs, "-1: as many tokens as it wants"; llama.cpp's
    ``n_predict``).
    """
    limit = config.get("llm.prediction.maxPredictedTokens")
    if not isinstance(limit, Mapping) or not limit.get("checked"):
        return None
    value = wire_int(limit.get("value"))
    return None if value is None or value < 0 else value


def stop_strings(config: Mapping[str, Any]) -> tuple[str, ...]:
    """Read the stop strings from a merged prediction config, the prompt template's included.

    ``llm.prediction.stopStrings`` come first, then those of ``llm.prediction.promptTemplate``,
    "Additional stop strings to be used with this template" (lmstudio-js's
    ``LLMPromptTemplate``), whatever the template's type (found by a probe: the synthetic
    engine left them out, and a reply ran past one).
    """
    stops = tuple(
        s for s in config.get("llm.prediction.stopStrings") or [] if isinstance(s, str) and s
    )
    template = config.get("llm.prediction.promptTemplate")
    extra = template.get("stopStrings") if isinstance(template, Mapping) else None
    if isinstance(extra, list):
        stops += tuple(
            dict.fromkeys(s for s in extra if isinstance(s, str) and s and s not in stops)
        )
    return stops


def reasoning_budget(config: Mapping[str, Any]) -> int | None:
    """Read the reasoning budget from a merged prediction config (``None``: no budget).

    ``llm.prediction.reasoning.budgetTokens`` is a ``{checked, value}`` field that the
    TypeScript SDK 2 sends for ``reasoningBudget`` (``false``: unchecked). llama.cpp ends
    the reasoning section when it has used that many tokens, and the answer follows.
    """
    budget = config.get("llm.prediction.reasoning.budgetTokens")
    if not isinstance(budget, Mapping) or not budget.get("checked"):
        return None
    value = wire_int(budget.get("value"))
    return None if value is None else max(0, value)


def json_mode_schema(structured: Mapping[str, Any]) -> Any:
    """Return the JSON schema of a ``{"type": "json", ...}`` structured setting.

    Without ``jsonSchema`` (``structured: {type: "json"}``, which lmstudio-js documents as
    "only generate valid JSON") the schema is ``{}``: any JSON document, what llama.cpp's
    converter makes of an empty schema.
    """
    schema = structured.get("jsonSchema")
    return {} if schema is None else schema


def well_formed(text: str) -> str:
    r"""Return ``text`` with each lone surrogate replaced by U+FFFD.

    A JSON string may hold a lone surrogate (``"\ud800"``), and the SDK sends one as
    it is. LM Studio keeps it in its JavaScript string, and its engines get the text
    as UTF-8, where the conversion writes U+FFFD for it (inferred from how JavaScript
    and Node's native addons encode strings, not checked against the app). Python
    cannot encode such a string as UTF-8 at all.

    Parameters
    ----------
    text
        Any string from the wire.

    Returns
    -------
    str
        The same text, encodable as UTF-8 (surrogate pairs are kept whole).
    """
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
