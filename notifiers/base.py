"""Contracts for notifiers: ticket backends and message channels.

A notifier carries out a decision that `monitor` took from `rules`; it holds no policy.
Every call may raise `DeliveryError`; `permanent=True` means retrying cannot help (a 4xx,
a rejected recipient), otherwise the dispatcher retries with backoff.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Protocol


class DeliveryError(Exception):
    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class TicketDraft:
    """What a new ticket says. `marker` (e.g. `[forewarn:1a2b3c4d5e6f7a8b]`) is written into
    the ticket so it can always be found again after an unknown outcome."""

    marker: str
    subject: str
    body: str
    priority: str = "medium"  # high | medium | low
    category: str = ""
    tags: tuple[str, ...] = ()
    # External ids of earlier tickets of the same problem (a recurrence after the reopen
    # window): backends that can link tickets link them, the others mention them.
    related: tuple[str, ...] = ()


@dataclass(frozen=True)
class TicketInfo:
    """A ticket as the help desk sees it now: the human side that forewarn reads back."""

    external_id: str
    number: str  # what humans call it, e.g. "#42"
    # new | open (a human works on it) | resolved | rejected (closed as won't fix / invalid):
    # each backend maps its own statuses onto these four.
    status: str
    owner: str | None = None
    url: str | None = None
    human_touched: bool = False  # a person changed owner, status or priority
    last_human_update: float | None = None  # epoch seconds, when the backend tells


class TicketBackend(Protocol):
    """A help desk. Registered by `kind` in `notifiers.TICKET_BACKENDS`; the daemon builds it
    with `cls.from_config(options, state_path)`: `options` is the kind's `Options` dataclass
    instance from the config (None when the class declares none), `state_path` the daemon's
    SQLite state file (for backends that keep something locally, like the built-in one).

    Errors: raise DeliveryError; `permanent=True` for what retrying cannot fix (4xx other
    than 408/429, a missing queue or project), else the dispatcher retries with backoff.
    `find_by_marker` must search the help desk itself (not a local cache): it is what makes
    creation idempotent after an unknown outcome, and what lets two forewarn instances share
    one ticket. With several tickets carrying the marker it returns the newest: replicas that
    opened twins at the same moment converge on that one (`monitor.sync`). `get` reads the
    human side back for the two-way sync.
    """

    kind: ClassVar[str]

    def create(self, draft: TicketDraft) -> TicketInfo: ...

    def find_by_marker(self, marker: str) -> TicketInfo | None: ...

    def comment(self, external_id: str, text: str) -> None: ...

    def resolve(self, external_id: str, text: str) -> None: ...

    def reopen(self, external_id: str, text: str) -> None: ...

    def get(self, external_id: str) -> TicketInfo | None: ...


@dataclass(frozen=True)
class Message:
    """One rendered message for one set of recipients."""

    to: tuple[str, ...]
    subject: str
    text: str
    html: str | None = None
    message_id: str | None = None  # stable per outbox row, so a resend can be deduplicated
    headers: dict[str, str] = field(default_factory=dict)


class Channel(Protocol):
    kind: ClassVar[str]

    def send(self, message: Message) -> None: ...
