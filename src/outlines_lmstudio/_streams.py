"""Reading a sync SDK prediction stream so that leaving it early stops the server at once."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Generator
from typing import Any

import lmstudio as lms

from ._common import CONFIRM_SECONDS, DRAIN_SECONDS
from ._interrupt import SigintGuard

__all__ = ["AsyncReader", "SyncReader", "stream_text"]

_END = object()
_DRAINING: set[asyncio.Task[None]] = set()


class SyncReader:
    """Reads one sync prediction stream in the caller's thread, under a Ctrl-C guard.

    A ``KeyboardInterrupt`` raised inside the SDK's iterator would close the prediction
    channel before a cancel could be sent (the server would keep generating), so the
    first Ctrl-C during a wait is only noted by ``sigint``; `read` then raises it once the
    fragment is in, and the caller's `abandon` cancels on the server.

    Parameters
    ----------
    stream
        The SDK's stream (``LLM.respond_stream`` / ``complete_stream``), not started.
    sigint
        The Ctrl-C guard.
    per_fragment
        Arm ``sigint`` around each wait only (the consumer runs its own code between
        fragments); ``False`` when the caller armed it for the whole call.
    """

    def __init__(
        self, stream: lms.PredictionStream, sigint: SigintGuard, *, per_fragment: bool
    ) -> None:
        self.stream = stream
        self._events = iter(stream)
        self._sigint = sigint
        self._per_fragment = per_fragment

    def result(self) -> lms.PredictionResult:
        """Return the finished prediction's result (stats, stop reason)."""
        return self.stream.result()

    def read(self) -> list[lms.LlmPredictionFragment] | None:
        """Wait for the next fragment: ``[fragment]``, or ``None`` at the end.

        Raises
        ------
        KeyboardInterrupt
            A Ctrl-C arrived during the wait.
        lmstudio.LMStudioError
            The server ended the prediction with an error.
        """
        if self._per_fragment:
            self._sigint.arm()
            try:
                fragment = next(self._events, None)
            finally:
                self._sigint.disarm()
        else:
            fragment = next(self._events, None)
        if self._sigint.interrupted:
            raise KeyboardInterrupt
        return None if fragment is None else [fragment]

    def abandon(self, wait: float = 0) -> None:
        """Cancel the prediction on the server; its confirmation is awaited in the background.

        The SDK's ``cancel()`` only sends a message (it is thread-safe); reading on until
        LM Studio confirms (``userStopped``) keeps the channel's late messages from being
        logged as unexpected, and is done by a daemon thread so that leaving returns at once
        (after at most ``wait`` seconds).
        """
        with contextlib.suppress(lms.LMStudioError):
            self.stream.cancel()
        drain = threading.Thread(target=self._drain, name="outlines-lmstudio-drain", daemon=True)
        drain.start()
        if wait:
            drain.join(wait)

    def _drain(self) -> None:
        with contextlib.suppress(lms.LMStudioError):
            for _ in self._events:
                pass


def stream_text(
    stream: lms.PredictionStream, sigint: SigintGuard, *, per_fragment: bool = True
) -> Generator[str, None, None]:
    """Yield the answer text of a sync prediction stream, fragment by fragment.

    Leaving early (``close()``, an exception in the consumer, a Ctrl-C noted by
    ``sigint``) cancels the prediction on the server (see `SyncReader`). Reasoning
    fragments are not part of the answer and are skipped. SDK errors propagate (the
    server ended the prediction itself).

    Parameters
    ----------
    stream
        The SDK's stream, not started.
    sigint
        The Ctrl-C guard; a noted Ctrl-C cancels, then raises ``KeyboardInterrupt``.
    per_fragment
        As for `SyncReader`.

    Yields
    ------
    str
        The text of each answer fragment.
    """
    reader = SyncReader(stream, sigint, per_fragment=per_fragment)
    finished = False
    try:
        while (fragments := reader.read()) is not None:
            for fragment in fragments:
                if fragment.reasoning_type == "none":
                    yield fragment.content
        finished = True
    except lms.LMStudioError:
        finished = True  # the server ended the prediction
        raise
    except KeyboardInterrupt:
        finished = True
        reader.abandon(CONFIRM_SECONDS)  # the process may exit next: see the cancel confirmed
        raise
    finally:
        if not finished:
            reader.abandon()


class AsyncReader:
    """Reads one async prediction stream through a task, so that leaving cancels on the server.

    When the task consuming a stream is cancelled, the SDK would release the channel before
    a cancel could be sent (the server would keep generating), so an inner task reads the
    SDK stream into a queue and the consumer waits on the queue.

    Parameters
    ----------
    stream
        The SDK's started stream.
    """

    def __init__(self, stream: lms.AsyncPredictionStream) -> None:
        self.stream = stream
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._pump = asyncio.create_task(self._fill())

    async def _fill(self) -> None:
        try:
            async for fragment in self.stream:
                self._queue.put_nowait(fragment)
            self._queue.put_nowait(_END)
        except lms.LMStudioError as exc:
            self._queue.put_nowait(exc)

    def result(self) -> lms.PredictionResult:
        """Return the finished prediction's result (stats, stop reason)."""
        return self.stream.result()

    async def read(self) -> list[lms.LlmPredictionFragment] | None:
        """Wait for fragments: all that have arrived (at least one), or ``None`` at the end.

        Raises
        ------
        lmstudio.LMStudioError
            The server ended the prediction with an error.
        """
        fragments: list[lms.LlmPredictionFragment] = []
        item = await self._queue.get()
        while True:
            if item is _END or isinstance(item, BaseException):
                if fragments:  # deliver what came first; the end is read next time
                    self._queue.put_nowait(item)
                    return fragments
                if isinstance(item, BaseException):
                    raise item
                return None
            fragments.append(item)
            if self._queue.empty():
                return fragments
            item = self._queue.get_nowait()

    async def stop(self) -> None:
        """Cancel the prediction on the server; its reader finishes in the background."""
        if self._pump.done():
            return
        try:
            await self.stream.cancel()
        except (lms.LMStudioError, asyncio.CancelledError):
            self._pump.cancel()
            return
        drain = asyncio.create_task(self._drain())
        _DRAINING.add(drain)  # keep a reference until done
        drain.add_done_callback(_DRAINING.discard)

    async def _drain(self) -> None:
        """Wait for the cancel to be confirmed; drop the reader if the server never does."""
        try:
            await asyncio.wait_for(self._pump, DRAIN_SECONDS)
        except (TimeoutError, asyncio.CancelledError):
            self._pump.cancel()
