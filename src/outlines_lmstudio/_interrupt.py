"""Ctrl-C during a sync prediction: cancel it on the server before raising.

A ``KeyboardInterrupt`` raised inside the SDK's stream iterator closes the
prediction channel first, after which the SDK's ``cancel()`` sends nothing and
LM Studio keeps generating. While the model waits for the server, the first
Ctrl-C is therefore only noted; the model cancels the prediction on the
server and then raises ``KeyboardInterrupt``. A second Ctrl-C interrupts at
once. Only the default handler in the main thread is replaced, never a
handler the application installed.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["SigintDeferral", "deferred_sigint"]


class SigintDeferral:
    """Whether a Ctrl-C arrived while it was deferred."""

    def __init__(self) -> None:
        self.interrupted = False


@contextmanager
def deferred_sigint() -> Iterator[SigintDeferral]:
    """Note the first SIGINT instead of raising it (main thread, default handler only).

    Yields
    ------
    SigintDeferral
        Its ``interrupted`` flag is set if a Ctrl-C arrived.
    """
    state = SigintDeferral()
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield state
        return

    def note(signum: int, frame: FrameType | None) -> None:
        state.interrupted = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # the next one interrupts

    signal.signal(signal.SIGINT, note)
    try:
        yield state
    finally:
        if signal.getsignal(signal.SIGINT) is note:
            signal.signal(signal.SIGINT, signal.default_int_handler)
