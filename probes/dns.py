"""A DNS check: does a server resolve a name, to the expected answers, and how fast.

One query per check, straight to the server (no cache between): over UDP, retried over TCP
when the answer comes back truncated, or over TCP alone with `protocol = "tcp"`. Without a
`server`, the nameservers of the system's resolv.conf are asked in turn (on `port`) until one
answers. The name is taken as fully qualified: no search domains are appended. A CNAME chain
in the answer is followed, so `record_type = "A"` counts the addresses at its end.

Options:
    query_name      the name to resolve (`name` is the probe's own)
    record_type     A, AAAA, CNAME, MX, TXT, NS, SOA, SRV, PTR, CAA... (default A)
    server          the IP address of the server to ask (default: the system's)
    port            default 53
    expect          answers that must all be present, order-free, written as in a zone
                    file: "192.0.2.1", "10 mail.example.org.", "\\"v=spf1 -all\\""
    protocol        "udp" (default) or "tcp"
    timeout         the whole check, every server tried included (default 5s)

Metrics, labelled {"name", "type", "server"} (server: the address, "system" without one,
with ":port" unless 53):
    dns_up               1 when the answer is NOERROR, has records of the type asked, and
                         holds every `expect`ed one; else 0 with the reason in `error`
    dns_lookup_seconds   from the query to the answer
    dns_answers          number of records of the type asked in the answer
    dns_rcode            the response code: 0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN, 5 REFUSED...
    dns_expect_matched   (with `expect`) 1 when every expected answer was there, else 0
Without an answer (a timeout) only dns_up is a number; the others are NaN.

Example:
    [[probe]]
    name = "intranet-dns"
    kind = "dns"
    query_name = "intranet.example.org"
    server = "192.0.2.53"
    expect = ["192.0.2.10"]

dnspython is imported when it is first needed, not with this module.
"""

import ipaddress
import logging
import math
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from probes.base import Duration, Sample
from probes.tcp import CheckFailed, check_endpoint, os_reason, remaining, target_label

if TYPE_CHECKING:
    import dns.message
    import dns.name
    import dns.rcode
    import dns.rdata
    import dns.rdatatype

log = logging.getLogger(__name__)

UP = "dns_up"
LOOKUP_SECONDS = "dns_lookup_seconds"
ANSWERS = "dns_answers"
RCODE = "dns_rcode"
EXPECT_MATCHED = "dns_expect_matched"
DEFAULT_TIMEOUT = Duration(5)
PROTOCOLS = ("udp", "tcp")
RESOLV_CONF = "/etc/resolv.conf"
MAX_ANSWERS_SHOWN = 5
MAX_ANSWER_CHARS = 80
NAN = math.nan


def _rdtype(record_type: str) -> "dns.rdatatype.RdataType":
    import dns.rdatatype

    try:
        rdtype = dns.rdatatype.from_text(record_type.upper())
    except dns.rdatatype.UnknownRdatatype:
        raise ValueError(f"record_type {record_type!r} is not a DNS record type") from None
    if dns.rdatatype.is_metatype(rdtype):
        raise ValueError(f"record_type {record_type!r} is a query meta-type; name a record type")
    return rdtype


def _qname(text: str) -> "dns.name.Name":
    import dns.exception
    import dns.name

    try:
        return dns.name.from_text(text)
    except dns.exception.DNSException as exc:
        raise ValueError(f"query_name {text!r} is not a DNS name: {exc}") from None


def _expected(texts: list[str], rdtype: "dns.rdatatype.RdataType") -> "list[dns.rdata.Rdata]":
    import dns.exception
    import dns.name
    import dns.rdata
    import dns.rdataclass
    import dns.rdatatype

    parsed = []
    for text in texts:
        try:
            # Names in the data are fully qualified, with or without their final dot.
            parsed.append(
                dns.rdata.from_text(
                    dns.rdataclass.IN, rdtype, text, origin=dns.name.root, relativize=False
                )
            )
        except dns.exception.DNSException as exc:
            kind = dns.rdatatype.to_text(rdtype)
            raise ValueError(f"expect {text!r} is not valid {kind} data: {exc}") from None
    return parsed


def _shown(answers: "list[dns.rdata.Rdata]") -> str:
    """A few answers, sorted: a record set has no order, and the same error reads the same."""
    texts = sorted(a.to_text()[:MAX_ANSWER_CHARS] for a in answers)[:MAX_ANSWERS_SHOWN]
    more = len(answers) - MAX_ANSWERS_SHOWN
    return ", ".join(texts) + (f" and {more} more" if more > 0 else "") or "nothing"


def system_servers() -> list[str]:
    """The nameservers of the system's resolver configuration, read afresh (DHCP changes it)."""
    import dns.resolver

    try:
        return [str(ns) for ns in dns.resolver.Resolver(filename=RESOLV_CONF).nameservers]
    except dns.resolver.NoResolverConfiguration:
        raise CheckFailed(f"no nameserver configured in {RESOLV_CONF}") from None


@dataclass(frozen=True)
class Answered:
    server: str  # address:port
    response: "dns.message.Message"
    seconds: float


class DnsProbe:
    kind: ClassVar[str] = "dns"

    @dataclass(frozen=True)
    class Options:
        query_name: str
        record_type: str = "A"
        server: str | None = None
        port: int = 53
        expect: list[str] = field(default_factory=list)
        protocol: str = "udp"
        timeout: Duration = DEFAULT_TIMEOUT

        def __post_init__(self) -> None:
            check_endpoint(self.server or "system", self.port, self.timeout)
            _qname(self.query_name)
            if self.server is not None:
                try:
                    ipaddress.ip_address(self.server)
                except ValueError:
                    raise ValueError(f"server {self.server!r} is not an IP address") from None
            if self.protocol not in PROTOCOLS:
                raise ValueError(f"protocol {self.protocol!r} is not one of {', '.join(PROTOCOLS)}")
            _expected(self.expect, _rdtype(self.record_type))

    def __init__(self, name: str, options: Options) -> None:
        self.name = name
        self.options = options
        self._qname = _qname(options.query_name)
        self._rdtype = _rdtype(options.record_type)
        self._expected = _expected(options.expect, self._rdtype)
        server = "system" if options.server is None else options.server
        self.labels = {
            "name": options.query_name,
            "type": options.record_type.upper(),
            "server": server if options.port == 53 else target_label(server, options.port),
        }

    def collect(self, now: float) -> list[Sample]:
        try:
            answered = self._ask(time.monotonic())
        except CheckFailed as exc:
            return self._unanswered(now, str(exc))
        return self._answered(now, answered)

    def _unanswered(self, now: float, error: str) -> list[Sample]:
        metrics = [LOOKUP_SECONDS, ANSWERS, RCODE] + ([EXPECT_MATCHED] if self._expected else [])
        return [
            Sample(UP, 0.0, now, self.labels, error),
            *(Sample(metric, NAN, now, self.labels, error) for metric in metrics),
        ]

    def _answered(self, now: float, answered: Answered) -> list[Sample]:
        rcode = answered.response.rcode()
        answers = self._answers(answered.response)
        missing = [e for e in self._expected if e not in answers]
        error = self._problem(answered.server, rcode, answers, missing)
        values = {
            UP: 0.0 if error else 1.0,
            LOOKUP_SECONDS: answered.seconds,
            ANSWERS: float(len(answers)),
            RCODE: float(rcode),
        }
        if self._expected:
            values[EXPECT_MATCHED] = 0.0 if missing else 1.0
        return [Sample(metric, v, now, self.labels, error) for metric, v in values.items()]

    def _answers(self, response: "dns.message.Message") -> "list[dns.rdata.Rdata]":
        """The records of the type asked, at the end of any CNAME chain."""
        import dns.message

        if not isinstance(response, dns.message.QueryMessage):
            return []
        try:
            rrset = response.resolve_chaining().answer
        except dns.message.ChainTooLong:
            return []
        return list(rrset) if rrset is not None else []

    def _problem(
        self,
        server: str,
        rcode: "dns.rcode.Rcode",
        answers: "list[dns.rdata.Rdata]",
        missing: "list[dns.rdata.Rdata]",
    ) -> str | None:
        import dns.rcode

        if rcode == dns.rcode.NXDOMAIN:
            return f"{self._qname} does not exist (NXDOMAIN from {server})"
        if rcode != dns.rcode.NOERROR:
            return f"{dns.rcode.to_text(rcode)} from {server}"
        if not answers:
            return f"no {self.labels['type']} record for {self._qname} (from {server})"
        if missing:
            return f"expected answers missing: {_shown(missing)}; got {_shown(answers)}"
        return None

    def _ask(self, started: float) -> Answered:
        """The first server's answer; the next server is asked when one does not answer."""
        deadline = started + self.options.timeout
        servers = [self.options.server] if self.options.server else system_servers()
        failures = []
        for number, server in enumerate(servers):
            # Each server gets its share of the time left, so that every one is asked.
            share = (deadline - time.monotonic()) / (len(servers) - number)
            try:
                response = self._query(server, share)
                where = target_label(server, self.options.port)
                return Answered(where, response, time.monotonic() - started)
            except CheckFailed as exc:
                failures.append(str(exc))
        raise CheckFailed("; ".join(failures))

    def _query(self, server: str, budget: float) -> "dns.message.Message":
        import dns.exception
        import dns.message

        deadline = time.monotonic() + budget
        query = dns.message.make_query(self._qname, self._rdtype)
        where = target_label(server, self.options.port)
        try:
            return self._exchange(query, server, deadline)
        except (dns.exception.Timeout, TimeoutError):
            waited = round(budget, 2)
            raise CheckFailed(f"timed out after {waited:g}s waiting for {where}") from None
        except OSError as exc:
            raise CheckFailed(f"{os_reason(exc)} from {where}") from None
        except dns.exception.DNSException as exc:
            raise CheckFailed(f"bad response from {where}: {exc}") from None

    def _exchange(
        self, query: "dns.message.Message", server: str, deadline: float
    ) -> "dns.message.Message":
        import dns.flags
        import dns.query

        port = self.options.port
        if self.options.protocol == "udp":
            with _connected_udp_socket(server, port) as sock:
                response = dns.query.udp(
                    query, server, timeout=remaining(deadline), port=port, sock=sock,
                    ignore_unexpected=True, ignore_errors=True,
                )  # fmt: skip
            if not response.flags & dns.flags.TC:
                return response
        # Over TCP when asked, and when the UDP answer was truncated: the whole answer
        return dns.query.tcp(query, server, timeout=remaining(deadline), port=port)


def _connected_udp_socket(server: str, port: int) -> socket.socket:
    """Connected, so that nothing listening on the port (an ICMP port unreachable) ends the
    wait at once as "connection refused" instead of a timeout."""
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)  # as dnspython wants a socket it is given
        sock.connect((server, port))
    except OSError:
        sock.close()
        raise
    return sock
