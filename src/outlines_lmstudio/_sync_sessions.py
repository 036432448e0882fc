"""The sync front's sessions: connect, reconnect and drop an ``lmstudio.Client``'s sockets.

The sync SDK cannot be interrupted while it waits: connecting is bounded by
`_threads.connect`, a dead session is reconnected under the client's reset lock, and a
reader that LM Studio stopped answering is woken by dropping the sockets it waits on
(`SyncSessions._watch`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import lmstudio as lms

from . import _flow, _threads
from ._api import ModelApi
from ._common import DRAIN_SECONDS, SYNC_IMAGES, SYNC_RECONNECTS
from ._silence import SETTLE_SECONDS, stalled_for
from ._streams import served

__all__ = ["SyncSessions"]

_PATIENCE = 6
"""How many checks, ``DRAIN_SECONDS`` apart, a left prediction LM Studio does not end waits
for the other predictions (`SyncSessions._unstick_if`): 30 s in all, within the SDK's own
wait limit (60 s), after which its reader gives up and nothing would free the slot it may
hold (found by a probe: under steady traffic, held slots slowed every call for as long as
the traffic went on)."""


class SyncSessions(ModelApi):
    """What `LMStudio` does with its client's sessions, apart from predicting."""

    client: lms.Client

    def _watch(self, thread: threading.Thread, predicting: bool = False) -> None:
        """Drop the client's sessions if ``thread`` still waits on LM Studio after a while.

        A server that does not confirm a cancel within ``DRAIN_SECONDS`` may not be
        answering; dropping its sockets wakes every reader blocked on them (the next call
        reconnects). ``predicting``: ``thread`` waits on a prediction's cancel (see
        `_unstick_if`).
        """
        self._unstick_if(thread.is_alive, predicting)

    def _unstick_if(self, waiting: Callable[[], bool], predicting: bool = False) -> None:
        """Drop the client's sessions if ``waiting()`` still holds after ``DRAIN_SECONDS``.

        Dropping them ends every prediction on the client, others' too. ``predicting``:
        what waits is a left prediction's reader, whose cancel LM Studio has not confirmed;
        while the other predictions on the client are served (`served`: one gets
        fragments, none waits ``DRAIN_SECONDS`` for its first), the drop waits, checked
        again every ``DRAIN_SECONDS``: it cut those predictions (a whole call began again, a
        stream failed; found by a probe). It comes once they are not, and at the latest
        after `_PATIENCE` checks: the left prediction may hold a slot of its model, which
        later calls queue behind (found by a review: they all ran out of time, until the
        client was closed). A model lookup or upload
        left waiting is shared with later calls: its sessions are dropped without the wait.
        """
        generation = SYNC_RECONNECTS.generation(self.client)
        postponed = 0
        since, asked, settled = time.monotonic(), DRAIN_SECONDS, False

        def unstick() -> None:
            nonlocal postponed, since, asked, settled
            if not waiting():
                return
            # A check that ran late saw a stall of the process (`_silence`), not of
            # LM Studio, whose messages may wait unread: it looks again, as when others are
            # served; and the drop comes only after a check `SETTLE_SECONDS` on time (found
            # by a probe: an 8 s GIL hold in another thread, or a Ctrl-Z, right after a
            # cancel dropped the sockets, and failed a healthy stream on the client).
            stalled = stalled_for(since, asked, now := time.monotonic())
            if postponed < _PATIENCE - 1 and (
                stalled or (predicting and served(self.client, DRAIN_SECONDS))
            ):
                postponed += 1
                since, asked, settled = now, DRAIN_SECONDS, False
                _threads.later(asked, unstick)  # not yet
                return
            if not settled:
                since, asked, settled = now, SETTLE_SECONDS, True
                _threads.later(asked, unstick)
                return
            with contextlib.suppress(Exception):  # a closed client: nothing left to drop
                SYNC_RECONNECTS.reset(self.client, generation, self._drop)

        _threads.later(DRAIN_SECONDS, unstick)

    def _connect(self, session: Any) -> None:
        """Connect an SDK session unless it is connected (see `_threads.connect`)."""
        if session.connected:  # most calls: nothing to connect, nothing to hold
            return
        if (closed := self._closed()) is not None:
            raise closed  # a closed client cannot connect (the SDK would leak the attempt)
        with _threads.held():  # bounded by connect_timeout, not read_timeout
            _threads.connect(session, self.connect_timeout, self._connect_error)

    def _reconnect(self, effect: _flow.Reconnect) -> None:
        if (closed := self._closed()) is not None:  # nothing to reconnect: say why
            raise closed
        SYNC_RECONNECTS.reset(self.client, effect.generation, self._reset)

    def _drop(self) -> None:
        """Close the sessions' sockets and forget the uploads tied to them."""
        SYNC_IMAGES.clear(self.client)
        for session in (self.client.llm, self.client.files):
            with contextlib.suppress(lms.LMStudioError):
                session.disconnect()

    def _reset(self) -> None:
        """Reconnect dead sessions, here under the reset lock (one new socket per session)."""
        connected = [s for s in (self.client.llm, self.client.files) if s.connected]
        self._drop()
        for session in connected:
            self._connect(session)
