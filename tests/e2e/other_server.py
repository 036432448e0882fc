"""Servers that are not LM Studio, on a port of the tests' choosing.

Another program on LM Studio's port (a web app answering every path with 200 and HTML) is
what made the SDK's probe raise ``JSONDecodeError`` (found by a probe); one that streams
(200, chunked, a byte every half second) held the probe for good; one that answers LM
Studio's greeting but whose websocket never replies held the demo. Used by the tests and
by ``discovery_scenario.py``, which runs as a script in a private network.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Literal

from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.sync.server import ServerConnection, serve

__all__ = [
    "name_has_no_address",
    "serving_fake_lmstudio",
    "serving_html",
    "serving_long_greeting",
    "serving_silence",
    "serving_stream",
    "serving_trickled_headers",
]


class _WebApp(http.server.BaseHTTPRequestHandler):
    """HTML for every path, with the server's ``status`` (200 unless told)."""

    def do_GET(self) -> None:
        body = b"<html>hello</html>"
        self.send_response(getattr(self.server, "status", 200))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def _serving(
    handler: type[http.server.BaseHTTPRequestHandler], port: int, **read: object
) -> Iterator[int]:
    """Serve ``handler`` on ``127.0.0.1:port`` (a free port for 0) in a thread; yield the port.

    ``read``: attributes of the server its handlers read (``status``, ``size``); ``stopping``
    is set when the block ends, for handlers that would answer for ever.
    """
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    vars(server).update(read)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.stopping = True  # type: ignore[attr-defined]  # read by the handlers
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def serving_html(port: int = 0, status: int = 200) -> Iterator[int]:
    """Serve HTML on ``127.0.0.1:port`` (a free port for 0) in a thread; yield the port.

    Every answer has ``status``: 404 is a web server without LM Studio's greeting's path.
    """
    with _serving(_WebApp, port, status=status) as served:
        yield served


class _LongGreeting(http.server.BaseHTTPRequestHandler):
    """LM Studio's greeting padded to the server's ``size`` bytes: 200, JSON, its length given."""

    def do_GET(self) -> None:
        size: int = self.server.size  # type: ignore[attr-defined]  # set by serving_long_greeting
        start = b'{"lmstudio": true, "padding": "'
        body = start + b"x" * (size - len(start) - 2) + b'"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(OSError):  # the client went away before the end
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serving_long_greeting(size: int, port: int = 0) -> Iterator[int]:
    """Serve a ``size``-byte greeting on ``127.0.0.1:port`` (a free port for 0); yield the port."""
    with _serving(_LongGreeting, port, size=size) as served:
        yield served


class _Stream(http.server.BaseHTTPRequestHandler):
    """An endless chunked answer (server-sent events), a byte every half second.

    With the server's ``status`` (200 unless told).
    """

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(getattr(self.server, "status", 200))
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        with contextlib.suppress(OSError):  # the client went away
            while not getattr(self.server, "stopping", False):
                self.wfile.write(b"1\r\n:\r\n")
                self.wfile.flush()
                time.sleep(0.5)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serving_stream(port: int = 0, status: int = 200) -> Iterator[int]:
    """Serve an endless stream on ``127.0.0.1:port`` (a free port for 0); yield the port."""
    with _serving(_Stream, port, status=status) as served:
        yield served


@contextlib.contextmanager
def serving_fake_lmstudio(
    websocket: Literal["silent", "close", "refused"], port: int = 0
) -> Iterator[int]:
    """Answer LM Studio's greeting, with a websocket that never replies or closes at once.

    ``refused``: no websocket, HTTP 404 to its handshake (a web server with a file at the
    greeting's path).

    Yields the port (a free one for 0).
    """
    greeting = json.dumps({"lmstudio": True}).encode()

    def greet(connection: ServerConnection, request: Request) -> Response | None:
        if request.path != "/lmstudio-greeting":
            if websocket == "refused":
                return Response(404, "Not Found", Headers([("Content-Length", "0")]), b"")
            return None  # the websocket handshake
        headers = Headers([("Content-Type", "application/json")])
        headers["Content-Length"] = str(len(greeting))
        return Response(200, "OK", headers, greeting)

    def handle(connection: ServerConnection) -> None:
        if websocket == "close":
            connection.close()
            return
        with contextlib.suppress(Exception):  # silent: read, never reply
            for _ in connection:
                pass

    with serve(handle, "127.0.0.1", port, process_request=greet) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield server.socket.getsockname()[1]
        finally:
            server.shutdown()


@contextlib.contextmanager
def serving_silence(port: int = 0) -> Iterator[int]:
    """Take connections on ``127.0.0.1:port`` and never answer (the kernel accepts them)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen(16)
        yield listener.getsockname()[1]


@contextlib.contextmanager
def serving_trickled_headers(port: int = 0) -> Iterator[int]:
    """Answer ``200 OK``, then one header line every half second, for good; yield the port."""
    stop = threading.Event()

    def trickle(listener: socket.socket) -> None:
        with contextlib.suppress(OSError):
            connection, _ = listener.accept()
            with connection:
                connection.recv(4096)
                connection.sendall(b"HTTP/1.1 200 OK\r\n")
                while not stop.wait(0.5):
                    connection.sendall(b"X-More: yes\r\n")

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen(4)
        threading.Thread(target=trickle, args=(listener,), daemon=True).start()
        try:
            yield listener.getsockname()[1]
        finally:
            stop.set()


def name_has_no_address(name: str) -> bool:
    """Whether this machine's resolver says ``name`` has no address.

    A ``.invalid`` name never has one (RFC 6761); a machine with no resolver to ask cannot
    say so (``EAI_AGAIN``), and a test then checks that nothing is claimed of the name.
    """
    codes = ("EAI_NONAME", "EAI_NODATA", "EAI_ADDRFAMILY")  # as the library reads them
    try:
        socket.getaddrinfo(name, 1234)
    except socket.gaierror as exc:
        return exc.errno in {getattr(socket, code) for code in codes if hasattr(socket, code)}
    return False
