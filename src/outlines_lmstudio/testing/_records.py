"""What the emulator records: requests, predictions, uploads and a frame trace."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from outlines_lmstudio.testing._wire import CancelEvent

if TYPE_CHECKING:
    from outlines_lmstudio.testing._tools import ToolCall

__all__ = [
    "message_text",
    "REDACTED",
    "Frame",
    "Prediction",
    "RecordedRequest",
    "Recorder",
    "Upload",
    "redact",
]


@dataclass(frozen=True)
class RecordedRequest:
    """One ``rpcCall`` or ``channelCreate`` received by the emulator.

    Attributes
    ----------
    namespace
        The websocket namespace (``"llm"``, ``"embedding"``, ``"system"``, ...).
    endpoint
        The endpoint name, e.g. ``"predict"`` or ``"getOrLoad"``.
    kind
        ``"rpc"`` or ``"channel"``.
    parameter
        The raw ``parameter`` / ``creationParameter`` (``{}`` when absent).
    client_id
        The ``clientIdentifier`` of the client that sent it.
    time
        ``time.monotonic()`` when it arrived.
    """

    namespace: str
    endpoint: str
    kind: Literal["rpc", "channel"]
    parameter: dict[str, Any]
    client_id: str
    time: float


@dataclass
class Prediction:
    """One ``predict`` channel, filled in as the emulator serves it.

    Attributes
    ----------
    model
        The identifier from the request's model specifier; for one that names none (an
        instance reference, as the TypeScript SDK's handles send, or an empty query),
        the identifier of the loaded instance it selects ("" if none does).
    messages
        The raw wire history messages.
    config
        The merged KV fields of the prediction config stack (later layers win).
    structured
        The ``llm.prediction.structured`` value, unless absent or of type ``none``.
    preset
        The ``fuzzyPresetIdentifier``, if any.
    images
        Bytes of the uploaded files referenced by the history, in order.
    text
        The text actually sent in fragments.
    fragments
        The fragment contents, in order.
    cancelled
        Whether a ``cancel`` message arrived.
    cancel_event
        Set when a ``cancel`` message arrives: an engine that waits (for its turn on a
        loaded instance) waits on it too.
    stop_reason
        What went into ``stats.stopReason`` (None if no ``success`` was sent).
    tool_calls
        The tool calls the reply ended with (`ToolCall`).
    done
        Whether it ended: the terminal ``success`` or ``channelError`` was sent, or its
        connection closed first (`disconnected`).
    disconnected
        Whether its connection closed before it ended (the client closed or was killed
        mid-reply, a ``drop`` fault, the emulator stopped): the emulator stopped
        generating and sent nothing more, so ``stop_reason`` and ``error`` stay None.
    error
        The title of the ``channelError`` that ended it (an injected fault, a failing
        reply function, a refused request), or None.
    client_id
        The ``clientIdentifier`` of the client that sent it.
    """

    model: str
    messages: list[dict[str, Any]]
    config: dict[str, Any]
    structured: dict[str, Any] | None
    preset: str | None
    client_id: str
    images: list[bytes] = field(default_factory=list)
    text: str = ""
    fragments: list[str] = field(default_factory=list)
    cancelled: bool = False
    stop_reason: str | None = None
    done: bool = False
    disconnected: bool = False
    error: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    cancel_event: asyncio.Event = field(default_factory=CancelEvent, repr=False, compare=False)
    # The emulator's reset count when it arrived (`EmulatorState._epoch`): a prediction of
    # an earlier test neither takes this test's scripts nor counts in its peak concurrency.
    _epoch: int = field(default=0, init=False, repr=False, compare=False)

    @property
    def last_user_text(self) -> str:
        """The text of the last user message ("" if there is none)."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return message_text(message)
        return ""


def message_text(message: dict[str, Any]) -> str:
    """Join the text parts of a wire chat message."""
    content = message.get("content", [])
    if isinstance(content, str):
        return content
    return "".join(
        str(part.get("text", ""))
        for part in content
        if isinstance(part, dict) and part.get("type") == "text"
    )


@dataclass(frozen=True)
class Upload:
    """A file uploaded with ``uploadFileBase64``."""

    identifier: str
    name: str
    data: bytes
    file_type: str
    client_id: str


@dataclass(frozen=True)
class Frame:
    """One websocket frame, in or out.

    Attributes
    ----------
    direction
        ``"in"`` (client to emulator) or ``"out"``.
    namespace
        The socket's namespace.
    socket_id
        A number identifying the socket within this emulator.
    data
        The parsed JSON object (large base64 payloads are abbreviated; the client
        passkey and other secrets read ``"<redacted>"``).
    time
        ``time.monotonic()`` when it was sent or received.
    """

    direction: Literal["in", "out"]
    namespace: str
    socket_id: int
    data: Any
    time: float


_TRACE_LIMIT = 20_000
_LONG = 200


_SECRETS = frozenset({"clientPasskey", "apiToken"})
REDACTED = "<redacted>"


def redact(data: Any) -> Any:
    """Replace the values of secret keys (the client passkey, tokens) at any depth."""
    if isinstance(data, dict):
        return {
            k: REDACTED if isinstance(k, str) and k in _SECRETS else redact(v)
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [redact(v) for v in data]
    return data


_MANY = 1_000
"""Lean records keep this many items of a list or object, and say how many there were."""


def _abbreviate(data: Any, lean: bool = False) -> Any:
    """Shorten long strings (base64 uploads) so the trace stays small.

    ``lean``: long lists and objects too (found by a probe: the ``emulator`` command kept
    frames of millions of items whole, 280 MB for five, after their client had gone).
    """
    if isinstance(data, str) and len(data) > _LONG:
        return f"{data[:60]}...<{len(data)} chars>"
    if isinstance(data, dict):
        if lean and len(data) > _MANY:
            kept = dict(list(data.items())[:_MANY])
            return {**{k: _abbreviate(v, lean) for k, v in kept.items()}, "...": len(data)}
        return {k: _abbreviate(v, lean) for k, v in data.items()}
    if isinstance(data, list):
        if lean and len(data) > _MANY:
            return [*(_abbreviate(v, lean) for v in data[:_MANY]), f"...<{len(data)} items>"]
        return [_abbreviate(v, lean) for v in data]
    return data


class Recorder:
    """Thread-safe store of everything the emulator saw.

    Parameters
    ----------
    max_records
        None keeps every record (what a test reads). A number keeps at most that many of
        each kind, the newest, and keeps the records lean for a server that runs for long
        (the ``emulator`` command): frames and request parameters are stored with long
        strings shortened, and the bytes of a client's uploads (and the images of its
        predictions) go when the client does.
    """

    def __init__(self, max_records: int | None = None) -> None:
        self.lock = threading.Lock()
        self.max_records = max_records
        self.requests: deque[RecordedRequest] = deque(maxlen=max_records)
        self.predictions: deque[Prediction] = deque(maxlen=max_records)
        self.uploads: deque[Upload] = deque(maxlen=max_records)
        limit = _TRACE_LIMIT if max_records is None else min(_TRACE_LIMIT, max_records)
        self.trace: deque[Frame] = deque(maxlen=limit)
        self.violations: deque[str] = deque(maxlen=max_records)
        self.start = time.monotonic()

    @property
    def lean(self) -> bool:
        """Whether records are kept lean (`max_records` is set)."""
        return self.max_records is not None

    def parameter(self, parameter: Any) -> dict[str, Any]:
        """Return a request's parameter as a `RecordedRequest` keeps it."""
        if not isinstance(parameter, dict):
            return {}
        kept: dict[str, Any] = _abbreviate(parameter, lean=True) if self.lean else parameter
        return kept

    def release(self, client_id: str) -> None:
        """Forget the bytes of a client that is gone, if the records are lean."""
        if not self.lean:
            return  # a test may read an upload after its client closed
        with self.lock:
            for index, upload in enumerate(self.uploads):
                if upload.client_id == client_id and upload.data:
                    self.uploads[index] = replace(upload, data=b"")
            for prediction in self.predictions:
                if prediction.client_id == client_id:
                    prediction.images = []

    def clear(self) -> None:
        """Forget everything recorded so far."""
        with self.lock:
            self.requests.clear()
            self.predictions.clear()
            self.uploads.clear()
            self.trace.clear()
            self.violations.clear()
            self.start = time.monotonic()

    def frame(self, direction: Literal["in", "out"], namespace: str, sid: int, data: Any) -> None:
        """Record one frame (secrets redacted, long uploads abbreviated)."""
        if self.lean or (isinstance(data, dict) and "parameter" in data):
            data = _abbreviate(data, self.lean)
        data = redact(data)
        frame = Frame(direction, namespace, sid, data, time.monotonic())
        with self.lock:
            self.trace.append(frame)

    def format_trace(self, last: int | None = 50) -> str:
        """Render the last ``last`` frames (all if None) as text, one per line."""
        if last is not None and (isinstance(last, bool) or not isinstance(last, int) or last < 0):
            # -1 rendered none, "5" raised a raw TypeError (found by a probe).
            raise ValueError(
                f"last must be a number of frames >= 0, or None for all; got {last!r:.40}"
            )
        with self.lock:
            frames = list(self.trace)
            start = self.start
        if last is not None:
            frames = frames[-last:] if last > 0 else []
        lines = [
            f"LM Studio emulator trace ({len(frames)} frames; -> from the client, <- from "
            "the emulator):"
        ]
        for f in frames:
            arrow = "->" if f.direction == "in" else "<-"
            text = json.dumps(_abbreviate(f.data), ensure_ascii=False, separators=(",", ":"))
            if len(text) > 400:
                text = text[:400] + "..."
            lines.append(f"{f.time - start:9.4f} {arrow} {f.namespace}#{f.socket_id} {text}")
        return "\n".join(lines)
