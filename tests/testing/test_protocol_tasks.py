"""The emulator's per-request tasks, without a socket."""

from __future__ import annotations

import asyncio
import gc
import sys
from typing import Any, cast

import pytest

from outlines_lmstudio.testing._protocol import Connection


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
