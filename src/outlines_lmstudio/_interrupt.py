"""Ctrl-C during a sync prediction: cancel it on the server before raising.

A ``KeyboardInterrupt`` raised inside the SDK's stream iterator closes the
prediction channel first, after which the SDK's ``cancel()`` sends nothing and
LM Studio keeps generating. While the model waits for the server, the first
Ctrl-C is therefore only noted; the model cancels the prediction on the
server and then raises ``KeyboardInterrupt``. A second Ctrl-C interrupts at
once. Only the default handler in the main thread is replaced, never a
handler the application installed.

Installing a handler costs a few microseconds (two system calls), so a
complete call arms the guard once, and a stream only around each wait for
the next fragment (user code runs between fragments and must see its own
Ctrl-C at once).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

__all__ = ["SigintGuard"]


class SigintGuard:
    """Defers the first Ctrl-C while armed (main thread, default handler only).

    Attributes
    ----------
    interrupted
        Whether a Ctrl-C arrived while armed.
    """

    def __init__(self) -> None:
        self.interrupted = False
        self._armed = False
        self.enabled = (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        )

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self.interrupted = True
        self._armed = False
        signal.signal(signal.SIGINT, signal.default_int_handler)  # the next one interrupts

    @property
    def armed(self) -> bool:
        """Whether Ctrl-C is being deferred now."""
        return self._armed

    def arm(self) -> None:
        """Start deferring Ctrl-C."""
        if self.enabled and not self._armed and not self.interrupted:
            signal.signal(signal.SIGINT, self._note)
            self._armed = True

    def disarm(self) -> None:
        """Stop deferring Ctrl-C (the default handler is back)."""
        if self._armed:
            self._armed = False
            signal.signal(signal.SIGINT, signal.default_int_handler)
