"""The S3 recording store against a real S3 API served locally by moto's server mode (HTTP on
a free port; boto3 talks to it as it would to AWS or MinIO)."""
from __future__ import annotations

import socket
from datetime import timedelta

import pytest
from sqlalchemy import select

from recording.crypto import Keyring
from recording.models import Recording
from recording.storage import S3Store, StorageError
from telephony.client import FakeTelephonyClient
from tests.recording_helpers import KEY_A, SECRET, make_app, post_recording, wav

CALL = "CA" + "1" * 32
REC = "RE" + "a" * 32


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_endpoint, monkeypatch, request):
    import boto3

    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_SESSION_TOKEN", "testing")):
        monkeypatch.setenv(name, value)
    name = "rec-" + request.node.name.lower().replace("_", "-")[:40]
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="eu-north-1")
    client.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-north-1"})
    return client, name


def _objects(client, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", []))


def test_s3_store_put_is_idempotent_delete_tolerates_missing(bucket, s3_endpoint):
    client, name = bucket
    store = S3Store(name, "calls/", endpoint_url=s3_endpoint, region="eu-north-1", sse="AES256")
    store.put("2026/12/RE1.bin", b"one")
    store.put("2026/12/RE1.bin", b"two")
    assert _objects(client, name) == ["calls/2026/12/RE1.bin"]
    assert store.get("2026/12/RE1.bin") == b"two" and store.keys() == ["2026/12/RE1.bin"]
    assert client.head_object(Bucket=name, Key="calls/2026/12/RE1.bin")["ServerSideEncryption"] == "AES256"
    assert store.delete("2026/12/RE1.bin") is True
    assert store.delete("2026/12/RE1.bin") is False
    assert store.exists("2026/12/RE1.bin") is False
    with pytest.raises(StorageError):
        store.get("2026/12/RE1.bin")
    assert store.location("x.bin") == f"s3://{name}/calls/x.bin"


def test_s3_unreachable_bucket_is_a_storage_error(s3_endpoint, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    store = S3Store("no-such-bucket", "", endpoint_url=s3_endpoint, region="eu-north-1")
    with pytest.raises(StorageError):
        store.put("a.bin", b"x")


def test_fetch_to_s3_encrypts_then_purge_deletes_the_object(bucket, s3_endpoint, db_url, clock, tmp_path):
    client, name = bucket
    provider = FakeTelephonyClient()
    app = make_app(db_url, clock, tmp_path / "unused", provider, RECORDINGS_STORAGE="s3",
                   RECORDINGS_S3_BUCKET=name, RECORDINGS_S3_PREFIX="hotline/",
                   RECORDINGS_S3_ENDPOINT_URL=s3_endpoint, RECORDINGS_S3_SSE="AES256")
    try:
        provider.add_recording(REC, wav(12))
        post_recording(app, CALL, REC)
        runner = app.test_cli_runner()
        result = runner.invoke(args=["recordings", "fetch"])
        assert result.exit_code == 0, result.output
        assert _objects(client, name) == [f"hotline/2026/12/{REC}.bin"]
        obj = client.get_object(Bucket=name, Key=f"hotline/2026/12/{REC}.bin")
        raw = obj["Body"].read()
        assert obj["ServerSideEncryption"] == "AES256"
        assert SECRET not in raw and b"RIFF" not in raw
        assert Keyring.parse(KEY_A).decrypt(raw, REC) == wav(12)
        assert provider._recording_state()["media"] == {}

        clock.advance(200 * 86400)
        result = runner.invoke(args=["recordings", "verify-log"])
        assert f"OVERDUE\t{REC}\tstill in s3://{name}/hotline/2026/12/{REC}.bin" in result.output
        result = runner.invoke(args=["recordings", "purge"])
        assert "1 recording(s) deleted in 1 batch(es): 1 from storage, 0 at the provider" in result.output
        assert _objects(client, name) == []
        with app.extensions["db_sessionmaker"]() as s:
            row = s.scalar(select(Recording))
        assert row.deleted_at == clock() and row.deleted_at - row.stored_at == timedelta(days=200)
        result = runner.invoke(args=["recordings", "verify-log"])
        assert result.exit_code == 0, result.output
    finally:
        app.extensions["db_engine"].dispose()
