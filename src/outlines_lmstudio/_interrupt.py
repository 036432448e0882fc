"""Ctrl-C during a sync prediction: cancel it on the server before raising.

A ``KeyboardInterrupt`` raised inside the SDK's stream iterator closes the
prediction channel first, after which the SDK's ``cancel()`` sends nothing and
LM Studio keeps generating. While the model waits for the server, the first
Ctrl-C is therefore only noted; the model cancels the prediction on the
server and then raises ``KeyboardInterrupt``. The cancel is sent at once, from a
thread of its own, by the guard's `SigintGuard.on_interrupt` (set by the reader
waiting for the server), so a prediction still reading its prompt, or a server that
sends nothing for a while, stops then rather than at its next fragment. A second
Ctrl-C interrupts at once. Only the default handler in the main thread is replaced, never a
handler the application installed.

When SIGINT is ignored (inherited as ignored under ``nohup``, ``cmd &`` from a
non-interactive shell, or a job runner; or ignored by the application), the
guard does nothing: Ctrl-C cannot reach the process, so there is nothing to
defer, and the library never turns an ignored signal back on. Predictions
are then stopped by their time limits and by closing the client, as in any
other thread. The same holds in threads other than the main thread and under
a handler the application installed.

A complete call arms the guard once, and a stream only around each wait
for the next fragment (user code runs between fragments and must see its own
Ctrl-C at once). Handlers are swapped with the C functions under the
``signal`` module (`_RAW`): ``signal.signal`` and ``signal.getsignal`` turn
the handler they return into a ``signal.Handlers`` enum member when they can,
and for a Python function that attempt fails with an exception inside
``enum``, which costs 4 to 13 µs a call against under 1 µs for the system
call itself. The handlers, the signal and the behaviour are the same.
"""

from __future__ import annotations

import contextlib
import importlib
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol, cast

from ._forks import in_child

__all__ = ["SigintGuard"]


class _RawSignal(Protocol):
    def signal(self, signalnum: int, handler: Any, /) -> Any: ...

    def getsignal(self, signalnum: int, /) -> Any: ...


def _raw_signal() -> _RawSignal:
    """CPython's ``_signal`` (what ``signal.py`` wraps), else the ``signal`` module itself.

    ``_signal`` has no type stubs, hence the lookup by name; both take and return
    the same handler objects (``signal.default_int_handler`` is ``_signal``'s).
    """
    try:
        return cast(_RawSignal, importlib.import_module("_signal"))
    except ImportError:  # pragma: no cover - other Python implementations
        return cast(_RawSignal, signal)


_RAW = _raw_signal()
_SIGINT = int(signal.SIGINT)
_DEFAULT: Callable[..., Any] = signal.default_int_handler


class _Main:
    """The main thread's ident, compared on every call (no ``Thread`` object looked up).

    A forked child's main thread is the thread that forked: ``threading`` makes it the
    child's main thread at fork, and this follows (its hook was registered first).
    """

    ident = threading.main_thread().ident

    @classmethod
    def after_fork(cls) -> None:
        cls.ident = threading.main_thread().ident


in_child(_Main.after_fork)


def _quietly(action: Callable[[], object]) -> None:
    """Run ``action``; a cancel that cannot be sent (connection gone) has nothing to stop."""
    with contextlib.suppress(Exception):
        action()


class SigintGuard:
    """Defers the first Ctrl-C while armed (main thread, default handler only).

    Attributes
    ----------
    interrupted
        Whether a Ctrl-C arrived while armed.
    on_interrupt
        Called (in a daemon thread of its own, its errors ignored) when a Ctrl-C is
        noted: what stops the wait at once, e.g. the prediction's cancel.
    armed
        Whether Ctrl-C is being deferred now (read only: `arm` and `disarm` set it).
    whole
        Armed for a whole reply once its prediction opens, until the caller disarms it
        (nothing of the caller's runs between fragments). Before that (a model lookup or
        load, an upload) there is nothing to cancel on the server: Ctrl-C interrupts at once.
    """

    def __init__(self, *, whole: bool = False) -> None:
        self.interrupted = False
        self.on_interrupt: Callable[[], object] | None = None
        self.armed = False
        self.whole = whole
        self.enabled = threading.get_ident() == _Main.ident and _RAW.getsignal(_SIGINT) is _DEFAULT

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self.interrupted = True
        self.armed = False
        _RAW.signal(_SIGINT, _DEFAULT)  # the next one interrupts
        if (stop := self.on_interrupt) is not None:
            # Not in the handler itself: it runs inside whatever the main thread was doing,
            # possibly the SDK's own send, which a cancel sent from here would re-enter.
            threading.Thread(
                target=_quietly, args=(stop,), name="outlines-lmstudio-cancel", daemon=True
            ).start()

    def arm(self) -> None:
        """Start deferring Ctrl-C, in the main thread only.

        A stream made in the main thread may be read in another (a web server's thread
        pool), where Python refuses to set a handler and Ctrl-C is never delivered anyway.
        """
        if (
            self.enabled
            and not self.armed
            and not self.interrupted
            and threading.get_ident() == _Main.ident
            # Checked again: the application may have installed a handler since the guard
            # was made (between a stream's fragments); found by a probe.
            and _RAW.getsignal(_SIGINT) is _DEFAULT
        ):
            _RAW.signal(_SIGINT, self._note)
            self.armed = True

    def disarm(self) -> None:
        """Stop deferring Ctrl-C (the default handler is back, unless it was replaced)."""
        if self.armed:
            self.armed = False
            if _RAW.getsignal(_SIGINT) == self._note:  # a handler set meanwhile stays
                _RAW.signal(_SIGINT, _DEFAULT)
