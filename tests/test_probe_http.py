"""The http probe against real loopback servers: plain, TLS, refusing, hanging, trickling."""

import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from monitor.config import parse_config
from probes.base import Duration, Sample
from probes.http import HttpProbe, redacted_url

NOW = 1_700_000_000.0
HOSTILE_BODY = b"<script>alert(1)</script> Traceback (most recent call last)\n" * 100


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    release: threading.Event  # set by the fixture: lets hanging handlers end

    def do_GET(self) -> None:
        routes = {
            "/ok": lambda: self.reply(200, b"fine\n"),
            "/fail": lambda: self.reply(503, HOSTILE_BODY),
            "/redirect": lambda: self.reply(302, b"", {"Location": "/ok"}),
            "/loop": lambda: self.reply(302, b"", {"Location": "/loop"}),
            "/hang": self.hang,
            "/trickle": self.trickle,
            "/need-token": self.need_token,
        }
        routes.get(self.path, lambda: self.reply(404, b"no such page\n"))()

    def do_HEAD(self) -> None:
        self.reply(200 if self.path == "/ok" else 404, b"")

    def do_POST(self) -> None:
        self.reply(201, b"created\n")

    def reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {**(headers or {}), "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def hang(self) -> None:
        self.release.wait(30)

    def trickle(self) -> None:
        """Headers at once, then a byte every 50 ms: no read ever waits long."""
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        for _ in range(1000):
            if self.release.wait(0.05):
                return
            self.wfile.write(b".")
            self.wfile.flush()

    def need_token(self) -> None:
        authorized = self.headers.get("X-Token") == "s3cret"
        self.reply(200 if authorized else 403, b"")

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Server:
    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        self.release = threading.Event()
        handler = type("BoundHandler", (Handler,), {"release": self.release})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        if context is not None:
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.scheme = "https" if context else "http"
        serve = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        serve.start()

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    running = Server()
    yield running
    running.stop()


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[Server]:
    """A TLS server with a self-signed certificate made by the openssl command."""
    assert shutil.which("openssl"), "openssl is needed (tests/run.sh installs it)"
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    running = Server(context)
    yield running
    running.stop()


def check(url: str, **options: Any) -> dict[str, Sample]:
    samples = HttpProbe("web", HttpProbe.Options(url=url, **options)).collect(NOW)
    assert all(s.labels == {"url": url} and s.timestamp == NOW for s in samples)
    return {s.metric: s for s in samples}


def assert_failed(result: dict[str, Sample], status: int, error: str) -> None:
    assert result["http_up"].value == 0.0
    assert result["http_status_code"].value == status
    assert result["http_up"].error == error


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_200_is_up(server: Server) -> None:
    result = check(server.url("/ok"))
    assert result["http_up"].value == 1.0
    assert result["http_status_code"].value == 200
    assert 0.0 < result["http_duration_seconds"].value < 5.0
    assert all(s.error is None for s in result.values())


def test_a_503_is_down_and_its_body_goes_nowhere(server: Server) -> None:
    result = check(server.url("/fail"))
    assert_failed(result, 503, "unexpected status 503")
    assert all(s.error == "unexpected status 503" for s in result.values())


def test_expected_statuses_replace_the_2xx_3xx_default(server: Server) -> None:
    assert check(server.url("/fail"), expect_status=[503])["http_up"].value == 1.0
    assert_failed(check(server.url("/ok"), expect_status=[204]), 200, "unexpected status 200")


def test_redirects_are_followed_unless_told_not_to(server: Server) -> None:
    assert check(server.url("/redirect"))["http_status_code"].value == 200
    unfollowed = check(server.url("/redirect"), follow_redirects=False)
    assert unfollowed["http_up"].value == 1.0 and unfollowed["http_status_code"].value == 302
    strict = check(server.url("/redirect"), follow_redirects=False, expect_status=[200])
    assert_failed(strict, 302, "unexpected status 302")


def test_endless_redirects_are_a_failure(server: Server) -> None:
    assert_failed(check(server.url("/loop")), 0, "too many redirects")


def test_a_closed_port_is_connection_refused() -> None:
    result = check(f"http://127.0.0.1:{closed_port()}/")
    assert_failed(result, 0, "connection refused")
    assert 0.0 <= result["http_duration_seconds"].value < 5.0


def test_a_server_that_never_answers_times_out(server: Server) -> None:
    started = time.monotonic()
    result = check(server.url("/hang"), timeout=Duration(0.3))
    assert_failed(result, 0, "timed out after 0.3s")
    assert 0.3 <= result["http_duration_seconds"].value < 2.0
    assert time.monotonic() - started < 2.0


def test_the_timeout_bounds_the_whole_exchange(server: Server) -> None:
    result = check(server.url("/trickle"), timeout=Duration(0.3))
    assert_failed(result, 200, "timed out after 0.3s")  # the status had arrived
    assert result["http_duration_seconds"].value < 2.0


def test_headers_are_sent(server: Server) -> None:
    assert check(server.url("/need-token"))["http_status_code"].value == 403
    authorized = check(server.url("/need-token"), headers=["X-Token: s3cret"])
    assert authorized["http_up"].value == 1.0


def test_the_secret_header_is_sent_and_never_shown(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FOREWARN_TEST_TOKEN", "X-Token: s3cret")
    config = parse_config(
        f"""
        [[probe]]
        name = "web"
        kind = "http"
        url = "{server.url("/need-token")}"
        secret_header = {{ env = "FOREWARN_TEST_TOKEN" }}
        """,
        "config.toml",
    )
    [probe_config] = config.probes
    assert "s3cret" not in repr(probe_config)
    samples = HttpProbe("web", probe_config.options).collect(NOW)
    assert samples[0].metric == "http_up" and samples[0].value == 1.0
    with pytest.raises(ValueError) as invalid:
        HttpProbe.Options(url="http://h/", secret_header="s3cret-without-a-name")
    assert "s3cret" not in str(invalid.value)


@pytest.mark.parametrize(("method", "status"), [("HEAD", 200), ("post", 201)])
def test_the_method_is_used(server: Server, method: str, status: int) -> None:
    assert check(server.url("/ok"), method=method)["http_status_code"].value == status


def test_tls_to_a_plain_http_server_is_a_short_tls_error(server: Server) -> None:
    url = server.url("/ok").replace("http://", "https://")
    result = check(url)
    error = result["http_up"].error or ""
    assert error.startswith("TLS error: ") and "\n" not in error and len(error) < 250
    assert result["http_up"].value == 0.0


def test_an_untrusted_certificate_fails_unless_verification_is_off(tls_server: Server) -> None:
    url = tls_server.url("/ok")
    refused = check(url)
    assert (
        refused["http_up"].error == "TLS error: certificate verify failed: self-signed certificate"
    )
    assert check(url, verify_tls=False)["http_up"].value == 1.0


def test_a_password_in_the_url_stays_out_of_labels(server: Server) -> None:
    url = server.url("/ok").replace("://", "://monitor:hunter2@")
    samples = HttpProbe("web", HttpProbe.Options(url=url)).collect(NOW)
    assert all(s.labels == {"url": redacted_url(url)} for s in samples)
    assert "hunter2" not in repr(samples) and "monitor:***@" in samples[0].labels["url"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"url": "ftp://example.org/"}, "url must start with http:// or https://"),
        ({"url": "http:///nohost"}, "url must start with http:// or https://"),
        ({"url": "http://h/", "method": "BREW"}, "method must be one of"),
        ({"url": "http://h/", "expect_status": [200, 700]}, "outside 100..599"),
        ({"url": "http://h/", "timeout": Duration(0)}, "timeout must be more than 0s"),
        ({"url": "http://h/", "headers": ["X-Token s3cret"]}, 'of the form "Name: value"'),
        ({"url": "http://h/", "headers": ["Bad Name: x"]}, 'of the form "Name: value"'),
    ],
)
def test_options_are_validated(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HttpProbe.Options(**options)
