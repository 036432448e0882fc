"""A stall of the process is not LM Studio's silence.

While another thread holds the GIL (a regular expression that backtracks, ``json.loads``
of a big file, a C extension), no thread of the library or the SDK runs: LM Studio's
messages wait unread in the socket. A bound that ran out meanwhile must be judged again
once the process runs. Found by a probe, with LM Studio (an emulator) in a process of its
own; here the emulator is in the test's process and stalls too, which the library cannot
tell apart: after the stall, its messages come within the grace.

The GIL is held by a C function called through ``ctypes.PyDLL``, which keeps it for the
whole call.
"""

from __future__ import annotations

import ctypes
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import lmstudio as lms
import pytest

from outlines_lmstudio import LMStudioTimeoutError, _streams, _sync_sessions, from_lmstudio
from outlines_lmstudio._interrupt import interrupt_again
from outlines_lmstudio.testing import Fault, LMStudioEmulator

from .conftest import TEXT_MODEL, MakeModel

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="usleep from the C library")


class HeldGil:
    """Hold the GIL for ``seconds`` in a thread of its own, ``after`` seconds from now.

    With ``once``, ``after`` seconds from when ``once()`` first holds (looked at every 10 ms).
    """

    def __init__(
        self, seconds: float, after: float, once: Callable[[], bool] | None = None
    ) -> None:
        usleep = ctypes.PyDLL(None).usleep  # PyDLL: the GIL stays held during the call
        usleep.argtypes = [ctypes.c_uint]

        def hold() -> None:
            while once is not None and not once():
                time.sleep(0.01)
            time.sleep(after)
            self.began = time.monotonic()
            usleep(int(seconds * 1_000_000))
            self.ended = time.monotonic()

        self.began = self.ended = 0.0
        self._thread = threading.Thread(target=hold, daemon=True)
        self._thread.start()

    def join(self) -> float:
        """Wait for the hold to end; return how long it held."""
        self._thread.join(30)
        return self.ended - self.began


@pytest.fixture
def steady(emulator: LMStudioEmulator, monkeypatch: pytest.MonkeyPatch) -> str:
    """A reply of 150 fragments, one every 10 ms."""
    monkeypatch.setattr(emulator, "token_latency", 0.01)
    text = " ".join(f"w{i}" for i in range(150))
    emulator.script(TEXT_MODEL, lambda prediction: text)
    return text


@pytest.mark.parametrize("seconds", [1.3, 2.5])
@pytest.mark.parametrize("kind", ["call", "stream", "stream worked on"])
def test_read_timeout_is_not_run_out_by_a_stall_of_the_process(
    make_model: MakeModel, steady: str, kind: str, seconds: float
) -> None:
    """Found by a probe (6 of 6 runs): "LM Studio sent nothing for 1 s; a cancel of its
    prediction was sent", for a reply whose fragments were waiting in the socket. Found by
    a second probe, with Ctrl-Z: a stall a little longer than the bound (its timer then runs
    only a little late), or one that ends while the consumer works between fragments, was
    not seen as one."""
    model = make_model(TEXT_MODEL, read_timeout=1.0)
    held = HeldGil(seconds, after=0.3)
    if kind == "call":
        reply = model("hello")
    else:
        pieces = []
        for piece in model.stream("hello"):
            pieces.append(piece)
            if kind == "stream worked on":
                time.sleep(0.015)  # the stall ends in the consumer's code
        reply = "".join(pieces)
    assert held.join() > seconds - 0.2  # held longer than the bound
    assert reply == steady


def test_a_real_silence_after_a_stall_still_runs_out(
    make_model: MakeModel, emulator: LMStudioEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The grace after a stall is a second look, not a pass: a server that stays silent
    # after it is cut off as before.
    monkeypatch.setattr(emulator, "token_latency", 0.01)
    emulator.add_fault(Fault("predict", "hang", after_fragments=2))
    model = make_model(TEXT_MODEL, read_timeout=1.0)
    held = HeldGil(1.5, after=0.3)
    started = time.monotonic()
    with pytest.raises(LMStudioTimeoutError, match="sent nothing for 1 s"):
        model("hello")
    held.join()
    assert time.monotonic() - started < 10


def test_stalls_that_repeat_do_not_keep_a_silence_from_running_out(
    make_model: MakeModel, emulator: LMStudioEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a probe: stopped 0.6 s of every 0.7 s (Ctrl-Z and on), a sync call to a
    server that had gone silent waited until the stops ended, 21.7 s, as each stall renewed
    a grace; the time the process ran adds up to the bound (about 7 s here)."""
    monkeypatch.setattr(emulator, "token_latency", 0.01)
    emulator.add_fault(Fault("predict", "hang", after_fragments=2))
    model = make_model(TEXT_MODEL, read_timeout=1.0)
    stop = threading.Event()

    def stalls() -> None:
        until = time.monotonic() + 20
        while not stop.wait(0.1) and time.monotonic() < until:
            HeldGil(0.6, after=0.0).join()

    staller = threading.Thread(target=stalls, daemon=True)
    staller.start()
    started = time.monotonic()
    try:
        with pytest.raises(LMStudioTimeoutError, match="sent nothing for 1 s"):
            model("hello")
        assert time.monotonic() - started < 15  # the stalls go on for as long as it waits
    finally:
        stop.set()
        staller.join(5)


@pytest.mark.parametrize("seconds", [1.2, 2.0])
def test_a_stall_after_a_cancel_does_not_drop_the_client_s_other_predictions(
    emulator: LMStudioEmulator, monkeypatch: pytest.MonkeyPatch, seconds: float
) -> None:
    """Found by a probe (3 of 3 runs): a call's ``timeout`` ran out and its cancel went
    out; another thread then held the GIL for longer than a cancel may take to confirm
    (`DRAIN_SECONDS`, made 1 s here), and the library, taking LM Studio for silent,
    dropped the client's sockets: a healthy stream on the same client failed with "Lost
    the connection to LM Studio". Found by a second probe: also for a stall a little longer
    than that, whose check then runs only a little late."""
    monkeypatch.setattr(_sync_sessions, "DRAIN_SECONDS", 1.0)
    monkeypatch.setattr(emulator, "token_latency", 0.02)
    long_text = " ".join(f"w{i}" for i in range(150))
    emulator.script(TEXT_MODEL, lambda prediction: long_text)
    with lms.Client(emulator.api_host) as client:
        model = from_lmstudio(client, TEXT_MODEL)
        streamed: list[str] = []
        failed: list[BaseException] = []

        def stream() -> None:
            try:
                streamed.extend(model.stream("a long story"))
            except BaseException as exc:  # reported by the test
                failed.append(exc)

        other = threading.Thread(target=stream)
        other.start()
        with pytest.raises(TimeoutError):
            model("cut short", timeout=0.3)
        held = HeldGil(seconds, after=0.0)
        assert held.join() > seconds - 0.2
        other.join(30)
        assert failed == []
        assert "".join(streamed) == long_text


@pytest.mark.usefixtures("sigint_default")
def test_a_stall_after_ctrl_c_sends_no_second_ctrl_c(
    emulator: LMStudioEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a probe (3 of 4 trials): a Ctrl-C's cancel was confirmed at once, but a GIL
    hold held its reading up past `CONFIRM_SECONDS`, and the library sent the second Ctrl-C
    meant for a server that does not confirm (the SDK then logged the confirmation as a
    message for a closed channel)."""
    monkeypatch.setattr(emulator, "token_latency", 0.02)
    emulator.script(TEXT_MODEL, lambda prediction: " ".join(f"w{i}" for i in range(300)))
    sent: list[bool] = []

    def counted() -> None:
        sent.append(True)
        interrupt_again()

    monkeypatch.setattr(_streams, "interrupt_again", counted)
    main = threading.get_ident()

    def ctrl_c_then_hold() -> None:
        signal.pthread_kill(main, signal.SIGINT)
        HeldGil(2.0, after=0.005).join()

    def read(model: Any) -> None:
        for index, _ in enumerate(model.stream("a long story")):
            if index == 5:  # Ctrl-C while the stream waits for a fragment
                threading.Timer(0.1, ctrl_c_then_hold).start()

    with lms.Client(emulator.api_host) as client:
        model = from_lmstudio(client, TEXT_MODEL)
        with pytest.raises(KeyboardInterrupt):
            read(model)
    emulator.wait_until(lambda: emulator.predictions[0].cancelled, timeout=5)
    assert sent == []


@pytest.fixture
def sdk_limit() -> Iterator[float]:
    """The sync SDK's own limit on each wait (process-wide: 60 s), 1 s for the test."""
    before = lms.get_sync_api_timeout()
    lms.set_sync_api_timeout(1.0)
    yield 1.0
    lms.set_sync_api_timeout(before)


@pytest.fixture
def stalled_past_the_limit(emulator: LMStudioEmulator, steady: str, sdk_limit: float) -> str:
    """A reply whose third fragment comes 3.5 s late, once, while the GIL is held for 2.5 s
    from 0.3 s on: the SDK's 1 s wait runs out in the stall (its end 1.8 s late), with
    nothing in the socket."""
    emulator.add_fault(Fault("predict", "delay", after_fragments=2, seconds=3.5))
    return steady


@pytest.mark.parametrize("read_timeout", [None, 0.5], ids=["sdk-bound", "worker"])
@pytest.mark.parametrize("kind", ["call", "batch", "reply"])
def test_a_stall_past_the_sdk_s_own_limit_asks_a_whole_reply_again(
    emulator: LMStudioEmulator, stalled_past_the_limit: str, kind: str, read_timeout: float | None
) -> None:
    """Found by a probe: a Ctrl-Z of 70 s (past the sync SDK's 60 s limit on each wait, which
    counts a stall like any time) failed a call, and 4 of a batch's 6 items, as "LM Studio
    sent nothing for 60 s", though every reply was in the socket; a shorter read_timeout did
    not help (the SDK's wait runs out in the library's worker all the same). Nobody saw part
    of the reply: it is asked again, and the prediction given up is cancelled."""
    with lms.Client(emulator.api_host) as client:
        model = from_lmstudio(client, TEXT_MODEL, read_timeout=read_timeout)
        held = HeldGil(2.5, after=0.3)
        if kind == "call":
            reply = model("hello")
        elif kind == "batch":
            (reply,) = model.batch(["hello"])
        else:
            reply = model.reply("hello").text
        assert held.join() > 2.3
    assert reply == stalled_past_the_limit
    first, again = emulator.predictions
    assert first.stop_reason == "userStopped"  # given up by the SDK, cancelled by the library
    assert again.stop_reason == "eosFound"


def test_a_stall_past_the_sdk_s_own_limit_in_a_stream_that_showed_text_says_so(
    emulator: LMStudioEmulator, stalled_past_the_limit: str
) -> None:
    """Text was shown, so it is not asked again: the error says what happened (it said "LM
    Studio sent nothing for 60 s"), and the prediction given up is cancelled."""
    with lms.Client(emulator.api_host) as client:
        model = from_lmstudio(client, TEXT_MODEL)
        held = HeldGil(2.5, after=0.3)
        pieces: list[str] = []
        with pytest.raises(LMStudioTimeoutError) as raised:
            pieces.extend(model.stream("hello"))
        held.join()
        assert str(raised.value).startswith(
            "This process was stopped or stalled (Ctrl-Z, a debugger, another thread holding "
            "the GIL) for at least "
        )
        assert "past the lmstudio SDK's 1 s limit" in str(raised.value)
        assert "a cancel of its prediction was sent" in str(raised.value)
        emulator.wait_until(lambda: emulator.predictions[0].done)
        assert emulator.predictions[0].stop_reason == "userStopped"
        assert model("again") == stalled_past_the_limit  # the client is fine


def test_the_sdk_s_own_limit_run_out_without_a_stall_is_still_lm_studio_s_silence(
    emulator: LMStudioEmulator, steady: str, sdk_limit: float
) -> None:
    # A control: the same late fragment without a stall is a silence of 2.5 s, past the limit.
    emulator.add_fault(Fault("predict", "delay", after_fragments=2, seconds=2.5))
    with lms.Client(emulator.api_host) as client:
        model = from_lmstudio(client, TEXT_MODEL)
        with pytest.raises(LMStudioTimeoutError, match="LM Studio sent nothing for 1 s"):
            model("hello")
    assert len(emulator.predictions) == 1


@pytest.mark.parametrize("read_timeout", [None, 0.5], ids=["sdk-bound", "worker"])
def test_the_sdk_s_own_limit_run_out_after_prompt_progress_is_still_lm_studio_s_silence(
    emulator: LMStudioEmulator,
    sdk_limit: float,
    monkeypatch: pytest.MonkeyPatch,
    read_timeout: float | None,
) -> None:
    # A control: the SDK reads progress reports on without handing them over, so its last
    # wait began at the last one (1.5 s in), not at the request: a wait that began there
    # and ran out on time is a silence, not a stall.
    monkeypatch.setattr(emulator, "prompt_latency", 1.5)
    monkeypatch.setattr(emulator, "token_latency", 2.0)
    with lms.Client(emulator.api_host) as client:
        model = from_lmstudio(client, TEXT_MODEL, read_timeout=read_timeout)
        with pytest.raises(LMStudioTimeoutError, match=r"sent nothing for (1|0\.5) s"):
            model("hello")
    assert len(emulator.predictions) == 1


def test_a_stall_past_the_sdk_s_own_limit_in_a_model_lookup_asks_it_again(
    emulator: LMStudioEmulator, steady: str, sdk_limit: float
) -> None:
    """Found by a probe: a Ctrl-Z of 70 s during `chat -m`'s model load ended the chat with
    "LM Studio sent nothing for 60 s". The lookup's answer comes 3.5 s late, once, and the
    GIL is held 2.5 s from 0.3 s after it was asked: the SDK's 1 s wait runs out in the
    stall, with nothing in the socket."""
    emulator.add_fault(Fault("getOrLoad", "delay", seconds=3.5))

    def asked() -> bool:
        return any(r.endpoint == "getOrLoad" for r in emulator.requests)

    with lms.Client(emulator.api_host) as client:
        model = from_lmstudio(client, TEXT_MODEL)
        held = HeldGil(2.5, after=0.3, once=asked)
        assert model("hello") == steady
        assert held.join() > 2.3
    assert sum(r.endpoint == "getOrLoad" for r in emulator.requests) == 2
