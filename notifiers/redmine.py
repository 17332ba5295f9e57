"""The Redmine backend: forewarn's tickets as issues of one Redmine 5 project, over its REST API.

The marker ends the issue's subject, so `find_by_marker` is Redmine's own "subject contains"
filter over every status, newest first. A comment is a journal note; resolve and reopen set
the configured statuses (with the text as the note). Names of statuses, priorities and the
tracker are looked up once and cached: the config speaks in the names people see.

The human side comes from the journals: a change of assignee, status or priority made by any
user other than the API key's own marks the ticket as touched by a human.

Failures are sorted for the dispatcher: network errors, timeouts, 408, 429 and 5xx may pass;
other 4xx (a bad key, a missing project, a rejected field) will not. The API key travels only
in a header and never appears in an error or a log line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import quote

import requests

from notifiers.base import DeliveryError, TicketDraft, TicketInfo
from probes.base import Duration

log = logging.getLogger(__name__)

PRIORITY_LEVELS = ("high", "medium", "low")
DEFAULT_PRIORITY_NAMES = {"high": "High", "medium": "Normal", "low": "Low"}
HUMAN_FIELDS = frozenset({"assigned_to_id", "status_id", "priority_id"})
TRANSIENT_HTTP = frozenset({408, 429})
SUBJECT_LIMIT = 255  # Redmine's column
ERROR_TEXT_LIMIT = 200
DEFAULT_TIMEOUT = Duration(10)
FIND_PAGE = 25  # the newest matches are enough: the marker is unique to one problem
_ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")


class NotFound(DeliveryError):
    """Redmine answered 404: the issue (or project) does not exist or is not visible."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=True)


class RedmineTickets:
    kind: ClassVar[str] = "redmine"

    @dataclass(frozen=True, kw_only=True)
    class Options:
        """The `[helpdesk]` keys of `kind = "redmine"`. Statuses, priorities and the tracker are
        given by name as Redmine shows them (or by numeric id)."""

        url: str  # the Redmine base URL, e.g. https://redmine.example.org
        api_key: str = field(repr=False, metadata={"secret": True})
        project: str  # the project identifier
        tracker: str = ""  # empty: the project's first tracker
        priority_names: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PRIORITY_NAMES))
        resolved_status: str = "Resolved"
        # "New", not "In Progress": forewarn reopening a ticket must not look like a person on it
        reopened_status: str = "New"
        new_statuses: tuple[str, ...] = ("New",)
        rejected_statuses: tuple[str, ...] = ("Rejected",)
        verify_tls: bool = True
        timeout: Duration = DEFAULT_TIMEOUT

        def __post_init__(self) -> None:
            if not self.url.startswith(("http://", "https://")):
                raise ValueError(f"url must start with http:// or https://, not {self.url!r}")
            if not self.project:
                raise ValueError("project must name a Redmine project identifier")
            unknown = sorted(set(self.priority_names) - set(PRIORITY_LEVELS))
            if unknown:
                raise ValueError(f"priority_names: unknown levels {unknown}; use {PRIORITY_LEVELS}")
            if self.timeout <= 0:
                raise ValueError("timeout must be positive")

    def __init__(self, options: Options) -> None:
        self.options = options
        self.base_url = options.url.rstrip("/")
        self.session = requests.Session()
        self.session.headers.update(
            {"X-Redmine-API-Key": options.api_key, "Accept": "application/json"}
        )
        self.session.verify = options.verify_tls
        self._ids: dict[str, dict[str, int]] = {}  # reference list path -> name -> id
        self._own_user_id: int | None = None
        self._project_seen = False

    @classmethod
    def from_config(cls, options: Options, state_path: str) -> RedmineTickets:
        return cls(options)

    # --- TicketBackend -------------------------------------------------------------------

    def create(self, draft: TicketDraft) -> TicketInfo:
        self._check_project()
        fields = {
            "project_id": self.options.project,
            "subject": subject_with_marker(draft.subject, draft.marker),
            "description": draft.body,
            **self._priority_field(draft.priority),
            **self._tracker_field(),
        }
        issue = self._call("POST", "/issues.json", json={"issue": fields})["issue"]
        info = self._info(issue)
        log.info("redmine issue %s opened for %s", info.number, draft.marker)
        self._link(info.external_id, draft.related)
        return info

    def find_by_marker(self, marker: str) -> TicketInfo | None:
        params = {
            "project_id": self.options.project,
            "status_id": "*",
            "subject": f"~{marker}",
            "sort": "id:desc",
            "limit": FIND_PAGE,
        }
        issues = self._call("GET", "/issues.json", params=params)["issues"]
        # "contains" is case-insensitive and may split words: confirm the exact marker
        found = next((issue for issue in issues if marker in issue.get("subject", "")), None)
        return self._info(found) if found else None

    def comment(self, external_id: str, text: str) -> None:
        self._update(external_id, {"notes": text})
        log.debug("redmine issue #%s commented", external_id)

    def resolve(self, external_id: str, text: str) -> None:
        self._set_status(external_id, self.options.resolved_status, text)

    def reopen(self, external_id: str, text: str) -> None:
        self._set_status(external_id, self.options.reopened_status, text)

    def get(self, external_id: str) -> TicketInfo | None:
        try:
            body = self._call("GET", issue_path(external_id), params={"include": "journals"})
        except NotFound:
            return None
        issue = body["issue"]
        return self._info(issue, self._human_journals(issue.get("journals", ())))

    # --- writing -------------------------------------------------------------------------

    def _update(self, external_id: str, fields: Mapping[str, Any]) -> None:
        self._call("PUT", issue_path(external_id), json={"issue": dict(fields)})

    def _set_status(self, external_id: str, status: str, text: str) -> None:
        status_id = self._id_of("/issue_statuses.json", "issue_statuses", status, "status")
        self._update(external_id, {"status_id": status_id, "notes": text})
        # Redmine drops a status its workflow does not allow the user, silently (204)
        now = self._call("GET", issue_path(external_id))["issue"]["status"]
        if int(now["id"]) != status_id:
            raise DeliveryError(
                f"redmine kept issue #{issue_number(external_id)} {now.get('name')!r}: its"
                f" workflow does not let the API key's user set {status!r}",
                permanent=True,
            )
        log.info("redmine issue #%s set to %s", external_id, status)

    def _priority_field(self, level: str) -> dict[str, int]:
        name = self.options.priority_names.get(level)
        if not name:
            return {}  # Redmine's default priority
        path = "/enumerations/issue_priorities.json"
        return {"priority_id": self._id_of(path, "issue_priorities", name, "priority")}

    def _tracker_field(self) -> dict[str, int]:
        if not self.options.tracker:
            return {}  # Redmine takes the project's first tracker
        return {
            "tracker_id": self._id_of("/trackers.json", "trackers", self.options.tracker, "tracker")
        }

    def _link(self, external_id: str, related: Iterable[str]) -> None:
        """Relate the new issue to earlier ones; a failure costs the link, not the ticket
        (raising would only make the dispatcher find this issue by its marker again)."""
        for other in related:
            try:
                relation = {"issue_to_id": issue_number(other), "relation_type": "relates"}
                path = f"/issues/{external_id}/relations.json"
                self._call("POST", path, json={"relation": relation})
            except DeliveryError as err:
                log.warning("redmine issue #%s not linked to %s: %s", external_id, other, err)

    # --- reading -------------------------------------------------------------------------

    def _info(
        self, issue: Mapping[str, Any], human: list[Mapping[str, Any]] | None = None
    ) -> TicketInfo:
        human = human or []
        issue_id = str(issue["id"])
        return TicketInfo(
            external_id=issue_id,
            number=f"#{issue_id}",
            status=self._status_of(issue.get("status") or {}),
            owner=(issue.get("assigned_to") or {}).get("name"),
            url=f"{self.base_url}/issues/{issue_id}",
            human_touched=any(changes_human_field(journal) for journal in human),
            last_human_update=max((_epoch(j["created_on"]) for j in human), default=None),
        )

    def _status_of(self, status: Mapping[str, Any]) -> str:
        """Redmine's status onto new | open | resolved | rejected."""
        name = str(status.get("name", ""))
        if _same(name, self.options.resolved_status):
            return "resolved"
        if any(_same(name, rejected) for rejected in self.options.rejected_statuses):
            return "rejected"
        if status.get("is_closed"):
            return "resolved"  # Closed, and any other closed status not listed as rejected
        if any(_same(name, new) for new in self.options.new_statuses):
            return "new"
        return "open"  # In Progress, Feedback, ...

    def _human_journals(self, journals: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """The journal entries written by anyone but forewarn's own API user."""
        own = self._own_id()
        return [j for j in journals if (j.get("user") or {}).get("id") != own]

    def _own_id(self) -> int:
        if self._own_user_id is None:
            self._own_user_id = int(self._call("GET", "/users/current.json")["user"]["id"])
        return self._own_user_id

    def _id_of(self, path: str, key: str, name: str, what: str) -> int:
        if name.isdigit():
            return int(name)
        if path not in self._ids:
            items = self._call("GET", path)[key]
            self._ids[path] = {str(item["name"]): int(item["id"]) for item in items}
        found = next((id_ for known, id_ in self._ids[path].items() if _same(known, name)), None)
        if found is None:
            known = ", ".join(self._ids[path]) or "(none)"
            raise DeliveryError(f"redmine has no {what} {name!r} (known: {known})", permanent=True)
        return found

    def _check_project(self) -> None:
        """Once: that the project exists. Redmine's answer to a create in a missing project is
        a puzzling 422 ("Project cannot be blank"), in the API user's language."""
        if self._project_seen:
            return
        try:
            self._call("GET", f"/projects/{quote(self.options.project, safe='')}.json")
        except NotFound:
            raise DeliveryError(
                f"redmine project {self.options.project!r} does not exist"
                " or the API key's user is not a member",
                permanent=True,
            ) from None
        self._project_seen = True

    # --- HTTP ----------------------------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """One request; its JSON body ({} for 204), or DeliveryError sorted for the dispatcher."""
        try:
            return self._request(method, path, **kwargs)
        except DeliveryError as err:
            # whatever a server or a library wrote into the error, the key does not get out
            err.args = (str(err).replace(self.options.api_key, "***"),)
            raise

    def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        what = f"redmine {method} {path}"
        timeout = float(self.options.timeout)
        try:
            response = self.session.request(method, self.base_url + path, timeout=timeout, **kwargs)
        except requests.RequestException as err:
            raise DeliveryError(f"{what}: {network_reason(err, timeout)}") from None
        if response.status_code >= 400:
            raise http_error(what, response)
        return _json_body(what, response)


# --- pure helpers --------------------------------------------------------------------------------


def subject_with_marker(subject: str, marker: str) -> str:
    """The subject ending with the marker, shortened to fit Redmine's 255 characters."""
    subject = " ".join(subject.split())  # a subject is one line
    if marker in subject:
        return subject[:SUBJECT_LIMIT]
    room = SUBJECT_LIMIT - len(marker) - 1
    if len(subject) > room:
        subject = subject[: max(room - 1, 0)] + "…"
    return f"{subject} {marker}".strip()


def issue_number(external_id: str) -> int:
    """Accept what the daemon stores and people type: "12", "#12"."""
    text = str(external_id).strip().removeprefix("#")
    if not text.isdigit():
        raise DeliveryError(f"{external_id!r} is not a Redmine issue id", permanent=True)
    return int(text)


def issue_path(external_id: str) -> str:
    return f"/issues/{issue_number(external_id)}.json"


def changes_human_field(journal: Mapping[str, Any]) -> bool:
    return any(
        detail.get("property") == "attr" and detail.get("name") in HUMAN_FIELDS
        for detail in journal.get("details", ())
    )


def http_error(what: str, response: requests.Response) -> DeliveryError:
    status = response.status_code
    if status == 404:
        return NotFound(f"{what}: HTTP 404 not found (no such issue or project, or not visible)")
    if status == 401:
        return DeliveryError(
            f"{what}: HTTP 401 authentication failed (check api_key)", permanent=True
        )
    permanent = status < 500 and status not in TRANSIENT_HTTP
    return DeliveryError(f"{what}: HTTP {status} {_error_text(response)}", permanent=permanent)


def network_reason(err: requests.RequestException, timeout: float) -> str:
    if isinstance(err, requests.Timeout):
        return f"timed out after {timeout:g}s"
    if isinstance(err, requests.exceptions.SSLError):
        return "TLS handshake failed (verify_tls, or the server's certificate)"
    found = _ERRNO_TEXT.search(str(err))
    return found.group(1).strip() if found else type(err).__name__


def _error_text(response: requests.Response) -> str:
    try:
        errors = response.json().get("errors")
    except (ValueError, AttributeError):
        errors = None
    text = "; ".join(map(str, errors)) if isinstance(errors, list) else response.text
    return _shorten(" ".join(text.split()) or response.reason or "")


def _json_body(what: str, response: requests.Response) -> dict[str, Any]:
    if response.status_code == 204 or not response.content:
        return {}
    try:
        body = response.json()
    except ValueError:
        # a proxy's or login page's HTML: not Redmine's API answering
        raise DeliveryError(f"{what}: the answer is not JSON: {_shorten(response.text)}") from None
    if not isinstance(body, dict):
        raise DeliveryError(f"{what}: unexpected answer {_shorten(response.text)}")
    return body


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= ERROR_TEXT_LIMIT else text[: ERROR_TEXT_LIMIT - 1] + "…"


def _same(name: str, wanted: str) -> bool:
    return name.casefold() == wanted.casefold()


def _epoch(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp).timestamp()  # Python 3.11 reads the "Z" itself
