"""Baseline for the webhook benchmark: a bare Flask endpoint returning fixed TwiML.

``POST /twilio/voice`` answers with a copy of what the real incoming-call webhook returns for the
sample line (greeting, then the language menu): no database, no signature check, no parsing of
the body beyond what Flask does on its own. Serve it exactly like the real app:

    gunicorn --pythonpath benchmarks 'bare_app:create_app()'
"""
from __future__ import annotations

from flask import Flask, Response

# The real app's answer to an incoming call with the sample configuration loaded and
# PUBLIC_BASE_URL=https://hotline.example.ee (620 bytes).
TWIML = (
    '<?xml version="1.0" encoding="UTF-8"?><Response>'
    "<Play>https://hotline.example.ee/audio/et/welcome.wav</Play>"
    '<Gather action="https://hotline.example.ee/twilio/ivr/language?attempt=1" finishOnKey="" '
    'method="POST" numDigits="1" timeout="5">'
    "<Play>https://hotline.example.ee/audio/et/language_menu.wav</Play>"
    '<Say language="ru-RU" voice="Polly.Tatyana">Для продолжения на русском языке нажмите 2.</Say>'
    '<Say language="en-GB" voice="Polly.Amy">To continue in English, press 3.</Say>'
    "</Gather>"
    '<Redirect method="POST">https://hotline.example.ee/twilio/ivr/language?attempt=1</Redirect>'
    "</Response>"
).encode("utf-8")


def create_app() -> Flask:
    """Return the baseline app: one route, fixed TwiML."""
    app = Flask(__name__)

    @app.post("/twilio/voice")
    def incoming():
        return Response(TWIML, status=200, content_type="text/xml; charset=utf-8")

    return app
