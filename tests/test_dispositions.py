"""Dispositions and caller feedback through the agent API; the supervisors' feedback list."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from ivr.models import Call, CallFeedback
from reporting.dispositions import (DISPOSITIONS, FEEDBACK_CATEGORIES, DispositionError,
                                    check_feedback)
from routing.agents import set_state
from routing.models import Agent, AgentStateChange, Queue
from tests.conftest import Caller

SID = "CA" + "d" * 32


def _token(app, role: str, agent: str | None = None) -> str:
    args = ["tokens", "create", "--role", role] + (["--agent", agent] if agent else [])
    result = app.test_cli_runner().invoke(args=args)
    assert result.exit_code == 0, result.output
    return result.output.strip()


def _auth(app, role: str, agent: str | None = None) -> dict:
    return {"Authorization": f"Bearer {_token(app, role, agent)}"}


def _agent_id(app, name: str) -> int:
    with app.extensions["db_sessionmaker"]() as s:
        return s.scalar(select(Agent.id).where(Agent.name == name))


def _logged_call(app, clock, sid: str = SID, *, agent: str | None = "Mari",
                 queue: str = "et.pension", on_it: tuple[tuple[str, str], ...] = ()) -> int:
    """A finished, answered call in the log handled by ``agent``; ``on_it`` adds state-history
    rows (agent name, state) for other agents on the same call."""
    now = clock()
    with app.extensions["db_sessionmaker"]() as s:
        call = Call(call_sid=sid, from_number="+37251234567", status="ended", outcome="answered",
                    queue_id=s.scalar(select(Queue.id).where(Queue.name == queue)),
                    agent_id=s.scalar(select(Agent.id).where(Agent.name == agent)) if agent else None,
                    arrived_at=now - timedelta(seconds=300), queue_entered_at=now - timedelta(seconds=280),
                    answered_at=now - timedelta(seconds=260), ended_at=now - timedelta(seconds=60),
                    talk_seconds=200, last_event_at=now)
        s.add(call)
        s.flush()
        for name, state in on_it:
            s.add(AgentStateChange(agent_id=s.scalar(select(Agent.id).where(Agent.name == name)),
                                   state=state, call_id=call.id, at=now - timedelta(seconds=250)))
        s.commit()
        return call.id


def _call(app, sid: str = SID) -> Call:
    with app.extensions["db_sessionmaker"]() as s:
        return s.scalar(select(Call).where(Call.call_sid == sid))


def test_an_agent_records_the_outcome_of_their_call_and_recording_again_overwrites(loaded_app, clock):
    """Through the real call flow: Mari answers, the call ends, she records the outcome."""
    app = loaded_app
    client = app.test_client()
    with app.extensions["db_sessionmaker"]() as s:
        set_state(s, s.scalar(select(Agent).where(Agent.name == "Mari")), "available", clock())
        s.commit()
    caller = Caller(client, SID)
    caller.post("/twilio/voice")
    caller.post("/twilio/ivr/language?attempt=1", Digits="1")
    caller.post("/twilio/ivr/topic?attempt=1", Digits="1")
    caller.post(f"/twilio/agent/answer?call={SID}")
    clock.advance(90)
    caller.post("/twilio/dial/after", DialCallStatus="completed", DialCallDuration="90")
    mari = _auth(app, "agent", "Mari")

    first = client.put(f"/api/calls/{SID}/disposition", json={"disposition": "callback_promised"},
                       headers=mari)
    assert first.status_code == 200, first.get_json()
    assert first.get_json() == {"call": {"call_sid": SID, "disposition": "callback_promised",
                                         "disposition_at": clock().isoformat(),
                                         "disposition_agent": "Mari"}, "feedback": None}
    recorded_at = clock()
    clock.advance(30)
    again = client.post(f"/api/calls/{SID}/disposition", json={
        "disposition": "resolved", "feedback": {"category": "praise", "note": "  Very helpful  "}},
        headers=mari)
    assert again.status_code == 200, again.get_json()
    body = again.get_json()
    assert body["call"]["disposition"] == "resolved"
    assert body["call"]["disposition_at"] == clock().isoformat() != recorded_at.isoformat()
    assert body["feedback"]["category"] == "praise"
    assert body["feedback"]["note"] == "Very helpful"
    assert body["feedback"]["agent"] == "Mari" and body["feedback"]["reviewed"] is False
    call = _call(app)
    assert (call.disposition, call.disposition_agent_id, call.disposition_at) == (
        "resolved", _agent_id(app, "Mari"), clock())


def test_who_may_record_an_outcome(loaded_app, clock):
    app = loaded_app
    client = app.test_client()
    # Mari answered it; Jaan talked to the caller first (a transfer to a queue); Kadri's phone
    # only rang (a missed offer): she did not handle it.
    _logged_call(app, clock, on_it=(("Jaan", "busy"), ("Kadri", "offered")))
    url = f"/api/calls/{SID}/disposition"
    body = {"disposition": "transferred"}
    assert client.put(url, json=body, headers=_auth(app, "agent", "Jaan")).status_code == 200
    assert _call(app).disposition_agent_id == _agent_id(app, "Jaan")
    refused = client.put(url, json=body, headers=_auth(app, "agent", "Kadri"))
    assert refused.status_code == 403 and "handled" in refused.get_json()["error"]
    assert client.put(url, json=body, headers=_auth(app, "agent", "Olga")).status_code == 403
    assert client.post(f"/api/calls/{SID}/feedback", json={"category": "wish"},
                       headers=_auth(app, "agent", "Olga")).status_code == 403
    # A supervisor may record it for any call; it is then nobody's agent.
    by_supervisor = client.put(url, json={"disposition": "escalated"},
                               headers=_auth(app, "supervisor"))
    assert by_supervisor.status_code == 200
    assert by_supervisor.get_json()["call"]["disposition_agent"] is None
    assert _call(app).disposition == "escalated"
    for role in ("qa", "reporting", "admin"):
        response = client.put(url, json=body, headers=_auth(app, role))
        assert response.status_code == 403, role
        assert client.post(f"/api/calls/{SID}/feedback", json={"category": "wish"},
                           headers=_auth(app, role)).status_code == 403
    assert client.put(url, json=body).status_code == 401
    assert client.put(url, json=body, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert _call(app).disposition == "escalated"


def test_an_unknown_call_is_404(loaded_app, clock):
    client = loaded_app.test_client()
    _logged_call(loaded_app, clock)
    for auth in (_auth(loaded_app, "agent", "Mari"), _auth(loaded_app, "supervisor")):
        for sid in ("CA" + "0" * 32, "x" * 300, "CA%00x"):
            response = client.put(f"/api/calls/{sid}/disposition", json={"disposition": "resolved"},
                                  headers=auth)
            assert response.status_code == 404, (sid, response.get_json())
            assert "no call" in response.get_json()["error"]
            assert client.post(f"/api/calls/{sid}/feedback", json={"category": "thanks"},
                               headers=auth).status_code == 404


@pytest.mark.parametrize("kwargs, field, words", [
    ({"data": "resolved"}, "body", "JSON object"),
    ({"json": ["resolved"]}, "body", "JSON object"),
    ({"json": {}}, "disposition", "must be one of"),
    ({"json": {"disposition": "RESOLVED"}}, "disposition", "must be one of"),
    ({"json": {"disposition": 1}}, "disposition", "must be one of"),
    ({"json": {"disposition": "resolved", "feedback": "complaint"}}, "feedback", "JSON object"),
    ({"json": {"disposition": "resolved", "feedback": {"category": "rant"}}}, "feedback.category",
     "complaint, suggestion, wish, praise, thanks"),
    ({"json": {"disposition": "resolved", "feedback": {"category": "wish", "note": 5}}},
     "feedback.note", "string"),
    ({"json": {"disposition": "resolved", "feedback": {"category": "wish", "note": "x" * 501}}},
     "feedback.note", "at most 500"),
    ({"json": {"disposition": "resolved", "feedback": {"category": "wish", "note": "a\x00b"}}},
     "feedback.note", "NUL"),
])
def test_bad_input_is_400_naming_the_field_and_nothing_is_stored(loaded_app, clock, kwargs, field,
                                                                  words):
    client = loaded_app.test_client()
    _logged_call(loaded_app, clock)
    response = client.put(f"/api/calls/{SID}/disposition", headers=_auth(loaded_app, "agent", "Mari"),
                          **kwargs)
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["field"] == field
    assert words in response.get_json()["error"]
    assert _call(loaded_app).disposition is None
    with loaded_app.extensions["db_sessionmaker"]() as s:
        assert s.scalar(select(CallFeedback.id)) is None


def test_feedback_in_its_own_request_a_retry_is_not_stored_twice(loaded_app, clock):
    client = loaded_app.test_client()
    _logged_call(loaded_app, clock)
    mari = _auth(loaded_app, "agent", "Mari")
    url = f"/api/calls/{SID}/feedback"
    created = client.post(url, json={"category": "complaint", "note": "x" * 500}, headers=mari)
    assert created.status_code == 201, created.get_json()
    retried = client.post(url, json={"category": "complaint", "note": "x" * 500}, headers=mari)
    assert retried.status_code == 200
    assert retried.get_json()["feedback"]["id"] == created.get_json()["feedback"]["id"]
    other = client.post(url, json={"category": "suggestion"}, headers=mari)
    assert other.status_code == 201 and other.get_json()["feedback"]["note"] == ""
    too_long = client.post(url, json={"category": "wish", "note": "y" * 501}, headers=mari)
    assert too_long.status_code == 400
    assert too_long.get_json() == {"field": "note", "error": "the note is 501 characters long; "
                                                             "at most 500 are allowed"}
    assert client.post(url, json={"note": "no category"}, headers=mari).status_code == 400
    assert client.post(url, data="{", content_type="application/json",
                       headers=mari).status_code == 400
    assert _call(loaded_app).disposition is None  # feedback alone records no disposition
    with loaded_app.extensions["db_sessionmaker"]() as s:
        assert sorted(s.scalars(select(CallFeedback.category))) == ["complaint", "suggestion"]


def _feedback_fixture(app, clock) -> dict[str, int]:
    """Five feedback items on three calls over three days; returns their ids by label."""
    client = app.test_client()
    start = clock()
    ids = {}
    plan = [("CA" + "1" * 32, "Mari", "et.pension", "complaint", "rude hold music", 0),
            ("CA" + "1" * 32, "Mari", "et.pension", "wish", "evening hours", 0),
            ("CA" + "2" * 32, "Jaan", "et.disability", "praise", "", 1),
            ("CA" + "3" * 32, "Kadri", "et.family", "complaint", "waited long", 2),
            ("CA" + "3" * 32, "Kadri", "et.family", "thanks", "", 2)]
    for sid, agent, queue, category, note, day in plan:
        clock.now = start + timedelta(days=day, minutes=len(ids))
        if _call(app, sid) is None:
            _logged_call(app, clock, sid, agent=agent, queue=queue)
            assert client.put(f"/api/calls/{sid}/disposition", json={"disposition": "resolved"},
                              headers=_auth(app, "agent", agent)).status_code == 200
        response = client.post(f"/api/calls/{sid}/feedback", json={"category": category, "note": note},
                               headers=_auth(app, "agent", agent))
        assert response.status_code == 201
        ids[f"{category}:{sid[2]}"] = response.get_json()["feedback"]["id"]
    clock.now = start + timedelta(days=3)
    return ids


def test_supervisors_list_feedback_with_the_call_attached_filtered_and_paginated(loaded_app, clock):
    app = loaded_app
    client = app.test_client()
    start = clock()
    ids = _feedback_fixture(app, clock)
    supervisor = _auth(app, "supervisor")
    listed = client.get("/api/feedback", headers=supervisor)
    assert listed.status_code == 200
    body = listed.get_json()
    assert (body["total"], body["page"], body["per_page"], body["pages"]) == (5, 1, 50, 1)
    # Newest first, each with its call.
    assert [f["id"] for f in body["feedback"]] == [ids["thanks:3"], ids["complaint:3"],
                                                   ids["praise:2"], ids["wish:1"], ids["complaint:1"]]
    item = body["feedback"][-1]
    assert item["category"] == "complaint" and item["note"] == "rude hold music"
    assert item["agent"] == "Mari" and item["reviewed"] is False and item["reviewed_by"] is None
    call = item["call"]
    assert call["call_sid"] == "CA" + "1" * 32
    assert (call["queue"], call["agent"], call["disposition"], call["disposition_agent"]) == (
        "et.pension", "Mari", "resolved", "Mari")
    assert call["answered_at"] == (start - timedelta(seconds=260)).isoformat()
    assert call["ended_at"] and call["arrived_at"] and call["queue_entered_at"]

    qa = _auth(app, "qa")
    complaints = client.get("/api/feedback?category=complaint", headers=qa).get_json()
    assert [f["id"] for f in complaints["feedback"]] == [ids["complaint:3"], ids["complaint:1"]]
    day2 = (start + timedelta(days=1)).isoformat()
    day3 = (start + timedelta(days=2)).isoformat()
    ranged = client.get("/api/feedback", headers=qa, query_string={"from": day2, "to": day3})
    assert [f["id"] for f in ranged.get_json()["feedback"]] == [ids["praise:2"]]
    # An unencoded '+' of the offset arrives as a space; still understood.
    spaced = client.get(f"/api/feedback?from={(start + timedelta(days=1)).strftime('%Y-%m-%dT%H:%M:%S')}"
                        f"+00:00", headers=qa)
    assert spaced.status_code == 200 and spaced.get_json()["total"] == 3
    page2 = client.get("/api/feedback?per_page=2&page=2", headers=qa).get_json()
    assert (page2["total"], page2["pages"]) == (5, 3)
    assert [f["id"] for f in page2["feedback"]] == [ids["praise:2"], ids["wish:1"]]
    assert client.get("/api/feedback?per_page=2&page=9", headers=qa).get_json()["feedback"] == []

    for role, agent in (("agent", "Mari"), ("reporting", None), ("admin", None)):
        assert client.get("/api/feedback", headers=_auth(app, role, agent)).status_code == 403
    assert client.get("/api/feedback").status_code == 401
    for query, field in (("category=rant", "category"), ("reviewed=maybe", "reviewed"),
                         ("from=yesterday", "from"), ("to=2026-12-01T10:00:00", "to"),
                         ("from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z", "from"),
                         ("page=0", "page"), ("page=x", "page"), ("per_page=201", "per_page"),
                         ("per_page=99999999999999999999", "per_page"),
                         ("from=9999-12-31T23:59:59-14:00", "from")):
        response = client.get(f"/api/feedback?{query}", headers=qa)
        assert response.status_code == 400, query
        assert response.get_json()["field"] == field, query


def test_reviewing_feedback_marks_who_and_when_once(loaded_app, clock):
    app = loaded_app
    client = app.test_client()
    ids = _feedback_fixture(app, clock)
    token = _token(app, "supervisor")
    with app.extensions["db_sessionmaker"]() as s:  # the token's label names the person
        from admin.auth import hash_token
        from admin.models import ApiToken
        row = s.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
        row.label = "Tiina (shift lead)"
        s.commit()
        token_id = row.id
    supervisor = {"Authorization": f"Bearer {token}"}
    target = ids["complaint:1"]
    reviewed = client.post(f"/api/feedback/{target}/review", headers=supervisor)
    assert reviewed.status_code == 200, reviewed.get_json()
    item = reviewed.get_json()["feedback"]
    assert item["reviewed"] is True and item["reviewed_at"] == clock().isoformat()
    assert item["reviewed_by"] == f"Tiina (shift lead) (supervisor token {token_id})"
    first_time = clock()
    clock.advance(60)
    again = client.post(f"/api/feedback/{target}/review", headers=_auth(app, "qa"))
    assert again.status_code == 200
    assert again.get_json()["feedback"]["reviewed_at"] == first_time.isoformat()
    assert again.get_json()["feedback"]["reviewed_by"].startswith("Tiina")

    qa = _auth(app, "qa")
    done = client.get("/api/feedback?reviewed=true", headers=qa).get_json()["feedback"]
    assert [f["id"] for f in done] == [target]
    assert done[0]["reviewed_by"].startswith("Tiina")
    open_items = client.get("/api/feedback?reviewed=false", headers=qa).get_json()
    assert open_items["total"] == 4 and target not in [f["id"] for f in open_items["feedback"]]
    assert client.get("/api/feedback?reviewed=false&category=complaint",
                      headers=qa).get_json()["total"] == 1

    for missing in (999, 0, 2**31, 10**30):
        assert client.post(f"/api/feedback/{missing}/review", headers=qa).status_code == 404
    assert client.post(f"/api/feedback/{ids['wish:1']}/review",
                       headers=_auth(app, "agent", "Mari")).status_code == 403
    assert client.post(f"/api/feedback/{ids['wish:1']}/review",
                       headers=_auth(app, "admin")).status_code == 403


def test_the_domain_rules_name_their_values():
    assert DISPOSITIONS == ("resolved", "callback_promised", "transferred", "referred", "escalated")
    assert FEEDBACK_CATEGORIES == ("complaint", "suggestion", "wish", "praise", "thanks")
    assert check_feedback("wish", None) == ("wish", "")
    assert check_feedback("wish", " " + "z" * 500 + " ") == ("wish", "z" * 500)
    with pytest.raises(DispositionError) as error:
        check_feedback("wish", "z" * 501)
    assert error.value.field == "note"
