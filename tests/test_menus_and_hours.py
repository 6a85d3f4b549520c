"""Pure rules: menu input interpretation and business hours, without Flask."""
from __future__ import annotations

from datetime import date, datetime, time, timezone
from zoneinfo import ZoneInfo

import pytest

from ivr.hours import is_last_friday, is_open, opening_hours
from ivr.menu import interpret
from line_config import HoursConfig

OPTIONS = {"1": "pension", "2": "family"}
TALLINN = ZoneInfo("Europe/Tallinn")


@pytest.mark.parametrize("digits,attempt,expected", [
    ("1", 1, ("choice", "pension", None, 1)),
    ("2", 3, ("choice", "family", None, 1)),
    (None, 1, ("reprompt", None, "no_input", 2)),
    ("", 2, ("reprompt", None, "no_input", 3)),
    ("7", 1, ("reprompt", None, "invalid", 2)),
    ("#", 1, ("reprompt", None, "invalid", 2)),
    ("*", 1, ("repeat", None, None, 2)),
    ("*", 3, ("person", None, "invalid", 1)),
    (None, 3, ("person", None, "no_input", 1)),
    ("7", 3, ("person", None, "invalid", 1)),
    ("0", 1, ("person", None, "asked", 1)),
])
def test_interpret(digits, attempt, expected):
    d = interpret(digits, OPTIONS, attempt=attempt, max_attempts=3)
    assert (d.kind, d.value, d.reason, d.next_attempt) == expected


def test_no_sequence_of_inputs_loops_forever():
    # Whatever the caller presses, at most max_attempts plays happen before a choice or a person.
    for keys in ("*", "", "9", "#"):
        attempt, plays = 1, 0
        while True:
            plays += 1
            d = interpret(keys, OPTIONS, attempt=attempt, max_attempts=3)
            if d.kind in ("choice", "person"):
                break
            attempt = d.next_attempt
        assert plays == 3


HOURS = HoursConfig()


def _local(*args) -> datetime:
    return datetime(*args, tzinfo=TALLINN)


@pytest.mark.parametrize("day,expected", [
    (date(2026, 12, 1), (time(9), time(17))),    # ordinary Tuesday
    (date(2026, 12, 23), (time(9), time(14))),   # day before Christmas Eve: 3 h shorter
    (date(2026, 12, 31), (time(9), time(14))),   # New Year's Eve, a Thursday
    (date(2026, 11, 27), (time(9), time(13))),   # last Friday of November
    (date(2026, 11, 20), (time(9), time(17))),   # an earlier Friday
    (date(2027, 12, 31), (time(9), time(13))),   # shortened day and last Friday: earlier wins
    (date(2026, 12, 24), None),                  # Christmas Eve
    (date(2026, 2, 24), None),                   # Independence Day
    (date(2026, 4, 3), None),                    # Good Friday
    (date(2026, 6, 23), None),                   # Victory Day
    (date(2026, 12, 26), None),                  # Saturday
    (date(2026, 2, 23), (time(9), time(14))),    # Monday before Independence Day
    (date(2025, 2, 21), (time(9), time(17))),    # the shortened day 23 Feb 2025 is a Sunday
])
def test_opening_hours(day, expected):
    assert opening_hours(day, HOURS) == expected


def test_is_open_boundaries_in_local_time():
    assert not is_open(_local(2026, 12, 1, 8, 59, 59), HOURS, "Europe/Tallinn")
    assert is_open(_local(2026, 12, 1, 9, 0), HOURS, "Europe/Tallinn")
    assert is_open(_local(2026, 12, 1, 16, 59, 59), HOURS, "Europe/Tallinn")
    assert not is_open(_local(2026, 12, 1, 17, 0), HOURS, "Europe/Tallinn")


def test_is_open_converts_utc_on_both_sides_of_dst():
    # 06:30 UTC is 08:30 local in winter (closed) but 09:30 local in summer (open).
    assert not is_open(datetime(2026, 3, 27, 6, 30, tzinfo=timezone.utc), HOURS, "Europe/Tallinn")
    assert is_open(datetime(2026, 3, 30, 6, 30, tzinfo=timezone.utc), HOURS, "Europe/Tallinn")
    # The day after the autumn change: 07:00 UTC is 09:00 local again.
    assert is_open(datetime(2026, 10, 26, 7, 0, tzinfo=timezone.utc), HOURS, "Europe/Tallinn")
    assert not is_open(datetime(2026, 10, 23, 5, 30, tzinfo=timezone.utc), HOURS, "Europe/Tallinn")


def test_last_friday():
    assert is_last_friday(date(2026, 1, 30))
    assert not is_last_friday(date(2026, 1, 23))
    assert is_last_friday(date(2026, 7, 31))
