"""The time a call spends in the caller's callbacks, which the call's bounds leave out."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["UserTime"]


class UserTime:
    """The time spent in the caller's callbacks during a call, outside its bounds.

    ``timeout`` and ``read_timeout`` bound LM Studio's part of a call. The SDK calls the
    callbacks where it reads the reply (a sync call's worker thread, an async call's event
    loop), so one slow callback (1.5 s in one fragment) ended a call with "LM Studio sent
    nothing for 1 s", and a reply LM Studio had finished in time with "No complete answer
    within 1 s" (found by a probe). The deadline is pushed back by the time callbacks
    timed here take, the idle bound is held while one runs, and its return counts as a
    sign of life (``on_return`` is called then).

    Read from another thread than the callbacks run in (a sync call's caller): see `spent`.
    """

    def __init__(self, on_return: Callable[[], object] | None = None) -> None:
        self.total = 0.0  # seconds in callbacks that returned
        self.since: float | None = None  # when the running one began
        self._on_return = on_return

    def spent(self, now: float) -> float:
        """Seconds spent in the callbacks up to ``now``."""
        since = self.since  # read once: the callback may return meanwhile
        # A returning callback adds to ``total`` before it clears ``since``: at worst, a
        # reading between the two counts its time twice (a later deadline for one wait).
        return self.total if since is None else self.total + now - since

    def timing(self, callbacks: Mapping[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
        """Return ``callbacks`` (by keyword), each with its time counted here."""
        return {name: self._timed(callback) for name, callback in callbacks.items()}

    def _timed(self, callback: Callable[..., Any]) -> Callable[..., Any]:
        def timed_callback(*args: Any) -> Any:
            outer = self.since is None  # one called within another is counted with it
            if outer:
                self.since = time.monotonic()
            try:
                return callback(*args)
            finally:
                if outer:
                    now = time.monotonic()
                    self.total += now - (self.since or now)
                    self.since = None
                    if self._on_return is not None:
                        self._on_return()

        return timed_callback
