"""The tls probe against a real loopback TLS server whose certificates are made in the test:
valid, expiring in 3 days, expired, for another host, self-signed, from an unknown CA; chosen
by SNI, the way a server hosting several names does. STARTTLS against a real SMTP server."""

from __future__ import annotations

import math
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from certs import CertificateAuthority, Issued, self_signed
from http_service import free_port
from probe_helpers import TcpServer
from smtp_server import SmtpTestServer

from monitor.config import parse_config
from probes.base import Duration, Sample
from probes.tls import TlsProbe, hostname_matches

DAY = 86400.0


def tls_server(default: ssl.SSLContext, by_name: dict[str, ssl.SSLContext]) -> TcpServer:
    """Shakes hands on loopback with the certificate picked by the client's SNI (`default`
    without SNI, or for a name it does not know), then waits for the client to leave."""

    def pick(conn: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        if name in by_name:
            conn.context = by_name[name]

    def wait_for_the_client_to_leave(conn: socket.socket, stopping: threading.Event) -> None:
        conn.recv(1)

    default.sni_callback = pick
    return TcpServer(wait_for_the_client_to_leave, default)


@dataclass(frozen=True)
class Site:
    server: TcpServer
    ca_file: Path
    certs: dict[str, Issued]  # by the SNI name that gets it; "" without SNI


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    directory = tmp_path_factory.mktemp("tls")
    ca, other_ca = CertificateAuthority(), CertificateAuthority("someone else's CA")
    certs = {
        "": ca.issue("localhost", "127.0.0.1"),
        "expiring.test": ca.issue("expiring.test", days=3),
        "expired.test": ca.issue("expired.test", days=-2),
        "wrong.test": ca.issue("elsewhere.test", "*.elsewhere.test"),
        "self-signed.test": self_signed("self-signed.test"),
        "unknown-ca.test": other_ca.issue("unknown-ca.test"),
    }
    contexts = {
        name: cert.server_context(directory, name or "default") for name, cert in certs.items()
    }
    server = tls_server(contexts.pop(""), contexts)
    yield Site(server, ca.write(directory), certs)
    server.stop()


def check(site: Site, server_name: str | None = None, **options: Any) -> dict[str, Sample]:
    options = {"port": site.server.port, "ca_file": str(site.ca_file), **options}
    probe = TlsProbe("tls", TlsProbe.Options(host="127.0.0.1", server_name=server_name, **options))
    now = time.time()
    samples = probe.collect(now)
    labels = {"target": f"127.0.0.1:{options['port']}", "server_name": server_name or "127.0.0.1"}
    assert all(s.labels == labels and s.timestamp == now for s in samples)
    assert [s.metric for s in samples] == [
        "tls_up",
        "tls_cert_expiry_seconds",
        "tls_cert_not_after_seconds",
        "tls_chain_valid",
        "tls_hostname_valid",
        "tls_handshake_seconds",
        "tls_protocol_version",
    ]
    return {s.metric: s for s in samples}


def assert_expires(result: dict[str, Sample], cert: Issued, in_days: float) -> None:
    assert result["tls_cert_not_after_seconds"].value == cert.not_after
    assert abs(result["tls_cert_expiry_seconds"].value - in_days * DAY) < 60


def test_a_valid_certificate(site: Site) -> None:
    result = check(site)
    assert result["tls_up"].value == 1.0
    assert result["tls_chain_valid"].value == 1.0 and result["tls_hostname_valid"].value == 1.0
    assert_expires(result, site.certs[""], 30)
    assert 0.0 < result["tls_handshake_seconds"].value < 2.0
    assert result["tls_protocol_version"].value == 1.3
    assert all(s.error is None for s in result.values())


def test_the_name_is_checked_against_the_dns_names(site: Site) -> None:
    """Connecting to an address with a name: SNI is sent, the name's certificate checked."""
    result = check(site, "localhost")
    assert result["tls_chain_valid"].value == 1.0 and result["tls_hostname_valid"].value == 1.0


def test_a_certificate_expiring_in_three_days_is_still_valid(site: Site) -> None:
    result = check(site, "expiring.test")
    assert_expires(result, site.certs["expiring.test"], 3)
    assert result["tls_chain_valid"].value == 1.0 and result["tls_hostname_valid"].value == 1.0


def test_an_expired_certificate_still_reports_its_expiry(site: Site) -> None:
    result = check(site, "expired.test")
    assert result["tls_up"].value == 1.0
    assert_expires(result, site.certs["expired.test"], -2)
    assert result["tls_chain_valid"].value == 0.0
    assert result["tls_chain_valid"].error == (
        "certificate verify failed: certificate has expired "
        "(subject CN=expired.test,O=forewarn tests, issuer CN=forewarn test CA,O=forewarn tests)"
    )
    assert result["tls_hostname_valid"].value == 1.0 and result["tls_up"].error is None


def test_a_certificate_for_another_host(site: Site) -> None:
    result = check(site, "wrong.test")
    assert result["tls_chain_valid"].value == 1.0 and result["tls_chain_valid"].error is None
    assert result["tls_hostname_valid"].value == 0.0
    assert result["tls_hostname_valid"].error == (
        "certificate is not valid for wrong.test: it names elsewhere.test, *.elsewhere.test "
        "(subject CN=elsewhere.test,O=forewarn tests, issuer CN=forewarn test CA,O=forewarn tests)"
    )


def test_a_self_signed_certificate(site: Site) -> None:
    result = check(site, "self-signed.test")
    assert result["tls_up"].value == 1.0 and result["tls_hostname_valid"].value == 1.0
    assert result["tls_chain_valid"].value == 0.0
    assert (result["tls_chain_valid"].error or "").startswith(
        "certificate verify failed: self-signed certificate (subject CN=self-signed.test"
    )
    assert_expires(result, site.certs["self-signed.test"], 30)
    assert not math.isnan(result["tls_handshake_seconds"].value)


def test_a_certificate_from_an_unknown_ca(site: Site) -> None:
    result = check(site, "unknown-ca.test")
    assert result["tls_chain_valid"].value == 0.0
    assert (result["tls_chain_valid"].error or "").startswith(
        "certificate verify failed: unable to get local issuer certificate "
    )
    assert "issuer CN=someone else's CA" in (result["tls_chain_valid"].error or "")


def test_without_the_ca_file_the_system_store_does_not_know_the_test_ca(site: Site) -> None:
    probe = TlsProbe("tls", TlsProbe.Options(host="127.0.0.1", port=site.server.port))
    result = {s.metric: s for s in probe.collect(time.time())}
    assert result["tls_up"].value == 1.0 and result["tls_chain_valid"].value == 0.0


def test_a_closed_port_is_down_and_measures_nothing(site: Site) -> None:
    result = check(site, port=free_port())
    assert result["tls_up"].value == 0.0
    assert all(s.error == "connection refused" for s in result.values())
    assert all(math.isnan(s.value) for s in result.values() if s.metric != "tls_up")


def test_a_server_that_never_shakes_hands_times_out_on_time(site: Site) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # the kernel accepts; nobody talks
        started = time.monotonic()
        result = check(site, port=silent.getsockname()[1], timeout=Duration(0.3))
    assert 0.3 <= time.monotonic() - started < 1.0
    assert result["tls_up"].error == "timed out after 0.3s during the TLS handshake"


def test_a_server_that_does_not_speak_tls_is_a_short_tls_error(site: Site) -> None:
    with socket.create_server(("127.0.0.1", 0)) as plain:
        answer = threading.Thread(target=lambda: plain.accept()[0].sendall(b"220 hi\r\n" * 50))
        answer.start()
        result = check(site, port=plain.getsockname()[1], timeout=Duration(2))
        answer.join()
    error = result["tls_up"].error or ""
    assert error.startswith("TLS error during the TLS handshake: "), error
    assert "\n" not in error and "_ssl.c" not in error


@pytest.fixture(scope="module")
def smtp(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpTestServer]:
    context = site.certs[""].server_context(tmp_path_factory.mktemp("smtp"))
    with SmtpTestServer(tls_context=context) as server:
        yield server


def test_starttls_on_an_smtp_server(site: Site, smtp: SmtpTestServer) -> None:
    result = check(site, port=smtp.port, starttls="smtp")
    assert result["tls_up"].value == 1.0, result["tls_up"].error
    assert result["tls_chain_valid"].value == 1.0 and result["tls_hostname_valid"].value == 1.0
    assert_expires(result, site.certs[""], 30)


def test_an_smtp_server_without_starttls_says_so(site: Site) -> None:
    with SmtpTestServer() as plain:
        result = check(site, port=plain.port, starttls="smtp")
    assert result["tls_up"].error == "the SMTP server does not offer STARTTLS"


def test_starttls_to_a_silent_server_times_out(site: Site) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:
        result = check(site, port=silent.getsockname()[1], starttls="smtp", timeout=Duration(0.2))
    assert result["tls_up"].error == "timed out after 0.2s during the SMTP STARTTLS exchange"


def test_starttls_defaults_to_the_smtp_port() -> None:
    probe = TlsProbe("mail", TlsProbe.Options(host="mail.example.test", starttls="smtp"))
    assert probe.labels["target"] == "mail.example.test:25"
    assert TlsProbe("web", TlsProbe.Options(host="::1")).labels["target"] == "[::1]:443"


@pytest.mark.parametrize(
    ("names", "hostname", "valid"),
    [
        (("localhost", "127.0.0.1"), "LocalHost.", True),
        (("localhost", "127.0.0.1"), "127.0.0.1", True),
        (("localhost",), "127.0.0.1", False),  # an address needs an IP name, not a DNS one
        (("127.0.0.1",), "localhost", False),
        (("*.example.test",), "www.example.test", True),
        (("*.example.test",), "a.b.example.test", False),  # one label only
        (("*.example.test",), "example.test", False),
        (("*.test",), "example.test", False),  # never a whole top-level domain
        (("w*.example.test",), "www.example.test", False),  # no partial wildcards
        (("::1",), "::1", True),
        (("xn--bcher-kva.example",), "bücher.example", True),
        ((), "localhost", False),
    ],
)
def test_hostname_matching(names: tuple[str, ...], hostname: str, valid: bool) -> None:
    assert hostname_matches(self_signed(*names).cert, hostname) is valid


def test_the_probe_is_configured_from_toml(site: Site) -> None:
    config = parse_config(
        f"""
        [[probe]]
        name = "intranet-cert"
        kind = "tls"
        host = "127.0.0.1"
        port = {site.server.port}
        server_name = "expiring.test"
        ca_file = "{site.ca_file}"
        timeout = "3s"
        interval = "1h"
        """,
        "config.toml",
    )
    [probe] = config.probes
    assert probe.timeout == 4.0
    result = {s.metric: s for s in TlsProbe(probe.name, probe.options).collect(time.time())}
    assert result["tls_chain_valid"].value == 1.0
    assert_expires(result, site.certs["expiring.test"], 3)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"host": ""}, "host must not be empty"),
        ({"host": "h", "port": 0}, "port 0 is not a TCP port"),
        ({"host": "h", "starttls": "imap"}, "starttls 'imap' is not supported"),
        ({"host": "h", "server_name": " "}, "server_name must not be empty"),
        ({"host": "h", "ca_file": "no-such-ca.pem"}, "ca_file 'no-such-ca.pem' cannot be read"),
        ({"host": "h", "timeout": Duration(-1)}, "timeout must be more than 0s"),
    ],
)
def test_options_are_validated(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TlsProbe.Options(**options)


def test_a_ca_file_without_certificates_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ValueError, match="holds no PEM certificate"):
        TlsProbe.Options(host="h", ca_file=str(junk))
