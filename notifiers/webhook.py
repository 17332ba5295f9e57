"""The webhook ticket backend: a JSON request per event, for any help desk or tool that has
no backend of its own (a ticketing API, a chat bridge, a small script behind a web server).

Payload, version 1. Every event is one request (`method`, POST by default) to `url` with
`Content-Type: application/json` and this body:

    {"version": 1,
     "event": "create",                      # create | comment | resolve | reopen
     "marker": "[forewarn:1a2b3c4d5e6f7a8b]", # forewarn's key for the problem, on every event
     "external_id": null,                    # the receiver's id of the ticket; null on create
     "subject": "[CRITICAL] Intranet is not answering on web01 (intranet)",  # create only
     "body": "Intranet is not answering on web01.\n...",                     # create only
     "priority": "high",                     # high | medium | low; create only
     "category": "web",                      # may be ""; create only
     "tags": ["forewarn", "web", "intranet"],  # create only
     "related": ["17"]}                      # receiver ids of earlier tickets of the same
                                             #   problem (a recurrence); create only
    {"version": 1, "event": "comment", "marker": "[forewarn:1a2b3c4d5e6f7a8b]",
     "external_id": "42", "text": "Severity changed from warning to critical ..."}

`resolve` and `reopen` look like `comment`. A create also carries the header
`Idempotency-Key: <marker>`. New keys may be added within version 1; a change to the meaning
of an existing key raises the version.

The receiver answers any 2xx. On create, with `id_path` set (`"id"`, `"ticket.number"`; a
part made of digits indexes a list: `"tickets.0.id"`), the JSON answer holds the receiver's id
of the new ticket (a string or a whole number), which later events carry as `external_id`;
without `id_path` the marker is the id. (forewarn stores "<receiver id> <marker>" as the
ticket's external id, so that updates carry both; the ticket's number is the receiver's id.)
A 3xx is not followed (a redirected POST would arrive as a GET without its body). Network
errors, timeouts, 408, 429 and 5xx are retried by the dispatcher; another 4xx, a certificate
that does not verify, or a create answer without the id at `id_path` is permanent.

Finding a ticket again: with `find_url` (an URL with `{marker}`, URL-encoded when filled in),
a GET answered 404, or 2xx with an empty body, `null`, `[]`, `{}`, or an `id_path` that runs
past the end of a list (`"tickets.0.id"` in `{"tickets": []}`), means "no such ticket"; any
other 2xx means found, with the id at `id_path`. Without `find_url` forewarn cannot look, so
after an unknown outcome it sends the create again with the same marker and Idempotency-Key:
a receiver should treat a second create for a marker it knows as the same ticket (like
PagerDuty's dedup_key). `get` returns None: a webhook has no human side to read back, so the
two-way sync does not apply.

`body_template`: the absolute path of a jinja2 template that renders the request body instead
of the payload above, in a sandbox that cannot change anything. It sees every payload key as a
variable (`event`, `marker`, `subject`, `body`, `text`, ... absent keys are undefined) and the
whole payload as `payload`; write values with `|tojson` so they arrive as valid JSON, e.g.

    {"title": {{ subject|tojson }}, "description": {{ body|tojson }}, "source": "forewarn"}

The result must be JSON (checked before sending).

    [helpdesk]
    kind = "webhook"
    url = "https://tickets.example.org/api/forewarn"
    headers = ["X-Team: infra"]
    secret_header = { env = "FOREWARN_WEBHOOK_AUTH" }  # e.g. "Authorization: Bearer ..."
    id_path = "ticket.id"
    find_url = "https://tickets.example.org/api/forewarn?marker={marker}"
    timeout = "10s"

Secrets: the secret header's value never appears in an error or a log line, and neither
does the path or query of `url` and `find_url` (incoming-webhook URLs often are the secret):
errors name only the scheme, host and port.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

import jinja2
import requests
import urllib3
from jinja2.sandbox import ImmutableSandboxedEnvironment

from notifiers.base import DeliveryError, TicketDraft, TicketInfo
from probes.base import Duration
from probes.http import check_secret_header, parse_header

log = logging.getLogger(__name__)

PAYLOAD_VERSION = 1
METHODS = ("POST", "PUT", "PATCH")
DEFAULT_TIMEOUT = Duration(10)
RETRYABLE_STATUSES = (408, 429)
MAX_EXCERPT_CHARS = 120  # of a response body, quoted in an error
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
_EMPTY_JSON: tuple[Any, ...] = (None, [], {})
TRANSIENT_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,  # the answer broke off: outcome unknown
)


# --- option checks -----------------------------------------------------------------------


def _check_url(url: str, key: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{key} must be an http:// or https:// URL with a host")


def _check_find_url(url: str) -> None:
    _check_url(url, "find_url")
    if "{marker}" not in url:
        raise ValueError("find_url must contain {marker}")


def _check_id_path(path: str) -> None:
    if not all(path.split(".")):
        raise ValueError(f'id_path {path!r} must be keys joined by dots, e.g. "ticket.id"')


def origin(url: str) -> str:
    """What an error may say about a URL: its path and query may be a secret token."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}"


def _template_environment() -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(autoescape=False, keep_trailing_newline=True)


def load_template(path: str) -> jinja2.Template:
    """The compiled body template; ValueError says why it cannot be used."""
    if not Path(path).is_absolute():
        raise ValueError(f"body_template {path!r} must be an absolute path")
    try:
        source = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        raise ValueError(f"cannot read body_template {path}: {reason}") from None
    try:
        return _template_environment().from_string(source)
    except jinja2.TemplateSyntaxError as err:
        raise ValueError(f"body_template {path}, line {err.lineno}: {err.message}") from None


# --- the receiver's ids ------------------------------------------------------------------


def external_id(receiver_id: str | None, marker: str) -> str:
    """What forewarn stores: the receiver's id and the marker, so that every later event can
    carry both. A marker has no spaces, so the last space separates them."""
    return marker if receiver_id is None else f"{receiver_id} {marker}"


def split_external_id(stored: str) -> tuple[str, str]:
    """(receiver id, marker) of a stored external id; the marker is the id when alone."""
    receiver_id, _, marker = stored.rpartition(" ")
    return receiver_id or marker, marker


class _NoValue(Exception):
    """Nothing at id_path. `ran_out` when a list was too short: an empty search result."""

    def __init__(self, message: str, *, ran_out: bool = False) -> None:
        super().__init__(message)
        self.ran_out = ran_out


def lookup(document: Any, path: str) -> str:
    """The id at the dotted `path` of a JSON document, as a string."""
    value = document
    for part in path.split("."):
        if isinstance(value, list) and part.isdigit():
            if int(part) >= len(value):
                raise _NoValue(f"no item {part} at {path!r}", ran_out=True)
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            raise _NoValue(f"the answer has no {path!r}")
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise _NoValue(f"{path!r} is not a string or a whole number")
    return str(value)


# --- the backend -------------------------------------------------------------------------


class WebhookTickets:
    kind: ClassVar[str] = "webhook"

    @dataclass(frozen=True, kw_only=True)
    class Options:
        """`headers` are "Name: value" strings; `secret_header` is one more, such as
        "Authorization: Bearer ...", taken from `{ env = ... }` or `{ file = ... }`. The
        payload, `body_template`, `id_path` and `find_url` are described in the module."""

        url: str
        method: str = "POST"
        headers: list[str] = field(default_factory=list, repr=False)
        secret_header: str | None = field(default=None, repr=False, metadata={"secret": True})
        body_template: str | None = None
        id_path: str | None = None
        find_url: str | None = None
        verify_tls: bool = True
        timeout: Duration = DEFAULT_TIMEOUT

        def __post_init__(self) -> None:
            _check_url(self.url, "url")
            if self.method not in METHODS:
                raise ValueError(f"method must be one of {', '.join(METHODS)}")
            for line in self.headers:
                parse_header(line)
            if self.secret_header is not None:
                check_secret_header(self.secret_header)
            if self.find_url is not None:
                _check_find_url(self.find_url)
            if self.id_path is not None:
                _check_id_path(self.id_path)
            if self.body_template is not None:
                load_template(self.body_template)
            if self.timeout <= 0:
                raise ValueError("timeout must be more than 0s")

    def __init__(self, options: Options) -> None:
        self.options = options
        self.template = load_template(options.body_template) if options.body_template else None
        # `verify` goes with each request: on the session, REQUESTS_CA_BUNDLE would override it
        self.session = requests.Session()
        if not options.verify_tls:  # chosen in the config; a warning per request is noise
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        self.session.headers.update(self._fixed_headers())

    @classmethod
    def from_config(cls, options: Options, state_path: str) -> WebhookTickets:
        return cls(options)

    def _fixed_headers(self) -> dict[str, str]:
        headers = {"User-Agent": "forewarn", "Content-Type": "application/json"}
        lines = [*self.options.headers, *filter(None, [self.options.secret_header])]
        headers.update(parse_header(line) for line in lines)
        return headers

    # --- TicketBackend --------------------------------------------------------------------

    def create(self, draft: TicketDraft) -> TicketInfo:
        payload = {
            "version": PAYLOAD_VERSION,
            "event": "create",
            "marker": draft.marker,
            "external_id": None,
            "subject": draft.subject,
            "body": draft.body,
            "priority": draft.priority,
            "category": draft.category,
            "tags": list(draft.tags),
            "related": [split_external_id(related)[0] for related in draft.related],
        }
        response = self._send(payload, {"Idempotency-Key": draft.marker})
        receiver_id = self._receiver_id(response, "create") if self.options.id_path else None
        log.info("webhook ticket %s created for %s", receiver_id or "", draft.marker)
        return _info(receiver_id, draft.marker)

    def find_by_marker(self, marker: str) -> TicketInfo | None:
        if self.options.find_url is None:
            return None  # cannot look: create is repeated, with the same marker (see above)
        url = self.options.find_url.replace("{marker}", quote(marker, safe=""))
        response = self._request("find", "GET", url, found_or_missing=True)
        if response.status_code == 404 or _is_empty(response):
            return None
        if not self.options.id_path:
            return _info(None, marker)
        try:
            return _info(self._receiver_id(response, "find"), marker)
        except _NoValue:  # a list at id_path ran out: the search found nothing
            return None

    def comment(self, external_id: str, text: str) -> None:
        self._update("comment", external_id, text)

    def resolve(self, external_id: str, text: str) -> None:
        self._update("resolve", external_id, text)

    def reopen(self, external_id: str, text: str) -> None:
        self._update("reopen", external_id, text)

    def get(self, external_id: str) -> TicketInfo | None:
        return None  # a webhook has no human side to read back

    # --- plumbing -------------------------------------------------------------------------

    def _update(self, event: str, stored_id: str, text: str) -> None:
        receiver_id, marker = split_external_id(stored_id)
        payload = {
            "version": PAYLOAD_VERSION,
            "event": event,
            "marker": marker,
            "external_id": receiver_id,
            "text": text,
        }
        self._send(payload, {})
        log.info("webhook %s sent for %s", event, marker)

    def _send(self, payload: dict[str, Any], headers: dict[str, str]) -> requests.Response:
        event = str(payload["event"])
        data = self._body(payload).encode()
        return self._request(
            event, self.options.method, self.options.url, data=data, headers=headers
        )

    def _body(self, payload: dict[str, Any]) -> str:
        if self.template is None:
            return json.dumps(payload, ensure_ascii=False)
        try:
            rendered = self.template.render(payload, payload=payload)
            json.loads(rendered)
        except (jinja2.TemplateError, TypeError) as err:
            raise DeliveryError(f"body_template failed: {err}", permanent=True) from None
        except ValueError as err:
            raise DeliveryError(f"body_template rendered no JSON: {err}", permanent=True) from None
        return rendered

    def _request(
        self, event: str, method: str, url: str, *, found_or_missing: bool = False, **kwargs: Any
    ) -> requests.Response:
        where = f"webhook {event} {method} {origin(url)}"
        try:
            response = self.session.request(
                method,
                url,
                timeout=float(self.options.timeout),
                allow_redirects=False,
                verify=self.options.verify_tls,
                **kwargs,
            )
        except requests.RequestException as err:
            # `from None`: the original names the URL's path, which may be the secret
            text = f"{where}: {self._describe(err)}"
            raise DeliveryError(text, permanent=_is_permanent(err)) from None
        status = response.status_code
        if 200 <= status < 300 or (found_or_missing and status == 404):
            return response
        raise self._status_error(where, response)

    def _status_error(self, where: str, response: requests.Response) -> DeliveryError:
        status = response.status_code
        text = f"{where}: {status} {response.reason}"
        if 300 <= status < 400:
            text += f" to {origin(response.headers.get('Location', ''))}; not followed"
        elif excerpt := self._excerpt(response.text):
            text += f": {excerpt}"
        retry = status in RETRYABLE_STATUSES or status >= 500
        return DeliveryError(text, permanent=not retry)

    def _receiver_id(self, response: requests.Response, event: str) -> str:
        assert self.options.id_path is not None
        where = f"webhook {event} {origin(str(response.url))}"
        try:
            return lookup(response.json(), self.options.id_path)
        except ValueError:
            raise DeliveryError(f"{where}: the answer is not JSON", permanent=True) from None
        except _NoValue as err:
            if err.ran_out and event == "find":
                raise
            raise DeliveryError(f"{where}: {err}", permanent=True) from None

    def _describe(self, err: requests.RequestException) -> str:
        if isinstance(err, requests.Timeout):
            return f"timed out after {float(self.options.timeout):g}s"
        cause = _root_os_error(err)
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS certificate not trusted: {cause.verify_message}"
        if cause is not None and cause.strerror:
            return str(cause.strerror).lower()  # "connection refused"
        return type(err).__name__  # its text would name the URL's path

    def _excerpt(self, text: str) -> str:
        text = _UNPRINTABLE.sub(" ", self._redact(text)).strip()
        return text if len(text) <= MAX_EXCERPT_CHARS else text[:MAX_EXCERPT_CHARS] + "…"

    def _redact(self, text: str) -> str:
        """A receiver may echo what it was sent; never let the secret header through."""
        if not self.options.secret_header:
            return text
        value = parse_header(self.options.secret_header)[1]
        for secret in {value, *value.split()[1:]}:  # also the token of "Bearer <token>"
            text = text.replace(secret, "***") if secret else text
        return text


def _info(receiver_id: str | None, marker: str) -> TicketInfo:
    return TicketInfo(
        external_id=external_id(receiver_id, marker), number=receiver_id or marker, status="new"
    )


def _is_empty(response: requests.Response) -> bool:
    if not response.content.strip():
        return True
    try:
        return bool(response.json() in _EMPTY_JSON)
    except ValueError:
        return False


def _is_permanent(err: requests.RequestException) -> bool:
    # A certificate that does not verify needs a change of settings; a refused or dropped
    # connection or a timeout may pass. Other request errors (a header requests refuses to
    # send) are the same on every try.
    if isinstance(_root_os_error(err), ssl.SSLCertVerificationError):
        return True
    return not isinstance(err, TRANSIENT_ERRORS)


def _root_os_error(err: BaseException) -> OSError | None:
    """The deepest operating-system error under requests' and urllib3's wrappers."""
    found: OSError | None = None
    for link in _causes(err):
        if isinstance(link, OSError) and link.strerror:
            found = link
    return found


def _causes(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    pending: list[BaseException] = [err]
    while pending:
        link = pending.pop(0)
        if id(link) in seen:
            continue
        seen.add(id(link))
        yield link
        reason = getattr(link, "reason", None)
        nested = [reason, link.__cause__, link.__context__, *link.args]
        pending += [item for item in nested if isinstance(item, BaseException)]
