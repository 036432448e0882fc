"""Sync batches reuse the model's threads, and never share them with a batch running already."""

import gc
import textwrap
import threading

import lmstudio as lms
import pytest

from outlines_lmstudio import from_lmstudio
from outlines_lmstudio._common import NO_ARGS
from outlines_lmstudio._config import parse_inference_kwargs
from outlines_lmstudio.testing import LMStudioEmulator

from .conftest import TEXT_MODEL
from .helpers import run_script


def test_batches_reuse_one_pool_of_the_asked_size(
    client: lms.Client, emulator: LMStudioEmulator
) -> None:
    emulator.script(TEXT_MODEL, lambda p: p.last_user_text.upper())
    model = from_lmstudio(client, TEXT_MODEL)
    assert model.batch(["a", "b", "c"]) == ["A", "B", "C"]
    pool = model._batches.pool
    assert pool is not None
    assert model.batch(["d", "e"]) == ["D", "E"]
    assert model._batches.pool is pool  # kept from batch to batch
    assert model.batch(["f", "g"], max_concurrency=2) == ["F", "G"]
    assert model._batches.pool is not pool  # another limit: a pool of that size
    assert model._batches.size == 2


def test_a_batch_during_a_batch_gets_its_own_threads(
    client: lms.Client, emulator: LMStudioEmulator
) -> None:
    emulator.script(TEXT_MODEL, lambda p: p.last_user_text.upper())
    model = from_lmstudio(client, TEXT_MODEL, max_concurrency=2)
    model._batches.lent = True  # as while another thread's (or an outer) batch runs
    assert model.batch([f"y{i}" for i in range(5)]) == [f"Y{i}" for i in range(5)]
    assert model._batches.pool is None  # it used threads of its own, gone with it
    assert model._batches.lent  # the other batch's still


def test_no_keywords_is_what_parsing_no_keywords_gives() -> None:
    assert parse_inference_kwargs({}) == NO_ARGS


_ATEXIT_SCRIPT = textwrap.dedent(
    """
    import atexit
    import sys
    import lmstudio as lms
    from outlines_lmstudio import BatchGenerationError, from_lmstudio

    client = lms.Client(sys.argv[1])
    model = from_lmstudio(client, sys.argv[2], max_concurrency=2)

    def calls():
        print(model.batch(["a", "b", "c"]), model.parse(["d", "e"], int), flush=True)
        try:
            model.parse(["f", "x", "g"], int)
        except BatchGenerationError as exc:
            print(exc.results, sorted(exc.errors), flush=True)

    if sys.argv[3] == "before":
        calls()  # the model's batch threads exist, and end before the atexit handlers
    atexit.register(client.close)  # after calls (handlers run last registered first)
    atexit.register(calls)
    """
)


@pytest.mark.parametrize("before", ["before", "first"])
def test_a_batch_at_exit_runs_its_items_in_turn(emulator: LMStudioEmulator, before: str) -> None:
    """``concurrent.futures`` takes no work once atexit handlers run: a batch there failed with
    its raw ``RuntimeError`` ("cannot schedule new futures after interpreter shutdown", or
    "after shutdown" for a model that had run a batch), found by a tester."""
    emulator.script(
        TEXT_MODEL,
        lambda p: {"d": "4", "e": "5", "f": "6", "g": "7"}.get(
            p.last_user_text, p.last_user_text.upper()
        ),
    )
    result = run_script(_ATEXIT_SCRIPT, emulator.api_host, TEXT_MODEL, before)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = ["['A', 'B', 'C'] [4, 5]", "[6, None, 7] [1]"]
    assert result.stdout.splitlines() == lines * (2 if before == "before" else 1)


def test_a_first_call_where_python_starts_no_thread_connects_in_the_callers_thread(
    emulator: LMStudioEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a probe on Python 3.12.1, which starts no thread in an atexit callback: a
    first call there raised "can't create new thread at interpreter shutdown", where the
    SDK by hand connects in the caller's thread. Python 3.11 starts threads there, so the
    refusal is made here as 3.12 makes it, for the connecting thread."""
    start = threading.Thread.start

    def at_shutdown(thread: threading.Thread) -> None:
        if thread.name == "outlines-lmstudio-connect":
            raise RuntimeError("can't create new thread at interpreter shutdown")
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", at_shutdown)
    with lms.Client(emulator.api_host) as client:
        emulator.script(TEXT_MODEL, ["at exit"])
        assert from_lmstudio(client, TEXT_MODEL)("hi") == "at exit"


_DAEMON_SCRIPT = textwrap.dedent(
    """
    import sys
    import threading
    import lmstudio as lms
    from outlines_lmstudio import from_lmstudio

    model = from_lmstudio(lms.Client(sys.argv[1]), sys.argv[2])
    kind = sys.argv[3]
    started = threading.Event()

    def work():  # the main thread ends once the batch is under way (every item submitted)
        model.batch([f"item {i}" for i in range(40)], on_first_token=started.set)
        print("the batch ended", flush=True)  # never for a daemon: the exit stops it

    worker = threading.Thread(target=work, daemon=kind == "daemon")
    worker.start()
    started.wait()
    """
)


@pytest.mark.parametrize("kind", ["daemon", "non-daemon"])
def test_a_batch_in_a_daemon_thread_does_not_hold_the_exit(kind: str) -> None:
    """Found by a probe: ``concurrent.futures`` joins the pool's threads at the exit, each
    after running every item queued for it, so a daemon thread's batch of 40 three-second
    replies held the exit for 30 s, and none was cancelled. A non-daemon thread's batch
    runs on: the exit waits for that thread, as Python waits for any."""
    with LMStudioEmulator(token_latency=0.05 if kind == "daemon" else 0.0) as emulator:
        emulator.script(TEXT_MODEL, lambda p: "word " * 60)  # 3 s a reply at 0.05 s a token
        result = run_script(_DAEMON_SCRIPT, emulator.api_host, TEXT_MODEL, kind)
        emulator.wait_until(lambda: all(p.done for p in emulator.predictions))
        reasons = [p.stop_reason for p in emulator.predictions]
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    if kind == "daemon":
        assert result.stdout == ""
        assert 1 <= len(reasons) <= 4  # the first items only: 4 slots, the rest never sent
        assert set(reasons) == {"userStopped"}  # cancelled on the server, not left running
    else:
        assert result.stdout == "the batch ended\n"
        assert reasons == ["eosFound"] * 40


def test_a_batch_lets_go_of_each_finished_item_s_prediction(
    client: lms.Client, emulator: LMStudioEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a probe of scale: the batch kept every item's call to its end, and with it the
    SDK's stream of the prediction (its fragment messages, the request): a sync batch's
    memory grew by about 16 kB an item (396 MB at 20,000), where the same calls in a thread
    pool of the SDK's or ours stayed flat. Held now: the running items' predictions only."""
    monkeypatch.setattr(emulator, "token_latency", 0.01)
    emulator.script(TEXT_MODEL, lambda p: "a b c d " + p.last_user_text)
    model = from_lmstudio(client, TEXT_MODEL, max_concurrency=2)
    done: list[list[str]] = []
    batch = threading.Thread(target=lambda: done.append(model.batch([str(i) for i in range(80)])))
    batch.start()
    try:
        emulator.wait_until(lambda: sum(p.done for p in emulator.predictions) >= 20, timeout=30)
        gc.collect()
        alive = sum(isinstance(o, lms.PredictionStream) for o in gc.get_objects())
        assert not done  # still running: 60 items to go
    finally:
        batch.join(60)
    assert done == [[f"a b c d {i}" for i in range(80)]]
    assert alive <= 4  # the 2 running, and at most 2 a thread has yet to let go of


NESTED = textwrap.dedent(
    """
    import os, signal, sys, threading, time
    import lmstudio as lms
    from pydantic import BaseModel, field_validator
    from outlines_lmstudio import from_lmstudio

    with lms.Client(sys.argv[1]) as client:
        model = from_lmstudio(client, sys.argv[2], max_concurrency=2)

        class Thing(BaseModel):
            x: int

            @field_validator("x")
            @classmethod
            def inner(cls, value: int) -> int:
                model.batch([f"inner {i}" for i in range(6)], max_tokens=400)
                return value

        threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()
        started = time.monotonic()
        try:
            model.parse([f"outer {i}" for i in range(2)], Thing, max_tokens=100)
        except KeyboardInterrupt:
            print(f"INTERRUPTED {time.monotonic() - started:.2f}", flush=True)
    """
)


@pytest.mark.usefixtures("sigint_default")
def test_ctrl_c_stops_the_batches_a_batch_s_items_run(
    emulator: LMStudioEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch run by an item of another (a Pydantic validator calling ``model.batch``):
    a Ctrl-C stopped the outer batch only, and the inner ones went on, starting their queued
    items (found by a review)."""
    monkeypatch.setattr(emulator, "token_latency", 0.005)
    emulator.script(
        TEXT_MODEL,
        lambda p: '{"x": 1}' if p.last_user_text.startswith("outer") else "a " * 300,
    )
    done = run_script(NESTED, emulator.api_host, TEXT_MODEL)
    assert "INTERRUPTED" in done.stdout, done.stderr
    assert float(done.stdout.split()[1]) < 3  # at once, and room for a busy machine
    emulator.wait_until(lambda: all(p.done for p in emulator.predictions), timeout=10)
    inner = [p for p in emulator.predictions if p.last_user_text.startswith("inner")]
    assert len(inner) == 4  # each inner batch's first two, none after the Ctrl-C
    assert all(p.cancelled for p in inner)


@pytest.mark.parametrize("exc", [SystemExit(3), KeyboardInterrupt()], ids=type)
def test_what_an_items_callback_raises_that_is_no_exception_stops_the_batch(
    slow_emulator: LMStudioEmulator, exc: BaseException
) -> None:
    """Found by a probe: a callback's ``sys.exit()`` (or ``KeyboardInterrupt``) in a batch
    item became one of the batch's errors, a ``BatchGenerationError``, which ``except
    Exception`` caught; a single call, and a thread pool by hand, raise it. It now stops
    the batch as it stops a call: the others are cancelled, the queued never start."""
    slow_emulator.script(TEXT_MODEL, ["word " * 400] * 6)
    with lms.Client(slow_emulator.api_host) as client:
        model = from_lmstudio(client, TEXT_MODEL, max_concurrency=2)
        seen: list[object] = []

        def callback(fragment: object) -> None:
            seen.append(fragment)
            if len(seen) == 3:
                raise exc

        with pytest.raises(type(exc)) as raised:
            model.batch(["long"] * 6, on_prediction_fragment=callback)
        assert raised.value is exc
        slow_emulator.wait_until(lambda: all(p.done for p in slow_emulator.predictions))
        started = slow_emulator.predictions
        assert 1 <= len(started) <= 3  # the running two, and one that took a freed slot
        assert all(p.stop_reason == "userStopped" for p in started)
        slow_emulator.script(TEXT_MODEL, ["again"])
        assert model("again") == "again"
