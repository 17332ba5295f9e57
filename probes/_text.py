"""Text from outside (a server's answer, a command's output) made fit for a sample's `error`."""

import re

MAX_ERROR_CHARS = 200
# Control characters, and invisible or reordering ones that could disguise a quoted text.
UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]")


def first_line(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """The first line that is not blank, stripped and cut at `limit`; "" when there is none."""
    lines = (line.strip() for line in text.splitlines())
    return next((line for line in lines if line), "")[:limit]
