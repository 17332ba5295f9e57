"""The HTTP API under /api/v1, on the daemon's one HTTP server (`monitor.web`) next to /metrics.

Reads: health, alerts, incidents (one with its events, notices and escalation steps), tickets,
silences, the help-desk report (`forewarn report --json`), and this API's own OpenAPI
description (`monitor/openapi.json`, kept in step with ENDPOINTS by a test). Writes: acknowledge
or resolve an incident, record a user's report of one, add or expire a silence, and
Alertmanager's webhook. The reads and writes are the command line's own (`monitor.views`,
`monitor.silence_cli`, `monitor.report`, `monitor.store`), so both say and check the same.

A request is checked in this order, and the first problem is the answer: the path (404), the
method (405, with Allow), the token (401 without one, 403 with a wrong one, 403 for every
write while `[api] token` is not set), the body's type (415), its length (411, 413, before a
byte of it is read), its JSON (400, with the parser's reason), its fields (422, naming the
field), then the state (404 for an unknown id, 409 when the incident or silence cannot change
that way). Every answer is JSON; every error is `{"error": reason}` (and `field`); an
unexpected exception is logged and answered 500 with its type only, never a traceback.

Reads read the state file through a read-only connection of their own (SQLite WAL), so they
never wait for the daemon's main loop; writes are short transactions through the `Store`.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.metadata
import importlib.resources
import json
import logging
import math
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

from monitor import store as st
from monitor.api_config import ApiConfig
from monitor.durations import on_calendar
from monitor.report import DEFAULT_SINCE, build_summary, parse_since, summary_json
from monitor.resolution import Refused, resolve_by_hand
from monitor.silence_cli import (
    add_silence,
    build_silence,
    check_interval,
    expire_silence,
    parse_time,
    positive_duration,
    read_silences,
    silence_dict,
)
from monitor.views import CliError, incident_detail, incident_rows
from monitor.web import JSON, Request, Response
from rules.model import AlertState, Phase, Rule

log = logging.getLogger(__name__)

__all__ = ["ENDPOINTS", "PREFIX", "AlertmanagerSink", "Api"]

PREFIX = "/api/v1"
DEFAULT_LIMIT, MAX_LIMIT = 100, 1000
MAX_TEXT = 4096  # characters of a name, comment or matcher
MAX_REPORTER, MAX_NOTE = 200, 2000  # characters of a user report's `by` and `note`
# A user report a moment ahead of our clock is a client's clock running fast, not the future.
CLOCK_SLACK = 1.0
MAX_MATCHERS = 64
MAX_QUERY_FIELDS = 16
BODY_SECONDS = 30.0  # the time a client has to send its whole body
BEARER_CHALLENGE = 'Bearer realm="forewarn"'
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # all but tab and line ends
# Alertmanager's webhook payload in, what was done with it out; ValueError for a malformed one.
AlertmanagerSink = Callable[[dict[str, Any]], Mapping[str, Any]]


class ApiError(Exception):
    """The answer to a request that cannot be carried out, raised from wherever that is found."""

    def __init__(
        self,
        status: HTTPStatus,
        reason: str,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(reason)
        self.status, self.reason, self.field = status, reason, field
        self.headers = dict(headers or {})

    def response(self) -> Response:
        body: dict[str, Any] = {"error": self.reason}
        if self.field is not None:
            body["field"] = self.field
        return _json(body, self.status, **self.headers)


def _invalid(name: str, message: str) -> ApiError:
    return ApiError(HTTPStatus.UNPROCESSABLE_ENTITY, f"{name}: {message}", name)


@dataclass(frozen=True)
class Call:
    """One request as an endpoint sees it, every part already checked."""

    params: dict[str, str]  # from the path: {"id": "3"}
    query: dict[str, str]
    body: Any  # the parsed JSON of a write; None for a read
    now: float


Answer = Callable[["Api", Call], Response]


@dataclass(frozen=True)
class Endpoint:
    method: str
    template: str  # as the OpenAPI document writes it: /api/v1/incidents/{id}
    answer: Answer
    query: frozenset[str] = frozenset()  # the query parameters it takes
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.template))
        object.__setattr__(self, "pattern", re.compile(regex))

    @property
    def write(self) -> bool:
        """Writes take a JSON body (DELETE's is optional) and always need the token."""
        return self.method in ("POST", "DELETE")


class Api:
    """Answers every request under /api/v1 (a `monitor.web.ApiHandler`).

    `wake` is called after every write (the dispatcher: outbox rows may be waiting);
    `stale_probes(now)` names the probes that missed their schedule (for health);
    `rules()` gives the rules running now, whose settings the report's suggestions start from.
    The daemon sets `alertmanager_sink`; until then the webhook answers 503.
    """

    def __init__(
        self,
        store: st.Store,
        settings: ApiConfig,
        *,
        wake: Callable[[], None] = lambda: None,
        stale_probes: Callable[[float], list[str]] = lambda now: [],
        rules: Callable[[], Iterable[Rule]] = lambda: (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.settings = settings  # replaced as a whole on reload
        self.wake = wake
        self.stale_probes = stale_probes
        self.rules = rules
        self.clock = clock
        self.started = clock()
        self.alertmanager_sink: AlertmanagerSink | None = None

    def __call__(self, request: Request) -> Response:
        try:
            return self._handle(request)
        except ApiError as exc:
            return exc.response()
        except Exception as exc:  # a bug or a broken state file must not show its insides
            log.exception("%s %s failed", request.method, request.path)
            reason = f"internal error ({type(exc).__name__}); the daemon's log has the details"
            return _json({"error": reason}, HTTPStatus.INTERNAL_SERVER_ERROR)

    def _handle(self, request: Request) -> Response:
        endpoint, params = _route(request.method, request.path)
        self._authorize(endpoint, request.headers)
        query = _query(request.query, endpoint)
        body = self._body(request) if endpoint.write else None
        response = endpoint.answer(self, Call(params, query, body, self.clock()))
        if endpoint.write:
            self.wake()
        return response

    def _authorize(self, endpoint: Endpoint, headers: Mapping[str, str]) -> None:
        token = self.settings.token
        if endpoint.write and token is None:
            raise ApiError(HTTPStatus.FORBIDDEN, "writes are disabled: no [api] token")
        if token is None or not (endpoint.write or self.settings.read_requires_token):
            return
        given = _bearer(headers.get("authorization"))
        # Compared as digests: constant time, and the length of the token does not show either.
        if not hmac.compare_digest(_digest(given.encode("latin-1")), _digest(token.encode())):
            raise ApiError(HTTPStatus.FORBIDDEN, "wrong token")

    def _body(self, request: Request) -> Any:
        if request.method == "DELETE" and not _has_body(request.headers):
            return None  # a DELETE's body is optional
        length = _length(request.headers, self.settings.max_body)
        _check_type(request.headers.get("content-type"))
        return _parse_json(_read(request, length))

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection to the state file, for one request."""
        conn = st.connect(self.store.path, readonly=True)
        try:
            yield conn
        finally:
            conn.close()


# --- a request's parts ---------------------------------------------------------------------


def _route(method: str, path: str) -> tuple[Endpoint, dict[str, str]]:
    found = [(e, match) for e in ENDPOINTS if (match := e.pattern.fullmatch(path))]
    if not found:
        raise ApiError(HTTPStatus.NOT_FOUND, f"no such path: {path}; see {PREFIX}/openapi.json")
    wanted = "GET" if method == "HEAD" else method
    for endpoint, match in found:
        if endpoint.method == wanted:
            return endpoint, match.groupdict()
    methods = {e.method for e, _ in found}
    allowed = ", ".join(sorted(methods | ({"HEAD"} if "GET" in methods else set())))
    raise ApiError(
        HTTPStatus.METHOD_NOT_ALLOWED,
        f"{method} is not allowed here; use {allowed}",
        headers={"Allow": allowed},
    )


def _bearer(header: str | None) -> str:
    if header is None:
        raise ApiError(
            HTTPStatus.UNAUTHORIZED,
            "this needs the API token: send Authorization: Bearer <token>",
            headers={"WWW-Authenticate": BEARER_CHALLENGE},
        )
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise ApiError(
            HTTPStatus.UNAUTHORIZED,
            "the Authorization header must read: Bearer <token>",
            headers={"WWW-Authenticate": f'{BEARER_CHALLENGE}, error="invalid_request"'},
        )
    return credentials.strip()


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _query(text: str, endpoint: Endpoint) -> dict[str, str]:
    try:
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_QUERY_FIELDS)
    except ValueError:
        raise ApiError(HTTPStatus.BAD_REQUEST, "too many query parameters") from None
    found: dict[str, str] = {}
    for name, value in pairs:
        if name not in endpoint.query:
            takes = ", ".join(sorted(endpoint.query)) or "none"
            raise _invalid(name, f"unknown query parameter; this path takes: {takes}")
        if name in found:
            raise _invalid(name, "given twice")
        found[name] = value
    return found


def _check_type(header: str | None) -> None:
    media_type = (header or "").partition(";")[0].strip().lower()
    if media_type != JSON:
        shown = f"not {header!r}" if header else "none was given"
        raise ApiError(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"send the body as {JSON} (Content-Type; {shown})"
        )


def _has_body(headers: Mapping[str, str]) -> bool:
    return "transfer-encoding" in headers or headers.get("content-length", "0").strip() != "0"


def _length(headers: Mapping[str, str], limit: int) -> int:
    if "transfer-encoding" in headers:
        raise ApiError(
            HTTPStatus.LENGTH_REQUIRED, "send a Content-Length; chunked bodies are not taken"
        )
    text = headers.get("content-length")
    if text is None:
        raise ApiError(HTTPStatus.LENGTH_REQUIRED, "a JSON body needs a Content-Length")
    if not re.fullmatch(r"[0-9]{1,20}", text.strip()):
        raise ApiError(HTTPStatus.BAD_REQUEST, f"Content-Length {text!r} is not a byte count")
    length = int(text)
    if length > limit:
        raise ApiError(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            f"the body has {length} bytes; at most {limit} are taken ([api] max_body)",
        )
    return length


def _read(request: Request, length: int) -> bytes:
    """The whole body, within BODY_SECONDS: a client trickling bytes does not keep a thread."""
    deadline = time.monotonic() + BODY_SECONDS
    chunks, received = [], 0
    while received < length:
        try:
            chunk = request.read(length - received)
        except OSError:  # the socket's own timeout: the client stopped sending
            chunk = None
        if chunk is None or time.monotonic() > deadline:
            raise ApiError(HTTPStatus.REQUEST_TIMEOUT, "the body did not arrive in time")
        if not chunk:
            raise ApiError(
                HTTPStatus.BAD_REQUEST, f"the body ended after {received} of {length} bytes"
            )
        chunks.append(chunk)
        received += len(chunk)
    return b"".join(chunks)


def _parse_json(data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError as exc:
        raise ApiError(
            HTTPStatus.BAD_REQUEST, f"the body is not UTF-8: {exc.reason} at byte {exc.start}"
        ) from None
    except RecursionError:
        raise ApiError(HTTPStatus.BAD_REQUEST, "malformed JSON: nested too deeply") from None
    except ValueError as exc:  # a JSONDecodeError, NaN, or an integer of a million digits
        raise ApiError(HTTPStatus.BAD_REQUEST, f"malformed JSON: {exc}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


# --- checking values -----------------------------------------------------------------------


def _fields(body: Any, known: set[str]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(HTTPStatus.UNPROCESSABLE_ENTITY, "the body must be a JSON object", "")
    unknown = sorted(set(body) - known)
    if unknown:
        raise _invalid(unknown[0], f"unknown field; known fields: {', '.join(sorted(known))}")
    return body


def _text(value: Any, name: str, required: bool = True, longest: int = MAX_TEXT) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise _invalid(name, "required" if value is None else "expected a string")
    if required and not value.strip():
        raise _invalid(name, "must not be blank")
    if len(value) > longest:
        raise _invalid(name, f"longer than {longest} characters")
    if _CONTROL.search(value):
        raise _invalid(name, "holds control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _invalid(name, "is not valid Unicode text") from None
    return value.strip()


def _flag(value: Any, name: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _invalid(name, "expected true or false")
    return value


def _choice(query: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    """The parameter's value, one of `choices`; the first is the default."""
    value = query.get(name, choices[0])
    if value not in choices:
        raise _invalid(name, f"{value!r} is not one of {', '.join(choices)}")
    return value


def _query_flag(query: Mapping[str, str], name: str) -> bool:
    value = query.get(name, "false").lower()
    if value not in ("", "true", "false", "1", "0"):
        raise _invalid(name, f"{value!r} is not true or false")
    return value in ("", "true", "1")


def _limit(query: Mapping[str, str]) -> int:
    text = query.get("limit", str(DEFAULT_LIMIT))
    if not re.fullmatch(r"[0-9]{1,7}", text) or not 1 <= int(text) <= MAX_LIMIT:
        raise _invalid("limit", f"{text!r} is not a number from 1 to {MAX_LIMIT}")
    return int(text)


def _id(text: str, what: str) -> int:
    if not re.fullmatch(r"[0-9]+", text):
        raise ApiError(HTTPStatus.NOT_FOUND, f"no {what} {text!r}: ids are whole numbers")
    if len(text) > 18:  # SQLite's integers end at 2**63
        raise ApiError(HTTPStatus.NOT_FOUND, f"no {what} {text}")
    return int(text)


def _json(value: Any, status: HTTPStatus = HTTPStatus.OK, **headers: str) -> Response:
    body = json.dumps(_plain(value), allow_nan=False, sort_keys=True).encode()
    return Response(status, JSON, body, headers)


def _plain(value: Any) -> Any:
    """`value` with NaN and infinities as null, which JSON can carry."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


# --- reads ---------------------------------------------------------------------------------


def _health(api: Api, call: Call) -> Response:
    pending, oldest, dead = api.store.outbox_stats(call.now)
    failed = api.store.failed_deliveries_since(call.now - 86400)
    stale = sorted(api.stale_probes(call.now))
    return _json(
        {
            # What the built-in self-alerts watch: probes on schedule, deliveries getting through.
            "ok": not stale and failed == 0,
            "version": _version(),
            "uptime_seconds": round(call.now - api.started, 3),
            "outbox": {
                "pending": pending,
                "oldest_pending_seconds": round(oldest, 3),
                "dead": dead,
                "failed_last_24h": failed,
            },
            "probes_stale": stale,
        }
    )


@cache
def _version() -> str:
    try:
        return importlib.metadata.version("forewarn")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree never installed
        return "unknown"


@cache
def _openapi_document() -> bytes:
    return importlib.resources.files("monitor").joinpath("openapi.json").read_bytes()


def _openapi(api: Api, call: Call) -> Response:
    return Response(HTTPStatus.OK, JSON, _openapi_document())


_ALERT_STATES = {
    "active": (Phase.PENDING, Phase.FIRING),
    "pending": (Phase.PENDING,),
    "firing": (Phase.FIRING,),
    "resolved": (Phase.RESOLVED,),
    "all": (Phase.PENDING, Phase.FIRING, Phase.RESOLVED),
}


def _alerts(api: Api, call: Call) -> Response:
    phases = _ALERT_STATES[_choice(call.query, "state", tuple(_ALERT_STATES))]
    found = [a for a in api.store.load_alerts().values() if a.phase in phases]
    found.sort(key=lambda a: (a.rule, a.fingerprint))
    return _json({"alerts": [_alert_dict(a) for a in found]})


def _alert_dict(alert: AlertState) -> dict[str, Any]:
    return {
        "fingerprint": alert.fingerprint,
        "rule": alert.rule,
        "labels": alert.labels,
        "state": alert.phase.value,
        "severity": alert.severity.label,
        "since": alert.active_since if alert.active_since is not None else alert.changed_at,
        "value": alert.value,
        "error": alert.error,
        "evaluated_at": alert.evaluated_at,
        "predicted_at": alert.predicted_at,
        "flapping": alert.flapping,
    }


def _incidents(api: Api, call: Call) -> Response:
    status = _choice(call.query, "status", ("open", "resolved", "all"))
    limit = _limit(call.query)
    with api.reading() as conn:
        rows = incident_rows(conn, None if status == "all" else status, limit)
    return _json({"incidents": rows})


def _incident(api: Api, call: Call) -> Response:
    return _json(_incident_detail(api, _id(call.params["id"], "incident")))


def _incident_detail(api: Api, incident_id: int) -> dict[str, Any]:
    """The incident as `forewarn incidents show` has it, with its alerts, notices and steps."""
    with api.reading() as conn:
        data = incident_detail(conn, incident_id)
        if data is None:
            raise ApiError(HTTPStatus.NOT_FOUND, f"no incident {incident_id}")
        notices = conn.execute(
            "SELECT episode, audience, kind, seq, reason, at, eta_at, next_update_at FROM notice"
            " WHERE incident_id = ? ORDER BY id",
            (incident_id,),
        ).fetchall()
        steps = conn.execute(
            "SELECT episode, step, policy, fired_at, urgent FROM escalation_fired"
            " WHERE incident_id = ? ORDER BY episode, step",
            (incident_id,),
        ).fetchall()
    escalations = [dict(row) | {"urgent": bool(row["urgent"])} for row in steps]
    alerts = api.store.members(incident_id)
    return data | {
        "alerts": alerts,
        "notices": [dict(r) for r in notices],
        "escalations": escalations,
    }


def _report(api: Api, call: Call) -> Response:
    """`forewarn report --json` of the episodes opened in [since, now)."""
    with_episodes = _query_flag(call.query, "episodes")
    text = call.query.get("since")
    since = call.now - DEFAULT_SINCE if text is None else _since(text, call.now)
    with api.reading() as conn:
        summary = build_summary(conn, since, call.now, api.rules())
    return _json(summary_json(summary, with_episodes))


def _since(text: str, now: float) -> float:
    try:
        return parse_since(text, now)
    except ValueError as exc:
        raise _invalid("since", str(exc)) from None


def _tickets(api: Api, call: Call) -> Response:
    status = _choice(call.query, "status", ("open", "resolved", "all"))
    where = "" if status == "all" else " WHERE i.status = ?"
    params = (() if status == "all" else (status,)) + (_limit(call.query),)
    with api.reading() as conn:
        rows = conn.execute(
            "SELECT t.incident_id, t.backend, t.external_id, t.number, t.url, t.marker,"
            " t.created_at, i.status AS incident_status, i.summary, i.route"
            f" FROM ticket t JOIN incident i ON i.id = t.incident_id{where}"
            " ORDER BY t.created_at DESC, t.incident_id DESC LIMIT ?",
            params,
        ).fetchall()
    return _json({"tickets": [dict(row) for row in rows]})


def _silences(api: Api, call: Call) -> Response:
    everything = _query_flag(call.query, "all")
    with api.reading() as conn:
        rows = read_silences(conn, everything, call.now)
    return _json({"silences": [silence_dict(row, call.now) for row in rows]})


def _silence(api: Api, call: Call) -> Response:
    return _json(silence_dict(_silence_row(api, call.params["id"]), call.now))


def _silence_row(api: Api, text: str) -> sqlite3.Row:
    silence_id = _id(text, "silence")
    with api.reading() as conn:
        row: sqlite3.Row | None = conn.execute(
            "SELECT * FROM silence WHERE id = ?", (silence_id,)
        ).fetchone()
    if row is None:
        raise ApiError(HTTPStatus.NOT_FOUND, f"no silence {silence_id}")
    return row


# --- writes --------------------------------------------------------------------------------


def _acknowledge(api: Api, call: Call) -> Response:
    incident_id = _id(call.params["id"], "incident")
    body = _fields(call.body, {"by", "comment"})
    by, comment = _text(body.get("by"), "by"), _text(body.get("comment"), "comment", False)
    if not st.acknowledge(api.store, incident_id, by, comment, call.now):
        raise _not_acknowledgeable(api, incident_id)
    log.info("incident %d acknowledged by %s (API)", incident_id, by)
    return _json(_incident_detail(api, incident_id))


def _not_acknowledgeable(api: Api, incident_id: int) -> ApiError:
    row = api.store.incident(incident_id)
    if row is None:
        return ApiError(HTTPStatus.NOT_FOUND, f"no incident {incident_id}")
    if row["status"] != "open":
        return ApiError(HTTPStatus.CONFLICT, f"incident {incident_id} is {row['status']}")
    return ApiError(
        HTTPStatus.CONFLICT,
        f"incident {incident_id} was already acknowledged by {row['acknowledged_by']}",
    )


def _resolve(api: Api, call: Call) -> Response:
    incident_id = _id(call.params["id"], "incident")
    body = _fields(call.body, {"by", "comment", "force"})
    by, comment = _text(body.get("by"), "by"), _text(body.get("comment"), "comment", False)
    force = _flag(body.get("force"), "force")
    try:
        resolve_by_hand(api.store, incident_id, by, comment, call.now, force=force)
    except Refused as exc:
        status = HTTPStatus.NOT_FOUND if exc.missing else HTTPStatus.CONFLICT
        raise ApiError(status, str(exc)) from None
    log.info("incident %d resolved by %s (API)", incident_id, by)
    return _json(_incident_detail(api, incident_id))


def _user_report(api: Api, call: Call) -> Response:
    incident_id = _id(call.params["id"], "incident")
    body = _fields(call.body, {"by", "at", "note"})
    by = _text(body.get("by"), "by", longest=MAX_REPORTER)
    note = _text(body.get("note"), "note", False, longest=MAX_NOTE)
    reported_at = _reported_at(body.get("at"), call.now)
    event = st.record_user_report(api.store, incident_id, by, reported_at, note, call.now, "api")
    if event is None:
        raise ApiError(HTTPStatus.NOT_FOUND, f"no incident {incident_id}")
    log.info("incident %d reported by a user, %s (API)", incident_id, by)
    answer = {"incident": incident_id, "event": event, "reported_at": reported_at}
    return _json(answer, HTTPStatus.CREATED)


def _reported_at(value: Any, now: float) -> float:
    if value is None:
        return now
    moment = _instant(value, "at")
    if moment > now + CLOCK_SLACK:
        raise _invalid("at", "must not be in the future")
    return moment


def _add_silence(api: Api, call: Call) -> Response:
    known = {"matchers", "duration", "ends_at", "starts_at", "author", "comment"}
    body = _fields(call.body, known)
    author, comment = _text(body.get("author"), "author"), _text(body.get("comment"), "comment")
    matchers = _matchers(body.get("matchers"))
    start, end = _interval(body, call.now)
    try:
        silence = build_silence(matchers, start, end, author, comment)
    except CliError as exc:  # a matcher that does not parse, or one that would mute everything
        raise _invalid("matchers", str(exc)) from None
    except RecursionError:  # from compiling a regex of thousands of nested groups
        raise _invalid("matchers", "a regex nested too deeply") from None
    row = add_silence(api.store, silence, call.now)
    log.info("silence %d added by %s (API): %s", row["id"], author, ", ".join(matchers))
    location = f"{PREFIX}/silences/{row['id']}"
    return _json(silence_dict(row, call.now), HTTPStatus.CREATED, Location=location)


def _matchers(value: Any) -> list[str]:
    if not isinstance(value, list) or not value:
        raise _invalid("matchers", 'expected a list of matchers, e.g. ["rule=\\"disk_full\\""]')
    if len(value) > MAX_MATCHERS:
        raise _invalid("matchers", f"more than {MAX_MATCHERS}")
    return [_text(item, f"matchers[{number}]") for number, item in enumerate(value)]


def _interval(body: Mapping[str, Any], now: float) -> tuple[float, float]:
    """(start, end) of a new silence from `starts_at` and one of `duration` and `ends_at`."""
    if ("duration" in body) == ("ends_at" in body):
        raise _invalid("duration", "give either duration or ends_at")
    start = _instant(body["starts_at"], "starts_at") if "starts_at" in body else now
    if "ends_at" in body:
        name, end = "ends_at", _instant(body["ends_at"], "ends_at")
    else:
        name, end = "duration", start + _duration(body["duration"])
    try:
        check_interval(start, end, now)
    except CliError as exc:
        raise _invalid(name, str(exc)) from None
    return start, end


def _instant(value: Any, name: str) -> float:
    """Epoch seconds, or an ISO 8601 time (UTC unless it says its offset)."""
    if isinstance(value, str):
        try:
            return parse_time(value, name)
        except CliError as exc:
            raise _invalid(name, str(exc).removeprefix(f"{name} ")) from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not on_calendar(value):
        raise _invalid(name, "expected epoch seconds or an ISO 8601 time such as 2026-11-23T06:00Z")
    return float(value)


def _duration(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _invalid("duration", "expected a duration such as 2h, or seconds")
    try:
        return positive_duration(value, "duration")
    except CliError as exc:
        raise _invalid("duration", str(exc).removeprefix("duration").lstrip(": ")) from None


def _expire_silence(api: Api, call: Call) -> Response:
    row = _silence_row(api, call.params["id"])
    body = _fields(call.body if call.body is not None else {}, {"by"})
    by = _text(body.get("by", "api"), "by")
    try:
        row = expire_silence(api.store, row["id"], by, call.now)
    except CliError as exc:  # it ended already
        raise ApiError(HTTPStatus.CONFLICT, str(exc)) from None
    log.info("silence %d expired by %s (API)", row["id"], by)
    return _json(silence_dict(row, call.now))


def _alertmanager(api: Api, call: Call) -> Response:
    sink = api.alertmanager_sink
    if sink is None:
        raise ApiError(
            HTTPStatus.SERVICE_UNAVAILABLE,
            "the Alertmanager receiver is not running in this daemon",
        )
    if not isinstance(call.body, dict):
        raise ApiError(
            HTTPStatus.UNPROCESSABLE_ENTITY, "the body must be Alertmanager's webhook payload", ""
        )
    try:
        return _json(dict(sink(call.body)))
    except ValueError as exc:  # the receiver names what is malformed
        raise ApiError(HTTPStatus.UNPROCESSABLE_ENTITY, str(exc)) from None


# --- the routes ----------------------------------------------------------------------------

ENDPOINTS = (
    Endpoint("GET", f"{PREFIX}/health", _health),
    Endpoint("GET", f"{PREFIX}/openapi.json", _openapi),
    Endpoint("GET", f"{PREFIX}/alerts", _alerts, frozenset({"state"})),
    Endpoint("GET", f"{PREFIX}/incidents", _incidents, frozenset({"status", "limit"})),
    Endpoint("GET", f"{PREFIX}/incidents/{{id}}", _incident),
    Endpoint("POST", f"{PREFIX}/incidents/{{id}}/ack", _acknowledge),
    Endpoint("POST", f"{PREFIX}/incidents/{{id}}/resolve", _resolve),
    Endpoint("POST", f"{PREFIX}/incidents/{{id}}/user-reports", _user_report),
    Endpoint("GET", f"{PREFIX}/report", _report, frozenset({"since", "episodes"})),
    Endpoint("GET", f"{PREFIX}/tickets", _tickets, frozenset({"status", "limit"})),
    Endpoint("GET", f"{PREFIX}/silences", _silences, frozenset({"all"})),
    Endpoint("POST", f"{PREFIX}/silences", _add_silence),
    Endpoint("GET", f"{PREFIX}/silences/{{id}}", _silence),
    Endpoint("DELETE", f"{PREFIX}/silences/{{id}}", _expire_silence),
    Endpoint("POST", f"{PREFIX}/alertmanager", _alertmanager),
)
