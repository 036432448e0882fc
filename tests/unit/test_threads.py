"""`_threads.idle_bound`: which ``read_timeout`` a sync call watches itself; `run_batch`
where its pool takes no work."""

from __future__ import annotations

import concurrent.futures
import inspect
import itertools
import threading
from collections.abc import Callable, Generator, Iterator
from typing import Any

import lmstudio as lms
import pytest

from outlines_lmstudio import BatchGenerationError, _threads

from ..raising import RaiseAt


@pytest.fixture
def sdk_timeout() -> Iterator[None]:
    before = lms.get_sync_api_timeout()
    yield
    lms.set_sync_api_timeout(before)


@pytest.mark.usefixtures("sdk_timeout")
@pytest.mark.parametrize(
    ("sdk", "ours", "watched"),
    [
        (60.0, None, None),  # no read_timeout: nothing to watch
        (60.0, 60.0, None),  # the SDK's own bound cuts it
        (60.0, 90.0, None),  # longer: the SDK's to cut
        (60.0, 0.5, 0.5),  # shorter: watched by the caller
        (None, 90.0, 90.0),  # the SDK waits forever: ours is watched
        (0.25, 0.5, None),  # the setting is read on every call
    ],
)
def test_idle_bound_follows_the_sdk_setting(
    sdk: float | None, ours: float | None, watched: float | None
) -> None:
    lms.set_sync_api_timeout(sdk)
    assert _threads.idle_bound(ours) == watched


def test_idle_bound_calls_a_replaced_sdk_getter(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[bool] = []

    def spy() -> float:
        asked.append(True)
        return 2.0

    monkeypatch.setattr(lms, "get_sync_api_timeout", spy)
    assert _threads.idle_bound(1.0) == 1.0
    assert _threads.idle_bound(3.0) is None
    assert asked == [True, True]


def _flows(*values: Any, ran: list[str] | None = None) -> list[Any]:
    """Flows that return ``values`` (an exception is raised), each noting its value's repr
    in ``ran``, if given, when it runs."""

    def flow(value: Any) -> Generator[Any, None, Any]:
        if ran is not None:
            ran.append(repr(value))
        yield from ()  # a generator, as flows are, that yields nothing
        if isinstance(value, BaseException):
            raise value
        return value

    return [flow(v) for v in values]


def _run(flow: Any) -> Any:
    try:
        next(flow)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("these flows yield nothing")


def _no_unstick(waiting: Callable[[], bool]) -> None:
    raise AssertionError("nothing to unstick")


def _shut_pool() -> concurrent.futures.ThreadPoolExecutor:
    """A pool that takes no more work, as every pool once the interpreter shuts down."""
    pool = concurrent.futures.ThreadPoolExecutor(2)
    pool.shutdown()
    return pool


def test_a_pool_that_takes_no_work_runs_the_items_in_turn() -> None:
    """As in an ``atexit`` handler (see the e2e test): results in order, failures kept."""
    with pytest.raises(BatchGenerationError) as raised:
        _threads.run_batch(_run, _flows("a", ValueError("bad"), "c"), _shut_pool(), _no_unstick)
    assert raised.value.results == ["a", None, "c"]
    assert list(raised.value.errors) == [1]
    assert _threads.run_batch(_run, _flows("a", "b"), _shut_pool(), _no_unstick) == ["a", "b"]


def test_ctrl_c_in_turn_stops_the_batch_with_its_results() -> None:
    flows = _flows("a", KeyboardInterrupt(), "c")
    with pytest.raises(KeyboardInterrupt) as raised:
        _threads.run_batch(_run, flows, _shut_pool(), _no_unstick)
    assert raised.value.__dict__["results"] == ["a", None, None]
    assert raised.value.__notes__ == ["(batch stopped: 1 of 3 items finished; see .results)"]
    assert flows[2].gi_frame is None  # closed: never started


class _NoThreads(concurrent.futures.ThreadPoolExecutor):
    """A pool whose threads cannot start (not a shutdown: the batch does not run in turn)."""

    def submit(self, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        raise RuntimeError("can't start new thread")


def test_a_pool_that_fails_otherwise_raises_its_error() -> None:
    with pytest.raises(RuntimeError, match="can't start new thread"):
        _threads.run_batch(_run, _flows("a"), _NoThreads(1), _no_unstick)


class _ShutAfterOne(concurrent.futures.ThreadPoolExecutor):
    """A pool that shuts down after its first item, as when the interpreter begins to exit
    (the main thread ends) while another thread submits a batch."""

    def submit(self, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        future = super().submit(*args, **kwargs)
        self.shutdown(wait=False)
        return future


def test_a_pool_that_shuts_down_while_a_batch_is_submitted_runs_the_rest_in_turn() -> None:
    """Found when writing a test: the second submit raised "cannot schedule new futures after
    shutdown" out of the batch; the first item ran, the rest were lost."""
    with _ShutAfterOne(2) as pool, pytest.raises(BatchGenerationError) as raised:
        _threads.run_batch(_run, _flows("a", "b", ValueError("bad"), "d"), pool, _no_unstick)
    assert raised.value.results == ["a", "b", None, "d"]
    assert list(raised.value.errors) == [2]
    with _ShutAfterOne(2) as pool:
        assert _threads.run_batch(_run, _flows("a", "b", "c"), pool, _no_unstick) == list("abc")


def test_the_watcher_does_not_hold_an_action_it_has_run() -> None:
    """The shared watcher thread kept its last action, and so the model it closed over,
    while it idled for up to a minute (found by a probe: a dropped model lived 65 s)."""
    import gc
    import threading
    import time
    import weakref

    class Owner:
        pass

    owner = Owner()
    ran = threading.Event()

    def action(held: Owner = owner) -> None:
        ran.set()

    gone = weakref.ref(owner)
    _threads.later(0.01, action)
    del owner, action
    assert ran.wait(5)
    deadline = time.monotonic() + 5
    while gone() is not None and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.01)
    assert gone() is None


def _lends(pool: _threads.BatchPool, limit: int) -> Callable[[], object]:
    def batch() -> object:
        with pool.lend(limit) as threads:
            return threads.submit(lambda: 1).result()

    return batch


@pytest.mark.parametrize("limit", [2, 3], ids=["reused", "made anew"])
def test_a_signal_handlers_exception_while_lending_leaves_the_batch_threads_lendable(
    limit: int,
) -> None:
    """Found by a probe: an exception raised right after the pool's non-blocking lock was
    taken (a SIGALRM handler's, at the call's return) left it held: every later batch made
    and shut down a pool of its own. Raised at each point of lending where a signal handler
    can run, it now leaves the next batch the shared pool, and never one shut down (the
    pool of 2 threads is replaced by one of 3 in each "made anew" round)."""
    pool = _threads.BatchPool()
    lend = inspect.unwrap(_threads.BatchPool.lend).__code__
    landed = 0
    for at in itertools.count(1):
        assert _lends(pool, 2)() == 1
        raiser = RaiseAt(at, lambda code: code is lend)
        raiser.run(_lends(pool, limit))
        if not raiser.raised:
            break
        landed += 1
        with pool.lend(2) as threads:  # the size of before: a pool it shut down is not lent
            assert threads is pool.pool  # the shared one
            assert threads.submit(lambda: 2).result() == 2
    assert landed >= (3 if limit == 2 else 4)


@pytest.mark.parametrize("fatal", [SystemExit(1), KeyboardInterrupt()], ids=repr)
def test_an_items_fatal_exception_starts_no_queued_item(fatal: BaseException) -> None:
    """Found by a probe: a callback's ``sys.exit()`` stopped the batch, but the freed thread
    took the next item before the caller's wait woke, and sent it."""
    ran: list[str] = []
    flows = _flows("a", fatal, "c", "d", ran=ran)
    with concurrent.futures.ThreadPoolExecutor(1) as pool, pytest.raises(type(fatal)):
        _threads.run_batch(_run, flows, pool, _no_unstick)
    assert ran == ["'a'", repr(fatal)]
    assert flows[2].gi_frame is None  # closed: never started
    assert flows[3].gi_frame is None


class _InterruptedAsItStarts(concurrent.futures.ThreadPoolExecutor):
    """A pool whose first submit is interrupted (Ctrl-C) once the item is queued, as when the
    signal comes while the pool starts its thread (``Thread.start`` waits for it). Its one
    thread is busy until `go` is set, so the item waits in the queue meanwhile."""

    def __init__(self) -> None:
        super().__init__(1)
        self.go = threading.Event()
        super().submit(self.go.wait, 10)

    def submit(self, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        super().submit(*args, **kwargs)
        raise KeyboardInterrupt


def test_ctrl_c_as_the_batch_starts_its_first_thread_sends_nothing() -> None:
    """Found by a probe: the queued item ran to its end on the server, and the
    ``KeyboardInterrupt`` had no ``.results``."""
    ran: list[str] = []
    flows = _flows("a", "b", ran=ran)
    pool = _InterruptedAsItStarts()
    with pytest.raises(KeyboardInterrupt) as raised:
        _threads.run_batch(_run, flows, pool, _no_unstick)
    pool.go.set()
    pool.shutdown(wait=True)  # the queued item has had its turn
    assert ran == []
    assert flows[0].gi_frame is None  # closed: never started
    assert raised.value.__dict__["results"] == [None, None]


def test_ctrl_c_out_of_a_batch_retires_its_threads() -> None:
    """Found by a probe: a thread the pool started as Ctrl-C came was never noted by it, so
    nothing woke it at the interpreter's exit, which waited for it forever. A pool a batch
    left by Ctrl-C is shut down (its threads end), and the next batch gets a new one."""
    pool = _threads.BatchPool()
    with pytest.raises(KeyboardInterrupt), pool.lend(2) as threads:  # noqa: PT012
        assert threads.submit(lambda: 1).result() == 1
        raise KeyboardInterrupt
    assert pool.pool is not threads
    with pytest.raises(RuntimeError, match="after shutdown"):
        threads.submit(lambda: 1)
    assert _lends(pool, 2)() == 1
    with pytest.raises(ValueError, match="an item's"), pool.lend(2) as kept:
        raise ValueError("an item's error is no reason")
    assert pool.pool is kept
