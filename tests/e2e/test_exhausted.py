"""The library in a process out of threads or file descriptors, and once it has them again.

A process out of threads or memory fails ``Thread.start`` with ``RuntimeError("can't start
new thread")``. Here it is simulated for the library's own threads only (named
``outlines-lmstudio-...``): the SDK's and pytest's start as usual. Found by probes of
exhausted resources, which also saw the first one under a real memory limit
(``RLIMIT_AS``). Out of descriptors, a subprocess lowers its own ``RLIMIT_NOFILE``.
"""

from __future__ import annotations

import textwrap
import threading
from collections.abc import Iterator
from typing import Any

import lmstudio as lms
import pytest

from outlines_lmstudio import LMStudioConnectionError, from_lmstudio
from outlines_lmstudio.testing import LMStudioEmulator

from .conftest import TEXT_MODEL, VISION_MODEL
from .helpers import endpoint_count, png_image, run_script
from .misbehaving import Misbehaving


class Refusing:
    """Refuses to start the library's threads whose names begin with ``prefix``."""

    def __init__(self) -> None:
        self.prefix: str | None = None
        self.refused: list[str] = []


@pytest.fixture
def refusing(monkeypatch: pytest.MonkeyPatch) -> Iterator[Refusing]:
    state = Refusing()
    start = threading.Thread.start

    def refusing_start(thread: threading.Thread, *args: Any, **kwargs: Any) -> None:
        if state.prefix is not None and thread.name.startswith(state.prefix):
            state.refused.append(thread.name)
            raise RuntimeError("can't start new thread")
        start(thread, *args, **kwargs)

    monkeypatch.setattr(threading.Thread, "start", refusing_start)
    yield state
    state.prefix = None


def test_a_session_whose_connecting_thread_did_not_start_connects_next_time(
    emulator: LMStudioEmulator, refusing: Refusing
) -> None:
    """The session's connection under way was noted before its thread started, and nothing
    ever completed it: every later call on the client waited ``connect_timeout`` for it,
    then blamed LM Studio ("did not complete the connection"), threads or not."""
    client = lms.Client(emulator.api_host)  # its sessions connect on first use
    try:
        model = from_lmstudio(client, TEXT_MODEL, connect_timeout=3)
        refusing.prefix = "outlines-lmstudio-connect"
        with pytest.raises(RuntimeError, match="can't start new thread"):
            model("hello", max_tokens=3)
        assert refusing.refused == ["outlines-lmstudio-connect"]
        refusing.prefix = None
        assert model("hello", max_tokens=3)
        assert "".join(model.stream("hello", max_tokens=3))
    finally:
        client.close()


def test_a_batch_whose_first_thread_did_not_start_sends_nothing_later(
    client: lms.Client, emulator: LMStudioEmulator, refusing: Refusing
) -> None:
    """The pool queues an item before it starts a thread for it: the failed batch's first
    item stayed queued, and the next batch's first thread sent it to LM Studio. A stopped
    call opens no prediction and uploads nothing, but asked the model's traits: nothing of
    the item runs now."""
    model = from_lmstudio(client, VISION_MODEL)
    assert model("warm", max_tokens=2)
    refusing.prefix = "outlines-lmstudio-batch"
    with pytest.raises(RuntimeError, match="can't start new thread"):
        model.batch([["Describe", png_image("blue")] for _ in range(8)], max_tokens=2)
    refusing.prefix = None
    assert len(model.batch([f"next {i}" for i in range(4)], max_tokens=2)) == 4
    sent = [p.last_user_text for p in emulator.predictions[1:]]
    assert sorted(sent) == [f"next {i}" for i in range(4)]
    assert endpoint_count(emulator, "uploadFileBase64") == 0
    assert endpoint_count(emulator, "getModelInfo") == 0  # the step before: not checked


def test_a_stream_left_when_no_thread_can_wait_for_the_cancel_still_cancels(
    client: lms.Client,
    emulator: LMStudioEmulator,
    refusing: Refusing,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Leaving a stream sends the cancel and awaits LM Studio's confirmation in a thread;
    when none could start, no cancel was sent, and LM Studio generated the whole reply
    (found by a review)."""
    monkeypatch.setattr(emulator, "token_latency", 0.02)
    emulator.script(TEXT_MODEL, ["word " * 200])
    model = from_lmstudio(client, TEXT_MODEL)
    stream = model.stream("hello")
    assert next(stream)
    refusing.prefix = "outlines-lmstudio-drain"
    with pytest.raises(RuntimeError, match="can't start new thread"):
        stream.close()
    refusing.prefix = None
    emulator.wait_until(lambda: emulator.predictions[-1].done)
    assert emulator.predictions[-1].cancelled
    assert model("the model still works", max_tokens=3)


CTRL_C_WITHOUT_A_THREAD = textwrap.dedent(
    """
    import os, signal, sys, threading, time
    import lmstudio as lms
    from outlines_lmstudio import LMStudioConnectionError, from_lmstudio

    start = threading.Thread.start

    def refusing_start(thread, *args, **kwargs):
        if thread.name == "outlines-lmstudio-cancel":
            raise RuntimeError("can't start new thread")
        start(thread, *args, **kwargs)

    threading.Thread.start = refusing_start
    with lms.Client(sys.argv[1]) as client:
        model = from_lmstudio(client, sys.argv[2])
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
        try:
            model("hello", max_tokens=400)
        except KeyboardInterrupt:
            print("INTERRUPTED", flush=True)
    """
)


@pytest.mark.usefixtures("sigint_default")
def test_ctrl_c_when_no_thread_can_send_the_cancel_still_cancels(
    emulator: LMStudioEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Ctrl-C guard sends the cancel from a thread (not from the signal handler, inside
    the SDK's own send); when none could start, the prediction went on to its end, and the
    SDK logged its late fragments (found by a review). The reader sends it instead."""
    monkeypatch.setattr(emulator, "token_latency", 0.02)
    emulator.script(TEXT_MODEL, ["word " * 400])
    done = run_script(CTRL_C_WITHOUT_A_THREAD, emulator.api_host, TEXT_MODEL)
    assert "INTERRUPTED" in done.stdout, done.stderr
    emulator.wait_until(lambda: emulator.predictions[-1].done)
    assert emulator.predictions[-1].cancelled


TIMERS = textwrap.dedent(
    """
    import threading, time
    from outlines_lmstudio import _threads

    start = threading.Thread.start
    refused = []

    def refusing_start(thread, *args, **kwargs):
        if thread.name == "outlines-lmstudio-watch" and not refused:
            refused.append(thread.name)
            raise RuntimeError("can't start new thread")
        start(thread, *args, **kwargs)

    threading.Thread.start = refusing_start
    ran = []
    _threads.later(0.0, lambda: ran.append("first"))  # no thread: queued, not raised
    _threads.later(0.0, lambda: ran.append("second"))
    deadline = time.monotonic() + 10
    while len(ran) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    print(refused, ran)
    """
)


def test_timers_run_once_their_thread_can_start() -> None:
    """The timer thread that failed to start was kept as the one running, so no timer ran
    again: stalled calls were never unstuck (the fifth stalled stream on a model of four
    slots waited 60 s), and the first ``later`` raised into a stream's finalizer.

    In a fresh interpreter: this one's timer thread may be running already."""
    done = run_script(TIMERS)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['outlines-lmstudio-watch'] ['first', 'second']"


NEW_CLIENT_AT_THE_LIMIT = textwrap.dedent(
    """
    import asyncio, faulthandler, os, resource, sys
    import lmstudio as lms
    from outlines_lmstudio import LMStudioConnectionError, from_lmstudio

    faulthandler.dump_traceback_later(40, exit=True)
    host, key, front = sys.argv[1:]

    def no_descriptor_to_spare():
        open_now = len(os.listdir("/proc/self/fd")) - 1  # less the one that listed them
        limits = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (open_now, limits[1]))
        return limits

    if front == "sync":
        client = lms.Client(host)
        assert from_lmstudio(client, key)("hi", max_tokens=3)  # imports done
        other = lms.Client(host)  # its thread's event loop made: sockets come on first use
        limits = no_descriptor_to_spare()
        try:
            from_lmstudio(other, key)("hi", max_tokens=3)
        except LMStudioConnectionError as exc:
            print(exc)
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)
        assert from_lmstudio(client, key)("hi", max_tokens=3)
    else:
        async def main():
            async with lms.AsyncClient(host) as client:
                assert await from_lmstudio(client, key)("hi", max_tokens=3)
                other = lms.AsyncClient(host)  # entered by the model's first call
                limits = no_descriptor_to_spare()
                try:
                    await from_lmstudio(other, key)("hi", max_tokens=3, timeout=20)
                except LMStudioConnectionError as exc:
                    print(exc)
                resource.setrlimit(resource.RLIMIT_NOFILE, limits)
                assert await from_lmstudio(client, key)("hi", max_tokens=3)

        asyncio.run(main())
    """
)


@pytest.mark.parametrize("front", ["sync", "async"])
def test_a_new_client_out_of_descriptors_is_told_the_limit(
    emulator: LMStudioEmulator, front: str
) -> None:
    """The SDK says LM Studio "is not reachable ... (due to ... Too many open files). Is LM
    Studio running?", and the hint was to start LM Studio's server."""
    done = run_script(NEW_CLIENT_AT_THE_LIMIT, emulator.api_host, TEXT_MODEL, front)
    assert done.returncode == 0, done.stderr
    assert "Too many open files" in done.stdout
    assert "Hint: This process has as many files and sockets open as it may" in done.stdout
    assert "Start LM Studio's server" not in done.stdout


@pytest.mark.asyncio
async def test_a_half_entered_client_whose_check_found_no_thread_says_why(
    refusing: Refusing,
) -> None:
    """A failed entering asks, in a thread, whether another server holds the host. With no
    thread to be had, its ``RuntimeError`` left the client half entered as it was, and every
    later call raised the SDK's raw ``KeyError: 'llm'`` (found by a probe)."""
    with Misbehaving("no-repository") as server:
        model = from_lmstudio(lms.AsyncClient(server.api_host), TEXT_MODEL)
        refusing.prefix = "outlines-lmstudio-search"
        with pytest.raises(LMStudioConnectionError, match="can't start new thread") as first:
            await model("hello")
        refusing.prefix = None
        with pytest.raises(LMStudioConnectionError, match="make a new one to try again") as again:
            await model("hello")
        await model.close()
    assert refusing.refused == ["outlines-lmstudio-search"]
    assert "can't start new thread" in str(again.value)
    assert isinstance(first.value.__cause__, RuntimeError)
