"""Records, the frame trace and unknown endpoints."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import pickle
import subprocess
import sys
import time
from collections.abc import Callable

import lmstudio as lms
import pytest

from outlines_lmstudio.testing import Frame, LMStudioEmulator, Prediction, RecordedRequest

from .conftest import PNG, TEXT, VISION, MakeEmulator, raw_rpc, raw_socket


def test_trace_and_format(emu: LMStudioEmulator, client: lms.Client) -> None:
    client.llm.model(TEXT).respond("hi")
    client.files.prepare_image(PNG * 10)
    frames = emu.trace
    assert frames[0].direction == "in"
    assert frames[0].data["authVersion"] == 1
    assert {f.direction for f in frames} == {"in", "out"}
    assert [f.time for f in frames] == sorted(f.time for f in frames)
    text = emu.format_trace(last=None)
    assert text.count("\n") == len(frames)
    assert "chars>" in text  # the base64 upload is abbreviated
    assert emu.format_trace(last=3).count("\n") == 3
    assert emu.format_trace(last=0).count("\n") == 0


def test_wait_until_times_out_with_the_trace(emu: LMStudioEmulator) -> None:
    with pytest.raises(TimeoutError, match="emulator trace"):
        emu.wait_until(lambda: False, timeout=0.05)


@pytest.mark.asyncio
async def test_await_until_lets_an_async_client_in_the_same_loop_run(emu: LMStudioEmulator) -> None:
    # Found by a probe: in an async test, wait_until's blocking sleep stopped the test's
    # own event loop, so an lms.AsyncClient in it never sent what was awaited.
    async with lms.AsyncClient(emu.api_host) as client:
        model = await client.llm.model(TEXT)
        reply = asyncio.create_task(model.respond("awaited"))
        with pytest.raises(TimeoutError, match=r"use await emu\.await_until\(\.\.\.\) instead"):
            emu.wait_until(lambda: len(emu.predictions) == 1, timeout=0.2)
        assert emu.predictions == []  # the client never ran while the loop was blocked
        await emu.await_until(lambda: len(emu.predictions) == 1, timeout=5)
        assert emu.predictions[0].last_user_text == "awaited"
        await reply
    with pytest.raises(TimeoutError, match="emulator trace"):
        await emu.await_until(lambda: False, timeout=0.05)
    with pytest.raises(TypeError, match=r"await_until\(\) takes a function of no arguments"):
        await emu.await_until(emu.predictions)  # type: ignore[arg-type]


def test_an_endpoint_lm_studio_has_but_the_emulator_lacks_is_an_error(
    emu: LMStudioEmulator, client: lms.Client
) -> None:
    # The model hub is not emulated: the caller gets an error at once, never a hang.
    with pytest.raises(lms.LMStudioServerError, match="does not implement repository/searchModels"):
        client.repository.search_models("qwen")
    assert emu.requests[-1].endpoint == "searchModels"


def test_an_unknown_endpoint_only_warns_by_default(emu: LMStudioEmulator) -> None:
    # LM Studio answers an endpoint it does not know with a warning only.
    with raw_socket(emu, "llm") as ws:
        reply = raw_rpc(ws, "noSuchThing", 0)
        assert reply["type"] == "communicationWarning"
        assert "noSuchThing" in reply["warning"]
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.2)


def test_unknown_endpoint_error_mode_is_lenient(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator(unknown_endpoint="error")
    with raw_socket(emulator, "llm") as ws:
        reply = raw_rpc(ws, "noSuchThing", 0)
        assert reply["type"] == "rpcError"
        assert reply["callId"] == 0
        assert "Unknown endpoint" in reply["error"]["title"]


def test_a_parameter_its_schema_refuses_only_warns_by_default(
    make_emulator: MakeEmulator, sync_timeout: Callable[[float], None]
) -> None:
    # LM Studio checks a request's parameter before serving it, and answers a bad one with
    # a warning only. The emulator served ``ttl=0`` (``loadTtlMs: 0``; at least 1 in LM
    # Studio's schema), so code that stalls on LM Studio passed against it (found by a probe).
    emulator = make_emulator(validate_frames=False)
    sync_timeout(1.0)
    with lms.Client(emulator.api_host) as client:
        loaded = [m.identifier for m in client.llm.list_loaded()]
        with pytest.raises(lms.LMStudioTimeoutError):
            client.llm.model("gemma-3-1b-it", ttl=0)
        assert [m.identifier for m in client.llm.list_loaded()] == loaded  # nothing loaded
    warnings = [
        f.data["warning"] for f in emulator.trace if f.data.get("type") == "communicationWarning"
    ]
    assert len(warnings) == 1
    assert "invalid creationParameter" in warnings[0]
    assert "loadTtlMs" in warnings[0]
    with raw_socket(emulator, "llm") as ws:
        reply = raw_rpc(
            ws, "countTokens", 0, {"specifier": {"type": "query", "query": {}}, "inputString": 5}
        )
        assert reply["type"] == "communicationWarning"
        assert "invalid parameter" in reply["warning"]
        assert "inputString" in reply["warning"]
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.2)


def test_a_parameter_its_schema_refuses_is_an_error_in_error_mode(
    make_emulator: MakeEmulator,
) -> None:
    emulator = make_emulator(validate_frames=False, unknown_endpoint="error")
    with lms.Client(emulator.api_host) as client:
        with pytest.raises(lms.LMStudioServerError, match=r"invalid creationParameter.*\$\.ttlMs"):
            client.llm.load_new_instance("gemma-3-1b-it", "mine", ttl=-5)
        assert "mine" not in [m.identifier for m in client.llm.list_loaded()]
        model = client.llm.model(TEXT)  # the socket goes on serving
        assert model.respond("hi", config={"maxTokens": 2}).content
    with raw_socket(emulator, "llm") as ws:
        reply = raw_rpc(
            ws, "countTokens", 3, {"specifier": {"type": "query", "query": {}}, "inputString": 5}
        )
        assert reply["type"] == "rpcError"
        assert reply["callId"] == 3
        assert "inputString" in reply["error"]["title"]


def test_a_client_warning_gets_no_reply(emu: LMStudioEmulator) -> None:
    with raw_socket(emu, "system") as ws:
        ws.send(json.dumps({"type": "communicationWarning", "warning": "odd frame"}))
        reply = raw_rpc(ws, "version", 0)
        assert reply["type"] == "rpcResult"  # the warning got nothing back
        assert reply["callId"] == 0


@pytest.mark.parametrize("record", [Prediction, RecordedRequest, Frame])
def test_every_field_of_a_record_is_documented(record: type) -> None:
    # Before: Prediction.error (the error that ended the prediction) was not.
    import dataclasses

    documented = {line.strip() for line in (record.__doc__ or "").splitlines()}
    public = [f.name for f in dataclasses.fields(record) if not f.name.startswith("_")]
    assert [name for name in public if name not in documented] == []


def _long_reply(emu: LMStudioEmulator) -> None:
    emu.token_latency = 0.02
    emu.script(TEXT, [" ".join(f"w{i}" for i in range(400))])


def _ended_by_disconnect(emu: LMStudioEmulator) -> Prediction:
    record = emu.predictions[-1]
    emu.wait_until(lambda: record.done, timeout=5)  # before: timed out, done stayed False
    sent = len(record.fragments)
    assert 0 < sent < 400
    assert (record.disconnected, record.cancelled, record.stop_reason, record.error) == (
        True,
        False,
        None,
        None,
    )
    time.sleep(0.1)
    assert len(record.fragments) == sent  # and it no longer generates
    return record


@pytest.mark.asyncio
async def test_a_prediction_whose_client_closed_mid_reply_is_done_and_disconnected(
    emu: LMStudioEmulator,
) -> None:
    # Found by a probe: the record stayed done=False, cancelled=False, stop_reason=None.
    _long_reply(emu)
    client = lms.AsyncClient(emu.api_host)
    await client.__aenter__()
    model = await client.llm.model(TEXT)
    task = asyncio.ensure_future(model.respond("x"))
    await emu.await_until(lambda: any(len(p.fragments) > 2 for p in emu.predictions), timeout=5)
    await client.aclose()
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.to_thread(_ended_by_disconnect, emu)


def test_a_prediction_whose_client_process_was_killed_is_done_and_disconnected(
    emu: LMStudioEmulator,
) -> None:
    _long_reply(emu)
    script = (
        "import sys, lmstudio as lms\n"
        "client = lms.Client(sys.argv[1])\n"
        "for _ in client.llm.model(sys.argv[2]).respond_stream('x'):\n"
        "    pass\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script, emu.api_host, TEXT])
    try:
        emu.wait_until(lambda: any(len(p.fragments) > 2 for p in emu.predictions), timeout=30)
    finally:
        child.kill()
        child.wait(timeout=10)
    assert _ended_by_disconnect(emu).client_id


def test_max_records_keeps_the_newest_and_no_bytes_of_a_client_gone(
    make_emulator: MakeEmulator,
) -> None:
    # Found by a probe: the emulator command, serving until Ctrl-C, kept every record and
    # every upload's bytes (10 clients x 8 MB: RSS 46 -> 270 MB), after the clients left.
    emulator = make_emulator(max_records=3)
    image = PNG * 100  # base64 longer than the records keep
    with lms.Client(emulator.api_host) as client:
        handle = client.files.prepare_image(image)
        chat = lms.Chat()
        chat.add_user_message("What is this?", images=[handle])
        client.llm.model(VISION).respond(chat)
        assert emulator.uploads[-1].data == image  # while its client is connected
        assert emulator.predictions[-1].images == [image]
        for _ in range(4):
            client.llm.list_loaded()
    assert [r.endpoint for r in emulator.requests] == ["listLoaded"] * 3
    assert len(emulator.trace) == 3
    emulator.wait_until(lambda: emulator.uploads[-1].data == b"")
    assert emulator.predictions[-1].images == []
    with lms.Client(emulator.api_host) as client:
        client.files.prepare_image(image)
    (upload,) = [r for r in emulator.requests if r.endpoint == "uploadFileBase64"]
    assert upload.parameter["contentBase64"].endswith(" chars>")


def test_records_are_kept_whole_by_default(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator()
    image = PNG * 100
    with lms.Client(emulator.api_host) as client:
        client.files.prepare_image(image)
    time.sleep(0.2)  # the client is gone
    assert emulator.uploads[-1].data == image  # a test reads it after its client closed
    (upload,) = [r for r in emulator.requests if r.endpoint == "uploadFileBase64"]
    assert len(upload.parameter["contentBase64"]) > 200


@pytest.mark.parametrize("bad", [0, -1, True, 2.0, "10"])
def test_max_records_is_a_positive_integer(bad: object) -> None:
    with pytest.raises(ValueError, match="max_records must be None or an integer >= 1"):
        LMStudioEmulator(max_records=bad)  # type: ignore[arg-type]


def test_lean_records_shorten_long_lists_and_objects(make_emulator: MakeEmulator) -> None:
    """Found by a probe: the ``emulator`` command kept frames of millions of items whole
    (five of them: 280 MB, still held after their client had gone)."""
    emulator = make_emulator(max_records=10, validate_frames=False)
    parameter = {"items": list(range(50_000)), "keys": {f"k{i}": i for i in range(5_000)}}
    with raw_socket(emulator, "system") as ws:
        raw_rpc(ws, "listDownloadedModels", 1, parameter)
    (request,) = [r for r in emulator.requests if r.endpoint == "listDownloadedModels"]
    assert request.parameter["items"][:3] == [0, 1, 2]
    assert request.parameter["items"][-1] == "...<50000 items>"
    assert len(request.parameter["items"]) == 1_001
    assert len(request.parameter["keys"]) == 1_001
    assert request.parameter["keys"]["..."] == 5_000
    frame = next(f for f in emulator.trace if f.direction == "in" and "parameter" in f.data)
    assert len(frame.data["parameter"]["items"]) == 1_001


def test_a_record_copies_and_pickles_with_its_cancel_state(
    emu: LMStudioEmulator, client: lms.Client
) -> None:
    """A record's ``cancel_event``, once waited on, held the emulator's running loop:
    ``pickle``, ``copy.deepcopy`` and ``dataclasses.asdict`` of it failed ("cannot pickle
    'async_generator' object") and printed tracebacks (found by a probe)."""
    model = client.llm.model(TEXT)
    model.respond("hi")
    stream = model.respond_stream("A long answer", config={"maxTokens": 300})
    for _ in stream:
        stream.cancel()
    emu.wait_until(lambda: len(emu.predictions) == 2 and all(p.done for p in emu.predictions))
    finished, cancelled = emu.predictions
    assert (finished.cancelled, cancelled.cancelled) == (False, True)
    for record in (finished, cancelled):
        for copied in (pickle.loads(pickle.dumps(record)), copy.deepcopy(record)):
            assert copied == record  # every compared field
            assert copied.cancel_event.is_set() is record.cancelled
            assert copied.cancel_event is not record.cancel_event
        as_dict = dataclasses.asdict(record)
        assert (as_dict["text"], as_dict["cancelled"]) == (record.text, record.cancelled)
    assert copy.deepcopy(emu.predictions) == emu.predictions


@pytest.mark.parametrize(
    ("copying", "said"),
    [
        (copy.copy, r"be copied \(copy.copy\)"),
        (copy.deepcopy, r"be deep-copied"),
        (lambda emulator: pickle.dumps(emulator), "be pickled"),
    ],
)
def test_an_emulator_is_not_copied(
    make_emulator: MakeEmulator, copying: Callable[[LMStudioEmulator], object], said: str
) -> None:
    """``copy.copy`` shared the server: the copy's ``stop()`` closed the original's loop,
    whose ``with`` exit then raised "Event loop is closed" (found by a probe)."""
    emulator = make_emulator()
    with pytest.raises(TypeError, match=said):
        copying(emulator)
    with lms.Client(emulator.api_host) as client:  # still serving
        assert client.llm.model(TEXT).respond("hi").content
