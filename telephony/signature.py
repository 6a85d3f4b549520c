"""Validate X-Twilio-Signature against the URL the provider signed, failing closed."""
from __future__ import annotations

import logging
from typing import Callable
from urllib.parse import quote

from flask import Blueprint, Response, current_app, request
from twilio.request_validator import RequestValidator
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
    validator = RequestValidator(auth_token)
    params = request.form if request.method == "POST" else {}
    return validator.validate(signed_url(public_base_url), params, signature)


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
