"""Malformed frames and misbehaving clients: each is refused alone, as LM Studio does.

Found by a probe: one bad frame closed the whole socket (1011) with every prediction on
it, a client gone before its auth reply kept its passkey forever, a request without its
parameter skipped the schema check, and ``stop()`` waited 10 s for a silent connection.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from outlines_lmstudio.testing import LMStudioEmulator

from .conftest import TEXT, MakeEmulator, raw_rpc, raw_socket

if TYPE_CHECKING:
    from websockets.sync.client import ClientConnection

_NESTED = "[" * 100_000 + "]" * 100_000


def _predict(channel_id: int) -> str:
    parameter = {
        "modelSpecifier": {"type": "query", "query": {"identifier": TEXT}},
        "history": {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]},
        "predictionConfigStack": {"layers": []},
    }
    create = {
        "type": "channelCreate",
        "endpoint": "predict",
        "channelId": channel_id,
        "creationParameter": parameter,
    }
    return json.dumps(create)


def _frames_until_closed(ws: ClientConnection, channel_id: int) -> list[dict[str, Any]]:
    """Read frames until ``channel_id`` closes normally (the socket must stay open)."""
    frames: list[dict[str, Any]] = []
    while not any(
        f.get("type") == "channelClose" and f.get("channelId") == channel_id for f in frames
    ):
        frames.append(json.loads(ws.recv(timeout=10)))
    return frames


def _warnings(frames: list[dict[str, Any]]) -> list[str]:
    return [f["warning"] for f in frames if f.get("type") == "communicationWarning"]


@pytest.mark.parametrize(
    ("frame", "warning"),
    [
        (
            {"type": "channelSend", "channelId": [0], "message": {"type": "cancel"}},
            "'channelId' must be an integer, got [0]",
        ),
        (
            {"type": "channelSend", "channelId": {"a": 1}, "message": {"type": "cancel"}},
            "'channelId' must be an integer",
        ),
        (
            {"type": "channelCreate", "endpoint": "predict", "channelId": [7]},
            "'channelId' must be an integer",
        ),
        (
            {"type": "rpcCall", "endpoint": "listLoaded", "callId": "seven"},
            "'callId' must be an integer, got 'seven'",
        ),
        ({"type": "rpcCall", "endpoint": ["x"], "callId": 7}, "'endpoint' must be a string"),
        (_NESTED, "nested deeper than 200 levels"),
        ("[" * 201 + "]" * 201, "nested deeper than 200 levels"),  # json.loads reads it
        ('{"a":' * 300 + "1" + "}" * 300, "nested deeper than 200 levels"),
        ("{not json", "not valid JSON"),
    ],
)
def test_a_malformed_frame_only_warns_and_the_socket_serves_on(
    make_emulator: MakeEmulator, frame: Any, warning: str
) -> None:
    # Before: TypeError (unhashable type) or RecursionError closed the socket with 1011,
    # and the prediction in flight on it never got its channelClose.
    emulator = make_emulator(token_latency=0.005)
    emulator.script(TEXT, [" ".join(f"w{i}" for i in range(100))])
    with raw_socket(emulator, "llm") as ws:
        ws.send(_predict(0))
        emulator.wait_until(lambda: any(p.fragments for p in emulator.predictions))
        ws.send(frame if isinstance(frame, str) else json.dumps(frame))
        frames = _frames_until_closed(ws, 0)
        (text,) = _warnings(frames)
        assert warning in text
        assert not emulator.predictions[0].cancelled
        assert len(emulator.predictions[0].fragments) == 100  # the reply went on to its end
        assert raw_rpc(ws, "listLoaded", 1)["type"] == "rpcResult"
    # The refused frame is no request of the records.
    assert [r.endpoint for r in emulator.requests] == ["predict", "listLoaded"]
    if isinstance(frame, dict):  # a request envelope LM Studio's packet schema refuses
        (violation,) = emulator.protocol_violations
        assert "(the client's request)" in violation
        emulator.reset()  # the fixture checks the guard afterwards


def test_an_integral_float_id_is_read_as_javascript_reads_it(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator()
    with raw_socket(emulator, "llm") as ws:
        ws.send(json.dumps({"type": "rpcCall", "endpoint": "listLoaded", "callId": 4.0}))
        reply = json.loads(ws.recv(timeout=5))
        assert (reply["type"], reply["callId"]) == ("rpcResult", 4)
        assert isinstance(reply["callId"], int)


def test_a_client_callid_of_the_wrong_type_is_blamed_on_the_client(
    make_emulator: MakeEmulator,
) -> None:
    # Before: the callId was echoed in an rpcResult and the guard blamed that reply (the
    # emulator's own frame) for it.
    emulator = make_emulator()
    with raw_socket(emulator, "llm") as ws:
        ws.send(json.dumps({"type": "rpcCall", "endpoint": "listLoaded", "callId": None}))
        assert json.loads(ws.recv(timeout=5))["type"] == "communicationWarning"
    (violation,) = emulator.protocol_violations
    assert violation == "rpcCall (the client's request): 'callId' must be an integer, got None"
    emulator.reset()


def test_a_deeply_nested_auth_packet_is_refused(emu: LMStudioEmulator) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    with connect(f"ws://{emu.api_host}/llm") as ws:
        ws.send(_NESTED)
        reply = json.loads(ws.recv(timeout=5))
        assert reply == {"success": False, "error": "Invalid authentication packet"}
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
        assert ws.close_code == 1008


@pytest.mark.parametrize("origin", ["https://attacker.example", "http://localhost:3000", "null"])
def test_a_web_page_cannot_connect_unless_cors_is_on(
    make_emulator: MakeEmulator, origin: str
) -> None:
    """Found by a probe: any page the user opened could drive a running emulator (list its
    models, upload files, read their paths back): a browser sends an Origin header, which
    the SDKs do not, and applies no same-origin rule to websockets. As LM Studio's CORS
    switch, ``cors=True`` lets pages in."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect
    from websockets.typing import Origin

    closed = make_emulator()
    with (
        pytest.raises(InvalidStatus) as info,
        connect(f"ws://{closed.api_host}/llm", origin=Origin(origin)),
    ):
        pass
    assert info.value.response.status_code == 403
    body = info.value.response.body.decode()
    assert body == (
        f"The LM Studio emulator takes no connections from web pages (Origin: {origin}); "
        "start it with cors=True (CLI: --cors) to allow them.\n"
    )
    opened = make_emulator(cors=True)
    with connect(f"ws://{opened.api_host}/llm", origin=Origin(origin)) as ws:
        packet = {"authVersion": 1, "clientIdentifier": "page", "clientPasskey": "p"}
        ws.send(json.dumps(packet))
        assert json.loads(ws.recv(timeout=5)) == {"success": True}


@pytest.mark.parametrize("cors", [False, True])
def test_two_origin_headers_are_refused_or_taken_as_one(
    make_emulator: MakeEmulator, cors: bool
) -> None:
    """Found by a review: two Origin headers made the check raise (websockets' headers
    refuse ``get`` of a repeated name): an HTTP 500, and a traceback logged. Refused now;
    with ``cors=True``, by websockets' handshake (a repeated Origin is invalid there)."""
    emulator = make_emulator(cors=cors)
    port = int(emulator.api_host.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"GET /llm HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            b"Origin: https://a.example\r\nOrigin: https://b.example\r\n\r\n"
        )
        status = sock.recv(4096).split(b"\r\n", 1)[0]
    assert status == (b"HTTP/1.1 400 Bad Request" if cors else b"HTTP/1.1 403 Forbidden")


def _authenticate(emulator: LMStudioEmulator, client_id: str, passkey: str) -> dict[str, Any]:
    from websockets.sync.client import connect

    with connect(f"ws://{emulator.api_host}/llm") as ws:
        packet = {"authVersion": 1, "clientIdentifier": client_id, "clientPasskey": passkey}
        ws.send(json.dumps(packet))
        reply: dict[str, Any] = json.loads(ws.recv(timeout=5))
        return reply


def test_a_failed_authentication_is_answered_as_lm_studio_answers_it(
    emu: LMStudioEmulator,
) -> None:
    # LM Studio's wsAuthenticationResultSchema: {success: false, error: z.string()}, which
    # lmstudio-js parses (a review: an object there made the TypeScript SDK fail to parse it).
    from websockets.sync.client import connect

    with connect(f"ws://{emu.api_host}/llm") as first:
        first.send(json.dumps({"authVersion": 1, "clientIdentifier": "c", "clientPasskey": "a"}))
        assert json.loads(first.recv(timeout=5)) == {"success": True}
        reply = _authenticate(emu, "c", "another")
    assert reply == {"success": False, "error": "Invalid passkey for client identifier"}


def test_a_client_gone_before_its_auth_reply_leaves_no_passkey(emu: LMStudioEmulator) -> None:
    # Before: its passkey was kept (and counted for no socket) forever, so the same
    # identifier with a new passkey was refused later (48 times in 50 in the probe).
    from websockets.sync.client import connect

    names = [f"gone-{uuid.uuid4()}" for _ in range(30)]
    for name in names:
        with connect(f"ws://{emu.api_host}/llm") as ws:
            ws.send(json.dumps({"authVersion": 1, "clientIdentifier": name, "clientPasskey": "a"}))
    time.sleep(0.3)  # the emulator sees the sockets close
    assert [_authenticate(emu, name, "b")["success"] for name in names] == [True] * len(names)


def test_a_request_without_its_required_parameter_is_refused(make_emulator: MakeEmulator) -> None:
    # Before: a predict without creationParameter was served with model '', and
    # getModelInfo without parameter failed with AttributeError inside the emulator.
    emulator = make_emulator()
    with raw_socket(emulator, "llm") as ws:
        for call_id, endpoint in enumerate(("getModelInfo", "tokenize")):
            reply = raw_rpc(ws, endpoint, call_id)
            assert reply["type"] == "communicationWarning"
            assert reply["warning"].endswith("the required 'parameter' is missing")
        ws.send(json.dumps({"type": "channelCreate", "endpoint": "predict", "channelId": 0}))
        reply = json.loads(ws.recv(timeout=5))
        assert reply["type"] == "communicationWarning"
        assert reply["warning"].endswith("the required 'creationParameter' is missing")
        assert raw_rpc(ws, "listLoaded", 9)["type"] == "rpcResult"  # a void one needs none
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.2)
    assert emulator.predictions == []
    assert [v.split(" (")[0] for v in emulator.protocol_violations] == [
        "llm/getModelInfo rpcCall",
        "llm/tokenize rpcCall",
        "llm/predict channelCreate",
    ]
    emulator.reset()
    emulator.unknown_endpoint = "error"
    with raw_socket(emulator, "llm") as ws:
        reply = raw_rpc(ws, "getModelInfo", 5)
        assert (reply["type"], reply["callId"]) == ("rpcError", 5)
        assert "the required 'parameter' is missing" in reply["error"]["title"]
    emulator.reset()


@pytest.mark.parametrize("sent", [b"", b"GET /llm HTTP/1.1\r\nHost: x\r\n"])
def test_stop_does_not_wait_for_a_connection_still_in_its_handshake(sent: bytes) -> None:
    # Before: stop() took websockets' open_timeout (about 10 s) for such a connection.
    emulator = LMStudioEmulator().start()
    host, port = emulator.api_host.rsplit(":", 1)
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(sent)
        time.sleep(0.2)
        start = time.monotonic()
        emulator.stop()
        assert time.monotonic() - start < 5  # not websockets' open_timeout (10 s)
        assert sock.recv(1024) == b""  # the emulator closed it


@pytest.mark.parametrize(
    ("namespace", "endpoint"),
    [
        ("system", "listDownloadedModelVariants"),
        ("llm", "getBasePredictionConfig"),
        ("embedding", "getInstanceProcessingState"),
    ],
)
def test_a_parameter_that_is_no_object_is_refused_where_the_sdk_has_no_schema(
    make_emulator: MakeEmulator, namespace: str, endpoint: str
) -> None:
    # Endpoints of the TypeScript SDK only: before, a list was served and failed inside
    # the emulator ("'list' object has no attribute 'get'").
    emulator = make_emulator()
    with raw_socket(emulator, namespace) as ws:
        reply = raw_rpc(ws, endpoint, 0, [1])
        assert reply["type"] == "communicationWarning"
        assert "Expected `object`, got `array`" in reply["warning"]
    (violation,) = emulator.protocol_violations
    assert violation.startswith(f"{namespace}/{endpoint} rpcCall (the client's request): ")
    emulator.reset()


def _raw_upgrade(host: str) -> socket.socket:
    """A socket of a client that speaks websocket by hand, with a tiny receive buffer."""
    import base64
    import os

    name, port = host.rsplit(":", 1)
    sock = socket.create_connection((name, int(port)))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /llm HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    assert b" 101 " in sock.recv(1024)
    return sock


def _masked(text: str) -> bytes:
    data = text.encode()
    size = bytes([0x80 | len(data)]) if len(data) < 126 else b"\xfe" + len(data).to_bytes(2, "big")
    return b"\x81" + size + b"\0\0\0\0" + data  # a zero mask leaves the payload as it is


def test_a_client_that_reads_no_reply_is_read_no_further_and_stop_is_prompt() -> None:
    """Found by a probe: 100,000 requests sent and no reply read grew the emulator to 1 GB
    (a task holding each reply), and stop() then hung past its 15 s."""
    import threading

    import lmstudio as lms

    emulator = LMStudioEmulator().start()
    sock = _raw_upgrade(emulator.api_host)
    auth = {"authVersion": 1, "clientIdentifier": "lazy", "clientPasskey": "p"}
    sock.sendall(_masked(json.dumps(auth)))
    calls = b"".join(
        _masked(json.dumps({"type": "rpcCall", "endpoint": "listLoaded", "callId": i}))
        for i in range(200_000)
    )
    sock.settimeout(20)
    sender = threading.Thread(target=lambda: _send_ignoring_errors(sock, calls), daemon=True)
    sender.start()
    try:
        time.sleep(3)
        read = len(emulator.requests)
        assert read < 150_000, read  # paused once replies pile up, not all 200,000 served
        with lms.Client(emulator.api_host) as client:  # other clients are served meanwhile
            assert [m.identifier for m in client.llm.list_loaded()]
        start = time.monotonic()
        emulator.stop()
        assert time.monotonic() - start < 8
    finally:
        sock.close()
        emulator.stop()


def _send_ignoring_errors(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the emulator stopped, or the send timed out
        sock.sendall(data)


def test_a_channel_ended_by_an_error_is_forgotten(emu: LMStudioEmulator) -> None:
    """Found by mutation testing: nothing checked that a channel ended by ``channelError`` is
    gone, as after ``channelClose``: a later ``channelSend`` on it is answered with a warning
    (LM Studio's "unknown channel"), not taken as a message to a live channel."""
    parameter = {
        "modelSpecifier": {"type": "query", "query": {"identifier": "no-such-model"}},
        "history": {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]},
        "predictionConfigStack": {"layers": []},
    }
    with raw_socket(emu, "llm") as ws:
        ws.send(
            json.dumps(
                {
                    "type": "channelCreate",
                    "endpoint": "predict",
                    "channelId": 1,
                    "creationParameter": parameter,
                }
            )
        )
        ended = json.loads(ws.recv(timeout=5))
        assert (ended["type"], ended["channelId"]) == ("channelError", 1)
        ws.send(json.dumps({"type": "channelSend", "channelId": 1, "message": {"type": "cancel"}}))
        assert json.loads(ws.recv(timeout=5)) == {
            "type": "communicationWarning",
            "warning": "Received channelSend for unknown channel, channelId = 1",
        }


def test_a_connection_gets_five_warnings_at_most(emu: LMStudioEmulator) -> None:
    """lmstudio-js's ``ServerPort`` (one a connection) sends five ``communicationWarning``
    frames, then no more. The emulator warned of each, so a client that left many streams at
    their end logged an ERROR for each (LM Studio: five). The text is LM Studio's."""
    with raw_socket(emu, "llm") as ws:
        for channel_id in range(8):
            cancel = {"type": "channelSend", "channelId": channel_id, "message": {"type": "cancel"}}
            ws.send(json.dumps(cancel))
        ws.send(json.dumps({"type": "channelAck", "channelId": 99, "ackId": 0}))
        frames = [raw_rpc(ws, "listLoaded", 1)]  # the warnings come first, or around it
        with contextlib.suppress(TimeoutError):
            while True:
                frames.append(json.loads(ws.recv(timeout=1)))
    assert [f["type"] for f in frames].count("rpcResult") == 1
    assert _warnings(frames) == [
        f"Received channelSend for unknown channel, channelId = {n}" for n in range(5)
    ]
    with raw_socket(emu, "llm") as ws:  # a connection of its own: five again
        ws.send(json.dumps({"type": "channelAck", "channelId": 99, "ackId": 0}))
        assert json.loads(ws.recv(timeout=5)) == {
            "type": "communicationWarning",
            "warning": "Received channelAck for unknown channel, channelId = 99",
        }


@pytest.mark.parametrize("path", ["/v1/models", "/lmm", "/llm/x"])
def test_a_path_that_is_no_lm_studio_namespace_is_refused_with_404(
    emu: LMStudioEmulator, path: str
) -> None:
    """Found by mutation testing: nothing checked that a path that is no LM Studio namespace
    (an OpenAI client's ``/v1/...``, a typo) gets HTTP 404, plain or as a websocket; without
    the check a websocket to ``/lmm`` was accepted and each request warned of as unknown."""
    import httpx
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    plain = httpx.get(f"http://{emu.api_host}{path}", timeout=5)
    assert (plain.status_code, plain.text) == (404, "Not an LM Studio API path\n")
    with pytest.raises(InvalidStatus) as refused, connect(f"ws://{emu.api_host}{path}"):
        pass
    assert refused.value.response.status_code == 404
