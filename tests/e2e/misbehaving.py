"""Servers on loopback that misbehave in ways the emulator cannot: they hang the client.

Each runs on an event loop in a thread of its own and answers LM Studio's HTTP greeting
(``GET /lmstudio-greeting``), so the SDK takes it for LM Studio, then:

- ``"no-auth"``: completes the websocket handshake and never answers the auth packet;
- ``"silent"``: authenticates, then never answers anything;
- ``"mute"``: a plain TCP listener that accepts and never sends a byte (not even HTTP);
- ``"odd-lookup"``: authenticates, then closes every channel it is asked to open (a model
  lookup gets no answer but a close);
- ``"dribble"``: answers the websocket's opening with a ``101`` head whose headers never end,
  a byte every half second (no read timeout of the client's HTTP library fires);
- ``"no-repository"``: authenticates the sessions an ``AsyncClient`` opens first
  (``/embedding``, ``/files``, ``/llm``) and refuses the later ones' opening (HTTP 503):
  the client is left half entered, with its model session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from http import HTTPStatus
from types import TracebackType
from typing import Any, Literal, Self

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

_FIRST_SESSIONS = ("/embedding", "/files", "/llm")

Mode = Literal["no-auth", "silent", "mute", "odd-lookup", "dribble", "no-repository"]


class Misbehaving:
    """A misbehaving server (see the module docstring); a context manager."""

    def __init__(self, mode: Mode) -> None:
        self.mode = mode
        self.auths = 0  # auth packets received
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: Server | asyncio.Server | None = None
        self._writers: list[Any] = []

    @property
    def api_host(self) -> str:
        assert self._server is not None
        return f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def __enter__(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        if self.mode == "mute":
            self._server = await asyncio.start_server(self._mute, "127.0.0.1", 0)
        elif self.mode == "dribble":
            self._server = await asyncio.start_server(self._dribble, "127.0.0.1", 0)
        else:
            self._server = await serve(
                self._websocket, "127.0.0.1", 0, process_request=self._greeting
            )

    async def _stop(self) -> None:
        assert self._server is not None
        for writer in self._writers:
            writer.close()
        self._server.close()
        await self._server.wait_closed()

    async def _mute(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        await reader.read()  # until the client gives up

    async def _dribble(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        head = await reader.readuntil(b"\r\n\r\n")
        if head.startswith(b"GET /lmstudio-greeting "):
            body = b'{"lmstudio": true}'
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n"
                + body
            )
            await writer.drain()
            writer.close()
            return
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nX-Slow: ")
        with contextlib.suppress(ConnectionError):
            while not writer.is_closing():
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(0.5)

    def _greeting(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path == "/lmstudio-greeting":
            return connection.respond(HTTPStatus.OK, '{"lmstudio": true}')
        if self.mode == "no-repository" and request.path not in _FIRST_SESSIONS:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "no more sessions")
        return None

    async def _websocket(self, connection: ServerConnection) -> None:
        await connection.recv()  # the auth packet
        self.auths += 1
        if self.mode in ("silent", "odd-lookup", "no-repository"):
            await connection.send('{"success": true}')
        async for message in connection:  # read; answer only an odd lookup
            request = json.loads(message)
            if self.mode == "odd-lookup" and request.get("type") == "channelCreate":
                closing = {"type": "channelClose", "channelId": request["channelId"]}
                await connection.send(json.dumps(closing))
