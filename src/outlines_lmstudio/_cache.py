"""Per-client caches of model handles and uploaded images.

``client.llm.model(key)`` is a server round trip and an image upload sends the
whole file, so both are done once per client and reused. Entries live as long
as the client object (kept on it: `PerClient`). Sync caches make each value under a lock of
its own (one slow upload holds up no other image); async caches share in-flight
work so concurrent first calls do it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Hashable, Iterator
from typing import Any, Generic, TypeVar

from ._forks import renewed
from .errors import (
    LMStudioConnectionError,
    LMStudioModelNotFoundError,
    LMStudioPredictionError,
    LMStudioTimeoutError,
)

__all__ = [
    "LOADS",
    "AsyncClientCache",
    "Heard",
    "LoadProgress",
    "PerClient",
    "SERVER_ERRORS",
    "SyncClientCache",
    "copied_error",
    "retrieve_error",
]

V = TypeVar("V")
T = TypeVar("T")
E = TypeVar("E", bound=BaseException)

_SLOT_NAMES = itertools.count()


class PerClient(Generic[T]):
    """A value per client, kept on the client object itself: a weak-key dict's ``_data``.

    A ``WeakKeyDictionary`` cannot hold a value that refers back to its key: a model handle
    does (handle, session, client), so every client used stayed alive with all its entries
    (found by a probe: 100 clients used and closed, 100 alive, 11 MB). On the client, the
    entries and the client form a cycle the garbage collector frees. Objects with no
    ``__dict__`` (test doubles) are held in a weak-key dict.
    """

    def __init__(self) -> None:
        self._name = f"_outlines_lmstudio_cache_{next(_SLOT_NAMES)}"
        self._weak: weakref.WeakKeyDictionary[object, T] = weakref.WeakKeyDictionary()

    def get(self, client: object, default: T) -> T:
        try:
            store = vars(client)
        except TypeError:
            return self._weak.get(client, default)
        value: T = store.get(self._name, default)
        return value

    def __getitem__(self, client: object) -> T:
        try:
            store = vars(client)
        except TypeError:
            return self._weak[client]
        value: T = store[self._name]
        return value

    def setdefault(self, client: object, default: T) -> T:
        try:
            store = vars(client)
        except TypeError:
            return self._weak.setdefault(client, default)
        value: T = store.setdefault(self._name, default)
        return value

    def pop(self, client: object) -> None:
        try:
            vars(client).pop(self._name, None)
        except TypeError:
            self._weak.pop(client, None)


class _Slot:
    """A key's lock, and how many threads hold it or wait for it."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0


class SyncClientCache(Generic[V]):
    """Values per (client, key), each made at most once at a time.

    Threads asking for the same key wait for the one making it; a key being made (an
    upload that stalls until LM Studio's connection is reset) holds up no other key.
    """

    def __init__(self) -> None:
        self._data: PerClient[dict[Hashable, V]] = PerClient()
        self._slots: weakref.WeakKeyDictionary[object, dict[Hashable, _Slot]] = (
            weakref.WeakKeyDictionary()
        )
        self._guard = threading.Lock()
        renewed(self)

    def _after_fork(self) -> None:
        """Make the locks afresh in a forked child (a parent thread may have held one)."""
        self._slots = weakref.WeakKeyDictionary()
        self._guard = threading.Lock()

    @contextlib.contextmanager
    def _held(self, client: object, key: Hashable) -> Iterator[dict[Hashable, V]]:
        """Hold the key's lock; the last thread to leave drops it.

        Found by a probe: a lock was kept per key for the client's life, one more for every
        model name ever asked, names LM Studio does not have included.
        """
        with self._guard:
            data = self._data.setdefault(client, {})
            slot = self._slots.setdefault(client, {}).setdefault(key, _Slot())
            slot.users += 1
        try:
            with slot.lock:
                yield data
        finally:
            with self._guard:
                slot.users -= 1
                slots = self._slots.get(client, {})
                if not slot.users and slots.get(key) is slot:
                    del slots[key]

    def get(
        self,
        client: object,
        key: Hashable,
        make: Callable[[], V],
        stale: Callable[[V], bool] | None = None,
    ) -> V:
        """Return the cached value, or make it (once, under the key's own lock).

        ``stale``: whether a cached value is too old for this caller, who then makes it
        anew; threads waiting meanwhile take the new value unless it is too old for them.
        """
        try:
            value = self._data[client][key]  # made already: no lock
        except KeyError:
            pass
        else:
            if stale is None or not stale(value):
                return value
        with self._held(client, key) as data:
            if key not in data or (stale is not None and stale(data[key])):
                data[key] = make()
            return data[key]

    def peek(self, client: object, key: Hashable) -> V | None:
        """Return the cached value without making it."""
        return self._data.get(client, {}).get(key)

    def entries(self, client: object) -> dict[Hashable, V]:
        """Return the client's own entries, to read without a lookup by client.

        The dict is the client's until `clear` (which gives the client a new one): hold it
        only for a cache that is never cleared.
        """
        with self._guard:
            return self._data.setdefault(client, {})

    def forget(self, client: object, key: Hashable, stale: object = None) -> None:
        """Drop one entry (e.g. a model the server no longer has).

        Given ``stale``, only if the entry is that value: a newer one stays.
        """
        with self._guard:
            data = self._data.get(client, {})
            if stale is None or data.get(key) is stale:
                data.pop(key, None)

    def put(self, client: object, key: Hashable, value: V) -> None:
        """Replace one entry by a value known to be newer (made elsewhere)."""
        with self._guard:
            self._data.setdefault(client, {})[key] = value

    def clear(self, client: object) -> None:
        """Drop every entry for a client.

        The client's dict is replaced, not emptied: a value made meanwhile (an upload
        through a session being dropped) goes into the old one, and is not kept.
        """
        self._data.pop(client)


class _Abandoned(Exception):
    """The work of a cache entry was given up (`AsyncClientCache.abandon`)."""


def _entry(work: Awaitable[V]) -> asyncio.Future[V]:
    """Return a future resolved by ``work`` (run in a task) unless given up before."""
    task = asyncio.ensure_future(work)
    future: asyncio.Future[V] = task.get_loop().create_future()

    def settle(done: asyncio.Future[V]) -> None:
        if future.done():  # given up: nobody reads this result
            retrieve_error(done)
        elif done.cancelled():
            future.cancel()
        elif (error := done.exception()) is not None:
            future.set_exception(error)
        else:
            future.set_result(done.result())

    task.add_done_callback(settle)
    future.add_done_callback(retrieve_error)
    return future


SERVER_ERRORS = (
    LMStudioConnectionError,
    LMStudioModelNotFoundError,
    LMStudioPredictionError,
    LMStudioTimeoutError,
)
"""The errors that name a host and a model (`errors`)."""


def copied_error(error: E, model: str | None = None) -> E:
    """Return a copy of ``error`` to raise again: no traceback, notes of its own, its cause.

    An error kept to be raised to several callers (those that waited for a search, an
    entering or a reconnection that failed) is raised as a copy: the same object raised in
    several threads or tasks gathers their tracebacks, and its frames would keep the client
    alive; ``copy.copy`` shares the ``__notes__`` list (a note one caller adds, a batch
    item's number, would reach the others) and drops ``__cause__``. ``model``: the model
    of the caller the copy is raised to, named in it instead of the one whose call failed
    first (two models on one client: found by a probe).
    """
    twin = copy.copy(error)
    if model is not None and isinstance(twin, SERVER_ERRORS) and twin.model not in (None, model):
        type(twin).__init__(twin, twin.message, host=twin.host, model=model, hint=twin.hint)
    if (notes := getattr(error, "__notes__", None)) is not None:
        twin.__notes__ = list(notes)
    if error.__cause__ is not None:
        twin.__cause__ = copied_error(error.__cause__)
    twin.__suppress_context__ = error.__suppress_context__
    return twin


def retrieve_error(future: asyncio.Future[Any]) -> None:
    """Mark a finished work's error as seen (a done callback): its callers may all have left.

    Otherwise asyncio logs "Task exception was never retrieved" when the task is collected.
    """
    if not future.cancelled():
        future.exception()


def _unusable(future: asyncio.Future[V], stale: Callable[[V], bool] | None) -> bool:
    """Whether an entry's work ended without a value, or with one ``stale`` finds too old."""
    if not future.done():
        return False
    if future.cancelled() or future.exception() is not None:
        return True
    return stale is not None and stale(future.result())


class AsyncClientCache(Generic[V]):
    """Async values per (client, key); concurrent first calls share one task.

    Each entry is a future of its own, resolved from the task doing the work, so that work
    nobody should wait for any more can be given up (`abandon`) while it goes on.
    """

    def __init__(self) -> None:
        self._data: PerClient[dict[Hashable, asyncio.Future[V]]] = PerClient()

    async def get(
        self,
        client: object,
        key: Hashable,
        make: Callable[[], Awaitable[V]],
        stale: Callable[[V], bool] | None = None,
    ) -> V:
        """Return the cached value, or make it once even if asked concurrently.

        A wait whose work was given up (`abandon`) asks again. ``stale``: whether a value
        is too old for this caller, who then makes it anew (once: concurrent callers share
        that work too); the value of work this caller started is never too old.
        """
        while True:
            data = self._data.setdefault(client, {})
            future = data.get(key)
            mine = future is None or _unusable(future, stale)
            if future is None or mine:
                future = data[key] = _entry(make())
            try:
                # shield: one caller being cancelled must not cancel the shared work.
                value = await asyncio.shield(future)
            except _Abandoned:
                continue
            except BaseException:
                failed = future.done() and (future.cancelled() or future.exception() is not None)
                if failed and data.get(key) is future:
                    del data[key]
                raise
            # Work begun before this caller's bound: ask again (the next round shares the
            # work another such caller began meanwhile).
            if mine or stale is None or not stale(value):
                return value

    def abandon(self, client: object, key: Hashable) -> None:
        """Give up an entry's work: its waiters ask again, the work's result is dropped.

        An entry whose work has ended meanwhile is kept.
        """
        data = self._data.get(client, {})
        future = data.get(key)
        if future is not None and not future.done():
            del data[key]
            future.set_exception(_Abandoned())

    def peek(self, client: object, key: Hashable) -> V | None:
        """Return the cached value if it is ready."""
        future = self._data.get(client, {}).get(key)
        if (
            future is not None
            and future.done()
            and not future.cancelled()
            and not future.exception()
        ):
            return future.result()
        return None

    def pending(self, client: object) -> bool:
        """Tell whether any work for the client is still under way."""
        return any(not future.done() for future in self._data.get(client, {}).values())

    def pending_keys(self, client: object) -> list[Hashable]:
        """Return the keys whose work for the client is still under way."""
        return [key for key, future in self._data.get(client, {}).items() if not future.done()]

    def forget(self, client: object, key: Hashable, stale: object = None) -> None:
        """Drop one entry; given ``stale``, only if it holds that value (none made since)."""
        data = self._data.get(client, {})
        future = data.get(key)
        if future is None:
            return
        if stale is not None and not (
            future.done()
            and not future.cancelled()
            and future.exception() is None
            and future.result() is stale
        ):
            return  # a lookup under way, or a newer value: what the retry wants
        del data[key]

    def put(self, client: object, key: Hashable, value: V) -> None:
        """Replace one entry by a value known to be newer (made elsewhere): a settled future."""
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        future.set_result(value)
        self._data.setdefault(client, {})[key] = future

    def clear(self, client: object) -> None:
        """Drop every entry for a client."""
        self._data.pop(client)


class Heard:
    """When LM Studio was last heard from (``time.monotonic()``): made now, moved by `beat`.

    ``lookups``: the model lookups under way that beat it (`LoadProgress`).
    """

    def __init__(self) -> None:
        self.at = time.monotonic()
        self.lookups = 0

    def beat(self, *_: object) -> None:
        """Note that LM Studio was heard from now (takes and ignores a callback's value)."""
        self.at = time.monotonic()


class LoadProgress:
    """The progress of each model load under way, per (client, model key).

    A model loaded on first use (LM Studio's JIT load) may take minutes, with progress
    reports all along. Every caller waiting for the same load shares its `Heard`, which
    the SDK's ``on_load_progress`` callback beats, so ``read_timeout`` bounds the silence
    between reports for all of them, not the whole load.

    A `Heard` is kept while a lookup beats it, or a caller holds it (until `release`).
    Kept for the client's life instead, one per model name asked for (a name LM Studio
    does not have too), they grew without bound in a service that passes its users'
    ``model=`` on (found by a probe). Not dropped when a caller leaves while the lookup
    goes on: the others waiting for it still hear its progress (found by a review).
    """

    def __init__(self) -> None:
        self._heard: weakref.WeakKeyDictionary[object, dict[Hashable, Heard]] = (
            weakref.WeakKeyDictionary()
        )
        self._guard = threading.Lock()
        renewed(self)

    def _after_fork(self) -> None:
        """Make the lock afresh in a forked child (a parent thread may have held it)."""
        self._guard = threading.Lock()

    def of(self, client: object, key: Hashable) -> Heard:
        """Return the load's `Heard`: the one of the lookup under way, else a new one."""
        with self._guard:
            return self._heard.setdefault(client, {}).setdefault(key, Heard())

    @contextlib.contextmanager
    def looking_up(self, client: object, key: Hashable, heard: Heard) -> Iterator[None]:
        """Hold ``heard`` while a lookup beats it (heard from the lookup's start).

        When the lookup ends, however, ``heard`` is forgotten if no other lookup beats it.
        """
        with self._guard:
            heard.lookups += 1
            heard.beat()
            self._heard.setdefault(client, {}).setdefault(key, heard)
        try:
            yield
        finally:
            with self._guard:
                heard.lookups -= 1
                self._forget_idle(client, key, heard)

    def release(self, client: object, key: Hashable, heard: Heard) -> None:
        """Forget ``heard`` once its caller is done with it, if no lookup beats it."""
        with self._guard:
            self._forget_idle(client, key, heard)

    def _forget_idle(self, client: object, key: Hashable, heard: Heard) -> None:
        loads = self._heard.get(client, {})
        if heard.lookups <= 0 and loads.get(key) is heard:
            del loads[key]


LOADS = LoadProgress()
"""The model loads of every client, both fronts (a client is of one front only)."""
