"""`_discovery._off_the_loop`: blocking work awaited from a thread that nothing waits for."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from outlines_lmstudio import _discovery


def test_the_result_and_the_error_are_handed_over() -> None:
    async def main() -> int:
        with pytest.raises(ZeroDivisionError):
            await _discovery._off_the_loop(lambda: 1 / 0)
        return await _discovery._off_the_loop(int, "42")

    assert asyncio.run(main()) == 42


def test_a_caller_that_leaves_holds_up_neither_itself_nor_the_end_of_the_loop() -> None:
    ended = threading.Event()

    def work() -> None:
        time.sleep(1.5)
        ended.set()

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(_discovery._off_the_loop(work), 0.1)

    started = time.monotonic()
    asyncio.run(main())  # asyncio.to_thread's executor would be waited for here
    assert time.monotonic() - started < 1.0
    assert not ended.is_set()
    assert ended.wait(5)  # the work itself went on, in its thread


def test_callers_cancelled_at_once_leave_no_thread_error(monkeypatch: pytest.MonkeyPatch) -> None:
    errors: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", errors.append)

    async def main() -> None:
        for _ in range(100):
            task = asyncio.ensure_future(_discovery._off_the_loop(time.sleep, 0.001))
            await asyncio.sleep(0)
            task.cancel()
        await asyncio.sleep(0.3)

    asyncio.run(main())
    assert errors == []
