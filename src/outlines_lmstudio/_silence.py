"""LM Studio's silence as a waiting reader sees it: stalls of the process left out.

A wait ends late when the process could not run: another thread held the GIL (a regular
expression that backtracks, ``json.loads`` of a big file, a C extension), the process was
stopped (Ctrl-Z), the machine was swapping. LM Studio's messages then wait unread in the
socket, so the time a wait overslept is not LM Studio's silence (found by a probe: a 2 s
GIL hold in another thread failed a healthy call with ``read_timeout=1`` as "LM Studio sent
nothing for 1 s" and cancelled it; an 8 s one after a cancel dropped the client's sockets,
failing another stream on it; a 2 s one after a Ctrl-C sent the second Ctrl-C meant for a
server that does not confirm).

A stall the waiting thread does not see (it ended just before the bound ran out, or while
the caller's code ran) is caught by `SETTLE_SECONDS`: a bound that ran out is acted on
only once it still has after that, once the process could read what waited (found by a
probe with Ctrl-Z: 7 stops in 10 of a stream whose consumer worked between fragments failed,
and every stop a little longer than ``read_timeout``).

The sync SDK bounds each of its waits by its own process-wide limit
(``lmstudio.set_sync_api_timeout``, 60 s), which counts a stall like any time: a wait that
ran out only because the process was stopped past it is told apart by `StalledWait`
(found by a probe: a Ctrl-Z of over a minute failed a call whose reply had come, as "LM
Studio sent nothing for 60 s").

No library measures this, so it is written here. Pure: the callers read the clocks.
"""

from __future__ import annotations

import lmstudio as lms

__all__ = [
    "SDK_STALL_SECONDS",
    "SETTLE_SECONDS",
    "STALL_SECONDS",
    "Silence",
    "StalledWait",
    "sdk_stall",
    "stalled_for",
]

STALL_SECONDS = 0.1
"""How much later than asked a wait may end before the process counts as stalled (less is
the scheduler's)."""

SETTLE_SECONDS = 0.5
"""How long a bound that ran out waits on before it is acted on."""

SDK_STALL_SECONDS = 1.0
"""How much later than the sync SDK's own limit its wait may end before the process counts
as stalled. Higher than `STALL_SECONDS`: a stall there means the request is asked again,
and a machine busy with LM Studio's own model may wake a waiting thread late."""


def stalled_for(started: float, asked: float, now: float) -> float:
    """How long a wait of ``asked`` seconds begun at ``started`` overslept, ending at ``now``.

    0 for lateness under `STALL_SECONDS`. All three are readings of one clock
    (``time.monotonic()``, or an event loop's).
    """
    late = now - started - asked
    return late if late > STALL_SECONDS else 0.0


def sdk_stall(exc: BaseException, began: float, now: float) -> StalledWait | None:
    """Return the `StalledWait` that ``exc`` stands for, if it stands for one.

    ``exc`` is what the SDK raised, its wait begun at ``began`` (``time.monotonic()``) and
    given up at ``now``. ``None`` unless ``exc`` is the SDK's own timeout (its limit run
    out, not ours) and the wait ended more than `SDK_STALL_SECONDS` past the limit: a stall
    of the process. No cancel was sent yet: a caller that sends one notes it (``cancelled``).
    """
    if type(exc) is not lms.LMStudioTimeoutError:  # the SDK's, not ours (a subclass)
        return None
    limit = lms.get_sync_api_timeout()
    if limit is None or (late := now - began - limit) <= SDK_STALL_SECONDS:
        return None
    return StalledWait(limit, late)


class Silence:
    """How long one reader may still wait for LM Studio (its ``read_timeout``).

    The silence since LM Studio was last heard from (``heard``), less the time the
    reader's waits overslept since then (`stalled`); once that reaches the bound, it must
    still have after `SETTLE_SECONDS` more, stalls again left out.
    """

    def __init__(self) -> None:
        self._heard: float | None = None
        self._stalled = 0.0
        self._settling: float | None = None

    def _since(self, heard: float) -> None:
        if heard != self._heard:  # heard from since: earlier stalls and settles no longer count
            self._heard, self._stalled, self._settling = heard, 0.0, None

    def stalled(self, heard: float, seconds: float) -> None:
        """Note a wait that overslept ``seconds``; LM Studio was last heard from at ``heard``."""
        self._since(heard)
        self._stalled += seconds
        if self._settling is not None:  # the settle is the process's time too
            self._settling += seconds

    def left(self, idle: float, heard: float, now: float) -> float:
        """Return how long the reader may still wait; 0 when LM Studio has been silent too long."""
        self._since(heard)
        left = heard + idle + self._stalled - now
        if left > 0:
            self._settling = None
            return left
        if self._settling is None:
            self._settling = now + SETTLE_SECONDS
        return max(self._settling - now, 0.0)


class StalledWait(lms.LMStudioTimeoutError):
    """The sync SDK's wait ran out late: the process was stalled past the SDK's limit.

    What LM Studio sent meanwhile waited unread in the socket, so this is no sign of its
    silence. The SDK gave the request up (released its channel) all the same: a whole
    reply nobody saw part of is asked again (`_flow.predict`), as after a dropped socket.

    Parameters
    ----------
    limit
        The SDK's limit on each wait, in seconds.
    overslept
        How long past it the wait ended (at least that long a stall).
    cancelled
        Whether a cancel of the prediction the SDK gave up was sent.
    """

    def __init__(self, limit: float, overslept: float, *, cancelled: bool = False) -> None:
        super().__init__(
            f"the lmstudio SDK's wait ran out {overslept:.1f} s past its {limit:g} s limit"
        )
        self.limit = limit
        self.overslept = overslept
        self.cancelled = cancelled
