"""The async front's client: entered once under a lock, closed if entered here, reconnected.

The async SDK neither enters a client by itself nor reconnects a dead session; this is
where `AsyncLMStudio` does both, and resets sessions that work its callers left (a model
lookup LM Studio never answers) still holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import time
import weakref
from types import TracebackType
from typing import Any, Never, Self, Unpack

import httpx
import lmstudio as lms

from . import _flow
from ._api import ModelApi, ModelOptions, shows_options
from ._cache import LOADS, PerClient, copied_error, retrieve_error
from ._common import (
    ASYNC_CLIENT_CLOSED,
    ASYNC_HANDLES,
    ASYNC_IMAGES,
    ASYNC_RECONNECTS,
    ASYNC_TRAITS,
    DRAIN_SECONDS,
)
from ._discovery import enter_async_client, search_for_async_client
from ._forks import in_child, renewed, separate_loop
from ._reconnect import Reading
from ._sdk_errors import (
    client_closed,
    client_entered,
    client_host,
    client_in_other_loop,
    closed_client_error,
    forked_client_error,
    half_entered,
    other_loop_error,
    searched,
    task_manager,
    translate_sdk_error,
    unplug_sessions,
)
from .errors import InvalidClientError, LMStudioConnectionError, OutlinesLMStudioError

__all__ = ["AsyncSessions"]


def _sessions_open(client: lms.AsyncClient) -> bool:
    """Whether the SDK has opened the client's sessions (``client.llm``: after entering it)."""
    try:
        client.llm  # noqa: B018 - raises KeyError until the client is entered
    except KeyError:
        return False
    return True


class _AcrossLoops:
    """The lock under which an entering is checked for and recorded, across event loops."""

    lock = threading.Lock()

    @classmethod
    def after_fork(cls) -> None:
        cls.lock = threading.Lock()  # a parent's thread may have held it


in_child(_AcrossLoops.after_fork)


class _Entering:
    """How one ``AsyncClient`` is entered: shared by every model on it (see `AsyncSessions`).

    Attributes
    ----------
    lock
        The lock that guards entering and closing, with the event loop it belongs to.
    future
        The entering under way, if any.
    failed
        Why the client cannot be used again (a connection not completed in time, after
        which it was closed), if so.
    generation
        How many enterings failed: a caller that waited while one failed gets its
        ``error`` rather than entering again (16 tasks repeated a failed search of the
        default ports one after another, 2 s each; found by a review).
    error
        Why the last entering failed.
    searching
        Whether the entering under way is searching the default ports (nothing entered yet:
        it may be stopped).
    process
        The process the client was entered in (``os.getpid()``), once known: entered by a
        model, or found entered when a model was made on it or entered it.
    """

    def __init__(self) -> None:
        self.process: int | None = None
        self.lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self.future: asyncio.Future[None] | None = None
        self.failed: BaseException | None = None
        self.generation = 0
        self.error: BaseException | None = None
        self.searching = False


_ENTERING: PerClient[_Entering] = PerClient()
"""How each client is entered. Per client, not per model: two models on one client each
entering it under a lock of their own both entered it (found by a probe: a raw
``KeyError: 'llm'`` from the SDK in 3 runs of 10)."""


_CLIENTS: weakref.WeakSet[Any] = weakref.WeakSet()
"""Every client a model was given (while it lives): a forked child detaches their sockets."""


def _entry_of(client: object) -> _Entering:
    """Return how ``client`` is entered, and note it among the clients models were given."""
    with contextlib.suppress(TypeError):  # not weakly referable: a test double
        _CLIENTS.add(client)
    return _ENTERING.setdefault(client, _Entering())


def _after_fork_in_child() -> None:
    """In a forked child, let go of the parent's part of every client models were given.

    Refusing the child's calls (`AsyncSessions._forked`) is not enough: a child that runs
    the parent's event loop runs the clients' readers too, on sockets shared with the
    parent. Their websockets are detached (`unplug_sessions`), and the child's copy of each
    of their loops gets a poller of its own (`separate_loop`). A client the parent entered
    without giving it to a model is not known (docs/reliability.md).
    """
    loops = {}
    for client in list(_CLIENTS):
        unplug_sessions(client)
        if (loop := getattr(task_manager(client), "_event_loop", None)) is not None:
            loops[id(loop)] = loop
    for loop in loops.values():
        separate_loop(loop)


in_child(_after_fork_in_child)


class AsyncSessions(ModelApi):
    """What `AsyncLMStudio` does with its client, apart from predicting.

    Every model on one client enters it through the same `_Entering`: once, whichever
    model's call comes first; that model owns the client (`close` closes it).
    """

    client: lms.AsyncClient

    @shows_options(lms.AsyncClient)
    def __init__(
        self,
        client: lms.AsyncClient,
        model_name: str | None = None,
        *args: Never,  # refused at run time, with a message (`ModelApi`)
        **options: Unpack[ModelOptions],
    ) -> None:
        super().__init__(client, model_name, *args, **options)
        self._entry = _entry_of(client)
        self._note_entered()
        self._ready = False
        self._owns_client = False
        self._entering: asyncio.Future[None] | None = None  # the last one this model started
        renewed(self)

    def _after_fork(self) -> None:
        """In a forked child, make the next call check the client's process (`_forked`).

        A client entered at the fork was entered in the parent, by this model or by its
        user after the model was made (a review: the child got the other-loop error, whose
        hint it cannot follow). The child owns none of it: another client may be given.
        """
        self._note_entered(os.getppid())
        self._ready = self._owns_client = False

    def _note_entered(self, process: int | None = None) -> None:
        """Note ``process`` (default: this one) as the entered client's, if none is known."""
        if self._entry.process is None and client_entered(self.client):
            self._entry.process = os.getpid() if process is None else process

    def _forked(self) -> LMStudioConnectionError | None:
        """Return the error of a call through a client entered in the process this one forked from.

        Its websocket is the parent's: found by a probe, a child's calls read the parent's
        replies (and the parent's the child's, or waited) and returned the wrong text as a
        result. A client not entered there is the child's to enter (a review: a model made
        at import, used first by fork workers, was refused). Not known: a client the parent
        entered itself and never gave to a model before the fork (docs/reliability.md).
        """
        if self._entry.process in (None, os.getpid()):
            return None
        return forked_client_error(client_host(self.client), self.model_name, shared=True)

    def _replace_client(self, client: object) -> None:
        """Take another client (``model.client = ...``): connect to it on the next call.

        Found by a review: the model went on as if connected, with the first client's
        state, and its next call failed on the SDK's bare KeyError.

        Raises
        ------
        InvalidClientError
            While the model holds a client it connected itself: it would be left open.
        """
        if self._owns_client and not client_closed(self.client):
            raise InvalidClientError(
                "This model connected its lmstudio.AsyncClient itself: await model.close() "
                "before giving it another client (or make a new model for that one), so that "
                "the first is not left connected."
            )
        self._entry = _entry_of(client)
        self._note_entered()
        self._ready = self._owns_client = False
        self._entering = None

    def _asyncio_loop(self) -> asyncio.AbstractEventLoop:
        """Return the running asyncio loop, or say that the async model needs one.

        Found by a review: under trio (alone, or anyio's trio backend) a call raised a bare
        "RuntimeError: no running event loop" from our own code, and a batch handed trio an
        asyncio future.

        Found by a probe: in a notebook under ``%autoawait trio``, IPython runs trio inside
        the kernel's running asyncio loop, so a loop was found, the entering was started on
        it and awaited from trio (trio's bare ``TypeError``, and a "Future exception was
        never retrieved" report later).

        Raises
        ------
        LMStudioConnectionError
            When no asyncio event loop runs, or trio runs this code.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or _under_trio():
            where = (
                "no asyncio event loop runs here (trio?)"
                if loop is None
                # trio inside a running asyncio loop: IPython's %autoawait trio
                else "trio runs this code (IPython's %autoawait trio?), not the asyncio loop"
            )
            raise LMStudioConnectionError(
                f"The async model runs on asyncio, as the lmstudio SDK's AsyncClient does, "
                f"and {where}.",
                model=self.model_name,
                hint="Run it under asyncio (uvloop and anyio's asyncio backend work), or "
                "use the sync model, from_lmstudio(lmstudio.Client(...)), in a worker thread.",
            )
        return loop

    def _lock(self) -> asyncio.Lock:
        """Return the client's lock that guards entering and closing, one per event loop.

        An ``asyncio.Lock`` that was ever waited on belongs to that loop: a model whose first
        calls failed to connect in one ``asyncio.run`` must still connect in the next one.
        """
        loop, entry = self._asyncio_loop(), self._entry
        if entry.lock is None or entry.lock[0] is not loop:
            entry.lock = (loop, asyncio.Lock())
        return entry.lock[1]

    async def _ensure_client(self, seen: int | None = None) -> None:
        """Enter the client once, unless an entering failed since ``seen`` (its error then).

        ``seen``: the failed enterings counted when the call was made (default: now). A
        batch's items pass the count at the batch's start: one that starts after an
        earlier item's failed entering, held by the concurrency limit, fails with its error
        instead of searching the default ports again (16 items, 4 at a time, searched 4
        times in turn: found by a review).
        """
        if not self._ready:
            if (forked := self._forked()) is not None:
                raise forked
            seen = self._entry.generation if seen is None else seen
            async with self._lock():
                await self._enter_once(seen)

    async def _enter_once(self, seen: int | None = None) -> None:
        """Enter the client unless it is already entered (called under the lock).

        The entering runs in a task of its own, which a caller cancelled meanwhile (``wait_for``
        around a first call, a cancelled task) leaves running: stopped halfway, it would leave
        the client half entered, which the SDK cannot undo. The next caller waits for it,
        through this model or another one on the same client.
        """
        if not self._ready:
            with _AcrossLoops.lock:  # another loop's thread may be here: see `_entering_elsewhere`
                if self._entering_elsewhere():
                    raise other_loop_error(client_host(self.client), self.model_name, opening=True)
                entering = self._pending_entering()
                if entering is None:
                    entry = self._entry
                    if seen is not None and entry.generation != seen and entry.error is not None:
                        raise copied_error(entry.error, self.model_name)  # the one it waited for
                    self._entry.future = entering = asyncio.ensure_future(self._enter_recorded())
                    entering.add_done_callback(retrieve_error)
                    self._entering = entering  # see `close`
            await asyncio.shield(entering)
            self._ready = True

    def _entering_elsewhere(self) -> bool:
        """Whether another event loop, running, is entering the client now.

        Entered from two loops at once, the client failed at random in the second one: the
        SDK's own ``RuntimeError`` ("bound to a different event loop"), its error called a
        failed prediction, or the client said to be closed (found by a probe, about 1
        first call in 40 from two loops); the SDK by hand hung once. The second loop is told
        that the client is being opened in another. Checked and the entering recorded under
        `_AcrossLoops.lock`: two loops' threads checking at once both went on. A loop that has
        stopped (``run_until_complete`` left it, the entering pending) goes no further: the
        client is entered here, as it was before (found by a review).
        """
        entering = self._entry.future
        if entering is None or entering.done():
            return False
        loop = entering.get_loop()
        return loop is not asyncio.get_running_loop() and loop.is_running()

    def _pending_entering(self) -> asyncio.Future[None] | None:
        """Return the entering of the client still under way in this event loop, if any."""
        entering = self._entry.future
        if entering is None or entering.done():
            return None
        return entering if entering.get_loop() is asyncio.get_running_loop() else None

    async def _enter_recorded(self) -> None:
        """`_enter`, recording a failure for the callers that waited for it."""
        try:
            await self._enter()
        except Exception as exc:
            self._entry.error = copied_error(exc)
            self._entry.generation += 1
            raise

    async def _enter(self) -> None:
        if (failed := self._entry.failed) is not None:
            # Checked first: a client given up after its model session was opened (a later
            # session failed) has one, and the next call went on as if it were entered, to
            # fail as "closed" by the user (found by a probe out of file descriptors).
            raise self._unusable_error(failed) from failed
        if not _sessions_open(self.client):
            # Not inside an ``except KeyError`` (the check's), so an error of the connecting
            # is not shown "during handling of" a KeyError (found by a probe of tracebacks).
            try:
                # Finds LM Studio if no host; the search is not counted in connect_timeout.
                self._entry.searching = True
                try:
                    found = await search_for_async_client(self.client, self.model_name)
                finally:
                    self._entry.searching = False
                await enter_async_client(
                    self.client, self.model_name, self.connect_timeout, found=found
                )
            except OutlinesLMStudioError:
                raise  # ours (an lmstudio.LMStudioError too): said as it is
            except lms.LMStudioError as exc:
                self._if_closed_by_owner(exc)
                if not half_entered(self.client):  # nothing opened: a later call tries again
                    raise self._error(exc, None, "connect") from exc
                await self._give_up(exc)
                raise self._unusable_error(exc) from exc
            except httpx.HTTPError as exc:  # the SDK's probe of the host is httpx
                raise self._connect_error(exc) from exc
            except TimeoutError as exc:
                self._if_closed_by_owner(exc)  # the SDK's entering may then wait for good
                await self._give_up(exc)
                raise self._unusable_error(exc) from exc
            except Exception as exc:
                # Anything else (no thread for a probe: "can't start new thread") left a
                # client half entered as it was: later calls found it entered without its
                # model session, a raw KeyError (found by a probe of exhausted resources).
                if not half_entered(self.client):
                    raise
                await self._give_up(exc)
                raise self._unusable_error(exc) from exc
            self._owns_client = True
        self._note_entered()
        self._ready = True

    def _if_closed_by_owner(self, exc: BaseException) -> None:
        """Raise the closed client's error if its owner closed it while it was entered.

        The SDK's sessions then fail as "not reachable" (or its entering waits out
        ``connect_timeout``), and this said to start LM Studio's server or check the host,
        for that call and every later one (found by a probe of random sequences).
        """
        if client_closed(self.client):
            self._entry.failed = closed = closed_client_error(
                client_host(self.client), self.model_name, in_a_loop=True
            )
            raise copied_error(closed, self.model_name) from exc

    async def _give_up(self, exc: BaseException) -> None:
        """Close a client half entered by a failed entering: it cannot be entered again.

        The SDK opens its sessions only on a client that has none, and does not forget them
        when it closes (see `half_entered`): every later call says why (`_unusable_error`).
        """
        self._entry.failed = exc
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.aclose(), self.connect_timeout)

    def _unusable_error(self, exc: BaseException) -> LMStudioConnectionError:
        """Our error for a client that a failed entering left unusable (`_give_up`)."""
        if isinstance(exc, LMStudioConnectionError):  # closed by its owner: said already
            return copied_error(exc, self.model_name)
        if isinstance(exc, TimeoutError):
            return self._connect_error(exc)  # it says the client was closed
        host = client_host(self.client)
        if isinstance(exc, asyncio.CancelledError):  # see `close`
            return LMStudioConnectionError(
                f"The model was closed while it connected to LM Studio; {ASYNC_CLIENT_CLOSED}",
                host=host,
                model=self.model_name,
            )
        error = translate_sdk_error(
            exc, host=host, model=self.model_name, stage="connect", searched=searched(self.client)
        )
        what = getattr(error, "message", None) or f"Cannot connect to LM Studio: {exc}"
        closed = ASYNC_CLIENT_CLOSED
        what += f" {closed[0].upper()}{closed[1:]}." if what.endswith((".", "?")) else f"; {closed}"
        return LMStudioConnectionError(
            what,
            host=host,
            model=self.model_name,
            hint=getattr(error, "hint", None),
        )

    async def close(self) -> None:
        """Close the client if this model entered it; safe to call more than once.

        A client whose event loop has ended (an earlier ``asyncio.run``, or ``loop.close()``)
        is closed already.

        Raises
        ------
        LMStudioConnectionError
            From another event loop than the one that opened the client, while that one
            runs: nothing is closed (the SDK waited 20 s, raised its own error and left the
            client broken in its loop; found by a probe).
        """
        if self._forked() is not None:
            # The parent's: closing it here would close the parent's connection.
            self._ready = self._owns_client = False
            return
        if self._owns_client and client_in_other_loop(self.client):
            raise other_loop_error(client_host(self.client), self.model_name, "nothing was closed")
        async with self._lock():
            if (entering := self._pending_entering()) is not None:
                # Its caller left. While it searches the default ports (up to 2 s a port),
                # nothing is entered: the search is left to end unread (found by a probe:
                # close() waited 3.7 s for it behind two servers that stream). Past that,
                # this model's own entering is stopped too: the SDK's connect may wait up
                # to connect_timeout, or for good (found by a probe: close() never returned
                # with connect_timeout=None); stopped halfway, the client cannot be entered
                # again: it is closed, and later calls say so.
                if (searching := self._entry.searching) or entering is self._entering:
                    entering.cancel()
                    await asyncio.wait([entering])
                    if not searching:
                        await self._give_up(asyncio.CancelledError())
                else:
                    with contextlib.suppress(Exception):  # another model's: it goes on
                        await asyncio.shield(entering)
            if self._owns_client:
                self._owns_client = False
                ASYNC_HANDLES.clear(self.client)
                ASYNC_IMAGES.clear(self.client)
                if not client_closed(self.client):
                    await self.client.aclose()
            self._ready = False

    async def __aenter__(self) -> Self:
        """Connect the client now (entering it if it is not entered) and return the model.

        A connection failure is raised here rather than at the first call.

        Returns
        -------
        Self
            The model.
        """
        await self._ensure_client()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """`close` the model: a client it entered itself is closed, one you entered is not."""
        await self.close()

    def _unstick_later(self) -> None:
        """Free the work its callers left (a lookup...) if it still waits a while later.

        As on the sync front (`LMStudio._watch`): see `AsyncReconnects.reset_later`.
        """
        ASYNC_RECONNECTS.reset_later(self.client, DRAIN_SECONDS, self._stuck, self._unstick)

    def _stuck(self) -> bool:
        """Tell whether shared work still waits for LM Studio (the client still open)."""
        if self._closed() is not None:
            return False
        return bool(self._stuck_lookups()) or ASYNC_IMAGES.pending(self.client)

    def _stuck_lookups(self) -> list[tuple[Any, Any]]:
        """Return the shared lookups still waiting: ``(cache, key)``.

        Model info waits; a model lookup does unless it is a load that reported progress
        within `DRAIN_SECONDS` (a large model loads for minutes).
        """
        client, now = self.client, time.monotonic()
        stuck: list[tuple[Any, Any]] = [
            (ASYNC_TRAITS, k) for k in ASYNC_TRAITS.pending_keys(client)
        ]
        stuck += [
            (ASYNC_HANDLES, key)
            for key in ASYNC_HANDLES.pending_keys(client)
            if not key or now - LOADS.of(client, key).at >= DRAIN_SECONDS
        ]
        return stuck

    async def _unstick(self, seen: int) -> None:
        """Free the shared work LM Studio has still not answered (see `_stuck`).

        A lookup unanswered on a socket LM Studio still answers on is slow, not lost:
        dropping the socket would end every prediction running on it (found by a probe: a
        healthy stream beside a slow lookup was cut). It is given up instead: the calls
        waiting for it, and the next ones, ask again. Only if LM Studio does not answer a
        quick request either are the sessions reset. A stuck upload reconnects the
        ``files`` session alone, on which no prediction runs. ``seen``: the client's
        generation when the work was left.
        """
        if self._closed() is not None:
            return
        client, lookups = self.client, self._stuck_lookups()
        if lookups:
            if not await self._answers():
                await ASYNC_RECONNECTS.reset(client, seen, self._reset)
                return
            for cache, key in lookups:
                cache.abandon(client, key)
        if ASYNC_IMAGES.pending(client):
            await ASYNC_RECONNECTS.reset(client, seen, self._reset_files)

    async def _answers(self) -> bool:
        """Tell whether LM Studio answers a quick request on the ``llm`` session."""
        try:
            async with asyncio.timeout(DRAIN_SECONDS):
                await self.client.llm.list_loaded()
        except (TimeoutError, lms.LMStudioError):
            return False
        return True

    async def _reconnect(self, effect: _flow.Reconnect) -> None:
        if (closed := self._closed()) is not None:  # nothing to reconnect: say why
            raise closed
        await ASYNC_RECONNECTS.reset(self.client, effect.generation, self._reset)

    async def _reset(self) -> None:
        """Reconnect dead sessions (the async SDK does not reconnect by itself).

        The predictions whose channel was open on the ``llm`` session when it was
        disconnected are ended with the SDK's error for a lost socket, which retries those
        whose reply nobody has seen (the SDK does not always tell them: see
        `AsyncReconnects`). Taken right after the disconnect, they are exactly those opened
        on the old socket: none can open between the disconnect and the new connection.
        """
        ASYNC_IMAGES.clear(self.client)
        lost: list[Reading] = []
        try:
            for session in (self.client.llm, self.client.files):
                with contextlib.suppress(lms.LMStudioError):
                    await session.disconnect()
                if session is self.client.llm:
                    lost = ASYNC_RECONNECTS.open_reads(self.client)
                await self._connect_session(session)
        finally:
            for reader in lost:
                reader.lose()

    async def _reset_files(self) -> None:
        """Reconnect the ``files`` session alone (an upload LM Studio never answered)."""
        ASYNC_IMAGES.clear(self.client)
        with contextlib.suppress(lms.LMStudioError):
            await self.client.files.disconnect()
        await self._connect_session(self.client.files)

    async def _connect_session(self, session: Any) -> None:
        try:
            async with asyncio.timeout(self.connect_timeout):
                await session.connect()
        except TimeoutError as exc:
            raise self._connect_error(exc) from exc


def _under_trio() -> bool:
    """Tell whether trio runs the calling code (only if the program imported trio)."""
    trio: Any = sys.modules.get("trio")
    if trio is None:
        return False
    try:
        trio.lowlevel.current_task()
    except RuntimeError:  # trio is imported, and runs elsewhere or not at all
        return False
    return True
