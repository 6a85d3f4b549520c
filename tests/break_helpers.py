"""Helpers for the hostile-review regression tests (test_hostile_acd.py): invariants and common flows."""
from __future__ import annotations

import logging
from datetime import date

import yaml
from sqlalchemy import func, select

from ivr.models import Call
from routing.models import Agent, Callback, QueueEntry
from tests.conftest import PUBLIC_BASE, SAMPLE_CONFIG, Caller, load_yaml
from tests.twiml import parse, verbs

A_NUMBER, B_NUMBER = "+37251111111", "+37252222222"


def token(app, role, agent=None):
    args = ["tokens", "create", "--role", role] + (["--agent", agent] if agent else [])
    return app.test_cli_runner().invoke(args=args).output.strip()


def bearer(app, role="admin", agent=None):
    return {"Authorization": f"Bearer {token(app, role, agent)}"}


def set_state(app, client, name, state, **extra):
    tok = app.extensions.setdefault("_test_admin_token", token(app, "admin"))
    r = client.put(f"/api/agents/{name}/state", json={"state": state, **extra},
                   headers={"Authorization": f"Bearer {tok}"})
    assert r.status_code == 200, r.get_json()


def queue(caller, language="3", topic="2"):
    caller.post("/twilio/voice")
    caller.post("/twilio/ivr/language?attempt=1", Digits=language)
    return parse(caller.post("/twilio/ivr/topic?attempt=1", Digits=topic))


def ask_for_callback(caller, hang_up=True):
    assert verbs(parse(caller.post("/twilio/queue/key", Digits="1"))) == ["Leave"]
    offer = parse(caller.post("/twilio/queue/after", QueueResult="leave"))
    assert verbs(offer) == ["Gather", "Redirect"], verbs(offer)
    done = parse(caller.post(offer[0].get("action"), Digits="1"))
    assert done[0].text.startswith("Thank you."), done[0].text
    if hang_up:
        caller.post("/twilio/status", CallStatus="completed")


def call_row(app, sid):
    with app.extensions["db_sessionmaker"]() as s:
        return s.scalar(select(Call).where(Call.call_sid == sid))


def agent_row(app, name):
    with app.extensions["db_sessionmaker"]() as s:
        return s.scalar(select(Agent).where(Agent.name == name))


def callbacks_all(app):
    with app.extensions["db_sessionmaker"]() as s:
        return list(s.scalars(select(Callback).order_by(Callback.id)))


def entries(app):
    with app.extensions["db_sessionmaker"]() as s:
        return list(s.scalars(select(QueueEntry).order_by(QueueEntry.id)))


def worker(app):
    r = app.test_cli_runner().invoke(args=["worker", "--once"])
    assert r.exit_code == 0, r.output
    return r.output


def load(app, tmp_path, change):
    document = load_yaml(SAMPLE_CONFIG)
    change(document)
    path = tmp_path / "line.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    r = app.test_cli_runner().invoke(args=["config", "load", str(path)])
    assert r.exit_code == 0, r.output
    app.extensions.get("line_config_cache", {}).clear()


def invariants(app) -> list[str]:
    """Return a list of violated invariants (empty = fine)."""
    problems = []
    with app.extensions["db_sessionmaker"]() as s:
        calls = {c.id: c for c in s.scalars(select(Call))}
        ents = list(s.scalars(select(QueueEntry)))
        by_call = {}
        for e in ents:
            by_call.setdefault(e.call_id, []).append(e)
        cbs = list(s.scalars(select(Callback)))
        for c in calls.values():
            n = len(by_call.get(c.id, []))
            if c.status in ("queued", "callback") and n != 1:
                problems.append(f"call {c.call_sid} {c.status} has {n} entries")
            if c.status == "ended" and n:
                problems.append(f"ended call {c.call_sid} still has an entry")
        for e in ents:
            c = calls[e.call_id]
            if c.status not in ("queued", "connecting", "callback"):
                problems.append(f"entry for call {c.call_sid} in status {c.status}")
        for a in s.scalars(select(Agent)):
            if a.state == "offered":
                e = s.scalar(select(QueueEntry).where(QueueEntry.agent_id == a.id))
                if e is None or e.state != "offered" or e.call_id != a.current_call_id:
                    problems.append(f"agent {a.name} offered with no ringing entry "
                                    f"(call {a.current_call_id})")
            if a.state in ("busy",) and a.current_call_id is None:
                problems.append(f"agent {a.name} busy with no call")
            if a.current_call_id is not None:
                c = calls.get(a.current_call_id)
                if c is not None and c.status == "ended":
                    problems.append(f"agent {a.name} ({a.state}) holds ended call {c.call_sid}")
        open_numbers = {}
        for cb in cbs:
            c = calls[cb.call_id]
            if cb.state in ("pending",) and len(by_call.get(c.id, [])) != 1:
                problems.append(f"pending callback {cb.id} without a queue entry")
            if cb.state in ("pending", "dialing", "connected"):
                open_numbers.setdefault(cb.number, []).append(cb.id)
            if cb.state in ("pending", "dialing", "connected") and c.status == "ended":
                problems.append(f"open callback {cb.id} ({cb.state}) but its call ended")
            if cb.state in ("done", "failed", "canceled") and c.status != "ended":
                problems.append(f"closed callback {cb.id} but call {c.status}")
        for number, ids in open_numbers.items():
            if len(ids) > 1:
                problems.append(f"number {number} has {len(ids)} open callbacks {ids}")
    return problems


def fallback_errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if "answering with a safe fallback" in r.getMessage()]


def report(app, day=date(2026, 12, 1)):
    from reporting.report import build_report
    with app.extensions["db_sessionmaker"]() as s:
        return build_report(s, day, day, "Europe/Tallinn", 20)
