"""The recommendation index from stored answers: the worked example, 10,000 generated answers
against an independent count, the API and `flask report --nps`."""
from __future__ import annotations

import random
from datetime import date, datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, select

from ivr.models import Call
from reporting.nps_report import nps_report
from routing.models import Agent, Queue
from survey.models import SurveyResponse
from survey.nps import nps

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)


def _store(app, answers: list[dict]) -> None:
    """Insert one call and one answer per item (score, and optional queue, agent, language,
    channel, resolved, received_at)."""
    with app.extensions["db_sessionmaker"]() as s:
        s.execute(insert(Call), [{"call_sid": f"CA{i:032x}", "arrived_at": T0, "last_event_at": T0,
                                  "status": "ended", "priority": 0, "no_input_count": 0,
                                  "invalid_input_count": 0, "closed_by_sweep": False,
                                  "source": "live", "ivr_struggle": False, "escalated": False}
                                 for i in range(len(answers))])
        ids = dict(s.execute(select(Call.call_sid, Call.id)).all())
        s.execute(insert(SurveyResponse), [
            {"call_id": ids[f"CA{i:032x}"], "score": a["score"], "channel": a.get("channel", "ivr"),
             "queue_id": a.get("queue_id"), "agent_id": a.get("agent_id"),
             "language": a.get("language", "et"), "resolved": a.get("resolved"),
             "received_at": a.get("received_at", T0)} for i, a in enumerate(answers)])
        s.commit()


def test_10_10_9_8_7_6_0_give_nps_14_3_with_n_7(loaded_app):
    scores = [10, 10, 9, 8, 7, 6, 0]
    _store(loaded_app, [{"score": s} for s in scores])
    with loaded_app.extensions["db_sessionmaker"]() as s:
        report = nps_report(s, date(2026, 12, 1), date(2026, 12, 1))
    total = report.total
    assert (total.n, total.promoters, total.passives, total.detractors) == (7, 3, 2, 2)
    assert round(total.nps, 1) == 14.3 and total.as_dict()["nps"] == 14.3
    assert round(nps(scores).score, 1) == 14.3


def test_nps_over_10000_generated_answers_equals_an_independent_count(loaded_app):
    rng = random.Random(20261201)
    with loaded_app.extensions["db_sessionmaker"]() as s:
        queues = {q.name: q.id for q in s.scalars(select(Queue))}
        agents = {a.name: a.id for a in s.scalars(select(Agent))}
    queue_names, agent_names = sorted(queues)[:6], sorted(agents)
    answers = []
    for _ in range(10_000):
        answers.append({"score": rng.choice(range(11)), "language": rng.choice(["et", "ru", "en"]),
                        "queue": rng.choice(queue_names), "agent": rng.choice(agent_names),
                        "resolved": rng.choice([True, False, None]),
                        # across three local days, some right at local midnight
                        "received_at": T0 - timedelta(hours=8) + timedelta(
                            seconds=rng.randrange(3 * 86400))})
    _store(loaded_app, [dict(a, queue_id=queues[a["queue"]], agent_id=agents[a["agent"]])
                        for a in answers])

    def independent(rows):
        n = len(rows)
        p = sum(1 for r in rows if r["score"] in (9, 10))
        d = sum(1 for r in rows if r["score"] in (0, 1, 2, 3, 4, 5, 6))
        return n, (p * 100 - d * 100) / n if n else None

    with loaded_app.extensions["db_sessionmaker"]() as s:
        total = nps_report(s, date(2026, 11, 30), date(2026, 12, 4)).total
        by = nps_report(s, date(2026, 11, 30), date(2026, 12, 4), interval="day",
                        dimensions=("language", "queue", "agent"))
    n, expected = independent(answers)
    assert (total.n, total.nps) == (n, pytest.approx(expected, abs=1e-9))
    resolved = [a for a in answers if a["resolved"] is not None]
    assert total.survey_fcr == pytest.approx(sum(a["resolved"] for a in resolved) / len(resolved))
    tallinn = __import__("zoneinfo").ZoneInfo("Europe/Tallinn")
    groups: dict[tuple, list] = {}
    for a in answers:
        key = (a["received_at"].astimezone(tallinn).date().isoformat(), a["language"], a["queue"],
               a["agent"])
        groups.setdefault(key, []).append(a)
    got = {(r.period, r.dims["language"], r.dims["queue"], r.dims["agent"]): r for r in by.rows}
    assert set(got) == set(groups)
    for key, rows in groups.items():
        count, value = independent(rows)
        assert got[key].n == count and got[key].nps == pytest.approx(value, abs=1e-9)


def _token(app, role):
    extra = ["--agent", "Mari"] if role == "agent" else []
    result = app.test_cli_runner().invoke(args=["tokens", "create", "--role", role] + extra)
    assert result.exit_code == 0, result.output
    return {"Authorization": f"Bearer {result.output.strip()}"}


def test_api_reports_nps_and_lists_low_scores_for_spot_checks(loaded_app):
    with loaded_app.extensions["db_sessionmaker"]() as s:
        mari = s.scalar(select(Agent.id).where(Agent.name == "Mari"))
        queue = s.scalar(select(Queue.id).where(Queue.name == "et.family"))
    _store(loaded_app, [{"score": sc, "agent_id": mari, "queue_id": queue, "resolved": sc > 5}
                        for sc in (10, 10, 9, 8, 7, 6, 0)])
    client = loaded_app.test_client()
    for role in ("admin", "supervisor", "qa", "reporting"):
        response = client.get("/api/reports/nps?from=2026-12-01&to=2026-12-01&by=agent,queue",
                              headers=_token(loaded_app, role))
        assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["total"]["nps"] == 14.3 and body["total"]["n"] == 7
    assert body["rows"] == [{"period": None, "agent": "Mari", "queue": "et.family", "n": 7,
                             "promoters": 3, "passives": 2, "detractors": 2, "nps": 14.3,
                             "resolved_answers": 7, "resolved_yes": 6, "survey_fcr": 0.8571}]
    assert client.get("/api/reports/nps?from=2026-12-01&to=2026-12-01",
                      headers=_token(loaded_app, "agent")).status_code == 403
    assert client.get("/api/reports/nps?from=x&to=2026-12-01",
                      headers=_token(loaded_app, "qa")).status_code == 400
    low = client.get("/api/surveys/low-scores?from=2026-12-01&to=2026-12-01",
                     headers=_token(loaded_app, "qa")).get_json()["low_scores"]
    assert sorted(r["score"] for r in low) == [0, 6]
    assert all(r["call"]["call_sid"].startswith("CA") and r["agent"] == "Mari" for r in low)
    assert "from_number" not in low[0]["call"]


def test_flask_report_nps(loaded_app):
    _store(loaded_app, [{"score": sc, "language": lang} for sc, lang in
                        [(10, "et"), (10, "ru"), (9, "et"), (8, "en"), (7, "et"), (6, "ru"), (0, "et")]])
    result = loaded_app.test_cli_runner().invoke(args=[
        "report", "--nps", "--from", "2026-12-01", "--to", "2026-12-01", "--by", "language"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[-1].split("\t")[:6] == ["total", "7", "3", "2", "2", "+14.3"]
    assert any(line.startswith("et\t4\t") for line in lines)
