"""The readers' own scheduling: bounds while items keep coming, late fragments, cancel on stop.

`AsyncReader` reads a stand-in for the SDK's stream (an async iterator of fragments with its
``cancel()``); the sync `Worker` a generator. No server is involved.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

import lmstudio as lms
import pytest

from outlines_lmstudio import _streams
from outlines_lmstudio._interrupt import SigintGuard
from outlines_lmstudio._streams import AsyncReader, SyncReader
from outlines_lmstudio._threads import Pulse, Worker, held


class EndlessStream:
    """Fragments without end, one per event-loop turn, until cancelled."""

    def __init__(self) -> None:
        self.cancelled = False
        self.cancel_sent = asyncio.Event()
        self.sent = 0

    def __aiter__(self) -> AsyncIterator[str]:
        return self._fragments()

    async def _fragments(self) -> AsyncIterator[str]:
        while not self.cancelled:
            await asyncio.sleep(0)
            self.sent += 1
            yield "x"

    async def cancel(self) -> None:
        self.cancelled = True
        self.cancel_sent.set()


class FailingStream(EndlessStream):
    """Fails after three fragments with an error that is not the SDK's."""

    async def _fragments(self) -> AsyncIterator[str]:
        for _ in range(3):
            await asyncio.sleep(0)
            yield "x"
        # Not one that `Unreadable` stands for (a message the SDK cannot read): as it is.
        raise RuntimeError("not an SDK error")


async def _read_all(
    reader: AsyncReader, seen: list[Any] | None = None, deadline: float | None = None
) -> None:
    while (fragments := await reader.read(idle=30.0, deadline=deadline)) is not None:
        if seen is not None:
            seen += fragments


def _start(stream: EndlessStream, *, whole: bool) -> AsyncReader:
    async def open_stream() -> lms.AsyncPredictionStream:
        await asyncio.sleep(0)
        return cast(lms.AsyncPredictionStream, stream)

    reader = AsyncReader(whole=whole)
    reader.start(open_stream)
    return reader


@pytest.mark.asyncio
@pytest.mark.parametrize("whole", [True, False])
async def test_fragments_arriving_as_the_deadline_expires_still_time_out_and_cancel(
    whole: bool,
) -> None:
    # Fragments keep arriving while the call's deadline runs out: the reader must raise
    # its deadline error, and stop() must still cancel on the server. (A fragment that came
    # while asyncio's Timeout was expiring once killed the reader, and stop() sent nothing.)
    # On a loaded machine the deadline can pass before the prediction is even open; a stop
    # then cancels it once it opens (`AsyncReader.stop`): wait for that, bounded.
    raced = 0
    for _ in range(20):
        stream = EndlessStream()
        reader = _start(stream, whole=whole)
        deadline = time.monotonic() + 0.01
        with pytest.raises(TimeoutError, match="deadline"):
            await _read_all(reader, deadline=deadline)
        await reader.stop()
        async with asyncio.timeout(5):
            await stream.cancel_sent.wait()
        raced += stream.sent > 0
    assert raced  # fragments did arrive as deadlines ran out


@pytest.mark.asyncio
async def test_an_unexpected_error_in_the_stream_reaches_the_reader() -> None:
    reader = _start(FailingStream(), whole=False)
    seen: list[Any] = []
    with pytest.raises(RuntimeError, match="not an SDK error"):
        await _read_all(reader, seen)
    assert seen == ["x", "x", "x"]


@pytest.mark.asyncio
async def test_stop_cancels_a_stream_whose_reader_died() -> None:
    stream = FailingStream()
    reader = _start(stream, whole=True)
    with pytest.raises(RuntimeError, match="not an SDK error"):
        await _read_all(reader)
    await reader.stop()  # the prediction may still run on the server: cancel it
    assert stream.cancelled


def test_a_call_deadline_holds_while_items_keep_coming() -> None:
    stop = threading.Event()

    def produce() -> Iterator[int]:
        while not stop.is_set():
            time.sleep(0.0005)
            yield 1

    def consume(items: Iterator[int]) -> None:
        for _ in items:
            taken.append(1)
            time.sleep(0.002)  # the consumer is slower: items are always waiting

    worker = Worker(produce)
    deadline = time.monotonic() + 0.05
    taken: list[int] = []
    try:
        with pytest.raises(LookupError, match="late"):
            consume(worker.items(deadline, lambda: LookupError("late")))
    finally:
        stop.set()
    assert taken
    assert time.monotonic() - deadline < 5.0  # (before: it never stopped)


@pytest.mark.asyncio
async def test_a_stop_before_the_prediction_is_open_cancels_it_once_open() -> None:
    stream = EndlessStream()
    reader = _start(stream, whole=True)
    await reader.stop()  # the caller leaves at once: the request may already be on its way
    cancelled = [stream.cancelled]
    for _ in range(100):
        await asyncio.sleep(0)
        cancelled.append(stream.cancelled)
    assert cancelled[0] is False  # not open yet when it stopped
    assert cancelled[-1] is True  # cancelled once open


class ShortStream(EndlessStream):
    """Three fragments a loop turn apart, then the end (or an error, when ``fails``)."""

    def __init__(self, *, fails: bool = False) -> None:
        super().__init__()
        self.fails = fails

    async def _fragments(self) -> AsyncIterator[str]:
        for piece in "abc":
            await asyncio.sleep(0)
            yield piece
        if self.fails:
            raise lms.LMStudioServerError("the model crashed")


class SilentStream(EndlessStream):
    """Opens, then sends nothing for 30 s."""

    async def _fragments(self) -> AsyncIterator[str]:
        await asyncio.sleep(30)
        yield "never"


@pytest.mark.asyncio
@pytest.mark.parametrize("whole", [True, False])
async def test_every_fragment_is_read_once_and_a_read_after_the_end_returns_none(
    whole: bool,
) -> None:
    reader = _start(ShortStream(), whole=whole)
    seen: list[Any] = []
    await _read_all(reader, seen)
    assert seen == ["a", "b", "c"]
    for _ in range(2):  # the end stays the end: nothing waits for a fragment to come
        assert await asyncio.wait_for(reader.read(idle=30.0), 1.0) is None


@pytest.mark.asyncio
@pytest.mark.parametrize("whole", [True, False])
async def test_an_error_at_the_end_comes_after_the_fragments_before_it(whole: bool) -> None:
    reader = _start(ShortStream(fails=True), whole=whole)
    seen: list[Any] = []
    with pytest.raises(lms.LMStudioServerError, match="crashed"):
        await _read_all(reader, seen)
    assert seen == ["a", "b", "c"]
    assert reader.at_end is False  # the last fragments were not the end: the error was


@pytest.mark.asyncio
@pytest.mark.parametrize("whole", [True, False])
async def test_a_silent_stream_runs_out_of_its_idle_bound(whole: bool) -> None:
    stream = SilentStream()
    reader = _start(stream, whole=whole)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="idle"):
        await reader.read(idle=0.05)
    assert time.monotonic() - started < 5.0
    await reader.stop()
    assert stream.cancelled


@pytest.mark.asyncio
async def test_an_error_opening_the_prediction_reaches_the_reader() -> None:
    async def refused() -> lms.AsyncPredictionStream:
        raise lms.LMStudioServerError("no such model")

    reader = AsyncReader(whole=True)
    reader.start(refused)
    with pytest.raises(lms.LMStudioServerError, match="no such model"):
        await reader.read(idle=5.0)
    await reader.stop()  # nothing to cancel: the prediction never started


class ClosedUnderneath:
    """A sync SDK stream whose client is closed while a cancel waits for its confirmation.

    The SDK then raises ``RuntimeError`` (its websocket thread is gone), not one of its
    own errors: seen in CI, where the drain thread's traceback failed the next test.
    """

    def __init__(self) -> None:
        self.cancelled = False
        self._events = iter(self._fragments())

    def __iter__(self) -> Iterator[str]:
        return self._events

    def start(self) -> None:
        """Send the request (nothing to send here)."""

    def _fragments(self) -> Iterator[str]:
        yield "x"
        raise RuntimeError("<lmstudio._ws_impl.AsyncTaskManager> is currently inactive.")

    def cancel(self) -> None:
        self.cancelled = True


def test_a_cancel_whose_client_closed_under_it_ends_quietly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    failures: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", failures.append)
    stream = ClosedUnderneath()
    sdk_stream = cast(lms.PredictionStream, stream)
    reader = SyncReader(sdk_stream, SigintGuard(), per_fragment=True)
    assert cast(list[str], reader.read()) == ["x"]
    drain = reader.abandon()
    assert drain is not None  # it was read, so it was sent
    drain.join(10)
    assert stream.cancelled
    assert not drain.is_alive()
    assert [f.exc_value for f in failures] == []


class DroppedUnnoticed(EndlessStream):
    """Open, then silent for good: a channel on a socket that dropped unnoticed."""

    async def _fragments(self) -> AsyncIterator[str]:
        yield "x"
        await asyncio.Event().wait()
        yield "never"  # pragma: no cover


@pytest.mark.asyncio
@pytest.mark.parametrize("whole", [True, False])
async def test_a_read_lost_with_its_socket_ends_with_the_sdks_error_and_sends_nothing(
    whole: bool,
) -> None:
    stream = DroppedUnnoticed()
    reader = _start(stream, whole=whole)
    reading = asyncio.ensure_future(_read_all(reader))
    await asyncio.sleep(0.01)
    was_open = reader.open  # the reset takes only readers whose channel is open
    reader.lose()
    assert (was_open, reader.open) == (True, False)
    with pytest.raises(lms.LMStudioWebsocketError, match="unexpectedly disconnected"):
        await asyncio.wait_for(reading, 5)
    await reader.stop()  # nothing to cancel: the socket is gone
    assert not stream.cancelled
    await asyncio.sleep(0)
    assert reader._pump.cancelled()


class Burst:
    """A sync SDK stream whose fragments come at given delays (seconds) after each read."""

    def __init__(self, *delays: float) -> None:
        self.delays = delays
        self.cancels = 0
        self._events = iter(self._fragments())

    def __iter__(self) -> Iterator[str]:
        return self._events

    def start(self) -> None:
        """Send the request (nothing to send here)."""

    def _fragments(self) -> Iterator[str]:
        for i, delay in enumerate(self.delays):
            time.sleep(delay)
            yield f"f{i}"

    def cancel(self) -> None:
        self.cancels += 1


def _left_after_the_first(stream: Burst) -> tuple[float, threading.Thread]:
    """Read the first fragment, leave; how long leaving took, and the reading thread."""
    reader = SyncReader(cast(lms.PredictionStream, stream), SigintGuard(), per_fragment=True)
    assert cast(list[str], reader.read()) == ["f0"]
    began = time.monotonic()
    drain = reader.abandon()
    took = time.monotonic() - began
    assert drain is not None
    drain.join(10)
    assert not drain.is_alive()
    return took, drain


def test_a_stream_left_after_its_whole_reply_came_is_not_cancelled() -> None:
    """The rest of the reply and its end were already there: a cancel would reach a closed
    channel (LM Studio's warning, which the SDK logs as an ERROR)."""
    stream = Burst(0, 0, 0, 0, 0)
    _left_after_the_first(stream)
    assert stream.cancels == 0


@pytest.mark.parametrize(
    ("delays", "grace"),
    [
        # A fragment generated after the leave: the reply goes on, cancelled at once (the
        # grace is made long, so that only the reading thread can have cancelled in time).
        ((0, 0.05), 2.0),
        ((0, 0, 0, 0.05), 2.0),  # some had come, the reply goes on
        ((0, 1.5), None),  # nothing within LEAVE_GRACE: the leaving caller cancels, only it
    ],
)
def test_a_stream_left_while_its_reply_goes_on_is_cancelled_once_before_leave_returns(
    delays: tuple[float, ...], grace: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if grace is not None:
        monkeypatch.setattr(_streams, "LEAVE_GRACE", grace)
    stream = Burst(*delays)
    took, _ = _left_after_the_first(stream)
    assert stream.cancels == 1
    assert took < 1.0  # the leave did not wait for the slow fragment or the long grace


def test_a_ctrl_c_leave_cancels_at_once_and_only_once() -> None:
    stream = Burst(0, 0.05, 0.05)  # fragments the reading thread waits for, after the leave
    reader = SyncReader(cast(lms.PredictionStream, stream), SigintGuard(), per_fragment=True)
    assert cast(list[str], reader.read()) == ["f0"]
    drain = reader.abandon(wait=2.0)  # as after a Ctrl-C: the cancel is sent at once
    assert drain is not None
    drain.join(10)
    assert stream.cancels == 1


class SlowSend(Burst):
    """A stream whose request takes a while to send; its cancel does nothing before that,
    as the SDK's (``PredictionStream.cancel`` without a channel)."""

    def __init__(self, *delays: float) -> None:
        super().__init__(*delays)
        self.sending = threading.Event()
        self.sent = threading.Event()
        self.release = threading.Event()

    def start(self) -> None:
        self.sending.set()
        self.release.wait(5)
        self.sent.set()

    def cancel(self) -> None:
        if self.sent.is_set():
            self.cancels += 1


@pytest.mark.parametrize("whole", [False, True])
def test_a_cancel_asked_for_while_the_request_is_sent_is_sent_once_it_is(whole: bool) -> None:
    """Found by a probe: a ``timeout=`` that ran out while the request was being sent (a
    busy client) called the SDK's ``cancel()`` before it held the channel, a no-op, and the
    prediction ran on, queued on the server; its thread outlived the watch."""
    stream = SlowSend(0, 0, 0)
    reader = SyncReader(
        cast(lms.PredictionStream, stream), SigintGuard(), per_fragment=not whole, whole=whole
    )
    reading = threading.Thread(target=reader.read)
    reading.start()
    assert stream.sending.wait(5)
    reader.cancel_when_open()  # from the caller's thread, while start() is under way
    assert stream.cancels == 0
    stream.release.set()
    reading.join(5)
    assert stream.cancels == 1  # sent by the reading thread, once the channel was held
    reader.cancel_when_open()  # after: sent at once
    assert stream.cancels == 2


class UnsendableCancel(EndlessStream):
    """A stream whose client is gone: sending the cancel fails outside the SDK's errors."""

    async def cancel(self) -> None:
        raise RuntimeError("the client is closed")


@pytest.mark.asyncio
async def test_stop_with_a_cancel_that_cannot_be_sent_ends_the_reader() -> None:
    reader = _start(UnsendableCancel(), whole=False)
    assert await reader.read(idle=30.0)
    await reader.stop()  # raises nothing: there is no connection left to stop
    await asyncio.sleep(0)
    assert reader._pump.cancelled()  # and the reading task is gone


def _quiet() -> LookupError:
    return LookupError("quiet")


def test_an_idle_bound_ends_a_silent_worker() -> None:
    release = threading.Event()

    def produce() -> Iterator[int]:
        yield 1
        release.wait(5)  # silent: no beat

    worker = Worker(produce, Pulse())
    try:
        with pytest.raises(LookupError, match="quiet"):
            list(worker.items(None, lambda: LookupError("late"), 0.05, _quiet))
    finally:
        release.set()


def test_an_idle_bound_spares_what_has_arrived_and_a_held_pulse() -> None:
    beats = Pulse()

    def produce() -> Iterator[int]:
        with held():  # a wait with a bound of its own (connecting): the idle bound waits
            time.sleep(0.2)
        yield 1
        yield 2

    worker = Worker(produce, beats)
    worker.thread.join(5)
    beats.at -= 10  # long quiet since, but the items and the end arrived before it
    assert list(worker.items(None, lambda: LookupError("late"), 0.05, _quiet)) == [1, 2]
    held_worker = Worker(produce, Pulse())
    assert list(held_worker.items(None, lambda: LookupError("late"), 0.05, _quiet)) == [1, 2]
