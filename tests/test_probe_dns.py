"""The dns probe against a real DNS server on loopback (tests/dns_server.py), UDP and TCP."""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dns_server import DnsServer

import probes.dns
from monitor.config import parse_config
from probes.base import Duration, Sample
from probes.dns import DnsProbe

NOW = 1_700_000_000.0
ZONE = {
    "www.example.test": {"A": ["192.0.2.1", "192.0.2.2"], "AAAA": ["2001:db8::1"]},
    "alias.example.test": {"CNAME": ["www.example.test."]},
    "mail.example.test": {"MX": ["10 mx1.example.test.", "20 mx2.example.test."]},
    "text.example.test": {"TXT": ['"v=spf1 -all"']},
    "big.example.test": {"A": [f"192.0.2.{n}" for n in range(1, 101)]},
}


@pytest.fixture(scope="module")
def server() -> Iterator[DnsServer]:
    with DnsServer(ZONE) as running:
        running.rcodes["broken.example.test."] = "SERVFAIL"
        running.rcodes["refusing.example.test."] = "REFUSED"
        running.dropped.add("black-hole.example.test.")
        running.truncated.add("big.example.test.")
        yield running


def check(to: DnsServer | None, query_name: str, **options: Any) -> dict[str, Sample]:
    if to is not None:
        options = {"server": to.host, "port": to.port, **options}
    probe = DnsProbe("dns", DnsProbe.Options(query_name=query_name, **options))
    samples = probe.collect(NOW)
    assert all(s.labels == probe.labels and s.timestamp == NOW for s in samples)
    return {s.metric: s for s in samples}


def assert_down(result: dict[str, Sample], error: str, rcode: float) -> None:
    assert result["dns_up"].value == 0.0
    assert result["dns_up"].error == error
    assert result["dns_answers"].value == 0.0
    assert result["dns_rcode"].value == rcode


def test_a_name_resolves_with_its_answers_and_time(server: DnsServer) -> None:
    result = check(server, "www.example.test")
    assert result["dns_up"].value == 1.0
    assert result["dns_answers"].value == 2.0
    assert result["dns_rcode"].value == 0.0
    assert 0.0 < result["dns_lookup_seconds"].value < 2.0
    assert "dns_expect_matched" not in result  # nothing was expected
    assert all(s.error is None for s in result.values())
    assert result["dns_up"].labels == {
        "name": "www.example.test",
        "type": "A",
        "server": f"127.0.0.1:{server.port}",
    }


def test_expected_answers_match_in_any_order(server: DnsServer) -> None:
    result = check(server, "www.example.test", expect=["192.0.2.2", "192.0.2.1"])
    assert result["dns_up"].value == 1.0 and result["dns_expect_matched"].value == 1.0
    # Compared as records, not as text: an IPv6 address however it is written
    aaaa = check(server, "www.example.test", record_type="aaaa", expect=["2001:0db8:0::1"])
    assert aaaa["dns_up"].value == 1.0 and aaaa["dns_up"].labels["type"] == "AAAA"


def test_a_missing_expected_answer_is_down_and_says_which(server: DnsServer) -> None:
    result = check(server, "www.example.test", expect=["192.0.2.1", "192.0.2.9"])
    assert result["dns_up"].value == 0.0 and result["dns_expect_matched"].value == 0.0
    assert result["dns_answers"].value == 2.0
    assert result["dns_up"].error == (
        "expected answers missing: 192.0.2.9; got 192.0.2.1, 192.0.2.2"
    )
    assert all(s.error == result["dns_up"].error for s in result.values())


def test_a_cname_is_followed_to_the_records_asked_for(server: DnsServer) -> None:
    result = check(server, "alias.example.test", expect=["192.0.2.1"])
    assert result["dns_up"].value == 1.0 and result["dns_answers"].value == 2.0
    cname = check(server, "alias.example.test", record_type="CNAME", expect=["www.example.test"])
    assert cname["dns_up"].value == 1.0 and cname["dns_answers"].value == 1.0


def test_mx_and_txt_answers_are_written_as_in_a_zone_file(server: DnsServer) -> None:
    mx = check(server, "mail.example.test", record_type="MX", expect=["20 MX2.example.test."])
    assert mx["dns_up"].value == 1.0
    txt = check(server, "text.example.test", record_type="TXT", expect=['"v=spf1 -all"'])
    assert txt["dns_up"].value == 1.0


def test_nxdomain_is_down_with_its_rcode(server: DnsServer) -> None:
    result = check(server, "nope.example.test")
    where = f"127.0.0.1:{server.port}"
    assert_down(result, f"nope.example.test. does not exist (NXDOMAIN from {where})", 3.0)
    assert not math.isnan(result["dns_lookup_seconds"].value)  # an answer came, and fast


@pytest.mark.parametrize(
    ("name", "error", "rcode"),
    [("broken.example.test", "SERVFAIL", 2.0), ("refusing.example.test", "REFUSED", 5.0)],
)
def test_a_server_failure_is_down_with_its_rcode(
    server: DnsServer, name: str, error: str, rcode: float
) -> None:
    assert_down(check(server, name), f"{error} from 127.0.0.1:{server.port}", rcode)


def test_no_records_of_the_type_is_down(server: DnsServer) -> None:
    result = check(server, "mail.example.test", record_type="A")
    assert_down(result, f"no A record for mail.example.test. (from 127.0.0.1:{server.port})", 0)


@pytest.mark.parametrize("protocol", ["udp", "tcp"])
def test_an_unanswered_query_times_out_on_time(server: DnsServer, protocol: str) -> None:
    started = time.monotonic()
    result = check(server, "black-hole.example.test", protocol=protocol, timeout=Duration(0.3))
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 1.0
    assert result["dns_up"].value == 0.0
    assert result["dns_up"].error == f"timed out after 0.3s waiting for 127.0.0.1:{server.port}"
    for metric in ("dns_lookup_seconds", "dns_answers", "dns_rcode"):
        assert math.isnan(result[metric].value) and result[metric].error == result["dns_up"].error


def test_tcp_is_used_when_asked(server: DnsServer) -> None:
    before = len(server.queries)
    assert check(server, "www.example.test", protocol="tcp")["dns_up"].value == 1.0
    assert server.queries[before:] == [("tcp", "www.example.test.", "A")]


def test_a_truncated_udp_answer_is_asked_again_over_tcp(server: DnsServer) -> None:
    before = len(server.queries)
    result = check(server, "big.example.test", expect=["192.0.2.100"])
    assert result["dns_up"].value == 1.0 and result["dns_answers"].value == 100.0
    assert [q[0] for q in server.queries[before:]] == ["udp", "tcp"]


@pytest.mark.parametrize(
    ("protocol", "kind"), [("udp", socket.SOCK_DGRAM), ("tcp", socket.SOCK_STREAM)]
)
def test_a_closed_port_is_refused_at_once(protocol: str, kind: int) -> None:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    result = check(None, "www.example.test", server="127.0.0.1", port=port, protocol=protocol)
    assert time.monotonic() - started < 1.0  # not the 5s timeout
    assert result["dns_up"].error == f"connection refused from 127.0.0.1:{port}"


def test_without_a_server_the_system_resolvers_are_asked_in_turn(
    server: DnsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first nameserver never answers (the zone drops nothing, but a bound, silent UDP
    socket does); the second is the test server."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.2", server.port))
        resolv_conf = tmp_path / "resolv.conf"
        resolv_conf.write_text("search example.test\nnameserver 127.0.0.2\nnameserver 127.0.0.1\n")
        monkeypatch.setattr(probes.dns, "RESOLV_CONF", str(resolv_conf))
        result = check(None, "www.example.test", port=server.port, timeout=Duration(0.6))
    assert result["dns_up"].value == 1.0, result["dns_up"].error
    assert 0.3 <= result["dns_lookup_seconds"].value < 0.6  # half the time went to the first
    assert result["dns_up"].labels["server"] == f"system:{server.port}"


def test_without_any_nameserver_the_error_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolv_conf = tmp_path / "resolv.conf"
    resolv_conf.write_text("# nothing here\n")
    monkeypatch.setattr(probes.dns, "RESOLV_CONF", str(resolv_conf))
    result = check(None, "www.example.test")
    assert result["dns_up"].value == 0.0
    assert result["dns_up"].error == f"no nameserver configured in {resolv_conf}"


def test_the_probe_is_configured_from_toml(server: DnsServer) -> None:
    config = parse_config(
        f"""
        [[probe]]
        name = "intranet-dns"
        kind = "dns"
        query_name = "www.example.test"
        server = "127.0.0.1"
        port = {server.port}
        expect = ["192.0.2.1"]
        timeout = "2s"
        interval = "30s"
        """,
        "config.toml",
    )
    [probe] = config.probes
    assert probe.timeout == 3.0  # the probe's own 2s, and a second of grace for the scheduler
    samples = DnsProbe(probe.name, probe.options).collect(NOW)
    assert samples[0].metric == "dns_up" and samples[0].value == 1.0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"query_name": "a..b"}, "query_name 'a..b' is not a DNS name"),
        ({"query_name": "x.test", "record_type": "BOGUS"}, "'BOGUS' is not a DNS record type"),
        ({"query_name": "x.test", "record_type": "ANY"}, "is a query meta-type"),
        ({"query_name": "x.test", "server": "dns.example"}, "is not an IP address"),
        ({"query_name": "x.test", "port": 0}, "is not a TCP port"),
        ({"query_name": "x.test", "protocol": "quic"}, "is not one of udp, tcp"),
        (
            {"query_name": "x.test", "expect": ["300.1.1.1"]},
            "expect '300.1.1.1' is not valid A data",
        ),
        ({"query_name": "x.test", "timeout": Duration(0)}, "timeout must be more than 0s"),
    ],
)
def test_options_are_validated(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DnsProbe.Options(**options)
