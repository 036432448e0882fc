"""Threads for the sync front: bounded connects, calls with a deadline, batches Ctrl-C stops.

The sync SDK waits without a bound of its own in two places (opening a websocket until the
server authenticates; a process-wide 60 s per message otherwise) and cannot be interrupted
from outside. What must not wait longer (a call's ``timeout``, a shorter ``read_timeout``,
watched through a `Pulse`) runs in a daemon thread the caller waits for, and leaving cancels
the prediction on the server and lets nothing new start.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import heapq
import itertools
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import lmstudio as lms

from ._cache import Heard
from ._common import CONFIRM_SECONDS, Request
from ._flow import Call, Flow, Left, batch_result
from ._forks import in_child, renewed
from ._silence import Silence, stalled_for
from ._user_time import UserTime

try:  # the SDK's websocket threads: no public name (lmstudio 1.5's)
    from lmstudio._ws_thread import BackgroundThread as _SDK_THREAD
except ImportError:  # pragma: no cover - another SDK line: no thread is known to be its
    _SDK_THREAD = ()  # type: ignore[assignment, misc]

__all__ = [
    "BatchPool",
    "Pulse",
    "Worker",
    "cancel",
    "check_open",
    "connect",
    "held",
    "idle_bound",
    "later",
    "left_early",
    "new",
    "off_sdk_thread",
    "pulse",
    "run_batch",
    "unless_left",
]


SIGNAL_POLL = 0.1
"""Longest the caller's thread blocks at once while it waits for a worker.

A signal sent to another thread (``signal.raise_signal`` in a timer, a watchdog's
``_thread.interrupt_main()``) runs its Python handler only when the main thread next runs
Python code: an unbounded wait held such a Ctrl-C until the whole reply or batch was done,
and nothing was cancelled. A signal to the process interrupts any wait.
"""


def _result(future: concurrent.futures.Future[Any], timeout: float | None) -> Any:
    """``future.result(timeout)``, waking every `SIGNAL_POLL` so that Ctrl-C is seen."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        wait = SIGNAL_POLL if deadline is None else min(SIGNAL_POLL, deadline - time.monotonic())
        try:
            return future.result(max(wait, 0.0))
        except concurrent.futures.TimeoutError:
            if deadline is not None and time.monotonic() >= deadline:
                raise


def _wait_all(futures: list[concurrent.futures.Future[Any]], scope: _Scope) -> None:
    """Wait for every future, waking every `SIGNAL_POLL` (one future watched at a time).

    What an item raised that is no ``Exception`` (its callback's ``sys.exit()`` or
    ``KeyboardInterrupt``) is raised here at the next wake, to stop the batch as it would
    stop a single call (found by a probe: it was one of the batch's errors, and ``except
    Exception`` caught a ``sys.exit()``).
    """
    for future in futures:
        while not future.done():
            if scope.fatal is not None:
                raise scope.fatal
            concurrent.futures.wait((future,), timeout=SIGNAL_POLL)
    if scope.fatal is not None:
        raise scope.fatal


class _BatchLocal(threading.local):
    """The batch a pool thread works for, if any.

    A class default, not ``getattr(local, name, None)``: a missing attribute costs an
    ``AttributeError`` (its message formatted), and this is read on every call.
    """

    scope: _Scope | None = None


_BATCH = _BatchLocal()


class _Scope:
    """The running calls of one batch, so that Ctrl-C can stop them all.

    One per thread of the batch: an item's attempts run one after another in its thread,
    and a finished item's call is let go. Every call was kept to the batch's end, and with
    it the SDK's stream of its prediction (every fragment message and the request): about
    16 kB an item, 396 MB at the end of a batch of 20,000 (found by a probe of scale).
    """

    def __init__(self, outer: _Scope | None = None) -> None:
        self._calls: dict[int, Call] = {}
        self._inner: set[_Scope] = set()
        self._lock = threading.Lock()
        self.stopped = False
        self.fatal: BaseException | None = None  # see `_wait_all`
        self._outer = outer
        if outer is not None:  # a batch run by an item of another (from a validator)
            with outer._lock:
                self.stopped = outer.stopped
                outer._inner.add(self)

    def close(self) -> None:
        """Unregister from the outer batch's scope, if any: this batch is over."""
        if self._outer is not None:
            with self._outer._lock:
                self._outer._inner.discard(self)

    def add(self, call: Call) -> None:
        """Note ``call`` as the one this thread runs now (its item's next attempt)."""
        with self._lock:
            call.stopped = self.stopped
            self._calls[threading.get_ident()] = call

    def leave(self) -> None:
        """Let go of this thread's call: its item is finished."""
        with self._lock:
            self._calls.pop(threading.get_ident(), None)

    def stop(self) -> None:
        """Stop the running calls and every batch they run (nothing more starts)."""
        with self._lock:
            self.stopped = True
            calls = list(self._calls.values())
            inner = list(self._inner)
        for call in calls:
            call.stopped = True
            cancel(call)
        for scope in inner:  # they went on, and their queued items started (a review)
            scope.stop()


def new(request: Request, deadline: float | None) -> Call:
    """Make a call's state (registered with the batch this thread works for, if any)."""
    call = Call(request, deadline=deadline)
    scope = _BATCH.scope
    if scope is not None:
        scope.add(call)
    return call


def off_sdk_thread(action: Callable[[], None]) -> bool:
    """Run a sync stream's leave on a thread of its own if this is the SDK's websocket thread.

    A stream nobody closed (a web framework's sync iterator, its client gone) is closed
    by the garbage collector in whichever thread allocates: the SDK's own websocket
    thread too, whose loop the cancel's ``send_json_threadsafe`` waits for. The leave
    blocked that thread on itself, and the client for good (found by a probe of a web
    app). Anywhere else the leave stays where it is, with its short wait for LM Studio's
    confirmation: handed off from an async app's loop too, a client closed right after
    had Python print "Exception ignored" for the confirmations still read (a probe).

    Returns
    -------
    bool
        Whether ``action`` was handed off (``False``: call it here; not the SDK's
        thread, or no thread can start).
    """
    if not isinstance(threading.current_thread(), _SDK_THREAD):
        return False
    thread = threading.Thread(target=action, name="outlines-lmstudio-leave", daemon=True)
    try:
        thread.start()
    except RuntimeError:  # no thread to be had: left here, as before
        return False
    return True


def left_early() -> Left:
    """Return the error of a call its caller left before its prediction started."""
    return Left("the call was left before its prediction started")


def check_open(call: Call) -> None:
    """Refuse to start a prediction for a call its caller has left."""
    if call.stopped:
        raise left_early()


def unless_left(call: Call, action: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Do a server round trip for a call, unless its caller has left."""
    check_open(call)
    return action(*args, **kwargs)


def cancel(call: Call) -> None:
    """Ask LM Studio to stop the call's prediction, if one is running (thread-safe)."""
    if not call.finished and call.reader is not None:
        with contextlib.suppress(Exception):  # nothing left to stop (see SyncReader.abandon)
            call.reader.cancel_when_open()


_TIMERS: list[tuple[float, int, Callable[[], None]]] = []  # a heap, by due time
_TIMERS_CHANGED = threading.Condition()
_TIMER_IDS = itertools.count()
_watcher: threading.Thread | None = None


def later(seconds: float, action: Callable[[], None]) -> None:
    """Run ``action`` after ``seconds``, in one shared daemon thread (not a thread each)."""
    global _watcher
    with _TIMERS_CHANGED:
        heapq.heappush(_TIMERS, (time.monotonic() + seconds, next(_TIMER_IDS), action))
        if _watcher is None:
            watcher = threading.Thread(target=_watch, name="outlines-lmstudio-watch", daemon=True)
            try:
                watcher.start()
            except RuntimeError:
                # No thread to be had now ("can't start new thread"): the timer stays
                # queued and the next `later` starts one. A thread never started was kept
                # here, so no timer ran again (found by a probe of exhausted resources).
                # Not raised: every caller is a clean-up, often in a finalizer.
                return
            _watcher = watcher
        _TIMERS_CHANGED.notify()


def _after_fork_in_child() -> None:
    """Start the timers afresh in a forked child (found by a probe).

    The child has no watcher thread, though ``_watcher`` names the parent's: no timer ran
    there, and calls left hung were never freed. The parent's timers act on the parent's
    clients, which the child cannot use. So do its connections under way and its batches;
    every lock is made afresh (a parent thread may have held it: `_forks`).
    """
    global _TIMERS_CHANGED, _watcher, _CONNECT_LOCK
    _TIMERS.clear()
    _TIMERS_CHANGED = threading.Condition()  # the parent's lock may have been held
    _watcher = None
    _CONNECTING.clear()
    _CONNECT_LOCK = threading.Lock()
    _Running._all.clear()
    _Running._lock = threading.Lock()


in_child(_after_fork_in_child)


def _watch() -> None:
    """Run due actions; end after a minute with nothing to do."""
    global _watcher
    while True:
        with _TIMERS_CHANGED:
            if not _TIMERS:
                _TIMERS_CHANGED.wait(60.0)
                if not _TIMERS:
                    _watcher = None
                    return
                continue
            due = _TIMERS[0][0]
            if due > time.monotonic():
                _TIMERS_CHANGED.wait(due - time.monotonic())
                continue
            action = heapq.heappop(_TIMERS)[2]
        with contextlib.suppress(Exception):  # a closed client: nothing left to do
            action()
        # Not held while the watcher waits: it kept the last action, and so the model it
        # closes over, for up to the minute it idles (found by a probe: a dropped model
        # lived on for 65 s after a stream was left early).
        del action


class _PulseLocal(threading.local):
    """The pulse of the call a worker thread reads, if any (a class default: see `_BatchLocal`)."""

    pulse: Pulse | None = None


_PULSE = _PulseLocal()


class Pulse(Heard):
    """When LM Studio was last heard from during a call read in a worker (its idle bound).

    The worker's thread beats it at each message: a fragment, a progress report, the
    answer to a model lookup or an upload. A wait with a bound of its own (connecting,
    ``connect_timeout``) holds it. While the call waits for a model load, it also follows
    the load's shared progress (``also``), which may be beaten by another call's load.
    """

    def __init__(self) -> None:
        super().__init__()
        self.holds = 0
        self.also: Heard | None = None

    def last(self) -> float:
        """Return when LM Studio was last heard from (``time.monotonic()``)."""
        also = self.also
        return self.at if also is None else max(self.at, also.at)


def idle_bound(read_timeout: float | None) -> float | None:
    """Return the ``read_timeout`` a sync call must watch itself, if any.

    The sync SDK bounds each wait by its own process-wide limit
    (``lmstudio.set_sync_api_timeout``, 60 s by default) and cannot be given another per
    call: a shorter ``read_timeout`` is watched from the caller's thread while a `Worker`
    reads the call (as for a call's ``timeout``). A longer one is the SDK's to cut.
    """
    if read_timeout is None:
        return None
    getter = lms.get_sync_api_timeout
    sdk = _SDK_TIMEOUT_BARE() if getter is _SDK_TIMEOUT else getter()
    if sdk is None or read_timeout < sdk:
        return read_timeout
    return None


# The SDK's getter of its sync timeout, without its public-API wrapper (``functools.wraps``
# keeps the bare function as ``__wrapped__``): the wrapper only shortens the tracebacks of
# errors, and this getter raises none, while its context manager costs five Python calls on
# every sync call. A getter replaced since import (a test's spy) is called as it is.
_SDK_TIMEOUT = lms.get_sync_api_timeout
_SDK_TIMEOUT_BARE: Callable[[], float | None] = getattr(_SDK_TIMEOUT, "__wrapped__", _SDK_TIMEOUT)


def pulse() -> Pulse | None:
    """Return the pulse of the call this thread reads under an idle bound, if any."""
    return _PULSE.pulse


class _Held:
    """Holds a pulse for the length of a ``with`` block (see `held`)."""

    def __init__(self, pulse: Pulse) -> None:
        self._pulse = pulse

    def __enter__(self) -> None:
        self._pulse.holds += 1

    def __exit__(self, *exc_info: object) -> None:
        self._pulse.holds -= 1
        self._pulse.beat()


_NOT_HELD = contextlib.nullcontext()


def held() -> contextlib.AbstractContextManager[None]:
    """Hold this thread's pulse during a wait with a bound of its own (connecting).

    Without a pulse (most calls), a shared no-op context: no generator-based context
    manager is made on every call.
    """
    found = _PULSE.pulse
    return _NOT_HELD if found is None else _Held(found)


class BatchPool:
    """A sync model's batch threads, kept from batch to batch (see `lend`)."""

    def __init__(self) -> None:
        self.pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.size = 0
        self.lent = False  # a batch has the pool
        self._lock = threading.Lock()
        renewed(self)

    def _after_fork(self) -> None:
        """Forget the parent's threads: a forked child has none (its batch waited for them).

        Found by a review: a batch in a child, through a model made in the parent and given
        a client made in the child, waited forever.
        """
        self.pool = None
        self.size = 0
        self.lent = False
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def lend(self, limit: int) -> Iterator[concurrent.futures.ThreadPoolExecutor]:
        """Lend the model's batch threads (``limit`` at most), kept from batch to batch.

        A batch that starts while another one runs (from another thread, or nested in
        one) gets a pool of its own, so every batch has its ``limit`` and none waits
        for another's threads. Idle threads end with the model (or the interpreter).
        """
        # The lock guards only this bookkeeping. Held for the whole batch, it was taken with a
        # non-blocking acquire, and a signal handler's exception raised right after it (at
        # the call's return, before a ``try``) left it held for good: every later batch made
        # a pool of its own (found by a probe). ``lent`` and ``mine`` are set in one
        # statement, with no call between them where a signal handler could run.
        mine = False
        try:
            with self._lock:
                if not self.lent:
                    self.lent = mine = True
                    if self.pool is None or self.size != limit:
                        old, self.pool = self.pool, None  # never lent once shut down
                        if old is not None:
                            old.shutdown(wait=False)
                        self.pool = concurrent.futures.ThreadPoolExecutor(
                            limit, thread_name_prefix="outlines-lmstudio-batch"
                        )  # threads start as work arrives: a batch of 1 starts one
                        self.size = limit
                pool = self.pool
            if mine and pool is not None:
                try:
                    yield pool
                except Exception:
                    raise
                except BaseException:
                    # Ctrl-C (or a handler's exception) may have come as the pool started a
                    # thread, which it then never noted: nothing wakes that thread at the
                    # interpreter's exit, which waited for it forever (found by a probe).
                    # The pool is shut down (its threads end) and the next batch makes one.
                    with self._lock:
                        if self.pool is pool:
                            self.pool = None
                    pool.shutdown(wait=False)
                    raise
                return
        finally:
            if mine:
                self.lent = False
        with concurrent.futures.ThreadPoolExecutor(
            limit, thread_name_prefix="outlines-lmstudio-batch"
        ) as own:
            yield own


class Worker:
    """Runs a producer in a daemon thread; the caller takes its items with a deadline.

    With a `Pulse`, the caller also gives up when the producer's thread has not heard
    from LM Studio for ``idle`` seconds (see `items`). With a `UserTime`, the time the
    producer spends in the caller's callbacks counts in neither bound.
    """

    def __init__(
        self,
        produce: Callable[[], Iterator[Any]],
        beats: Pulse | None = None,
        clock: UserTime | None = None,
    ) -> None:
        self._items: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
        self._pulse = beats
        self._clock = clock
        self._process = os.getpid()  # its thread is not in a forked child
        self.thread = threading.Thread(
            target=self._run, args=(produce,), name="outlines-lmstudio-call", daemon=True
        )
        self.thread.start()

    @property
    def alive(self) -> bool:
        """Whether the producer still runs."""
        return self.thread.is_alive()

    finished = False  # the producer has ended well: every item is queued

    def _run(self, produce: Callable[[], Iterator[Any]]) -> None:
        _PULSE.pulse = self._pulse
        try:
            for item in produce():
                self._items.put((True, item))
            self.finished = True
            self._items.put((False, None))
        except BaseException as exc:  # handed to the caller's thread
            self._items.put((False, exc))

    def items(
        self,
        deadline: float | None,
        expired: Callable[[], BaseException],
        idle: float | None = None,
        quiet: Callable[[], BaseException] | None = None,
        forked: Callable[[], BaseException] | None = None,
    ) -> Iterator[Any]:
        """Yield the producer's items; raise ``expired()`` when the deadline passes first.

        With ``idle`` (and the worker's `Pulse`), raise ``quiet()`` when LM Studio has not
        been heard from for that long. Read on in a forked child, where the producer's
        thread does not exist, raise ``forked()`` (found by a probe: a stream the parent
        had begun waited out ``read_timeout`` in the child, then blamed LM Studio).
        """
        silence = Silence()  # stalls of the process left out: see `_silence`
        while True:
            if forked is not None and os.getpid() != self._process:
                raise forked()
            now = time.monotonic()
            clock = self._clock
            wait = None if deadline is None else deadline - now
            if wait is not None and clock is not None:
                wait += clock.spent(now)  # the caller's callbacks' time: see `UserTime`
            # The limit is on LM Studio's part of the call: items still to come, or waiting
            # while the reply goes on. Once it has ended, its items are the caller's (found
            # by a probe: a consumer slow between fragments lost a complete reply to a
            # timeout whose message said a cancel was sent, though none was).
            if wait is not None and wait <= 0 and not self.finished:
                raise expired()
            try:
                more, value = self._items.get_nowait()  # what arrived: no idle bound
                waiting = False
            except queue.Empty:
                waiting = True
            # The wait is outside that except clause: a Ctrl-C during it would carry the
            # queue.Empty as its context ("During handling of the above exception...",
            # found by a probe).
            if waiting:
                if idle is not None and (pulse := self._pulse) is not None and quiet is not None:
                    left = None if pulse.holds else silence.left(idle, pulse.last(), now)
                    if clock is not None and clock.since is not None:
                        left = None  # in a callback of the caller's: held
                    if left is not None and left <= 0:
                        raise quiet()
                    left = idle if left is None else left  # held: look again after idle
                    wait = left if wait is None else min(wait, left)
                try:
                    poll = SIGNAL_POLL if wait is None else min(wait, SIGNAL_POLL)
                    more, value = self._items.get(timeout=poll)
                except queue.Empty:
                    if (pulse := self._pulse) is not None and (
                        late := stalled_for(now, poll, time.monotonic())
                    ):
                        silence.stalled(pulse.last(), late)
                    continue  # a bound ran out, or the pulse moved it: the top says which
            if not more:
                if value is not None:
                    raise value
                return
            yield value


_CONNECTING: weakref.WeakKeyDictionary[object, concurrent.futures.Future[None]] = (
    weakref.WeakKeyDictionary()
)
_CONNECT_LOCK = threading.Lock()


def _connect(session: Any, done: concurrent.futures.Future[None]) -> None:
    try:
        session.connect()
        done.set_result(None)
    except BaseException as exc:  # handed to the waiting callers
        done.set_exception(exc)


def connect(
    session: Any, timeout: float | None, error: Callable[[BaseException], BaseException]
) -> None:
    """Connect an SDK session unless it is connected, waiting at most ``timeout`` seconds.

    One thread connects a session at a time (the SDK's lazy connect is not thread-safe);
    callers that time out leave it running, so a server that never authenticates costs
    one thread and one socket per session, until it answers or the client is closed.
    """
    if session.connected:
        return
    with _CONNECT_LOCK:
        pending = _CONNECTING.get(session)
        if pending is None or pending.done():
            if session.connected:
                return
            pending = concurrent.futures.Future()
            try:
                threading.Thread(  # a daemon: a server that never answers must not hold the exit
                    target=_connect,
                    args=(session, pending),
                    name="outlines-lmstudio-connect",
                    daemon=True,
                ).start()
            except RuntimeError as exc:
                if "interpreter shutdown" not in str(exc):
                    raise
                # Python 3.12 starts no thread in an atexit callback, where the SDK by hand
                # connects in the caller's thread: so does this, without the bound of
                # connect_timeout (found by a probe on 3.12.1: a first call at exit raised
                # "can't create new thread at interpreter shutdown").
                _connect(session, pending)
            # Noted once started: a thread that could not start ("can't start new thread")
            # left a future nobody would complete, and every later call on the session
            # waited for it until its connect_timeout (found by a probe).
            _CONNECTING[session] = pending
    try:
        _result(pending, timeout)
    except concurrent.futures.TimeoutError:
        raise error(TimeoutError()) from None


def _in_scope(scope: _Scope, run: Callable[[Flow[Any]], Any], flow: Flow[Any]) -> Any:
    if scope.stopped:  # its batch ended before this item's turn: nothing is sent
        flow.close()
        raise left_early()
    outer, _BATCH.scope = _BATCH.scope, scope
    try:
        return run(flow)
    except BaseException as exc:
        if not isinstance(exc, Exception) and scope.fatal is None and not scope.stopped:
            scope.fatal = exc  # raised in the batch's caller (`_wait_all`)
            # Queued items never start: the caller stops the batch at its next wake, and
            # this thread took the next item meanwhile (found by a probe).
            scope.stopped = True
        raise
    finally:
        _BATCH.scope = outer
        scope.leave()


def _value(future: concurrent.futures.Future[Any]) -> Any:
    if future.done() and not future.cancelled() and future.exception() is None:
        return future.result()
    return None


def run_batch(
    run: Callable[[Flow[Any]], Any],
    flows: list[Flow[Any]],
    pool: concurrent.futures.ThreadPoolExecutor,
    unstick_if: Callable[[Callable[[], bool]], None],
) -> list[Any]:
    """Run flows on a thread pool; results in input order.

    Any exception raised into the caller's wait (Ctrl-C; ``sys.exit()`` or an application's
    timeout error raised by a signal handler) stops the batch at once: running predictions
    are cancelled on the server, queued ones never start, and the exception propagates
    (the pool's threads must end, or the interpreter's exit waits for every item). A
    ``KeyboardInterrupt`` also carries ``results`` (the finished items' values, ``None``
    for the others). Items still waiting on LM Studio then (a cancel it does not confirm,
    a model load) are handed to ``unstick_if``, which drops the client's sockets if they
    still wait a while later.

    At interpreter shutdown (an ``atexit`` handler), where ``concurrent.futures`` takes no
    more work, the flows run one after another in the caller's thread (`_in_turn`).
    """
    if not flows:
        return []
    scope = _Scope(_BATCH.scope)
    try:
        return _run_batch(run, flows, pool, unstick_if, scope)
    finally:
        scope.close()


def _run_batch(
    run: Callable[[Flow[Any]], Any],
    flows: list[Flow[Any]],
    pool: concurrent.futures.ThreadPoolExecutor,
    unstick_if: Callable[[Callable[[], bool]], None],
    scope: _Scope,
) -> list[Any]:
    """`run_batch` in ``scope``."""
    try:
        futures = [pool.submit(_in_scope, scope, run, flows[0])]
    except RuntimeError as exc:
        if not _shutting_down(exc):
            # No thread to run it ("can't start new thread"): the pool queued the item
            # all the same, and its next thread would send it, in a later batch (found by
            # a probe of exhausted resources). Stopped, it sends nothing.
            scope.stop()
            raise
        return _in_turn(run, flows)
    except BaseException as left:
        # Ctrl-C as the pool started the item's thread: the item is queued all the same,
        # and it ran to its end (found by a probe). Stopped, it sends nothing.
        scope.stop()
        if isinstance(left, KeyboardInterrupt):
            _note_results(left, [None] * len(flows), 0, len(flows))
        raise
    # A daemon thread's batch must not hold the interpreter's exit (`_stop_daemon_batches`).
    running = _Running(scope, futures) if threading.current_thread().daemon else None
    try:
        _submit_rest(pool, scope, run, flows, futures)
        _wait_all(futures, scope)
    except BaseException as left:
        _stop(scope, futures, unstick_if)
        if isinstance(left, KeyboardInterrupt):
            done = sum(f.done() and not f.cancelled() and f.exception() is None for f in futures)
            values = [_value(f) for f in futures] + [None] * (len(flows) - len(futures))
            _note_results(left, values, done, len(flows))
        raise
    finally:
        if running is not None:
            running.end()
    return batch_result([f.exception() or f.result() for f in futures])


def _submit_rest(
    pool: concurrent.futures.ThreadPoolExecutor,
    scope: _Scope,
    run: Callable[[Flow[Any]], Any],
    flows: list[Flow[Any]],
    futures: list[concurrent.futures.Future[Any]],
) -> None:
    """Submit the flows after the first, into ``futures``.

    If the interpreter begins to exit meanwhile (the main thread ended while another
    thread submits its batch), ``concurrent.futures`` refuses the rest: they run here, in
    turn, as a batch made at the exit does (it raised its ``RuntimeError``, found when
    writing a test).
    """
    for index in range(len(futures), len(flows)):
        try:
            futures.append(pool.submit(_in_scope, scope, run, flows[index]))
        except RuntimeError as exc:
            if not _shutting_down(exc):
                raise
            for flow in flows[index:]:
                futures.append(_run_here(scope, run, flow))
            return


def _run_here(
    scope: _Scope, run: Callable[[Flow[Any]], Any], flow: Flow[Any]
) -> concurrent.futures.Future[Any]:
    """Run one flow in the caller's thread; return its outcome as a done future."""
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()
    try:
        future.set_result(_in_scope(scope, run, flow))
    except Exception as exc:  # an item's failure: the batch goes on
        future.set_exception(exc)
    return future


class _Running:
    """A batch running in a daemon thread, which the interpreter's exit stops (see below)."""

    _all: ClassVar[set[_Running]] = set()
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, scope: _Scope, futures: list[concurrent.futures.Future[Any]]) -> None:
        self.scope, self.futures = scope, futures
        self.exiting = False
        with self._lock:
            self._all.add(self)

    def end(self) -> None:
        """Unregister the batch, over; if the exit stopped it, make its thread wait for good.

        Its caller is a daemon thread, which Python does not wait for: left to return, it
        would raise the cancelled items' errors while the interpreter finalises.
        """
        with self._lock:
            self._all.discard(self)
        if self.exiting:
            threading.Event().wait()


def _stop_daemon_batches() -> None:
    """At the interpreter's exit, stop the batches that daemon threads run.

    ``concurrent.futures`` joins every pool's threads when the interpreter exits, and a
    thread runs every item queued for it first: a daemon thread's batch of 40 three-second
    replies held the exit for 30 s, and none was cancelled (found by a probe). A single call
    or stream in a daemon thread holds nothing. Runs before that join (a ``threading``
    exit hook, registered after ``concurrent.futures``' own, so called before it): the
    running predictions are cancelled on the server and the queued items never start, as
    when Ctrl-C stops a batch. A batch of a non-daemon thread runs on: the exit waits for
    that thread anyway.
    """
    with _Running._lock:
        batches = list(_Running._all)
    for batch in batches:
        batch.exiting = True
        batch.scope.stop()
        for future in batch.futures:
            future.cancel()
    for batch in batches:  # LM Studio confirms a cancel within a token's time
        concurrent.futures.wait(batch.futures, timeout=CONFIRM_SECONDS)


# The hook concurrent.futures registers its own exit with (threading's, not atexit's: those
# run after the threads are joined). Private, as concurrent.futures uses it; Python >= 3.9.
_register = getattr(threading, "_register_atexit", None)
if _register is not None:
    import concurrent.futures.thread  # its hook first, so ours runs before it

    with contextlib.suppress(RuntimeError):  # first imported at the exit: too late for any
        _register(_stop_daemon_batches)


def _shutting_down(exc: RuntimeError) -> bool:
    """Whether ``submit`` refused work because the interpreter is shutting down.

    ``concurrent.futures`` stops every pool before ``atexit`` handlers run: a new pool then
    refuses work "after interpreter shutdown", and one that had threads "after shutdown"
    (its threads ended). It says so only in its message (its flag is private). A batch's
    pool is shut down by nothing else while the batch holds it (`BatchPool.lend`); a
    thread that cannot start fails otherwise ("can't start new thread").
    """
    return str(exc).startswith("cannot schedule new futures after")


def _stop(
    scope: _Scope,
    futures: list[concurrent.futures.Future[Any]],
    unstick_if: Callable[[Callable[[], bool]], None],
) -> None:
    """Stop a batch its caller left: cancel what runs, start nothing more."""
    scope.stop()
    for future in futures:
        future.cancel()  # the queued ones never start
    # The process may exit next: give LM Studio a moment to confirm the cancels.
    concurrent.futures.wait(futures, timeout=CONFIRM_SECONDS)
    if running := [f for f in futures if not f.done()]:
        unstick_if(lambda: not all(f.done() for f in running))


def _note_results(interrupt: KeyboardInterrupt, results: list[Any], done: int, total: int) -> None:
    """Attach a stopped batch's results to its ``KeyboardInterrupt`` (see `run_batch`)."""
    interrupt.__dict__["results"] = results
    interrupt.add_note(f"(batch stopped: {done} of {total} items finished; see .results)")


def _in_turn(run: Callable[[Flow[Any]], Any], flows: list[Flow[Any]]) -> list[Any]:
    """Run flows one after another in the caller's thread (at shutdown: see `run_batch`).

    Each item waits as a single call does (its own Ctrl-C guard and time limits); a
    ``KeyboardInterrupt`` carries the finished items' values as in `run_batch`, and the
    items after it never start.
    """
    results: list[Any] = []
    try:
        for flow in flows:
            try:
                results.append(run(flow))
            except Exception as exc:  # an item's failure: the batch goes on
                results.append(exc)
    except KeyboardInterrupt as interrupt:
        values = [None if isinstance(r, BaseException) else r for r in results]
        done = sum(not isinstance(r, BaseException) for r in results)
        values += [None] * (len(flows) - len(results))
        _note_results(interrupt, values, done, len(flows))
        raise
    finally:
        for flow in flows[len(results) :]:
            flow.close()
    return batch_result(results)
