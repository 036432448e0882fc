"""What the operating system runs on SIGINT, below Python's table of handlers.

``signal.getsignal`` answers from Python's own table, which a handler installed in C leaves
alone: after ``faulthandler.register(SIGINT)`` (or an extension's handler) it still says
``default_int_handler``, and ``signal.siginterrupt`` changes only the flags the handler is
installed with. Setting a handler with ``signal.signal`` replaces both. The Ctrl-C guard must
not replace such a handler, nor drop those flags (found by a probe: one call took away a
``faulthandler`` stack dump on Ctrl-C for good), so it reads the system's ``sigaction``
first and gives it back unchanged afterwards.

Why hand-written: Python has no call that reads ``sigaction``, hence ctypes. The C structure's
layout differs between systems; only its first field is read (the handler, first on glibc,
musl, macOS and the BSDs), and the structure is otherwise given back as the C library gave it.
Where there is no ``sigaction`` to call (Windows), `current` returns ``None`` and the guard
goes by Python's table alone, as before.
"""

from __future__ import annotations

import ctypes
import functools
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Action", "current", "put_back"]

_SIZE = 1024
"""Bytes kept for a ``struct sigaction``: more than any system's (152 on glibc x86-64)."""

_SIGINT = int(signal.SIGINT)


@dataclass(frozen=True)
class Action:
    """SIGINT's ``struct sigaction``, as the C library gave it.

    Attributes
    ----------
    handler
        The address of the function the system calls on SIGINT (or ``SIG_DFL``/``SIG_IGN``).
    raw
        The whole structure, to give back with `put_back`.
    """

    handler: int
    raw: ctypes.Array[ctypes.c_char]


@functools.cache
def _sigaction() -> Callable[[int, object, object], int] | None:
    """Return the C library's ``sigaction``, or ``None`` where there is none to call."""
    if sys.platform == "win32":  # pragma: no cover - no sigaction there
        return None
    try:
        call = ctypes.CDLL(None, use_errno=True).sigaction
    except (OSError, AttributeError):  # pragma: no cover - no C library to look in
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    call.restype = ctypes.c_int
    return call


def current() -> Action | None:
    """Return what the system runs on SIGINT now, or ``None`` if it cannot be read."""
    call = _sigaction()
    if call is None:  # pragma: no cover - Windows
        return None
    raw = ctypes.create_string_buffer(_SIZE)
    if call(_SIGINT, None, raw) != 0:  # pragma: no cover - SIGINT is always valid
        return None
    return Action(ctypes.c_void_p.from_buffer(raw).value or 0, raw)


def put_back(action: Action) -> None:
    """Give SIGINT back ``action``, with its flags (Python's table is left as it is)."""
    call = _sigaction()
    if call is not None:  # pragma: no branch - there was one to read it
        call(_SIGINT, action.raw, None)
