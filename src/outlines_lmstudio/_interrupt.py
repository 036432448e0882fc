"""Ctrl-C during a sync prediction: cancel it on the server before raising.

A ``KeyboardInterrupt`` raised inside the SDK's stream iterator closes the
prediction channel first, after which the SDK's ``cancel()`` sends nothing and
LM Studio keeps generating. While the model waits for the server, the first
Ctrl-C is therefore only noted; the model cancels the prediction on the
server and then raises ``KeyboardInterrupt``. The cancel is sent at once, from a
thread of its own, by the guard's `SigintGuard.on_interrupt` (set by the reader
waiting for the server), so a prediction still reading its prompt, or a server that
sends nothing for a while, stops then rather than at its next fragment. A second
Ctrl-C interrupts at once; a server that has not confirmed the cancel a second later
gets that second Ctrl-C from the reader (`interrupt_again`). Only the default handler in
the main thread is replaced, never a handler the application installed: in Python, or in C
below Python's table (``faulthandler.register``; see `_os_sigint`), whose flags
(``signal.siginterrupt``) are given back too.

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

import _thread
import contextlib
import importlib
import inspect
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol, cast

from . import _os_sigint
from ._forks import in_child

__all__ = ["SigintGuard", "interrupt_again", "redeliver_if_dropped"]


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
        Whether Ctrl-C is being deferred now: set by `arm`, cleared by `disarm` (and by
        its caller right before it, see there).
    whole
        Armed for a whole reply once its prediction opens, until the caller disarms it
        (nothing of the caller's runs between fragments). Before that (a model lookup or
        load, an upload) there is nothing to cancel on the server: Ctrl-C interrupts at once.
    unsent
        ``on_interrupt``, when no thread could be started to call it ("can't start new
        thread"): the reader calls it once the wait returns (`run_unsent`).
    """

    unsent: Callable[[], object] | None = None

    def __init__(self, *, whole: bool = False) -> None:
        self.interrupted = False
        self.on_interrupt: Callable[[], object] | None = None
        self.armed = False
        self.whole = whole
        self.enabled = threading.get_ident() == _Main.ident and (
            _RAW.getsignal(_SIGINT) is _DEFAULT or _reset_left_guard()  # no call if default
        )

    _before: _os_sigint.Action | None = None
    """What the system ran on SIGINT before `arm`, given back with Python's handler."""

    def _note(self, signum: int, frame: FrameType | None) -> None:
        if not self.armed:
            # Left installed after its wait: an exception raised into the wait's end (a
            # signal handler's) skipped the reset (found by a probe). Python's own handler.
            self._put_back()
            _DEFAULT(signum, frame)
        self.interrupted = True
        self.armed = False
        self._put_back()  # the next one interrupts
        if (stop := self.on_interrupt) is not None:
            # Not in the handler itself: it runs inside whatever the main thread was doing,
            # possibly the SDK's own send, which a cancel sent from here would re-enter.
            try:
                threading.Thread(
                    target=_quietly, args=(stop,), name="outlines-lmstudio-cancel", daemon=True
                ).start()
            except RuntimeError:
                # No thread to be had: the prediction went on to its end, and the SDK
                # logged its late fragments (found by a review). Sent by the reader instead.
                self.unsent = stop

    def run_unsent(self) -> None:
        """Call the ``on_interrupt`` no thread could call (see ``unsent``), if any."""
        if (stop := self.unsent) is not None:
            self.unsent = None
            _quietly(stop)

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
            before = _os_sigint.current()
            pythons = _PythonsHandler.address
            if before is not None and pythons is not None and before.handler != pythons:
                return  # a handler installed in C (faulthandler's) runs on SIGINT: left alone
            # Set before the handler: a Ctrl-C right after it is installed runs `_note` at
            # once, which must find what to give back (found by a review).
            self._before = before
            self.armed = True
            _RAW.signal(_SIGINT, self._note)
            if before is not None and pythons is None:
                # The first time: Python's own handler in C is the one just installed. What
                # ran before it, if another, is given back at once (for these microseconds
                # only, a Ctrl-C went to the guard).
                _PythonsHandler.address = pythons = (_os_sigint.current() or before).handler
                if before.handler != pythons:
                    self.armed = False
                    _RAW.signal(_SIGINT, _DEFAULT)
                    _os_sigint.put_back(before)

    def disarm(self) -> None:
        """Stop deferring Ctrl-C (the default handler is back, unless it was replaced).

        A signal handler's exception can be raised at any call or function entry (CPython
        runs Python signal handlers there), this method's own entry included, and one that
        skips the reset leaves the guard's handler installed (found by a probe). Unarmed, it
        acts as Python's own handler (see `_note`) until the next guard resets it. So the
        caller clears ``armed`` in its ``finally`` before it calls this, with no call between,
        and this clears it again for other callers.
        """
        self.armed = False
        if self.enabled and _RAW.getsignal(_SIGINT) == self._note:  # one set meanwhile stays
            self._put_back()

    def _put_back(self) -> None:
        """Put Python's default handler back, with the system's flags of before `arm`."""
        _RAW.signal(_SIGINT, _DEFAULT)
        if (before := self._before) is not None:
            _os_sigint.put_back(before)


class _PythonsHandler:
    """The address of Python's own SIGINT handler in C, once the guard has installed it."""

    address: int | None = None


def _reset_left_guard() -> bool:
    """Give Python's default handler back if a guard's is installed; tell if it was.

    A guard's handler outlives its wait when an exception (a signal handler's) skips the
    reset (found by a probe), and it would leave every later guard disabled. A guard made
    in the main thread finds no other one waiting there, but under a call made during a
    wait (by a finalizer or a signal handler): that wait's Ctrl-C then interrupts at once,
    as without a guard.
    """
    handler = _RAW.getsignal(_SIGINT)
    guard = getattr(handler, "__self__", None)
    if not (isinstance(guard, SigintGuard) and handler == guard._note):
        return False
    guard.armed = False
    guard._put_back()
    return True


# A thread that forks while the main thread waits with a guard armed (a process pool of the
# ``fork`` kind, started from a thread) left its child the guard's handler, which swallowed
# the child's first Ctrl-C (found by a probe). The child runs none of the parent's
# predictions.
in_child(_reset_left_guard)


_MARK = "_outlines_lmstudio_ctrl_c"
"""The attribute that marks a Ctrl-C raised while a stream was left (on the exception
itself: an id() would outlive it, and exceptions take no weak references), and our hooks."""


class _Sent:
    """The last dropped Ctrl-C sent again: when, and how many times in a row."""

    at = -math.inf
    times = 0


REDELIVERY_BOUND = 1.0
"""Most seconds a dropped Ctrl-C waits for the main thread to leave Python's report of it;
also how long after it is sent that one dropped again is taken for it (`_SENDS` at most)."""

_SENDS = 5


def redeliver_if_dropped(exc: KeyboardInterrupt) -> None:
    """Have a Ctrl-C that Python drops, raised while a sync stream was left, come again.

    A stream left by ``break`` (or dropped unread) is closed by its finalizer, and the
    leave waits a moment for LM Studio (`SyncReader.abandon`). A ``KeyboardInterrupt``
    raised there is raised inside the finalizer, and Python drops an exception raised in
    a finalizer: it printed "Exception ignored in: <generator ...>", and the program went
    on as if no Ctrl-C had come (found by a probe). ``exc`` is marked here before it is
    raised; if Python reports it dropped (``sys.unraisablehook``, wrapped here, every other
    report passed on), nothing is printed and SIGINT is sent to the main thread again as
    soon as it has left the report, so the program is interrupted where it runs next. If
    that one is dropped too (the stream was read through a generator of the application's
    whose ``finally`` was still running), it is sent again, up to `_SENDS` times. Raised
    outside a finalizer (``close()`` called), ``exc`` reaches the caller and nothing more
    happens. Python has no other way to learn that an exception was dropped, hence the hook.

    Only under Python's own SIGINT handler: sent again, an application's handler would run
    twice for one Ctrl-C (a "press twice to quit" handler would quit).
    """
    if not _redeliverable():
        return
    vars(exc)[_MARK] = True
    hook = sys.unraisablehook
    if not getattr(hook, _MARK, False):  # ours is not the outermost: wrap what is there
        sys.unraisablehook = _hook_over(hook)


def _hook_over(previous: Callable[[Any], object]) -> Callable[[Any], None]:
    """Return a hook that answers a dropped Ctrl-C (see above), passing the rest on.

    Each wrapping keeps its own ``previous``: an application's hook that calls the one it
    replaced may sit between two of ours, and one shared ``previous`` made the two call
    each other until Python's recursion limit (found by a review).
    """

    def unraisable(report: Any) -> None:
        exc = report.exc_value
        if isinstance(exc, KeyboardInterrupt) and _send_again(exc, report.object):
            threading.Thread(
                target=_interrupt_after,
                args=(_closing(sys._getframe()),),
                name="outlines-lmstudio-ctrl-c",
                daemon=True,
            ).start()
            return
        previous(report)

    vars(unraisable)[_MARK] = True
    return unraisable


def _send_again(exc: KeyboardInterrupt, where: object) -> bool:
    """Whether to send a dropped Ctrl-C again: one marked, or the last one sent again.

    ``where``: what dropped it. The one sent again counts only if a generator's finalizer
    dropped it; an ``atexit`` callback's is reported as Python reports it.
    """
    now = time.monotonic()
    if vars(exc).pop(_MARK, False):
        _Sent.times = 0
    elif (
        now - _Sent.at > REDELIVERY_BOUND or _Sent.times >= _SENDS or not inspect.isgenerator(where)
    ):
        return False
    if not _redeliverable():
        return False
    _Sent.at, _Sent.times = now, _Sent.times + 1
    return True


def _redeliverable() -> bool:
    """Whether a Ctrl-C raised here may be sent again: in the main thread, Python's handler."""
    return threading.get_ident() == _Main.ident and _RAW.getsignal(_SIGINT) is _DEFAULT


def _closing(report: FrameType) -> FrameType:
    """Return the outermost frame the Ctrl-C must not come in (see `_interrupt_after`).

    The report's own frame, or that of a generator being closed around it. The stream may
    be read through a generator of the application's, which its caller's ``break``
    closes: Python collects the stream while that generator unwinds, before its
    ``finally`` runs. Sent as soon as the report was over, the Ctrl-C cut that ``finally``
    short (found by a review). Each generator frame right under the report is taken for
    one being closed; one that runs on (the loop with ``break`` was in a generator) only
    holds the Ctrl-C back up to `REDELIVERY_BOUND`.
    """
    frame = report
    while (caller := frame.f_back) is not None and caller.f_code.co_flags & _GENERATORS:
        frame = caller
    return frame


_GENERATORS = inspect.CO_GENERATOR | inspect.CO_ASYNC_GENERATOR | inspect.CO_COROUTINE


def _interrupt_after(closing: FrameType) -> None:
    """Send SIGINT to the main thread once it is out of ``closing`` (see `_closing`).

    Sent while the main thread still ran the report (or what it calls, such as this
    thread's start), it would be raised and dropped there again. A real signal, not
    ``_thread.interrupt_main``: it also ends a blocking wait (``time.sleep``) the program
    may be in by then. Not once the program has ended (the interpreter exits): it would
    cut an ``atexit`` callback short, and the exit is what a Ctrl-C asks for (found by a
    review).
    """
    main = _Main.ident
    deadline = time.monotonic() + REDELIVERY_BOUND
    while main is not None and _on_stack(closing, sys._current_frames().get(main)):
        if time.monotonic() > deadline:
            break
        time.sleep(0.001)
    del closing
    if not threading.main_thread().is_alive():
        return  # the program has ended: the interpreter exits
    if not callable(_RAW.getsignal(_SIGINT)):
        return  # ignored or default since: no Python handler to raise it
    _send_sigint(main)


def interrupt_again() -> None:
    """Give the main thread the second Ctrl-C, which raises ``KeyboardInterrupt`` at once.

    For a wait the first Ctrl-C was deferred in, once its cancel has gone unconfirmed for
    a while (see `SyncReader`), and only under Python's own handler, which the guard put
    back when the first came: an application's handler would run for a Ctrl-C no one
    pressed. A real signal, as in `_interrupt_after`: it ends the SDK's blocking wait.
    """
    if _RAW.getsignal(_SIGINT) is _DEFAULT:
        _send_sigint(_Main.ident)


def _send_sigint(main: int | None) -> None:
    """Send SIGINT to the main thread (``main``: its ident)."""
    if hasattr(signal, "pthread_kill") and main is not None:
        signal.pthread_kill(main, _SIGINT)
    else:  # pragma: no cover - Windows
        _thread.interrupt_main()


def _on_stack(frame: FrameType, top: FrameType | None) -> bool:
    """Whether ``frame`` is ``top`` or one of its callers."""
    while top is not None:
        if top is frame:
            return True
        top = top.f_back
    return False
