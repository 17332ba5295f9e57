"""The http probe against real loopback servers: plain, TLS, refusing, hanging, trickling;
JSON and body checks, a forwarding/CONNECT proxy and mutual TLS, all on loopback."""

import datetime
import gzip
import http.client
import json
import math
import selectors
import socket
import ssl
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from certs import CertificateAuthority, Issued, self_signed
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from http_service import free_port
from probe_helpers import LoopbackHttpServer, QuietHandler

from monitor.config import parse_config
from probes.base import Duration, Sample
from probes.http import HttpProbe, parse_json_path, redacted_url

NOW = 1_700_000_000.0
HOSTILE_BODY = b"<script>alert(1)</script> Traceback (most recent call last)\n" * 100
HEALTH = json.dumps(
    {
        "status": "ok",
        "checks": [
            {"name": "db", "state": "ok", "latency_ms": 12.5},
            {"name": "queue", "state": "degraded\n\u001b[31m<b>", "depth": 1200},
        ],
        "ready": True,
        "version": None,
    }
).encode()
JSON_TYPE = {"Content-Type": "application/json"}
GZIP_JSON = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
LATIN1 = {"Content-Type": "text/plain; charset=iso-8859-1"}


class Handler(QuietHandler):
    def do_GET(self) -> None:
        routes = {
            "/ok": lambda: self.reply(200, b"fine\n"),
            "/fail": lambda: self.reply(503, HOSTILE_BODY),
            "/redirect": lambda: self.reply(302, b"", {"Location": "/ok"}),
            "/loop": lambda: self.reply(302, b"", {"Location": "/loop"}),
            "/hang": self.hang,
            "/trickle": self.trickle,
            "/need-token": self.need_token,
            "/health": lambda: self.reply(200, HEALTH, JSON_TYPE),
            "/hostile": lambda: self.reply(200, HOSTILE_BODY),
            "/big-json": lambda: self.reply(200, json.dumps(list(range(5000))).encode(), JSON_TYPE),
            "/deep-json": lambda: self.reply(200, b"[" * 100_000 + b"]" * 100_000, JSON_TYPE),
            "/gzip-json": lambda: self.reply(200, gzip.compress(HEALTH), GZIP_JSON),
            "/latin1": lambda: self.reply(200, "Caf\u00e9 ouvert".encode("latin-1"), LATIN1),
            "/redirect2": lambda: self.reply(302, b"", {"Location": "/redirect"}),
        }
        routes.get(self.path, lambda: self.reply(404, b"no such page\n"))()

    def do_HEAD(self) -> None:
        self.reply(200 if self.path == "/ok" else 404, b"")

    def do_POST(self) -> None:
        self.reply(201, b"created\n")

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


@pytest.fixture(scope="module")
def server() -> Iterator[LoopbackHttpServer]:
    with LoopbackHttpServer(Handler) as running:
        yield running


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[LoopbackHttpServer]:
    """A TLS server with a self-signed certificate."""
    with LoopbackHttpServer(Handler, self_signed("127.0.0.1").server_context(tmp_path)) as running:
        yield running


def check(url: str, **options: Any) -> dict[str, Sample]:
    samples = HttpProbe("web", HttpProbe.Options(url=url, **options)).collect(NOW)
    assert all(s.labels == {"url": url} and s.timestamp == NOW for s in samples)
    return {s.metric: s for s in samples}


def assert_failed(result: dict[str, Sample], status: int, error: str) -> None:
    assert result["http_up"].value == 0.0
    assert result["http_status_code"].value == status
    assert result["http_up"].error == error


def test_a_200_is_up(server: LoopbackHttpServer) -> None:
    result = check(server.url("/ok"))
    assert result["http_up"].value == 1.0
    assert result["http_status_code"].value == 200
    assert 0.0 < result["http_duration_seconds"].value < 5.0
    assert all(s.error is None for s in result.values())


def test_a_503_is_down_and_its_body_goes_nowhere(server: LoopbackHttpServer) -> None:
    result = check(server.url("/fail"))
    assert_failed(result, 503, "unexpected status 503")
    assert all(s.error == "unexpected status 503" for s in result.values())


def test_expected_statuses_replace_the_2xx_3xx_default(server: LoopbackHttpServer) -> None:
    assert check(server.url("/fail"), expect_status=[503])["http_up"].value == 1.0
    assert_failed(check(server.url("/ok"), expect_status=[204]), 200, "unexpected status 200")


def test_redirects_are_followed_unless_told_not_to(server: LoopbackHttpServer) -> None:
    assert check(server.url("/redirect"))["http_status_code"].value == 200
    unfollowed = check(server.url("/redirect"), follow_redirects=False)
    assert unfollowed["http_up"].value == 1.0 and unfollowed["http_status_code"].value == 302
    strict = check(server.url("/redirect"), follow_redirects=False, expect_status=[200])
    assert_failed(strict, 302, "unexpected status 302")


def test_endless_redirects_are_a_failure(server: LoopbackHttpServer) -> None:
    assert_failed(check(server.url("/loop")), 0, "too many redirects")


def test_a_closed_port_is_connection_refused() -> None:
    result = check(f"http://127.0.0.1:{free_port()}/")
    assert_failed(result, 0, "connection refused")
    assert 0.0 <= result["http_duration_seconds"].value < 5.0


def test_a_server_that_never_answers_times_out(server: LoopbackHttpServer) -> None:
    started = time.monotonic()
    result = check(server.url("/hang"), timeout=Duration(0.3))
    assert_failed(result, 0, "timed out after 0.3s")
    assert 0.3 <= result["http_duration_seconds"].value < 2.0
    assert time.monotonic() - started < 2.0


def test_the_timeout_bounds_the_whole_exchange(server: LoopbackHttpServer) -> None:
    result = check(server.url("/trickle"), timeout=Duration(0.3))
    assert_failed(result, 200, "timed out after 0.3s")  # the status had arrived
    assert result["http_duration_seconds"].value < 2.0


def test_headers_are_sent(server: LoopbackHttpServer) -> None:
    assert check(server.url("/need-token"))["http_status_code"].value == 403
    authorized = check(server.url("/need-token"), headers=["X-Token: s3cret"])
    assert authorized["http_up"].value == 1.0


def test_the_secret_header_is_sent_and_never_shown(
    server: LoopbackHttpServer, monkeypatch: pytest.MonkeyPatch
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
def test_the_method_is_used(server: LoopbackHttpServer, method: str, status: int) -> None:
    assert check(server.url("/ok"), method=method)["http_status_code"].value == status


def test_tls_to_a_plain_http_server_is_a_short_tls_error(server: LoopbackHttpServer) -> None:
    url = server.url("/ok").replace("http://", "https://")
    result = check(url)
    error = result["http_up"].error or ""
    assert error.startswith("TLS error: ") and "\n" not in error and len(error) < 250
    assert result["http_up"].value == 0.0


def test_an_untrusted_certificate_fails_unless_verification_is_off(
    tls_server: LoopbackHttpServer,
) -> None:
    url = tls_server.url("/ok")
    refused = check(url)
    assert (
        refused["http_up"].error == "TLS error: certificate verify failed: self-signed certificate"
    )
    assert check(url, verify_tls=False)["http_up"].value == 1.0


def test_a_password_in_the_url_stays_out_of_labels(server: LoopbackHttpServer) -> None:
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


# --- body checks ---------------------------------------------------------------------------------


def test_a_matching_body_regex_is_up(server: LoopbackHttpServer) -> None:
    result = check(server.url("/ok"), body_regex=r"^fine$")
    assert result["http_up"].value == 1.0 and result["http_body_matched"].value == 1.0
    assert "http_json_matched" not in result


def test_a_body_that_does_not_match_is_down_with_a_short_clean_excerpt(
    server: LoopbackHttpServer,
) -> None:
    result = check(server.url("/hostile"), body_regex="everything is fine")
    assert result["http_up"].value == 0.0 and result["http_body_matched"].value == 0.0
    error = result["http_up"].error or ""
    assert error.startswith('body does not match body_regex; it begins "<script>alert(1)</script>')
    assert len(error) < 130 and "\n" not in error
    assert all(s.labels == {"url": server.url("/hostile")} for s in result.values())


def test_the_declared_charset_decodes_the_body(server: LoopbackHttpServer) -> None:
    assert check(server.url("/latin1"), body_regex="Café ouvert")["http_up"].value == 1.0


def test_body_checks_are_not_run_on_a_failed_status(server: LoopbackHttpServer) -> None:
    result = check(server.url("/fail"), body_regex="alert")  # in the body, but a 503
    assert result["http_body_matched"].value == 0.0
    assert result["http_body_matched"].error == "unexpected status 503"


@pytest.mark.parametrize(
    ("path", "expect", "value"),
    [
        ("status", "ok", math.nan),
        ("checks[0].state", "ok", math.nan),
        ("checks[0].latency_ms", "12.5", 12.5),
        ("checks[-1].depth", None, 1200.0),
        ("ready", "true", 1.0),
        ("version", "null", math.nan),
        ("checks", None, math.nan),  # exists: enough without json_expect
    ],
)
def test_json_paths_that_hold(
    server: LoopbackHttpServer, path: str, expect: str | None, value: float
) -> None:
    result = check(server.url("/health"), json_path=path, json_expect=expect)
    assert result["http_up"].value == 1.0, result["http_up"].error
    assert result["http_json_matched"].value == 1.0
    got = result["http_json_value"].value
    assert (math.isnan(got) and math.isnan(value)) or got == value


@pytest.mark.parametrize(
    ("url_path", "path", "expect", "error"),
    [
        (
            "/health", "checks[1].state", "ok",
            'json_path checks[1].state is "degraded \ufffd[31m<b>", expected \'ok\'',
        ),
        ("/health", "checks[2].state", None, "json_path checks[2].state not found in the body"),
        ("/health", "status.code", None, "json_path status.code not found in the body"),
        ("/health", "[0]", None, "json_path [0] not found in the body"),
        ("/ok", "status", None, "body is not JSON: Expecting value: line 1 column 1 (char 0)"),
        ("/deep-json", "[0]", None, "body is not JSON: maximum recursion depth exceeded"),
    ],
)  # fmt: skip
def test_json_paths_that_fail(
    server: LoopbackHttpServer, url_path: str, path: str, expect: str | None, error: str
) -> None:
    result = check(server.url(url_path), json_path=path, json_expect=expect)
    assert result["http_up"].value == 0.0 and result["http_json_matched"].value == 0.0
    assert (result["http_up"].error or "").startswith(error)


def test_json_past_max_body_bytes_is_cut_and_says_so(server: LoopbackHttpServer) -> None:
    result = check(server.url("/big-json"), json_path="[0]", max_body_bytes=1000)
    assert result["http_up"].error == (
        "body is not JSON (only its first 1000 bytes are read): "
        "Expecting value: line 1 column 1001 (char 1000)"
    )
    assert check(server.url("/big-json"), json_path="[-1]")["http_json_value"].value == 4999.0


def test_a_gzip_body_is_decoded_for_the_checks(server: LoopbackHttpServer) -> None:
    result = check(server.url("/gzip-json"), json_path="checks[0].name", json_expect="db")
    assert result["http_up"].value == 1.0


@pytest.mark.parametrize(
    ("path", "steps"),
    [
        ("status", ("status",)),
        ("checks[0].state", ("checks", 0, "state")),
        ("[0].name", (0, "name")),
        ("a[1][-1].b-c d", ("a", 1, -1, "b-c d")),
    ],
)
def test_json_path_syntax(path: str, steps: tuple[str | int, ...]) -> None:
    assert parse_json_path(path) == steps


@pytest.mark.parametrize("path", ["", ".a", "a.", "a..b", "a[x]", "a[0", "a.[0]", "a]"])
def test_json_path_syntax_errors(path: str) -> None:
    with pytest.raises(ValueError, match=r"is not of the form key\.key"):
        parse_json_path(path)


# --- redirects -----------------------------------------------------------------------------------


def test_redirects_are_counted(server: LoopbackHttpServer) -> None:
    assert check(server.url("/ok"))["http_redirects"].value == 0.0
    assert check(server.url("/redirect2"))["http_redirects"].value == 2.0
    unfollowed = check(server.url("/redirect2"), follow_redirects=False)
    assert unfollowed["http_redirects"].value == 0.0


def test_max_redirects_bounds_the_chain(server: LoopbackHttpServer) -> None:
    assert check(server.url("/redirect2"), max_redirects=2)["http_up"].value == 1.0
    result = check(server.url("/redirect2"), max_redirects=1)
    assert_failed(result, 0, "too many redirects")
    assert math.isnan(result["http_redirects"].value)


# --- a proxy on loopback -------------------------------------------------------------------------


class ProxyHandler(BaseHTTPRequestHandler):
    """Forwards absolute-form GETs and tunnels CONNECT: what a forward proxy does."""

    seen: list[str]

    def do_GET(self) -> None:
        self.seen.append(f"GET {self.path}")
        target = urlsplit(self.path)
        upstream = http.client.HTTPConnection(target.hostname or "", target.port, timeout=5)
        upstream.request("GET", target.path or "/", headers={"Host": target.netloc})
        answer = upstream.getresponse()
        body = answer.read()
        self.send_response(answer.status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_CONNECT(self) -> None:
        self.seen.append(f"CONNECT {self.path}")
        host, port = self.path.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as upstream:
            self.send_response(200, "Connection established")
            self.end_headers()
            self.wfile.flush()
            tunnel(self.connection, upstream)
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


def tunnel(client: socket.socket, upstream: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""
    with selectors.DefaultSelector() as selector:
        selector.register(client, selectors.EVENT_READ, upstream)
        selector.register(upstream, selectors.EVENT_READ, client)
        while True:
            for key, _ in selector.select(timeout=5):
                data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                if not data:
                    return
                key.data.sendall(data)


@pytest.fixture(scope="module")
def proxy() -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []
    with LoopbackHttpServer(ProxyHandler, seen=seen) as running:
        yield running.url(), seen


def test_a_plain_url_goes_through_the_proxy(
    server: LoopbackHttpServer, proxy: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    address, seen = proxy
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # the config's proxy wins
    result = check(server.url("/health"), proxy=address, json_path="status", json_expect="ok")
    assert result["http_up"].value == 1.0
    assert f"GET {server.url('/health')}" in seen


def test_an_https_url_is_tunnelled_with_connect(
    trusted_server: LoopbackHttpServer, ca_file: Path, proxy: tuple[str, list[str]]
) -> None:
    address, seen = proxy
    result = check(trusted_server.url("/ok"), proxy=address, ca_file=str(ca_file))
    assert result["http_up"].value == 1.0, result["http_up"].error
    assert f"CONNECT 127.0.0.1:{trusted_server.port}" in seen


def test_a_proxy_that_is_down_says_so(server: LoopbackHttpServer) -> None:
    result = check(server.url("/ok"), proxy=f"http://127.0.0.1:{free_port()}")
    assert_failed(result, 0, "proxy error: connection refused")


# --- TLS with our own CA, and client certificates ------------------------------------------------


def client_certificate(ca: CertificateAuthority, name: str) -> Issued:
    """A leaf for TLS clients (tests/certs.py makes server leaves: serverAuth only)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(cert, key)


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority()


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tls")


@pytest.fixture(scope="module")
def ca_file(ca: CertificateAuthority, tls_dir: Path) -> Path:
    return ca.write(tls_dir)


@pytest.fixture(scope="module")
def trusted_server(ca: CertificateAuthority, tls_dir: Path) -> Iterator[LoopbackHttpServer]:
    context = ca.issue("127.0.0.1").server_context(tls_dir, "trusted")
    with LoopbackHttpServer(Handler, context) as running:
        yield running


@pytest.fixture(scope="module")
def mtls_server(
    ca: CertificateAuthority, tls_dir: Path, ca_file: Path
) -> Iterator[LoopbackHttpServer]:
    context = ca.issue("127.0.0.1").server_context(tls_dir, "mtls")
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=str(ca_file))
    with LoopbackHttpServer(Handler, context) as running:
        yield running


def test_ca_file_trusts_a_private_ca(trusted_server: LoopbackHttpServer, ca_file: Path) -> None:
    url = trusted_server.url("/ok")
    assert check(url, ca_file=str(ca_file))["http_up"].value == 1.0
    unknown_ca = "TLS error: certificate verify failed: unable to get local issuer certificate"
    assert_failed(check(url), 0, unknown_ca)


def test_a_client_certificate_opens_a_mutual_tls_server(
    mtls_server: LoopbackHttpServer, ca: CertificateAuthority, ca_file: Path, tls_dir: Path
) -> None:
    cert, key = client_certificate(ca, "forewarn").write(tls_dir, "client")
    url = mtls_server.url("/ok")
    result = check(url, ca_file=str(ca_file), client_cert=str(cert), client_key=str(key))
    assert result["http_up"].value == 1.0, result["http_up"].error
    combined = tls_dir / "client-combined.pem"
    combined.write_bytes(cert.read_bytes() + key.read_bytes())
    assert check(url, ca_file=str(ca_file), client_cert=str(combined))["http_up"].value == 1.0


def test_without_its_client_certificate_a_mutual_tls_server_refuses(
    mtls_server: LoopbackHttpServer, ca_file: Path
) -> None:
    result = check(mtls_server.url("/ok"), ca_file=str(ca_file))
    error = result["http_up"].error or ""
    assert result["http_up"].value == 0.0
    # TLS 1.3: the server refuses after the client's side of the handshake is done, so the
    # client learns it from an alert or, as with this server, from the connection's end.
    assert error in (
        "TLS error: tlsv13 alert certificate required",
        "TLS error: EOF occurred in violation of protocol",
        "connection reset by peer",
        "connection closed without a response",
    ), error


def test_an_unreadable_certificate_file_is_named(
    mtls_server: LoopbackHttpServer, tmp_path: Path
) -> None:
    missing = tmp_path / "client.pem"
    result = check(mtls_server.url("/ok"), verify_tls=False, client_cert=str(missing))
    assert_failed(result, 0, f"cannot read client_cert {missing}")


# --- the new options' validation -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"json_expect": "ok"}, "json_expect needs json_path"),
        ({"json_path": "a..b"}, r"is not of the form key\.key"),
        ({"body_regex": "(unclosed"}, "body_regex is not a valid regular expression"),
        ({"method": "HEAD", "body_regex": "x"}, "not with method HEAD"),
        ({"max_body_bytes": 0}, "max_body_bytes must be between 1 and 64 MiB"),
        ({"client_key": "/k.pem"}, "client_key needs client_cert"),
        ({"ca_file": "/ca.pem", "verify_tls": False}, "ca_file has no effect"),
        ({"proxy": "socks5://127.0.0.1:1080"}, "proxy must start with http:// or https://"),
        ({"proxy": "http://user:pw@proxy:3128"}, "proxy must not hold a password"),
        ({"max_redirects": -1}, "max_redirects must be between 0 and 100"),
    ],
)
def test_body_proxy_and_tls_options_are_validated(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HttpProbe.Options(url="http://h/", **options)


def test_the_proxy_stays_out_of_the_options_repr() -> None:
    options = HttpProbe.Options(url="http://h/", proxy="http://proxy.internal:3128")
    assert "proxy.internal" not in repr(options)
