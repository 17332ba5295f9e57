"""systemd's service notification protocol (`man sd_notify`), spoken directly.

A message is one datagram of newline-separated `KEY=value` fields sent to the AF_UNIX socket
named in $NOTIFY_SOCKET (a path, or an abstract address written with a leading "@"). Written
by hand on purpose: it is one `sendto`, while python-systemd (`systemd.daemon.notify`) needs
libsystemd and its C bindings, which pip cannot install on a bare machine. Without
$NOTIFY_SOCKET (not started by systemd with Type=notify) every call does nothing.

The watchdog is pinged from the daemon's main loop itself: a wedged loop stops the pings and
systemd (WatchdogSec=) kills and restarts the service.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)


def notify(*fields: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Send `fields` ("READY=1", "STATUS=...") as one message; True when it was sent."""
    address = socket_address(environ.get("NOTIFY_SOCKET", ""))
    if address is None:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto("\n".join(fields).encode(), address)
        except OSError as exc:  # systemd gone or the socket not ours: the daemon goes on
            log.warning("cannot notify systemd at %s: %s", environ["NOTIFY_SOCKET"], exc)
            return False
    return True


def socket_address(value: str) -> str | None:
    """The address to send to: "@name" is the abstract name "\\0name"; None when unset."""
    if not value:
        return None
    return "\0" + value[1:] if value.startswith("@") else value


def monotonic_usec() -> str:
    """The field systemd wants with RELOADING=1: CLOCK_MONOTONIC in microseconds."""
    return f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"


@dataclass
class Watchdog:
    """Sends WATCHDOG=1 every `interval` seconds (half of $WATCHDOG_USEC, as systemd advises)."""

    interval: float | None  # None: systemd does not watch us
    last: float = float("-inf")

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] = os.environ, pid: int | None = None
    ) -> Watchdog:
        usec = environ.get("WATCHDOG_USEC", "")
        owner = environ.get("WATCHDOG_PID", "")
        # WATCHDOG_PID names the process systemd watches; a child that inherited it is not it.
        if not usec.isdigit() or int(usec) == 0 or owner not in ("", str(pid or os.getpid())):
            return cls(None)
        return cls(int(usec) / 2e6)

    def ping(self, now: float) -> None:
        """Called on every turn of the main loop (`now`: a monotonic clock); pings when due."""
        if self.interval is None or now - self.last < self.interval:
            return
        self.last = now  # also after a failed send: one warning per interval, not per turn
        notify("WATCHDOG=1")
