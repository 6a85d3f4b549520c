"""Outbound REST goes through the official client to the configured, Twilio-compatible base URL."""
from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest

from telephony.client import TelephonyError, TwilioRestClient

ACCOUNT = "AC" + "a" * 32
CALL = "CA" + "b" * 32


class _Double(BaseHTTPRequestHandler):
    received: list[dict] = []
    status = 200

    def do_POST(self):  # noqa: N802 (http.server naming)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        type(self).received.append({"path": self.path, "form": parse_qs(body),
                                    "auth": self.headers.get("Authorization")})
        payload = json.dumps({"sid": CALL, "status": "in-progress"}).encode()
        self.send_response(type(self).status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def double():
    _Double.received = []
    _Double.status = 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Double)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_redirect_goes_to_the_configured_base_url_with_basic_auth(double):
    base = f"http://127.0.0.1:{double.server_address[1]}"
    client = TwilioRestClient(ACCOUNT, "secret-token", base)
    client.redirect_call(CALL, "https://hotline.example.ee/twilio/queue/connect")
    client.hangup_call(CALL)
    first, second = _Double.received
    assert first["path"] == f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{CALL}.json"
    assert first["form"] == {"Url": ["https://hotline.example.ee/twilio/queue/connect"],
                             "Method": ["POST"]}
    assert first["auth"] == "Basic " + base64.b64encode(f"{ACCOUNT}:secret-token".encode()).decode()
    assert second["form"] == {"Status": ["completed"]}


def test_provider_error_becomes_telephony_error(double):
    _Double.status = 404
    client = TwilioRestClient(ACCOUNT, "secret-token", f"http://127.0.0.1:{double.server_address[1]}")
    with pytest.raises(TelephonyError, match=CALL):
        client.redirect_call(CALL, "https://hotline.example.ee/twilio/queue/connect")


def test_unreachable_provider_becomes_telephony_error():
    client = TwilioRestClient(ACCOUNT, "secret-token", "http://127.0.0.1:9")
    with pytest.raises(TelephonyError):
        client.hangup_call(CALL)
