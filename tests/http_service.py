"""A loopback HTTP service that tests can stop and start again on the same port, and the
quiet request handlers that loopback servers of tests and benchmarks answer with."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PROMETHEUS_TEXT = "text/plain; version=0.0.4"  # the exposition format's Content-Type


class QuietHandler(BaseHTTPRequestHandler):
    """A handler that answers with `reply` and writes no log lines (test output stays quiet)."""

    def reply(self, status: int, body: bytes = b"", content_type: str | None = None) -> None:
        self.send_response(status)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def text_handler(
    body: Callable[[], bytes], content_type: str | None = None
) -> type[QuietHandler]:
    """A handler answering every GET with 200 and `body()`, as of that request."""

    class TextHandler(QuietHandler):
        def do_GET(self) -> None:
            self.reply(200, body(), content_type)

    return TextHandler


_Handler = text_handler(lambda: b"ok\n")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class HttpService:
    """`start()` / `stop()` a real server on a fixed loopback port; stopped means refused.

    Its thread looks every `poll_interval` seconds whether it should stop; until then new
    connections wait in the backlog, to be refused only at the close."""

    def __init__(
        self,
        port: int | None = None,
        handler: type[BaseHTTPRequestHandler] = _Handler,
        poll_interval: float = 0.5,
    ) -> None:
        self.port = port or free_port()
        self.handler = handler
        self.poll_interval = poll_interval
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self.handler)
        threading.Thread(
            target=self._server.serve_forever, args=(self.poll_interval,), daemon=True
        ).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
