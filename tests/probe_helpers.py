"""What the probe tests share: reading samples back, and real loopback servers.

`by_metric`, `only` and `values` read a probe's samples back. `TcpServer(talk)` runs
`talk(conn, stopping)` on each connection it accepts; `LoopbackHttpServer(Handler)` answers
HTTP(S) with a `QuietHandler` subclass. Both listen on a free loopback port and stop on `stop()`
or at the end of a `with` block.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from probes.base import Sample

Talk = Callable[[socket.socket, threading.Event], None]


def by_metric(samples: list[Sample]) -> dict[str, list[Sample]]:
    grouped: dict[str, list[Sample]] = {}
    for sample in samples:
        grouped.setdefault(sample.metric, []).append(sample)
    return grouped


def only(samples: list[Sample], metric: str) -> Sample:
    [sample] = by_metric(samples)[metric]
    return sample


def values(samples: list[Sample]) -> dict[str, float]:
    return {s.metric: s.value for s in samples}


class TcpServer:
    """A loopback TCP server running `talk` on each connection in a thread of its own, through
    TLS when given a `context`. `stopping` is set at `stop()`: a talk that waits ends then."""

    def __init__(self, talk: Talk, context: ssl.SSLContext | None = None) -> None:
        self.talk, self.context = talk, context
        self.stopping = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.listener.settimeout(0.05)
        self.accepting = threading.Thread(target=self._accept, daemon=True)
        self.accepting.start()

    def __enter__(self) -> TcpServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                conn, _ = self.listener.accept()
                threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:  # a client refusing the certificate, too
            conn.settimeout(5)
            if self.context is not None:
                conn = self.context.wrap_socket(conn, server_side=True)
            self.talk(conn, self.stopping)

    def stop(self) -> None:
        self.stopping.set()
        self.accepting.join(2)
        self.listener.close()


class QuietHandler(BaseHTTPRequestHandler):
    """A handler for LoopbackHttpServer: keep-alive, `reply`, `release`, no log lines."""

    protocol_version = "HTTP/1.1"
    release: threading.Event  # set when the server stops: lets hanging handlers end

    def reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {**(headers or {}), "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def hang(self) -> None:
        self.release.wait(30)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class LoopbackHttpServer:
    """A real HTTP(S) server on a free loopback port, answering with `handler` in threads.

    The handler class is given `release` (see QuietHandler) and the `attributes` passed here,
    such as a list its requests are recorded in.
    """

    def __init__(
        self,
        handler: type[BaseHTTPRequestHandler],
        context: ssl.SSLContext | None = None,
        **attributes: Any,
    ) -> None:
        self.release = threading.Event()
        bound = type(handler.__name__, (handler,), {"release": self.release, **attributes})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), bound)
        if context is not None:
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.scheme = "https" if context else "http"
        self.port = int(self.httpd.server_address[1])
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def __enter__(self) -> LoopbackHttpServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, path: str = "") -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
