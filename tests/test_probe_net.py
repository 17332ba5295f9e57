"""The net probe on this machine's real interfaces (psutil on the real /proc/net/dev), with
real traffic sent over the loopback interface."""

import math
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from probe_helpers import TcpServer, by_metric, only

from probes.net import (
    SPEED,
    UP,
    NetProbe,
    default_interfaces,
    rates,
    state_samples,
)

NOW = 1_700_000_000.0
SENT_BYTES = 4 * 1024 * 1024
RATES = (
    "net_receive_bytes_per_second",
    "net_transmit_bytes_per_second",
    "net_receive_errors_per_second",
    "net_transmit_errors_per_second",
    "net_receive_drops_per_second",
    "net_transmit_drops_per_second",
)

Stats = type(next(iter(psutil.net_if_stats().values())))
Counters = type(next(iter(psutil.net_io_counters(pernic=True).values())))


def probe(**options: Any) -> NetProbe:
    return NetProbe("net", NetProbe.Options(**options))


def stats(flags: str, speed: int = 0) -> Any:
    isup = "running" in flags.split(",")
    return Stats(isup, psutil.NIC_DUPLEX_UNKNOWN, speed, 1500, flags)


def counters(**values: int) -> Any:
    return Counters(**{name: values.get(name, 0) for name in Counters._fields})


def drain(connection: socket.socket, stopping: threading.Event) -> None:
    while connection.recv(65536):
        pass


@pytest.fixture(scope="module")
def sink() -> Iterator[int]:
    """A TCP server on the loopback interface that reads and drops whatever it is sent."""
    with TcpServer(drain) as server:
        yield server.port


def send_through_loopback(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.sendall(b"x" * SENT_BYTES)
        connection.shutdown(socket.SHUT_WR)
        connection.recv(1)  # the server closes once it has read everything


# --- the real machine -----------------------------------------------------------------------


def test_traffic_over_loopback_is_counted_both_ways(sink: int) -> None:
    started = time.monotonic()
    watching = probe(interfaces=["lo"])
    send_through_loopback(sink)
    samples = watching.collect(NOW)
    elapsed = time.monotonic() - started
    assert {s.labels["interface"] for s in samples} == {"lo"}
    assert only(samples, UP).value == 1.0
    # The probe's window lies inside `elapsed`: what it counted needs at least this rate.
    for direction in ("receive", "transmit"):
        assert only(samples, f"net_{direction}_bytes_per_second").value >= SENT_BYTES / elapsed
    assert SPEED not in by_metric(samples)  # loopback has no link speed


def test_every_rate_of_every_interface_is_a_finite_non_negative_number() -> None:
    samples = probe(interfaces=list(psutil.net_if_stats())).collect(NOW)
    grouped = by_metric(samples)
    names = {s.labels["interface"] for s in grouped[UP]}
    for metric in RATES:
        assert {s.labels["interface"] for s in grouped[metric]} == names
        assert all(math.isfinite(s.value) and s.value >= 0 for s in grouped[metric])
    assert all(s.timestamp == NOW and s.error is None for s in samples)


def test_by_default_loopback_and_administratively_down_interfaces_are_left_out() -> None:
    reported = {s.labels["interface"] for s in probe().collect(NOW)}
    expected = {
        name
        for name, stats in psutil.net_if_stats().items()
        if "up" in stats.flags.split(",") and "loopback" not in stats.flags.split(",")
    }
    assert reported == expected
    assert "lo" not in reported


def test_up_agrees_with_the_carrier_the_kernel_reports_in_sysfs() -> None:
    checked = 0
    for sample in by_metric(probe().collect(NOW)).get(UP, []):
        carrier = Path("/sys/class/net") / sample.labels["interface"] / "carrier"
        try:
            has_carrier = carrier.read_text().strip() == "1"
        except OSError:  # unreadable while the interface is down
            continue
        assert sample.value == (1.0 if has_carrier else 0.0), sample.labels
        checked += 1
    assert checked or not psutil.net_if_stats().keys() - {"lo"}


def test_an_interface_that_does_not_exist_is_down_with_an_error() -> None:
    [sample] = probe(interfaces=["nosuch0"]).collect(NOW)
    assert (sample.metric, sample.value) == (UP, 0.0)
    assert sample.labels == {"interface": "nosuch0"} and sample.error == "no such interface"


# --- the figures ----------------------------------------------------------------------------


def test_default_interfaces_skip_loopback_down_and_excluded_ones() -> None:
    all_stats = {
        "eth0": stats("up,broadcast,running,multicast", 1000),
        "eth1": stats("up,broadcast,multicast"),  # cable out: watched, and reported down
        "lo": stats("up,loopback,running"),
        "ifb0": stats("broadcast,noarp"),  # administratively down
        "veth1a2b": stats("up,broadcast,running,multicast"),
    }
    assert default_interfaces(all_stats, []) == ["eth0", "eth1", "veth1a2b"]
    assert default_interfaces(all_stats, ["veth*"]) == ["eth0", "eth1"]


def test_link_state_and_speed_in_bits_per_second() -> None:
    up = {s.metric: s.value for s in state_samples("eth0", stats("up,running", 1000), NOW)}
    assert up == {UP: 1.0, SPEED: 1e9}
    down = {s.metric: s.value for s in state_samples("eth1", stats("up"), NOW)}
    assert down == {UP: 0.0}  # no speed known: no sample rather than a misleading 0


def test_rates_are_deltas_over_the_window() -> None:
    before = counters(bytes_recv=1000, bytes_sent=500, errin=1, dropout=2)
    after = counters(bytes_recv=3000, bytes_sent=1500, errin=5, dropout=2)
    figures = rates(before, after, 2.0)
    assert figures is not None
    assert figures["net_receive_bytes_per_second"] == 1000.0
    assert figures["net_transmit_bytes_per_second"] == 500.0
    assert figures["net_receive_errors_per_second"] == 2.0
    assert figures["net_transmit_drops_per_second"] == 0.0


def test_counters_that_went_backwards_give_no_rates() -> None:
    assert rates(counters(bytes_recv=3000), counters(bytes_recv=10), 1.0) is None


def test_interfaces_and_exclusions_do_not_mix() -> None:
    with pytest.raises(ValueError, match="not both"):
        NetProbe.Options(interfaces=["eth0"], exclude_interfaces=["veth*"])
