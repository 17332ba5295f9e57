"""An ICMP echo check: is a host reachable, how many echoes get lost, how long the round trip.

No root is needed where the kernel allows unprivileged ICMP: an ICMP datagram socket ("ping
socket") is open to processes whose group is inside the sysctl net.ipv4.ping_group_range (it
covers IPv6 too; many distributions open it to all groups). Elsewhere a raw socket is used,
which needs root or CAP_NET_RAW (e.g. `AmbientCapabilities=CAP_NET_RAW` in the systemd unit).
With neither, every check says so in its error.

Each check sends `count` echo requests `echo_interval` apart and waits for the replies until
`timeout` has passed since the first one was sent; a reply after that counts as lost. Each
check uses a fresh socket and a random token in the payload, so a late reply to an earlier
check, or another ping on the machine, is never counted.

Options:
    host            a name or an address
    count           echo requests per check (default 3)
    echo_interval   time between two requests (default 0.2s)
    ipv6            true: IPv6 only, false: IPv4 only; default the name's first address
    timeout         the whole check (default 5s)

Metrics, labelled {"target": host}:
    ping_up                1 when at least one reply came back, else 0 with the reason
    ping_loss_percent      echo requests without a reply, in percent
    ping_rtt_seconds       mean round trip of the replies (NaN without replies)
    ping_rtt_min_seconds   the fastest round trip
    ping_rtt_max_seconds   the slowest round trip
When no request could be sent (name unknown, ICMP not permitted) only ping_up is a number.

Example:
    [[probe]]
    name = "gateway"
    kind = "ping"
    host = "192.0.2.1"
    count = 5
"""

import logging
import math
import os
import socket
import statistics
import struct
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from probes.base import Duration, Sample
from probes.tcp import CheckFailed, check_endpoint, os_reason

log = logging.getLogger(__name__)

UP = "ping_up"
LOSS_PERCENT = "ping_loss_percent"
RTT_SECONDS = "ping_rtt_seconds"
RTT_MIN_SECONDS = "ping_rtt_min_seconds"
RTT_MAX_SECONDS = "ping_rtt_max_seconds"
DEFAULT_TIMEOUT = Duration(5)
DEFAULT_ECHO_INTERVAL = Duration(0.2)
MAX_COUNT = 100
PING_GROUP_RANGE = "/proc/sys/net/ipv4/ping_group_range"
PAYLOAD_BYTES = 56  # as ping(8) sends: 64 bytes with the ICMP header
TOKEN_BYTES = 16
NAN = math.nan
Address = tuple[Any, ...]  # (host, port) or (host, port, flowinfo, scope id)

ICMP_HEADER = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence
PROTOCOLS = {socket.AF_INET: socket.IPPROTO_ICMP, socket.AF_INET6: socket.IPPROTO_ICMPV6}
ECHO_REQUEST = {socket.AF_INET: 8, socket.AF_INET6: 128}
ECHO_REPLY = {socket.AF_INET: 0, socket.AF_INET6: 129}


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071): ones' complement of the ones' complement sum."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_request(
    family: socket.AddressFamily, identifier: int, sequence: int, payload: bytes
) -> bytes:
    """An ICMP or ICMPv6 echo request. The kernel fills in an ICMPv6 checksum itself (it
    covers a pseudo-header), and a ping socket's identifier."""
    kind = ECHO_REQUEST[family]
    unsummed = ICMP_HEADER.pack(kind, 0, 0, identifier, sequence) + payload
    return ICMP_HEADER.pack(kind, 0, checksum(unsummed), identifier, sequence) + payload


@dataclass(frozen=True)
class Echo:
    kind: int
    identifier: int
    sequence: int
    payload: bytes


def parse_echo(packet: bytes, family: socket.AddressFamily, raw: bool) -> Echo | None:
    """The ICMP message in a received packet; a raw IPv4 socket also gets the IP header."""
    if raw and family == socket.AF_INET and packet:
        packet = packet[(packet[0] & 0x0F) * 4 :]
    if len(packet) < ICMP_HEADER.size:
        return None
    kind, _code, _sum, identifier, sequence = ICMP_HEADER.unpack_from(packet)
    return Echo(kind, identifier, sequence, packet[ICMP_HEADER.size :])


def _group_range() -> str:
    try:
        with open(PING_GROUP_RANGE, encoding="ascii") as file:
            return " ".join(file.read().split())
    except OSError:
        return "unknown"


def not_permitted() -> str:
    return (
        f"ICMP is not permitted: group {os.getegid()} is outside net.ipv4.ping_group_range "
        f"({_group_range()}) and the process lacks CAP_NET_RAW; widen the sysctl "
        "net.ipv4.ping_group_range or grant CAP_NET_RAW"
    )


def open_icmp_socket(family: socket.AddressFamily) -> tuple[socket.socket, bool]:
    """(socket, whether it is raw): a ping socket where permitted, else a raw one."""
    try:
        return socket.socket(family, socket.SOCK_DGRAM, PROTOCOLS[family]), False
    except OSError:  # EACCES outside ping_group_range; EPROTONOSUPPORT on old kernels
        pass
    try:
        return socket.socket(family, socket.SOCK_RAW, PROTOCOLS[family]), True
    except PermissionError:
        raise CheckFailed(not_permitted()) from None
    except OSError as exc:
        raise CheckFailed(f"cannot open an ICMP socket: {os_reason(exc)}") from None


def _family(ipv6: bool | None) -> socket.AddressFamily:
    if ipv6 is None:
        return socket.AF_UNSPEC
    return socket.AF_INET6 if ipv6 else socket.AF_INET


def resolve(host: str, ipv6: bool | None) -> tuple[socket.AddressFamily, Address]:
    """(address family, socket address) of the host's first address of the wanted family."""
    try:
        found = socket.getaddrinfo(host, None, _family(ipv6), socket.SOCK_RAW)
    except socket.gaierror as exc:
        raise CheckFailed(f"DNS lookup of {host} failed: {exc.strerror}") from None
    usable = [(family, address) for family, _, _, _, address in found if family in PROTOCOLS]
    if not usable:
        raise CheckFailed(f"{host} has no {'IPv6' if ipv6 else 'IPv4'} address")
    return usable[0]


@dataclass
class Exchange:
    """One check's echoes: when each request left, the round trip of each reply."""

    sent: dict[int, float] = field(default_factory=dict)
    round_trips: dict[int, float] = field(default_factory=dict)
    send_error: str | None = None


class PingProbe:
    kind: ClassVar[str] = "ping"

    @dataclass(frozen=True)
    class Options:
        host: str
        count: int = 3
        echo_interval: Duration = DEFAULT_ECHO_INTERVAL
        ipv6: bool | None = None
        timeout: Duration = DEFAULT_TIMEOUT

        def __post_init__(self) -> None:
            check_endpoint(self.host, 1, self.timeout)  # ICMP has no port
            if not 0 < self.count <= MAX_COUNT:
                raise ValueError(f"count must be between 1 and {MAX_COUNT}")
            if self.echo_interval < 0:
                raise ValueError("echo_interval must not be negative")
            if (self.count - 1) * self.echo_interval >= self.timeout:
                raise ValueError(
                    "timeout must be longer than (count - 1) × echo_interval, the time it "
                    "takes to send the echo requests"
                )

    def __init__(self, name: str, options: Options) -> None:
        self.name = name
        self.options = options
        self.labels = {"target": options.host}

    def collect(self, now: float) -> list[Sample]:
        try:
            exchange = self._ping()
        except CheckFailed as exc:
            unmeasured = (LOSS_PERCENT, RTT_SECONDS, RTT_MIN_SECONDS, RTT_MAX_SECONDS)
            return [
                Sample(UP, 0.0, now, self.labels, str(exc)),
                *(Sample(metric, NAN, now, self.labels, str(exc)) for metric in unmeasured),
            ]
        return self._samples(now, exchange)

    def _samples(self, now: float, exchange: Exchange) -> list[Sample]:
        rtts = list(exchange.round_trips.values())
        count = self.options.count
        error = None if rtts else self._silence(exchange)
        values = {
            UP: 1.0 if rtts else 0.0,
            LOSS_PERCENT: 100.0 * (count - len(rtts)) / count,
            RTT_SECONDS: statistics.fmean(rtts) if rtts else NAN,
            RTT_MIN_SECONDS: min(rtts, default=NAN),
            RTT_MAX_SECONDS: max(rtts, default=NAN),
        }
        return [Sample(metric, v, now, self.labels, error) for metric, v in values.items()]

    def _silence(self, exchange: Exchange) -> str:
        if exchange.send_error is not None and not exchange.sent:
            return exchange.send_error
        count, timeout = self.options.count, self.options.timeout
        requests = "echo request" if count == 1 else "echo requests"
        also = f" ({exchange.send_error})" if exchange.send_error else ""
        return f"no reply to {count} {requests} within {timeout:g}s{also}"

    def _ping(self) -> Exchange:
        family, address = resolve(self.options.host, self.options.ipv6)
        sock, raw = open_icmp_socket(family)
        with sock:
            return _Pinger(sock, raw, family, address, self.options).run()


class _Pinger:
    """One check: sends the echo requests on schedule and collects the replies meanwhile."""

    def __init__(
        self, sock: socket.socket, raw: bool, family: socket.AddressFamily, address: Address,
        options: PingProbe.Options,
    ) -> None:  # fmt: skip
        self.sock, self.raw, self.family, self.address = sock, raw, family, address
        self.options = options
        self.token = os.urandom(TOKEN_BYTES)
        self.payload = self.token + bytes(PAYLOAD_BYTES - TOKEN_BYTES)
        # A raw socket sees every ICMP message on the host: the identifier tells ours apart.
        # A ping socket's identifier is chosen by the kernel, which delivers only our replies.
        self.identifier = int.from_bytes(os.urandom(2), "big")
        self.exchange = Exchange()

    def run(self) -> Exchange:
        count, interval = self.options.count, self.options.echo_interval
        started = time.monotonic()
        deadline = started + self.options.timeout
        for sequence in range(1, count + 1):
            self._send(sequence)
            last = sequence == count
            next_send = deadline if last else started + sequence * interval
            self._receive_until(min(next_send, deadline), last)
            if time.monotonic() >= deadline:
                break
        return self.exchange

    def _send(self, sequence: int) -> None:
        packet = echo_request(self.family, self.identifier, sequence, self.payload)
        leaving = time.monotonic()
        try:
            self.sock.sendto(packet, self.address)
        except OSError as exc:  # "network is unreachable": this echo is lost
            self.exchange.send_error = f"sending failed: {os_reason(exc)}"
            return
        self.exchange.sent[sequence] = leaving

    def _receive_until(self, until: float, last: bool) -> None:
        """Replies until `until`; after the last request, only until every one is answered."""
        while not (last and len(self.exchange.round_trips) == len(self.exchange.sent)):
            left = until - time.monotonic()
            if left <= 0:
                return
            self.sock.settimeout(left)
            try:
                packet = self.sock.recv(4096)
            except TimeoutError:
                return
            except OSError:  # an ICMP error queued on the socket (unreachable): no reply
                continue
            self._record(parse_echo(packet, self.family, self.raw), time.monotonic())

    def _record(self, echo: Echo | None, arrived: float) -> None:
        if echo is None or echo.kind != ECHO_REPLY[self.family]:
            return
        if self.raw and echo.identifier != self.identifier:
            return
        sent = self.exchange.sent.get(echo.sequence)
        if sent is None or not echo.payload.startswith(self.token):
            return
        self.exchange.round_trips.setdefault(echo.sequence, arrived - sent)
