"""Reading a sync SDK prediction stream so that leaving it early stops the server at once."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Generator
from typing import Any, NamedTuple

import lmstudio as lms

from ._common import CONFIRM_SECONDS, DRAIN_SECONDS
from ._config import CALLBACK_KWARGS
from ._flow import wait_limit
from ._interrupt import SigintGuard, interrupt_again
from ._sdk_errors import (
    Unreadable,
    client_closed,
    from_sdk,
    prediction_channel,
    translate_sdk_error,
    unreadable,
)
from ._silence import SETTLE_SECONDS, Silence, StalledWait, sdk_stall, stalled_for
from ._user_time import UserTime

__all__ = [
    "AsyncReader",
    "SyncReader",
    "UnreadResult",
    "Waits",
    "cancel_requested",
    "noting_progress",
    "served",
    "stream_text",
]

_END = object()


class UnreadResult(NamedTuple):
    """The result of a reply that arrived whole but that the SDK failed to read at its end.

    For a structured prediction the SDK runs ``json.loads`` on the whole reply when it
    ends, and lets through what is not a ``JSONDecodeError``: the ``ValueError`` of an
    integer longer than Python reads (4,300 digits: a model writing digits until its token
    limit) or the ``RecursionError`` of nesting deeper than Python's limit. The reply's
    fragments had all come: it is taken as it is, for the caller's own validation to judge
    (``parse`` raises ``ParseError``; a call returns the text). LM Studio's stats were in the
    message the SDK failed on: they are unknown (``None``), the stop reason too.
    """

    stats: None = None
    model_info: None = None


def _unread(exc: Exception) -> bool:
    """Whether the SDK's reading failed on a finished reply's text (see `UnreadResult`).

    Only the two errors ``json.loads`` lets through are taken so; any other error out of
    the SDK's stream reaches the caller as it is.
    """
    if isinstance(exc, RecursionError):
        return True
    # Python's message for an integer over sys.get_int_max_str_digits() digits
    return type(exc) is ValueError and "integer string conversion" in str(exc)


LEAVE_GRACE = 0.02
"""Most seconds leaving a stream waits to learn whether its reply has ended (see
`SyncReader.abandon`, `AsyncReader._cancel`): what is already on its way to the SDK is
read well within it."""

WAITED = 0.01
"""A read after leaving a sync stream that took longer than this (seconds) waited for the
server: its fragment was generated after the leave, so the reply goes on (see
`SyncReader.abandon`). What had already come is read well within it."""

CONFIRM_WAIT = 0.25
"""Seconds a leave without Ctrl-C then waits for LM Studio's confirmation of the cancel.

A client closed right after a stream is left (the end of ``with lms.Client(...)``) cut the
background read of that confirmation, and the SDK reported the coroutine it had made for
the read "never awaited" (found by a probe: 1 to 8 streams in 60; none once the leave
waited). LM Studio confirms within a token's time; past this bound the read goes on in the
background, as before.
"""

_DRAIN = "outlines-lmstudio-drain"
_OPEN: set[SyncReader] = set()
"""Readers of sync predictions under way, from the request until the reply's end was read
or a cancel's drain ended. Held here so that the SDK's stream stays reachable when the
caller's stream becomes garbage in a reference cycle: the cycle collector finalises what a
cycle holds in any order, and the SDK's generators, closed first, released the channel with
no cancel (LM Studio generated to the end, and the SDK logged each late fragment as an
ERROR), or were closed while the drain read them ("generator already executing"; found by
a probe). So only the caller's stream is finalised, and leaving it cancels."""
_TASKS: set[asyncio.Future[None]] = set()


def noting_progress(kwargs: dict[str, Any], note: Callable[[], None]) -> dict[str, Any]:
    """Return a prediction's SDK keywords with a progress callback that calls ``note`` first.

    Prompt-processing progress is a sign of life: it pushes a wait's idle bound back.
    """
    theirs = kwargs.get("on_prompt_processing_progress")

    def progress(value: float) -> None:
        note()
        if theirs is not None:
            theirs(value)

    return {**kwargs, "on_prompt_processing_progress": progress}


class Waits:
    """When the sync SDK's current wait for a prediction's next message began.

    The reader notes each of its asks; the SDK reads prompt-processing reports on without
    handing them over, so ``progress`` (the prediction's progress callback) notes those,
    and calls ``heard`` (a sign of life: `_threads.Pulse`). Apart from the reader: a
    callback of the reader's own would tie the SDK's stream and the reader in a cycle, and
    a stream left unread would then be finalised late, by the garbage collector, once its
    client may be closed (found in the test suite: "Exception ignored in ... _iter_events").
    """

    __slots__ = ("_heard", "at")

    def __init__(self, heard: Callable[[], None] | None = None) -> None:
        self.at = 0.0  # time.monotonic()
        self._heard = heard

    def progress(self) -> None:
        """Note a prompt-processing report: the SDK's next wait begins now."""
        self.at = time.monotonic()
        if (heard := self._heard) is not None:
            heard()


class SyncReader:
    """Reads one sync prediction stream in the caller's thread, under a Ctrl-C guard.

    A ``KeyboardInterrupt`` raised inside the SDK's iterator would close the prediction
    channel before a cancel could be sent (the server would keep generating), so the
    first Ctrl-C during a wait is only noted by ``sigint``, which sends the cancel at once
    from a thread of its own; `read` raises it when the wait ends (LM Studio confirms),
    and the caller's `abandon` sees the prediction ended.

    Parameters
    ----------
    stream
        The SDK's stream (``LLM.respond_stream`` / ``complete_stream``), not started.
    sigint
        The Ctrl-C guard.
    per_fragment
        Arm ``sigint`` around each wait only (the consumer runs its own code between
        fragments); ``False`` when the caller armed it for the whole call.
    whole
        Read to the end in one `read` (see there).
    heard
        Called on each fragment and progress report (a call read under an idle bound:
        `_threads.Pulse`).
    manager
        The client's SDK task manager (`_sdk_errors.task_manager`), for a read per
        fragment: a stream resumed after its client closed must not ask the SDK for
        more (its closed thread refuses the request, and the coroutine it made is
        reported "never awaited").
    client
        The SDK client, for a stream left: nothing is read or cancelled once it is closed,
        or its ``close()`` has begun (`_sdk_errors.client_closed`; ``manager`` is still
        active then, for a while after ``close()`` returns).
    waits
        When the SDK's current wait began, progress reports included (see `Waits`).
    """

    _cancel_pending = False  # a cancel asked for before the request was sent
    _wait_over = False  # a read after a Ctrl-C has left the SDK's wait (see `_unless_confirmed`)
    _confirmed: threading.Lock | None = None  # released then, for the guard's cancel thread
    _channel: Any = None  # the SDK's channel, held from the start (see `_lost`)
    _lost = False  # the SDK released the channel of an unfinished prediction (see `abandon`)

    def __init__(
        self,
        stream: lms.PredictionStream,
        sigint: SigintGuard,
        *,
        per_fragment: bool,
        whole: bool = False,
        heard: Callable[[], None] | None = None,
        manager: Any = None,
        client: Any = None,
        waits: Waits | None = None,
    ) -> None:
        self.stream = stream
        self.waits = Waits() if waits is None else waits
        self._heard = heard
        self._manager = manager
        self._client = client
        self._events = iter(stream)
        self._sigint = sigint
        self._per_fragment = per_fragment
        self._whole = whole
        self.arrived: list[float] | None = None
        self.heard_at = time.monotonic()  # when its last fragment came (see `served`)
        self.left = False  # its caller left it: cancelled, or to be once sent
        self.at_end = False  # a read reached the end: the next one would return None
        self._sent = False  # the SDK sends the request when its stream is first read
        self._started = False  # the SDK holds the prediction's channel
        # Released once it does (the guard's cancel thread waits for that). A plain lock,
        # not a threading.Event: an Event builds a Condition in Python on every call.
        self._open = threading.Lock()
        self._open.acquire()
        self._deciding = threading.Lock()  # see `_decide` and `cancel_when_open`
        self._unread = False  # see `UnreadResult`
        self.process = os.getpid()  # a stream read on in a forked child is refused

    def result(self) -> lms.PredictionResult | UnreadResult:
        """Return the finished prediction's result (stats, stop reason)."""
        if self._unread:
            return UnreadResult()
        return self.stream.result()

    def read(self) -> list[lms.LlmPredictionFragment] | None:
        """Wait for fragments: ``[fragment]`` (per fragment), or ``None`` at the end.

        With ``whole=True`` (a whole reply is wanted and nothing of the caller's runs
        between fragments), one read returns every fragment up to the end: one step of
        the caller's flow instead of one per fragment. `arrived` then holds when each
        one arrived (``time.monotonic()``); it is ``None`` for a read per fragment.

        A Ctrl-C noted during the wait cancels the prediction on the server at once
        (the wait then ends with LM Studio's confirmation), and one noted before the
        first read sends nothing.

        Raises
        ------
        KeyboardInterrupt
            A Ctrl-C arrived during the wait (also when the wait then failed: the SDK's
            time limit on a server that did not confirm the cancel).
        lmstudio.LMStudioError
            The server ended the prediction with an error.
        """
        if self._sigint.interrupted:
            raise KeyboardInterrupt  # before the request: nothing to send, nothing to cancel
        self._sent = True
        self._sigint.on_interrupt = self._cancel_once_open
        arm = self._per_fragment and not self._whole  # else armed by the caller, if at all
        try:
            if arm:  # in the try: an exception raised right after it must disarm (a probe)
                self._sigint.arm()
            if not self._started:
                _OPEN.add(self)  # see _OPEN
                self.stream.start()  # sends the request
                self._channel = prediction_channel(self.stream)
                with self._deciding:  # see `cancel_when_open`
                    self._started = True
                    pending = self._cancel_pending
                self._open.release()
                if pending:
                    self._cancel()
            if self._whole:
                return self._read_all()
            if self._client_closed():
                # Release the stream's channel now: left to the garbage collector, its
                # release on the closed client fails in an "Exception ignored" report.
                with contextlib.suppress(Exception):
                    self.stream.close()
                raise lms.LMStudioWebsocketError("The client was closed.")
            self.waits.at = time.monotonic()
            fragment = next(self._events, None)  # here, not in a helper: once per fragment
            self.heard_at = time.monotonic()
            if self._sigint.interrupted:
                raise KeyboardInterrupt
            if self._heard is not None:
                self._heard()
            if fragment is None:
                _OPEN.discard(self)
                return None
            return [fragment]
        except BaseException as exc:
            # An exception raised into the SDK's wait (a signal handler's: ``sys.exit()``,
            # an application's timeout) closes its channel with no cancel. After a Ctrl-C
            # noted by the guard (a second one, raised at once), the cancel was sent.
            if self._channel is not None:
                if prediction_channel(self.stream) is None:
                    self._lost = not self.at_end and not self._sigint.interrupted
                elif (
                    inspect.isgenerator(self._events)
                    and inspect.getgeneratorstate(self._events) == inspect.GEN_CLOSED
                ):
                    # Raised into the SDK's iterator before it took the channel (its
                    # ``with``): the channel is open, and nothing reads it. A new iterator
                    # reads on, for `abandon` (found by a probe: no cancel was sent).
                    self._events = iter(self.stream)
            if not isinstance(exc, Exception):
                raise
            if self._sigint.interrupted:
                raise KeyboardInterrupt from exc
            _OPEN.discard(self)  # the server ended it (an error), or the client is gone
            if self._started and _unread(exc):  # every fragment had come: see UnreadResult
                self._unread = self.at_end = True
                self._lost = False  # the reply had ended: nothing to cancel
                return None
            if self._started and (wrapped := unreadable(exc)) is not None:
                raise wrapped from exc  # the reply goes on: `abandon` cancels it
            if self._started and (stalled := self._stalled_out(exc)) is not None:
                raise stalled from exc
            raise
        finally:
            try:
                if arm:
                    self._sigint.armed = False  # first, with no call before it: see disarm
                    self._sigint.disarm()
                self._sigint.on_interrupt = None  # from here on, a Ctrl-C starts no cancel
            finally:
                # Also when a second Ctrl-C cut the lines above short (a review): the
                # guard's thread must not send one more once the read is over.
                if self._interrupted():
                    self._end_wait()
            if self._sigint.unsent is not None:  # per fragment: no call unless needed
                self._sigint.run_unsent()

    def _interrupted(self) -> bool:
        """Whether a Ctrl-C was noted (read here: the handler sets it at any moment)."""
        return self._sigint.interrupted

    def _read_all(self) -> list[lms.LlmPredictionFragment] | None:
        """Read every fragment up to the end (``whole``), noting when each one arrived."""
        fragments: list[lms.LlmPredictionFragment] = []
        self.arrived = arrived = []
        heard = self._heard
        waits = self.waits
        waits.at = time.monotonic()
        try:
            for each in self._events:
                if self._sigint.interrupted:
                    raise KeyboardInterrupt
                if heard is not None:
                    heard()
                fragments.append(each)
                arrived.append(now := time.monotonic())
                waits.at = self.heard_at = now
        except Exception as exc:
            if self._sigint.interrupted or not _unread(exc):
                raise
            self._unread = True  # every fragment had come: see UnreadResult
        if self._sigint.interrupted:
            raise KeyboardInterrupt
        self.at_end = True
        _OPEN.discard(self)
        return fragments or None

    def _stalled_out(self, exc: Exception) -> StalledWait | None:
        """Return `StalledWait` if the SDK's own limit ran out only through a stall.

        The SDK bounds each wait by its process-wide limit, and a stall of the process
        (Ctrl-Z, another thread holding the GIL) counts there: a wait that ended well past
        the limit was mostly the stall's, and LM Studio's messages may be unread in the
        socket. The SDK has released the channel; the prediction it gave up is cancelled
        through the one held (found by a probe: a Ctrl-Z of 70 s failed a stream, a call
        and a batch as "LM Studio sent nothing for 60 s", with every reply in the socket).
        """
        if (stall := sdk_stall(exc, self.waits.at, time.monotonic())) is None:
            return None
        if self._lost:  # see `abandon`
            self._lost = False
            with contextlib.suppress(Exception):  # nothing left to stop: see `_cancel`
                self._channel.cancel()
                stall.cancelled = True
        return stall

    def cancel_when_open(self) -> None:
        """Cancel on the server now, or once the request is sent (thread-safe, no wait).

        The SDK's ``cancel()`` does nothing before ``start()`` returns: a timeout that runs
        out while the request is being sent (found by a probe: a busy client, many
        threads) left the prediction running, queued on the server, with no cancel.
        """
        self.left = True
        with self._deciding:
            if not self._started:
                self._cancel_pending = True  # `read` sends it once the request is out
                return
        self._cancel()

    def _cancel_once_open(self) -> None:
        """Cancel on the server, from the guard's thread, once the SDK holds the channel.

        The SDK's ``cancel()`` does nothing before ``start()`` returns: a Ctrl-C that
        arrives while the request is being sent waits for that (bounded).
        """
        if self._open.acquire(timeout=DRAIN_SECONDS):
            self._open.release()  # for any other waiter
            self.stream.cancel()
            self._unless_confirmed()

    def _unless_confirmed(self) -> None:
        """Interrupt the read's wait if LM Studio has not confirmed the cancel in a second.

        Run by the guard's thread after the cancel. The first Ctrl-C waits for LM Studio's
        confirmation, so that the prediction ends cleanly, but a server that neither
        confirmed nor sent anything held the caller for the SDK's whole wait limit, 60 s by
        default, with nothing said (found by a probe: the command line after Ctrl-C or
        SIGTERM, where a call with ``timeout=`` waits `CONFIRM_SECONDS`). After as long, the
        second Ctrl-C the user would have to press is sent (`interrupt_again`): the SDK
        releases the channel, whose cancel went out, and `read` raises the Ctrl-C. Sent only
        while the read is still in its wait (`_end_wait`): never into the caller's code.
        """
        confirmed = threading.Lock()
        confirmed.acquire()
        with self._deciding:
            if self._wait_over:
                return
            self._confirmed = confirmed
        # A wait that overslept (a stall of the process: `_silence`) is followed by another,
        # and the last wait before the second Ctrl-C is `SETTLE_SECONDS` on time: the
        # confirmation may have waited unread.
        wait, settled = CONFIRM_SECONDS, False
        while True:
            started = time.monotonic()
            if confirmed.acquire(timeout=wait):
                return
            if stalled_for(started, wait, time.monotonic()):
                settled = False
            elif settled:
                break
            else:
                settled = True
            wait = SETTLE_SECONDS
        with self._deciding:
            if not self._wait_over:
                interrupt_again()

    def _end_wait(self) -> None:
        """Note that a read after a Ctrl-C has left the SDK's wait (see `_unless_confirmed`).

        A Ctrl-C sent before this runs is raised in the read, at the latest by this call.
        """
        with self._deciding:
            self._wait_over = True
            if (confirmed := self._confirmed) is not None:
                self._confirmed = None
                confirmed.release()

    def abandon(self, wait: float = 0) -> threading.Thread | None:
        """Cancel the prediction on the server; its confirmation is awaited in the background.

        The SDK's ``cancel()`` only sends a message (it is thread-safe); reading on until
        LM Studio confirms (``userStopped``) keeps the channel's late messages from being
        logged as unexpected, and is done by a daemon thread so that leaving returns at once
        (after at most ``wait`` seconds). A stream never read was never sent: reading it
        would send the request, so nothing is done.

        A consumer that stops at a fragment of a short reply, which LM Studio sent in one
        burst, leaves before the SDK has read the reply's end, which is already on its
        way: a cancel sent then reaches a channel LM Studio has closed, and its warning is
        logged by the SDK as an ERROR (55 streams in 100 left at their first fragment, and
        19 in 20 left at their last, before this). So a leave without a Ctrl-C first lets
        the reading thread take what has come: the fragments already there and the
        reply's end (no cancel). A fragment that the thread had to wait for (`WAITED`) was
        generated after the leave: the reply goes on and is cancelled at once. After
        `LEAVE_GRACE` seconds without the end, the cancel is sent from here, before leaving
        returns (the process may exit next); then LM Studio's confirmation is awaited for up
        to `CONFIRM_WAIT` seconds (the client may be closed next). A Ctrl-C (``wait`` > 0)
        cancels at once, also one that comes while leaving.

        Returns
        -------
        threading.Thread | None
            The thread awaiting the confirmation; ``None`` if nothing was sent, or at
            interpreter exit (no thread can start then; the process's end closes the socket).
        """
        self.left = True
        if not self._sent:
            return None
        if self._client_gone():
            # Nothing to cancel or read on a closed client: reading its stream would ask
            # its stopped thread for more (found by a probe: "coroutine 'Queue.get' was
            # never awaited" when a half-read stream was collected after client.close()).
            _OPEN.discard(self)
            with contextlib.suppress(Exception):
                self.stream.close()
            return None
        if self._lost:
            # The SDK released the channel (an exception raised inside its wait): it reads
            # nothing more, and its cancel() sends nothing. The held channel sends the
            # cancel; what LM Studio sends until it stops is logged by the SDK as
            # unhandled (a few messages, not the rest of the reply).
            _OPEN.discard(self)
            with contextlib.suppress(Exception):  # nothing left to stop: see `_cancel`
                self._channel.cancel()
            return None
        told = threading.Event()  # set once cancelled, or at the end, after leaving
        if wait or sys.is_finalizing():
            self._decide(told, cancel=True)  # the reading thread sends no second cancel
        if sys.is_finalizing():  # a stream collected at exit: a thread would never start
            _OPEN.discard(self)
            with contextlib.suppress(Exception):  # (its start() would wait forever), and
                self.stream.close()  # the SDK's own cleanup fails (its loop has stopped)
            return None
        drain = threading.Thread(target=self._drain, args=(told,), name=_DRAIN, daemon=True)
        try:
            drain.start()
        except RuntimeError:
            # No thread to be had ("can't start new thread"): cancel from here, unread, so
            # that LM Studio does not generate the rest (found by a review).
            self._decide(told, cancel=True)
            _OPEN.discard(self)
            raise
        try:
            if wait:
                drain.join(wait)
            else:
                if not told.wait(LEAVE_GRACE):
                    self._decide(told, cancel=True)
                drain.join(CONFIRM_WAIT)
        except BaseException:
            # A Ctrl-C (or a signal handler's exception) while leaving: cancel at once, as
            # in a read. Raised in the grace above, it had left the cancel unsent, and LM
            # Studio generated the whole reply (found by a probe).
            self._decide(told, cancel=True)
            raise
        return drain

    def _client_closed(self) -> bool:
        """Whether the client is known to be closed (see ``manager``): once per fragment."""
        return self._manager is not None and self._manager.active is False

    def _client_gone(self) -> bool:
        """Whether the client is closed or closing (see ``client``), for a stream left."""
        if self._client is not None:
            return client_closed(self._client)
        return self._client_closed()

    def _cancel(self) -> None:
        # A cancel that cannot be sent (the connection or the client is gone: the SDK may
        # raise its own error or RuntimeError) has nothing left to stop. After the reply's
        # end was read, the SDK's cancel() sends nothing.
        with contextlib.suppress(Exception):
            self.stream.cancel()

    def _drain(self, told: threading.Event) -> None:
        # Any end is this thread's end: the confirmation, an SDK error, or the client closed
        # under it (the SDK then raises RuntimeError from its stopped websocket thread).
        # Nothing is waiting for this thread's outcome, so none of it is an error to print.
        try:
            asked = time.monotonic()
            # A client closed while this thread reads (its owner left `with lms.Client`
            # right after leaving the stream) is asked for nothing more: its stopped
            # thread would refuse the read, and the coroutine the SDK made for it is then
            # reported "never awaited" (CI, once, under load).
            while not self._client_gone() and next(self._events, None) is not None:
                came = time.monotonic()
                if came - asked > WAITED and not told.is_set():  # the reply goes on
                    self._decide(told, cancel=True)
                asked = came
        except Exception:
            # An error is no sign that the reply ended (after the server's own error, the
            # SDK sends nothing).
            self._decide(told, cancel=True)
        finally:
            self._decide(told, cancel=False)
            _OPEN.discard(self)

    def _decide(self, told: threading.Event, *, cancel: bool) -> None:
        """Cancel, or not, once: the leaving caller and the reading thread may both try.

        ``told`` is set after the cancel is sent, so a caller that waits on it leaves only
        then (the process may exit next).
        """
        with self._deciding:
            if not told.is_set():
                if cancel:
                    self._cancel()
                told.set()


def cancel_requested(task: asyncio.Task[Any] | None) -> bool:
    """Whether ``task`` was asked to stop (``cancel()``), not merely raised a CancelledError.

    A callback of the caller's may raise one where the SDK reads the reply (this task):
    that is the callback's error, which the reader hands on, as any other.
    """
    cancelling = getattr(task, "cancelling", None)  # a loop's own task class may lack it
    return cancelling is None or cancelling() > 0


def served(client: Any, within: float) -> bool:
    """Tell whether LM Studio is serving the library's sync predictions on ``client``.

    Some prediction got a fragment in the last ``within`` seconds, and none that is sent and
    not left has waited that long for its next one: such a one may be queued behind a slot
    a left prediction holds (found by a probe: under steady traffic, a few left predictions held
    their slots for as long as the traffic went on).
    """
    now = time.monotonic()
    mine = [r for r in list(_OPEN) if r._client is client]
    heard = any(now - r.heard_at < within for r in mine)
    return heard and not any(r._sent and not r.left and now - r.heard_at >= within for r in mine)


def stream_text(
    stream: lms.PredictionStream, sigint: SigintGuard, *, per_fragment: bool = True
) -> Generator[str, None, None]:
    """Yield the answer text of a sync prediction stream, fragment by fragment.

    Leaving early (``close()``, an exception in the consumer, a Ctrl-C noted by
    ``sigint``) cancels the prediction on the server (see `SyncReader`). Reasoning
    (typed fragments, LM Studio's marker, Harmony control text) is not part of the answer
    and is skipped (`ReasoningSplitter`). SDK errors propagate (the
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
    from ._reasoning import ReasoningSplitter  # the CLI's `complete` only

    reader = SyncReader(stream, sigint, per_fragment=per_fragment)
    # LM Studio's reasoning marker and Harmony control text are not text either (found by
    # a probe: `complete` printed them): the splitter takes them out, as for every call.
    # Think tags in untyped text are the completion's own text (found by a probe: a
    # completion that opened with <think> printed nothing, with status 0).
    splitter = ReasoningSplitter(untyped_tags=False)
    finished = False
    try:
        while (fragments := reader.read()) is not None:
            for fragment in fragments:
                for chunk in splitter.feed(
                    fragment.content, fragment.reasoning_type, tokens_count=fragment.tokens_count
                ):
                    if not chunk.reasoning:
                        yield chunk.text
        for chunk in splitter.close():
            if not chunk.reasoning:
                yield chunk.text
        finished = True
        if not splitter.answer.strip() and (splitter.reasoned or splitter.in_reasoning):
            # Found by a probe: a budget spent on reasoning printed an empty completion,
            # status 0; said as every other call says it.
            from ._reasoning import reply_problem
            from ._reply import reply_stats

            result = reader.result()
            stats = reply_stats(result.stats, reasoning_tokens=splitter.reasoning_tokens)
            error = reply_problem(
                splitter.answer,
                splitter.reasoning,
                stats,
                structured=False,
                in_reasoning=splitter.in_reasoning or splitter.in_header,
                reasoned=splitter.reasoned,
            )
            if error is not None:
                raise error
    except lms.LMStudioError as exc:
        if from_sdk(exc):  # not ours, which derive from the SDK's classes too
            finished = True  # the server ended the prediction
        raise
    except Unreadable as exc:  # said as ours; not finished: the reply is cancelled below
        said = translate_sdk_error(exc, host=None, model=None, stage="predict")
        raise (exc if said is None else said) from exc.__cause__
    except KeyboardInterrupt:
        finished = True
        reader.abandon(CONFIRM_SECONDS)  # the process may exit next: see the cancel confirmed
        raise
    finally:
        if not finished:
            reader.abandon()


class AsyncReader:
    """Opens and reads one async prediction in a task, so that leaving cancels on the server.

    When the task consuming a stream is cancelled, the SDK would release the channel before
    a cancel could be sent (the server would keep generating), so an inner task opens the
    prediction and reads the SDK stream, holding its fragments, and the consumer waits on a
    bare future that the inner task resolves: at a fragment, or (for a whole reply) at the
    reply's end. One loop timer bounds each wait (see `_expire`).
    The consumer never waits for the opening by itself: the first `read` does, under the
    same bounds, and a `stop` before the prediction is open cancels it once it is.

    Make it, let `watch_progress` wrap the SDK keywords, then `start` it with a function
    that starts the prediction with them.

    Parameters
    ----------
    whole
        Nobody sees the reply before its end: the fragments are handed over at once when it
        ends (no task switch per fragment), and each one only pushes the wait's bound back.

    Attributes
    ----------
    arrived
        With ``whole``, when each fragment handed over arrived (``time.monotonic()``);
        ``None`` otherwise (a fragment is read as it arrives).
    process
        The process the reader was made in (``os.getpid()``).
    """

    def __init__(self, *, whole: bool = False) -> None:
        self._whole = whole
        self._held: list[lms.LlmPredictionFragment] = []  # arrived, not yet read
        self._end: object = None  # _END or the error the reply ended with, once it has
        # The future a read waits on, and the timer that bounds it.
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._arrived: list[float] = []
        self.arrived = self._arrived if whole else None
        # When (time.monotonic()) the reader last heard from LM Studio during a wait: the
        # wait's start, each progress mark, and (whole) each fragment.
        self._heard = 0.0
        self._silence: Silence | None = None  # made by the first timer that runs out
        self._ended = False  # the server ended the prediction (or it never started)
        self._leaving = False  # stopped before it was open: cancel once it is
        self.at_end = False  # a read reached the end: the next one would return None
        self.stream: lms.AsyncPredictionStream | None = None
        self._unread = False  # see `UnreadResult`
        self.process = os.getpid()  # a stream read on in a forked child is refused
        self._clock: UserTime | None = None  # the caller's callbacks' time, if any

    def watch_progress(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Return the prediction's SDK keywords with a progress callback that notes activity.

        The caller's callbacks are timed, and their time pushes the deadline back: a
        blocking one holds up the event loop, the deadline's timer with it (`UserTime`).
        """
        callbacks = {k: f for k in CALLBACK_KWARGS if (f := kwargs.get(k)) is not None}
        if callbacks:
            self._clock = UserTime(self._progress)  # a callback's return is a sign of life
            kwargs = {**kwargs, **self._clock.timing(callbacks)}
        return noting_progress(kwargs, self._progress)

    def _due(self, deadline: float | None, now: float) -> float | None:
        """Return the deadline, pushed back by the time the caller's callbacks took so far."""
        if deadline is None or (clock := self._clock) is None:
            return deadline
        return deadline + clock.spent(now)

    def start(self, open_stream: Callable[[], Awaitable[lms.AsyncPredictionStream]]) -> None:
        """Open the prediction and read it, in a task of its own.

        ``open_stream`` starts the prediction and returns the SDK's started stream.
        """
        self._pump = asyncio.create_task(self._fill(open_stream))
        _TASKS.add(self._pump)  # keep a reference until done
        self._pump.add_done_callback(_TASKS.discard)

    def on_its_loop(self) -> bool:
        """Whether this thread runs the reader's event loop (where its stream lives) now."""
        try:
            return asyncio.get_running_loop() is self._pump.get_loop()
        except RuntimeError:  # no loop runs in this thread
            return False

    def loop_closed(self) -> bool:
        """Whether the reader's event loop (where its stream lives) was closed."""
        return self._pump.get_loop().is_closed()

    def _progress(self) -> None:
        """Note a prompt-processing report: a sign of life, as a fragment is.

        The wait is not woken by it, nor its timer moved: the time noted here pushes the
        idle bound back when the timer runs out (see `_expire`).
        """
        self._heard = time.monotonic()

    async def _fill(self, open_stream: Callable[[], Awaitable[lms.AsyncPredictionStream]]) -> None:
        channel = None
        try:
            self.stream = stream = await open_stream()
            channel = prediction_channel(stream)
            if self._leaving:  # the caller left while it opened
                await self._cancel_open(stream)
                return
            if self._whole:  # kept until the end; each fragment is a sign of life
                held, arrived = self._held, self._arrived
                async for fragment in stream:  # inline, not a helper: once per fragment
                    self._heard = now = time.monotonic()  # see `_expire`
                    held.append(fragment)
                    arrived.append(now)
            else:  # each fragment wakes a waiting read (and so ends its wait)
                async for fragment in stream:
                    self._held.append(fragment)  # a read takes the list: look it up each time
                    if (waiter := self._waiter) is not None and not waiter.done():
                        waiter.set_result(None)
            self._ended = True
            self._finish(_END)
        except BaseException as exc:  # the SDK's errors, and any other: the reader raises it
            # Also what the caller's callback raised that is no Exception (sys.exit(), a
            # KeyboardInterrupt, pytest.fail(), a CancelledError), as the SDK by hand raises
            # it in the awaiting coroutine. Left to end this task, one made the call wait out
            # its read_timeout and blame LM Studio (for good without one), or left the event
            # loop (found by probes).
            if isinstance(exc, asyncio.CancelledError) and cancel_requested(asyncio.current_task()):
                raise  # the reader (or the loop's end) stops this task so
            if self.stream is not None and isinstance(exc, Exception) and _unread(exc):
                self._unread = self._ended = True  # see UnreadResult
                self._finish(_END)
                return
            if self.stream is not None and (wrapped := unreadable(exc)) is not None:
                exc = wrapped  # a message the SDK cannot read: not an end, cancelled below
            # An SDK error means the server ended the prediction, or it never started.
            self._ended = from_sdk(exc) or self.stream is None
            if not self._ended and channel is not None:
                # Any other error of the SDK's reading (a message it cannot read) made it
                # release the channel: its cancel() sends nothing now, the channel held from
                # the start still can, as `SyncReader.abandon` does (found by a probe: LM
                # Studio generated on to the end).
                with contextlib.suppress(Exception):
                    await channel.cancel()
                self._ended = True
            self._finish(exc)

    def _finish(self, end: object) -> None:
        """Hand the reader how the reply ended: `_END` or an error (after what it held)."""
        self._end = end
        if (waiter := self._waiter) is not None and not waiter.done():
            waiter.set_result(None)

    async def _cancel_open(self, stream: lms.AsyncPredictionStream) -> None:
        """Cancel a prediction nobody waits for; read on until LM Studio confirms (bounded)."""
        with contextlib.suppress(lms.LMStudioError, TimeoutError):
            await stream.cancel()
            async with asyncio.timeout(DRAIN_SECONDS):
                async for _ in stream:
                    pass
        self._ended = True

    @property
    def open(self) -> bool:
        """Whether the prediction's channel is open and the reply has not ended."""
        return self.stream is not None and not self._ended

    def lose(self) -> None:
        """End the read with the SDK's error for a lost socket (its session was reset).

        The reader's task is cancelled: its channel is on a socket that is gone, so there
        is nothing to cancel on the server, and the SDK may never tell the channel.
        """
        if self._ended:
            return
        self._ended = True
        self._finish(lms.LMStudioWebsocketError("Client unexpectedly disconnected."))
        self._pump.cancel()

    def result(self) -> lms.PredictionResult | UnreadResult:
        """Return the finished prediction's result (stats, stop reason)."""
        assert self.stream is not None, "result() before the prediction was read to its end"
        if self._unread:
            return UnreadResult()
        return self.stream.result()

    async def read(
        self, idle: float | None = None, deadline: float | None = None
    ) -> list[lms.LlmPredictionFragment] | None:
        """Wait for fragments: all that have arrived (at least one), or ``None`` at the end.

        A whole reader hands every fragment over at the reply's end, and its error (if it
        ended with one) at the next read.

        Parameters
        ----------
        idle
            The longest wait for any message (progress counts), or ``None``.
        deadline
            When the call runs out of time (``time.monotonic()``), or ``None``. It holds
            even while fragments keep coming, until the reply has ended: then what it holds
            is the caller's (a consumer slow between fragments lost a complete reply, found
            by a probe).

        Raises
        ------
        lmstudio.LMStudioError
            The server ended the prediction with an error.
        TimeoutError
            A bound ran out (``"deadline"`` or ``"idle"``).
        """
        now = time.monotonic()
        due = self._due(deadline, now)
        if due is not None and now >= due and self._end is None:
            raise TimeoutError("deadline")  # even with fragments waiting, while it goes on
        if self._end is None and (self._whole or not self._held):
            # Wait on a bare future under one timer that `_expire` moves only when it runs
            # out: ``asyncio.timeout`` around a queue or an ``Event`` costs about a dozen
            # Python calls more, and this is every call's wait, and every fragment's.
            loop = asyncio.get_running_loop()
            self._waiter = waiter = loop.create_future()
            self._heard = now
            limit, by_deadline = wait_limit(due, idle, now)
            if limit is not None:
                at = loop.time() + limit
                expire = self._expire
                self._timer = loop.call_at(at, expire, waiter, idle, deadline, by_deadline, at)
            try:
                await waiter
            finally:
                self._waiter = None
                if (timer := self._timer) is not None:
                    self._timer = None
                    timer.cancel()
        fragments, self._held = self._held, []
        if fragments:  # deliver what came first; an error is raised by the next read
            self.at_end = self._end is _END
            return fragments
        if isinstance(self._end, BaseException):
            raise self._end
        return None

    def _expire(
        self,
        waiter: asyncio.Future[None],
        idle: float | None,
        deadline: float | None,
        by_deadline: bool,
        at: float,
    ) -> None:
        """Fail a read whose timer ran out, or (heard from since) let it go on.

        The timer is set once for the whole bound: a sign of life does not move it (that
        would cost a timer operation per fragment). When it runs out after LM Studio was
        heard from within ``idle``, a new timer is set for what is left of it, so each
        silence, not the time since the wait began, is what ``idle`` bounds. The bound the
        timer was set to names the error, not a second clock reading: a reading taken after
        a preemption could misname the call's deadline. ``at``: when the timer was due.
        """
        if waiter.done():  # the reply ended, or the reader left, in the same loop pass
            return
        loop = waiter.get_loop()
        # A timer that ran late saw a stall of the process, whose time is not LM Studio's
        # silence (see `_silence`).
        if (silence := self._silence) is None:
            self._silence = silence = Silence()
        if late := stalled_for(at, 0.0, loop.time()):
            silence.stalled(self._heard, late)
        now = time.monotonic()
        due = self._due(deadline, now)
        left: float | None
        if by_deadline:
            if due is None or due <= now:
                waiter.set_exception(TimeoutError("deadline"))
                return
            # The caller's callbacks took some of the time (a blocking one held this timer
            # up): the rest of the deadline holds, and the idle bound.
            left = None if idle is None else silence.left(idle, self._heard, now)
        else:
            assert idle is not None  # a timer without a deadline is the idle bound
            left = silence.left(idle, self._heard, now)
            if left <= 0:
                waiter.set_exception(TimeoutError("idle"))
                return
        limit, by_deadline = wait_limit(due, left, now)
        at = loop.time() + (limit or 0.0)
        self._timer = loop.call_at(at, self._expire, waiter, idle, deadline, by_deadline, at)

    async def stop(self) -> None:
        """Cancel the prediction on the server; its reader finishes in the background.

        The cancel is sent by a task of its own, which the caller awaits shielded: a caller
        cancelled again while it leaves (a second ``cancel()``, an outer timeout) would
        otherwise abort the send, and the server would go on generating.
        """
        if (sending := self._send_stop()) is not None:
            await asyncio.shield(sending)

    def stop_soon(self) -> None:
        """Cancel the prediction on the server from outside the reader's event loop.

        For a stream finalised where it cannot wait: by the garbage collector with the loop
        not running (a sync bridge stepping it with ``loop.run_until_complete``), in another
        thread, or at interpreter exit. The cancel is handed to the reader's loop, and sent
        as soon as that loop runs again; a closed loop has nothing left to run it (its
        sockets are closed), and nothing is done. Thread-safe; returns at once.
        """
        if self.on_its_loop():
            self._send_stop()
            return
        loop = self._pump.get_loop()
        if loop.is_closed():
            return
        # The loop may close meanwhile (another thread): call_soon_threadsafe then raises.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._send_stop)

    def _send_stop(self) -> asyncio.Task[None] | None:
        """Start the task that sends the cancel (see `_cancel`); ``None`` if none is needed."""
        if self._ended:
            return None
        if self.stream is None:  # not open yet: the reader cancels it once it is
            self._leaving = True
            return None
        sending = asyncio.create_task(self._cancel(self.stream))
        _TASKS.add(sending)  # keep a reference until done
        sending.add_done_callback(_TASKS.discard)
        return sending

    async def _cancel(self, stream: lms.AsyncPredictionStream) -> None:
        """Send the cancel, then wait for its confirmation in the background.

        A stream left at its last fragment may be left before the reading task has read
        the reply's end, which is already on its way (a cancel then reaches a channel
        LM Studio has closed, whose warning the SDK logs as an ERROR). So the reading task
        first gets up to `LEAVE_GRACE` seconds to take what has come: the end (no cancel),
        or not (the reply goes on: cancel). Fragments that come meanwhile do not end the
        grace (found by a probe: a reply sent in one burst, left two fragments before its
        end, was cancelled on the next fragment, and the cancel crossed the end: an ERROR
        in 6 runs of 6). A whole reply's reader wakes nobody per fragment (it would cost
        each fragment a check): it is cancelled at once.
        """
        if not self._whole and self._end is None:
            loop = asyncio.get_running_loop()
            until = loop.time() + LEAVE_GRACE
            while not self._ended and (left := until - loop.time()) > 0:
                self._waiter = told = loop.create_future()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(told, left)
                if self._waiter is told:
                    self._waiter = None
            if self._ended:  # the server ended the reply: nothing to cancel
                return
        try:
            await stream.cancel()
        except (Exception, asyncio.CancelledError):  # not sent (connection or client gone)
            self._pump.cancel()
            return
        drain = asyncio.create_task(self._drain())
        _TASKS.add(drain)  # keep a reference until done
        drain.add_done_callback(_TASKS.discard)

    async def _drain(self) -> None:
        """Wait for the cancel to be confirmed; drop the reader if the server never does."""
        try:
            await asyncio.wait_for(self._pump, DRAIN_SECONDS)
        except (TimeoutError, asyncio.CancelledError):
            self._pump.cancel()
