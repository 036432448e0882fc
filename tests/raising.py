"""Raise an exception where a signal handler's could land in running code."""

from __future__ import annotations

import dis
import sys
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any

__all__ = ["RaiseAt", "Raised"]

# CPython runs Python signal handlers at its "eval breaker" checks: on entering (or resuming)
# a Python function, after a call returns, and at a loop's jump back. A handler's exception is
# raised there, and nowhere else (not between two stores, nor inside a ``with`` statement's
# entry). Python has no hook at those checks, so they are found from the opcodes traced.
_CHECKED_AFTER = frozenset(
    dis.opmap[name]
    for name in ("CALL", "CALL_FUNCTION_EX", "CALL_KW", "JUMP_BACKWARD")
    if name in dis.opmap
)


class Raised(Exception):
    """What `RaiseAt` raises (an application's timeout, say)."""


class RaiseAt:
    """A trace function that raises ``raising`` at the ``at``-th check of chosen code.

    It stands for a signal handler whose exception lands there. Only code for which
    ``chosen`` is true counts, in the thread that runs `run`: its entries and resumptions,
    and the instruction after each of its calls and jumps back.
    """

    def __init__(
        self, at: int, chosen: Callable[[CodeType], bool], raising: type[BaseException] = Raised
    ) -> None:
        self.at = at
        self.chosen = chosen
        self.raising = raising  # KeyboardInterrupt: a Ctrl-C's, which no `except Exception` takes
        self.seen = 0
        self._last: dict[FrameType, int] = {}  # the opcode each traced frame ran last

    @property
    def raised(self) -> bool:
        """Whether the ``at``-th check came (and `Raised` was raised there)."""
        return self.seen >= self.at

    def __call__(self, frame: FrameType, event: str, arg: object) -> Any:
        if not self.chosen(frame.f_code) or self.raised:
            return None
        if event == "call":
            frame.f_trace_opcodes = True
            self._count()
        elif event == "opcode":
            if self._last.get(frame) in _CHECKED_AFTER:
                self._count()
            self._last[frame] = frame.f_code.co_code[frame.f_lasti]
        return self

    def _count(self) -> None:
        self.seen += 1
        if self.raised:
            self._last.clear()
            raise self.raising("raised where a signal handler's exception could land")

    def run(self, call: Callable[[], object]) -> None:
        """Run ``call`` traced; what it raises of ``raising`` is the one raised here."""
        before = sys.gettrace()  # coverage's, under CI
        sys.settrace(self)
        try:
            call()
        except self.raising:
            assert self.raised
        finally:
            sys.settrace(before)
            self._last.clear()
