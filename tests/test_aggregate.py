"""The SQL-aggregated report (reporting/aggregate.py): metrics.md's worked checks computed by
the database, intervals and DST days, dimensions, FCR, the CLI's full report and the API."""
from __future__ import annotations

import csv
import io
import json
import random
from datetime import date, datetime, timedelta, timezone

import pytest

from ivr.calls import fill_next_offers
from ivr.models import Call
from reporting.aggregate import (ReportError, ReportSpec, intervals_between, report_as_dict,
                                 run_report)
from reporting.call_log import pseudonym
from reporting.metrics import (MetricsAccumulator, classify_offered, net_promoter_score,
                               nps_class, repeat_contact_fcr)
from routing.models import Agent, Queue
from tests.break_helpers import bearer

TZ = "Europe/Tallinn"
NOW = datetime(2026, 12, 31, tzinfo=timezone.utc)
_seq = iter(range(1, 10**7))


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def call(queue: Queue | None, entered: datetime | None, *, wait: float | None = None,
         answered: bool = True, talk: int | None = 100, caller: str | None = None,
         agent: Agent | None = None, source: str = "live", disposition: str | None = None,
         wrap: int | None = None, hold: int | None = None, language: str | None = None,
         outcome: str | None = None, arrived: datetime | None = None) -> Call:
    """An ended call. ``entered`` None = never offered (``outcome`` says how it ended)."""
    sid = f"CA{next(_seq):032d}"
    if entered is None:
        at = arrived or utc(2026, 12, 1, 10)
        return Call(call_sid=sid, arrived_at=at, last_event_at=at, ended_at=at + timedelta(seconds=30),
                    status="ended", outcome=outcome or "ivr_abandoned", source=source)
    end = entered + timedelta(seconds=(wait or 0) + (talk or 0 if answered else 0))
    return Call(call_sid=sid, arrived_at=entered - timedelta(seconds=60), last_event_at=end,
                queue_entered_at=entered, queue_id=queue.id if queue else None,
                answered_at=entered + timedelta(seconds=wait) if answered else None,
                ended_at=end, talk_seconds=talk if answered else None, status="ended",
                outcome="answered" if answered else "abandoned", caller_key=caller,
                agent_id=agent.id if agent and answered else None, source=source,
                disposition=disposition if answered else None, wrap_up_seconds=wrap,
                hold_seconds=hold, language=language or (queue.language if queue else None),
                topic=queue.topic if queue else None)


@pytest.fixture
def queues(session):
    pension = Queue(name="et.pension", language="et", topic="pension")
    general = Queue(name="ru.general", language="ru", topic="general")
    session.add_all([pension, general])
    session.commit()
    return pension, general


def report(session, start=date(2026, 12, 1), end=None, **kw):
    return run_report(session, ReportSpec(start, end or start, timezone=TZ, **kw), now=NOW)


# ---------------------------------------------------------------- metrics.md worked checks

def test_icmi_service_level_variants_computed_by_the_database(session, queues):
    """ICMI / Call Centre Helper: answered 1000 (860 within 20 s), abandoned 60 (20 within
    20 s, 40 after) → #1 83 %, #2 86 %, #3 81 %, #4 83 %."""
    pension, _ = queues
    start = utc(2026, 12, 1, 8)
    calls = []
    for i in range(1000):
        calls.append(call(pension, start + timedelta(seconds=20 * i), wait=20 if i < 860 else 21))
    for i in range(60):
        calls.append(call(pension, start + timedelta(seconds=20 * i + 7), answered=False,
                          wait=(3 if i < 10 else 20) if i < 20 else 45))
    session.add_all(calls)
    session.commit()
    total = report(session).total.metrics
    assert (total.offered, total.answered, total.abandoned) == (1060, 1000, 60)
    assert (total.answered_within, total.abandoned_within, total.short_abandoned) == (860, 20, 10)
    assert round(total.sl_abandons_met * 100) == 83          # (860 + 20) / 1060
    assert round(total.sl_answered * 100) == 86              # 860 / 1000
    assert round(total.sl_offered * 100) == 81               # 860 / 1060
    assert round(total.sl_excl_early_abandons * 100) == 83   # 860 / (1000 + 40)
    assert total.sl_excl_short_abandons == pytest.approx(860 / 1050)
    assert total.abandonment_rate_excl_short == pytest.approx(50 / 1050)
    assert total.answer_rate == pytest.approx(1000 / 1060)


def test_asa_32_seconds_and_aht_with_hold_and_wrap_up(session, queues):
    pension, _ = queues
    for i, (wait, talk, hold, wrap) in enumerate([(30, 100, 0, 10), (15, 200, 20, 30),
                                                  (45, 150, None, 20), (60, 50, 10, None),
                                                  (10, 100, 0, 0)]):
        session.add(call(pension, utc(2026, 12, 1, 9, i), wait=wait, talk=talk, hold=hold,
                         wrap=wrap))
    session.commit()
    total = report(session).total.metrics
    assert total.asa == 32.0
    assert total.mean_talk == 120.0
    assert total.aht == (600 + 30 + 60) / 5   # talk + hold + wrap-up per handled call


def test_repeat_contact_fcr_70_percent_with_identified_callers_only(session, queues):
    """SQM Group: 280 resolved first time of 400 → 70 %. 120 of 400 identified callers call
    again within 3 days; withheld callers are not in the base."""
    pension, _ = queues
    start = utc(2026, 12, 1, 8)
    for i in range(400):
        number = f"+3725{i:07d}"
        session.add(call(pension, start + timedelta(minutes=i), wait=5, caller=number))
        if i < 120:   # their next offered call, abandoned, 3 days later
            session.add(call(pension, start + timedelta(days=3, minutes=i), wait=50,
                             answered=False, caller=number))
    for i in range(30):   # withheld: answered but never linked
        session.add(call(pension, start + timedelta(minutes=i, seconds=30), wait=5, caller=None))
    session.commit()
    fill_next_offers(session)
    session.commit()
    result = report(session, fcr_windows=(1, 7))
    total = result.total
    assert total.fcr[7] == [120, 400]
    assert total.fcr_rate(7) == pytest.approx(0.70)
    assert total.fcr[1] == [0, 400]        # none came back within a day
    assert total.unidentified == 30
    assert repeat_contact_fcr(120, 400) == pytest.approx(0.70)


def test_fcr_window_boundaries_data_end_and_scheduled_callbacks(session, queues):
    pension, _ = queues
    t = utc(2026, 12, 1, 8)
    session.add_all([
        call(pension, t, wait=5, caller="+37251000001"),
        call(pension, t + timedelta(days=7), wait=5, caller="+37251000001", answered=False),
        call(pension, t, wait=5, caller="+37251000002"),
        call(pension, t + timedelta(days=7, seconds=1), wait=5, caller="+37251000002"),
        # an agency-initiated scheduled callback is not the caller's repeat contact
        call(pension, t, wait=5, caller="+37251000003"),
        call(pension, t + timedelta(days=1), wait=5, caller="+37251000003", source="callback"),
    ])
    session.commit()
    fill_next_offers(session)
    session.commit()
    result = run_report(session, ReportSpec(date(2026, 12, 1), date(2026, 12, 1), timezone=TZ,
                                            fcr_windows=(7,)), now=NOW)
    assert result.total.fcr[7] == [1, 3]  # exactly 7 days counts; 7 days + 1 s does not
    # When the data ends 3 days later, no 7-day window is complete: the base is empty.
    early = run_report(session, ReportSpec(date(2026, 12, 1), date(2026, 12, 1), timezone=TZ,
                                           fcr_windows=(7,)), now=t + timedelta(days=3))
    assert early.total.fcr[7] == [0, 0]
    assert early.total.fcr_rate(7) is None


def test_disposition_fcr_and_nps_worked_checks(session, queues):
    pension, _ = queues
    for i in range(400):
        session.add(call(pension, utc(2026, 12, 1, 8) + timedelta(seconds=30 * i), wait=3,
                         disposition="resolved" if i < 280 else "callback_promised"))
    session.add(call(pension, utc(2026, 12, 1, 14), wait=3, disposition=None))
    session.commit()
    total = report(session).total.metrics
    assert (total.resolved, total.disposed, total.answered) == (280, 400, 401)
    assert total.fcr_disposition == pytest.approx(0.70)
    # NPS: 30 % promoters, 20 % detractors → +10 (metrics.md).
    assert net_promoter_score(30, 50, 20) == pytest.approx(10.0)
    assert [nps_class(s) for s in (0, 6, 7, 8, 9, 10)] == [
        "detractor", "detractor", "passive", "passive", "promoter", "promoter"]
    with pytest.raises(ValueError):
        nps_class(11)
    assert net_promoter_score(0, 0, 0) is None


# ---------------------------------------------------------------- intervals and DST

def test_spring_dst_day_has_23_hourly_rows_and_no_0300(session, queues):
    pension, _ = queues
    session.add(call(pension, utc(2026, 3, 29, 1, 30), wait=4))   # 04:30+03:00 local
    session.commit()
    result = report(session, start=date(2026, 3, 29), interval="60min")
    labels = [i.interval.label for i in result.intervals]
    assert len(labels) == 23
    assert not any(label.startswith("2026-03-29 03:00") for label in labels)
    assert labels[2:4] == ["2026-03-29 02:00+02:00", "2026-03-29 04:00+03:00"]
    busy = [i for i in result.intervals if i.total.metrics.offered]
    assert [i.interval.label for i in busy] == ["2026-03-29 04:00+03:00"]
    assert report(session, start=date(2026, 3, 29)).intervals[0].interval.hours == 23


def test_autumn_dst_day_has_25_hourly_rows_and_the_repeated_hour_twice(session, queues):
    pension, _ = queues
    session.add(call(pension, utc(2026, 10, 25, 0, 30), wait=4))   # 03:30+03:00
    session.add(call(pension, utc(2026, 10, 25, 1, 30), wait=40))  # 03:30+02:00
    session.commit()
    result = report(session, start=date(2026, 10, 25), interval="60min")
    labels = [i.interval.label for i in result.intervals]
    assert len(labels) == 25
    assert labels[3:5] == ["2026-10-25 03:00+03:00", "2026-10-25 03:00+02:00"]
    first, second = result.intervals[3].total.metrics, result.intervals[4].total.metrics
    assert (first.offered, first.answered_within, second.offered, second.answered_within) == (1, 1, 1, 0)
    assert len(intervals_between(date(2026, 10, 25), date(2026, 10, 25), "15min",
                                 __import__("zoneinfo").ZoneInfo(TZ))) == 100


def test_week_month_quarter_intervals_are_local(session, queues):
    pension, _ = queues
    # 2026-12-31 22:30Z is 2027-01-01 00:30 in Tallinn: next month, quarter and ISO week 53.
    session.add(call(pension, utc(2026, 12, 31, 22, 30), wait=4))
    session.add(call(pension, utc(2026, 12, 31, 21, 30), wait=4))
    session.commit()
    months = report(session, start=date(2026, 12, 1), end=date(2027, 1, 31), interval="month")
    assert [(i.interval.label, i.total.metrics.offered) for i in months.intervals] == [
        ("2026-12", 1), ("2027-01", 1)]
    quarters = report(session, start=date(2026, 12, 1), end=date(2027, 1, 31), interval="quarter")
    assert [i.interval.label for i in quarters.intervals] == ["2026-Q4", "2027-Q1"]
    weeks = report(session, start=date(2026, 12, 28), end=date(2027, 1, 10), interval="week")
    assert [(i.interval.label, i.total.metrics.offered) for i in weeks.intervals] == [
        ("2026-W53", 2), ("2027-W01", 0)]


def test_an_empty_period_reports_null_rates(session, queues):
    result = report(session, start=date(2026, 12, 5))
    values = report_as_dict(result)["intervals"][0]["total"]
    assert values["offered"] == 0
    for key in ("sl_offered", "sl_answered", "sl_excl_early_abandons", "sl_excl_short_abandons",
                "sl_abandons_met", "answer_rate", "abandonment_rate", "asa_seconds",
                "aht_seconds", "fcr_repeat_7d", "fcr_disposition"):
        assert values[key] is None, key


# ---------------------------------------------------------------- dimensions, filters, sources

def test_dimensions_agent_language_and_filters(session, queues):
    pension, general = queues
    anna, boris = Agent(name="anna", endpoint_kind="client", endpoint="anna"), \
        Agent(name="boris", endpoint_kind="client", endpoint="boris")
    session.add_all([anna, boris])
    session.flush()
    session.add_all([
        call(pension, utc(2026, 12, 1, 8), wait=5, agent=anna),
        call(pension, utc(2026, 12, 1, 9), wait=25, agent=boris),
        call(general, utc(2026, 12, 1, 10), wait=5, agent=anna),
        call(general, utc(2026, 12, 1, 11), wait=50, answered=False),
        call(None, None, outcome="out_of_hours"),
    ])
    session.commit()
    by_agent = report(session, dimensions=("agent",))
    rows = {g.dims: (g.metrics.offered, g.metrics.answered_within) for g in by_agent.groups}
    assert rows == {("anna",): (2, 2), ("boris",): (1, 0), ("(no agent)",): (1, 0)}
    assert by_agent.total.not_offered == {"out_of_hours": 1}
    by_two = report(session, dimensions=("language", "queue"))
    assert [g.dims for g in by_two.groups] == [("et", "et.pension"), ("ru", "ru.general")]
    only_ru = report(session, filters=(("language", "ru"),))
    assert (only_ru.total.metrics.offered, only_ru.total.metrics.abandoned) == (2, 1)
    with pytest.raises(ReportError, match="unknown dimension"):
        report(session, dimensions=("colour",))
    with pytest.raises(ReportError, match="unknown interval"):
        report(session, interval="5min")


def test_sql_figures_equal_an_independent_python_computation(session, queues):
    """500 random calls: the database's sums equal reporting.metrics' row-by-row fold."""
    pension, general = queues
    rng = random.Random(7)
    expected = MetricsAccumulator(20.0, short_abandon=5.0)
    for i in range(500):
        queue = pension if i % 2 else general
        entered = utc(2026, 12, 1, 6) + timedelta(seconds=rng.uniform(0, 36000))
        wait = round(rng.choice([rng.uniform(0, 40), 20.0, 5.0]), 3)
        answered = rng.random() < 0.85
        talk = rng.randint(10, 600)
        c = call(queue, entered, wait=wait, answered=answered, talk=talk)
        session.add(c)
        expected.add(classify_offered(c.queue_entered_at, c.answered_at, c.ended_at,
                                      c.talk_seconds))
    session.commit()
    got = report(session).total.metrics
    for name in ("offered", "answered", "abandoned", "answered_within", "abandoned_within",
                 "short_abandoned", "talk_count"):
        assert getattr(got, name) == getattr(expected, name), name
    assert got.answered_wait_total == pytest.approx(expected.answered_wait_total, abs=0.01)
    assert got.talk_total == expected.talk_total


# ---------------------------------------------------------------- CLI and API

def _seed_day(session, queues):
    pension, general = queues
    session.add_all([
        call(pension, utc(2026, 12, 1, 8), wait=10, caller="+37251234567"),
        call(pension, utc(2026, 12, 1, 9), wait=30, answered=False, caller="+37251234567"),
        call(general, utc(2026, 12, 1, 10), wait=2, answered=False),
    ])
    session.commit()


def test_cli_full_report_json_csv_and_table(loaded_app, session):
    pension = session.query(Queue).filter_by(name="et.pension").one()
    general = session.query(Queue).filter_by(name="ru.general").one()
    _seed_day(session, (pension, general))
    runner = loaded_app.test_cli_runner()
    result = runner.invoke(args=["report", "--from", "2026-12-01", "--to", "2026-12-01",
                                 "--format", "json", "--by", "queue", "--fcr-window", "1"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["threshold_seconds"] == 20 and body["short_abandon_seconds"] == 5
    assert any("sl_excl_early_abandons" in line for line in body["formulas"])
    total = body["total"]
    assert (total["offered"], total["answered"], total["abandoned"], total["short_abandoned"]) == (3, 1, 2, 1)
    assert total["sl_offered"] == pytest.approx(1 / 3)
    assert total["sl_excl_short_abandons"] == pytest.approx(1 / 2)
    # The app's clock says 2026-12-01 12:00: no 1-day window of that day has ended yet, so
    # the base is empty and the rate is "no data".
    assert total["fcr_repeat_1d"] is None and total["fcr_repeat_1d_base"] == 0
    assert [r["queue"] for r in body["rows"]] == ["et.pension", "ru.general"]

    result = runner.invoke(args=["report", "--from", "2026-12-01", "--to", "2026-12-01",
                                 "--interval", "60min", "--format", "csv"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    intervals = [r for r in rows if r["level"] == "interval"]
    assert len(intervals) == 24
    ten = next(r for r in intervals if r["interval"] == "2026-12-01 10:00+02:00")
    assert (ten["offered"], ten["answered"], ten["sl_offered"]) == ("1", "1", "1.000000")
    empty = next(r for r in intervals if r["interval"] == "2026-12-01 03:00+02:00")
    assert (empty["offered"], empty["sl_offered"], empty["asa_seconds"]) == ("0", "", "")

    result = runner.invoke(args=["report", "--from", "2026-12-01", "--to", "2026-12-01",
                                 "--by", "queue,agent"])
    assert result.exit_code == 0, result.output
    assert "SL#4 ex.ab" in result.output and "FCR 7d" in result.output
    result = runner.invoke(args=["report", "--from", "2026-12-01", "--to", "2026-12-01",
                                 "--by", "colour"])
    assert result.exit_code == 2 and "unknown dimension 'colour'" in result.output


def test_api_report_empty_day_is_200_with_nulls_and_roles(loaded_app):
    client = loaded_app.test_client()
    resp = client.get("/api/reports?from=2026-12-05&to=2026-12-05",
                      headers=bearer(loaded_app, "reporting"))
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["intervals"][0]["total"]["offered"] == 0
    assert body["intervals"][0]["total"]["sl_offered"] is None
    assert body["total"]["asa_seconds"] is None
    assert client.get("/api/reports?from=2026-12-05&to=2026-12-05").status_code == 401
    assert client.get("/api/reports?from=2026-12-05&to=2026-12-05",
                      headers=bearer(loaded_app, "agent", "Mari")).status_code == 403
    bad = client.get("/api/reports?from=2026-12-05&to=yesterday",
                     headers=bearer(loaded_app, "reporting"))
    assert bad.status_code == 400 and "'to' must be a date" in bad.get_json()["error"]
    bad = client.get("/api/reports?from=2026-12-05&to=2026-12-05&interval=5min",
                     headers=bearer(loaded_app, "reporting"))
    assert bad.status_code == 400 and "unknown interval" in bad.get_json()["error"]


def test_api_report_pages_intervals_and_filters_by_dimension(loaded_app, session):
    pension = session.query(Queue).filter_by(name="et.pension").one()
    general = session.query(Queue).filter_by(name="ru.general").one()
    _seed_day(session, (pension, general))
    client = loaded_app.test_client()
    headers = bearer(loaded_app, "supervisor")
    resp = client.get("/api/reports?from=2026-12-01&to=2026-12-01&interval=15min&per_page=40&page=2"
                      "&queue=et.pension", headers=headers)
    body = resp.get_json()
    assert resp.status_code == 200, body
    assert (body["interval_count"], body["pages"], len(body["intervals"])) == (96, 3, 40)
    assert body["intervals"][0]["label"] == "2026-12-01 10:00+02:00"
    assert body["total"]["offered"] == 2 and body["filters"] == {"queue": "et.pension"}


def test_api_call_log_pseudonymises_numbers_unless_the_role_allows(loaded_app, session):
    loaded_app.config["REPORT_PSEUDONYM_KEY"] = "test-key"
    pension = session.query(Queue).filter_by(name="et.pension").one()
    general = session.query(Queue).filter_by(name="ru.general").one()
    _seed_day(session, (pension, general))
    client = loaded_app.test_client()
    resp = client.get("/api/calls?from=2026-12-01&to=2026-12-01&limit=2",
                      headers=bearer(loaded_app, "reporting"))
    body = resp.get_json()
    assert resp.status_code == 200, body
    assert body["callers"] == "pseudonyms" and len(body["calls"]) == 2
    expected = pseudonym(b"test-key", "+37251234567")
    assert [c["caller"] for c in body["calls"]] == [expected, expected]
    assert "+3725" not in json.dumps(body)
    rest = client.get(f"/api/calls?from=2026-12-01&to=2026-12-01&after={body['next_after']}",
                      headers=bearer(loaded_app, "reporting")).get_json()
    assert [c["caller"] for c in rest["calls"]] == [""] and rest["next_after"] is None
    shown = client.get("/api/calls?from=2026-12-01&to=2026-12-01",
                       headers=bearer(loaded_app, "supervisor")).get_json()
    assert shown["calls"][0]["caller"] == "+37251234567"
    with client.get("/api/calls/export.csv?from=2026-12-01&to=2026-12-01&queue=et.pension",
                    headers=bearer(loaded_app, "qa")) as export:   # streamed: close it
        assert export.status_code == 200 and export.mimetype == "text/csv"
        rows = list(csv.DictReader(io.StringIO(export.get_data(as_text=True))))
    assert [(r["caller"], r["queue"], r["outcome"]) for r in rows] == [
        (expected, "et.pension", "answered"), (expected, "et.pension", "abandoned")]
    assert rows[0]["arrived_at"].endswith("+02:00")
    loaded_app.config["REPORT_PSEUDONYM_KEY"] = ""
    refused = client.get("/api/calls/export.csv?from=2026-12-01&to=2026-12-01",
                         headers=bearer(loaded_app, "qa"))
    assert refused.status_code == 503 and "REPORT_PSEUDONYM_KEY" in refused.get_json()["error"]


def test_imported_history_with_a_gap_leaves_windows_that_run_into_it_out(session, queues):
    """Imported January–February and October: a call on 27 February whose 7-day window runs
    into the months without data is not in the base; one on 10 January is."""
    pension, _ = queues
    for day in range(1, 29):   # February has calls every day
        session.add(call(pension, utc(1999, 2, day, 9), wait=5, source="imported",
                         caller=f"anonymous-bank:{day}"))
    session.add(call(pension, utc(1999, 1, 31, 9), wait=5, source="imported",
                     caller="anonymous-bank:1"))
    session.add(call(pension, utc(1999, 10, 1, 9), wait=5, source="imported",
                     caller="anonymous-bank:27"))
    session.commit()
    fill_next_offers(session)
    session.commit()
    result = run_report(session, ReportSpec(date(1999, 1, 1), date(1999, 2, 28), timezone=TZ,
                                            interval="month", fcr_windows=(7,)), now=NOW)
    january, february = (i.total for i in result.intervals)
    assert january.fcr[7] == [1, 1]       # caller 1 called again on 1 February
    # 1–21 February are in the base (windows end by 1 March 00:00 UTC, the end of the data);
    # 22–28 February are not, and caller 27's October call is no 7-day repeat anyway.
    assert february.fcr[7] == [0, 21]


def test_imported_real_days_match_the_files_own_figures(app, session):
    """The shipped October excerpt through `flask calls import` and the SQL report gives, day
    by day, the figures computed straight from the file (simulator.data.day_figures: the
    file's q_time as the wait)."""
    from collections import defaultdict
    from simulator.data import DEFAULT_DATA, day_figures, read_records

    result = app.test_cli_runner().invoke(
        args=["calls", "import", "--format", "anonymous-bank", str(DEFAULT_DATA)])
    assert result.exit_code == 0, result.output
    by_day = defaultdict(list)
    for record in read_records(DEFAULT_DATA):
        if record.offered:   # the local day of the offer (queue entry, or the direct answer)
            by_day[(record.q_start or record.ser_start or record.vru_exit).date()].append(record)
    days = sorted(by_day)
    assert len(days) >= 3
    report_ = run_report(session, ReportSpec(days[0], days[-1], timezone=TZ, source="imported",
                                             fcr_windows=(1,)), now=NOW)
    got = {i.interval.start.date(): i.total.metrics for i in report_.intervals}
    for day in days:
        want = day_figures(by_day[day])
        m = got[day]
        assert (m.offered, m.answered, m.abandoned, m.answered_within) == (
            want.offered, want.answered, want.abandoned, want.answered_within), day
        assert m.asa == pytest.approx(want.asa, abs=1e-9), day


def test_cli_export_pseudonymises_and_reports_progress(loaded_app, session, tmp_path):
    pension = session.query(Queue).filter_by(name="et.pension").one()
    general = session.query(Queue).filter_by(name="ru.general").one()
    _seed_day(session, (pension, general))
    runner = loaded_app.test_cli_runner()
    refused = runner.invoke(args=["calls", "export", "--from", "2026-12-01", "--to", "2026-12-01"])
    assert refused.exit_code == 2 and "REPORT_PSEUDONYM_KEY" in refused.output
    loaded_app.config["REPORT_PSEUDONYM_KEY"] = "k2"
    out = tmp_path / "calls.csv"
    result = runner.invoke(args=["calls", "export", "--from", "2026-12-01", "--to", "2026-12-01",
                                 "--filter", "queue=et.pension", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "exported 2 calls (pseudonyms)" in result.stderr
    rows = list(csv.DictReader(out.open()))
    assert [r["caller"] for r in rows] == [pseudonym(b"k2", "+37251234567")] * 2
    assert "+3725" not in out.read_text()
    shown = runner.invoke(args=["calls", "export", "--from", "2026-12-01", "--to", "2026-12-01",
                                "--numbers"])
    assert shown.exit_code == 0 and shown.stdout.count("+37251234567") == 2


def test_a_callers_next_offered_call_is_stamped_on_their_earlier_one(loaded_app, session, clock):
    """Live path: when the same number's second call enters a queue, the first call learns
    its next offer; a withheld number links nothing."""
    from tests.break_helpers import queue
    from tests.conftest import Caller
    client = loaded_app.test_client()
    first = Caller(client, "CA" + "1" * 32, from_number="+37251234567")
    queue(first)
    clock.advance(600)
    second = Caller(client, "CA" + "2" * 32, from_number="5123 4567")   # national form
    queue(second)
    withheld = Caller(client, "CA" + "3" * 32, from_number="anonymous")
    queue(withheld)
    session.expire_all()
    calls = {c.call_sid[2:3]: c for c in session.query(Call).all()}
    assert calls["1"].caller_key == calls["2"].caller_key == "+37251234567"
    assert calls["1"].next_offer_at == calls["2"].queue_entered_at is not None
    assert calls["2"].next_offer_at is None
    assert calls["3"].caller_key is None and calls["3"].next_offer_at is None
