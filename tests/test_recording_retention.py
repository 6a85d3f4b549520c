"""Retention: due dates are calendar months in Europe/Tallinn, at month ends and across DST."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from recording.retention import add_calendar_months, due_date

UTC = timezone.utc


@pytest.mark.parametrize("made, months, due", [
    # 31 Aug 12:00 EEST -> 28 Feb 12:00 EET (10:00 UTC); 2028 is a leap year -> 29 Feb.
    (datetime(2026, 8, 31, 9, 0, tzinfo=UTC), 6, datetime(2027, 2, 28, 10, 0, tzinfo=UTC)),
    (datetime(2027, 8, 31, 9, 0, tzinfo=UTC), 6, datetime(2028, 2, 29, 10, 0, tzinfo=UTC)),
    # 22:30 UTC on 31 Aug is already 1 Sep 01:30 in Tallinn: due 1 Mar 01:30 EET, not 28 Feb.
    (datetime(2026, 8, 31, 22, 30, tzinfo=UTC), 6, datetime(2027, 2, 28, 23, 30, tzinfo=UTC)),
    # 31 Dec -> 30 Jun; 31 Mar -> 30 Sep; period of 1 month: 31 Jan -> 28 Feb.
    (datetime(2026, 12, 31, 10, 0, tzinfo=UTC), 6, datetime(2027, 6, 30, 9, 0, tzinfo=UTC)),
    (datetime(2026, 3, 31, 9, 0, tzinfo=UTC), 6, datetime(2026, 9, 30, 9, 0, tzinfo=UTC)),
    (datetime(2027, 1, 31, 10, 0, tzinfo=UTC), 1, datetime(2027, 2, 28, 10, 0, tzinfo=UTC)),
    (datetime(2026, 12, 1, 10, 0, tzinfo=UTC), 12, datetime(2027, 12, 1, 10, 0, tzinfo=UTC)),
])
def test_due_date_is_calendar_months_local_with_month_end_clamping(made, months, due):
    assert due_date(made, months) == due


def test_not_180_days():
    made = datetime(2026, 8, 31, 9, 0, tzinfo=UTC)
    assert (due_date(made, 6) - made).days == 181


def test_made_before_spring_change_due_in_summer_time_keeps_the_wall_clock():
    # 29 Mar 2026 01:30 EET (the clocks go 03:00 -> 04:00 that night) -> 29 Sep 01:30 EEST.
    made = datetime(2026, 3, 28, 23, 30, tzinfo=UTC)
    assert due_date(made, 6) == datetime(2026, 9, 28, 22, 30, tzinfo=UTC)


def test_due_in_the_skipped_spring_hour_means_one_hour_later_on_the_summer_clock():
    # 29 Sep 2025 03:30 EEST -> 29 Mar 2026 03:30, a time that does not exist in Tallinn:
    # read with the winter offset, 01:30 UTC (= 04:30 EEST).
    made = datetime(2025, 9, 29, 0, 30, tzinfo=UTC)
    assert due_date(made, 6) == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


def test_made_in_the_repeated_autumn_hour_and_due_in_it():
    # 25 Oct 2026 03:30 happens twice (EEST 00:30 UTC, then EET 01:30 UTC). Both are due on
    # 25 Apr 2027 03:30 EEST = 00:30 UTC.
    first = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    second = datetime(2026, 10, 25, 1, 30, tzinfo=UTC)
    assert due_date(first, 6) == due_date(second, 6) == datetime(2027, 4, 25, 0, 30, tzinfo=UTC)
    # 25 Apr 2026 03:30 EEST -> 25 Oct 2026 03:30, the first (summer-time) occurrence.
    assert due_date(datetime(2026, 4, 25, 0, 30, tzinfo=UTC), 6) == first


def test_add_calendar_months_refuses_negative_and_clamps():
    assert add_calendar_months(2026, 8, 31, 6) == (2027, 2, 28)
    assert add_calendar_months(2027, 8, 31, 6) == (2028, 2, 29)
    assert add_calendar_months(2026, 1, 15, 0) == (2026, 1, 15)
    with pytest.raises(ValueError):
        add_calendar_months(2026, 1, 1, -1)
    with pytest.raises(ValueError):
        due_date(datetime(2026, 1, 1), 6)
