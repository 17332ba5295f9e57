"""The `[api]` section: who may use the HTTP API under /api/v1 and how much a request may send.

Kept apart from `monitor.api`, which reuses the command line's queries: those modules import
the config, so the config cannot import the API itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MIN_TOKEN_LENGTH = 16  # a token anyone could guess protects nothing
MAKE_TOKEN = "openssl rand -hex 32"
_TOKEN = re.compile(r"[A-Za-z0-9._~+/-]+=*")  # RFC 6750's b64token
MIN_BODY, MAX_BODY = 1024, 64 * 1024 * 1024
DEFAULT_MAX_BODY = 1024 * 1024


def _check_token(token: str) -> None:
    # Messages never show the token, only what is wrong with it.
    if not _TOKEN.fullmatch(token):
        raise ValueError(
            "use only letters, digits and - . _ ~ + / (a bearer token's characters); "
            f"make one with `{MAKE_TOKEN}`"
        )
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(
            f"shorter than {MIN_TOKEN_LENGTH} characters; make one with `{MAKE_TOKEN}`"
        )


def _check_max_body(value: int) -> None:
    if not MIN_BODY <= value <= MAX_BODY:
        raise ValueError(f"{value} is out of range; use {MIN_BODY} to {MAX_BODY} bytes")


@dataclass(frozen=True)
class ApiConfig:
    """`token` (a secret: `{ file = "api-token" }` or `{ env = "NAME" }`) opens the write
    endpoints; without it they answer 403. `read_requires_token` protects the reads too."""

    token: str | None = field(
        default=None, repr=False, metadata={"secret": True, "check": _check_token}
    )
    read_requires_token: bool = False
    max_body: int = field(default=DEFAULT_MAX_BODY, metadata={"check": _check_max_body})

    def __post_init__(self) -> None:
        if self.read_requires_token and self.token is None:
            raise ValueError("read_requires_token = true needs a token to require")
