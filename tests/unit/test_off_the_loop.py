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


def test_a_caller_that_left_before_the_thread_ran_leaves_no_thread_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The thread starts the work only if the caller is still there; before, it ran it and
    then failed to hand over the result (InvalidStateError, printed by the thread)."""
    errors: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", errors.append)
    ran: list[int] = []

    class Held(threading.Thread):  # started by the test, once the caller has left
        def start(self) -> None:
            held.append(self)

    held: list[Held] = []

    monkeypatch.setattr(threading, "Thread", Held)  # the module `_discovery` starts it from

    async def main() -> None:
        task = asyncio.ensure_future(_discovery._off_the_loop(ran.append, 1))
        await asyncio.sleep(0)  # the task runs up to its await
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    (thread,) = held
    super(Held, thread).start()
    thread.join(5)
    assert errors == []
    assert ran == []  # the work was not done for nobody


def test_the_work_runs_in_a_daemon_thread_that_cannot_hold_the_exit() -> None:
    """Found by mutation testing: a search left by a cancelled call (up to `PROBE_SECONDS`
    a port) must not hold the interpreter's exit, so its thread is a daemon. Checked on the
    thread while it does the work (deterministic; no timing of a process's exit)."""

    def where() -> tuple[str, bool]:
        thread = threading.current_thread()
        return thread.name, thread.daemon

    async def main() -> tuple[str, bool]:
        return await _discovery._off_the_loop(where)

    assert asyncio.run(main()) == ("outlines-lmstudio-search", True)
