"""A web server that is not LM Studio, on a port of the tests' choosing.

Another program on LM Studio's port (a web app answering every path with 200 and HTML) is
what made the SDK's probe raise ``JSONDecodeError`` (found by a probe). Used by the tests
and by ``discovery_scenario.py``, which runs as a script in a private network.
"""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator

__all__ = ["serving_html"]


class _WebApp(http.server.BaseHTTPRequestHandler):
    """200 and HTML for every path."""

    def do_GET(self) -> None:
        body = b"<html>hello</html>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serving_html(port: int = 0) -> Iterator[int]:
    """Serve HTML on ``127.0.0.1:port`` (a free port for 0) in a thread; yield the port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _WebApp)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
