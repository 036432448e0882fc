"""The emulator's per-request tasks, without a socket."""

from __future__ import annotations

import asyncio
import gc
import sys
from typing import Any, Literal, cast

import pytest

from outlines_lmstudio.testing._protocol import Connection
from outlines_lmstudio.testing._wire import acquire_unless_cancelled


def test_a_request_task_cancelled_before_it_ran_leaves_no_unawaited_handler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Seen in a full run: a socket that closed right after a request cancelled its task
    before the first step, and Python then warned that ``Connection.channel`` was never
    awaited (an error under the test suite's warning filters)."""
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    ran: list[bool] = []

    async def handler() -> None:
        ran.append(True)

    async def main() -> None:
        connection = Connection(cast(Any, None), cast(Any, None), "llm", 1)
        connection.spawn(handler())
        for task in list(connection.tasks):
            task.cancel()  # before the task's first step
        await asyncio.sleep(0.01)
        assert connection.tasks == set()

    asyncio.run(main())
    gc.collect()
    assert ran == []
    assert [str(u.exc_value) for u in unraisable] == []


def test_a_queued_request_cancelled_as_its_turn_comes_gives_the_turn_back() -> None:
    """Found by mutation testing: nothing checked that a prediction whose cancel arrives with
    its turn (its slot freed in the same moment) gives the turn back: it kept the slot, and
    the next prediction in the queue waited for a slot nobody would free."""

    class Queue(asyncio.Lock):
        """A lock that says when a waiter has asked for it."""

        def __init__(self) -> None:
            super().__init__()
            self.asked = asyncio.Event()

        async def acquire(self) -> Literal[True]:
            self.asked.set()
            return await super().acquire()

    async def main() -> tuple[bool, bool]:
        queue, cancelled = Queue(), asyncio.Event()
        await queue.acquire()  # the slot is busy
        queue.asked.clear()
        waiter = asyncio.create_task(acquire_unless_cancelled(queue, cancelled))
        await queue.asked.wait()  # the waiter is in the queue
        queue.release()  # its turn comes...
        cancelled.set()  # ...with its cancel
        return await waiter, queue.locked()

    got, still_held = asyncio.run(main())
    assert got is False  # cancelled: not served
    assert not still_held  # the slot is free for the next prediction
