import asyncio
import gc
import weakref
from collections.abc import Awaitable, Callable

import lmstudio as lms
import pytest

from outlines_lmstudio._reconnect import AsyncReconnects, SyncReconnects


class Client:
    pass


def test_calls_that_saw_the_same_generation_reset_once() -> None:
    reconnects = SyncReconnects()
    client = Client()
    resets: list[int] = []
    seen = [reconnects.generation(client) for _ in range(3)]  # three calls start together
    for generation in seen:  # ...and all fail on the same dropped socket
        reconnects.reset(client, generation, lambda: resets.append(1))
    assert resets == [1]
    # a later call that started after the reset may reset again
    reconnects.reset(client, reconnects.generation(client), lambda: resets.append(2))
    assert resets == [1, 2]


def test_clients_are_independent() -> None:
    reconnects = SyncReconnects()
    first, second = Client(), Client()
    calls: list[str] = []
    reconnects.reset(first, 0, lambda: calls.append("first"))
    reconnects.reset(second, 0, lambda: calls.append("second"))
    assert calls == ["first", "second"]


@pytest.mark.asyncio
async def test_async_concurrent_resets_run_once() -> None:
    reconnects = AsyncReconnects()
    client = Client()
    runs: list[int] = []

    async def reset() -> None:
        await asyncio.sleep(0.01)
        runs.append(1)

    generation = reconnects.generation(client)
    await asyncio.gather(*(reconnects.reset(client, generation, reset) for _ in range(5)))
    assert runs == [1]
    assert reconnects.generation(client) == generation + 1


def test_a_call_that_begins_during_a_reset_does_not_reset_again() -> None:
    """It used the sessions being reset: its failure is the same loss (found by a probe,
    where a second reset dropped the fresh socket with predictions open on it)."""
    reconnects = SyncReconnects()
    client = Client()
    during: list[int] = []
    resets: list[str] = []

    def reset() -> None:
        resets.append("first")
        during.append(reconnects.generation(client))  # a call that begins meanwhile

    reconnects.reset(client, 0, reset)
    reconnects.reset(client, during[0], lambda: resets.append("again"))
    assert resets == ["first"]
    assert reconnects.generation(client) == 1


@pytest.mark.asyncio
async def test_an_async_call_that_begins_during_a_reset_does_not_reset_again() -> None:
    reconnects = AsyncReconnects()
    client = Client()
    during: list[int] = []
    resets: list[str] = []

    async def reset() -> None:
        resets.append("first")
        await asyncio.sleep(0)
        during.append(reconnects.generation(client))

    await reconnects.reset(client, 0, reset)
    await reconnects.reset(client, during[0], _appending(resets, "again"))
    assert resets == ["first"]


def _appending(into: list[str], item: str) -> Callable[[], Awaitable[None]]:
    async def append() -> None:
        into.append(item)

    return append


@pytest.mark.parametrize("fails", [False, True])
def test_the_generation_moves_once_a_reset_is_done_even_when_it_fails(fails: bool) -> None:
    reconnects = SyncReconnects()
    client = Client()

    def reset() -> None:
        if fails:
            raise lms.LMStudioWebsocketError("not reachable")

    if fails:
        with pytest.raises(lms.LMStudioWebsocketError):
            reconnects.reset(client, 0, reset)
    else:
        reconnects.reset(client, 0, reset)
    assert reconnects.generation(client) == 1  # the calls that saw 0 do not try again


@pytest.mark.asyncio
async def test_async_calls_that_waited_for_a_failed_reset_get_its_error() -> None:
    """They would otherwise try the sessions it left disconnected, and the SDK would say
    "Session must be connected to create channels", not that LM Studio is not reachable."""
    reconnects = AsyncReconnects()
    client = Client()
    resets: list[str] = []

    async def unreachable() -> None:
        resets.append("failed")
        await asyncio.sleep(0.01)
        raise lms.LMStudioWebsocketError("LM Studio is not reachable at ws://here/llm")

    results = await asyncio.gather(
        *(reconnects.reset(client, 0, unreachable) for _ in range(3)), return_exceptions=True
    )
    assert resets == ["failed"]
    assert [type(r) for r in results] == [lms.LMStudioWebsocketError] * 3
    assert {str(r) for r in results} == {"LM Studio is not reachable at ws://here/llm"}
    assert len({id(r) for r in results}) == 3  # each its own: one traceback each
    # The failure is the last reset's only: after one that works, a late call goes on.
    await reconnects.reset(client, 1, _appending(resets, "worked"))
    await reconnects.reset(client, 0, _appending(resets, "not run"))
    assert resets == ["failed", "worked"]


@pytest.mark.asyncio
async def test_a_failed_async_reset_does_not_keep_its_client_alive() -> None:
    reconnects = AsyncReconnects()
    client = Client()
    gone = weakref.ref(client)

    async def unreachable() -> None:
        raise lms.LMStudioWebsocketError("LM Studio is not reachable")

    with pytest.raises(lms.LMStudioWebsocketError):
        await reconnects.reset(client, 0, unreachable)
    with pytest.raises(lms.LMStudioWebsocketError):
        await reconnects.reset(client, 0, unreachable)  # a waiter: the error again
    del client
    gc.collect()
    assert gone() is None


class Read:
    """A stand-in for `AsyncReader` as a reset sees it."""

    def __init__(self, is_open: bool) -> None:
        self.open = is_open
        self.lost = False

    def lose(self) -> None:
        self.lost = True


def test_open_reads_are_the_noted_readers_still_open_and_not_kept_alive() -> None:
    reconnects = AsyncReconnects()
    client = Client()
    first, ended = Read(is_open=True), Read(is_open=False)
    reconnects.reading(client, first)
    reconnects.reading(client, ended)
    reconnects.reading(client, Read(is_open=True))  # collected at once: nobody holds it
    assert reconnects.open_reads(client) == [first]
    assert reconnects.open_reads(Client()) == []


def test_the_sdk_keeps_a_clients_llm_session_across_a_reset() -> None:
    """A sync model holds ``client.llm`` (see ``LMStudio._hold_entries``): the SDK must keep it.

    A reset (``_reset``) disconnects and reconnects the same session object; only closing
    the client drops it, and a closed client is refused before its session is used.
    """
    client = lms.Client("127.0.0.1:9")  # nothing is connected here
    try:
        session = client.llm
        assert client.llm is session
        session.disconnect()
        assert client.llm is session
    finally:
        client.close()


@pytest.mark.asyncio
async def test_a_note_added_to_one_waiters_error_reaches_no_other() -> None:
    reconnects = AsyncReconnects()
    client = Client()

    async def unreachable() -> None:
        error = lms.LMStudioWebsocketError("LM Studio is not reachable")
        error.add_note("(from the reset)")
        raise error

    with pytest.raises(lms.LMStudioWebsocketError):
        await reconnects.reset(client, 0, unreachable)
    with pytest.raises(lms.LMStudioWebsocketError) as first:
        await reconnects.reset(client, 0, unreachable)
    first.value.add_note("(in batch item 1)")  # as a batch notes its item
    with pytest.raises(lms.LMStudioWebsocketError) as second:
        await reconnects.reset(client, 0, unreachable)
    assert second.value.__notes__ == ["(from the reset)"]


@pytest.mark.asyncio
async def test_a_waiters_copy_of_the_error_keeps_its_cause() -> None:
    """Found by a review: ``copy.copy`` dropped ``__cause__`` (the connect timeout behind
    our error)."""
    reconnects = AsyncReconnects()
    client = Client()

    async def unreachable() -> None:
        try:
            raise TimeoutError("handshake")
        except TimeoutError as exc:
            raise lms.LMStudioWebsocketError("LM Studio is not reachable") from exc

    with pytest.raises(lms.LMStudioWebsocketError):
        await reconnects.reset(client, 0, unreachable)
    with pytest.raises(lms.LMStudioWebsocketError) as waiter:
        await reconnects.reset(client, 0, unreachable)
    assert isinstance(waiter.value.__cause__, TimeoutError)
    assert str(waiter.value.__cause__) == "handshake"
    assert waiter.value.__suppress_context__
