"""Rostered shifts in the centre's local time, overnight shifts and DST nights included."""
from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Iterable, Protocol
from zoneinfo import ZoneInfo


class ShiftLike(Protocol):
    days: list[int]   # weekdays (0 = Monday) on which the shift starts
    start: time
    end: time         # at or before start: the shift ends the next day


def _local(day: date, at: time, tz: ZoneInfo) -> datetime:
    # A wall time skipped by the spring change is read with the offset before it (fold=0),
    # which places it at the moment the clocks jumped; a repeated one means its first instance.
    return datetime.combine(day, at, tzinfo=tz)


def on_duty(shifts: Iterable[ShiftLike], now: datetime, tz_name: str) -> bool:
    """Return True if ``now`` (aware) falls within one of ``shifts`` in zone ``tz_name``.

    A shift runs from ``start`` on one of its ``days`` to ``end`` that day, or the next day when
    ``end`` is not after ``start`` (22:00–06:00). Bounds are local wall times converted with
    zoneinfo, so a night shift across a DST change lasts 7 or 9 real hours, as worked.
    Start inclusive, end exclusive.
    """
    tz = ZoneInfo(tz_name)
    today = now.astimezone(tz).date()
    for shift in shifts:
        for start_day in (today - timedelta(days=1), today):
            if start_day.weekday() not in shift.days:
                continue
            begins = _local(start_day, shift.start, tz)
            end_day = start_day + timedelta(days=1) if shift.end <= shift.start else start_day
            ends = _local(end_day, shift.end, tz)
            if begins <= now < ends:
                return True
    return False
