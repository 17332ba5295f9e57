"""Fault -> ticket -> e-mail latency of `forewarn run`, over several trials.

    python bench/latency.py [--trials 5] [--interval 1s]

Starts the daemon with an http probe on a loopback service and a real SMTP server (aiosmtpd),
then per trial: stops the service and times the ticket in the built-in store and the help-desk
and user mails; starts it again and times the resolution mail. Prints medians and ranges, then
one `name value unit` line per figure.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from daemon_process import DaemonProcess, wait_until
from http_service import HttpService, free_port
from smtp_server import SmtpTestServer

from monitor.durations import parse_duration
from notifiers.builtin import BuiltinTickets

CONFIG = """
[daemon]
state_dir = "{state}"
listen = "127.0.0.1:{metrics}"
reopen_within = "0s"
[helpdesk]
kind = "builtin"
[smtp]
host = "127.0.0.1"
port = {smtp}
from = "forewarn@example.com"
[notify]
helpdesk = ["helpdesk@example.com"]
users = ["staff@example.com"]
[[probe]]
name = "svc"
kind = "http"
interval = "{interval}"
jitter = "0s"
url = "{url}"
[[rule]]
name = "svc_down"
probe = "svc"
metric = "http_up"
condition = "value == 0"
service = "the service"
notify_users = true
"""


def trial(
    service: HttpService, smtp: SmtpTestServer, tickets: BuiltinTickets, n: int, interval: float
) -> dict:
    """The n-th outage: seconds from the fault to each effect, and from recovery to its mail."""

    def mails(to: str, words: str) -> int:
        return sum(
            any(to in r for r in m.rcpt_tos) and words in str(m.message["Subject"])
            for m in smtp.received
        )

    fault = time.monotonic()
    service.stop()
    wait_until(lambda: len(tickets.list_tickets()) == n, 30, "the ticket")
    ticket = time.monotonic() - fault
    wait_until(lambda: mails("helpdesk@", "WARNING") == n, 30, "the help-desk mail")
    helpdesk = time.monotonic() - fault
    wait_until(lambda: mails("staff@", "Problem with") == n, 30, "the user notice")
    user = time.monotonic() - fault
    time.sleep(random.uniform(0, interval))  # recover at a random phase of the probe's cycle
    recovery = time.monotonic()
    service.start()
    wait_until(lambda: mails("helpdesk@", "RESOLVED") == n, 30, "the resolution mail")
    resolved = time.monotonic() - recovery
    return {
        "ticket": ticket,
        "helpdesk_mail": helpdesk,
        "user_notice": user,
        "resolution_mail": resolved,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--interval", default="1s", help="the http probe's interval")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp, SmtpTestServer() as smtp:
        service, metrics = HttpService(), free_port()
        config = Path(tmp, "config.toml")
        config.write_text(
            CONFIG.format(
                state=Path(tmp, "state"),
                metrics=metrics,
                smtp=smtp.port,
                interval=args.interval,
                url=service.url,
            )
        )
        service.start()
        daemon = DaemonProcess(config, Path(tmp, "daemon.log"), metrics)
        daemon.start()
        tickets = BuiltinTickets(str(Path(tmp, "state", "forewarn.db")))
        try:
            time.sleep(1.5)
            for n in range(1, args.trials + 1):
                results.append(trial(service, smtp, tickets, n, parse_duration(args.interval)))
                print(
                    f"trial {n}: " + ", ".join(f"{k} {v:.2f}s" for k, v in results[-1].items()),
                    file=sys.stderr,
                )
                # A random phase against the probe's cycle, as a real fault would have.
                time.sleep(1.0 + random.uniform(0, parse_duration(args.interval)))
        finally:
            daemon.stop()
            service.stop()
    for key in results[0]:
        values = [r[key] for r in results]
        print(
            f"fault_to_{key}_median {statistics.median(values):.2f} s"
            if key != "resolution_mail"
            else f"recovery_to_resolution_mail_median {statistics.median(values):.2f} s"
        )
        print(f"{key}_min {min(values):.2f} s")
        print(f"{key}_max {max(values):.2f} s")


if __name__ == "__main__":
    main()
