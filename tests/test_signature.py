"""X-Twilio-Signature: signed requests pass, anything else is refused, and bad bodies never 500."""
from __future__ import annotations

from urllib.parse import urlencode

import pytest
from sqlalchemy import func, select
from werkzeug.datastructures import MultiDict

from ivr.models import Call
from telephony.signature import is_valid_request
from tests.conftest import AUTH_TOKEN, FIXTURES, PUBLIC_BASE, sign

VOICE_URL = PUBLIC_BASE + "/twilio/voice"


def _fixture(name: str) -> dict:
    return next(f for f in FIXTURES["fixtures"] if f["name"] == name)


def _call_count(app) -> int:
    with app.extensions["db_sessionmaker"]() as s:
        return s.scalar(select(func.count()).select_from(Call))


def test_check_vector_of_the_fixtures_validates(app):
    vector = FIXTURES["signature_check_vector"]
    app.config["PUBLIC_BASE_URL"] = "https://ivr.example.ee"
    with app.test_request_context("/voice/incoming", method="POST", data=vector["params"],
                                  headers={"X-Twilio-Signature": vector["expected_signature"]}):
        assert is_valid_request(AUTH_TOKEN, "https://ivr.example.ee")
    # The same signature checked against the plain-http URL the app sees is rejected.
    with app.test_request_context("/voice/incoming", method="POST", data=vector["params"],
                                  base_url="http://ivr.example.ee",
                                  headers={"X-Twilio-Signature": vector["expected_signature"]}):
        assert not is_valid_request(AUTH_TOKEN, "")


@pytest.mark.parametrize("name", [f["name"] for f in FIXTURES["fixtures"]])
def test_every_fixture_signature_is_accepted_for_its_own_url(app, name):
    fixture = _fixture(name)
    base, _, path = fixture["url"].partition("://")[2].partition("/")
    with app.test_request_context("/" + path, method="POST", data=fixture["body"],
                                  content_type="application/x-www-form-urlencoded",
                                  headers={"X-Twilio-Signature": fixture["x_twilio_signature"]}):
        assert is_valid_request(AUTH_TOKEN, "https://" + base)


def test_signed_unsigned_and_tampered_requests(loaded_app):
    client = loaded_app.test_client()
    params = _fixture("incoming_call")["params"]
    good = client.post("/twilio/voice", data=params,
                       headers={"X-Twilio-Signature": sign(VOICE_URL, params)})
    assert good.status_code == 200
    assert _call_count(loaded_app) == 1

    unsigned = client.post("/twilio/voice", data=dict(params, CallSid="CA" + "1" * 32))
    assert unsigned.status_code == 403

    tampered_params = dict(params, CallSid="CA" + "2" * 32)
    signature = sign(VOICE_URL, tampered_params)
    tampered_params["From"] = "+37259999999"
    tampered = client.post("/twilio/voice", data=tampered_params,
                           headers={"X-Twilio-Signature": signature})
    assert tampered.status_code == 403

    wrong_token = client.post("/twilio/voice", data=params,
                              headers={"X-Twilio-Signature": sign(VOICE_URL, params, "f" * 32)})
    assert wrong_token.status_code == 403
    assert _call_count(loaded_app) == 1


def test_signature_for_public_url_passes_behind_configured_proxy(db_url, clock):
    from app import create_app

    app = create_app({"DATABASE_URL": db_url, "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
                      "TELEPHONY_CLIENT": "fake", "PROXY_FIX_HOPS": 1, "PUBLIC_BASE_URL": "",
                      "CLOCK": clock})
    params = {"CallSid": "CA" + "3" * 32, "CallStatus": "completed", "From": "+37251234567"}
    signature = sign("https://hotline.example.ee/twilio/status", params)
    headers = {"X-Twilio-Signature": signature, "X-Forwarded-Proto": "https",
               "X-Forwarded-Host": "hotline.example.ee", "X-Forwarded-For": "203.0.113.9"}
    client = app.test_client()
    passed = client.post("/twilio/status", data=params, headers=headers,
                         base_url="http://127.0.0.1:8000")
    assert passed.status_code == 200
    # Without the forwarded headers the app sees http://127.0.0.1:8000/… and must refuse.
    refused = client.post("/twilio/status", data=params, base_url="http://127.0.0.1:8000",
                          headers={"X-Twilio-Signature": signature})
    assert refused.status_code == 403
    app.extensions["db_engine"].dispose()


def test_proxy_headers_are_ignored_without_configured_hops(app):
    params = {"CallSid": "CA" + "4" * 32, "CallStatus": "completed"}
    app.config["PUBLIC_BASE_URL"] = ""
    signature = sign("https://hotline.example.ee/twilio/status", params)
    response = app.test_client().post(
        "/twilio/status", data=params, base_url="http://127.0.0.1:8000",
        headers={"X-Twilio-Signature": signature, "X-Forwarded-Proto": "https",
                 "X-Forwarded-Host": "hotline.example.ee"})
    assert response.status_code == 403


def test_reason_parameters_validate(app, caller_for_status):
    response = caller_for_status(CallStatus="completed", Reason="Call ended by agent",
                                 ReasonConferenceEnded="participant-with-end-conference-on-exit-left")
    assert response.status_code == 200


def test_repeated_parameter_validates(app):
    pairs = [("CallSid", "CA" + "5" * 32), ("CallStatus", "completed"), ("Tag", "b"), ("Tag", "a")]
    url = PUBLIC_BASE + "/twilio/status"
    signature = sign(url, MultiDict(pairs))
    response = app.test_client().post("/twilio/status", data=urlencode(pairs),
                                      content_type="application/x-www-form-urlencoded",
                                      headers={"X-Twilio-Signature": signature})
    assert response.status_code == 200
    # Dropping one of the repeated values breaks the signature.
    response = app.test_client().post("/twilio/status", data=urlencode(pairs[:-1]),
                                      content_type="application/x-www-form-urlencoded",
                                      headers={"X-Twilio-Signature": signature})
    assert response.status_code == 403


def test_estonian_and_cyrillic_body_validates_and_is_stored_unchanged(app):
    caller_id = "client:Jõgeva-Pärnu-Šõõ-Žüü-ÕÄÖÜ Шишкин"
    params = {"CallSid": "CA" + "6" * 32, "CallStatus": "completed", "From": caller_id}
    url = PUBLIC_BASE + "/twilio/status"
    body = urlencode(params, encoding="utf-8")
    response = app.test_client().post(
        "/twilio/status", data=body,
        content_type="application/x-www-form-urlencoded; charset=utf-8",
        headers={"X-Twilio-Signature": sign(url, params)})
    assert response.status_code == 200
    with app.extensions["db_sessionmaker"]() as s:
        assert s.scalar(select(Call.from_number)) == caller_id


def test_body_over_the_maximum_gets_413_and_writes_nothing(app):
    app.config["MAX_CONTENT_LENGTH"] = 4096
    params = {"CallSid": "CA" + "7" * 32, "CallStatus": "completed", "Padding": "x" * 5000}
    url = PUBLIC_BASE + "/twilio/status"
    response = app.test_client().post("/twilio/status", data=params,
                                      headers={"X-Twilio-Signature": sign(url, params)})
    assert response.status_code == 413
    assert _call_count(app) == 0


@pytest.mark.parametrize("body", [
    b"CallSid=CA8888&CallStatus=completed&From=%FF%FE",
    b"CallSid=CA8888&CallStatus=completed&From=\xff\xfe\x80",
    b"\xc3\x28=\xa0\xa1",
])
def test_invalid_bytes_in_body_never_give_500(app, body):
    response = app.test_client().post(
        "/twilio/status", data=body, content_type="application/x-www-form-urlencoded",
        headers={"X-Twilio-Signature": "bm90IGEgcmVhbCBzaWduYXR1cmU="})
    assert response.status_code in (400, 403)
    assert _call_count(app) == 0


@pytest.fixture
def caller_for_status(app):
    def post(**params):
        params.setdefault("CallSid", "CA" + "9" * 32)
        url = PUBLIC_BASE + "/twilio/status"
        return app.test_client().post("/twilio/status", data=params,
                                      headers={"X-Twilio-Signature": sign(url, params)})
    return post
