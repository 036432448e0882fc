"""Reconnecting a client whose websocket to LM Studio was lost.

When LM Studio restarts or a socket drops, the SDK's session for that
namespace stays dead: every later call fails at once with "Client
unexpectedly disconnected". The sessions' public ``disconnect()`` (and, for
the async client, ``connect()``) bring them back. Calls that fail together
(a batch) must reset once, not undo each other's fresh connection, so each
reset bumps a per-client generation and a call resets only the generation it
started with. The generation moves when the reset is done, not when it begins:
a call that began meanwhile used the sessions being reset, and its failure is
the same loss (before, it reset the fresh connection again, dropping the
predictions open on it: in a probe, 10 calls in 30 then waited out their read
timeout, never told by the SDK; see `AsyncReconnects`).

An async reset that fails (LM Studio cannot be reached) is the failure of every call that
waited for it: they get its error too. Retrying, they would find the sessions it left
disconnected, and the async SDK would say so in its own words ("Session must be connected
to create channels"), not that LM Studio is not reachable (in a probe with the server
stopped, 10 calls in 30 did). The sync SDK connects a session on use, so a sync call
retrying says so by itself.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

import lmstudio as lms

from ._cache import copied_error, retrieve_error
from ._forks import renewed
from .errors import OutlinesLMStudioError

__all__ = ["AsyncReconnects", "Reading", "SyncReconnects"]

_RESETS: set[asyncio.Task[None]] = set()


class SyncReconnects:
    """Reset generations of sync clients."""

    def __init__(self) -> None:
        self._generation: weakref.WeakKeyDictionary[object, int] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        renewed(self)

    def _after_fork(self) -> None:
        """Make the lock afresh in a forked child (a parent thread may have held it)."""
        self._lock = threading.Lock()

    def generation(self, client: object) -> int:
        """Return the client's current generation (read before a call)."""
        return self._generation.get(client, 0)

    def reset(self, client: object, seen: int, reset: Callable[[], None]) -> None:
        """Run ``reset`` unless another call already reset since generation ``seen``."""
        with self._lock:
            if self._generation.get(client, 0) != seen:
                return
            try:
                reset()
            finally:
                self._generation[client] = seen + 1


class Reading(Protocol):
    """A prediction being read (`_streams.AsyncReader`), as a reset sees it."""

    @property
    def open(self) -> bool:
        """Whether its prediction's channel is open and the reply has not ended."""

    def lose(self) -> None:
        """End its read with the SDK's error for a lost socket."""


class AsyncReconnects:
    """Reset generations of async clients, and the predictions read on their sessions.

    The async SDK does not always tell the channels of a socket that dropped: its receive
    loop may never see the drop (in a probe, 30 calls at once with the socket dropped
    under them left 6 to 14 reads waiting until their read timeout, none of them ever
    told). A reset knows the socket is gone: it ends the reads that were open on it.
    """

    def __init__(self) -> None:
        self._generation: weakref.WeakKeyDictionary[object, int] = weakref.WeakKeyDictionary()
        self._locks: weakref.WeakKeyDictionary[object, asyncio.Lock] = weakref.WeakKeyDictionary()
        self._reading: weakref.WeakKeyDictionary[object, weakref.WeakSet[Reading]] = (
            weakref.WeakKeyDictionary()
        )
        self._failed: weakref.WeakKeyDictionary[object, BaseException] = weakref.WeakKeyDictionary()

    def reading(self, client: object, reader: Reading) -> None:
        """Note a prediction read on the client's sessions (until it is collected)."""
        readers = self._reading.get(client)
        if readers is None:
            readers = self._reading[client] = weakref.WeakSet()
        readers.add(reader)

    def open_reads(self, client: object) -> list[Reading]:
        """Return the client's predictions whose channel is open, unended (see `reading`)."""
        return [reader for reader in self._reading.get(client, ()) if reader.open]

    def generation(self, client: object) -> int:
        """Return the client's current generation (read before a call)."""
        return self._generation.get(client, 0)

    def reset_later(
        self,
        client: object,
        delay: float,
        stuck: Callable[[], bool],
        unstick: Callable[[int], Coroutine[Any, Any, None]],
    ) -> None:
        """Run ``unstick`` after ``delay`` seconds if ``stuck()`` says so then.

        A model lookup, model info or upload is shared by every call that needs it (the
        caches): one that LM Studio never answers would hold them all, for good.
        ``unstick`` is given the client's generation now, for `reset`: nothing is reset if
        another call reset the client meanwhile.
        """
        loop, seen = asyncio.get_running_loop(), self.generation(client)

        def check() -> None:
            if stuck():
                task = loop.create_task(unstick(seen))
                _RESETS.add(task)  # keep a reference until done
                task.add_done_callback(_RESETS.discard)
                task.add_done_callback(retrieve_error)

        loop.call_later(delay, check)

    async def reset(self, client: object, seen: int, reset: Callable[[], Awaitable[None]]) -> None:
        """Await ``reset`` unless another task already reset since generation ``seen``.

        If the last reset failed to connect (an error of the SDK's, or ours for a connection
        not completed in time), a task that did not reset raises that error too: the
        sessions are still disconnected (see the module docstring).
        """
        lock = self._locks.setdefault(client, asyncio.Lock())
        async with lock:
            if self._generation.get(client, 0) != seen:
                if (failed := self._failed.get(client)) is not None:
                    raise copied_error(failed)
                return
            self._failed.pop(client, None)
            try:
                await reset()
            except (lms.LMStudioError, OutlinesLMStudioError) as exc:
                # A copy has no traceback: kept here, the error's frames would hold the
                # client (the key of this weak mapping) alive. Each task raises a copy of
                # its own, so their tracebacks do not pile up on one shared exception.
                self._failed[client] = copied_error(exc)
                raise
            finally:
                self._generation[client] = seen + 1
