"""The ping probe with real ICMP echoes: on this machine's loopback, and inside network
namespaces made for the test (`unshare --net`), where the kernel can be told to ignore echoes
(loss), to allow unprivileged ping sockets, and where the process can lack CAP_NET_RAW.
No packet ever leaves loopback: a fresh namespace has nothing else.

A namespace test runs this file's `child()` in a Python started inside the namespace, which
prints the samples as JSON. For partial loss, `child()` starts a responder of its own: the
kernel ignores echoes there, and the responder answers the odd sequence numbers only.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from monitor.config import parse_config
from probes.base import Duration, Sample
from probes.ping import (
    ECHO_REPLY,
    ECHO_REQUEST,
    ICMP_HEADER,
    PingProbe,
    checksum,
    echo_request,
    parse_echo,
)

NOW = 1_700_000_000.0
FAST = {"echo_interval": Duration(0.02), "timeout": Duration(1)}
METRICS = [
    "ping_up",
    "ping_loss_percent",
    "ping_rtt_seconds",
    "ping_rtt_min_seconds",
    "ping_rtt_max_seconds",
]


def ping(host: str, **options: Any) -> dict[str, Sample]:
    probe = PingProbe("ping", PingProbe.Options(host=host, **{**FAST, **options}))
    samples = probe.collect(NOW)
    assert [s.metric for s in samples] == METRICS
    assert all(s.labels == {"target": host} and s.timestamp == NOW for s in samples)
    return {s.metric: s for s in samples}


def assert_all_answered(result: dict[str, Sample]) -> None:
    assert result["ping_up"].value == 1.0 and result["ping_loss_percent"].value == 0.0
    low, mean, high = (result[f"ping_rtt{m}_seconds"].value for m in ("_min", "", "_max"))
    assert 0.0 < low <= mean <= high < 0.5
    assert all(s.error is None for s in result.values())


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


# --- on this machine's loopback ------------------------------------------------------------------


def test_ping_ipv4_loopback() -> None:
    assert_all_answered(ping("127.0.0.1", count=3))


@pytest.mark.skipif(not has_ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
def test_ping_ipv6_loopback() -> None:
    assert_all_answered(ping("::1", count=3))


def test_a_name_is_resolved_in_the_family_asked_for() -> None:
    assert_all_answered(ping("localhost", ipv6=False, count=2))


def test_an_unknown_name_is_down_and_measures_nothing() -> None:
    result = ping("no-such-host.invalid")
    assert result["ping_up"].value == 0.0
    assert (result["ping_up"].error or "").startswith("DNS lookup of no-such-host.invalid failed")
    assert all(math.isnan(result[m].value) for m in METRICS[1:])


def test_the_echoes_are_spaced_by_the_echo_interval() -> None:
    started = time.monotonic()
    assert_all_answered(ping("127.0.0.1", count=4, echo_interval=Duration(0.1)))
    assert 0.3 <= time.monotonic() - started < 0.6  # three gaps, and no wait for the deadline


# --- in network namespaces of the test's own -----------------------------------------------------


SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def _bring_loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | IFF_UP))


def _answer_odd_echoes(ready: threading.Event, stop: threading.Event) -> None:
    """Replies to echo requests with an odd sequence number, the way the kernel would."""
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        sock.settimeout(0.05)
        ready.set()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                packet, (source, _) = sock.recvfrom(4096)
                echo = parse_echo(packet, socket.AF_INET, raw=True)
                if echo and echo.kind == ECHO_REQUEST[socket.AF_INET] and echo.sequence % 2:
                    unsummed = ICMP_HEADER.pack(0, 0, 0, echo.identifier, echo.sequence)
                    summed = ICMP_HEADER.pack(
                        0, 0, checksum(unsummed + echo.payload), echo.identifier, echo.sequence
                    )
                    sock.sendto(summed + echo.payload, (source, 0))


def child(spec: dict[str, Any]) -> None:
    """Runs inside the namespace: set it up, ping, print the samples as JSON."""
    _bring_loopback_up()
    for name, value in spec["sysctls"].items():
        Path("/proc/sys", name).write_text(value)
    ready, stop = threading.Event(), threading.Event()
    if spec["answer_odd"]:
        threading.Thread(target=_answer_odd_echoes, args=(ready, stop), daemon=True).start()
        assert ready.wait(5), "the responder did not start"
    options: dict[str, Any] = {
        k: Duration(v) if k in FAST else v for k, v in spec["options"].items()
    }
    samples = PingProbe("ping", PingProbe.Options(**options)).collect(NOW)
    stop.set()
    print(json.dumps([[s.metric, s.value, s.error] for s in samples]))


@pytest.fixture(scope="module")
def namespaces() -> Iterator[None]:
    if shutil.which("unshare") is None or shutil.which("setpriv") is None:
        pytest.skip("unshare and setpriv (util-linux) are needed for network namespaces")
    trial = subprocess.run(["unshare", "--net", "true"], capture_output=True, timeout=10)
    if trial.returncode != 0:
        pytest.skip(f"no network namespaces here (needs root): {trial.stderr.decode().strip()}")
    yield


def in_namespace(
    options: dict[str, Any],
    sysctls: dict[str, str] | None = None,
    without_net_raw: bool = False,
    answer_odd: bool = False,
) -> dict[str, tuple[float, str | None]]:
    spec = {"options": options, "sysctls": sysctls or {}, "answer_odd": answer_odd}
    here = str(Path(__file__).parent)
    code = f"import json, sys; sys.path.insert(0, {here!r}); import {__name__} as t; "
    code += "t.child(json.loads(sys.argv[1]))"
    command = [sys.executable, "-c", code, json.dumps(spec)]
    if without_net_raw:
        command = ["setpriv", "--inh-caps=-net_raw", "--bounding-set=-net_raw", "--", *command]
    done = subprocess.run(
        ["unshare", "--net", "--", *command], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return {metric: (value, error) for metric, value, error in json.loads(done.stdout)}


def test_total_loss_is_down_after_the_timeout(namespaces: None) -> None:
    ignoring = {"net/ipv4/icmp_echo_ignore_all": "1"}
    options = {"host": "127.0.0.1", "count": 3, "echo_interval": 0.05, "timeout": 0.4}
    result = in_namespace(options, ignoring)
    assert result["ping_up"] == (0.0, "no reply to 3 echo requests within 0.4s")
    assert result["ping_loss_percent"][0] == 100.0
    assert all(math.isnan(result[m][0]) for m in METRICS[2:])


def test_total_loss_over_ipv6(namespaces: None) -> None:
    ignoring = {"net/ipv6/icmp/echo_ignore_all": "1"}
    options = {"host": "::1", "count": 1, "echo_interval": 0.05, "timeout": 0.3}
    result = in_namespace(options, ignoring)
    assert result["ping_up"] == (0.0, "no reply to 1 echo request within 0.3s")


def test_partial_loss_through_an_unprivileged_ping_socket(namespaces: None) -> None:
    """The kernel ignores echoes; the responder answers 1 and 3 of 4. The process's group is
    allowed ping sockets, which the probe prefers over raw ones."""
    sysctls = {"net/ipv4/icmp_echo_ignore_all": "1", "net/ipv4/ping_group_range": "0 0"}
    options = {"host": "127.0.0.1", "count": 4, "echo_interval": 0.05, "timeout": 0.5}
    result = in_namespace(options, sysctls, answer_odd=True)
    assert result["ping_up"] == (1.0, None)
    assert result["ping_loss_percent"] == (50.0, None)
    assert 0.0 < result["ping_rtt_min_seconds"][0] <= result["ping_rtt_max_seconds"][0] < 0.5


def test_no_root_needed_where_ping_group_range_allows(namespaces: None) -> None:
    """Without CAP_NET_RAW a raw socket is impossible: the replies came through a ping socket."""
    options = {"host": "127.0.0.1", "count": 2, **{k: float(v) for k, v in FAST.items()}}
    result = in_namespace(options, {"net/ipv4/ping_group_range": "0 0"}, without_net_raw=True)
    assert result["ping_up"] == (1.0, None) and result["ping_loss_percent"][0] == 0.0


def test_neither_ping_sockets_nor_cap_net_raw_is_a_clear_error(namespaces: None) -> None:
    options = {"host": "127.0.0.1", "count": 1, **{k: float(v) for k, v in FAST.items()}}
    result = in_namespace(options, {"net/ipv4/ping_group_range": "1 0"}, without_net_raw=True)
    assert result["ping_up"] == (
        0.0,
        f"ICMP is not permitted: group {os.getegid()} is outside net.ipv4.ping_group_range "
        "(1 0) and the process lacks CAP_NET_RAW; widen the sysctl net.ipv4.ping_group_range "
        "or grant CAP_NET_RAW",
    )
    assert math.isnan(result["ping_loss_percent"][0])


# --- packets, options, config --------------------------------------------------------------------


def test_checksum_of_a_known_echo_request() -> None:
    """An echo request without payload, identifier 0x1234, sequence 1: its checksum is the
    complement of 0x0800 + 0x1234 + 0x0001, 0xe5ca."""
    packet = echo_request(socket.AF_INET, 0x1234, 1, b"")
    assert packet == bytes.fromhex("0800e5ca12340001")
    assert checksum(packet) == 0  # a correct checksum sums to zero
    assert checksum(b"\x01") == 0xFEFF  # an odd length is padded with a zero byte


def test_an_echo_round_trips_through_the_parser() -> None:
    packet = echo_request(socket.AF_INET6, 7, 42, b"token")
    echo = parse_echo(packet, socket.AF_INET6, raw=True)
    assert echo is not None
    assert (echo.kind, echo.identifier, echo.sequence, echo.payload) == (128, 7, 42, b"token")
    ip_header = bytes([0x45]) + bytes(19)  # a raw IPv4 socket also gets the IP header
    reply = parse_echo(ip_header + echo_request(socket.AF_INET, 7, 42, b"x"), socket.AF_INET, True)
    assert reply is not None and reply.sequence == 42 and reply.payload == b"x"
    assert parse_echo(b"\x00\x00", socket.AF_INET, raw=False) is None
    assert ECHO_REPLY == {socket.AF_INET: 0, socket.AF_INET6: 129}


def test_the_probe_is_configured_from_toml() -> None:
    config = parse_config(
        """
        [[probe]]
        name = "gateway"
        kind = "ping"
        host = "127.0.0.1"
        count = 2
        echo_interval = "0s"
        timeout = "2s"
        """,
        "config.toml",
    )
    [probe] = config.probes
    assert probe.timeout == 3.0
    assert_all_answered({s.metric: s for s in PingProbe(probe.name, probe.options).collect(NOW)})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"host": ""}, "host must not be empty"),
        ({"host": "h", "count": 0}, "count must be between 1 and 100"),
        ({"host": "h", "echo_interval": Duration(-1)}, "echo_interval must not be negative"),
        ({"host": "h", "count": 11, "echo_interval": Duration(0.5)}, r"longer than \(count - 1\)"),
        ({"host": "h", "timeout": Duration(0)}, "timeout must be more than 0s"),
    ],
)
def test_options_are_validated(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PingProbe.Options(**options)
