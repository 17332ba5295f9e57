"""Switchable faults on loopback for the fault-injection tests: a webhook help desk that can be
down (refused), failing (answering 503) or up on one fixed port; a port that accepts
connections and never says a word; and the socket systemd's notify protocol writes to.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from http_service import HttpService, QuietHandler

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Hook:
    """One request the desk got, and the status it answered."""

    event: str
    marker: str
    external_id: str | None
    status: int

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300


class WebhookDesk:
    """A help desk for `[helpdesk] kind = "webhook"` with `id_path = "id"`: every create
    accepted gets the next number. `stop()` makes it refuse connections, `failing = 503`
    makes it answer that status to everything, `failing = None` accepts again."""

    def __init__(self) -> None:
        self.failing: int | None = None
        self._hooks: list[Hook] = []
        self._lock = threading.Lock()
        # stops within 50 ms: a request meanwhile would wait, then be refused at the close
        self._service = HttpService(handler=_handler_for(self), poll_interval=0.05)

    @property
    def url(self) -> str:
        return f"{self._service.url}hooks/forewarn"

    @property
    def hooks(self) -> list[Hook]:
        with self._lock:
            return list(self._hooks)

    def accepted(self) -> list[Hook]:
        return [hook for hook in self.hooks if hook.accepted]

    def start(self) -> None:
        self._service.start()

    def stop(self) -> None:
        self._service.stop()

    def answer(self, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Record the request; the status and JSON body to answer it with."""
        with self._lock:
            status = self.failing or (201 if payload["event"] == "create" else 200)
            created = sum(h.event == "create" and h.accepted for h in self._hooks)
            self._hooks.append(
                Hook(payload["event"], payload["marker"], payload["external_id"], status)
            )
        body = {"id": created + 1} if status == 201 else {"error": "unavailable"}
        return status, body


def _handler_for(desk: WebhookDesk) -> type[QuietHandler]:
    class Handler(QuietHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            status, answer = desk.answer(json.loads(self.rfile.read(length)))
            self.reply(status, json.dumps(answer).encode(), "application/json")

    return Handler


@contextlib.contextmanager
def silent_listener(port: int) -> Iterator[None]:
    """Listen on `port` (a fixed one, e.g. a stopped mail server's) and never accept: clients
    connect into the kernel's backlog and wait for a greeting that never comes."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, port))
        listener.listen(64)
        yield


class NotifyListener:
    """The socket systemd would give as NOTIFY_SOCKET: collects every datagram's fields."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(path)
        self._sock.settimeout(0.2)
        self._messages: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._sock.recv(4096).decode()
            except (TimeoutError, OSError):
                continue
            fields = dict(line.split("=", 1) for line in data.split("\n") if "=" in line)
            with self._lock:
                self._messages.append(fields)

    def statuses(self) -> list[str]:
        with self._lock:
            return [m["STATUS"] for m in self._messages if "STATUS" in m]

    def close(self) -> None:
        self._closed.set()
        self._sock.close()
