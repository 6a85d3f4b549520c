"""The survey SMS outbox: two workers never send one message twice, a killed worker's message
is sent once more and then reported, provider refusals are retried, status callbacks close
the residual window."""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import insert, select

from ivr.models import Call
from survey.models import SmsOutbox, SurveyInvitation
from survey.outbox import apply_status_callback, claim, send_due
from telephony.client import FakeTelephonyClient
from tests.conftest import PG_URL, PUBLIC_BASE, sign


def _queue(app, clock, count: int) -> list[int]:
    """``count`` calls with a queued SMS invitation and its pending outbox message each."""
    now = clock()
    with app.extensions["db_sessionmaker"]() as s:
        s.execute(insert(Call), [{"call_sid": f"CA{i:032x}", "arrived_at": now, "last_event_at": now,
                                  "status": "ended", "priority": 0, "no_input_count": 0,
                                  "invalid_input_count": 0, "closed_by_sweep": False,
                                  "source": "live", "ivr_struggle": False, "escalated": False,
                                  "caller_key": f"+3725{i:07d}"} for i in range(count)])
        calls = s.execute(select(Call.id, Call.caller_key).order_by(Call.id)).all()
        s.execute(insert(SurveyInvitation), [
            {"call_id": cid, "channel": "sms", "state": "queued", "caller_key": key,
             "language": "et", "attempts": 0, "created_at": now} for cid, key in calls])
        invitations = s.execute(select(SurveyInvitation.id, SurveyInvitation.caller_key)
                                .order_by(SurveyInvitation.id)).all()
        s.execute(insert(SmsOutbox), [
            {"invitation_id": iid, "idempotency_key": f"key{iid:029d}", "to_number": key,
             "from_number": "+3726121360", "body": "0–10?", "state": "pending", "attempts": 0,
             "lost_claims": 0, "next_attempt_at": now, "created_at": now}
            for iid, key in invitations])
        s.commit()
        return list(s.scalars(select(SmsOutbox.id).order_by(SmsOutbox.id)))


def _send(app, client, clock, **kwargs):
    with app.extensions["db_sessionmaker"]() as s:
        return send_due(s, client, clock, status_callback=lambda key: f"{PUBLIC_BASE}/cb?key={key}",
                        **kwargs)


def _rows(app) -> list[SmsOutbox]:
    with app.extensions["db_sessionmaker"]() as s:
        return list(s.scalars(select(SmsOutbox).order_by(SmsOutbox.id)))


def test_a_worker_killed_after_its_claim_is_retried_once_then_reported(loaded_app, clock):
    [outbox_id] = _queue(loaded_app, clock, 1)
    with loaded_app.extensions["db_sessionmaker"]() as s:
        assert claim(s, outbox_id, clock(), 120) is not None  # ... and the worker dies here
        s.commit()
    client = FakeTelephonyClient()
    assert _send(loaded_app, client, clock).sent == []  # leased: nobody else touches it
    clock.advance(121)
    report = _send(loaded_app, client, clock)
    assert report.sent == [outbox_id] and len(client.messages) == 1
    [row] = _rows(loaded_app)
    assert (row.state, row.attempts, row.lost_claims, row.provider_sid) == (
        "sent", 2, 1, client.messages[0]["sid"])


def test_a_second_lost_claim_is_reported_not_sent_again(loaded_app, clock):
    [outbox_id] = _queue(loaded_app, clock, 1)
    for _ in range(2):  # two workers die one after the other
        with loaded_app.extensions["db_sessionmaker"]() as s:
            assert claim(s, outbox_id, clock(), 120) is not None
            s.commit()
        clock.advance(121)
    client = FakeTelephonyClient()
    report = _send(loaded_app, client, clock)
    assert report.unknown == [outbox_id] and client.messages == []
    [row] = _rows(loaded_app)
    assert row.state == "unknown"
    result = loaded_app.test_cli_runner().invoke(args=["surveys", "send"])
    assert result.exit_code == 0, result.output
    assert f"UNKNOWN\toutbox {outbox_id}" in result.output


def test_the_status_callback_records_a_send_the_dead_worker_never_marked(loaded_app, clock):
    [outbox_id] = _queue(loaded_app, clock, 1)
    with loaded_app.extensions["db_sessionmaker"]() as s:
        claim(s, outbox_id, clock(), 120)
        s.commit()
        key = s.get(SmsOutbox, outbox_id).idempotency_key
    # The provider accepted the message, the worker died before committing 'sent';
    # the provider's status callback arrives through the signed webhook.
    url = PUBLIC_BASE + f"/twilio/sms/status?key={key}"
    data = {"MessageSid": "SM" + "7" * 32, "MessageStatus": "sent", "AccountSid": "AC" + "0" * 32}
    client = loaded_app.test_client()
    response = client.post(f"/twilio/sms/status?key={key}", data=data,
                           headers={"X-Twilio-Signature": sign(url, data)})
    assert response.status_code == 200
    clock.advance(121)
    fake = FakeTelephonyClient()
    assert _send(loaded_app, fake, clock).sent == [] and fake.messages == []
    [row] = _rows(loaded_app)
    assert (row.state, row.provider_sid) == ("sent", "SM" + "7" * 32)
    with loaded_app.extensions["db_sessionmaker"]() as s:
        assert not apply_status_callback(s, key, "SM" + "8" * 32, "delivered", clock())


def test_provider_refusals_are_retried_with_a_doubling_delay_then_fail(loaded_app, clock):
    [outbox_id] = _queue(loaded_app, clock, 1)
    client = FakeTelephonyClient(fail_sms=10)
    assert _send(loaded_app, client, clock, max_attempts=3).retry == [outbox_id]
    assert _send(loaded_app, client, clock, max_attempts=3).retry == []  # not due yet
    clock.advance(60)
    assert _send(loaded_app, client, clock, max_attempts=3).retry == [outbox_id]
    clock.advance(119)
    assert _send(loaded_app, client, clock, max_attempts=3).retry == []
    clock.advance(1)
    assert _send(loaded_app, client, clock, max_attempts=3).failed == [outbox_id]
    [row] = _rows(loaded_app)
    assert (row.state, row.attempts) == ("failed", 3)


def _race(app, clock, workers: int) -> tuple[FakeTelephonyClient, list[int]]:
    ids = _queue(app, clock, 40)
    client = FakeTelephonyClient()
    barrier = threading.Barrier(workers)
    errors = []

    def work():
        try:
            barrier.wait()
            _send(app, client, clock, limit=100)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    return client, ids


@pytest.mark.skipif(not PG_URL, reason="concurrency on PostgreSQL needs TEST_DATABASE_URL")
def test_two_workers_never_send_one_message_twice_on_postgresql(loaded_app, clock):
    for _ in range(3):
        client, ids = _race(loaded_app, clock, 4)
        assert sorted(m["to"] for m in client.messages) == sorted(r.to_number for r in _rows(loaded_app))
        assert len(client.messages) == len(ids) == len({m["to"] for m in client.messages})
        assert {r.state for r in _rows(loaded_app)} == {"sent"}
        with loaded_app.extensions["db_sessionmaker"]() as s:
            s.execute(SmsOutbox.__table__.delete())
            s.execute(SurveyInvitation.__table__.delete())
            s.execute(Call.__table__.delete())
            s.commit()


def test_two_workers_never_send_one_message_twice(loaded_app, clock):
    client, ids = _race(loaded_app, clock, 2)
    assert len(client.messages) == len(ids) == len({m["to"] for m in client.messages})
    assert {r.state for r in _rows(loaded_app)} == {"sent"}
    assert all(r.attempts == 1 for r in _rows(loaded_app))
