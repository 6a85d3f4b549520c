"""The call simulator: the Anonymous Bank reader and replays through the real webhooks."""
from __future__ import annotations

import gzip
from datetime import date, datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from ivr.models import Call
from recording.models import Recording
from routing.models import Agent, QueueEntry
from simulator.data import (DEFAULT_DATA, DataError, day_figures, days_in, parse_lines,
                            read_records)
from simulator.engine import (Options, Simulation, agent_shifts, local_to_utc,
                              weighted_key)

HEADER = ("vru+line\tcall_id\tcustomer_id\tpriority\ttype\tdate\tvru_entry\tvru_exit\tvru_time\t"
          "q_start\tq_exit\tq_time\toutcome\tser_start\tser_exit\tser_time\tserver")


def row(*fields) -> str:
    return "\t".join(str(f) for f in fields)


# Line numbers below count the header as line 1.
ROWS = [
    HEADER,
    # 2: queued 21 s, then served by GILI for 62 s
    row("AA0101", 100, 9664491, 2, "PS", 991025, "9:59:50", "10:00:00", 10, "10:00:00", "10:00:21",
        21, "AGENT", "10:00:20", "10:01:22", 62, "GILI"),
    # 3: PHANTOM (ignored by every figure)
    row("AA0102", 101, 0, 1, "PS", 991025, "10:05:00", "10:05:09", 9, "10:05:09", "10:05:30", 21,
        "PHANTOM", "10:05:30", "10:06:00", 30, "NO_SERVER"),
    # 4: straight to an agent (both queue times 0:00:00), entered just before midnight: the
    # service times fall on the next day; ser_start 0:00:00 is a time, not "empty"
    row("AA0103", 102, 0, 0, "PE", 991025, "23:59:50", "23:59:50", 0, "0:00:00", "0:00:00", 0,
        "AGENT", "0:00:00", "0:00:48", 0, "AVI"),
    # 5: queued at midnight exactly (q_start 0:00:00 but q_exit not): abandoned after 27 s
    row("AA0104", 103, 0, 1, "PS", 991025, "23:59:40", "0:00:00", 20, "0:00:00", "0:00:27", 27,
        "HANG", "0:00:00", "0:00:00", 0, "NO_SERVER"),
    # 6: malformed: spaces instead of a tab between priority and type; hung up in the VRU
    "AA0108\t3892\t0\t0       NW\t991025\t14:07:50\t14:07:58\t8\t0:00:00\t0:00:00\t0\tHANG\t"
    "0:00:00\t0:00:00\t0\tNO_SERVER",
    # 7: negative vru_time (exit a few seconds before entry), then served without queueing
    row("AA0105", 104, 0, 0, "PS", 991026, "8:00:10", "8:00:05", -5, "0:00:00", "0:00:00", 0,
        "AGENT", "8:00:06", "8:02:06", 120, "GILI"),
]


def test_reader_handles_the_documented_quirks():
    records = list(parse_lines(line + "\r\n" for line in ROWS))  # CRLF like January/February
    assert [r.line for r in records] == [2, 3, 4, 5, 6, 7]
    queued, phantom, midnight_service, midnight_queue, spaced, negative = records

    assert queued.key == ("AA0101", "100")
    assert (queued.priority, queued.type, queued.date) == (2, "PS", date(1999, 10, 25))
    assert queued.q_start == datetime(1999, 10, 25, 10, 0, 0)
    assert queued.q_exit == datetime(1999, 10, 25, 10, 0, 21)
    assert queued.ser_exit == datetime(1999, 10, 25, 10, 1, 22)
    assert (queued.queued, queued.offered, queued.answered, queued.server) == (True, True, True, "GILI")

    assert phantom.phantom and not phantom.offered and not phantom.abandoned

    assert midnight_service.q_start is None and midnight_service.q_exit is None
    assert midnight_service.vru_exit == datetime(1999, 10, 25, 23, 59, 50)
    assert midnight_service.ser_start == datetime(1999, 10, 26, 0, 0, 0)
    assert midnight_service.ser_exit == datetime(1999, 10, 26, 0, 0, 48)
    assert midnight_service.offered and midnight_service.answered and not midnight_service.queued

    assert midnight_queue.vru_exit == datetime(1999, 10, 26, 0, 0, 0)
    assert midnight_queue.q_start == datetime(1999, 10, 26, 0, 0, 0)
    assert midnight_queue.q_exit == datetime(1999, 10, 26, 0, 0, 27)
    assert midnight_queue.ser_start is None and midnight_queue.ser_exit is None
    assert midnight_queue.queued and midnight_queue.abandoned and not midnight_queue.ivr_only

    assert spaced.repaired and (spaced.priority, spaced.type) == (0, "NW")
    assert spaced.vru_entry == datetime(1999, 10, 25, 14, 7, 50)
    assert spaced.ivr_only and not spaced.offered and not spaced.abandoned

    assert negative.vru_time == -5
    assert negative.vru_exit == datetime(1999, 10, 26, 8, 0, 5)  # not rolled over a day
    assert negative.ser_start == datetime(1999, 10, 26, 8, 0, 6)


def test_day_figures_count_offered_answered_abandoned_ivr_only_sl_and_asa():
    records = list(parse_lines(ROWS))
    first_day = [r for r in records if r.date == date(1999, 10, 25)]
    figures = day_figures(first_day, threshold=20)
    assert (figures.rows, figures.phantom) == (5, 1)
    assert (figures.offered, figures.answered, figures.abandoned, figures.ivr_only) == (3, 2, 1, 1)
    # Answered within 20 s: only the direct call (q_time 0); the queued one waited 21 s.
    assert figures.answered_within == 1
    assert figures.service_level == pytest.approx(1 / 3)
    assert figures.asa == pytest.approx((21 + 0) / 2)
    assert day_figures([]).service_level is None and day_figures([]).asa is None


def test_reader_reads_gzip_and_plain_files_and_picks_a_day(tmp_path):
    text = "\n".join(ROWS) + "\n"
    plain = tmp_path / "calls.tsv"
    plain.write_text(text, encoding="ascii")
    packed = tmp_path / "calls.tsv.gz"
    packed.write_bytes(gzip.compress(text.encode("ascii")))
    assert read_records(plain) == read_records(packed)
    assert days_in(read_records(packed)) == [date(1999, 10, 25), date(1999, 10, 26)]
    assert [r.line for r in read_records(packed, date(1999, 10, 26))] == [7]


def test_reader_names_the_line_of_a_bad_row():
    with pytest.raises(DataError, match="line 3: 15 fields"):
        list(parse_lines([HEADER, ROWS[1], "a\tb\tc\td\te\tf\tg\th\ti\tj\tk\tl\tm\tn\to"]))
    with pytest.raises(DataError, match="line 2: vru_entry '25:00:00'"):
        list(parse_lines([HEADER, ROWS[1].replace("9:59:50", "25:00:00")]))
    with pytest.raises(DataError, match="line 1: header"):
        list(parse_lines(["not\ta\theader", ROWS[1]]))


def test_shipped_excerpt_reads_with_both_malformed_rows():
    records = read_records(DEFAULT_DATA)
    assert days_in(records) == [date(1999, 10, 25), date(1999, 10, 26), date(1999, 10, 27),
                                date(1999, 10, 28)]
    assert len(records) == 5130
    assert [(r.date, r.type, r.outcome) for r in records if r.repaired] == [
        (date(1999, 10, 26), "NW", "HANG"), (date(1999, 10, 26), "IN", "HANG")]


def test_times_are_tallinn_local_time_and_choices_are_deterministic():
    assert local_to_utc(datetime(1999, 10, 25, 10, 0)) == datetime(1999, 10, 25, 7, 0, tzinfo=timezone.utc)
    assert local_to_utc(datetime(1999, 11, 1, 10, 0)) == datetime(1999, 11, 1, 8, 0, tzinfo=timezone.utc)
    choices = (("1", 75), ("2", 25))
    picks = [weighted_key(choices, "language", "AA01", n) for n in range(4000)]
    assert picks == [weighted_key(choices, "language", "AA01", n) for n in range(4000)]
    assert 0.72 < picks.count("1") / len(picks) < 0.78


def _settings(app) -> dict:
    from config import SETTINGS

    return {s.name: app.config[s.name] for s in SETTINGS}


def _calls(session, sids) -> dict[str, Call]:
    return {c.call_sid: c for c in session.scalars(select(Call).where(Call.call_sid.in_(sids)))}


def test_small_scenario_times_abandons_and_talk_exactly(loaded_app, session):
    """One agent, one served caller, one who gives up in the queue, one who hangs up in the IVR."""
    rows = [
        HEADER,
        # served: talks 60 s with KATI, who is on duty 9:59–10:05
        row("AA0101", 1, 0, 1, "PS", 991025, "10:00:00", "10:00:10", 10, "10:00:10", "10:00:10", 0,
            "AGENT", "10:00:10", "10:01:10", 60, "KATI"),
        row("AA0101", 2, 0, 1, "PS", 991025, "10:04:00", "10:04:10", 10, "10:04:10", "10:04:10", 0,
            "AGENT", "10:04:10", "10:05:00", 50, "KATI"),
        # queued while KATI talks, gives up after 30 s in the queue
        row("AA0102", 3, 0, 1, "PS", 991025, "10:00:05", "10:00:15", 10, "10:00:15", "10:00:45", 30,
            "HANG", "0:00:00", "0:00:00", 0, "NO_SERVER"),
        # waits while KATI talks, is moved to her (REST redirect) when she is free again
        row("AA0105", 6, 0, 1, "PS", 991025, "10:00:20", "10:00:30", 10, "10:00:30", "10:01:20", 50,
            "AGENT", "10:01:20", "10:01:50", 30, "KATI"),
        # hangs up in the VRU after 3 s
        row("AA0103", 4, 0, 1, "PS", 991025, "10:02:00", "10:02:03", 3, "0:00:00", "0:00:00", 0,
            "HANG", "0:00:00", "0:00:00", 0, "NO_SERVER"),
        row("AA0106", 5, 0, 1, "PS", 991025, "10:02:30", "10:02:39", 9, "10:02:39", "10:02:50", 11,
            "PHANTOM", "10:02:50", "10:03:00", 10, "NO_SERVER"),
    ]
    records = list(parse_lines(rows))
    with loaded_app.app_context():
        simulation = Simulation(records, day=date(1999, 10, 25), talk_pool=[60, 50],
                                shifts=agent_shifts(records), settings=_settings(loaded_app),
                                options=Options(seed=7))
        result = simulation.run()
    assert result.errors == [] and result.anomalies == []
    assert len(result.calls) == 5  # the PHANTOM row places no call
    by_line = {c.record.line: c for c in result.calls}
    calls = _calls(session, result.call_sids)
    assert len(calls) == 5 and all(c.status == "ended" for c in calls.values())

    served = calls[by_line[2].sid]
    arrival = local_to_utc(datetime(1999, 10, 25, 10, 0, 0))
    assert served.arrived_at == arrival and served.outcome == "answered"
    # the agent was free: answered --answer-delay (2 s) after queue entry
    assert served.answered_at - served.queue_entered_at == timedelta(seconds=2)
    recording = session.scalar(select(Recording).where(Recording.call_sid == served.call_sid))
    assert recording.status == "completed" and recording.duration_seconds == 60
    assert recording.channels == 2 and recording.source == "DialVerb"
    # the agent leg lasted the whisper plus the 60 s conversation
    assert 60 < served.talk_seconds <= 65

    gave_up = calls[by_line[4].sid]
    assert gave_up.outcome == "abandoned" and gave_up.answered_at is None
    # patience (q_time 30 s) runs from the <Enqueue>, which follows the "all busy" prompt
    enqueued = by_line[4].queue_started_at
    assert gave_up.ended_at - enqueued == timedelta(seconds=30)
    assert timedelta(seconds=1) <= enqueued - gave_up.queue_entered_at <= timedelta(seconds=6)

    waited = calls[by_line[5].sid]
    assert waited.outcome == "answered" and waited.queue_entered_at < served.ended_at
    # KATI's first conversation ended, she became available through the API, the service
    # redirected the waiting caller to her and she answered 2 s later
    first_talk_end = served.answered_at + timedelta(seconds=served.talk_seconds)
    assert waited.answered_at - first_talk_end == timedelta(seconds=2)
    assert ("redirect", waited.call_sid, "https://sim.hotline.invalid/twilio/queue/connect") in \
        simulation.app.extensions["telephony"].sent

    ivr = calls[by_line[6].sid]
    assert ivr.outcome == "ivr_abandoned" and ivr.queue_entered_at is None
    assert ivr.ended_at - ivr.arrived_at == timedelta(seconds=3)

    agent = session.scalar(select(Agent).where(Agent.name == "KATI"))
    assert agent.endpoint_kind == "client" and agent.endpoint == "kati"
    assert agent.state == "offline" and agent.current_call_id is None
    assert result.agents[0].calls_answered == 3


def _first_calls(limit: int):
    day = days_in(read_records(DEFAULT_DATA))[0]
    rows = sorted((r for r in read_records(DEFAULT_DATA, day) if not r.phantom),
                  key=lambda r: (r.vru_entry, r.line))
    return day, rows[:limit]


def test_simulated_slice_of_the_excerpt_matches_the_input(loaded_app, session):
    """The first 150 calls of the excerpt's first day through the real webhooks, row by row."""
    from simulator.cli import run_simulation

    limit = 150
    day, rows = _first_calls(limit)
    expected = day_figures(rows)
    with loaded_app.app_context():
        result, input_side, simulated = run_simulation(DEFAULT_DATA, None, limit=limit,
                                                       options=Options(seed=11))
    assert result.day == day and [c.record for c in result.calls] == rows
    assert result.errors == [] and result.anomalies == [] and result.gave_up_max_wait == 0
    assert input_side == expected

    calls = list(session.scalars(select(Call)))
    assert len(calls) == limit
    assert all(c.status == "ended" and c.ended_at is not None for c in calls)
    offered = [c for c in calls if c.queue_entered_at is not None]
    assert len(offered) == expected.offered == simulated.offered
    outcomes = [c.outcome for c in offered]
    assert outcomes.count("answered") + outcomes.count("abandoned") == len(offered)
    ivr_only = [c for c in calls if c.outcome == "ivr_abandoned"]
    assert len(ivr_only) == expected.ivr_only > 0
    assert session.scalar(select(QueueEntry).limit(1)) is None

    by_sid = {c.call_sid: c for c in calls}
    for sim_call in result.calls:
        record, call = sim_call.record, by_sid[sim_call.sid]
        assert call.arrived_at == local_to_utc(record.vru_entry)
        assert (call.queue_entered_at is not None) == record.offered
        if record.ivr_only:
            assert call.outcome == "ivr_abandoned" and call.agent_id is None
            assert call.ended_at - call.arrived_at <= timedelta(seconds=max(1, record.vru_time))
            continue
        assert call.topic in ("pension", "family", "disability", "child_protection", "other")
        assert call.language == "en" if record.type == "PE" else call.language in ("et", "ru")
        if record.answered:
            assert call.outcome == "answered"  # served rows wait as long as needed
        elif call.outcome == "abandoned":
            assert call.ended_at - sim_call.queue_started_at == timedelta(seconds=record.q_time)
            prompt_before_enqueue = sim_call.queue_started_at - call.queue_entered_at
            assert timedelta(0) <= prompt_before_enqueue <= timedelta(seconds=10)
        else:
            assert call.outcome == "answered"

    answered = [c for c in calls if c.outcome == "answered"]
    assert len(answered) == simulated.answered >= expected.answered
    recordings = list(session.scalars(select(Recording)))
    assert len(recordings) == len(answered) >= 1
    assert {r.call_sid for r in recordings} == {c.call_sid for c in answered}
    assert all(r.status == "completed" and r.channels == 2 for r in recordings)

    agents = list(session.scalars(select(Agent)))
    servers = {r.server for r in read_records(DEFAULT_DATA, day) if r.has_server}
    assert servers <= {a.name for a in agents}
    assert all(a.current_call_id is None for a in agents)
    assert all(a.state in ("offline", "available", "wrap_up") for a in agents)
    assert sum(a.calls_answered for a in result.agents) == len(answered)


def test_flask_simulate_prints_input_and_simulated_figures(loaded_app, session):
    limit = 30
    day, rows = _first_calls(limit)
    expected = day_figures(rows)
    out = loaded_app.test_cli_runner().invoke(args=["simulate", "--limit", str(limit), "--seed", "3"])
    assert out.exit_code == 0, out.output
    assert f"Simulated {day.isoformat()} ({day.strftime('%A')})" in out.output
    assert f"calls placed         {limit}" in out.output
    assert "errors               0 (expected 0)" in out.output
    offered = len(list(session.scalars(select(Call).where(Call.queue_entered_at.is_not(None)))))
    assert offered == expected.offered
    assert f"  {'offered':28}{expected.offered:>12}{offered:>12}" in out.output
    assert f"  {'IVR-only (hung up in IVR)':28}{expected.ivr_only:>12}" in out.output
    assert "HOURS_ALWAYS_OPEN" in out.output
    assert f"flask --app app report --from {day} --to {day}" in out.output


def test_flask_simulate_rejects_a_day_missing_from_the_file(loaded_app):
    out = loaded_app.test_cli_runner().invoke(args=["simulate", "--day", "1999-10-01"])
    assert out.exit_code != 0
    assert "no records on 1999-10-01 (the file has 1999-10-25 to 1999-10-28)" in out.output


def test_agent_shifts_split_at_breaks():
    served = [
        row("AA0101", 1, 0, 1, "PS", 991025, "9:00:00", "9:00:05", 5, "9:00:05", "9:00:10", 5,
            "AGENT", "9:00:10", "9:05:00", 290, "DANA"),
        # 4 min later: same segment
        row("AA0101", 2, 0, 1, "PS", 991025, "9:08:50", "9:08:55", 5, "9:08:55", "9:09:00", 5,
            "AGENT", "9:09:00", "9:12:00", 180, "DANA"),
        # 48 min later: a break, then a new segment
        row("AA0101", 3, 0, 1, "PS", 991025, "9:59:50", "9:59:55", 5, "9:59:55", "10:00:00", 5,
            "AGENT", "10:00:00", "10:03:00", 180, "DANA"),
    ]
    records = list(parse_lines([HEADER] + served))
    local = lambda h, m: local_to_utc(datetime(1999, 10, 25, h, m))  # noqa: E731
    shifts = agent_shifts(records, break_gap=600)
    assert [(s.name, s.start, s.end) for s in shifts] == [
        ("DANA", local(8, 59) + timedelta(seconds=10), local(9, 12)),
        ("DANA", local(9, 59), local(10, 3)),
    ]
    whole = agent_shifts(records, break_gap=float("inf"))
    assert [(s.start, s.end) for s in whole] == [(local(8, 59) + timedelta(seconds=10), local(10, 3))]


def test_work_conserving_after_wrap_up_timers_in_simulation(loaded_app, session):
    """Wrap-up ends on the service's timer and `flask worker` (waking for the next timer)
    offers the agent a waiting caller: no free agent waits for an offer, in virtual time.
    Without the worker rounds the same replay leaves agents idle while callers wait."""
    from simulator.cli import run_simulation

    options = Options(seed=5, wrap_up=30, server_wrap_up=True)
    with loaded_app.app_context():
        result, _, _ = run_simulation(DEFAULT_DATA, None, limit=150, options=options)
    assert result.errors == [] and result.anomalies == []
    assert result.worker_rounds > 0 and len(result.offer_delays) >= 100
    assert max(result.offer_delays) < 1.0
    agents = list(session.scalars(select(Agent)))
    assert all(a.current_call_id is None for a in agents)


def test_offer_delays_show_an_idle_agent_when_no_worker_runs(loaded_app, session, monkeypatch):
    from simulator.cli import run_simulation
    from simulator.engine import Simulation

    monkeypatch.setattr(Simulation, "worker_round", lambda self: None)
    options = Options(seed=5, wrap_up=30, server_wrap_up=True)
    with loaded_app.app_context():
        result, _, _ = run_simulation(DEFAULT_DATA, None, limit=150, options=options)
    assert result.errors == []
    assert max(result.offer_delays) >= 1.0  # the hold loop's next request found the agent
