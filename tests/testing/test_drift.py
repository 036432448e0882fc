"""The drift guard: messages are checked against the SDK's msgspec structs."""

from __future__ import annotations

from typing import Any

import lmstudio as lms
import pytest

from outlines_lmstudio.testing import Fault, LMStudioEmulator
from outlines_lmstudio.testing._drift import check_incoming, check_outgoing

from .conftest import EMBED, PNG, TEXT, UNLOADED, VISION, MakeEmulator, raw_rpc, raw_socket


def test_representative_session_has_no_violations(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator(validate_frames=True)
    schema = {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}
    with lms.Client(emulator.api_host) as client:
        model = client.llm.model(TEXT)
        model.respond("hi", config={"maxTokens": 5, "temperature": 0.1, "stopStrings": ["."]})
        model.complete("once")
        model.respond("json", response_format=schema)
        for _ in model.respond_stream("stream"):
            pass
        model.get_info(), model.get_load_config(), model.tokenize("a b"), model.count_tokens("a")
        model.apply_prompt_template(lms.Chat("sys"))
        client.llm.model(UNLOADED)
        client.llm.load_new_instance(TEXT, "copy").unload()
        client.list_downloaded_models(), client.list_loaded_models()
        client.embedding.model(EMBED).embed("x")
        handle = client.files.prepare_image(PNG)
        chat = lms.Chat()
        chat.add_user_message("what", images=[handle])
        client.llm.model(VISION).respond(chat)
        for call in (lambda: client.llm.model("missing"), lambda: model.respond(chat)):
            with pytest.raises(lms.LMStudioServerError):
                call()
        emulator.add_fault(Fault("predict", after_fragments=1))
        with pytest.raises(lms.LMStudioServerError):
            model.respond("x")
        emulator.unload(TEXT)
        with pytest.raises(lms.LMStudioModelNotFoundError):
            model.get_info()
    assert len(emulator.trace) > 50
    assert emulator.protocol_violations == []


def test_a_malformed_message_is_flagged() -> None:
    fragment: dict[str, Any] = {
        "type": "channelSend",
        "channelId": 1,
        "message": {"type": "fragment", "fragment": {"content": "a"}},  # counts missing
    }
    problems = check_outgoing("llm", "predict", "channel", fragment)
    assert problems
    assert "tokensCount" in problems[0]
    assert check_outgoing("llm", None, "rpc", {"type": "keepAliveAck"})
    assert check_outgoing(
        "llm", "listLoaded", "rpc", {"type": "rpcResult", "callId": 1, "result": [{}]}
    )
    assert check_outgoing(
        "llm", "unloadModel", "rpc", {"type": "rpcResult", "callId": 1, "result": 1}
    )
    bad_error = {"type": "rpcError", "callId": 1, "error": {"title": 3}}
    assert check_outgoing("llm", "getModelInfo", "rpc", bad_error)
    not_found = {
        "type": "channelError",
        "channelId": 1,
        "error": {"title": "x", "displayData": {"code": "generic.noModelMatchingQuery"}},
    }
    assert check_outgoing("llm", "predict", "channel", not_found)
    success = {"type": "success", "stats": {"stopReason": "because"}}
    frame = {"type": "channelSend", "channelId": 2, "message": success}
    assert check_outgoing("llm", "predict", "channel", frame)
    assert check_outgoing("llm", "nonsense", "rpc", {"type": "rpcResult", "callId": 1})


def test_well_formed_messages_pass() -> None:
    ok = {
        "type": "channelSend",
        "channelId": 1,
        "message": {
            "type": "fragment",
            "fragment": {
                "content": "a",
                "tokensCount": 1,
                "containsDrafted": False,
                "reasoningType": "none",
            },
        },
    }
    assert check_outgoing("llm", "predict", "channel", ok) == []
    assert check_outgoing("llm", "unloadModel", "rpc", {"type": "rpcResult", "callId": 1}) == []
    assert (
        check_outgoing("llm", None, "rpc", {"type": "communicationWarning", "warning": "w"}) == []
    )


def test_incoming_requests_are_checked() -> None:
    bad = {"type": "rpcCall", "endpoint": "tokenize", "callId": 1, "parameter": {"specifier": 1}}
    assert check_incoming("llm", bad)
    good = {
        "type": "rpcCall",
        "endpoint": "countTokens",
        "callId": 1,
        "parameter": {
            "specifier": {"type": "query", "query": {"identifier": "m"}},
            "inputString": "x",
        },
    }
    assert check_incoming("llm", good) == []


def test_an_endpoint_without_typed_payloads_is_checked_without_failing() -> None:
    """The SDK types the ``alive`` channel (``client.system.whenDisconnected()`` in the
    TypeScript SDK) as a plain class, not a struct: checking its ``channelCreate`` raised,
    and the exception closed the client's ``system`` socket."""
    create = {"type": "channelCreate", "endpoint": "alive", "channelId": 0}
    assert check_incoming("system", create) == []
    assert (
        check_outgoing("system", "alive", "channel", {"type": "channelClose", "channelId": 0}) == []
    )
    packet = {"type": "channelSend", "channelId": 0, "message": {"type": "x"}}
    assert check_outgoing("system", "alive", "channel", packet)


def test_the_emulator_records_violations(emu: LMStudioEmulator) -> None:
    # A malformed frame reaching `send` is recorded; the fixture would fail the test.
    import asyncio

    from outlines_lmstudio.testing._protocol import Connection

    conn = Connection.__new__(Connection)
    conn.emu, conn.namespace, conn.sid, conn.closed = emu, "llm", 0, False
    conn.sending, conn._drained = 0, asyncio.Event()

    class _Socket:
        async def send(self, text: str) -> None:
            return None

    conn.ws = _Socket()  # type: ignore[assignment]
    asyncio.run(conn.send({"type": "keepAliveAck"}, None, "rpc"))
    assert emu.protocol_violations
    emu.reset()
    assert emu.protocol_violations == []


def test_a_fractional_ttl_lm_studio_reads_as_an_integer_is_no_violation(
    make_emulator: MakeEmulator,
) -> None:
    # Found by a probe: ttl=1.5 makes the SDK send loadTtlMs 1500.0, which LM Studio reads
    # as 1500 and the emulator served, yet the guard recorded "Expected `int | null`, got
    # `float`" and the pytest fixture failed the test, blaming the emulator's messages.
    emulator = make_emulator()
    with lms.Client(emulator.api_host) as client:
        model = client.llm.model(UNLOADED, ttl=1.5)  # type: ignore[arg-type]  # as users write it
        assert model.respond("hi", config={"maxTokens": 2}).content
        (load,) = [r for r in emulator.requests if r.endpoint == "getOrLoad"][-1:]
        assert load.parameter["loadTtlMs"] == 1500.0
    assert emulator.protocol_violations == []


def test_a_value_lm_studio_refuses_is_a_violation_that_names_the_client(
    make_emulator: MakeEmulator,
) -> None:
    emulator = make_emulator(unknown_endpoint="error")
    with raw_socket(emulator, "llm") as ws:
        bad = {"specifier": {"type": "query", "query": {"identifier": TEXT}}, "inputString": 1.5}
        assert raw_rpc(ws, "countTokens", 1, bad)["type"] == "rpcError"
    (violation,) = emulator.protocol_violations
    assert violation.startswith("llm/countTokens rpcCall (the client's request): ")
    emulator.reset()  # the fixture checks the guard afterwards
