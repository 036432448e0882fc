import asyncio

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
