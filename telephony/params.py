"""Parse provider request parameters that carry numbers and times."""
from __future__ import annotations

from datetime import datetime
from email.utils import parsedate_to_datetime


def parse_int(value: str | None) -> int | None:
    """Return ``value`` as an int, or None when it is absent, empty or not an integer."""
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        return None


def parse_timestamp(value: str | None) -> datetime | None:
    """Parse an RFC 2822 provider time (``Mon, 01 Dec 2025 10:16:02 +0000``) to an aware datetime.

    Returns None when the value is absent, malformed or has no zone.
    """
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo is not None else None
