"""The daemon's one HTTP server: Prometheus metrics, the status page, and a health check.

Paths (GET and HEAD; any other method is 405):
- `/metrics`: the daemon's registry in Prometheus' text format;
- `/status`: the status page (HTML), `/status.json` its view, `/status.atom` its Atom feed;
  `/` redirects to `/status`. With the status page off, these are 404;
- `/healthz`: "ok" while the server answers;
- `/api/...`: the HTTP API (`monitor.api`, any method), when the daemon gives one.

Every error is a JSON body `{"error": "..."}`; an unexpected exception is logged and answered
with 500, never with a traceback. HTML carries a Content-Security-Policy that allows no script
at all, so even a template mistake cannot run what an incident's probe output contains.
Requests are logged at debug level through this module's logger, not on stderr.

The server is the standard library's ThreadingHTTPServer (a thread per request, daemon
threads), as prometheus-client's own server is: a scrape and a page view never wait for the
daemon's main loop, and they read the state store through its lock.
"""

from __future__ import annotations

import json
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from monitor.metrics import Metrics
from monitor.statuspage import atom_feed, render_page
from notifiers.render import Renderer

log = logging.getLogger(__name__)

__all__ = [
    "API_PREFIX",
    "ApiHandler",
    "Request",
    "Response",
    "StatusSource",
    "WebServer",
    "error",
    "serve",
]

StatusSource = Callable[[float], dict[str, Any]]  # now -> the view of monitor.statuspage

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
HTML_HEADERS = {
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "no-referrer",
}
HTML = "text/html; charset=utf-8"
JSON = "application/json"
ATOM = "application/atom+xml; charset=utf-8"
TEXT = "text/plain; charset=utf-8"
REQUEST_TIMEOUT = 30.0  # seconds a client may take to send its request


@dataclass(frozen=True)
class Response:
    status: int
    content_type: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def error(status: HTTPStatus, reason: str, **headers: str) -> Response:
    body = json.dumps({"error": reason}).encode()
    return Response(status, JSON, body, headers)


@dataclass(frozen=True)
class Request:
    """A request under API_PREFIX as `monitor.api` sees it. `headers` has lower-case names;
    the body is read on demand, so that a limit can refuse it unread: `read(n)` returns at
    most n bytes, what has arrived (waiting for some), and b"" once the client sent no more."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    read: Callable[[int], bytes]


ApiHandler = Callable[[Request], Response]
API_PREFIX = "/api/"
LINGER_SECONDS = 2.0  # how long an unread request body is drained after the answer...
LINGER_BYTES = 4 * 1024 * 1024  # ...and how much of it at most


@dataclass
class _App:
    """What the handlers answer from (one per server)."""

    metrics: Metrics
    status: StatusSource | None
    renderer: Renderer
    clock: Callable[[], float]
    api: ApiHandler | None = None  # answers every path under API_PREFIX, any method

    def respond(self, path: str) -> Response:
        route = _ROUTES.get(path)
        if route is None:
            return error(HTTPStatus.NOT_FOUND, f"no such path: {path}")
        if route.needs_status and self.status is None:
            return error(HTTPStatus.NOT_FOUND, "the status page is disabled ([status] enabled)")
        return route.answer(self)

    def view(self) -> dict[str, Any]:
        assert self.status is not None
        return self.status(self.clock())


@dataclass(frozen=True)
class _Route:
    answer: Callable[[_App], Response]
    needs_status: bool = False


def _metrics(app: _App) -> Response:
    return Response(HTTPStatus.OK, CONTENT_TYPE_LATEST, generate_latest(app.metrics.registry))


def _healthz(app: _App) -> Response:
    return Response(HTTPStatus.OK, TEXT, b"ok\n")


def _home(app: _App) -> Response:
    return Response(HTTPStatus.FOUND, TEXT, b"see /status\n", {"Location": "/status"})


def _page(app: _App) -> Response:
    html = render_page(app.view(), app.renderer).encode()
    return Response(HTTPStatus.OK, HTML, html, HTML_HEADERS)


def _json(app: _App) -> Response:
    body = json.dumps(app.view(), indent=2, ensure_ascii=False).encode()
    return Response(HTTPStatus.OK, JSON, body)


def _atom(app: _App) -> Response:
    return Response(HTTPStatus.OK, ATOM, atom_feed(app.view()))


_ROUTES = {
    "/metrics": _Route(_metrics),
    "/healthz": _Route(_healthz),
    "/": _Route(_home, needs_status=True),
    "/status": _Route(_page, needs_status=True),
    "/status.json": _Route(_json, needs_status=True),
    "/status.atom": _Route(_atom, needs_status=True),
}


class _Handler(BaseHTTPRequestHandler):
    timeout = REQUEST_TIMEOUT
    server_version = "forewarn"
    sys_version = ""
    _body_read = 0  # bytes of the request body read so far

    def do_GET(self) -> None:
        self._send(self._answer())

    def do_HEAD(self) -> None:
        self._send(self._answer(), body=False)

    def __getattr__(self, name: str) -> Any:
        # BaseHTTPRequestHandler looks up do_<METHOD>: the API decides on any method itself;
        # elsewhere, every other method is not allowed.
        if name.startswith("do_"):
            return self._other_method
        raise AttributeError(name)

    def _other_method(self) -> None:
        if self._api() is not None:
            self._send(self._answer())
            return
        self._send(error(HTTPStatus.METHOD_NOT_ALLOWED, "only GET and HEAD", Allow="GET, HEAD"))

    def _api(self) -> ApiHandler | None:
        """The API, when it is served and the path is under API_PREFIX."""
        app = cast(_Server, self.server).app
        return app.api if urlsplit(self.path).path.startswith(API_PREFIX) else None

    def _answer(self) -> Response:
        app = cast(_Server, self.server).app
        path = urlsplit(self.path).path
        api = self._api()
        try:
            return api(self._request()) if api is not None else app.respond(path)
        except Exception as exc:  # a broken template or database must not kill the server
            log.exception("%s %s failed", self.command, path)
            return error(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                f"internal error ({type(exc).__name__}); the daemon's log has the details",
            )

    def _request(self) -> Request:
        parts = urlsplit(self.path)
        headers = {name.lower(): value for name, value in self.headers.items()}
        return Request(self.command, parts.path, parts.query, headers, self._read_body)

    def _read_body(self, size: int) -> bytes:
        data = self.rfile.read1(size)  # what has arrived, so that the reader can keep time
        self._body_read += len(data)
        return data

    def _body_unread(self) -> bool:
        """Whether the client may still be sending a body nobody read (a refused request)."""
        headers = getattr(self, "headers", None)  # None when the request line was bad
        if headers is None:
            return False
        if headers.get("Transfer-Encoding"):
            return True
        length = headers.get("Content-Length", "0").strip()
        if not (length.isascii() and length.isdigit()):
            return True
        return int(length) > self._body_read

    def _linger(self) -> None:
        """Drain what the client still sends, for a moment: closing a socket with unread data
        resets the connection, and the client would lose the answer (a 413, a 401)."""
        self.close_connection = True
        deadline = time.monotonic() + LINGER_SECONDS
        drained = 0
        try:
            self.connection.shutdown(socket.SHUT_WR)
            while drained < LINGER_BYTES and (left := deadline - time.monotonic()) > 0:
                self.connection.settimeout(left)
                chunk = self.connection.recv(65536)
                if not chunk:
                    return
                drained += len(chunk)
        except OSError:  # timed out, or the client is gone: either way, done
            return

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors the request parser finds (400, 414, 501...) answered as JSON like ours."""
        self.close_connection = True
        reason = message or HTTPStatus(code).phrase
        self._send(error(HTTPStatus(code), reason, Connection="close"))

    def _send(self, response: Response, body: bool = True) -> None:
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Cache-Control", "no-cache")
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if body and self.command != "HEAD":
                self.wfile.write(response.body)
        except OSError as exc:  # the client went away: nothing left to tell it
            log.debug("could not answer %s: %s", self.client_address, exc)
            return
        if self._body_unread():
            self._linger()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 drops the connections of a burst (a dozen clients
    # at once), which then wait a whole second for the SYN to be sent again.
    request_queue_size = 128

    def __init__(self, address: tuple[Any, ...], family: socket.AddressFamily, app: _App) -> None:
        self.address_family = family
        self.app = app
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would look up the host's FQDN, a DNS query nobody needs.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]


class WebServer:
    """The running server: `address` is what it bound, `shutdown()` stops it."""

    def __init__(self, server: _Server) -> None:
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="forewarn-http", daemon=True
        )
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def shutdown(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve(
    metrics: Metrics,
    listen: str,
    status: StatusSource | None = None,
    renderer: Renderer | None = None,
    clock: Callable[[], float] = time.time,
    api: ApiHandler | None = None,
) -> WebServer | None:
    """Serve /metrics, /healthz and (when `status` is given) the status page on `listen`.

    `listen` is "host:port" ("127.0.0.1:9877", "[::1]:9877"; port 0 picks a free one), or ""
    for no server at all (None is returned). `status` builds the page's view for a `now`;
    `renderer` renders its HTML (the built-in templates by default); `clock` gives that `now`.
    `api` (a `monitor.api.Api`) answers every request under API_PREFIX.
    Raises OSError when the address cannot be bound.
    """
    if not listen:
        return None
    host, port = _split(listen)
    family, address = _resolve(host, port)
    app = _App(metrics, status, renderer or Renderer(), clock, api)
    server = WebServer(_Server(address, family, app))
    log.debug("serving HTTP on %s", listen)
    return server


def _split(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.removeprefix("[").removesuffix("]") or "127.0.0.1", int(port)


def _resolve(host: str, port: int) -> tuple[socket.AddressFamily, tuple[Any, ...]]:
    """The family and socket address to bind `host` with (IPv4 or IPv6, names too)."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _type, _proto, _name, address = found[0]
    return family, address
