"""Business hours of the line in its local time zone, with public holidays and shortened days."""
from __future__ import annotations

import calendar
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays

from line_config import HoursConfig


@lru_cache(maxsize=32)
def _holiday_calendar(country: str, year: int) -> tuple[frozenset[date], frozenset[date]]:
    public = holidays.country_holidays(country, years=year, categories=("public",))
    try:
        half = holidays.country_holidays(country, years=year, categories=("half_day",))
    except NotImplementedError:
        half = {}
    return frozenset(public.keys()), frozenset(half.keys())


def is_last_friday(day: date) -> bool:
    """Return True if ``day`` is the last Friday of its month."""
    last = calendar.monthrange(day.year, day.month)[1]
    return day.weekday() == 4 and day.day > last - 7


def opening_hours(day: date, hours: HoursConfig) -> tuple[time, time] | None:
    """Return (open, close) local times of the line on ``day``, or None when it is closed all day.

    Closed on non-working weekdays and on public holidays (``holidays`` package, PUBLIC category).
    A working day listed as a pre-holiday half day closes ``shortened_day_hours`` earlier
    (Employment Contracts Act § 53); the last Friday of the month closes at ``last_friday_close``.
    When both apply, the earlier closing time wins.
    """
    if day.weekday() not in hours.weekdays:
        return None
    public, half_days = _holiday_calendar(hours.holidays_country, day.year)
    if day in public:
        return None
    close = hours.close
    if day in half_days and hours.shortened_day_hours:
        shortened = (datetime.combine(day, close) - timedelta(hours=hours.shortened_day_hours)).time()
        close = min(close, shortened)
    if hours.last_friday_close is not None and is_last_friday(day):
        close = min(close, hours.last_friday_close)
    return hours.open, close


def is_open(now: datetime, hours: HoursConfig, tz_name: str) -> bool:
    """Return True if the line is open at ``now`` (aware datetime, any zone) in zone ``tz_name``.

    Opening is inclusive, closing exclusive: at 17:00:00 a 9–17 line is closed.
    """
    local = now.astimezone(ZoneInfo(tz_name))
    window = opening_hours(local.date(), hours)
    if window is None:
        return False
    return window[0] <= local.time().replace(tzinfo=None) < window[1]


def next_opening(now: datetime, hours: HoursConfig, tz_name: str, *, days: int = 14) -> datetime | None:
    """Return ``now`` if the line is open, else the next moment it opens (aware UTC), looking
    ``days`` days ahead; None if it stays closed that long.

    The opening is a local wall time converted with the zone's rules of that day, so it is right
    on both DST change days.
    """
    if is_open(now, hours, tz_name):
        return now.astimezone(timezone.utc)
    zone = ZoneInfo(tz_name)
    local = now.astimezone(zone)
    for offset in range(days + 1):
        day = local.date() + timedelta(days=offset)
        window = opening_hours(day, hours)
        if window is None:
            continue
        opens = datetime.combine(day, window[0], tzinfo=zone)
        if opens > local:
            return opens.astimezone(timezone.utc)
    return None
