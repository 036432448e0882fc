"""One websocket connection: authentication, envelopes, dispatch and faults.

The SDK multiplexes calls on one socket per namespace: ``rpcCall`` (one
request, one reply) and ``channelCreate`` (a stream, which the client may
``cancel`` with ``channelSend``). Call and channel ids are per socket, so
state is keyed by (connection, id). Every request runs in its own task, so
a hanging or slow request never blocks the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import TYPE_CHECKING, Any

from outlines_lmstudio.testing._drift import (
    check_incoming,
    check_outgoing,
    check_request_ids,
    refused_by_lm_studio,
)
from outlines_lmstudio.testing._endpoints import CHANNEL_HANDLERS, RPC_HANDLERS
from outlines_lmstudio.testing._faults import Fault
from outlines_lmstudio.testing._lookup import request_names
from outlines_lmstudio.testing._records import RecordedRequest
from outlines_lmstudio.testing._state import EmulatorState
from outlines_lmstudio.testing._surface import CHANNELS, RPCS
from outlines_lmstudio.testing._wire import Channel, ConnectionDropped, RequestError, server_error

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

__all__ = ["MAX_DEPTH", "Connection", "internal_error", "read_frame"]

MAX_DEPTH = 200
"""Deepest nesting of a client's frame the emulator reads; a deeper one gets a warning.

The records, the drift guard and the handlers walk frames recursively, and so does
`json.loads`: a frame of ``"[" * 100000`` raised `RecursionError`, which closed the
socket (1011) with every prediction on it (found by a probe). No request of the SDKs
comes near this depth.
"""


def read_frame(raw: str | bytes) -> tuple[Any, str | None]:
    """Parse one client frame; return it, or None and why it cannot be read."""
    too_deep = f"Received a frame nested deeper than {MAX_DEPTH} levels"
    try:
        message = json.loads(raw)
    except ValueError:
        return None, "Received a frame that is not valid JSON"
    except RecursionError:  # `json.loads` stops near 1000 levels
        return None, too_deep
    # Measured without recursion, for the reason of `MAX_DEPTH`.
    level: list[tuple[Any, int]] = [(message, 1)]
    while level:
        value, depth = level.pop()
        if depth > MAX_DEPTH:
            return None, too_deep
        # Containers only: a pair per scalar made a flat array of 10 million numbers cost
        # gigabytes here (found by a probe).
        if isinstance(value, dict):
            level.extend((i, depth + 1) for i in value.values() if isinstance(i, dict | list))
        elif isinstance(value, list):
            level.extend((i, depth + 1) for i in value if isinstance(i, dict | list))
    if not isinstance(message, dict):
        return message, "Received a frame that is not a JSON object"
    return message, None


MAX_SENDING = 64
"""Most replies of one socket waiting to go out before it reads no more of its requests.

A client that sends requests and never reads the replies had one task per request, each
holding its reply, without end (found by a probe: 100,000 requests, 1 GB, and a stop that
hung): the socket is read again once its client takes some of them. A client that reads
never comes near it (each channel sends one frame at a time)."""


WARNINGS_LIMIT = 5
"""Most ``communicationWarning`` frames LM Studio sends on one connection: lmstudio-js's
``ServerPort`` (one a connection) sends five, then logs "5 communication warnings have been
produced. Further warnings will not be printed." and sends no more."""


class Connection:
    """Serves one authenticated websocket of one SDK client."""

    def __init__(
        self, emulator: EmulatorState, ws: ServerConnection, namespace: str, sid: int
    ) -> None:
        self.emu = emulator
        self.ws = ws
        self.namespace = namespace
        self.sid = sid
        self.client_id = ""
        self.channels: dict[int, Channel] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.sending = 0  # replies waiting in `send` (see `MAX_SENDING`)
        self._drained = asyncio.Event()
        self.closed = False
        self.counted = False  # whether `authenticate` counted this socket for its client
        self.warnings = 0  # ``communicationWarning`` frames sent (see `WARNINGS_LIMIT`)

    # -- sending ------------------------------------------------------------------

    async def send(
        self, frame: dict[str, Any], endpoint: str | None, kind: str, channel: Channel | None = None
    ) -> None:
        """Send one frame (recording it, and checking it when the guard is on).

        A frame of a ``channel`` opened before the last reset (an earlier test's prediction
        ending) is sent and checked, but not recorded: the trace is this test's (found by a
        probe: the frames that ended one test's prediction were in the next test's trace).
        """
        if self.closed:
            raise ConnectionDropped
        emu = self.emu
        if channel is None or channel.epoch == emu._epoch:
            emu._recorder.frame("out", self.namespace, self.sid, frame)
        if emu.validate_frames:
            for problem in check_outgoing(self.namespace, endpoint, kind, frame):
                emu._violation(problem)
        self.sending += 1
        try:
            await self.ws.send(json.dumps(frame))
        finally:
            self.sending -= 1
            if self.sending < MAX_SENDING:
                self._drained.set()

    async def warn(self, text: str) -> None:
        """Send a ``communicationWarning`` (the SDK logs it and moves on), up to the limit.

        See `WARNINGS_LIMIT`: past it, LM Studio sends nothing, and neither does this.
        """
        if self.warnings >= WARNINGS_LIMIT:
            return
        self.warnings += 1
        await self.send({"type": "communicationWarning", "warning": text}, None, "rpc")

    async def channel_send(self, channel: Channel, message: dict[str, Any]) -> None:
        """Send one ``channelSend`` packet on ``channel``."""
        frame = {"type": "channelSend", "channelId": channel.id, "message": message}
        await self.send(frame, channel.endpoint, "channel", channel)

    async def channel_close(self, channel: Channel) -> None:
        """End ``channel`` normally."""
        channel.finished = True
        self.channels.pop(channel.id, None)
        await self.send(
            {"type": "channelClose", "channelId": channel.id}, channel.endpoint, "channel", channel
        )

    async def channel_error(self, channel: Channel, error: dict[str, Any]) -> None:
        """End ``channel`` with an error (no ``channelClose`` follows)."""
        channel.finished = True
        self.channels.pop(channel.id, None)
        frame = {"type": "channelError", "channelId": channel.id, "error": error}
        await self.send(frame, channel.endpoint, "channel", channel)

    async def pause(self) -> None:
        """Wait for one round trip to the client, so a ``cancel`` it sent is read in time.

        With no token latency the emulator would otherwise write a whole reply
        before the client's reaction to its first fragment arrives. A websocket
        ping is answered after the frames sent before it, so a cancel the client
        sent on seeing a fragment is read before the next ones. (Keeping a ping in
        flight instead of waiting for each was faster, but let about 1 in 180 sync
        cancels arrive after the reply's end.) Bounded: a client that does not
        answer pings slows the stream to one fragment per second.
        """
        waiter = await self.ws.ping()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter, timeout=1.0)

    def abort(self) -> None:
        """Close the TCP connection abruptly, without a websocket close frame."""
        self.closed = True
        transport = self.ws.transport
        if transport is not None:
            transport.abort()

    # -- receiving ----------------------------------------------------------------

    async def authenticate(self) -> bool:
        """Read the auth packet and answer it (first passkey wins per client id)."""
        packet, _ = read_frame(await self.ws.recv())
        self.emu._recorder.frame("in", self.namespace, self.sid, packet)
        ok, error = False, "Invalid authentication packet"
        if isinstance(packet, dict) and packet.get("authVersion") == 1:
            client_id = packet.get("clientIdentifier")
            passkey = packet.get("clientPasskey")
            if isinstance(client_id, str) and isinstance(passkey, str):
                ok = self.counted = self.emu._authenticate(client_id, passkey)
                error = "Invalid passkey for client identifier"
                self.client_id = client_id
        # A string, as LM Studio's `wsAuthenticationResultSchema` has it (lmstudio-js parses
        # the reply with it). The Python SDK 1.5 builds its error with dict() of the string
        # and raises "dictionary update sequence element #0..." against LM Studio too.
        reply: dict[str, Any] = {"success": True} if ok else {"success": False, "error": error}
        self.emu._recorder.frame("out", self.namespace, self.sid, reply)
        await self.ws.send(json.dumps(reply))
        return ok

    async def serve(self) -> None:
        """Dispatch frames until the socket closes, then clean up."""
        try:
            async for raw in self.ws:
                while self.sending >= MAX_SENDING:  # its client reads none of the replies
                    self._drained.clear()
                    await self._drained.wait()
                self.dispatch(raw)
        finally:
            self.closed = True
            for task in list(self.tasks):
                task.cancel()
            if self.tasks:
                await asyncio.gather(*self.tasks, return_exceptions=True)

    def _of_an_earlier_test(self, message: object) -> bool:
        """Whether ``message`` is on a channel opened before the last reset (see `send`)."""
        if not isinstance(message, dict):
            return False
        channel_id = message.get("channelId")
        channel = self.channels.get(channel_id) if isinstance(channel_id, int) else None
        return channel is not None and channel.epoch != self.emu._epoch

    def dispatch(self, raw: str | bytes) -> None:
        """Handle one incoming frame."""
        message, unreadable = read_frame(raw)
        if not self._of_an_earlier_test(message):
            self.emu._recorder.frame("in", self.namespace, self.sid, message)
        if unreadable is not None or not isinstance(message, dict):
            self.spawn(self.warn(unreadable or "Received a frame that is not a JSON object"))
            return
        # The ids' types are checked once, here: a list or object as a channelId was looked
        # up in a dict and raised TypeError, which closed the socket (found by a probe).
        # LM Studio's packet schema refuses such a packet with a warning, serving nothing.
        bad_ids = check_request_ids(message)
        if bad_ids:
            if self.emu.validate_frames:
                for problem in bad_ids:
                    self.emu._violation(problem)
            self.spawn(self.warn(f"Received an invalid packet: {'; '.join(bad_ids)}"))
            return
        for key in ("callId", "channelId"):
            if isinstance(message.get(key), float):  # 3.0: JavaScript's integer 3
                message[key] = int(message[key])
        # LM Studio checks a request's parameter against its schema before serving it; the
        # SDK's structs carry the same constraints (``ttlMs`` at least 1, for example). What
        # LM Studio reads differently (``1500.0`` as ``1500``) is served, and no violation.
        problems = check_incoming(self.namespace, message)
        problems = refused_by_lm_studio(self.namespace, message, problems)
        if self.emu.validate_frames:
            for problem in problems:
                self.emu._violation(problem)
        kind = message.get("type")
        if kind == "rpcCall":
            self.record(message, "rpc", message.get("parameter"))
            self.spawn(self.invalid(message, problems) if problems else self.rpc(message))
        elif kind == "channelCreate":
            self.record(message, "channel", message.get("creationParameter"))
            if problems:
                self.spawn(self.invalid(message, problems))
            else:
                self.spawn(self.channel(message, self.open_channel(message)))
        elif kind == "channelSend":
            self.channel_message(message)
        elif kind == "channelAck":
            if message.get("channelId") not in self.channels:  # acks are not used otherwise
                self.spawn(self.warn(_unknown_channel("channelAck", message)))
        elif kind == "communicationWarning":
            pass  # LM Studio only logs a client's warning; answering it would loop
        else:
            self.spawn(self.warn(f"Unsupported message type {kind!r}"))

    def record(self, message: dict[str, Any], kind: Any, parameter: Any) -> None:
        """Add a request to the records."""
        request = RecordedRequest(
            namespace=self.namespace,
            endpoint=str(message.get("endpoint")),
            kind=kind,
            parameter=self.emu._recorder.parameter(parameter),
            client_id=self.client_id,
            time=time.monotonic(),
        )
        with self.emu._recorder.lock:
            self.emu._recorder.requests.append(request)

    def spawn(self, coro: Any) -> None:
        """Run a request handler as its own task.

        A task cancelled before its first step (the socket closed right after the request
        came) never awaits the handler: it is closed then, or Python warns at collection
        that it was never awaited (seen in a full test run, where that warning is an error).
        """
        task: asyncio.Task[None] = asyncio.ensure_future(self._guard(coro))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        task.add_done_callback(lambda _: coro.close())  # a no-op once it has run

    async def _guard(self, coro: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        with contextlib.suppress(ConnectionClosed, ConnectionDropped, asyncio.CancelledError):
            await coro

    def channel_message(self, message: dict[str, Any]) -> None:
        """Handle ``channelSend`` from the client: ``cancel``, or ``stop`` (``streamLogs``)."""
        channel = self.channels.get(message["channelId"])  # an integer: `check_request_ids`
        if channel is None:
            self.spawn(self.warn(_unknown_channel("channelSend", message)))
            return
        payload = message.get("message")
        if isinstance(payload, dict) and payload.get("type") in ("cancel", "stop"):
            channel.cancelled = True
            channel.cancel_event.set()
            self.emu._on_cancel(self, channel)

    # -- requests -----------------------------------------------------------------

    async def apply_fault(self, fault: Fault, names: tuple[str, ...]) -> bool:
        """Apply a fault before serving; return False if the request must not be served."""
        if fault.kind == "delay":
            await asyncio.sleep(fault.seconds)
        elif fault.kind == "unload":
            self.emu._unload_names(names, self.namespace)
        elif fault.kind == "drop":
            self.abort()
            return False
        elif fault.kind == "hang":
            await asyncio.Event().wait()  # cancelled when the socket closes
        return True

    async def rpc(self, message: dict[str, Any]) -> None:
        """Serve one ``rpcCall``."""
        call_id = message.get("callId")
        endpoint = str(message.get("endpoint"))
        parameter = message.get("parameter")
        handler = RPC_HANDLERS.get((self.namespace, endpoint))
        if handler is None:
            known = endpoint in RPCS.get(self.namespace, ())
            await self.unknown_endpoint(endpoint, call_id, None, known=known)
            return
        try:  # the lookups too: whatever fails must be answered (found by a probe)
            names = request_names(self.emu, self.namespace, parameter)
            fault = self.emu._faults.take(endpoint, names)
            if fault is not None:
                if fault.kind == "error":
                    raise server_error(fault.message)
                if not await self.apply_fault(fault, names):
                    return
            result = await handler(self, parameter)
        except RequestError as exc:
            frame: dict[str, Any] = {"type": "rpcError", "callId": call_id, "error": exc.error}
        except (ConnectionDropped, asyncio.CancelledError):
            raise
        except Exception as exc:  # a handler bug must still answer: the client would wait
            frame = {"type": "rpcError", "callId": call_id, "error": internal_error(exc)}
        else:
            frame = {"type": "rpcResult", "callId": call_id}
            if result is not None:
                frame["result"] = result
        await self.send(frame, endpoint, "rpc")

    def open_channel(self, message: dict[str, Any]) -> Channel | None:
        """Register the channel a ``channelCreate`` opens, as its frame is read.

        The socket is ordered: a ``channelSend`` (a cancel) right behind the create must
        find the channel, even before the task serving it has started.
        """
        channel_id: int = message["channelId"]  # an integer: `check_request_ids`
        endpoint: str = message["endpoint"]
        if (self.namespace, endpoint) not in CHANNEL_HANDLERS:
            return None
        channel = self.channels[channel_id] = Channel(channel_id, endpoint, epoch=self.emu._epoch)
        return channel

    async def channel(self, message: dict[str, Any], channel: Channel | None) -> None:
        """Serve one ``channelCreate``, whose channel `open_channel` registered (if valid)."""
        channel_id: int = message["channelId"]  # an integer: `check_request_ids`
        endpoint: str = message["endpoint"]
        handler = CHANNEL_HANDLERS.get((self.namespace, endpoint))
        if handler is None or channel is None:
            known = endpoint in CHANNELS.get(self.namespace, ())
            await self.unknown_endpoint(endpoint, None, Channel(channel_id, endpoint), known=known)
            return
        parameter = message.get("creationParameter")
        try:  # the lookups too: whatever fails must be answered (found by a probe)
            names = request_names(self.emu, self.namespace, parameter)
            fault = self.emu._faults.take(endpoint, names)
            if fault is not None and endpoint != "predict":
                if fault.kind == "error":
                    raise server_error(fault.message)
                if not await self.apply_fault(fault, names):
                    return
                fault = None
            await handler(self, channel, parameter if isinstance(parameter, dict) else {}, fault)
        except RequestError as exc:
            if not channel.finished:
                await self.channel_error(channel, exc.error)
        except (ConnectionDropped, asyncio.CancelledError):
            raise
        except Exception as exc:  # a handler bug must still answer: the client would wait
            if not channel.finished:
                await self.channel_error(channel, internal_error(exc))
        else:
            if not channel.finished:
                await self.channel_close(channel)

    async def invalid(self, message: dict[str, Any], problems: list[str]) -> None:
        """Answer a request whose parameter breaks its schema, as LM Studio does.

        LM Studio sends only a ``communicationWarning`` and never serves it (the caller
        waits), unless ``unknown_endpoint="error"``, which answers with an error instead.
        """
        endpoint = str(message.get("endpoint"))
        what = "parameter" if message.get("type") == "rpcCall" else "creationParameter"
        text = f"Received invalid {what}: {'; '.join(problems)}"
        if self.emu.unknown_endpoint == "warning":
            await self.warn(text)
            return
        error = {"title": text, "suggestion": "LM Studio does not serve it either."}
        if message.get("type") == "rpcCall":
            await self.refuse(endpoint, error, call_id=message.get("callId"))
        else:
            await self.refuse(endpoint, error, channel_id=message["channelId"])

    async def unknown_endpoint(
        self, endpoint: str, call_id: Any, channel: Channel | None, *, known: bool
    ) -> None:
        """Answer a request for an endpoint the emulator does not serve.

        An endpoint LM Studio has (`_surface`) gets an error reply, so no client waits.
        An endpoint LM Studio does not know gets only a ``communicationWarning``, as
        LM Studio does (the caller waits), unless ``unknown_endpoint="error"``.
        """
        if known:
            error = {
                "title": f"The LM Studio emulator does not implement {self.namespace}/{endpoint}",
                "cause": "LM Studio serves this endpoint; the emulator does not emulate it.",
                "suggestion": "Run this against LM Studio itself.",
            }
        else:
            text = f"Unknown endpoint {endpoint!r} on namespace {self.namespace!r}"
            if self.emu.unknown_endpoint == "warning":
                await self.warn(text)  # what LM Studio does: the caller waits for a reply
                return
            error = {"title": text, "suggestion": "LM Studio does not serve it either."}
        if channel is None:
            await self.refuse(endpoint, error, call_id=call_id)
        else:
            await self.refuse(endpoint, error, channel_id=channel.id)

    async def refuse(
        self,
        endpoint: str,
        error: dict[str, Any],
        *,
        call_id: Any = None,
        channel_id: int | None = None,
    ) -> None:
        """Answer a request with ``error``: an ``rpcError``, or a channel's ``channelError``."""
        if channel_id is None:
            frame = {"type": "rpcError", "callId": call_id, "error": error}
            await self.send(frame, endpoint, "rpc")
        else:
            frame = {"type": "channelError", "channelId": channel_id, "error": error}
            await self.send(frame, endpoint, "channel")


def internal_error(exc: Exception) -> dict[str, Any]:
    """Build the error object for a handler that failed (an emulator bug, or bad input)."""
    return {
        "title": f"The LM Studio emulator failed to serve this request: {exc!r}",
        "cause": type(exc).__name__,
    }


def _unknown_channel(kind: str, message: dict[str, Any]) -> str:
    """LM Studio's warning for a ``kind`` frame on a channel not open (``ServerPort``)."""
    return f"Received {kind} for unknown channel, channelId = {message.get('channelId')}"
