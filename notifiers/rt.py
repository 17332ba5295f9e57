"""Request Tracker 5 as the help desk, through its REST2 API (`<url>/REST/2.0`).

The marker goes at the end of the Subject, or into the ticket custom field `marker_field`, and
is found again with a TicketSQL search of RT itself: a ticket created by another forewarn, or
by this one just before a crash, is found instead of created twice.

Text is sent as JSON with `ContentType: text/plain`: RT 5.0 takes a raw `text/plain` request
body as Latin-1, so every non-ASCII character (°C, names, dashes) would arrive garbled.

Statuses, onto the four of `TicketInfo`: `new` is new; `resolved_status` (and `resolved`) is
resolved; `rejected_statuses` and `deleted` are rejected; every other status (open, stalled, a
custom lifecycle's active ones) is open. A person touched the ticket when a transaction of
theirs changed Owner, Status or Priority; forewarn's own users are the API user, the ticket's
creator (the forewarn that opened it) and RT_System.

Errors: network errors, timeouts, 408, 429 and 5xx are transient; other 4xx, a redirect, an
answer that is not JSON, a missing queue or custom field and a status RT refused to set are
permanent. Reasons are short and never hold the token or password.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

import requests

from notifiers.base import DeliveryError, TicketDraft, TicketInfo
from probes.base import Duration

log = logging.getLogger(__name__)

API_PATH = "/REST/2.0"
COMMENT_KINDS = ("comment", "correspond")
# The numbers RT 5's default $PriorityAsString shows as Low, Medium and High.
PRIORITIES = {"low": 0, "medium": 50, "high": 100}
SUBJECT_LIMIT = 200  # RT's Subject column
HUMAN_FIELDS = frozenset({"Owner", "Status", "Priority"})
SYSTEM_USER = "RT_System"
NOBODY = "Nobody"
SEARCH_LIMIT = 20
HISTORY_PAGE_SIZE = 100
HISTORY_PAGE_LIMIT = 50  # a bound against a runaway loop, far beyond any real ticket
REASON_LIMIT = 200
DEFAULT_TIMEOUT = Duration(10)
_ERRNO = re.compile(r"\[Errno -?\d+\] [^'\")\]]+")


class RtTickets:
    kind: ClassVar[str] = "rt"

    @dataclass(frozen=True)
    class Options:
        """`url` is RT's base URL (what precedes /REST/2.0). Authenticate with `token` (an RT
        auth token) or `username` and `password`; secrets come from `{ env = ... }` or
        `{ file = ... }`. `marker_field` names a ticket custom field for the marker instead
        of the Subject. `comment_kind` "correspond" replies to the requestor instead of
        adding an internal comment (RT's default scrips then reopen a resolved ticket on
        every reply). `timeout` bounds each HTTP call."""

        url: str
        queue: str = "General"
        token: str | None = field(default=None, repr=False, metadata={"secret": True})
        username: str | None = None
        password: str | None = field(default=None, repr=False, metadata={"secret": True})
        requestor: str | None = None
        marker_field: str | None = None
        resolved_status: str = "resolved"
        reopened_status: str = "open"
        rejected_statuses: tuple[str, ...] = ("rejected",)
        comment_kind: str = "comment"
        verify_tls: bool = True
        timeout: Duration = DEFAULT_TIMEOUT

        def __post_init__(self) -> None:
            _check_url(self.url)
            _check_credentials(self.token, self.username, self.password)
            if self.comment_kind not in COMMENT_KINDS:
                raise ValueError(f"comment_kind must be one of {', '.join(COMMENT_KINDS)}")
            if not self.queue:
                raise ValueError("queue must not be empty")
            if self.timeout <= 0:
                raise ValueError("timeout must be more than 0s")

    def __init__(self, options: RtTickets.Options) -> None:
        self.options = options
        self._base = options.url.rstrip("/")
        self._http = _session(options)
        self._queue_checked = False

    @classmethod
    def from_config(cls, options: RtTickets.Options, state_path: str) -> RtTickets:
        return cls(options)

    # --- TicketBackend ------------------------------------------------------------------

    def create(self, draft: TicketDraft) -> TicketInfo:
        self._check_queue()
        answer = self._json("POST", "/ticket", json=self._new_ticket(draft))
        ticket_id = str(_dict(answer).get("id", ""))
        if not _is_ticket_id(ticket_id):
            # an unknown outcome: the retry searches the marker before creating again
            raise DeliveryError("RT answered the create without a ticket id")
        log.info("RT ticket #%s opened in queue %s for %s", ticket_id, self.options.queue,
                 draft.marker)
        return self._info(ticket_id, "new")

    def find_by_marker(self, marker: str) -> TicketInfo | None:
        params = {
            "query": self._marker_query(marker),
            "orderby": "id",
            "order": "DESC",  # a ticket copied by hand keeps the marker: the newest wins
            "fields": "Subject",
            "per_page": str(SEARCH_LIMIT),
        }
        for item in _items(self._json("GET", "/tickets", params=params)):
            # LIKE ignores case and matches parts: only the exact marker counts
            if self.options.marker_field or marker in str(item.get("Subject", "")):
                return self.get(str(item.get("id")))
        return None

    def comment(self, external_id: str, text: str) -> None:
        ticket_id = _ticket_id(external_id)
        if text.strip():
            self._json("POST", self._message_path(ticket_id), json=_message(text))
            log.debug("RT ticket #%s: %s added", ticket_id, self.options.comment_kind)

    def resolve(self, external_id: str, text: str) -> None:
        self._change_status(_ticket_id(external_id), self.options.resolved_status, text)

    def reopen(self, external_id: str, text: str) -> None:
        self._change_status(_ticket_id(external_id), self.options.reopened_status, text)

    def get(self, external_id: str) -> TicketInfo | None:
        if not _is_ticket_id(external_id):
            return None
        ticket = self._json_or_none(f"/ticket/{external_id}")
        if ticket is None:
            return None
        touches = self._human_touches(external_id, self._machine_users(ticket))
        return self._info(
            external_id,
            self._status(str(ticket.get("Status", ""))),
            owner=_owner(ticket),
            human_touched=bool(touches),
            last_human_update=max((t for t in touches if t is not None), default=None),
        )

    # --- what the calls say -------------------------------------------------------------

    def _new_ticket(self, draft: TicketDraft) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "Queue": self.options.queue,
            "Subject": self._subject(draft),
            "Content": draft.body,
            "ContentType": "text/plain",
            "Priority": PRIORITIES.get(draft.priority, PRIORITIES["medium"]),
        }
        if self.options.requestor:
            fields["Requestor"] = self.options.requestor
        if self.options.marker_field:
            fields["CustomFields"] = {self.options.marker_field: draft.marker}
        related = [int(ticket) for ticket in draft.related if _is_ticket_id(ticket)]
        if related:
            fields["RefersTo"] = related
        return fields

    def _subject(self, draft: TicketDraft) -> str:
        if self.options.marker_field or draft.marker in draft.subject[:SUBJECT_LIMIT]:
            return draft.subject[:SUBJECT_LIMIT]
        room = SUBJECT_LIMIT - len(draft.marker) - 1  # the marker must survive the cut
        return f"{draft.subject[:room].rstrip()} {draft.marker}"

    def _marker_query(self, marker: str) -> str:
        if self.options.marker_field:
            column = _sql_string(f"CF.{{{self.options.marker_field}}}")
            return f"{column} = {_sql_string(marker)}"
        return f"Subject LIKE {_sql_string(marker)}"

    def _message_path(self, ticket_id: str) -> str:
        return f"/ticket/{ticket_id}/{self.options.comment_kind}"

    def _change_status(self, ticket_id: str, status: str, text: str) -> None:
        # One call for text and status: a correspondence on a closed ticket reopens it in
        # RT's default scrips, so the text must go first and the status with it.
        if text.strip():
            said = self._json("POST", self._message_path(ticket_id), json=_message(text, status))
        else:
            said = self._json("PUT", f"/ticket/{ticket_id}", json={"Status": status})
        # RT answers 200/201 even when it refused the status; its reasons are only prose.
        now = str(_dict(self._json("GET", f"/ticket/{ticket_id}")).get("Status", ""))
        if now != status:
            raise DeliveryError(
                _cut(f"RT kept ticket #{ticket_id} {now}, not {status}: {said}"), permanent=True
            )
        log.info("RT ticket #%s is now %s", ticket_id, status)

    def _check_queue(self) -> None:
        """Once: the queue exists and carries the marker field; RT would otherwise drop an
        unknown custom field silently and the ticket could never be found again."""
        if self._queue_checked:
            return
        queue = self._json_or_none(f"/queue/{quote(self.options.queue, safe='')}")
        if queue is None:
            raise DeliveryError(
                f"RT has no queue {self.options.queue!r} this user can see", permanent=True
            )
        wanted = self.options.marker_field
        if wanted and wanted not in _custom_field_names(queue):
            raise DeliveryError(
                f"RT custom field {wanted!r} does not apply to queue {self.options.queue!r}",
                permanent=True,
            )
        self._queue_checked = True

    # --- the human side -----------------------------------------------------------------

    def _status(self, rt_status: str) -> str:
        if rt_status in self.options.rejected_statuses or rt_status == "deleted":
            return "rejected"
        if rt_status in (self.options.resolved_status, "resolved"):
            return "resolved"
        return "new" if rt_status == "new" else "open"

    def _machine_users(self, ticket: dict[str, Any]) -> set[str]:
        users = {SYSTEM_USER, _user_name(ticket.get("Creator"))}
        if self.options.username:
            users.add(self.options.username)
        return users

    def _human_touches(self, ticket_id: str, machine_users: set[str]) -> list[float | None]:
        """When people changed Owner, Status or Priority (None where RT gave no time)."""
        return [
            _epoch(txn.get("Created"))
            for txn in self._history(ticket_id)
            if txn.get("Field") in HUMAN_FIELDS
            and _user_name(txn.get("Creator")) not in machine_users
        ]

    def _history(self, ticket_id: str) -> Iterator[dict[str, Any]]:
        for page in range(1, HISTORY_PAGE_LIMIT + 1):
            params = {
                "fields": "Creator,Field,Created",
                "per_page": str(HISTORY_PAGE_SIZE),
                "page": str(page),
            }
            answer = _dict(self._json("GET", f"/ticket/{ticket_id}/history", params=params))
            items = _items(answer)
            yield from items
            if len(items) < HISTORY_PAGE_SIZE or page >= int(answer.get("pages") or 1):
                return

    def _info(self, ticket_id: str, status: str, **human: Any) -> TicketInfo:
        url = f"{self._base}/Ticket/Display.html?id={ticket_id}"
        return TicketInfo(ticket_id, f"#{ticket_id}", status, url=url, **human)

    # --- HTTP ---------------------------------------------------------------------------

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return _decode(self._call(method, path, **kwargs), method, path)

    def _json_or_none(self, path: str) -> dict[str, Any] | None:
        """GET `path`; None when RT says 404."""
        response = self._call("GET", path, missing_ok=True)
        return None if response.status_code == 404 else _dict(_decode(response, "GET", path))

    def _call(
        self, method: str, path: str, *, missing_ok: bool = False, **kwargs: Any
    ) -> requests.Response:
        try:
            response = self._http.request(
                method, self._base + API_PATH + path, timeout=float(self.options.timeout),
                allow_redirects=False, **kwargs,
            )
        except requests.RequestException as err:
            raise self._network_error(err, method, path) from err
        if response.status_code == 404 and missing_ok:
            return response
        if response.status_code >= 300:
            raise DeliveryError(
                self._scrub(_refusal(response, method, path)),
                permanent=_is_permanent(response.status_code),
            )
        return response

    def _network_error(
        self, err: requests.RequestException, method: str, path: str
    ) -> DeliveryError:
        where = f"RT {method} {path}"
        if isinstance(err, requests.Timeout):
            return DeliveryError(f"{where}: no answer within {self.options.timeout:g}s")
        if isinstance(err, requests.exceptions.SSLError):  # a certificate does not fix itself
            return DeliveryError(self._scrub(_cut(f"{where}: TLS failed: {err}")), permanent=True)
        found = _ERRNO.search(str(err))
        return DeliveryError(f"{where}: {found.group(0) if found else type(err).__name__}")

    def _scrub(self, text: str) -> str:
        """A server may echo what it was sent; the secrets never leave this object."""
        for secret in (self.options.token, self.options.password):
            if secret:
                text = text.replace(secret, "***")
        return text


# --- options --------------------------------------------------------------------------------


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"url must be an http:// or https:// URL, not {url!r}")
    if parts.username or parts.password:
        raise ValueError("url must not hold credentials: use token, or username and password")
    if parts.query or parts.fragment:
        raise ValueError("url must be RT's base URL, without ?query or #fragment")


def _check_credentials(token: str | None, username: str | None, password: str | None) -> None:
    if token and (username or password):
        raise ValueError("give either token, or username and password, not both")
    if not token and not (username and password):
        raise ValueError("RT needs a token, or a username and a password")


def _session(options: RtTickets.Options) -> requests.Session:
    session = requests.Session()
    session.verify = options.verify_tls
    session.headers["Accept"] = "application/json"
    if options.token:
        session.headers["Authorization"] = f"token {options.token}"
    else:
        session.auth = (options.username or "", options.password or "")
    return session


# --- answers --------------------------------------------------------------------------------


def _is_permanent(status: int) -> bool:
    return status < 500 and status not in (408, 429)


def _refusal(response: requests.Response, method: str, path: str) -> str:
    if 300 <= response.status_code < 400:
        detail = f"redirected to {response.headers.get('Location', '?')}; is url RT's base URL?"
    else:
        detail = _detail(response)
    return _cut(f"RT answered {response.status_code} to {method} {path}: {detail}")


def _detail(response: requests.Response) -> str:
    try:
        message = response.json().get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message) if message else " ".join(response.text.split()) or response.reason


def _decode(response: requests.Response, method: str, path: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise DeliveryError(
            f"RT {method} {path}: the answer is not JSON; is url RT's base URL?", permanent=True
        ) from None


def _cut(text: str) -> str:
    return text if len(text) <= REASON_LIMIT else text[: REASON_LIMIT - 1] + "…"


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _items(answer: Any) -> list[dict[str, Any]]:
    items = _dict(answer).get("items")
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def _user_name(value: Any) -> str:
    """RT writes a user as {"id": "root", ...}."""
    return str(value.get("id", "")) if isinstance(value, dict) else str(value or "")


def _owner(ticket: dict[str, Any]) -> str | None:
    owner = _user_name(ticket.get("Owner"))
    return None if owner in ("", NOBODY) else owner


def _custom_field_names(queue: dict[str, Any]) -> set[str]:
    fields = queue.get("TicketCustomFields")
    if not isinstance(fields, list):
        return set()
    return {str(cf.get("name")) for cf in fields if isinstance(cf, dict)}


def _epoch(value: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return None


# --- requests -------------------------------------------------------------------------------


def _is_ticket_id(text: str) -> bool:
    return text.isascii() and text.isdigit()  # not "²", which isdigit() also takes


def _ticket_id(external_id: str) -> str:
    if not _is_ticket_id(external_id):
        raise DeliveryError(f"{external_id!r} is not an RT ticket id", permanent=True)
    return external_id


def _message(text: str, status: str | None = None) -> dict[str, str]:
    message = {"Content": text, "ContentType": "text/plain"}
    if status:
        message["Status"] = status
    return message


def _sql_string(text: str) -> str:
    """A TicketSQL string literal: backslash escapes quote and backslash."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
