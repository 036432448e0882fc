"""The effects a flow yields: the I/O it asks its front for, and what a call shares (`Call`).

Each effect names the front method that performs it (`Effect.method`). See `_flow`.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, ClassVar, TypeAlias, TypeVar

import lmstudio as lms
import msgspec

from ._common import Completion, ModelTraits, Request

__all__ = [
    "Answered",
    "Call",
    "Complete",
    "Deadline",
    "Downloaded",
    "Effect",
    "Emit",
    "Flow",
    "Forget",
    "Left",
    "ModelInfo",
    "NoteTraits",
    "Open",
    "Read",
    "Reconnect",
    "Resolve",
    "Upload",
]

T = TypeVar("T")


# -- effects: the I/O a flow asks for --------------------------------------------------------
class Effect(msgspec.Struct, frozen=True, eq=False):
    """A piece of I/O a flow needs; the front's method named `method` performs it.

    Effects are read, never changed (frozen ``msgspec.Struct``s: a call makes several, and
    a Struct costs a tenth of a frozen dataclass to make).

    A driver bounds the wait for it by the read timeout and the call's deadline, unless
    it is not `bounded` (its own wait is bounded where it happens).
    """

    method: ClassVar[str]
    bounded: ClassVar[bool] = True


class Upload(Effect, frozen=True):
    """Upload the call's images (once per client); gives ``{digest: FileHandle}``."""

    method = "_upload"
    bounded = False  # each image's upload is a wait of its own, bounded by the front
    call: Call


class Resolve(Effect, frozen=True):
    """The model handle for the call's key (cached per client).

    The front first notes the client's reconnect generation in `Call.generation`: an
    attempt that loses its socket resets only the generation it started with.
    """

    method = "_resolve"
    bounded = False  # a model load's progress pushes the bound back: bounded by the front
    call: Call


class Downloaded(Effect, frozen=True):
    """The `ModelTraits` of the download that finding the call's model would load.

    ``None`` when finding it loads nothing: a handle is cached for the key, a loaded
    instance has the key as its identifier, or no download matches (LM Studio's own
    lookup then says what it finds). Asked before a call that needs a trait (images,
    grammar mode) resolves its model, so that a model it would be refused is not loaded
    for nothing (found by a probe: a text-only model was loaded, then the image refused).
    """

    method = "_downloaded"
    call: Call


class Forget(Effect, frozen=True):
    """Drop a cached model handle (the server no longer has the model).

    ``handle``: the stale handle; another one cached since, or a lookup under way, is kept
    (found by a probe: each item of an async batch dropped the lookup another item had
    begun, and sent one of its own, which a JIT-loading LM Studio may answer with as many
    instances).
    """

    method = "_forget"
    key: str | None
    handle: Any = None


class Answered(Effect, frozen=True):
    """Give the model that first answered through a handle; record ``model_key`` if none did.

    A key resolves to a loaded instance, whose identifier may later name another model
    (``lms load other --identifier main`` after unloading ``main``): the cached handle then
    sends the key's calls to that model (found by a probe). The record is the handle's own
    (no I/O), so every call still holding a stale handle sees it as stale, whatever the
    others did meanwhile (a review found a record per key raced: 63 of 64 concurrent calls
    took the other model's reply). ``record``: ``False`` for traits, which are no answer.
    """

    method = "_answered"
    handle: Any
    model_key: str
    record: bool = True


class ModelInfo(Effect, frozen=True):
    """The model's `ModelTraits` (its format, whether it takes images), cached per client.

    ``since``: traits LM Studio gave at or after this clock reading (the front's clock), to
    refuse a call on: cached traits asked before are asked again, and what LM Studio says is
    cached (they may be of another model than the one now behind the identifier). Callers
    bound by one reading, or by readings older than an ask under way, share that ask.
    ``None``: the cached traits, however old.
    """

    method = "_model_info"
    handle: Any
    since: float | None = None


class NoteTraits(Effect, frozen=True):
    """Cache a model's `ModelTraits` as a reply's model info gave them (no I/O).

    ``at``: the clock reading before the prediction opened (the traits are of then or later).
    """

    method = "_note_traits"
    identifier: str
    traits: ModelTraits
    at: float


class Open(Effect, frozen=True):
    """Start a prediction; gives a reader the front can `Read`.

    ``live``: the caller sees the reply as it comes (else it may be read in one piece).
    """

    method = "_open"
    call: Call
    handle: Any
    chat: lms.Chat | str
    kwargs: dict[str, Any]
    live: bool = True


class Read(Effect, frozen=True):
    """The next fragments of the open prediction (a non-empty list), or ``None`` at its end."""

    method = "_read"
    bounded = False  # the reader's own bound, which prompt-processing progress pushes back
    call: Call


class Reconnect(Effect, frozen=True):
    """Reset the client's dead sessions, unless a call did since ``generation``."""

    method = "_reconnect"
    generation: int


class Complete(Effect, frozen=True):
    """Run a whole request (its own `predict` flow, under the call's time limit)."""

    method = "_complete"
    request: Request
    deadline: float | None = None
    """The call's `Deadline` when it spans several predictions (``parse`` re-asking);
    ``None``: the prediction gets the call's whole time limit from now, if it has one."""


class Deadline(Effect, frozen=True):
    """When a call of several predictions runs out of time (the front's clock), or ``None``."""

    method = "_call_deadline"
    request: Request


class Emit(msgspec.Struct, eq=False):
    """Something for the caller of a stream: a text fragment, a partial value."""

    value: Any


Flow: TypeAlias = Generator[Effect | Emit, Any, T]


class Left(Exception):
    """The caller left (time up, Ctrl-C): the prediction never started, or was stopped.

    A reply that the leaving stopped (``userStopped``) is not the call's result: a batch
    stopped by Ctrl-C reports such an item as unfinished, not as its cut-off text.
    """


class Call(msgspec.Struct, eq=False):
    """One prediction's state shared by the flow and its driver (never between calls).

    Attributes
    ----------
    request
        The checked request.
    reader
        The front's reader of the prediction currently open, if any. The flow reads its
        ``arrived`` (when each fragment of a whole read arrived, else ``None``), ``at_end``
        (the last read reached the end of the reply) and ``result()``.
    finished
        Whether that prediction ended (completed or failed on the server): a driver
        leaving an unfinished one cancels it on the server.
    done
        The finished reply, once there is one.
    deadline
        The front's clock reading at which the whole call times out, or ``None``.
    front
        The front's own per-call state (a Ctrl-C guard...).
    stopped
        Whether the caller has left (time up, Ctrl-C): no prediction may start any more.
    generation
        The client's reconnect generation when the current attempt began (the front
        notes it as it performs `Resolve`).
    session
        The SDK session the current step waits on, as the front notes it (the model
        session, or the files session during an upload), or ``None`` before the first
        step: a call that runs out of time says whether that connection was complete.
    """

    request: Request
    reader: Any = None
    finished: bool = True
    done: Completion | None = None
    deadline: float | None = None
    front: Any = None
    stopped: bool = False
    generation: int = 0
    session: Any = None
