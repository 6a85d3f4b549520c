"""Retention: when a recording is due for deletion.

A recording made at instant *t* is due ``months`` calendar months later at the same wall-clock
time in the centre's time zone (Europe/Tallinn by default), not after a fixed number of days:
made 31 August 14:00 local, due 28 February (29 in a leap year) 14:00 local. A day that does
not exist in the target month clamps to that month's last day. A wall-clock time that does not
exist on the due day (the hour skipped when summer time starts) is read with the offset before
the change, so it is the same instant as one hour later on the summer clock; a time that
occurs twice (the hour repeated when summer time ends) means its first occurrence.
"""
from __future__ import annotations

import calendar
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

DEFAULT_TIMEZONE = "Europe/Tallinn"


def add_calendar_months(year: int, month: int, day: int, months: int) -> tuple[int, int, int]:
    """Return ``(year, month, day)`` ``months`` calendar months after the given date, the day
    clamped to the target month's last day. Raises ValueError for negative ``months``."""
    if months < 0:
        raise ValueError("months must be 0 or more")
    index = year * 12 + (month - 1) + months
    target_year, target_month = divmod(index, 12)
    target_month += 1
    last = calendar.monthrange(target_year, target_month)[1]
    return target_year, target_month, min(day, last)


def due_date(made_at: datetime, months: int, tz_name: str = DEFAULT_TIMEZONE) -> datetime:
    """Return the aware UTC instant at which a recording made at ``made_at`` (aware) is due for
    deletion: ``months`` calendar months later, same local wall-clock time in ``tz_name``.

    Raises ValueError for a naive ``made_at`` or negative ``months``; ZoneInfoNotFoundError for
    an unknown zone.
    """
    if made_at.tzinfo is None:
        raise ValueError("made_at must be timezone-aware")
    zone = ZoneInfo(tz_name)
    local = made_at.astimezone(zone)
    year, month, day = add_calendar_months(local.year, local.month, local.day, months)
    # fold=0: a repeated time means its first occurrence; a skipped time takes the offset in
    # force before the change (zoneinfo's rule for fold=0 in a gap).
    due_local = local.replace(year=year, month=month, day=day, fold=0, tzinfo=zone)
    return due_local.astimezone(timezone.utc)
