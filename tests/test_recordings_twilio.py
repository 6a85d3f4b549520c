"""The Twilio adapter's recording methods against a local Twilio-compatible double."""
from __future__ import annotations

import base64
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from telephony.client import RecordingNotFound, TelephonyError, TwilioRestClient

ACCOUNT = "AC" + "a" * 32
REC = "RE" + "c" * 32
MEDIA = b"RIFF\x00\x01binary\xff\xfe media"


class _Double(BaseHTTPRequestHandler):
    received: list[tuple[str, str, str | None]] = []
    status = 200

    def _answer(self, body: bytes, content_type: str) -> None:
        self.send_response(type(self).status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802
        type(self).received.append(("GET", self.path, self.headers.get("Authorization")))
        self._answer(MEDIA if type(self).status == 200 else b'{"status": 404}', "audio/x-wav")

    def do_DELETE(self):  # noqa: N802
        type(self).received.append(("DELETE", self.path, self.headers.get("Authorization")))
        if type(self).status == 204:
            self.send_response(204)
            self.end_headers()
        else:
            self._answer(b'{"code": 20404, "message": "not found", "status": %d}' % type(self).status,
                         "application/json")

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length", 0))
        type(self).received.append(("POST", self.path, self.rfile.read(length).decode()))
        self._answer(b'{"sid": "%s", "status": "paused"}' % REC.encode(), "application/json")

    def log_message(self, *args):
        pass


@pytest.fixture
def client():
    _Double.received = []
    _Double.status = 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Double)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield TwilioRestClient(ACCOUNT, "secret-token", f"http://127.0.0.1:{server.server_address[1]}")
    server.shutdown()
    server.server_close()


def test_download_gets_the_wav_with_the_provider_credentials(client):
    assert client.download_recording(REC) == MEDIA
    method, path, auth = _Double.received[0]
    assert (method, path) == ("GET", f"/2010-04-01/Accounts/{ACCOUNT}/Recordings/{REC}.wav")
    assert auth == "Basic " + base64.b64encode(f"{ACCOUNT}:secret-token".encode()).decode()


def test_download_of_a_missing_recording_and_a_server_error(client):
    _Double.status = 404
    with pytest.raises(RecordingNotFound):
        client.download_recording(REC)
    _Double.status = 500
    with pytest.raises(TelephonyError, match="HTTP 500"):
        client.download_recording(REC)


def test_delete_recording_404_means_already_deleted(client):
    _Double.status = 204
    assert client.delete_recording(REC) is True
    assert _Double.received[-1][:2] == ("DELETE", f"/2010-04-01/Accounts/{ACCOUNT}/Recordings/{REC}.json")
    _Double.status = 404
    assert client.delete_recording(REC) is False
    _Double.status = 500
    with pytest.raises(TelephonyError):
        client.delete_recording(REC)


def test_pause_and_resume_the_current_recording(client):
    call = "CA" + "d" * 32
    client.set_recording_paused(call, True)
    client.set_recording_paused(call, False)
    (_, path, body), (_, _, body2) = _Double.received
    assert path == f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{call}/Recordings/Twilio.CURRENT.json"
    assert (body, body2) == ("Status=paused", "Status=in-progress")
