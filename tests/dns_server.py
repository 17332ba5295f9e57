"""A small real DNS server for tests: UDP and TCP on one loopback port, answering from a zone.

    zone = {"www.example.test": {"A": ["192.0.2.1", "192.0.2.2"]},
            "alias.example.test": {"CNAME": ["www.example.test."]}}
    with DnsServer(zone) as server:               # server.host, server.port
        server.rcodes["broken.example.test"] = "SERVFAIL"
        server.dropped.add("black-hole.example.test")   # never answered: clients time out
        server.truncated.add("big.example.test")       # over UDP only a truncated (TC) reply
        server.delay = 0.5                              # every answer waits this long
        server.queries                                  # [("udp", "www.example.test.", "A")]

Names in the zone are absolute whether written with the final dot or not; a name missing from
the zone is NXDOMAIN, a name without records of the asked type is an empty NOERROR. A CNAME is
followed inside the zone, as an authoritative server does. Messages are parsed and built with
dnspython; each query is answered in a thread of its own, so a delayed one holds up no other.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
from collections.abc import Mapping

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

Zone = Mapping[str, Mapping[str, list[str]]]
MAX_CNAME_HOPS = 8


def _absolute(name: str) -> str:
    return dns.name.from_text(name).to_text()


class DnsServer:
    def __init__(self, zone: Zone, host: str = "127.0.0.1") -> None:
        self.host = host
        self.zone = {_absolute(name): dict(records) for name, records in zone.items()}
        self.rcodes: dict[str, str] = {}
        self.dropped: set[str] = set()
        self.truncated: set[str] = set()
        self.delay = 0.0
        self.queries: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._udp, self._tcp = self._bind()
        self.port = int(self._udp.getsockname()[1])
        self._threads = [
            threading.Thread(target=self._serve_udp, daemon=True),
            threading.Thread(target=self._serve_tcp, daemon=True),
        ]

    def _bind(self) -> tuple[socket.socket, socket.socket]:
        """A UDP and a TCP socket on the same free port (retried: the TCP port may be taken)."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        for _ in range(50):
            udp = socket.socket(family, socket.SOCK_DGRAM)
            udp.bind((self.host, 0))
            tcp = socket.socket(family, socket.SOCK_STREAM)
            try:
                tcp.bind((self.host, udp.getsockname()[1]))
            except OSError:
                udp.close()
                tcp.close()
                continue
            tcp.listen(16)
            return udp, tcp
        raise RuntimeError("no port free for both UDP and TCP")

    def __enter__(self) -> DnsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(2)
        self._udp.close()
        self._tcp.close()

    # --- answering ---------------------------------------------------------------------------

    def answer(self, wire: bytes, protocol: str) -> bytes | None:
        """The response to a query, or None to leave it unanswered."""
        query = dns.message.from_wire(wire)
        question = query.question[0]
        name, rdtype = question.name.to_text(), question.rdtype
        with self._lock:
            self.queries.append((protocol, name, dns.rdatatype.to_text(rdtype)))
        if name in self.dropped:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if name in self.rcodes:
            response.set_rcode(dns.rcode.from_text(self.rcodes[name]))
        elif name not in self.zone:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif protocol == "udp" and name in self.truncated:
            response.flags |= dns.flags.TC
        else:
            response.answer = self._records(name, rdtype)
        self._stop.wait(self.delay)
        return response.to_wire()

    def _records(self, name: str, rdtype: dns.rdatatype.RdataType) -> list[dns.rrset.RRset]:
        found: list[dns.rrset.RRset] = []
        for _ in range(MAX_CNAME_HOPS):
            records = self.zone.get(name, {})
            wanted = dns.rdatatype.to_text(rdtype)
            if wanted not in records and "CNAME" in records:
                found.append(self._rrset(name, "CNAME", records["CNAME"]))
                name = _absolute(records["CNAME"][0])
                continue
            if wanted in records:
                found.append(self._rrset(name, wanted, records[wanted]))
            break
        return found

    @staticmethod
    def _rrset(name: str, rdtype: str, texts: list[str]) -> dns.rrset.RRset:
        return dns.rrset.from_text_list(name, 300, dns.rdataclass.IN, rdtype, texts)

    # --- the sockets -------------------------------------------------------------------------

    def _serve_udp(self) -> None:
        while not self._stop.is_set():
            if not select.select([self._udp], [], [], 0.05)[0]:
                continue
            with contextlib.suppress(OSError):
                wire, client = self._udp.recvfrom(65535)
                threading.Thread(target=self._reply_udp, args=(wire, client), daemon=True).start()

    def _reply_udp(self, wire: bytes, client: tuple[str, int]) -> None:
        with contextlib.suppress(Exception):
            response = self.answer(wire, "udp")
            if response is not None:
                self._udp.sendto(response, client)

    def _serve_tcp(self) -> None:
        while not self._stop.is_set():
            if not select.select([self._tcp], [], [], 0.05)[0]:
                continue
            with contextlib.suppress(OSError):
                conn, _ = self._tcp.accept()
                threading.Thread(target=self._talk_tcp, args=(conn,), daemon=True).start()

    def _talk_tcp(self, conn: socket.socket) -> None:
        """Length-prefixed queries until the client closes (RFC 1035 4.2.2)."""
        with conn, contextlib.suppress(Exception):
            conn.settimeout(5)
            while not self._stop.is_set():
                header = _read_exactly(conn, 2)
                if header is None:
                    return
                wire = _read_exactly(conn, struct.unpack("!H", header)[0])
                if wire is None:
                    return
                response = self.answer(wire, "tcp")
                if response is None:
                    self._stop.wait(5)  # dropped: hold the connection open, answer nothing
                    return
                conn.sendall(struct.pack("!H", len(response)) + response)


def _read_exactly(conn: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data
