"""Staffing: Erlang C / Erlang A recommendations (metrics.md checks) and `flask staffing` from
the call log's weekday × interval volumes."""
from __future__ import annotations

import json
import math
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import event, select

from ivr.models import Call
from reporting.staffing import (erlang_a_staffing, erlang_c_staffing, estimate_patience,
                                load_history, recommend_erlang_a, recommend_erlang_c,
                                recommend_from_history)
from routing.models import Queue

TALLINN = ZoneInfo("Europe/Tallinn")


# --------------------------------------------------------------------------- calculator


def test_metrics_md_erlang_c_100_calls_per_half_hour_aht_180_needs_14_agents_for_80_in_20():
    best = recommend_erlang_c(100, 1800, 180, target=0.8, threshold=20)
    assert best.agents == 14
    assert best.load == pytest.approx(10.0)
    assert best.p_wait == pytest.approx(0.1741319, abs=5e-8)
    assert best.service_level == pytest.approx(0.88835, abs=5e-6)
    assert best.asa == pytest.approx(7.836, abs=5e-4)
    thirteen = erlang_c_staffing(100, 1800, 180, 13, threshold=20)
    assert round(thirteen.service_level * 100, 2) == 79.56  # 13 agents miss 80 %


def test_metrics_md_erlang_c_200_calls_per_half_hour_aht_180_needs_23_agents_for_80_in_60():
    best = recommend_erlang_c(200, 1800, 180, target=0.8, threshold=60)
    assert best.agents == 23
    assert best.service_level >= 0.8
    assert erlang_c_staffing(200, 1800, 180, 22, threshold=60).service_level < 0.8


@pytest.mark.parametrize("calls, aht, threshold, target", [
    (100, 180, 20, 0.8), (200, 180, 60, 0.8), (3, 300, 20, 0.8), (450, 240, 30, 0.9),
    (40, 120, 0, 0.5)])
def test_erlang_a_with_infinite_patience_equals_erlang_c(calls, aht, threshold, target):
    c = recommend_erlang_c(calls, 1800, aht, target=target, threshold=threshold)
    a = recommend_erlang_a(calls, 1800, aht, math.inf, target=target, threshold=threshold)
    assert a.agents == c.agents
    assert a.p_wait == pytest.approx(c.p_wait, rel=1e-9)
    assert a.service_level == pytest.approx(c.service_level, rel=1e-9)
    assert a.asa == pytest.approx(c.asa, rel=1e-9, abs=1e-12)
    assert a.p_abandon == 0


def test_erlang_a_recommends_the_smallest_n_that_meets_the_target():
    best = recommend_erlang_a(100, 1800, 180, 120, target=0.8, threshold=20)
    assert best.agents == 12  # impatient callers leave, so fewer agents than Erlang C's 14
    assert best.service_level >= 0.8
    assert erlang_a_staffing(100, 1800, 180, 11, 120, threshold=20).service_level < 0.8
    assert 0 < best.p_abandon < 0.1
    # Patient callers need more agents, never more than Erlang C.
    patient = recommend_erlang_a(100, 1800, 180, 3600, target=0.8, threshold=20)
    assert best.agents <= patient.agents <= 14


def test_no_calls_need_no_agents_and_bad_input_is_refused():
    assert recommend_erlang_c(0, 1800, 180).agents == 0
    assert recommend_erlang_a(0, 1800, 180, 60).agents == 0
    assert recommend_erlang_c(0.1, 1800, 180).agents == 1
    for args in ((-1, 1800, 180), (10, 0, 180), (10, 1800, 0), (math.nan, 1800, 180)):
        with pytest.raises(ValueError):
            recommend_erlang_c(*args)
    for target in (0, 1, 80):
        with pytest.raises(ValueError):
            recommend_erlang_c(10, 1800, 180, target=target)
    with pytest.raises(ValueError):
        recommend_erlang_a(10, 1800, 180, 0)


def test_patience_is_total_wait_over_abandons():
    assert estimate_patience(600.0, 3) == 200.0
    assert estimate_patience(600.0, 0) == math.inf
    with pytest.raises(ValueError):
        estimate_patience(-1.0, 2)


# --------------------------------------------------------------------------- history


def _local(day: date, hour: int, minute: int = 0, second: int = 0, *, fold: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=TALLINN,
                    fold=fold).astimezone(timezone.utc)


class Log:
    """Writes offered calls straight into the call log."""

    def __init__(self, session):
        self.session = session
        self.queue_id = session.scalar(select(Queue.id).where(Queue.name == "et.pension"))
        self.n = 0

    def add(self, entered: datetime, *, wait: float = 10, talk: int | None = 150,
            wrap_up: int | None = 30, hold: int | None = None, abandoned: bool = False,
            offered: bool = True) -> None:
        self.n += 1
        answered = None if abandoned else entered + timedelta(seconds=wait)
        ended = entered + timedelta(seconds=wait + (0 if abandoned else (talk or 0)))
        self.session.add(Call(
            call_sid=f"CA{self.n:032d}", arrived_at=entered - timedelta(seconds=30),
            queue_entered_at=entered if offered else None, queue_id=self.queue_id,
            answered_at=answered if offered else None, ended_at=ended, status="ended",
            outcome=("abandoned" if abandoned else "answered") if offered else "ivr_abandoned",
            talk_seconds=None if abandoned or not offered else talk,
            wrap_up_seconds=None if abandoned else wrap_up, hold_seconds=hold,
            last_event_at=ended))


LAST_DAY = date(2026, 11, 29)  # a Sunday: two weeks are Mon 16 Nov – Sun 29 Nov 2026
MONDAYS = (date(2026, 11, 16), date(2026, 11, 23))


def _two_weeks(session) -> None:
    """Mondays 10:00–10:30 local: 6 and 4 offered calls (mean 5): 8 answered after 10 s with
    talk + wrap-up (+ hold) = 180 s; 2 abandoned after 40 and 60 s. Tuesday 23:45 local (21:45
    UTC): 2 calls in one week (mean 1), AHT 240 s. Not counted: an IVR-only call, calls before the
    first and after the last day."""
    log = Log(session)
    first, second = MONDAYS
    for minute in range(5):
        log.add(_local(first, 10, minute * 5))
    log.add(_local(first, 10, 29, 59), talk=120, hold=30, wrap_up=30)
    log.add(_local(second, 10, 1), abandoned=True, wait=40)
    log.add(_local(second, 10, 2), abandoned=True, wait=60)
    log.add(_local(second, 10, 3))
    log.add(_local(second, 10, 4), talk=180, wrap_up=None)
    log.add(_local(date(2026, 11, 17), 23, 45), talk=200, wrap_up=40)
    log.add(_local(date(2026, 11, 17), 23, 50), talk=200, wrap_up=40)
    log.add(_local(first, 10, 10), offered=False)
    log.add(_local(date(2026, 11, 15), 23, 59))  # Sunday before the history
    log.add(_local(date(2026, 11, 30), 0, 0))  # Monday after it
    session.commit()


def test_history_sums_offered_calls_per_weekday_and_interval_in_sql(loaded_app, session):
    _two_weeks(session)
    statements = []
    engine = loaded_app.extensions["db_engine"]

    def log_statement(_conn, _cursor, statement, *_args):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", log_statement)
    try:
        history = load_history(session, LAST_DAY, 2, "Europe/Tallinn", 30)
    finally:
        event.remove(engine, "before_cursor_execute", log_statement)
    # One aggregate query over the call log, grouped in the database.
    reads = [s for s in statements if "FROM calls" in s]
    assert len(reads) == 1 and "GROUP BY" in reads[0]

    assert len(history.intervals) == 7 * 48
    monday = history.intervals[(0, 600)]
    assert (monday.occurrences, monday.offered, monday.answered, monday.abandoned) == (2, 10, 8, 2)
    assert monday.mean_offered == 5.0
    assert monday.aht == pytest.approx(180.0)  # (talk + hold + wrap-up) / answered with talk
    tuesday = history.intervals[(1, 23 * 60 + 30)]
    assert (tuesday.offered, tuesday.mean_offered, tuesday.aht) == (2, 1.0, 240.0)
    assert history.offered == 12 and history.abandoned == 2
    # Σ waits = 8 answered × 10 s + 2 Tuesday × 10 s + 40 + 60 = 200 s, over 2 abandons.
    assert history.patience == pytest.approx(100.0)
    assert history.intervals[(0, 0)].offered == 0  # Monday 30 Nov 00:00 is after the history
    assert history.intervals[(6, 23 * 60 + 30)].offered == 0  # Sunday 15 Nov is before it

    recommendations = recommend_from_history(history, target=0.8, threshold=20)
    by_key = {(r.interval.weekday, r.interval.start_minute): r for r in recommendations}
    mon = by_key[(0, 600)]
    assert mon.aht == pytest.approx(180.0)
    assert mon.erlang_c.agents == recommend_erlang_c(5, 1800, 180).agents == 2
    assert mon.erlang_a.agents == recommend_erlang_a(5, 1800, 180, 100.0).agents
    assert by_key[(1, 1410)].erlang_c.agents == recommend_erlang_c(1, 1800, 240).agents
    empty = [r for k, r in by_key.items() if k not in ((0, 600), (1, 1410))]
    assert len(empty) == 7 * 48 - 2
    assert all(r.erlang_c.agents == 0 and r.erlang_a.agents == 0 and r.aht is None for r in empty)
    # An AHT given overrides the history's.
    forced = recommend_from_history(history, aht=600)
    assert {(r.interval.weekday, r.interval.start_minute): r for r in forced}[(0, 600)].erlang_c.agents \
        == recommend_erlang_c(5, 1800, 600).agents


def test_history_follows_local_time_across_the_autumn_and_spring_changes(session):
    log = Log(session)
    autumn = date(2026, 10, 25)  # Sunday: 04:00 EEST → 03:00 EET, 03:00–04:00 happens twice
    log.add(_local(autumn, 3, 40, fold=0))  # 00:40 UTC
    log.add(_local(autumn, 3, 40, fold=1))  # 01:40 UTC, same local interval
    log.add(_local(autumn, 12, 0))  # 10:00 UTC, after the change: 12:00 local
    log.add(_local(date(2026, 10, 24), 12, 0))  # Saturday 09:00 UTC, still EEST
    session.commit()
    history = load_history(session, autumn, 1, "Europe/Tallinn", 60)
    sunday_3 = history.intervals[(6, 180)]
    assert (sunday_3.occurrences, sunday_3.offered, sunday_3.mean_offered) == (2, 2, 1.0)
    assert history.intervals[(6, 720)].offered == 1
    assert history.intervals[(5, 720)].offered == 1
    assert history.intervals[(5, 660)].offered == history.intervals[(6, 660)].offered == 0
    assert sum(i.occurrences for i in history.intervals.values()) == 7 * 24 + 1  # 25-hour day

    spring = date(2026, 3, 29)  # Sunday: 03:00 EET → 04:00 EEST, no 03:00 hour
    log.add(_local(spring, 4, 10))
    session.commit()
    history = load_history(session, spring, 1, "Europe/Tallinn", 60)
    assert history.intervals[(6, 180)].occurrences == 0
    assert history.intervals[(6, 240)].offered == 1
    assert sum(i.occurrences for i in history.intervals.values()) == 7 * 24 - 1  # 23-hour day


def test_load_history_refuses_intervals_that_do_not_divide_a_day(session):
    for interval in (0, 7, 50, 2000):
        with pytest.raises(ValueError):
            load_history(session, LAST_DAY, 4, "Europe/Tallinn", interval)
    with pytest.raises(ValueError):
        load_history(session, LAST_DAY, 0, "Europe/Tallinn", 30)


# --------------------------------------------------------------------------- CLI


def _run(app, *args):
    return app.test_cli_runner().invoke(args=["staffing", *args])


def test_flask_staffing_calculator_prints_agents_p_wait_sl_asa_and_the_formulas(app):
    result = _run(app, "--calls", "100", "--interval", "30", "--aht", "180")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Erlang C: 14 agents; P(wait) 0.1741319, SL 88.84%, ASA 7.836 s" in out
    assert "SL(t) = 1 − P(wait)·e^(−(N−A)·t/AHT)" in out and "ASA = P(wait)·AHT / (N − A)" in out
    assert "A = λ·AHT" in out
    assert "79.56%" in out  # 13 agents, shown beside the recommendation
    assert "Erlang A:" not in out  # only with --patience

    with_patience = _run(app, "--calls", "100", "--interval", "30", "--aht", "180",
                         "--patience", "120", "--format", "json")
    assert with_patience.exit_code == 0, with_patience.output
    data = json.loads(with_patience.output)
    assert data["erlang_c"]["agents"] == 14 and data["erlang_a"]["agents"] == 12
    assert data["parameters"]["patience_seconds"] == 120
    assert any("Erlang A" in f for f in data["formulas"])
    thirteen = next(row for row in data["agents"] if row["agents"] == 13)
    assert round(thirteen["erlang_c"]["service_level"], 4) == 0.7956

    infinite = json.loads(_run(app, "--calls", "100", "--aht", "180", "--patience", "inf",
                               "--format", "json").output)
    assert infinite["erlang_a"]["agents"] == 14
    assert infinite["erlang_a"]["service_level"] == pytest.approx(infinite["erlang_c"]["service_level"])

    sixty = _run(app, "--calls", "200", "--aht", "180", "--threshold", "60", "--format", "csv")
    assert sixty.exit_code == 0, sixty.output
    rows = [line.split(",") for line in sixty.output.splitlines()]
    assert rows[0][:3] == ["model", "agents", "recommended"]
    assert [r[1] for r in rows[1:] if r[2] == "1"] == ["23"]


def test_flask_staffing_from_history(loaded_app, session, clock):
    _two_weeks(session)
    clock.now = datetime(2026, 11, 30, 8, 0, tzinfo=timezone.utc)  # Monday: yesterday is LAST_DAY
    result = _run(loaded_app, "--weeks", "2", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    params = data["parameters"]
    assert (params["from"], params["to"], params["timezone"]) == ("2026-11-16", "2026-11-29",
                                                                  "Europe/Tallinn")
    assert params["patience_seconds"] == pytest.approx(100.0)
    assert params["aht_seconds"] == pytest.approx((8 * 180 + 2 * 240) / 10)
    assert any("Mandelbaum & Zeltyn" in f for f in data["formulas"])
    assert len(data["intervals"]) == 7 * 48
    monday = next(i for i in data["intervals"] if (i["weekday"], i["interval_start"]) == ("Mon", "10:00"))
    assert (monday["mean_offered"], monday["aht_seconds"], monday["erlang_c"]["agents"]) == (5.0, 180.0, 2)
    quiet = next(i for i in data["intervals"] if (i["weekday"], i["interval_start"]) == ("Mon", "10:30"))
    assert quiet["erlang_c"]["agents"] == quiet["erlang_a"]["agents"] == 0

    table = _run(loaded_app, "--weeks", "2")
    assert table.exit_code == 0, table.output
    assert "patience 100.0 s (estimated)" in table.output
    monday_row = next(line for line in table.output.splitlines() if line.startswith("Mon")
                      and " 10:00 " in line)
    assert monday_row.split()[2:5] == ["5.00", "180.0", "2"]  # mean offered, AHT, Erlang C agents
    csv_out = _run(loaded_app, "--weeks", "2", "--until", "2026-11-29", "--format", "csv",
                   "--interval", "60", "--timezone", "UTC")
    assert csv_out.exit_code == 0, csv_out.output
    lines = csv_out.output.splitlines()
    assert len(lines) == 1 + 7 * 24
    # In UTC the Monday 10:00 Tallinn calls (08:00 UTC) are in Monday 08:00.
    row = next(line.split(",") for line in lines if line.startswith("Mon,08:00"))
    assert row[3] == "10"


def test_flask_staffing_refuses_bad_options(app):
    assert _run(app, "--calls", "100").exit_code == 2  # needs --aht
    assert "needs --aht" in _run(app, "--calls", "100").output
    assert _run(app, "--timezone", "Mars/Olympus").exit_code == 2
    assert _run(app, "--interval", "50").exit_code == 2
    assert _run(app, "--target", "100", "--calls", "1", "--aht", "1").exit_code == 2
    assert _run(app, "--until", "2026-13-01").exit_code == 2
    empty = _run(app, "--weeks", "1")
    assert empty.exit_code == 0 and "no abandons" in empty.output
