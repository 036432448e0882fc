"""200 back-to-back predictions leak neither threads nor sockets."""

from __future__ import annotations

import os
import threading

import lmstudio as lms
import pytest

from .conftest import TEXT, MakeEmulator


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_two_hundred_predictions(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator()
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    with lms.Client(emulator.api_host) as client:
        model = client.llm.model(TEXT)
        model.respond("warm up")
        model.respond("warm up", response_format=schema)
        # Threads, not their count: a thread of an earlier test may end meanwhile (CI saw 23 -> 22).
        threads, fds = set(threading.enumerate()), _open_fds()
        for i in range(200):
            if i % 2:
                assert model.respond(f"question {i}").content
            else:
                assert isinstance(model.respond(f"q {i}", response_format=schema).parsed, dict)
        started = set(threading.enumerate()) - threads
        assert not started, f"threads left running: {sorted(t.name for t in started)}"
        assert _open_fds() <= fds + 2
    assert len(emulator.predictions) == 202
    assert all(p.done and p.stop_reason == "eosFound" for p in emulator.predictions)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_clients_and_emulators_clean_up(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator()
    with lms.Client(emulator.api_host) as client:
        client.llm.model(TEXT).respond("warm up")
    threads, fds = threading.active_count(), _open_fds()
    for _ in range(10):
        with lms.Client(emulator.api_host) as client:
            client.llm.model(TEXT).respond("hi")
    emulator.wait_until(lambda: _open_fds() <= fds + 2, timeout=5)
    # The SDK's close() asks its websocket thread to stop and returns without waiting for
    # it: the last client's thread may still be ending (CI, under parallel tests, saw it).
    emulator.wait_until(lambda: threading.active_count() <= threads, timeout=5)
    assert threading.active_count() <= threads
    before_stop = threading.enumerate()
    emulator.stop()
    emulator.stop()  # idempotent
    gone = set(before_stop) - set(threading.enumerate())
    assert "lmstudio-emulator" in {t.name for t in gone}
    assert not emulator.running
