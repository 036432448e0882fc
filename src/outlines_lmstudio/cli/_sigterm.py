"""SIGTERM ends a command as Ctrl-C does: the same cleanup, then a message and status 143.

``kill``, ``timeout`` and service managers stop a process with SIGTERM, whose default
action ends it at once: no message, a prediction left running on the server, the
temporary file of ``extract --retry-errors`` or of chat's ``/save`` left behind.
`install` gives SIGTERM Ctrl-C's path instead: the handler Ctrl-C has at that moment
runs (the library's guard defers it while a reply streams, and cancels the
prediction), else ``KeyboardInterrupt`` is raised. Where Ctrl-C only stops a reply
(``chat``), `leave_if_terminated` ends the command. ``main`` then reports it and
returns `EXIT_TERMINATED`, the status a shell reports for a process SIGTERM ended.

Only ``signal`` is imported: ``main`` installs the handler before anything else loads.
"""

from __future__ import annotations

import signal
from types import FrameType

__all__ = ["EXIT_TERMINATED", "install", "leave_if_terminated", "terminated"]

EXIT_TERMINATED = 128 + int(signal.SIGTERM)
"""143: the status of a process ended by SIGTERM."""


class _State:
    received = False


def install() -> None:
    """Handle SIGTERM as Ctrl-C, unless it is ignored or handled already (left alone)."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _State.received = True
    ctrl_c = signal.getsignal(signal.SIGINT)
    if callable(ctrl_c):  # the default raises KeyboardInterrupt; the guard defers it
        ctrl_c(int(signal.SIGINT), frame)
    else:  # SIGINT ignored (a background job): SIGTERM must still end the command
        raise KeyboardInterrupt


def terminated() -> bool:
    """Whether SIGTERM was received."""
    return _State.received


def leave_if_terminated() -> None:
    """After a ``KeyboardInterrupt`` that only stops a step: go on ending the command if SIGTERM.

    Raises
    ------
    KeyboardInterrupt
        If SIGTERM was received.
    """
    if _State.received:
        raise KeyboardInterrupt
