"""The tcp probe against real loopback servers: a banner, a conversation, silence, a full
backlog, a closed port, TLS; and a hanging target that holds up no other probe."""

from __future__ import annotations

import itertools
import math
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from certs import CertificateAuthority
from http_service import free_port
from probe_helpers import TcpServer

from monitor.config import parse_config
from monitor.metrics import Metrics
from monitor.scheduler import ProbeScheduler, ScheduledProbe
from probes.base import PROBE_UP, Duration, Sample
from probes.tcp import TcpProbe

NOW = 1_700_000_000.0
BANNER = b"SSH-2.0-forewarn_test\r\n"


def banner_then_answer(conn: socket.socket, stopping: threading.Event) -> None:
    """Says its banner, then answers HELLO with WORLD; closes on QUIT."""
    conn.sendall(BANNER)
    for line in conn.makefile("rb"):
        if line.strip() == b"HELLO":
            conn.sendall(b"WORLD\r\n")
        if line.strip() == b"QUIT":
            return


def silent(conn: socket.socket, stopping: threading.Event) -> None:
    stopping.wait(30)  # accepts, and never says a word


def greet_and_hang_up(conn: socket.socket, stopping: threading.Event) -> None:
    conn.sendall(b"220 busy, go away\r\n")


def chatter(conn: socket.socket, stopping: threading.Event) -> None:
    conn.sendall(b"x" * 10_000)
    stopping.wait(30)


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, TcpServer]]:
    talks = {
        "banner": banner_then_answer,
        "silent": silent,
        "hang_up": greet_and_hang_up,
        "chatter": chatter,
    }
    running = {name: TcpServer(talk) for name, talk in talks.items()}
    yield running
    for server in running.values():
        server.stop()


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TcpServer, Path]]:
    ca = CertificateAuthority()
    directory = tmp_path_factory.mktemp("tls")
    server = TcpServer(banner_then_answer, ca.issue("127.0.0.1").server_context(directory))
    yield server, ca.write(directory)
    server.stop()


def check(port: int, **options: Any) -> dict[str, Sample]:
    probe = TcpProbe("tcp", TcpProbe.Options(host="127.0.0.1", port=port, **options))
    samples = probe.collect(NOW)
    assert all(s.labels == {"target": f"127.0.0.1:{port}"} for s in samples)
    assert all(s.timestamp == NOW for s in samples)
    return {s.metric: s for s in samples}


def test_a_listening_port_is_up(servers: dict[str, TcpServer]) -> None:
    result = check(servers["banner"].port)
    assert set(result) == {"tcp_up", "tcp_connect_seconds"}  # nothing to send or expect
    assert result["tcp_up"].value == 1.0 and result["tcp_up"].error is None
    assert 0.0 < result["tcp_connect_seconds"].value < 1.0


def test_a_closed_port_is_connection_refused() -> None:
    result = check(free_port())
    assert result["tcp_up"].value == 0.0
    assert result["tcp_up"].error == "connection refused"
    assert math.isnan(result["tcp_connect_seconds"].value)


def test_the_banner_is_matched(servers: dict[str, TcpServer]) -> None:
    result = check(servers["banner"].port, expect=r"^SSH-2\.0-")
    assert result["tcp_up"].value == 1.0 and result["tcp_expect_matched"].value == 1.0
    assert 0.0 <= result["tcp_response_seconds"].value < 1.0
    assert all(s.error is None for s in result.values())


def test_a_different_banner_is_down_with_what_was_said(servers: dict[str, TcpServer]) -> None:
    result = check(servers["hang_up"].port, expect="^SSH-")
    assert result["tcp_up"].value == 0.0 and result["tcp_expect_matched"].value == 0.0
    assert result["tcp_up"].error == (
        'connection closed before a match for "^SSH-"; got "220 busy, go away\\r\\n"'
    )
    assert not math.isnan(result["tcp_connect_seconds"].value)  # it did connect


def test_an_answer_to_what_was_sent_is_matched(servers: dict[str, TcpServer]) -> None:
    result = check(servers["banner"].port, send="HELLO\r\n", expect="WORLD")
    assert result["tcp_up"].value == 1.0 and result["tcp_expect_matched"].value == 1.0


def test_send_without_expect_times_the_first_response(servers: dict[str, TcpServer]) -> None:
    result = check(servers["banner"].port, send="QUIT\r\n")
    assert result["tcp_up"].value == 1.0 and "tcp_expect_matched" not in result
    assert 0.0 <= result["tcp_response_seconds"].value < 1.0


def test_no_match_within_the_read_limit(servers: dict[str, TcpServer]) -> None:
    result = check(servers["chatter"].port, expect="^220 ", read_bytes=100)
    assert result["tcp_up"].value == 0.0 and result["tcp_expect_matched"].value == 0.0
    assert result["tcp_up"].error == f'no match for "^220 " in the first 100 bytes: "{"x" * 64}"…'


def test_a_server_that_never_answers_times_out_on_time(servers: dict[str, TcpServer]) -> None:
    started = time.monotonic()
    result = check(servers["silent"].port, expect="^SSH-", timeout=Duration(0.3))
    assert 0.3 <= time.monotonic() - started < 1.0
    assert result["tcp_up"].value == 0.0 and result["tcp_expect_matched"].value == 0.0
    assert result["tcp_up"].error == "timed out after 0.3s while waiting for the banner"
    assert math.isnan(result["tcp_response_seconds"].value)


def test_silence_after_sending_is_a_timeout_waiting_for_a_response(
    servers: dict[str, TcpServer],
) -> None:
    result = check(servers["silent"].port, send="HELLO\r\n", timeout=Duration(0.2))
    assert result["tcp_up"].error == "timed out after 0.2s while waiting for a response"


def test_a_full_backlog_times_out_while_connecting() -> None:
    """A listener that never accepts, with its one-connection backlog taken: the kernel
    drops the next SYN, as a firewall or a dead host would."""
    with socket.socket() as listener, socket.socket() as first:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        first.connect(listener.getsockname())
        started = time.monotonic()
        result = check(listener.getsockname()[1], timeout=Duration(0.3))
    assert 0.3 <= time.monotonic() - started < 1.0
    assert result["tcp_up"].error == "timed out after 0.3s while connecting"


def test_tls_banner_with_a_trusted_certificate(
    tls_server: tuple[TcpServer, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, ca_file = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # the test CA is the system's trust store
    result = check(server.port, tls=True, expect="^SSH-")
    assert result["tcp_up"].value == 1.0 and result["tcp_expect_matched"].value == 1.0
    assert all(s.error is None for s in result.values())


def test_tls_with_an_unknown_ca_fails_unless_verification_is_off(
    tls_server: tuple[TcpServer, Path],
) -> None:
    server, _ = tls_server
    result = check(server.port, tls=True)
    assert result["tcp_up"].error == (
        "TLS error during the TLS handshake: "
        "certificate verify failed: unable to get local issuer certificate"
    )
    assert check(server.port, tls=True, verify_tls=False)["tcp_up"].value == 1.0


def test_tls_to_a_plain_server_is_a_short_tls_error(servers: dict[str, TcpServer]) -> None:
    error = check(servers["banner"].port, tls=True, timeout=Duration(2))["tcp_up"].error or ""
    assert error.startswith("TLS error during the TLS handshake: "), error
    assert "\n" not in error and "_ssl.c" not in error


def test_a_hanging_target_holds_up_no_other_probe(servers: dict[str, TcpServer]) -> None:
    """Both probes run through the real scheduler every 0.5s: the one whose target never
    answers reports its own timeout each run, and the other keeps its schedule."""
    answering = TcpProbe(
        "answering", TcpProbe.Options(host="127.0.0.1", port=servers["banner"].port, expect="^SSH")
    )
    options = TcpProbe.Options(
        host="127.0.0.1", port=servers["silent"].port, expect="^SSH", timeout=Duration(0.3)
    )
    hanging = TcpProbe("hanging", options)
    batches: dict[str, list[list[Sample]]] = {"answering": [], "hanging": []}
    scheduler = ProbeScheduler(lambda name, samples: batches[name].append(samples), Metrics())
    scheduler.start(
        [
            ScheduledProbe(answering, interval=0.5, timeout=11.0, jitter=0.0),
            ScheduledProbe(hanging, interval=0.5, timeout=1.3, jitter=0.0),
        ]
    )
    try:
        time.sleep(2.3)
    finally:
        scheduler.shutdown()

    for name in ("answering", "hanging"):
        times = [batch[0].timestamp for batch in batches[name]]
        assert len(times) >= 4, name
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(0.4 < gap < 0.6 for gap in gaps), (name, gaps)
    hung_runs = [{s.metric: s for s in batch} for batch in batches["hanging"]]
    for run in hung_runs:
        assert run["tcp_up"].value == 0.0
        assert run["tcp_up"].error == "timed out after 0.3s while waiting for the banner"
        assert run[PROBE_UP].value == 1.0  # the probe returned on its own: never "hung"
    assert all({s.metric: s for s in b}["tcp_up"].value == 1.0 for b in batches["answering"])


def test_the_probe_is_configured_from_toml(servers: dict[str, TcpServer]) -> None:
    config = parse_config(
        f"""
        [[probe]]
        name = "ssh"
        kind = "tcp"
        host = "127.0.0.1"
        port = {servers["banner"].port}
        send = "HELLO\\r\\n"
        expect = "WORLD\\r\\n"
        timeout = "2s"
        """,
        "config.toml",
    )
    [probe] = config.probes
    assert probe.options.send == "HELLO\r\n" and probe.timeout == 3.0
    result = {s.metric: s for s in TcpProbe(probe.name, probe.options).collect(NOW)}
    assert result["tcp_up"].value == 1.0 and result["tcp_expect_matched"].value == 1.0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"host": "", "port": 22}, "host must not be empty"),
        ({"host": "h", "port": 70000}, "port 70000 is not a TCP port"),
        ({"host": "h", "port": 22, "expect": "(unclosed"}, "expect is not a regular expression"),
        ({"host": "h", "port": 22, "read_bytes": 0}, "read_bytes must be between 1 and"),
        ({"host": "h", "port": 22, "send": ""}, "send must not be empty"),
        ({"host": "h", "port": 22, "timeout": Duration(0)}, "timeout must be more than 0s"),
    ],
)
def test_options_are_validated(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TcpProbe.Options(**options)
