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

__all__ = ["EXIT_TERMINATED", "again", "hold", "install", "leave_if_terminated", "terminated"]

EXIT_TERMINATED = 128 + int(signal.SIGTERM)
"""143: the status of a process ended by SIGTERM."""


class _State:
    received = False
    installed = False
    again = False  # a signal came after `hold`


def install() -> None:
    """Handle SIGTERM as Ctrl-C, unless it is ignored or handled already (left alone)."""
    _State.installed = True
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)


def hold() -> None:
    """Only note Ctrl-C and SIGTERM from now on (`again`): an interrupted command is ending.

    Found by a probe: a second signal while the first was handled (``timeout`` signals the
    process, then its group, milliseconds apart) cut the cleanup short, lost ``extract``'s
    count, or printed a traceback after the message. Called only once a command was
    interrupted, whose exit ``main`` bounds (its wait for worker threads, which a noted
    signal ends). Only on the command line (`install` ran), from the main thread: a program
    that calls ``main(argv)`` keeps its own handlers.
    """
    if _State.installed:
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(signum) is not signal.SIG_IGN:  # ignored stays ignored
                signal.signal(signum, _noted)


def _noted(signum: int, frame: FrameType | None) -> None:
    _State.again = True


def again() -> bool:
    """Whether Ctrl-C or SIGTERM came after `hold` (an ending command may then leave at once)."""
    return _State.again


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    if _State.received:  # a second one while the first is handled: the first ends it
        return
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
