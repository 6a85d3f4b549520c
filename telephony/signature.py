"""Validate X-Twilio-Signature against the URL the provider signed, failing closed.

The check is the official ``twilio`` validator's: :func:`signature_matches` gives the same
answer as ``RequestValidator(token).validate(url, params, signature)`` for form parameters
(tests/test_signature_adapter.py compares them on the shared fixtures), with the work the
validator repeats on every request done once: the validator per token and the URL's two
spellings (with and without the default port, as ``validate`` derives them) are cached, the
signature is computed by the official ``compute_signature`` for one spelling and for the
other only when the first does not match, and Flask's form is handed over with ``getall`` so
the validator does not fall back through AttributeError for every parameter.
"""
from __future__ import annotations

import hmac
import logging
from functools import lru_cache
from typing import Callable, Iterator
from urllib.parse import quote, urlparse

from flask import Blueprint, Response, current_app, request
from twilio.request_validator import RequestValidator, add_port, remove_port
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


def signed_url(public_base_url: str) -> str:
    """Return the absolute URL of the current request as the provider requested it.

    With ``public_base_url`` (e.g. ``https://hotline.example.ee``) the scheme and host come from
    it; otherwise from the request as seen after ``ProxyFix``. The path and the query string are
    taken raw, byte for byte, because the signature covers them exactly as sent.
    """
    raw_uri = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    if raw_uri and raw_uri.startswith("/"):
        path_and_query = raw_uri
    else:
        path_and_query = quote(request.script_root + request.path, safe="/:@!$&'()*+,;=-._~")
        query = request.query_string.decode("latin-1")
        if query:
            path_and_query += "?" + query
    if public_base_url:
        return public_base_url.rstrip("/") + path_and_query
    return f"{request.scheme}://{request.host}{path_and_query}"


def is_valid_request(auth_token: str, public_base_url: str) -> bool:
    """Return True when the current request carries a valid X-Twilio-Signature.

    POST form parameters are included (all of them, repeated names too); GET requests are
    signed over the URL alone. Never raises for malformed input: a body that cannot be
    decoded simply fails the comparison.
    """
    signature = request.headers.get("X-Twilio-Signature", "")
    if not signature or not auth_token:
        return False
    params = FormParams(request.form) if request.method == "POST" else {}
    return signature_matches(auth_token, signed_url(public_base_url), params, signature)


@lru_cache(maxsize=8)
def _validator(auth_token: str) -> RequestValidator:
    return RequestValidator(auth_token)


def compute_signature(auth_token: str, url: str, params) -> str:
    """The ``X-Twilio-Signature`` the provider sends for a POST of ``params`` (a mapping) to
    ``url``, by the official algorithm; for code that plays the provider (simulator, benchmarks)."""
    return _validator(auth_token).compute_signature(url, params)


@lru_cache(maxsize=1024)
def _url_spellings(url: str) -> tuple[str, str]:
    """``url`` without and with the default port, exactly as ``RequestValidator.validate``
    derives them. Raises ValueError for a URL whose port is not a number."""
    parsed = urlparse(url)
    return remove_port(parsed), add_port(parsed)


class FormParams:
    """Form parameters for the official validator: ``getall`` gives every value of a name."""

    __slots__ = ("_form",)

    def __init__(self, form: MultiDict):
        self._form = form

    def __iter__(self) -> Iterator[str]:
        return iter(self._form)

    def __len__(self) -> int:
        return len(self._form)

    def getall(self, name: str) -> list[str]:
        return self._form.getlist(name)


def signature_matches(auth_token: str, url: str, params, signature: str) -> bool:
    """True when ``signature`` is the provider's signature of ``url`` and ``params``.

    The same answer as the official ``RequestValidator(auth_token).validate(url, params,
    signature)`` for form parameters (a mapping, a Werkzeug MultiDict or :class:`FormParams`)
    and ``{}`` for a GET; a URL whose port is not a number fails instead of raising. The
    comparison is constant-time.
    """
    try:
        spellings = _url_spellings(url)
    except ValueError:
        return False
    validator = _validator(auth_token)
    given = signature.encode("utf-8", "surrogatepass")
    for spelling in spellings:
        computed = validator.compute_signature(spelling, params)
        if hmac.compare_digest(computed.encode("ascii"), given):
            return True
    return False


def provider_blueprint(name: str, import_name: str, *, url_prefix: str,
                       on_error: Callable[[], Response]) -> Blueprint:
    """Create a blueprint whose every route requires a valid provider signature.

    ``on_error`` builds the answer given when a view raises unexpectedly, so the provider never
    sees a 500 (it would play its own error message to the caller). Errors raised by the
    framework for bad requests keep their status (400, 413), never 500.
    """
    bp = Blueprint(name, import_name, url_prefix=url_prefix)

    @bp.before_request
    def _check_signature():
        if request.method == "POST" and request.content_length is None:
            # A chunked body cannot be held to MAX_CONTENT_LENGTH before it is read; the
            # provider always sends a length, so anything else is refused outright.
            return Response("Content-Length required\n", status=411, mimetype="text/plain")
        token = current_app.config["TWILIO_AUTH_TOKEN"]
        base = current_app.config["PUBLIC_BASE_URL"]
        # Reading the form here also enforces MAX_CONTENT_LENGTH before any view runs.
        if not is_valid_request(token, base):
            log.warning("rejected unsigned or mis-signed request to %s", request.path)
            return Response("invalid signature\n", status=403, mimetype="text/plain")
        return None

    @bp.errorhandler(Exception)
    def _never_500(exc: Exception):
        if isinstance(exc, HTTPException):
            return Response(f"{exc.code} {exc.name}\n", status=exc.code, mimetype="text/plain")
        log.exception("provider request to %s failed; answering with a safe fallback", request.path)
        return on_error()

    return bp
