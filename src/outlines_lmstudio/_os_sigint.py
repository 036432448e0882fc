"""What the operating system runs on SIGINT, below Python's table of handlers.

``signal.getsignal`` answers from Python's own table, which a handler installed in C leaves
alone: after ``faulthandler.register(SIGINT)`` (or an extension's handler) it still says
``default_int_handler``, and ``signal.siginterrupt`` changes only the flags the handler is
installed with. Setting a handler with ``signal.signal`` replaces both. The Ctrl-C guard must
not replace such a handler, nor drop those flags (found by a probe: one call took away a
``faulthandler`` stack dump on Ctrl-C for good), so it reads the system's ``sigaction``
first and gives it back unchanged afterwards.

Why hand-written: Python has no call that reads ``sigaction``, hence ctypes. The C structure's
layout differs between systems; only its first field is read, the handler, which comes first
on Linux (glibc, musl), macOS and the BSDs, and the structure is otherwise given back as the C
library gave it. Where the handler is not first (MIPS, where ``sa_flags`` leads; Solaris and
illumos) or there is no ``sigaction`` to call (Windows), `current` returns ``None`` and the
guard goes by Python's table alone, as it did before (found by a review).
"""

from __future__ import annotations

import ctypes
import functools
import platform
import signal
import sys
from collections.abc import Callable
from typing import NamedTuple

__all__ = ["Action", "current", "put_back"]

_WORDS = 64
"""Pointer-sized words kept for a ``struct sigaction``: 512 bytes on 64-bit systems, more
than any system's (152 on glibc x86-64)."""

_Raw = ctypes.c_void_p * _WORDS

_SIGINT = int(signal.SIGINT)


class Action(NamedTuple):
    """SIGINT's ``struct sigaction``, as the C library gave it.

    Attributes
    ----------
    handler
        The address of the function the system calls on SIGINT (or ``SIG_DFL``/``SIG_IGN``).
    raw
        The whole structure, to give back with `put_back`.
    """

    handler: int
    raw: ctypes.Array[ctypes.c_void_p]


@functools.cache
def _sigaction() -> Callable[[int, object, object], int] | None:
    """Return the C library's ``sigaction``, or ``None`` where it cannot be used.

    That is where there is none to call, or where the handler is not the structure's first
    field.
    """
    if sys.platform == "win32" or sys.platform.startswith("sunos"):  # pragma: no cover
        return None
    if platform.machine().lower().startswith("mips"):  # pragma: no cover - flags first
        return None
    try:
        # PyDLL, not CDLL: CDLL lets go of the GIL around each call, and the SDK's websocket
        # thread, busy with the reply, took it; each of the guard's two calls a prediction
        # then waited for it back (found with strace: two GIL handoffs a call, about 60 µs
        # of a 5 ms call). sigaction returns at once, so holding the GIL is harmless.
        call = ctypes.PyDLL(None, use_errno=True).sigaction
    except (OSError, AttributeError):  # pragma: no cover - no C library to look in
        return None
    # No ``argtypes``: ctypes then passes a Python int as a C int, None as NULL and an array
    # as its address, the three kinds given here, without converting each argument through
    # a declared type (half the call's cost, measured: 0.8 against 1.5 µs).
    call.restype = ctypes.c_int
    return call


def current() -> Action | None:
    """Return what the system runs on SIGINT now, or ``None`` if it cannot be read."""
    call = _sigaction()
    if call is None:  # pragma: no cover - Windows
        return None
    raw = _Raw()
    if call(_SIGINT, None, raw) != 0:  # pragma: no cover - SIGINT is always valid
        return None
    return Action(raw[0] or 0, raw)


def put_back(action: Action) -> None:
    """Give SIGINT back ``action``, with its flags (Python's table is left as it is)."""
    call = _sigaction()
    if call is not None:  # pragma: no branch - there was one to read it
        call(_SIGINT, action.raw, None)
