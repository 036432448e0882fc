import asyncio
import gc
import threading
import time
import weakref

import pytest

from outlines_lmstudio._cache import AsyncClientCache, SyncClientCache


class Client:
    pass


def test_sync_values_are_made_once_per_client_even_from_threads() -> None:
    cache: SyncClientCache[int] = SyncClientCache()
    client = Client()
    made: list[int] = []

    def make() -> int:
        time.sleep(0.01)
        made.append(1)
        return 42

    threads = [threading.Thread(target=lambda: cache.get(client, "k", make)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert made == [1]
    assert cache.peek(client, "k") == 42
    assert cache.get(Client(), "k", lambda: 7) == 7  # another client has its own entries


def test_sync_keys_whose_making_failed_leave_nothing_behind() -> None:
    """Found by a probe: a lock stayed per key for the client's life, one for every model
    name ever asked (names LM Studio does not have included): a service passing its users'
    model names to one client grew for good."""
    cache: SyncClientCache[int] = SyncClientCache()
    client = Client()

    def missing() -> int:
        raise LookupError("no such model")

    for index in range(500):
        with pytest.raises(LookupError):
            cache.get(client, f"missing-{index}", missing)
    assert cache.get(client, "found", lambda: 1) == 1
    assert cache._slots.get(client) == {}  # no key's lock is kept once nobody waits on it
    assert cache.peek(client, "found") == 1
    assert cache.peek(client, "missing-0") is None


def test_sync_a_key_being_made_holds_up_no_other_key() -> None:
    """A stalled upload of one image must not stall another image's upload on that client."""
    cache: SyncClientCache[str] = SyncClientCache()
    client = Client()
    release = threading.Event()
    started = threading.Event()

    def stalled() -> str:
        started.set()
        release.wait(10)
        return "slow"

    slow = threading.Thread(target=lambda: cache.get(client, "slow", stalled))
    slow.start()
    try:
        assert started.wait(5)
        done: list[str] = []
        other = threading.Thread(target=lambda: done.append(cache.get(client, "b", lambda: "b")))
        other.start()
        other.join(2)
        assert done == ["b"]  # made while "slow" is still being made
        assert cache.peek(client, "slow") is None
    finally:
        release.set()
        slow.join(5)
    assert cache.peek(client, "slow") == "slow"


def test_sync_forget_clear_and_weak_keys() -> None:
    cache: SyncClientCache[str] = SyncClientCache()
    client = Client()
    cache.get(client, "a", lambda: "x")
    cache.forget(client, "a")
    assert cache.peek(client, "a") is None
    cache.get(client, "b", lambda: "y")
    cache.clear(client)
    assert cache.peek(client, "b") is None
    cache.get(client, "c", lambda: "z")
    alive = weakref.ref(client)
    del client
    gc.collect()
    assert alive() is None  # entries live only as long as the client


class _Handle:
    """A value that refers back to its client, as the SDK's model handles do."""

    def __init__(self, client: object) -> None:
        self.client = client


def test_a_value_that_refers_to_its_client_does_not_keep_it() -> None:
    """Found by a probe: a weak-key dict's value referring back to its key keeps it, so
    every client used (100 clients, 11 MB) stayed alive with all its entries."""
    sync_cache: SyncClientCache[_Handle] = SyncClientCache()
    async_cache: AsyncClientCache[_Handle] = AsyncClientCache()

    def use(client: Client) -> None:
        async def handle() -> _Handle:
            return _Handle(client)

        sync_cache.get(client, "m", lambda: _Handle(client))
        assert asyncio.run(async_cache.get(client, "m", handle)).client is client

    client = Client()
    use(client)
    alive = weakref.ref(client)
    del client
    gc.collect()
    assert alive() is None


def test_sync_entries_held_by_a_model_follow_get_and_forget() -> None:
    """A model reads its client's handles from the dict `entries` gives it, once looked up."""
    cache: SyncClientCache[str] = SyncClientCache()
    client = Client()
    held = cache.entries(client)
    assert held == {}
    cache.get(client, "a", lambda: "x")
    assert held == {"a": "x"}  # made after it was handed out: seen through it
    cache.forget(client, "a")
    assert "a" not in held
    assert cache.entries(client) is held
    assert cache.entries(Client()) is not held


def test_sync_clear_gives_the_client_a_new_dict() -> None:
    """A value made while its client is cleared (an upload on a dropped session) is not kept."""
    cache: SyncClientCache[str] = SyncClientCache()
    client = Client()
    old = cache.entries(client)
    cache.get(client, "b", lambda: "y")
    cache.clear(client)
    old["late"] = "made on the dropped session"  # what an upload in flight would write
    assert cache.peek(client, "late") is None
    assert cache.peek(client, "b") is None
    assert cache.entries(client) is not old


def test_sync_failures_are_not_cached() -> None:
    cache: SyncClientCache[int] = SyncClientCache()
    client = Client()

    def fail() -> int:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        cache.get(client, "k", fail)
    assert cache.get(client, "k", lambda: 1) == 1


@pytest.mark.asyncio
async def test_async_concurrent_first_calls_share_one_task() -> None:
    cache: AsyncClientCache[int] = AsyncClientCache()
    client = Client()
    made: list[int] = []

    async def make() -> int:
        await asyncio.sleep(0.01)
        made.append(1)
        return 5

    assert await asyncio.gather(*(cache.get(client, "k", make) for _ in range(6))) == [5] * 6
    assert made == [1]
    assert cache.peek(client, "k") == 5


@pytest.mark.asyncio
async def test_async_failure_is_retried_and_cancelling_one_caller_keeps_the_work() -> None:
    cache: AsyncClientCache[int] = AsyncClientCache()
    client = Client()

    async def fail() -> int:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await cache.get(client, "k", fail)
    assert cache.peek(client, "k") is None

    async def slow() -> int:
        await asyncio.sleep(0.05)
        return 9

    first = asyncio.create_task(cache.get(client, "s", slow))
    await asyncio.sleep(0)
    second = asyncio.create_task(cache.get(client, "s", slow))
    await asyncio.sleep(0.01)
    first.cancel()
    assert await second == 9  # the shared work survived the cancelled caller
    cache.forget(client, "s")
    cache.clear(client)
    assert cache.peek(client, "s") is None


@pytest.mark.asyncio
async def test_async_work_that_fails_after_its_callers_left_is_not_logged() -> None:
    """A lookup whose caller timed out, then failed (the client closed): no asyncio error log."""
    cache: AsyncClientCache[int] = AsyncClientCache()
    client = Client()
    reported: list[dict[str, object]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))

    async def fail_later() -> int:
        await asyncio.sleep(0.01)
        raise RuntimeError("the client closed")

    try:
        caller = asyncio.create_task(cache.get(client, "k", fail_later))
        await asyncio.sleep(0)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        await asyncio.sleep(0.05)  # a later timer: the work has failed, nobody waiting
        cache.clear(client)
        gc.collect()
    finally:
        loop.set_exception_handler(None)
    assert reported == []


@pytest.mark.asyncio
@pytest.mark.parametrize("late", ["answer", "error"])
async def test_async_abandoned_work_is_asked_again_by_its_waiters(late: str) -> None:
    """`abandon`: the waiters of work LM Studio does not answer ask again, and the first
    work's late answer or error is dropped without an asyncio error log."""
    cache: AsyncClientCache[int] = AsyncClientCache()
    client = Client()
    reported: list[dict[str, object]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    release = asyncio.Event()
    calls: list[int] = []

    async def make() -> int:
        calls.append(1)
        if len(calls) == 1:  # the first ask is stuck until released
            await release.wait()
            if late == "error":
                raise RuntimeError("too late")
            return 1
        return 2

    try:
        waiters = [asyncio.create_task(cache.get(client, "k", make)) for _ in range(3)]
        await asyncio.sleep(0.01)
        assert cache.pending_keys(client) == ["k"]
        cache.abandon(client, "k")
        assert await asyncio.gather(*waiters) == [2, 2, 2]
        assert calls == [1, 1]  # asked once more, shared by the three waiters
        release.set()
        await asyncio.sleep(0.01)
        assert cache.peek(client, "k") == 2  # the late answer did not replace it
        cache.abandon(client, "k")  # ended meanwhile: kept, nothing to give up
        assert cache.peek(client, "k") == 2
        gc.collect()
    finally:
        loop.set_exception_handler(None)
    assert reported == []


def test_sync_a_value_too_old_for_a_caller_is_made_anew_once() -> None:
    """Threads that find a value too old wait for one new value that is not."""
    cache: SyncClientCache[int] = SyncClientCache()
    client = Client()
    cache.put(client, "k", 1)
    made: list[int] = []

    def make() -> int:
        time.sleep(0.01)
        made.append(2)
        return 2

    def too_old(value: int) -> bool:
        return value < 2

    assert cache.get(client, "k", make) == 1  # no bound: the cached value
    threads = [
        threading.Thread(target=lambda: cache.get(client, "k", make, too_old)) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert made == [2]
    assert cache.peek(client, "k") == 2


@pytest.mark.asyncio
async def test_async_callers_that_find_a_value_too_old_share_one_new_task() -> None:
    cache: AsyncClientCache[int] = AsyncClientCache()
    client = Client()
    cache.put(client, "k", 1)
    made: list[int] = []

    async def make() -> int:
        await asyncio.sleep(0.01)
        made.append(len(made) + 2)
        return made[-1]

    def too_old(value: int) -> bool:
        return value < 2

    assert await cache.get(client, "k", make) == 1
    values = await asyncio.gather(*(cache.get(client, "k", make, too_old) for _ in range(8)))
    assert values == [2] * 8
    assert made == [2]


@pytest.mark.asyncio
async def test_async_a_caller_whose_bound_an_ask_under_way_misses_asks_again() -> None:
    """Work begun before a caller's bound is waited for, then made anew for that caller."""
    cache: AsyncClientCache[int] = AsyncClientCache()
    client = Client()
    made: list[int] = []

    async def make() -> int:
        await asyncio.sleep(0.01)
        made.append(len(made) + 1)
        return made[-1]

    first = asyncio.ensure_future(cache.get(client, "k", make))
    await asyncio.sleep(0)  # its work is under way
    second = await cache.get(client, "k", make, lambda value: value < 2)
    assert (await first, second, made) == (1, 2, [1, 2])
    # The value of work the caller began itself is never too old (no endless asking).
    assert await cache.get(client, "k", make, lambda value: True) == 3


def test_a_copied_error_has_no_traceback_its_own_notes_and_its_cause() -> None:
    from outlines_lmstudio._cache import copied_error

    try:
        try:
            raise TimeoutError("handshake")
        except TimeoutError as cause:
            raise ConnectionError("not reachable") from cause
    except ConnectionError as exc:
        exc.add_note("(from the search)")
        error = exc
    twin = copied_error(error)
    assert type(twin) is ConnectionError
    assert str(twin) == "not reachable"
    assert twin.__traceback__ is None
    assert isinstance(twin.__cause__, TimeoutError)
    assert twin.__cause__.__traceback__ is None
    assert twin.__suppress_context__
    twin.add_note("(in batch item 3)")
    assert error.__notes__ == ["(from the search)"]
    assert twin.__notes__ == ["(from the search)", "(in batch item 3)"]


def test_a_copied_error_names_the_model_of_the_caller_it_is_raised_to() -> None:
    """Found by a probe: two models on one client waited for one failed search; the second
    model's error named the first model."""
    from outlines_lmstudio import LMStudioConnectionError
    from outlines_lmstudio._cache import copied_error

    error = LMStudioConnectionError("Cannot find LM Studio.", host="h:1", model="a", hint="Start")
    error.add_note("(from the search)")
    twin = copied_error(error, "b")
    assert (twin.model, twin.host, twin.hint, twin.message) == ("b", "h:1", "Start", error.message)
    assert str(twin) == "Cannot find LM Studio. (host='h:1', model='b') Hint: Start"
    assert twin.__notes__ == ["(from the search)"]
    assert error.model == "a"
    assert "model='a'" in str(error)
    assert copied_error(error).model == "a"  # no caller's model: as it was


def test_a_copied_error_for_another_model_keeps_lm_studios_details() -> None:
    """Found by a review: renaming the model ran ``__init__`` again, which the SDK's server
    error base has reset ``server_error`` in."""
    import lmstudio as lms

    from outlines_lmstudio import LMStudioModelNotFoundError
    from outlines_lmstudio._cache import copied_error

    details = {"title": "No model", "displayData": {"code": "generic.noModelMatchingQuery"}}
    sdk = lms.LMStudioServerError.from_details("Model get/load error", details)
    error = LMStudioModelNotFoundError("No model.", host="h:1", model="a")
    error.server_error = sdk.server_error
    twin = copied_error(error, "b")
    assert twin.model == "b"
    assert twin.server_error is sdk.server_error


def test_a_loads_record_is_kept_while_a_lookup_beats_it_or_a_caller_holds_it() -> None:
    from outlines_lmstudio._cache import LoadProgress

    class Client:  # held weakly, as clients are
        pass

    loads, client = LoadProgress(), Client()
    first = loads.of(client, "big-model")
    assert loads.of(client, "big-model") is first  # a second call waiting for the same load
    with loads.looking_up(client, "big-model", first):
        loads.release(client, "big-model", first)  # a caller left: the lookup goes on
        assert loads.of(client, "big-model") is first
    assert loads.of(client, "big-model") is not first  # the lookup ended: a new load
    held = loads.of(client, "unknown-model")
    loads.release(client, "unknown-model", held)  # no lookup ran (it failed for the batch)
    assert loads.of(client, "unknown-model") is not held
