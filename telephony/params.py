"""Parse provider request parameters that carry numbers and times."""
from __future__ import annotations

from datetime import datetime
from email.utils import parsedate_to_datetime


def parse_int(value: str | None, low: int = 0, high: int = 2**31 - 1) -> int | None:
    """Return ``value`` as an int in ``low``…``high``, or None when it is absent, empty, not a
    plain ASCII integer, or out of that range (so it always fits a database INTEGER)."""
    if not value or len(value) > 12 or not value.isascii():
        return None
    try:
        number = int(value)
    except ValueError:
        return None
    return number if low <= number <= high else None


def parse_timestamp(value: str | None) -> datetime | None:
    """Parse an RFC 2822 provider time (``Mon, 01 Dec 2025 10:16:02 +0000``) to an aware datetime.

    Returns None when the value is absent, malformed or has no zone.
    """
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return parsed if parsed.tzinfo is not None else None
