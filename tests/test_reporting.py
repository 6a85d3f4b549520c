"""Reporting: metric formulas (metrics.md worked checks), grouping by local day and queue over the
call log, DST days, and the ``flask report`` command.

Expected values are worked out by hand in the comments, from UTC timestamps written out with the
Tallinn offset of the season (UTC+2 in winter, UTC+3 in summer), not from the code under test.
"""
from __future__ import annotations

import csv
import io
import re
from datetime import date, datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from ivr.models import Call
from reporting.metrics import (ABANDONED, ANSWERED, IN_PROGRESS, CallRecord, MetricsAccumulator,
                               average_speed_of_answer, classify_offered, service_level_offered,
                               summarize)
from reporting.report import build_report, local_day_bounds
from routing.models import Queue

TZ = "Europe/Tallinn"


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


# ---------------------------------------------------------------- pure metrics

def test_asa_worked_check_from_metrics_md():
    acc = summarize([CallRecord(ANSWERED, w) for w in (30, 15, 45, 60, 10)], threshold=20)
    assert acc.answered == 5
    assert acc.asa == 32.0
    assert average_speed_of_answer(160, 5) == 32.0


def test_icmi_service_level_worked_check():
    # answered 1000 (860 within 20 s), abandoned 60 (20 within 20 s, 40 after).
    records = ([CallRecord(ANSWERED, 12.0)] * 860 + [CallRecord(ANSWERED, 45.0)] * 140
               + [CallRecord(ABANDONED, 4.0)] * 20 + [CallRecord(ABANDONED, 90.0)] * 40)
    acc = summarize(iter(records), threshold=20)
    assert (acc.offered, acc.answered, acc.abandoned) == (1060, 1000, 60)
    assert (acc.answered_within, acc.abandoned_within) == (860, 20)
    assert acc.sl_offered == pytest.approx(860 / 1060)
    assert round(acc.sl_offered * 100, 1) == 81.1
    assert service_level_offered(860, 1060) == pytest.approx(0.8113207547)
    assert acc.answer_rate == pytest.approx(1000 / 1060)
    assert acc.abandonment_rate == pytest.approx(60 / 1060)


@pytest.mark.parametrize("wait, within", [(20.0, 1), (21.0, 0), (20.000001, 0), (0.0, 1)])
def test_threshold_boundary_wait_equal_to_t_is_within(wait, within):
    acc = summarize([CallRecord(ANSWERED, wait)], threshold=20)
    assert acc.answered_within == within
    assert acc.sl_offered == float(within)


def test_boundary_from_timestamps():
    entered = utc(2026, 12, 1, 10, 0, 0)
    at_20 = classify_offered(entered, entered + timedelta(seconds=20), None)
    at_21 = classify_offered(entered, entered + timedelta(seconds=21), None)
    assert (at_20.kind, at_20.wait_seconds) == (ANSWERED, 20.0)
    acc = summarize([at_20, at_21], threshold=20)
    assert acc.answered_within == 1
    assert acc.sl_offered == 0.5


def test_classify_offered_kinds_and_waits():
    entered = utc(2026, 12, 1, 10, 0, 0)
    answered = classify_offered(entered, entered + timedelta(seconds=33), entered + timedelta(minutes=5), 240)
    abandoned = classify_offered(entered, None, entered + timedelta(seconds=7))
    waiting = classify_offered(entered, None, None)
    assert (answered.kind, answered.wait_seconds, answered.talk_seconds) == (ANSWERED, 33.0, 240)
    assert (abandoned.kind, abandoned.wait_seconds) == (ABANDONED, 7.0)
    assert (waiting.kind, waiting.wait_seconds) == (IN_PROGRESS, None)


def test_empty_group_is_no_data_not_zero():
    acc = summarize([], threshold=20)
    assert acc.offered == 0
    assert acc.sl_offered is None
    assert acc.answer_rate is None
    assert acc.abandonment_rate is None
    assert acc.asa is None
    assert acc.mean_talk is None


def test_only_abandoned_gives_zero_rates_but_no_asa():
    acc = summarize([CallRecord(ABANDONED, 30.0), CallRecord(IN_PROGRESS)], threshold=20)
    assert (acc.offered, acc.abandoned, acc.in_progress) == (2, 1, 1)
    assert acc.sl_offered == 0.0
    assert acc.answer_rate == 0.0
    assert acc.abandonment_rate == 0.5
    assert acc.asa is None
    assert acc.mean_talk is None


def test_mean_talk_and_merge():
    a = summarize([CallRecord(ANSWERED, 10, 100), CallRecord(ANSWERED, 30, 200)], threshold=20)
    b = summarize([CallRecord(ANSWERED, 5, None), CallRecord(ABANDONED, 3)], threshold=20)
    assert a.mean_talk == 150.0
    a.merge(b)
    assert (a.offered, a.answered, a.abandoned, a.answered_within, a.abandoned_within) == (4, 3, 1, 2, 1)
    assert a.asa == 15.0           # (10 + 30 + 5) / 3
    assert a.mean_talk == 150.0    # the call still talking has no talk time yet
    with pytest.raises(ValueError):
        a.merge(MetricsAccumulator(threshold=30))


# ---------------------------------------------------------------- day bounds

def test_local_day_bounds_across_dst():
    from zoneinfo import ZoneInfo
    tz = ZoneInfo(TZ)
    # Autumn change 2026-10-25 04:00 EEST → 03:00 EET: a 25-hour day.
    assert local_day_bounds(date(2026, 10, 25), tz) == (utc(2026, 10, 24, 21), utc(2026, 10, 25, 22))
    # Spring change 2026-03-29 03:00 EET → 04:00 EEST: a 23-hour day.
    assert local_day_bounds(date(2026, 3, 29), tz) == (utc(2026, 3, 28, 22), utc(2026, 3, 29, 21))
    assert local_day_bounds(date(2026, 12, 1), tz) == (utc(2026, 11, 30, 22), utc(2026, 12, 1, 22))


# ---------------------------------------------------------------- the call log

_seq = iter(range(1, 10**6))


def offered_call(queue: Queue, entered: datetime, *, answer_after: float | None = None,
                 end_after: float | None = None, talk: int | None = None,
                 ivr_seconds: float = 90) -> Call:
    """A call that spent ``ivr_seconds`` in the menus (not wait), then entered ``queue``."""
    answered = None if answer_after is None else entered + timedelta(seconds=answer_after)
    ended = None if end_after is None else entered + timedelta(seconds=end_after)
    if answered is not None:
        status, outcome = ("ended", "answered") if ended else ("connected", None)
    else:
        status, outcome = ("ended", "abandoned") if ended else ("queued", None)
    arrived = entered - timedelta(seconds=ivr_seconds)
    return Call(call_sid=f"CA{next(_seq):032d}", arrived_at=arrived, last_event_at=ended or entered,
                ivr_exited_at=entered, queue_entered_at=entered, queue_id=queue.id,
                answered_at=answered, ended_at=ended, talk_seconds=talk, status=status,
                outcome=outcome)


def not_offered_call(arrived: datetime, outcome: str | None, status: str = "ended") -> Call:
    return Call(call_sid=f"CA{next(_seq):032d}", arrived_at=arrived, last_event_at=arrived,
                ended_at=arrived + timedelta(seconds=40) if status == "ended" else None,
                status=status, outcome=outcome)


@pytest.fixture
def queues(session):
    pension = Queue(name="et.pension", language="et", topic="pension")
    general = Queue(name="ru.general", language="ru", topic="general")
    session.add_all([pension, general])
    session.commit()
    return pension, general


def counts(acc: MetricsAccumulator):
    return acc.offered, acc.answered, acc.abandoned, acc.in_progress, acc.answered_within


def test_grouping_per_local_day_and_queue(session, queues):
    a, b = queues
    # Winter: Tallinn = UTC+2. Local 2026-12-01 is 2026-11-30 22:00Z .. 2026-12-01 22:00Z.
    session.add_all([
        # --- 2026-12-01, queue A (et.pension)
        offered_call(a, utc(2026, 12, 1, 8, 0, 30), answer_after=20, end_after=120, talk=100),  # within
        offered_call(a, utc(2026, 12, 1, 9, 0, 0), answer_after=21, end_after=221, talk=200),   # not within
        offered_call(a, utc(2026, 12, 1, 10, 0, 0), end_after=5),                               # abandoned
        offered_call(a, utc(2026, 12, 1, 21, 30), answer_after=15, end_after=45, talk=30),      # 23:30 local
        # --- 2026-12-01, queue B (ru.general)
        offered_call(b, utc(2026, 12, 1, 11, 0), answer_after=10, end_after=70, talk=60),
        offered_call(b, utc(2026, 12, 1, 12, 0)),                                               # still waiting
        # arrived 23:50 local on 30 Nov, entered the queue 00:10 local on 1 Dec: offered on 1 Dec
        offered_call(b, utc(2026, 11, 30, 22, 10), answer_after=30, end_after=120, talk=90, ivr_seconds=1200),
        # --- not offered on 2026-12-01
        not_offered_call(utc(2026, 12, 1, 13, 0), "ivr_abandoned"),
        not_offered_call(utc(2026, 12, 1, 21, 30), "out_of_hours"),                             # 23:30 local
        not_offered_call(utc(2026, 12, 1, 14, 0), "transferred"),
        not_offered_call(utc(2026, 12, 1, 15, 0), None, status="ivr"),                          # still in IVR
        # --- 2026-12-02
        offered_call(a, utc(2026, 12, 1, 22, 30), end_after=40),                                # 00:30 local on 2 Dec
        not_offered_call(utc(2026, 12, 2, 21, 59), "ivr_abandoned"),                            # 23:59 local
        not_offered_call(utc(2026, 12, 1, 22, 30), "out_of_hours"),                             # 00:30 local
        # --- outside the range
        offered_call(a, utc(2026, 11, 30, 21, 59), answer_after=1, end_after=60, talk=59),      # 23:59 on 30 Nov
        not_offered_call(utc(2026, 11, 30, 21, 59), "ivr_abandoned"),
        not_offered_call(utc(2026, 12, 2, 22, 0), "ivr_abandoned"),                             # 00:00 on 3 Dec
        offered_call(b, utc(2026, 12, 2, 22, 0), answer_after=5, end_after=60, talk=55),
    ])
    session.commit()

    report = build_report(session, date(2026, 12, 1), date(2026, 12, 2), TZ, 20)
    assert [d.day for d in report.days] == [date(2026, 12, 1), date(2026, 12, 2)]
    dec1, dec2 = report.days
    assert list(dec1.queues) == ["et.pension", "ru.general"]

    qa = dec1.queues["et.pension"]
    # waits 20 (within), 21, 15 (within) answered; 5 abandoned. IVR time (90 s) is not wait.
    assert counts(qa) == (4, 3, 1, 0, 2)
    assert qa.sl_offered == 0.5
    assert qa.answer_rate == 0.75
    assert qa.abandonment_rate == 0.25
    assert qa.asa == pytest.approx(56 / 3)
    assert qa.mean_talk == pytest.approx(110.0)

    qb = dec1.queues["ru.general"]
    # waits 10 (within), 30 answered; one still waiting (offered, in progress).
    assert counts(qb) == (3, 2, 0, 1, 1)
    assert qb.sl_offered == pytest.approx(1 / 3)
    assert qb.answer_rate == pytest.approx(2 / 3)
    assert qb.abandonment_rate == 0.0
    assert qb.asa == pytest.approx(20.0)
    assert qb.mean_talk == pytest.approx(75.0)

    assert counts(dec1.total) == (7, 5, 1, 1, 3)
    assert dec1.total.sl_offered == pytest.approx(3 / 7)
    assert dec1.total.asa == pytest.approx(96 / 5)
    assert dec1.total.mean_talk == pytest.approx(480 / 5)
    assert dict(dec1.not_offered) == {"ivr_abandoned": 1, "out_of_hours": 1, "transferred": 1,
                                      "in_ivr": 1}
    assert dec1.not_offered_total == 4

    assert list(dec2.queues) == ["et.pension"]
    assert counts(dec2.total) == (1, 0, 1, 0, 0)
    assert dec2.total.sl_offered == 0.0
    assert dec2.total.asa is None
    assert dict(dec2.not_offered) == {"ivr_abandoned": 1, "out_of_hours": 1}

    assert counts(report.total) == (8, 5, 2, 1, 3)
    assert report.total.sl_offered == pytest.approx(3 / 8)
    assert report.total.abandonment_rate == pytest.approx(2 / 8)
    assert report.not_offered_total == 6
    assert dict(report.not_offered) == {"ivr_abandoned": 2, "out_of_hours": 2, "transferred": 1,
                                        "in_ivr": 1}


def test_empty_period_is_no_data(session, queues):
    a, _ = queues
    session.add(offered_call(a, utc(2026, 12, 1, 10, 0), answer_after=5, end_after=60, talk=55))
    session.commit()
    report = build_report(session, date(2026, 12, 5), date(2026, 12, 5), TZ, 20)
    (day,) = report.days
    assert day.queues == {}
    assert counts(day.total) == (0, 0, 0, 0, 0)
    assert day.total.sl_offered is None and report.total.sl_offered is None
    assert report.total.answer_rate is None and report.total.asa is None
    assert report.not_offered_total == 0


def test_range_over_the_autumn_dst_change(session, queues):
    a, b = queues
    # Summer time (UTC+3) until 2026-10-25 01:00Z (04:00 EEST → 03:00 EET), UTC+2 after.
    session.add_all([
        offered_call(a, utc(2026, 10, 23, 20, 59), answer_after=5, end_after=60),   # 23:59 on 23 Oct: out
        offered_call(a, utc(2026, 10, 24, 20, 59), answer_after=5, end_after=60),   # 23:59 EEST on 24 Oct
        offered_call(a, utc(2026, 10, 24, 21, 0), answer_after=5, end_after=60),    # 00:00 EEST on 25 Oct
        offered_call(b, utc(2026, 10, 25, 0, 30), answer_after=25, end_after=60),   # 03:30 EEST on 25 Oct
        offered_call(b, utc(2026, 10, 25, 1, 30), end_after=60),                    # 03:30 EET (repeated hour)
        offered_call(a, utc(2026, 10, 25, 21, 30), answer_after=5, end_after=60),   # 23:30 EET on 25 Oct
        offered_call(a, utc(2026, 10, 25, 22, 0), answer_after=5, end_after=60),    # 00:00 EET on 26 Oct
        offered_call(a, utc(2026, 10, 26, 22, 0), answer_after=5, end_after=60),    # 00:00 on 27 Oct: out
        not_offered_call(utc(2026, 10, 25, 21, 45), "out_of_hours"),                # 23:45 EET on 25 Oct
        not_offered_call(utc(2026, 10, 24, 20, 45), "ivr_abandoned"),               # 23:45 EEST on 24 Oct
        not_offered_call(utc(2026, 10, 24, 21, 15), "ivr_abandoned"),               # 00:15 EEST on 25 Oct
    ])
    session.commit()

    report = build_report(session, date(2026, 10, 24), date(2026, 10, 26), TZ, 20)
    by_day = {d.day: d for d in report.days}
    assert [by_day[date(2026, 10, d)].hours for d in (24, 25, 26)] == [24, 25, 24]
    assert [by_day[date(2026, 10, d)].total.offered for d in (24, 25, 26)] == [1, 4, 1]
    oct25 = by_day[date(2026, 10, 25)]
    assert counts(oct25.queues["et.pension"]) == (2, 2, 0, 0, 2)
    assert counts(oct25.queues["ru.general"]) == (2, 1, 1, 0, 0)
    assert dict(oct25.not_offered) == {"out_of_hours": 1, "ivr_abandoned": 1}
    assert dict(by_day[date(2026, 10, 24)].not_offered) == {"ivr_abandoned": 1}
    assert counts(report.total) == (6, 5, 1, 0, 4)


# ---------------------------------------------------------------- flask report

def _cli_calls(session):
    pension = session.scalar(select(Queue).where(Queue.name == "et.pension"))
    session.add_all([
        # 2026-12-01 (UTC+2): waits 20 (within) and 21 answered, talk 120 and 60; one abandoned at 8 s.
        offered_call(pension, utc(2026, 12, 1, 8, 0), answer_after=20, end_after=140, talk=120),
        offered_call(pension, utc(2026, 12, 1, 9, 0), answer_after=21, end_after=81, talk=60),
        offered_call(pension, utc(2026, 12, 1, 10, 0), end_after=8),
        not_offered_call(utc(2026, 12, 1, 11, 0), "ivr_abandoned"),
        not_offered_call(utc(2026, 12, 1, 16, 0), "out_of_hours"),
    ])
    session.commit()


def _cells(output: str, first: str, second: str) -> list[str]:
    for line in output.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if cells[:2] == [first, second]:
            return cells[2:]
    raise AssertionError(f"no row {first} / {second} in:\n{output}")


def test_cli_table(loaded_app, session):
    _cli_calls(session)
    result = loaded_app.test_cli_runner().invoke(
        args=["report", "--from", "2026-12-01", "--to", "2026-12-02"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "service level = answered within 20 s / offered (sl_offered)" in out
    assert "Europe/Tallinn" in out
    assert "ASA = total wait of answered calls / answered" in out
    # offered, answered, abandoned, dequeued, in progress, SL 1/3, answer 2/3, abandon 1/3,
    # ASA 41/2, talk 180/2
    expected = ["3", "2", "1", "0", "0", "33.3%", "66.7%", "33.3%", "20.5", "90.0"]
    assert _cells(out, "2026-12-01", "et.pension") == expected
    assert _cells(out, "2026-12-01", "day total") == expected
    assert _cells(out, "2026-12-02", "day total") == ["0", "0", "0", "0", "0", "–", "–", "–", "–", "–"]
    assert _cells(out, "range", "total") == expected
    assert "2026-12-01  not offered: 2 (ivr_abandoned 1, out_of_hours 1)" in out
    assert "2026-12-02  not offered: 0" in out


def test_cli_threshold_timezone_and_csv(loaded_app, session):
    _cli_calls(session)
    runner = loaded_app.test_cli_runner()
    result = runner.invoke(args=["report", "--from", "2026-12-01", "--to", "2026-12-01",
                                 "--threshold", "21", "--format", "csv"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert [(r["level"], r["queue"]) for r in rows] == [("queue", "et.pension"), ("day", ""), ("range", "")]
    day = rows[1]
    assert (day["offered"], day["answered"], day["abandoned"], day["answered_within_threshold"]) == ("3", "2", "1", "2")
    assert float(day["sl_offered"]) == pytest.approx(2 / 3, abs=1e-6)
    assert float(day["asa_seconds"]) == 20.5
    assert (day["threshold_seconds"], day["timezone"]) == ("21", "Europe/Tallinn")
    assert (day["not_offered"], day["not_offered_ivr_abandoned"], day["not_offered_out_of_hours"]) == ("2", "1", "1")

    # 2026-11-30 23:30Z is 1 December in Tallinn (UTC+2) but still 30 November in UTC.
    pension = session.scalar(select(Queue).where(Queue.name == "et.pension"))
    session.add(offered_call(pension, utc(2026, 11, 30, 23, 30), answer_after=3, end_after=60, talk=57))
    session.commit()
    result = runner.invoke(args=["report", "--from", "2026-11-30", "--to", "2026-11-30",
                                 "--timezone", "UTC"])
    assert result.exit_code == 0, result.output
    assert "time zone UTC" in result.output
    assert _cells(result.output, "2026-11-30", "day total") == [
        "1", "1", "0", "0", "0", "100.0%", "100.0%", "0.0%", "3.0", "57.0"]
    result = runner.invoke(args=["report", "--from", "2026-11-30", "--to", "2026-11-30"])
    assert "time zone Europe/Tallinn" in result.output
    assert _cells(result.output, "2026-11-30", "day total")[:2] == ["0", "0"]


@pytest.mark.parametrize("args, message", [
    (["--from", "2026-13-01", "--to", "2026-12-02"], "'2026-13-01' is not a date in the form YYYY-MM-DD"),
    (["--from", "01.12.2026", "--to", "2026-12-02"], "is not a date in the form YYYY-MM-DD"),
    (["--from", "2026-12-03", "--to", "2026-12-02"], "--from 2026-12-03 is after --to 2026-12-02"),
    (["--from", "2026-12-01", "--to", "2026-12-02", "--timezone", "Mars/Olympus"], "unknown time zone"),
    (["--from", "2026-12-01"], "Missing option '--to'"),
])
def test_cli_bad_arguments(loaded_app, args, message):
    result = loaded_app.test_cli_runner().invoke(args=["report", *args])
    assert result.exit_code != 0
    assert message in result.output


def test_report_refuses_an_absurd_range(loaded_app):
    result = loaded_app.test_cli_runner().invoke(
        args=["report", "--from", "0001-01-01", "--to", "9999-12-31"])
    assert result.exit_code == 2
    assert "at most 3660 days" in result.output
