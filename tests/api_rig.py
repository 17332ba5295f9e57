"""The API on the daemon's real HTTP server (port 0, loopback) over a state store that the real
engine, communicator and dispatcher fill, wired as in comms_parts. Time is passed as `now`:
the API's clock and the dispatcher's are the rig's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests
from comms_parts import HEAD, DaemonRig, web_down

from monitor.api import Api
from monitor.api_config import ApiConfig
from monitor.metrics import Metrics
from monitor.web import WebServer, serve

TOKEN = "0123456789abcdef-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# The start of a rig's config: a web probe, whose samples the tests pass in, and a rule that
# opens an incident of the intranet when a page does not answer. A test file adds tables of its
# own.
WEB_DOWN = HEAD + web_down('service = "intranet"')


class ApiRig(DaemonRig):
    """`config` is a test config with a `{state}` placeholder (WEB_DOWN and more)."""

    def __init__(self, tmp: Path, config: str, settings: ApiConfig, now: float) -> None:
        super().__init__(tmp, config, now)
        self.woken = 0
        self.api = Api(
            self.store,
            settings,
            wake=self._wake,
            rules=lambda: self.engine.rules,
            clock=lambda: self.now,
        )
        server = serve(Metrics(), "127.0.0.1:0", api=self.api)
        assert isinstance(server, WebServer)
        self.server = server
        self.base = f"http://127.0.0.1:{server.address[1]}/api/v1"

    def _wake(self) -> None:
        self.woken += 1

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(f"{self.base}{path}", timeout=5, **kwargs)

    def post(self, path: str, body: Any, **kwargs: Any) -> requests.Response:
        headers = AUTH | kwargs.pop("headers", {})
        return requests.post(f"{self.base}{path}", json=body, headers=headers, timeout=5, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        headers = AUTH | kwargs.pop("headers", {})
        return requests.delete(f"{self.base}{path}", headers=headers, timeout=5, **kwargs)

    def close(self) -> None:
        self.server.shutdown()
        super().close()


def error_of(response: requests.Response, status: int) -> str:
    """The reason of an error answer, which must be JSON and show no traceback."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert "Traceback" not in response.text
    reason: str = response.json()["error"]
    return reason
