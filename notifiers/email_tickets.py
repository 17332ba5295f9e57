"""E-mail-to-ticket: for help desks that turn mail into tickets (Zammad, osTicket, GLPI,
Freshdesk, Zendesk and the like).

Every event is one e-mail to the help desk's intake address, sent through the SMTP channel
(`notifiers.email`), with its own SMTP settings: a backend only gets its own options, so it
cannot borrow the daemon's `[smtp]` section. The keys mirror `[smtp]` with an `smtp_` prefix
(`from`, `timeout` and `verify_tls` keep their names):

    [helpdesk]
    kind = "email"
    to = "support@helpdesk.example.org"       # the help desk's intake address
    from = "forewarn@web01.example.org"
    smtp_host = "mail.example.org"
    smtp_port = 587                           # default 25, or 465 with smtp_security = "ssl"
    smtp_security = "starttls"                # none | starttls | ssl
    smtp_username = "forewarn"
    smtp_password = { env = "FOREWARN_HELPDESK_SMTP_PASSWORD" }
    timeout = "10s"
    verify_tls = true

Threading. The first mail (`create`) carries a Message-ID derived from the marker alone,
`<sha256(marker)[:32]@forewarn>`, and the marker at the end of its subject. Every later mail
(comment, resolve, reopen) carries the marker in its subject and `In-Reply-To` / `References`
pointing at that first Message-ID, which is how help desks that track message ids (Zammad,
osTicket, and others) file a reply into the ticket the first mail opened; the marker in every
subject lets an agent, or a subject rule, find the thread in the others. The external id of
the ticket is the marker itself: the help desk's own number never comes back over mail.

Headers for the help desk's mail filters (a Zammad postmaster filter, an osTicket filter):
`X-Forewarn-Marker`, `X-Forewarn-Event` (create | comment | resolve | reopen) on every mail,
and on the first one `X-Priority` (1 high, 3 medium, 5 low: the header mail clients and help
desks read for priority), `X-Forewarn-Priority`, `X-Forewarn-Category` and `X-Forewarn-Tags`.
Resolve and reopen are follow-ups like any comment: a help desk changes a ticket's status from
mail only through such a filter, so `X-Forewarn-Event` is the hook for it.

What mail cannot do, and what this backend does instead:
- `find_by_marker` cannot ask a mailbox, so it returns None, and after an unknown outcome the
  dispatcher sends the first mail again. The copy has the same Message-ID, so a help desk (or
  mail system) that drops duplicate Message-IDs keeps one ticket; this is the best e-mail
  allows. Two forewarn instances sending the same alert produce the same Message-ID too.
- `get` returns None: no owner or status comes back over mail, so the two-way sync (a ticket
  taken or rejected by a human) does not work with this backend.
- Follow-ups get fresh Message-IDs: a follow-up resent after an unknown outcome may show twice,
  but two follow-ups with the same words (a severity change back and forth) are never merged.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import ClassVar

from notifiers.base import Message, TicketDraft, TicketInfo
from notifiers.email import SECURITY_MODES, SmtpChannel, SmtpSettings
from probes.base import Duration

log = logging.getLogger(__name__)

MESSAGE_ID_DOMAIN = "forewarn"
X_PRIORITY = {"high": "1 (Highest)", "medium": "3 (Normal)", "low": "5 (Lowest)"}
FOLLOW_UP_TITLES = {"comment": "Update", "resolve": "Resolved", "reopen": "Reopened"}
DEFAULT_TIMEOUT = Duration(10)
MAX_SUBJECT_LINE = 80  # of a follow-up's first line, quoted in its subject


def _check_address(value: str) -> None:
    address = parseaddr(value)[1]
    if address.count("@") != 1 or not all(address.split("@")):
        raise ValueError(f"{value!r} is not an e-mail address")


def first_message_id(marker: str) -> str:
    """The Message-ID of a ticket's first mail: the same for every sender of this marker."""
    digest = hashlib.sha256(marker.encode()).hexdigest()[:32]
    return f"<{digest}@{MESSAGE_ID_DOMAIN}>"


def follow_up_message_id(marker: str) -> str:
    digest = hashlib.sha256(marker.encode()).hexdigest()[:16]
    return f"<{digest}.{uuid.uuid4().hex}@{MESSAGE_ID_DOMAIN}>"


class EmailTickets:
    kind: ClassVar[str] = "email"

    @dataclass(frozen=True, kw_only=True)
    class Options:
        """The help desk's intake address (`to`), the sender (`from`) and the SMTP server to
        send through; `smtp_port` defaults to 465 with `smtp_security = "ssl"`, else 25."""

        to: str = field(metadata={"check": _check_address})
        sender: str = field(metadata={"key": "from", "check": _check_address})
        smtp_host: str = "localhost"
        smtp_port: int | None = None
        smtp_security: str = "none"  # none | starttls | ssl
        smtp_username: str | None = None
        smtp_password: str | None = field(default=None, repr=False, metadata={"secret": True})
        timeout: Duration = DEFAULT_TIMEOUT
        verify_tls: bool = True

        def __post_init__(self) -> None:
            if self.smtp_security not in SECURITY_MODES:
                raise ValueError(f"smtp_security must be one of {', '.join(SECURITY_MODES)}")
            if self.smtp_port is not None and not 0 < self.smtp_port < 65536:
                raise ValueError(f"smtp_port {self.smtp_port} is not a TCP port")
            if self.timeout <= 0:
                raise ValueError("timeout must be more than 0s")
            if bool(self.smtp_username) != bool(self.smtp_password):
                raise ValueError("smtp_username and smtp_password go together: give both or none")

        def smtp_settings(self) -> SmtpSettings:
            default_port = 465 if self.smtp_security == "ssl" else 25
            return SmtpSettings(
                host=self.smtp_host,
                port=self.smtp_port or default_port,
                security=self.smtp_security,
                sender=self.sender,
                username=self.smtp_username,
                password=self.smtp_password,
                timeout=float(self.timeout),
                verify_tls=self.verify_tls,
            )

    def __init__(self, options: Options) -> None:
        self.options = options
        self.channel = SmtpChannel(options.smtp_settings())

    @classmethod
    def from_config(cls, options: Options, state_path: str) -> EmailTickets:
        return cls(options)

    # --- TicketBackend --------------------------------------------------------------------

    def create(self, draft: TicketDraft) -> TicketInfo:
        headers = {
            **self._event_headers(draft.marker, "create"),
            "X-Priority": X_PRIORITY.get(draft.priority, X_PRIORITY["medium"]),
            "X-Forewarn-Priority": draft.priority,
            "X-Forewarn-Category": draft.category,
            "X-Forewarn-Tags": ", ".join(draft.tags),
        }
        self._send(
            subject=_with_marker(draft.subject, draft.marker),
            text=_with_related(draft.body, draft.related),
            message_id=first_message_id(draft.marker),
            headers={name: value for name, value in headers.items() if value},
        )
        log.info("ticket mail for %s sent to the help desk", draft.marker)
        return _info(draft.marker)

    def find_by_marker(self, marker: str) -> TicketInfo | None:
        return None  # a mailbox cannot be searched; see the module's doc

    def comment(self, external_id: str, text: str) -> None:
        self._follow_up(external_id, "comment", text)

    def resolve(self, external_id: str, text: str) -> None:
        self._follow_up(external_id, "resolve", text)

    def reopen(self, external_id: str, text: str) -> None:
        self._follow_up(external_id, "reopen", text)

    def get(self, external_id: str) -> TicketInfo | None:
        return None  # nothing of the human side comes back over mail

    # --- plumbing -------------------------------------------------------------------------

    def _follow_up(self, marker: str, event: str, text: str) -> None:
        first = first_message_id(marker)
        headers = {**self._event_headers(marker, event), "In-Reply-To": first, "References": first}
        subject = f"Re: {_summary(text, FOLLOW_UP_TITLES[event])} {marker}"
        self._send(subject, text, follow_up_message_id(marker), headers)
        log.info("%s mail for %s sent to the help desk", event, marker)

    def _event_headers(self, marker: str, event: str) -> dict[str, str]:
        return {"X-Forewarn-Marker": marker, "X-Forewarn-Event": event}

    def _send(self, subject: str, text: str, message_id: str, headers: dict[str, str]) -> None:
        message = Message(
            to=(self.options.to,),
            subject=subject,
            text=text,
            message_id=message_id,
            headers=headers,
        )
        self.channel.send(message)  # raises DeliveryError, sorted and redacted


def _info(marker: str) -> TicketInfo:
    return TicketInfo(external_id=marker, number=marker, status="new")


def _with_marker(subject: str, marker: str) -> str:
    return subject if marker in subject else f"{subject} {marker}".strip()


def _with_related(body: str, related: tuple[str, ...]) -> str:
    missing = [marker for marker in related if marker not in body]
    if not missing:
        return body
    return f"{body.rstrip()}\n\nEarlier tickets of the same problem: {', '.join(missing)}\n"


def _summary(text: str, fallback: str) -> str:
    """The first line of a follow-up, short enough for a subject."""
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if len(line) > MAX_SUBJECT_LINE:
        line = line[: MAX_SUBJECT_LINE - 1].rstrip() + "…"
    return line or fallback

