"""Nothing waits forever: connecting, each wait for LM Studio, streams, Ctrl-C in a batch."""

import asyncio
import contextlib
import gc
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import lmstudio as lms
import pytest

from outlines_lmstudio import (
    BatchGenerationError,
    InvalidClientError,
    LMStudioConnectionError,
    LMStudioModelNotFoundError,
    LMStudioPredictionError,
    LMStudioTimeoutError,
    from_lmstudio,
)
from outlines_lmstudio.testing import EmulatedModel, Fault, LMStudioEmulator

from .conftest import TEXT_MODEL, VISION_MODEL, MakeModel
from .fronts import Fronts
from .helpers import eventually, interrupted, png_image
from .misbehaving import Misbehaving
from .other_server import name_has_no_address, serving_fake_lmstudio, serving_html


def threads(prefix: str) -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith(prefix))


@pytest.fixture
def sync_sdk_timeout() -> Iterator[None]:
    """The sync SDK's own bound on each wait (process-wide), short for the test."""
    before = lms.get_sync_api_timeout()
    lms.set_sync_api_timeout(1.0)
    yield
    lms.set_sync_api_timeout(before)


def test_the_default_bounds_are_set(fronts: Fronts, make_model: MakeModel) -> None:
    model = fronts.raw(make_model(TEXT_MODEL))
    assert model.connect_timeout == 10.0
    assert model.read_timeout == 60.0
    assert model.timeout is None


@pytest.mark.parametrize("mode", ["no-auth", "mute"])
def test_a_server_that_never_lets_us_in(fronts: Fronts, mode: str) -> None:
    with Misbehaving(mode) as server:  # type: ignore[arg-type]
        model = fronts.model(fronts.client(server.api_host, enter=False), connect_timeout=0.5)
        for _ in range(3):
            with pytest.raises(LMStudioConnectionError, match="LM Studio did not"):
                model("hello")
        # the sync model connects each session in one thread, not one per call
        assert threads("outlines-lmstudio-connect") <= 1


@pytest.mark.parametrize("connect_timeout", [None, 30.0])
@pytest.mark.parametrize("how", ["call", "stream", "parse", "reply", "batch"])
def test_a_call_s_timeout_bounds_connecting(
    fronts: Fronts, connect_timeout: float | None, how: str
) -> None:
    """Found by a probe: on the async front a server that never completed the connection
    held a call with ``timeout=1`` for ``connect_timeout``, and for good with ``None``. The
    sync front's error blamed a model lookup, a load or an upload."""
    with Misbehaving("no-auth") as server:
        client = fronts.client(server.api_host, enter=False)
        model = fronts.model(client, TEXT_MODEL, connect_timeout=connect_timeout)
        calls: dict[str, Callable[[], object]] = {
            "call": lambda: model("hello", timeout=1),
            "stream": lambda: list(model.stream("hello", timeout=1)),
            "parse": lambda: model.parse("hello", int, retries=1, timeout=1),
            "reply": lambda: model.reply("hello", timeout=1),
            "batch": lambda: model.batch(["a", "b"], timeout=1),
        }
        started = time.monotonic()
        with pytest.raises((LMStudioTimeoutError, BatchGenerationError)) as info:
            calls[how]()
        waited = time.monotonic() - started
    error: BaseException = info.value
    if isinstance(error, BatchGenerationError):
        assert len(error.errors) == 2
        error = error.errors[0]
    assert isinstance(error, LMStudioTimeoutError), repr(error)
    assert "within 1 s; the connection to LM Studio was not complete yet" in str(error)
    # a limit too short to connect, not only the server, is named (found by a soak)
    assert "if the limit was too short to connect as well, pass a larger one" in str(error)
    assert waited < 8  # 1 s, and room for a busy machine; it was 30 s, or for good


def test_a_mute_server_is_not_blamed_on_connect_timeout(fronts: Fronts) -> None:
    """The SDK's first HTTP request has a fixed 1 s limit: ``connect_timeout`` cannot help."""
    with Misbehaving("mute") as server:
        model = fronts.model(fronts.client(server.api_host, enter=False), connect_timeout=30)
        with pytest.raises(LMStudioConnectionError) as caught:
            model("hello")
    message = str(caught.value)
    assert "ReadTimeout" in message
    assert "larger connect_timeout" not in message
    assert "Start LM Studio" not in message  # a server is running there
    assert "ReadTimeout: (" not in message  # httpx's empty detail is said as such
    if fronts.front == "async":  # the SDK's 1 s HTTP probe on entering the client
        assert "waits 1 s for that first HTTP answer whatever connect_timeout= says" in message
    else:  # a sync client given a host runs no probe: its websocket's opening timed out
        assert "did not answer the websocket's opening in time" in message, message
        assert "1 s" not in message  # found by a probe: it blamed a probe that never ran


def test_a_server_that_closes_the_websocket_fails_every_call_with_our_error(
    fronts: Fronts,
) -> None:
    """Found by a probe: LM Studio's greeting, then a websocket closed at once (LM Studio
    starting or stopping). The async client was left with one session of five opened, which
    the SDK never opens again: every later call raised a raw ``KeyError: 'llm'``."""
    with serving_fake_lmstudio("close") as port:
        model = fronts.model(fronts.client(f"127.0.0.1:{port}", enter=False))
        for _ in range(3):
            with pytest.raises(LMStudioConnectionError, match="not reachable") as caught:
                model("hello")
            if fronts.front == "async":  # it cannot be entered again: closed, and said so
                assert "This AsyncClient was closed: make a new one" in str(caught.value)


@pytest.mark.asyncio
async def test_close_after_a_first_call_left_while_connecting_returns_at_once() -> None:
    """Found by a probe: close() waited for the connection the left call had started: up to
    connect_timeout, or for good with ``connect_timeout=None``."""
    with serving_fake_lmstudio("silent") as port:  # LM Studio's greeting, then no answer
        client = lms.AsyncClient(f"127.0.0.1:{port}")
        model = from_lmstudio(client, TEXT_MODEL, connect_timeout=None)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(model("hello"), 0.5)
        await asyncio.wait_for(model.close(), 5)
        with pytest.raises(LMStudioConnectionError, match="make a new one to try again"):
            await model("hello")  # said at once, not a raw SDK error on a closed client


@pytest.mark.asyncio
async def test_a_client_given_up_after_its_model_session_opened_says_why_again() -> None:
    """An entering that failed after the model session was opened (a later session's, here
    refused): the client is closed as unusable. The next call took it for entered, as its
    model session is there, and failed as if the user had closed it ("Keep the client
    open"), without the cause (found by a probe out of file descriptors)."""
    with Misbehaving("no-repository") as server:
        model = from_lmstudio(lms.AsyncClient(server.api_host), TEXT_MODEL)
        with pytest.raises(LMStudioConnectionError) as first:
            await model("hello")
        with pytest.raises(LMStudioConnectionError) as again:
            await model("hello")
        await model.close()
    for caught in (first, again):
        assert "/repository" in str(caught.value)
        assert "This AsyncClient was closed: make a new one" in str(caught.value)
        assert "Keep the client open" not in str(caught.value)
    assert again.value.__cause__ is not None


UNANSWERED = textwrap.dedent(
    """
    import sys
    import lmstudio as lms
    from outlines_lmstudio import LMStudioConnectionError, from_lmstudio

    model = from_lmstudio(lms.Client(sys.argv[1]), connect_timeout=0.5)  # never closed
    try:
        model("hello")
    except LMStudioConnectionError:
        print("REFUSED", flush=True)
    """
)


def test_a_script_left_by_a_server_that_never_lets_us_in_exits() -> None:
    """The thread still connecting (the SDK waits for the auth answer without a bound)
    was not a daemon: the script printed its error, then never ended."""
    with Misbehaving("no-auth") as server:
        finished = subprocess.run(
            [sys.executable, "-c", UNANSWERED, server.api_host],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert finished.returncode == 0, finished.stderr
    assert "REFUSED" in finished.stdout


def test_a_server_that_goes_silent_after_auth(fronts: Fronts, sync_sdk_timeout: None) -> None:
    with Misbehaving("silent") as server:
        model = fronts.model(fronts.client(server.api_host, enter=False), read_timeout=1.0)
        with pytest.raises(LMStudioTimeoutError):
            model("hello")
        assert server.auths >= 1


def test_a_sync_stall_names_the_sdks_limit(
    emulator: LMStudioEmulator, sync_sdk_timeout: None
) -> None:
    """A sync wait ends at the SDK's own limit: the error says which limit, and how to raise it.

    (The async SDK has no limit of its own: ``read_timeout`` applies, tested above.)
    """
    with lms.Client(emulator.api_host) as client:
        model = from_lmstudio(client, TEXT_MODEL)
        emulator.add_fault(Fault("predict", "hang", after_fragments=2))
        limit = r"sent nothing for 1 s, the lmstudio SDK.s limit"
        with pytest.raises(LMStudioTimeoutError, match=limit) as info:
            model("hello")
    assert "set_sync_api_timeout" in (info.value.hint or "")


def test_prompt_processing_progress_counts_as_a_sign_of_life(
    make_model: MakeModel,
    emulator: LMStudioEmulator,
    monkeypatch: pytest.MonkeyPatch,
    sync_sdk_timeout: None,
) -> None:
    # 2 s of prompt processing, reported every 0.25 s: longer than the 1 s bound on each
    # wait, but LM Studio is visibly working, so the call must not time out.
    monkeypatch.setattr(emulator, "prompt_latency", 2.0)
    emulator.script(TEXT_MODEL, ["done"])
    assert make_model(TEXT_MODEL, read_timeout=1.0)("hello") == "done"


def test_a_reply_that_keeps_coming_outlasts_read_timeout(
    make_model: MakeModel, emulator: LMStudioEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``read_timeout`` bounds each silence, not the whole reply: each fragment pushes it back.

    A whole reply is read at once (the sync front in a worker under a pulse, the async one
    by a task of its own whose wait's timer is moved as fragments arrive), so this is the
    test that the moving happens: 15 fragments 0.1 s apart take well over the 0.5 s bound.
    """
    monkeypatch.setattr(emulator, "token_latency", 0.1)
    text = " ".join(f"word{i}" for i in range(15))
    emulator.script(TEXT_MODEL, [text])
    model = make_model(TEXT_MODEL, read_timeout=0.5)
    started = time.monotonic()
    assert model("hello") == text
    assert time.monotonic() - started > 1.0  # two bounds and more: it was pushed back


def test_read_timeout_bounds_each_silence_after_an_early_fragment(
    make_model: MakeModel, emulator: LMStudioEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fragment early in the bound, then a silence shorter than the bound: no timeout.

    Fragments at 0.4 s, 1.1 s and 1.8 s: no silence reaches the 1 s bound, but the bound
    counted from the start of the wait runs out at 1 s. The async front once pushed its
    timer back only for a fragment in the second half of the bound, and failed with "LM
    Studio sent nothing for 1 s" after 0.7 s of silence.
    """
    monkeypatch.setattr(emulator, "token_latency", 0.4)
    emulator.script(TEXT_MODEL, ["one two three"])

    def slow_down() -> None:  # after the first fragment's time is set, before it is sent
        emulator.wait_until(lambda: bool(emulator.predictions))
        time.sleep(0.2)
        emulator.token_latency = 0.7

    pacer = threading.Thread(target=slow_down, daemon=True)
    pacer.start()
    model = make_model(TEXT_MODEL, read_timeout=1.0)
    started = time.monotonic()
    assert model("hello") == "one two three"
    assert time.monotonic() - started > 1.5  # the silences did come, past the first bound
    pacer.join()


@pytest.mark.parametrize("entry", ["generate", "stream", "reply_stream", "batch"])
def test_read_timeout_bounds_each_wait_on_both_fronts(
    make_model: MakeModel, emulator: LMStudioEmulator, entry: str
) -> None:
    """A ``read_timeout`` shorter than the sync SDK's own bound (60 s) holds on both fronts.

    The sync model used to keep the SDK's bound in its place: it waited 60 s, and the
    prediction was left running on the server.
    """
    # The reply stalls mid-way for 2 s; a cancel sent meanwhile is read when it goes on.
    emulator.add_fault(Fault(kind="delay", after_fragments=2, seconds=2.0))
    model = make_model(TEXT_MODEL, read_timeout=0.5)
    stalled = r"sent nothing for 0\.5 s; a cancel of its prediction was sent to LM Studio"
    calls: dict[str, Callable[[], object]] = {
        "generate": lambda: model("hello"),
        "stream": lambda: list(model.stream("hello")),
        "reply_stream": lambda: list(model.reply_stream("hello")),
        "batch": lambda: model.batch(["hello"]),
    }
    with pytest.raises((LMStudioTimeoutError, BatchGenerationError)) as info:
        calls[entry]()
    error = info.value.errors[0] if isinstance(info.value, BatchGenerationError) else info.value
    assert isinstance(error, LMStudioTimeoutError)
    assert re.search(stalled, str(error))
    emulator.wait_until(lambda: emulator.predictions[-1].done)
    assert emulator.predictions[-1].cancelled
    assert model("the client still works")


def test_read_timeout_bounds_a_model_lookup_on_both_fronts(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    emulator.add_fault(Fault("getOrLoad", "hang"))
    with pytest.raises(LMStudioTimeoutError, match=r"0\.5 s; no prediction had started"):
        make_model(TEXT_MODEL, read_timeout=0.5)("hello")
    assert emulator.predictions == []


def test_read_timeout_bounds_the_silences_of_a_model_load_not_the_whole_load(
    make_model: MakeModel, emulator: LMStudioEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model loaded on first use reports progress: a 2.4 s load reporting every 0.8 s
    outlasts a 1 s bound, for the call whose lookup loads it and for one waiting on it.

    Both fronts bounded the whole lookup by ``read_timeout`` and failed with "LM Studio
    sent nothing for 1 s" while the load reported progress (a large model loads for
    minutes: the first call failed under the default 60 s).
    """
    monkeypatch.setattr(emulator, "load_latency", 2.4)
    model = make_model("gemma-3-1b-it", read_timeout=1.0)  # downloaded, not loaded
    replies = model.batch(["hello", "hi"], max_tokens=3)  # both wait for one load
    assert all(replies)
    assert [r.endpoint for r in emulator.requests].count("getOrLoad") == 1
    assert len(emulator.predictions) == 2


def test_a_model_load_left_by_its_first_caller_still_pushes_the_next_ones_bound_back(
    make_model: MakeModel, emulator: LMStudioEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The call whose lookup started a 2.4 s load gives up at 0.5 s; the load goes on, and
    its progress (every 0.8 s) still counts as a sign of life for a call waiting on it under
    ``read_timeout=1``. An early version of forgetting a load's record once its callers
    had left forgot it then, and that call failed with "LM Studio sent nothing for 1 s"
    (found by a review, on the async front)."""
    monkeypatch.setattr(emulator, "load_latency", 2.4)
    first = make_model("gemma-3-1b-it", timeout=0.5)  # downloaded, not loaded
    with pytest.raises(LMStudioTimeoutError):
        first("hello", max_tokens=3)
    assert make_model("gemma-3-1b-it", read_timeout=1.0)("hi", max_tokens=3)
    assert [r.endpoint for r in emulator.requests].count("getOrLoad") == 1


def test_read_timeout_bounds_each_image_upload_not_all_of_them(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """Each upload's reply is a sign of life: 4 uploads 0.4 s apart outlast a 1 s bound.

    Both fronts bounded the whole upload step by ``read_timeout`` and failed with "LM Studio
    sent nothing for 1 s" while LM Studio answered every 0.4 s.
    """
    emulator.add_fault(Fault("uploadFileBase64", "delay", seconds=0.4, times=4))
    images = [png_image(colour) for colour in ("red", "blue", "green", "white")]
    model = make_model(VISION_MODEL, read_timeout=1.0)
    assert model(["Describe", *images], max_tokens=3)
    assert len(emulator.uploads) == 4


def test_a_model_lookup_that_is_never_answered_is_given_up(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """Later calls share the lookup their callers left: it must end, not hold them for good.

    The sync model dropped the client's sessions when the lookup still waited a while later;
    the async model waited on it forever, so every later call timed out.
    """
    emulator.add_fault(Fault("getOrLoad", "hang"))  # one lookup, never answered
    model = make_model(TEXT_MODEL, read_timeout=0.5)
    with pytest.raises(LMStudioTimeoutError):
        model("hello")

    def works() -> bool:
        try:
            return bool(model("again"))
        except LMStudioTimeoutError:
            return False

    assert eventually(works)


def test_progress_counts_as_a_sign_of_life_under_read_timeout(
    make_model: MakeModel, emulator: LMStudioEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As above, with ``read_timeout`` shorter than the sync SDK's bound (no SDK setting)."""
    monkeypatch.setattr(emulator, "prompt_latency", 2.0)
    emulator.script(TEXT_MODEL, ["done", "done"])
    model = make_model(TEXT_MODEL, read_timeout=1.0)
    assert model("hello") == "done"
    assert list(model.stream("hello")) == ["done"]


def test_an_odd_reply_to_the_model_lookup_is_not_model_not_found(fronts: Fronts) -> None:
    with Misbehaving("odd-lookup") as server:
        model = fronts.model(fronts.client(server.api_host, enter=False), TEXT_MODEL)
        with pytest.raises(LMStudioPredictionError, match="unexpected reply") as info:
            model("hello")
        assert not isinstance(info.value, LMStudioModelNotFoundError)


def test_timed_out_sync_calls_leave_no_thread_behind() -> None:
    before = threads("outlines-lmstudio-call")
    with Misbehaving("silent") as server, lms.Client(server.api_host) as client:
        model = from_lmstudio(client, TEXT_MODEL)
        for _ in range(10):
            with pytest.raises(LMStudioTimeoutError):
                model("hello", timeout=0.3)
        assert eventually(lambda: threads("outlines-lmstudio-call") <= before)


@pytest.mark.parametrize("entry", ["stream", "parse_stream"])
def test_streams_honour_timeout(
    make_model: MakeModel, emulator: LMStudioEmulator, entry: str
) -> None:
    emulator.add_fault(Fault(kind="hang", after_fragments=2))
    model = make_model(TEXT_MODEL)
    output_type = {"type": "object"} if entry == "parse_stream" else None
    with pytest.raises(LMStudioTimeoutError, match=r"within 0\.5 s"):
        for _ in getattr(model, entry)("hi", output_type, timeout=0.5):
            pass
    assert model("the client still works")


def test_leaving_a_stalled_sync_stream_returns(
    client: lms.Client, emulator: LMStudioEmulator
) -> None:
    emulator.add_fault(Fault(kind="hang", after_fragments=2))
    model = from_lmstudio(client, TEXT_MODEL)
    left = threading.Event()

    def consume() -> None:
        for _chunk in model.stream("hi"):
            break
        left.set()

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    assert left.wait(20)  # the SDK would wait 60 s for the cancel to be confirmed
    assert model("the client still works")
    # The thread awaiting the confirmation that never comes ends when the sessions are
    # dropped (after DRAIN_SECONDS), before the client is closed under it.
    assert eventually(lambda: threads("outlines-lmstudio-drain") == 0)


@pytest.mark.parametrize("timeout", [None, 30.0])  # read in the caller's thread, or a worker's
def test_a_sync_stream_closed_on_the_sdk_s_own_thread_does_not_block_it(
    client: lms.Client, emulator: LMStudioEmulator, monkeypatch: pytest.MonkeyPatch, timeout: float
) -> None:
    """Found by a probe of a web app: a sync stream nobody closed (Starlette's iterator, its
    client gone) was closed by the garbage collector on the SDK's websocket thread, and the
    cancel waited for that thread's own loop: every later call on the client hung."""
    monkeypatch.setattr(emulator, "token_latency", 0.05)
    model = from_lmstudio(client, TEXT_MODEL)
    stream = model.stream("hi", max_tokens=400, timeout=timeout)
    next(stream)
    closed = threading.Event()

    def close() -> None:  # what the collector does when it runs on that thread
        stream.close()
        closed.set()

    # The SDK's websocket thread (the library reads it too, see `_sync._thread_gone`):
    # its loop runs the close, as it runs any collection it triggers.
    client._ws_thread.wait_for_loop().call_soon_threadsafe(close)  # type: ignore[union-attr]
    assert closed.wait(5)  # it hung for good
    assert model("the client still works", max_tokens=3, timeout=10)
    # the left prediction was cancelled on the server, from a thread of its own
    assert eventually(lambda: emulator.predictions[0].stop_reason == "userStopped")


def test_sync_streams_closed_in_async_code_then_their_client_print_nothing(
    emulator: LMStudioEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a probe: with the leave handed to a thread from any event loop's thread,
    ``close()`` in async code returned before the confirmation was read, and the client
    closed next made Python print "Exception ignored ... AsyncTaskManager is inactive"."""
    ignored: list[str] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: ignored.append(repr(u.exc_value)))
    monkeypatch.setattr(emulator, "token_latency", 0.02)
    client = lms.Client(emulator.api_host)
    model = from_lmstudio(client, TEXT_MODEL)
    streams = [model.stream(f"hi {n}", max_tokens=300) for n in range(6)]
    for stream in streams:
        next(stream)

    async def close_them() -> None:  # an async app's shutdown
        for stream in streams:
            stream.close()
        client.close()

    asyncio.run(close_them())
    left = ("outlines-lmstudio-drain", "outlines-lmstudio-leave")
    assert eventually(lambda: sum(map(threads, left)) == 0)
    gc.collect()
    assert ignored == []


def test_a_stream_collected_on_its_own_worker_does_not_join_itself(
    emulator: LMStudioEmulator, client: lms.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a probe: a stream with ``timeout=`` finalized on its own worker thread (its
    last reference dropped there) printed "RuntimeError: cannot join current thread"."""
    ignored: list[str] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: ignored.append(repr(u.exc_value)))
    monkeypatch.setattr(emulator, "token_latency", 0.02)
    model = from_lmstudio(client, TEXT_MODEL, timeout=60)
    held: list[Any] = []
    where: list[str] = []

    def drop_it(_fragment: object) -> None:  # runs on the worker that reads the stream
        if len(held) == 2:
            where.append(threading.current_thread().name)
            held.clear()  # the last reference: the stream is closed here, at once

    held.append(model.stream("hi", max_tokens=300, on_prediction_fragment=drop_it))
    next(held[0])
    held.append("drop it")
    assert eventually(lambda: bool(where))
    assert where == ["outlines-lmstudio-call"]
    assert eventually(lambda: emulator.predictions[0].stop_reason == "userStopped")
    assert model("the client still works", max_tokens=3)
    assert ignored == []


def test_a_sync_call_left_on_an_unconfirmed_cancel_leaves_other_predictions_alone(
    emulator: LMStudioEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a probe: a call out of time whose cancel LM Studio did not confirm made the
    sync model drop the client's sockets ``DRAIN_SECONDS`` later, which cut the healthy
    predictions on the same client: a library stream lost its connection, a whole call
    began again. While they get fragments, the drop waits."""
    # 1 s: a busy machine's pause between two fragments is no sign of a queued call
    monkeypatch.setattr("outlines_lmstudio._sync_sessions.DRAIN_SECONDS", 1.0)
    monkeypatch.setattr(emulator, "token_latency", 0.01)
    with lms.Client(emulator.api_host) as client:
        model = from_lmstudio(client, TEXT_MODEL)
        assert model("warm", max_tokens=1)
        emulator.script(TEXT_MODEL, lambda prompt: "w " * 300)  # about 3 s of fragments
        emulator.add_fault(Fault("predict", "hang"))  # the next prediction; its cancel too
        with pytest.raises(LMStudioTimeoutError):
            model("stuck", timeout=0.3)
        with ThreadPoolExecutor(2) as pool:  # both outlive DRAIN_SECONDS several times
            streamed = pool.submit(lambda: list(model.stream("healthy stream")))
            whole = pool.submit(lambda: model("healthy call"))
            assert len(streamed.result()) == 301
            assert whole.result() == "w " * 300
        healthy = [p for p in emulator.predictions if p.last_user_text.startswith("healthy")]
        assert [(p.stop_reason, p.disconnected) for p in healthy] == [("eosFound", False)] * 2
        # With nothing else generating, the sockets are dropped: the left call's thread ends.
        assert eventually(lambda: threads("outlines-lmstudio-call") == 0)


@contextlib.contextmanager
def _a_slot_held(
    monkeypatch: pytest.MonkeyPatch, key: str, *, slots: int, reply: str | None = None
) -> Iterator[tuple[LMStudioEmulator, Any]]:
    """Yield an emulator serving ``key`` with ``slots`` slots, and a sync model on it one
    of whose calls was left (out of time) on a prediction LM Studio never ends: its cancel
    is never confirmed, and it holds a slot. ``reply``: what every later call is answered."""
    monkeypatch.setattr("outlines_lmstudio._sync_sessions.DRAIN_SECONDS", 0.3)
    with (
        LMStudioEmulator([EmulatedModel(key)], token_latency=0.01, slots=slots) as emulator,
        lms.Client(emulator.api_host) as client,
    ):
        model = from_lmstudio(client, key)
        assert model("warm", max_tokens=2)
        if reply is not None:
            emulator.script(key, lambda prediction: reply)
        emulator.add_fault(Fault("predict", "hang", after_fragments=2))
        with pytest.raises(LMStudioTimeoutError):
            model("stuck", timeout=0.5)  # holds one slot
        yield emulator, model


def test_a_prediction_left_holding_the_model_s_slot_is_freed_for_the_next_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by a review: a left prediction whose cancel LM Studio never confirmed kept its
    model's only slot, and every later call queued behind it ran out of time, until the
    client was closed. With nothing else generating on the client, its sockets are dropped
    (LM Studio ends what ran on them), and the later calls are answered."""
    with _a_slot_held(monkeypatch, "one-slot", slots=1) as (_, model):
        for _ in range(3):
            assert model("next", max_tokens=3, timeout=5)


def test_a_call_queued_behind_a_left_prediction_s_slot_is_not_kept_waiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by a probe: while any other prediction on the client got fragments, the drop of
    the sockets waited, so under steady traffic a left prediction kept its slot for as long
    as the traffic went on, and the calls queued behind it ran out of time. A call that
    waits ``DRAIN_SECONDS`` without a fragment is not served: the drop comes."""
    long = "w " * 400  # about 4 s of fragments for every later call
    with (
        _a_slot_held(monkeypatch, "two-slots", slots=2, reply=long) as (emulator, model),
        ThreadPoolExecutor(1) as pool,
    ):
        streaming = pool.submit(lambda: list(model.stream("long")))  # holds the other
        emulator.wait_until(lambda: len(emulator.predictions) == 3)
        # queued behind both; the long stream outlasts its timeout
        assert model("queued", max_tokens=3, timeout=2.5)
        with contextlib.suppress(LMStudioConnectionError):  # cut by the drop
            streaming.result()


KEPT_STREAM = textwrap.dedent(
    """
    import sys
    import lmstudio as lms
    from outlines_lmstudio import from_lmstudio

    client = lms.Client(sys.argv[1])
    model = from_lmstudio(client, sys.argv[2])
    stream = model.stream("hello")  # kept in a variable: collected only at exit
    for chunk in stream:
        break
    print("LEAVING", flush=True)
    """
)


@pytest.mark.parametrize("fault", [None, Fault(kind="hang", after_fragments=2)], ids=["", "hang"])
def test_a_script_with_a_stream_left_open_exits(
    slow_emulator: LMStudioEmulator, fault: Fault | None
) -> None:
    """A sync stream still open at exit is collected during interpreter shutdown.

    Its cleanup started a thread to await the cancel's confirmation, and a thread started
    then never runs: ``Thread.start()`` waited for it forever, so the script never ended.
    """
    slow_emulator.script(TEXT_MODEL, ["word " * 400])
    if fault is not None:
        slow_emulator.add_fault(fault)
    finished = subprocess.run(
        [sys.executable, "-c", KEPT_STREAM, slow_emulator.api_host, TEXT_MODEL],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert finished.returncode == 0, finished.stderr
    assert "LEAVING" in finished.stdout
    assert "Exception ignored" not in finished.stderr, finished.stderr


BATCH = textwrap.dedent(
    """
    import signal, sys
    import lmstudio as lms
    from outlines_lmstudio import from_lmstudio

    with lms.Client(sys.argv[1]) as client:
        model = from_lmstudio(client, sys.argv[2], max_concurrency=4)
        prompts = [f"p{i}" for i in range(32)]
        try:
            print("STARTED", flush=True)
            if sys.argv[3] == "batch":
                model.batch(prompts)
            elif sys.argv[3] == "reply_batch":
                model.reply_batch(prompts)
            else:
                model.parse(prompts, str)
        except KeyboardInterrupt as interrupt:
            print("INTERRUPTED", len(interrupt.results), flush=True)
            texts = [getattr(r, "text", r) for r in interrupt.results if r is not None]
            cut = [t for t in texts if t.strip('"') != "word " * 200]
            print("CUT", len(cut), flush=True)  # kept as results, yet stopped by the Ctrl-C
            sys.exit(130)
    print("FINISHED", flush=True)
    """
)


@pytest.mark.usefixtures("sigint_default")
@pytest.mark.parametrize("call", ["batch", "reply_batch", "parse"])
def test_ctrl_c_stops_a_sync_batch(slow_emulator: LMStudioEmulator, call: str) -> None:
    emulator = slow_emulator
    emulator.script(TEXT_MODEL, lambda prediction: '"' + "word " * 200 + '"')
    returncode, out, err = interrupted(
        BATCH,
        [emulator.api_host, TEXT_MODEL, call],
        lambda: eventually(
            lambda: any(len(p.fragments) > 2 for p in emulator.predictions), seconds=30
        ),
    )
    assert "INTERRUPTED 32" in out, err
    assert "CUT 0" in out, out  # an item the Ctrl-C stopped is None, not its text so far
    assert returncode == 130
    assert eventually(lambda: all(p.done for p in emulator.predictions))
    started = emulator.predictions
    assert len(started) < 32  # the queued items never started
    assert all(p.cancelled for p in started if p.stop_reason != "eosFound")
    assert any(p.cancelled for p in started)


UNCONFIRMED_BATCH = textwrap.dedent(
    """
    import sys
    import lmstudio as lms
    from outlines_lmstudio import from_lmstudio

    model = from_lmstudio(lms.Client(sys.argv[1]), sys.argv[2], max_concurrency=4)
    print("STARTED", flush=True)
    try:
        model.batch([f"p{i}" for i in range(8)])
    except KeyboardInterrupt:
        print("INTERRUPTED", flush=True)
        sys.exit(130)
    """
)


@pytest.mark.usefixtures("sigint_default")
@pytest.mark.parametrize("endpoint", ["predict", "getOrLoad"])
def test_a_sync_batch_stopped_by_ctrl_c_lets_the_script_exit(
    emulator: LMStudioEmulator, endpoint: str
) -> None:
    """LM Studio confirms no cancel (or is still loading the model): the batch's threads
    still waited on it, and the interpreter's exit waited for them (the SDK's 60 s)."""
    emulator.add_fault(Fault(endpoint, "hang", times=8))
    waiting = 4 if endpoint == "predict" else 1  # the items share one model lookup
    returncode, out, err = interrupted(
        UNCONFIRMED_BATCH,
        [emulator.api_host, TEXT_MODEL],
        lambda: emulator.wait_until(
            lambda: sum(r.endpoint == endpoint for r in emulator.requests) >= waiting
        ),
    )  # the script must end within the helper's 30 s
    assert "INTERRUPTED" in out, err
    assert returncode == 130


def test_a_call_out_of_time_before_its_prediction_does_not_claim_a_cancel(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """Time up during the model lookup (a slow load): no prediction existed to cancel."""
    model = make_model(TEXT_MODEL)
    emulator.add_fault(Fault("getOrLoad", "hang"))
    with pytest.raises(LMStudioTimeoutError, match="no prediction had started") as info:
        model("hello", timeout=0.5)
    assert "cancelled" not in str(info.value)
    assert emulator.predictions == []


def test_an_upload_out_of_time_after_a_reset_is_not_blamed_on_the_connection(
    client: lms.Client, emulator: LMStudioEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a probe (a 5 MB image over a slow link): a call given up in its upload left
    the upload running, and the sessions were reset a while later, under the next call's
    own upload of the same image. That call's error judged the model session, closed by the
    reset and not needed by an upload, and said "the connection to LM Studio was not
    complete yet" where LM Studio had answered all along."""
    monkeypatch.setattr("outlines_lmstudio._sync_sessions.DRAIN_SECONDS", 0.3)
    model = from_lmstudio(client, VISION_MODEL)
    assert model("warm", max_tokens=2)  # looked up: only the uploads wait
    emulator.add_fault(Fault("uploadFileBase64", "hang", times=2))  # never answered
    image = png_image()
    with pytest.raises(LMStudioTimeoutError, match="no prediction had started"):
        model(["Describe", image], max_tokens=3, timeout=0.3)
    with pytest.raises(LMStudioTimeoutError) as info:
        model(["Describe", image], max_tokens=3, timeout=1.5)  # the reset comes meanwhile
    assert "no prediction had started yet" in str(info.value)
    assert [r.endpoint for r in emulator.requests].count("uploadFileBase64") == 2
    assert not client.llm.connected  # reset, and no step of the call needed it since
    assert model("the client still works", max_tokens=3)


@pytest.mark.asyncio
async def test_an_async_call_that_gave_up_during_a_lookup_leaves_no_unretrieved_error(
    emulator: LMStudioEmulator,
) -> None:
    """Found by mutation testing: a call that gives up (its timeout=) while LM Studio has
    not answered its model lookup stops waiting for it, so the lookup failing later (here:
    the client closed under it) is nobody's error: asyncio must not report "Task exception
    was never retrieved" for the call's leftover wait."""
    reported: list[str] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda loop, context: reported.append(context["message"]))
    try:
        emulator.add_fault(Fault("getOrLoad", "hang"))  # answered by nothing: fails at close
        async with lms.AsyncClient(emulator.api_host) as client:
            with pytest.raises(LMStudioTimeoutError, match="no prediction had started"):
                await from_lmstudio(client, TEXT_MODEL)("hello", timeout=0.3)
        gc.collect()  # an unretrieved error is reported when its task is collected
    finally:
        loop.set_exception_handler(previous)
    assert reported == []


@pytest.mark.asyncio
async def test_an_async_stream_cancelled_again_while_leaving_still_cancels(
    async_client: lms.AsyncClient, emulator: LMStudioEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second cancel of the consumer, while it sends the first one's cancel, stops nothing.

    It once aborted the send: the prediction ran to its end on the server, and the SDK
    logged its late fragments as messages for a closed channel (found by a probe).
    """
    monkeypatch.setattr(emulator, "token_latency", 0.05)
    emulator.script(TEXT_MODEL, ["word " * 40])
    model = from_lmstudio(async_client, TEXT_MODEL)

    async def consume() -> None:
        async for _ in model.stream("hello"):
            pass

    task = asyncio.create_task(consume())
    await asyncio.to_thread(emulator.wait_until, lambda: bool(emulator.predictions))
    await asyncio.sleep(0.1)
    task.cancel()
    await asyncio.sleep(0)  # the consumer is leaving: sending the cancel
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.to_thread(emulator.wait_until, lambda: emulator.predictions[-1].done)
    assert emulator.predictions[-1].cancelled
    assert emulator.predictions[-1].stop_reason == "userStopped"


@pytest.mark.asyncio
@pytest.mark.parametrize("endpoint", ["getOrLoad", "uploadFileBase64"])
async def test_a_shared_lookup_or_upload_left_by_a_cancelled_caller_is_given_up(
    async_client: lms.AsyncClient,
    emulator: LMStudioEmulator,
    monkeypatch: pytest.MonkeyPatch,
    endpoint: str,
) -> None:
    """A caller cancelled (``wait_for``) while LM Studio never answers its model lookup or
    image upload: the work it left is reset a while later, as when its own bound runs out.

    Only a timeout of the call's own reset the sessions: after a cancel, the next call waited
    on the same unanswered request for the whole ``read_timeout``, then failed (found by a
    probe).
    """
    monkeypatch.setattr("outlines_lmstudio._async_sessions.DRAIN_SECONDS", 0.3)
    emulator.add_fault(Fault(endpoint, "hang"))  # one request, never answered
    model = from_lmstudio(async_client, VISION_MODEL, read_timeout=3.0)
    image = png_image()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(model(["Describe", image], max_tokens=3), 0.3)
    assert await model(["Describe", image], max_tokens=3)


@pytest.mark.asyncio
@pytest.mark.parametrize("endpoint", ["getOrLoad", "uploadFileBase64"])
async def test_giving_up_slow_shared_work_leaves_other_predictions_alone(
    async_client: lms.AsyncClient,
    emulator: LMStudioEmulator,
    monkeypatch: pytest.MonkeyPatch,
    endpoint: str,
) -> None:
    """Found by a probe: a caller that gave up on a slow model lookup or image upload made
    the model reset the client's sockets a while later, which cut a healthy stream on the
    same client (``Lost the connection``; a whole call was asked again from scratch).
    LM Studio still answers on that socket, so nothing is reset: the lookup is forgotten
    (the next call asks again), a stuck upload reconnects the ``files`` session alone."""
    monkeypatch.setattr("outlines_lmstudio._async_sessions.DRAIN_SECONDS", 0.3)
    monkeypatch.setattr(emulator, "token_latency", 0.01)
    emulator.script(TEXT_MODEL, ["w " * 150])  # about 1.5 s of fragments
    text_model = from_lmstudio(async_client, TEXT_MODEL)
    vision = from_lmstudio(async_client, VISION_MODEL)
    if endpoint == "uploadFileBase64":
        assert await vision("warm", max_tokens=2)  # the lookup done: only the upload waits
    model = VISION_MODEL if endpoint == "getOrLoad" else None
    emulator.add_fault(Fault(endpoint, "delay", seconds=3.0, model=model))

    async def read_all() -> int:
        return len([fragment async for fragment in text_model.stream("long")])

    streaming = asyncio.create_task(read_all())
    await asyncio.to_thread(emulator.wait_until, lambda: bool(emulator.predictions))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(vision(["Describe", png_image()], max_tokens=3), 0.2)
    assert await streaming == 151
    assert [(p.model, p.stop_reason) for p in emulator.predictions if p.model == TEXT_MODEL] == [
        (TEXT_MODEL, "eosFound")
    ]
    assert await vision(["Describe", png_image()], max_tokens=3)  # the next call asks again


@pytest.mark.asyncio
async def test_a_model_load_left_by_a_cancelled_caller_goes_on_while_it_reports_progress(
    async_client: lms.AsyncClient, emulator: LMStudioEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reset above spares a load that is not stuck: it reports progress every 0.5 s."""
    monkeypatch.setattr("outlines_lmstudio._async_sessions.DRAIN_SECONDS", 1.0)
    monkeypatch.setattr(emulator, "load_latency", 1.5)
    model = from_lmstudio(async_client, "gemma-3-1b-it")  # downloaded, not loaded
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(model("hello", max_tokens=3), 0.2)
    assert await model("hello", max_tokens=3)
    assert [r.endpoint for r in emulator.requests].count("getOrLoad") == 1


@pytest.mark.asyncio
async def test_a_call_cancelled_beside_a_model_load_leaves_the_load_alone(
    async_client: lms.AsyncClient, emulator: LMStudioEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call cancelled in its (answered) upload while another model loads with progress:
    nothing is stuck, so the sessions are not reset under the load."""
    monkeypatch.setattr("outlines_lmstudio._async_sessions.DRAIN_SECONDS", 1.0)
    monkeypatch.setattr(emulator, "load_latency", 2.4)
    emulator.add_fault(Fault("uploadFileBase64", "delay", seconds=0.3))
    loading = asyncio.create_task(from_lmstudio(async_client, "gemma-3-1b-it")("hi", max_tokens=3))
    await asyncio.to_thread(
        emulator.wait_until, lambda: any(r.endpoint == "getOrLoad" for r in emulator.requests)
    )
    vision = from_lmstudio(async_client, VISION_MODEL)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(vision(["Describe", png_image()], max_tokens=3), 0.1)
    assert await loading
    assert [r.endpoint for r in emulator.requests].count("getOrLoad") == 2  # gemma, vision


@pytest.mark.parametrize(("status", "why"), [(200, "its answer is not JSON"), (404, "HTTP 404")])
def test_a_host_given_where_another_server_answers_says_so(
    fronts: Fronts, status: int, why: str
) -> None:
    """The async client let json's own JSONDecodeError out for a web page, and both said
    "Is LM Studio running? ... Start LM Studio's server" for a 404 (found by a probe)."""
    with serving_html(status=status) as port:
        host = f"127.0.0.1:{port}"
        model = fronts.model(fronts.client(host, enter=False), TEXT_MODEL)
        with pytest.raises(LMStudioConnectionError) as caught:
            model("hello")
    message = str(caught.value)
    assert f"The server at {host} is not LM Studio" in message
    assert why in message
    assert "Start LM Studio" not in message
    assert "Check the host and port" in message


@pytest.mark.parametrize("spelling", ["http://{}", "ws://{}", "{}/v1", "http://{}/v1"])
def test_a_client_host_with_a_scheme_or_path_is_refused_before_anything_is_sent(
    fronts: Fronts, emulator: LMStudioEmulator, spelling: str
) -> None:
    """The SDK made ``ws://http://host:port/llm`` of it and said LM Studio was not
    reachable, to start it (found by a probe)."""
    with pytest.raises(InvalidClientError, match=r"is not HOST:PORT") as caught:
        fronts.model(fronts.client(spelling.format(emulator.api_host), enter=False), TEXT_MODEL)
    assert f"lms.Client('{emulator.api_host}')" in str(caught.value)
    assert emulator.requests == []


@pytest.mark.parametrize(
    ("spelling", "why"),
    [
        (" {} ", "has spaces or a line end around it"),
        ("{}\n", "has spaces or a line end around it"),
        ("localhost", "has no port"),
        ("41343", "is a port alone"),
        ("::1", "an IPv6 address goes in brackets, e.g. [::1]:1234"),
        ("::1:1234", "an IPv6 address goes in brackets"),
        ("localhost:abc", "is not HOST:PORT (Invalid port: 'abc')"),
        ("[::1", "is not HOST:PORT"),
        ("localhost:99999", "99999 is not a port: use 1 to 65535"),
        ("local host:1234", "is not a host name and a port in digits 0-9"),
        ("   ", "is blank"),
        # Found by a review: these offered lms.Client('localhost'), refused in turn.
        ("http://localhost", "a scheme or a path"),
        ("ws://my-box/", "a scheme or a path"),
    ],
)
def test_a_client_host_that_is_not_host_port_is_refused_before_anything_is_sent(
    fronts: Fronts, emulator: LMStudioEmulator, spelling: str, why: str
) -> None:
    """Found by a probe: these were "not reachable ... Is LM Studio running?" (with spaces
    around a host that runs, and with no port), and on an async client httpx's own
    ``InvalidURL`` or a bare ``ExceptionGroup``, no error of the library's."""
    host = spelling.format(emulator.api_host)
    with pytest.raises(InvalidClientError) as caught:
        fronts.model(fronts.client(host, enter=False), TEXT_MODEL)
    message = str(caught.value)
    assert f"The client's host {host!r}" in message
    assert why in message
    if host.strip() == emulator.api_host:
        assert f"lms.Client('{emulator.api_host}')" in message  # the host, written right
    for offered in re.findall(r"lms\.Client\('([^']*)'\)", message):
        fronts.model(fronts.client(offered, enter=False), TEXT_MODEL)  # is taken
    assert emulator.requests == []


@pytest.mark.parametrize(
    "host", ["[fe80::1%eth0]:1234", "[::1%1]:1234", "my_box:1234", "b\u00fccher.example:1"]
)
def test_unusual_hosts_the_sdk_connects_to_are_taken(fronts: Fronts, host: str) -> None:
    """Found by a review: an IPv6 address with a zone (a link-local address), which the
    SDK connects to, was refused as "not a host name and a port in digits"."""
    model = fronts.model(fronts.client(host, enter=False), TEXT_MODEL)
    assert model.client is not None


def test_a_host_name_that_does_not_resolve_is_named_as_such(fronts: Fronts) -> None:
    """Found by a probe: a misspelt host name was "not reachable ... Is LM Studio
    running?", to start LM Studio; the async SDK's error did not even keep the resolver's
    words. Where the resolver cannot say (no DNS to ask), nothing is claimed of the name."""
    host = "lmstudio-host.invalid:1234"
    model = fronts.model(fronts.client(host, enter=False), TEXT_MODEL)
    with pytest.raises(LMStudioConnectionError) as caught:
        model("hello")
    message = str(caught.value)
    if name_has_no_address("lmstudio-host.invalid"):
        assert "the host name 'lmstudio-host.invalid' does not resolve" in message
        assert "Check the spelling of the host name" in message
        assert "Start LM Studio" not in message
    else:
        assert "does not resolve" not in message


def test_a_proxy_in_the_environment_is_named_when_lm_studio_cannot_be_reached(
    fronts: Fronts, emulator: LMStudioEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dead proxy in ALL_PROXY made LM Studio, running, "not reachable": the hint said
    to start it (found by a probe)."""
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    model = fronts.model(fronts.client(emulator.api_host, enter=False), TEXT_MODEL)
    with pytest.raises(LMStudioConnectionError) as caught:
        model("hello")
    assert "The environment sets ALL_PROXY" in str(caught.value)
    assert "NO_PROXY=127.0.0.1,localhost" in str(caught.value)


def _slow_once(seconds: float) -> Callable[[object], None]:
    """A fragment callback that takes ``seconds`` on the first fragment (a slow consumer)."""
    seen: list[object] = []

    def callback(fragment: object) -> None:
        seen.append(fragment)
        if len(seen) == 1:
            time.sleep(seconds)

    return callback


@pytest.mark.parametrize("bound", ["timeout", "read_timeout"])
def test_the_time_a_callback_takes_is_not_lm_studios(
    make_model: MakeModel, emulator: LMStudioEmulator, bound: str
) -> None:
    """``timeout`` and ``read_timeout`` bound LM Studio's part of a call. Found by a probe:
    a sync call whose fragment callback took 1.5 s failed with "LM Studio sent nothing for
    1 s", or "No complete answer from LM Studio within 1 s" for a reply LM Studio had
    finished long before, and the reply was lost (the async model returned it)."""
    emulator.script(TEXT_MODEL, ["one two three four five"])
    model = make_model(TEXT_MODEL, **{bound: 1.0})
    assert model("hello", on_prediction_fragment=_slow_once(1.5)) == "one two three four five"
    assert emulator.predictions[-1].stop_reason == "eosFound"


def test_read_timeout_still_bounds_a_silence_after_a_slow_callback(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    """The callback's time is left out, not the bound: LM Studio silent afterwards is still
    given up on, with the usual error."""
    emulator.add_fault(Fault(kind="delay", after_fragments=2, seconds=3.0))
    model = make_model(TEXT_MODEL, read_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(LMStudioTimeoutError, match=r"sent nothing for 0\.5 s"):
        model("hello", on_prediction_fragment=_slow_once(1.0))
    assert time.monotonic() - started < 2.9  # the silence was cut short, not waited out
    emulator.wait_until(lambda: emulator.predictions[-1].done)
    assert emulator.predictions[-1].cancelled
