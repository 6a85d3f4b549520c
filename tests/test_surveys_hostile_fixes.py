"""The fixes of the hostile review (tests/test_surveys_hostile.py), from the other side: an
opt-out raced by the planner or by a live worker, an answer cancelling the call's unsent SMS,
Unicode in replies, spoken numbers outside 0–10, the NPS API's parameter limits."""
from __future__ import annotations


import pytest
from sqlalchemy import select

import survey.outbox as outbox
from survey.answers import is_stop, parse_sms_score, parse_spoken_score, store_score
from survey.models import SmsOutbox, SurveyInvitation, SurveyOptOut
from telephony.client import FakeTelephonyClient
from tests.test_surveys_hostile import _token
from tests.test_surveys_outbox import _queue, _rows, _send


def _opt_out(app, number: str, clock) -> None:
    with app.extensions["db_sessionmaker"]() as s:
        s.add(SurveyOptOut(number=number, opted_out_at=clock(), source="sms", body="STOP"))
        s.commit()


def _invitation_states(app) -> list[tuple[str, str | None]]:
    with app.extensions["db_sessionmaker"]() as s:
        return [(i.state, i.reason) for i in s.scalars(select(SurveyInvitation)
                                                        .order_by(SurveyInvitation.id))]


def test_a_message_queued_after_stop_is_canceled_at_its_claim_not_sent(loaded_app, clock):
    """plan_sms checked the number, then STOP committed before the outbox row did: opt_out
    could not cancel the row, the claim must refuse it."""
    [outbox_id] = _queue(loaded_app, clock, 1)
    _opt_out(loaded_app, _rows(loaded_app)[0].to_number, clock)
    client = FakeTelephonyClient()
    report = _send(loaded_app, client, clock)
    assert client.messages == [] and report.sent == []
    assert [r.state for r in _rows(loaded_app)] == ["canceled"]
    assert _invitation_states(loaded_app) == [("skipped", "opted_out")]
    assert _send(loaded_app, client, clock).sent == [] and client.messages == []


def test_stop_after_the_claim_and_before_the_provider_call_is_honoured(loaded_app, clock,
                                                                        monkeypatch):
    [outbox_id] = _queue(loaded_app, clock, 1)
    number = _rows(loaded_app)[0].to_number
    real_claim = outbox.claim

    def claim_then_stop(session, *args, **kwargs):
        token = real_claim(session, *args, **kwargs)
        session.commit()
        _opt_out(loaded_app, number, clock)  # STOP arrives while this worker holds the claim
        return token

    monkeypatch.setattr(outbox, "claim", claim_then_stop)
    client = FakeTelephonyClient()
    _send(loaded_app, client, clock)
    assert client.messages == []
    assert [r.state for r in _rows(loaded_app)] == ["canceled"]
    assert _invitation_states(loaded_app) == [("skipped", "opted_out")]


def test_stop_cancels_a_claimed_message_and_skips_its_invitation(loaded_app, clock):
    from survey.answers import opt_out

    [outbox_id] = _queue(loaded_app, clock, 1)
    number = _rows(loaded_app)[0].to_number
    with loaded_app.extensions["db_sessionmaker"]() as s:
        token = outbox.claim(s, outbox_id, clock(), 120)
        s.commit()
        assert opt_out(s, number, clock(), message_sid="SM1", body="STOP")
        s.commit()
        # the live worker's outcome is fenced off
        assert not outbox.mark_sent(s, outbox_id, token, "SM" + "9" * 32, clock())
        s.commit()
    assert [r.state for r in _rows(loaded_app)] == ["canceled"]
    assert _invitation_states(loaded_app) == [("skipped", "opted_out")]


def test_an_answer_cancels_the_calls_unsent_survey_sms(loaded_app, clock):
    [outbox_id] = _queue(loaded_app, clock, 1)
    with loaded_app.extensions["db_sessionmaker"]() as s:
        sms_invitation = s.scalar(select(SurveyInvitation))
        ivr = SurveyInvitation(call_id=sms_invitation.call_id, channel="ivr", state="offered",
                               caller_key=sms_invitation.caller_key, language="et", attempts=0,
                               created_at=clock())
        s.add(ivr)
        s.flush()
        assert store_score(s, ivr, 9, clock()) is not None
        s.commit()
    client = FakeTelephonyClient()
    assert _send(loaded_app, client, clock).sent == [] and client.messages == []
    assert [r.state for r in _rows(loaded_app)] == ["canceled"]
    assert sorted(_invitation_states(loaded_app)) == [("answered", None), ("skipped", "answered")]


@pytest.mark.parametrize("body, score", [("\u200b9", 9), ("１０", 10), ("9\u2009!", 9),
                                         ("\ufeff7\u200d", 7), ("-\u200b5", None)])
def test_scores_read_unicode_like_stop(body, score):
    assert parse_sms_score(body) == score


@pytest.mark.parametrize("body", ["ОТПИСАТЬСЯ", "lopeta", "Stopp.", "ST\u200bOP", "ｓｔｏｐ",
                                  "стоп 🙏", "СТОПП!"])
def test_more_stop_spellings(body):
    assert is_stop(body)


@pytest.mark.parametrize("body", ["stop calling me", "9", "стопка", "STOP 9"])
def test_not_stop(body):
    assert not is_stop(body)


@pytest.mark.parametrize("phrase, language, score", [
    ("ten", "en", 10), ("I'd say eight", "en", 8), ("десять", "ru", 10), ("7", "en", 7),
    ("twenty five", "en", None), ("five point five", "en", None), ("5.5", "en", None),
    ("-5", "en", None), ("сто", "ru", None), ("двадцать пять", "ru", None),
    ("минус пять", "ru", None), ("тысяча", "ru", None), ("negative two", "en", None)])
def test_spoken_scores(phrase, language, score):
    assert parse_spoken_score(phrase, language) == score


@pytest.mark.parametrize("query", [
    "from=2026-12-02&to=2026-12-01",
    "from=2026-12-01&to=2026-12-01&page=1000001",
    "from=1899-12-31&to=2026-12-01"])
def test_low_scores_parameter_limits(loaded_app, query):
    client = loaded_app.test_client()
    response = client.get(f"/api/surveys/low-scores?{query}", headers=_token(loaded_app, "qa"))
    assert response.status_code == 400, response.get_json()


@pytest.mark.parametrize("value", ["x" * 65, "et.family%01", "et.family%7f"])
def test_nps_filter_limits(loaded_app, value):
    client = loaded_app.test_client()
    response = client.get(f"/api/reports/nps?from=2026-12-01&to=2026-12-01&queue={value}",
                          headers=_token(loaded_app, "qa"))
    assert response.status_code == 400, response.get_json()


def test_the_calendar_bounds_themselves_are_accepted(loaded_app):
    client = loaded_app.test_client()
    headers = _token(loaded_app, "qa")
    for query in ("from=1900-01-01&to=1900-01-01", "from=2999-12-31&to=2999-12-31"):
        for path in ("/api/reports/nps", "/api/surveys/low-scores"):
            assert client.get(f"{path}?{query}", headers=headers).status_code == 200, (path, query)
