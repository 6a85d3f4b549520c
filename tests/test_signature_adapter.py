"""telephony.signature checks signatures exactly as the official twilio RequestValidator does.

The adapter calls the official ``compute_signature`` but caches the URL's two spellings and
hands the form over with ``getall``; these tests hold it to the official ``validate`` (the
same answer) and ``compute_signature`` (byte-identical signatures) on every shared fixture,
on other spellings of their URLs and on tampered, repeated, empty and non-ASCII input.
"""
from __future__ import annotations

from urllib.parse import urlencode

import pytest
from flask import Flask, request
from twilio.request_validator import RequestValidator, add_port, remove_port
from urllib.parse import urlparse

from telephony.signature import FormParams, _url_spellings, signature_matches
from tests.conftest import AUTH_TOKEN, FIXTURES

OFFICIAL = RequestValidator(AUTH_TOKEN)
_flask = Flask(__name__)


def _form(body: str | bytes):
    """The form Flask parses from ``body``, as the signature check receives it."""
    with _flask.test_request_context("/", method="POST", data=body,
                                     content_type="application/x-www-form-urlencoded"):
        return request.form.copy()


def _spellings(url: str) -> list[str]:
    """``url`` as the provider may have signed it, and as a misconfigured app might see it."""
    parsed = urlparse(url)
    host = parsed.hostname
    path = parsed.path + (f"?{parsed.query}" if parsed.query else "")
    return [url, f"https://{host}:443{path}", f"http://{host}{path}", f"http://{host}:80{path}",
            f"https://{host}:8443{path}", f"https://{host}{path}?attempt=2",
            f"https://{host}{path}/"]


def _cases():
    vector = FIXTURES["signature_check_vector"]
    yield ("check-vector", vector["url"], urlencode(vector["params"]),
           vector["expected_signature"])
    for fixture in FIXTURES["fixtures"]:
        yield fixture["name"], fixture["url"], fixture["body"], fixture["x_twilio_signature"]


CASES = list(_cases())


def _assert_same(url: str, form, signature: str) -> bool:
    official = OFFICIAL.validate(url, form, signature)
    assert signature_matches(AUTH_TOKEN, url, FormParams(form), signature) is official
    assert signature_matches(AUTH_TOKEN, url, form, signature) is official
    return official


@pytest.mark.parametrize("name,url,body,signature", CASES, ids=[c[0] for c in CASES])
def test_same_answer_as_the_official_validator_on_the_fixtures(name, url, body, signature):
    form = _form(body)
    assert _assert_same(url, form, signature), "the fixture's own signature must validate"
    for spelling in _spellings(url):
        _assert_same(spelling, form, signature)
        _assert_same(spelling, form, OFFICIAL.compute_signature(spelling, form))
    # Tampered: a changed value, a dropped parameter, an added one, a changed signature.
    first = next(iter(form))
    changed = form.copy()
    changed[first] = changed[first] + "x"
    dropped = form.copy()
    dropped.pop(first)
    added = form.copy()
    added.add("Extra", "")
    for tampered in (changed, dropped, added):
        assert not _assert_same(url, tampered, signature)
    for wrong in ("", signature[:-1], signature + " ", signature.lower(), "Ü" + signature[1:],
                  signature[:-2] + "\udcff=", "x" * len(signature)):
        assert not _assert_same(url, form, wrong)


@pytest.mark.parametrize("name,url,body,signature", CASES, ids=[c[0] for c in CASES])
def test_signatures_are_byte_identical(name, url, body, signature):
    form = _form(body)
    parsed = urlparse(url)
    assert _url_spellings(url) == (remove_port(parsed), add_port(parsed))
    for spelling in [*_spellings(url), *_url_spellings(url)]:
        assert (OFFICIAL.compute_signature(spelling, FormParams(form))
                == OFFICIAL.compute_signature(spelling, form))


@pytest.mark.parametrize("pairs", [
    [("CallSid", "CA1"), ("Tag", "b"), ("Tag", "a"), ("Tag", "b")],   # repeated, duplicated
    [("CallSid", "CA1"), ("FinishedOnKey", ""), ("Digits", "")],       # empty values
    [("CallSid", "CA1"), ("From", "client:Jõgeva-Pärnu Шишкин"), ("b", "1"), ("B", "2")],
    [("CallSid", "CA1"), ("Digits", "1 2+3&4=5%")],
    [],
])
def test_edge_cases_match_the_official_validator(pairs):
    url = "https://hotline.example.ee/twilio/status?attempt=1&x=%C3%B5"
    form = _form(urlencode(pairs, encoding="utf-8"))
    good = OFFICIAL.compute_signature(url, form)
    assert _assert_same(url, form, good)
    assert _assert_same(url.replace("hotline.example.ee", "hotline.example.ee:443"), form, good)
    assert not _assert_same(url.replace("https", "http"), form, good)
    if len(form.getlist("Tag")) > 1:
        only_one = form.copy()
        only_one.setlist("Tag", form.getlist("Tag")[:1])
        assert not _assert_same(url, only_one, good)


def test_get_requests_are_signed_over_the_url_alone():
    url = "https://hotline.example.ee/twilio/voice?CallSid=CA1&From=%2B3725"
    good = OFFICIAL.compute_signature(url, {})
    assert _assert_same(url, {}, good)
    assert not _assert_same(url + "1", {}, good)


def test_a_url_with_a_malformed_port_fails_closed():
    url = "https://hotline.example.ee:44x/twilio/voice"
    with pytest.raises(ValueError):
        OFFICIAL.validate(url, {}, "c2ln")
    assert signature_matches(AUTH_TOKEN, url, {}, "c2ln") is False
