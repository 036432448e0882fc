"""SIGTERM and SIGHUP end a command as Ctrl-C does: the same cleanup, a message, 128 + signal.

``kill``, ``timeout`` and service managers stop a process with SIGTERM, and a closed
terminal or a dropped SSH session sends SIGHUP. The default action of both ends it at
once: no message, a prediction left running on the server, the temporary file of
``extract --retry-errors`` or of chat's ``/save`` left behind. `install` gives them
Ctrl-C's path instead: the handler Ctrl-C has at that moment runs (the library's guard
defers it while a reply streams, and cancels the prediction), else ``KeyboardInterrupt``
is raised. Where Ctrl-C only stops a reply (``chat``), `leave_if_terminated` ends the
command. ``main`` then reports it and returns `exit_status`, the status a shell reports
for a process the signal ended: 143 for SIGTERM (`EXIT_TERMINATED`), 129 for SIGHUP.

Only ``signal`` is imported: ``main`` installs the handler before anything else loads.
"""

from __future__ import annotations

import signal
from types import FrameType

__all__ = [
    "EXIT_TERMINATED",
    "STOPS",
    "again",
    "exit_status",
    "hold",
    "install",
    "leave_if_terminated",
    "stopped_by",
    "terminated",
]

EXIT_TERMINATED = 128 + int(signal.SIGTERM)
"""143: the status of a process ended by SIGTERM."""

STOPS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)
"""The signals handled as Ctrl-C (Windows has no SIGHUP)."""

_SAID = {"SIGTERM": "terminated (SIGTERM)", "SIGHUP": "hung up (SIGHUP: the terminal closed)"}


class _State:
    received: int | None = None  # the stop signal received, if any
    installed = False
    again = False  # a signal came after `hold`


def install() -> None:
    """Handle SIGTERM and SIGHUP as Ctrl-C, unless ignored or handled already (left alone).

    An ignored SIGHUP (``nohup``) stays ignored: the command outlives its terminal.
    """
    _State.installed = True
    for signum in STOPS:
        if signal.getsignal(signum) is signal.SIG_DFL:
            signal.signal(signum, _on_sigterm)


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
        for signum in (signal.SIGINT, *STOPS):
            if signal.getsignal(signum) is not signal.SIG_IGN:  # ignored stays ignored
                signal.signal(signum, _noted)


def _noted(signum: int, frame: FrameType | None) -> None:
    _State.again = True


def again() -> bool:
    """Whether Ctrl-C, SIGTERM or SIGHUP came after `hold` (an ending command may then leave)."""
    return _State.again


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    if _State.received is not None:  # another while the first is handled: the first ends it
        return
    _State.received = signum
    ctrl_c = signal.getsignal(signal.SIGINT)
    if callable(ctrl_c):  # the default raises KeyboardInterrupt; the guard defers it
        ctrl_c(int(signal.SIGINT), frame)
    else:  # SIGINT ignored (a background job): SIGTERM must still end the command
        raise KeyboardInterrupt


def terminated() -> bool:
    """Whether SIGTERM or SIGHUP was received."""
    return _State.received is not None


def stopped_by() -> str:
    """Say what stopped the command: Ctrl-C, or the stop signal received.

    Returns
    -------
    str
        ``"interrupted"``, ``"terminated (SIGTERM)"`` or ``"hung up (SIGHUP: the terminal
        closed)"``.
    """
    if _State.received is None:
        return "interrupted"
    return _SAID[signal.Signals(_State.received).name]


def exit_status() -> int:
    """Return the status of a command a stop signal ended: 128 + the signal (see `terminated`)."""
    assert _State.received is not None, "no stop signal was received"
    return 128 + _State.received


def leave_if_terminated() -> None:
    """After a ``KeyboardInterrupt`` that only stops a step: end the command if SIGTERM/SIGHUP.

    Raises
    ------
    KeyboardInterrupt
        If SIGTERM or SIGHUP was received.
    """
    if _State.received is not None:
        raise KeyboardInterrupt
