"""Stable identity of an alert: one rule on one label set.

The fingerprint names the alert row, the incident and the marker written into the ticket, so
it must never change for the same rule and labels, across restarts and Python versions.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

FINGERPRINT_LENGTH = 16


def fingerprint(rule: str, labels: Mapping[str, str]) -> str:
    """sha256 of the rule name and the sorted labels, hex, first 16 characters."""
    # JSON of a list keeps the encoding unambiguous: no separator a label could forge.
    encoded = json.dumps([rule, sorted(labels.items())], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()[:FINGERPRINT_LENGTH]


def marker(fp: str, ordinal: int = 1) -> str:
    """The text written into a ticket so forewarn can always find it again.

    `ordinal` counts the incidents of this fingerprint: a recurrence after the reopen window is
    a new incident and needs a new ticket, so its marker must differ from the old ticket's.
    Derived from history rather than a local row id, so replicas that saw the same history
    agree on it.
    """
    return f"[forewarn:{fp}]" if ordinal == 1 else f"[forewarn:{fp}:{ordinal}]"


def incident_key(rule: str, labels: Mapping[str, str], group_by: tuple[str, ...] | None) -> str:
    """The key of the incident an alert belongs to: its own fingerprint, or its group's."""
    if group_by is None:
        return fingerprint(rule, labels)
    return fingerprint(rule, {name: labels.get(name, "") for name in group_by})
