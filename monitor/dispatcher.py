"""Delivers outbox rows through the notifiers, with retries and exponential backoff.

Exactly-once where the other side allows it:
- a ticket is created idempotently: the attempt is recorded before the call; when an earlier
  attempt's outcome is unknown (timeout, crash), the help desk is searched for the marker first;
- an e-mail carries a Message-ID derived from its outbox key, so in the one window where a crash
  can resend it (after the server accepted it, before the row was marked done) the receiving
  help desk or mail client can drop the copy.

Messages (`email.send`, `apprise.send`) are rendered from the row's payload: a user notice
(`"kind"` and `"language"` given) with `render_notice`, any other template (the help desk's
messages, `"escalation"`) with `render_message`. A message of an incident waits for its ticket
so that it can name the number; a maintenance notice has no incident and waits for nothing.
A row's `"wait_for_ticket"` bounds that wait: false sends at once (forewarn's alerts about
itself, which must not depend on a help desk that may be what failed), a number of seconds
waits that long at most, and then the message goes without the number.
An `apprise.send` row names its target by id (`notifiers.apprise_channel.target_id`), never
by URL: the URL carries a token and the state file must not. `apprise_targets` maps the ids of
the configured URLs back to them; the daemon replaces it on reload.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateError

from monitor import store as st
from monitor.metrics import Metrics
from notifiers.apprise_channel import AppriseChannel
from notifiers.base import Channel, DeliveryError, Message, TicketBackend, TicketDraft, TicketInfo
from notifiers.render import Renderer, RenderError

log = logging.getLogger(__name__)


class _Deferred(Exception):
    """The row cannot be delivered yet (its ticket does not exist yet); not an attempt."""


@dataclass(frozen=True)
class RetryPolicy:
    base: float = 2.0
    cap: float = 300.0
    defer: float = 1.0  # wait for a prerequisite, e.g. the ticket a comment goes to

    def delay(self, attempts: int) -> float:
        raw = min(self.cap, self.base * 2 ** max(0, attempts - 1))
        return raw * random.uniform(0.8, 1.2)  # spread retries after a help desk comes back


class Dispatcher:
    def __init__(
        self,
        store: st.Store,
        backend: TicketBackend,
        channel: Channel | None,
        renderer: Renderer,
        metrics: Metrics,
        retry: RetryPolicy = RetryPolicy(),
        clock: Callable[[], float] = time.time,
        routes: Mapping[str, TicketBackend] | None = None,
        apprise: Channel | None = None,
        apprise_targets: Mapping[str, str] | None = None,
    ) -> None:
        self.store = store
        self.backend = backend  # the [helpdesk] one: incidents of no [[route]]
        self.routes = dict(routes or {})
        self.channel = channel
        self.apprise = apprise if apprise is not None else AppriseChannel()
        # target id -> Apprise URL; replaced whole on reload, so a reader sees one or the other
        self.apprise_targets: dict[str, str] = dict(apprise_targets or {})
        self.renderer = renderer
        self.metrics = metrics
        self.retry = retry
        self.clock = clock
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._drain_until = 0.0
        self._thread: threading.Thread | None = None

    # --- thread control ------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="dispatcher", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, drain_seconds: float = 5.0) -> None:
        """Deliver what is due for up to `drain_seconds`, then stop."""
        self._drain_until = self.clock() + drain_seconds
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(drain_seconds + 30)

    def _loop(self) -> None:
        while True:
            delivered = self._run_safely()
            if self._stop.is_set() and (delivered == 0 or self.clock() >= self._drain_until):
                return
            if delivered == 0:
                self._wake.wait(timeout=1.0)
                self._wake.clear()

    def _run_safely(self) -> int:
        try:
            return self.run_once()
        except Exception:  # the dispatcher must outlive any single bad row or DB hiccup
            log.exception("dispatcher pass failed")
            return 0

    # --- one pass ------------------------------------------------------------------------

    def run_once(self) -> int:
        """Try every due row once; return how many were delivered."""
        delivered = 0
        for row in self.store.due_outbox(self.clock()):
            delivered += self._attempt(row)
        return delivered

    def _attempt(self, row: st.OutboxRow) -> int:
        try:
            self._deliver(row)
        except _Deferred:
            self._reschedule(row, self.retry.defer, None, count=False)
            return 0
        except DeliveryError as exc:
            self._failed(row, str(exc), permanent=exc.permanent)
            return 0
        except (TemplateError, RenderError) as exc:  # a broken template will not mend itself
            self._failed(row, f"template error: {exc}", permanent=True)
            return 0
        except Exception as exc:
            log.debug("delivery of %s raised", row.key, exc_info=True)
            self._failed(row, f"{type(exc).__name__}: {exc}", permanent=False)
            return 0
        self.metrics.deliveries.labels(op=row.op, result="ok").inc()
        return 1

    def _deliver(self, row: st.OutboxRow) -> None:
        handler = {
            "ticket.create": self._create_ticket,
            "ticket.comment": self._update_ticket,
            "ticket.resolve": self._update_ticket,
            "ticket.reopen": self._update_ticket,
            "email.send": self._send_mail,
            "apprise.send": self._send_apprise,
        }.get(row.op)
        if handler is None:
            raise DeliveryError(f"unknown outbox operation {row.op!r}", permanent=True)
        handler(row)

    # --- tickets -------------------------------------------------------------------------

    def _create_ticket(self, row: st.OutboxRow) -> None:
        assert row.incident_id is not None
        if self.store.ticket_for(row.incident_id) is not None:
            self._done(row, None)
            return
        # The alerts as they are now: a grouped incident's ticket waits `group_wait` so that
        # alerts firing together all appear in it.
        context = dict(row.payload["context"], alerts=self.store.members(row.incident_id))
        marker = context["incident"]["marker"]
        # Look first: another forewarn (a replica) may have opened it, or an earlier attempt
        # of ours whose outcome is unknown. A closed ticket found on a first attempt belongs
        # to an older incident whose local record was lost, not to this one.
        backend = self.backend_for(row.incident_id)
        found = backend.find_by_marker(marker)
        if found is not None and row.attempts == 0 and found.status in ("resolved", "rejected"):
            found = None
        if found is None:
            draft = self._draft(context, row.payload["template"], row.incident_id, _kind(backend))
            self._record_attempt(row)
            found = backend.create(draft)
            log.info("ticket %s created for incident %s", found.number, row.incident_id)
            self._observe_fault_to_ticket(context)
        else:
            log.info(
                "ticket %s found by its marker (a replica's, or an unknown outcome's)", found.number
            )
        self._done(row, found, _kind(backend))

    def _observe_fault_to_ticket(self, context: Mapping[str, Any]) -> None:
        """From the first failing sample of the incident's alerts to now, its ticket's birth."""
        since = [a["since"] for a in context["alerts"] if isinstance(a.get("since"), float | int)]
        fault = min(since, default=context["incident"].get("opened_at"))
        if isinstance(fault, float | int):
            self.metrics.fault_to_ticket.observe(max(0.0, self.clock() - fault))

    def backend_for(self, incident_id: int | None) -> TicketBackend:
        """The help desk of the incident's route (chosen when it opened by `[[route]]`)."""
        route = self.store.route_of(incident_id) if incident_id is not None else None
        return self.routes.get(route or "", self.backend)

    def _draft(
        self, context: dict[str, Any], template: str, incident_id: int, kind: str
    ) -> TicketDraft:
        incident = context["incident"]
        category = incident.get("category") or ""
        related = self.store.earlier_tickets(incident_id)
        context = dict(context, related=[t.number for t in related])
        return TicketDraft(
            marker=incident["marker"],
            subject=self.renderer.render_line("ticket_subject.txt.j2", context),
            body=self.renderer.render_text(f"{template}.txt.j2", context),
            priority=incident["priority"],
            category=category,
            tags=tuple(t for t in ("forewarn", category, context.get("service") or "") if t),
            related=tuple(t.external_id for t in related if t.backend == kind),
        )

    def _update_ticket(self, row: st.OutboxRow) -> None:
        ticket = self._ticket_or_defer(row)
        if ticket is None:
            raise DeliveryError("the incident has no ticket to update", permanent=True)
        text = row.payload.get("text") or self.renderer.render_text(
            f"{row.payload['template']}.txt.j2",
            dict(row.payload["context"], ticket=_ticket_context(ticket)),
        )
        backend = self.backend_for(row.incident_id)
        forced = row.payload.get("force")
        op = row.op if forced else self._respecting_humans(row.op, ticket, backend)
        self._record_attempt(row)
        action = {
            "ticket.comment": backend.comment,
            "ticket.resolve": backend.resolve,
            "ticket.reopen": backend.reopen,
        }[op]
        action(ticket.external_id, text)
        self._done(row, None)

    def _respecting_humans(self, op: str, ticket: st.TicketRef, backend: TicketBackend) -> str:
        """Once a person has changed a ticket, forewarn only comments on it: a recovery does
        not close a ticket an agent owns, a recurrence does not reopen one they closed."""
        if op not in ("ticket.resolve", "ticket.reopen"):
            return op
        info = backend.get(ticket.external_id)
        if info is not None and info.human_touched:
            log.info("ticket %s is in human hands: commenting instead of %s", ticket.number, op)
            return "ticket.comment"
        return op

    def _ticket_or_defer(self, row: st.OutboxRow) -> st.TicketRef | None:
        """The incident's ticket; defer while its creation is still pending in the outbox,
        unless the row has waited as long as its payload's `wait_for_ticket` allows."""
        if row.incident_id is None:
            return None
        ticket = self.store.ticket_for(row.incident_id)
        if ticket is not None:
            return ticket
        create = self.store.pending_create(row.incident_id)
        if create is not None and create["status"] == "pending" and self._may_wait(row):
            raise _Deferred()
        return None

    def _may_wait(self, row: st.OutboxRow) -> bool:
        """`wait_for_ticket`: true or absent waits for ever, false not at all, a number that
        many seconds from the row's creation; then the message goes without a ticket number."""
        wait = row.payload.get("wait_for_ticket", True)
        if isinstance(wait, bool):
            return wait
        return self.clock() < row.created_at + float(wait)

    # --- e-mail --------------------------------------------------------------------------

    def _send_mail(self, row: st.OutboxRow) -> None:
        if self.channel is None:
            raise DeliveryError("no [smtp] section is configured", permanent=True)
        context = self._message_context(row)
        subject, text, html = self._render(row.payload, context)
        message = Message(
            to=tuple(row.payload["to"]),
            subject=subject,
            text=text,
            html=html,
            message_id=_message_id(row.key, context.get("host") or "localhost"),
            headers=_headers(row.payload, context),
        )
        self._record_attempt(row)
        self.channel.send(message)
        self._done(row, None)

    def _send_apprise(self, row: st.OutboxRow) -> None:
        target = row.payload["target"]
        url = self.apprise_targets.get(target)
        if url is None:
            raise DeliveryError(
                f"Apprise target {target} is no longer configured (its URL was removed or changed)",
                permanent=True,
            )
        subject, text, _ = self._render(row.payload, self._message_context(row))
        self._record_attempt(row)
        self.apprise.send(Message(to=(url,), subject=subject, text=text))
        self._done(row, None)

    def _message_context(self, row: st.OutboxRow) -> dict[str, Any]:
        ticket = self._ticket_or_defer(row)  # so the message can name the ticket number
        return dict(row.payload["context"], ticket=_ticket_context(ticket) if ticket else None)

    def _render(
        self, payload: Mapping[str, Any], context: dict[str, Any]
    ) -> tuple[str, str, str | None]:
        if "kind" in payload:  # a user notice, in its audience's language
            return self.renderer.render_notice(payload["kind"], payload["language"], context)
        return self.renderer.render_message(payload["template"], context)

    # --- bookkeeping ---------------------------------------------------------------------

    def _record_attempt(self, row: st.OutboxRow) -> None:
        """Commit the intent before the call, so a crash leaves an 'outcome unknown' trace."""
        with self.store.transaction() as conn:
            conn.execute("UPDATE outbox SET attempts = attempts + 1 WHERE id = ?", (row.id,))

    def _done(self, row: st.OutboxRow, created: TicketInfo | None, kind: str = "") -> None:
        now = self.clock()
        with self.store.transaction() as conn:
            if created is not None and row.incident_id is not None:
                conn.execute(
                    "INSERT OR IGNORE INTO ticket VALUES (?,?,?,?,?,?,?)",
                    (
                        row.incident_id,
                        kind,
                        created.external_id,
                        created.number,
                        created.url,
                        row.payload["context"]["incident"]["marker"],
                        now,
                    ),
                )
                st.add_event(
                    conn,
                    row.incident_id,
                    now,
                    "ticket_created",
                    ticket=created.number,
                    backend=kind,
                )
            conn.execute(
                "UPDATE outbox SET status = 'done', done_at = ?, last_error = NULL WHERE id = ?",
                (now, row.id),
            )
            st.add_event(
                conn,
                row.incident_id,
                now,
                "delivered",
                op=row.op,
                key=row.key,
                template=row.payload.get("template"),
            )

    def _failed(self, row: st.OutboxRow, error: str, *, permanent: bool) -> None:
        result = "dead" if permanent else "retry"
        self.metrics.deliveries.labels(op=row.op, result=result).inc()
        if permanent:
            log.error("giving up on %s: %s", row.key, error)
            with self.store.transaction() as conn:
                conn.execute(
                    "UPDATE outbox SET status = 'dead', last_error = ? WHERE id = ?",
                    (error, row.id),
                )
                st.add_event(
                    conn,
                    row.incident_id,
                    self.clock(),
                    "delivery_failed",
                    op=row.op,
                    key=row.key,
                    error=error,
                )
            return
        attempts = row.attempts + 1
        delay = self.retry.delay(attempts)
        log.warning(
            "%s failed (attempt %d), retrying in %.0fs: %s", row.key, attempts, delay, error
        )
        self._reschedule(row, delay, error, count=True)

    def _reschedule(
        self, row: st.OutboxRow, delay: float, error: str | None, *, count: bool
    ) -> None:
        # MAX: a try that got as far as `_record_attempt` is already counted; count it once.
        attempts = row.attempts + 1 if count else row.attempts
        with self.store.transaction() as conn:
            conn.execute(
                "UPDATE outbox SET next_attempt_at = ?, last_error = COALESCE(?, last_error),"
                " attempts = MAX(attempts, ?) WHERE id = ?",
                (self.clock() + delay, error, attempts, row.id),
            )


def _kind(backend: TicketBackend) -> str:
    return str(getattr(backend, "kind", "unknown"))


def _ticket_context(ticket: st.TicketRef) -> dict[str, Any]:
    return {"number": ticket.number, "url": ticket.url, "backend": ticket.backend}


def _headers(payload: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, str]:
    """For mail filters and help desks: the incident's marker (none for maintenance); for a
    user notice, which one it is and its language."""
    headers = {}
    marker = (context.get("incident") or {}).get("marker")
    if marker:
        headers["X-Forewarn-Marker"] = str(marker)
    if "kind" in payload:
        headers["X-Forewarn-Notice"] = str(payload["kind"])
        headers["Content-Language"] = str(payload["language"]).replace("_", "-")
    return headers


def _message_id(key: str, host: str) -> str:
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"<{digest}@{host}.forewarn>"
