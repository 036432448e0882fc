"""Ctrl-C, SIGTERM and SIGHUP at chat's prompt are seen at once, even while a thread runs.

CPython runs a signal's Python handler at the main thread's next check point. A signal
that lands while the main thread waits for the GIL at the last check point before
``input()`` is noted there but not handled (CPython handles signals before it lets the
GIL go, not after it took it back), and ``input()`` then blocks in ``select`` or ``read``
until a line comes. Found by chat's Ctrl-C test, which lost 1 Ctrl-C at the prompt in 30
while the SDK's thread was busy after a reply; a plain ``print(prompt); input()`` with a
busy thread loses 16 in 100.

`PromptSignals` closes that gap: while it is entered, the C-level signal handler writes
the signal's number to a wakeup pipe (`signal.set_wakeup_fd`), and a watcher thread that
reads a Ctrl-C, SIGTERM or SIGHUP there interrupts the main thread's blocking call, while it is
at the prompt, with SIGURG. Its Python handler does nothing; the interrupted call then
runs the pending handlers (``KeyboardInterrupt``) as for any signal. SIGURG is ignored by
default, so one arriving after the handler is put back does nothing. No library does
this (Python's ``readline`` only checks signals when its ``select`` is interrupted), so
it is written here.

POSIX only (Windows has neither ``pthread_kill`` nor SIGURG, and no ``readline``), from
the main thread only, and left out where the program set a wakeup descriptor or a
SIGURG handler of its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType, TracebackType

from ._sigterm import STOPS

__all__ = ["PromptSignals"]

_WATCHED = frozenset(int(signum) for signum in (signal.SIGINT, *STOPS))
_NUDGE: signal.Signals | None = getattr(signal, "SIGURG", None)
_PAUSES = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64)
"""When the watcher interrupts the prompt after a signal: a signal that landed before the
main thread blocked is only seen by an interruption that comes after it did."""


def _nothing(signum: int, frame: FrameType | None) -> None:
    """SIGURG's handler: the interrupted call runs the handlers of the signals pending."""


class PromptSignals:
    """Make a Ctrl-C, SIGTERM or SIGHUP at the prompt seen at once (see the module docstring).

    Enter it around the session and wrap each read of a line in `prompt`.
    """

    def __init__(self) -> None:
        self._at_prompt = False
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._pipe = (-1, -1)

    def __enter__(self) -> PromptSignals:
        if (
            _NUDGE is None
            or not hasattr(signal, "pthread_kill")
            or threading.current_thread() is not threading.main_thread()
            or signal.getsignal(_NUDGE) is not signal.SIG_DFL
        ):
            return self
        read, write = os.pipe()
        try:
            os.set_blocking(write, False)  # set_wakeup_fd requires it
            before = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        except BaseException:
            os.close(read)
            os.close(write)
            raise
        if before != -1:  # the program's own: left as it was
            signal.set_wakeup_fd(before)
            os.close(read)
            os.close(write)
            return self
        self._pipe = read, write
        self._watcher = threading.Thread(
            target=self._watch,
            args=(read, threading.get_ident()),
            name="outlines-lmstudio prompt signals",
            daemon=True,
        )
        try:
            signal.signal(_NUDGE, _nothing)
            self._watcher.start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is None:
            return
        (read, write), self._pipe = self._pipe, (-1, -1)
        self._stop.set()
        signal.set_wakeup_fd(-1)
        os.close(write)  # the watcher reads the end of its pipe
        if _NUDGE is not None:
            signal.signal(_NUDGE, signal.SIG_DFL)  # ignored: a late one does nothing
        if watcher.ident is not None:  # started
            watcher.join()
        os.close(read)

    @contextlib.contextmanager
    def prompt(self) -> Iterator[None]:
        """Mark the main thread as waiting for a line (`input`) inside the block."""
        self._at_prompt = True
        try:
            yield
        finally:
            self._at_prompt = False

    def _watch(self, read: int, main: int) -> None:
        while not self._stop.is_set():
            try:
                received = os.read(read, 256)
            except OSError:
                return
            if not received:  # the pipe was closed: the session is over
                return
            if _WATCHED.isdisjoint(received):
                continue
            for pause in _PAUSES:
                if self._stop.wait(pause):
                    return
                if self._at_prompt and _NUDGE is not None:
                    try:
                        signal.pthread_kill(main, _NUDGE)
                    except OSError:  # the main thread has ended
                        return
