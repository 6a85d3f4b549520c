"""Shared fixtures: a migrated database per test (SQLite, or PostgreSQL when TEST_DATABASE_URL is
set), the app with a fake telephony client and a controllable clock, and signed requests."""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlencode

import pytest
import yaml
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text
from twilio.request_validator import RequestValidator

ROOT = Path(__file__).resolve().parent.parent
# The team's webhook fixtures (real provider requests and their signatures), kept with the tests
# so a clone anywhere runs them; the original is shared/fixtures/twilio-webhooks.json.
FIXTURES = json.loads((ROOT / "tests" / "fixtures" / "twilio-webhooks.json").read_text(encoding="utf-8"))
AUTH_TOKEN = FIXTURES["test_auth_token"]
PUBLIC_BASE = "https://hotline.example.ee"
SAMPLE_CONFIG = ROOT / "config" / "line.sample.yaml"
PG_URL = os.environ.get("TEST_DATABASE_URL", "")


from db import normalise_url as normalise_pg  # noqa: E402


def alembic_config(url: str) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.attributes["url"] = url
    return cfg


@pytest.fixture(scope="session")
def _migrated_template(tmp_path_factory):
    """SQLite: one migrated file copied per test. PostgreSQL: the test database migrated once."""
    if PG_URL:
        url = normalise_pg(PG_URL)
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()
        command.upgrade(alembic_config(url), "head")
        return url
    path = tmp_path_factory.mktemp("template") / "template.db"
    command.upgrade(alembic_config(f"sqlite:///{path}"), "head")
    return path


@pytest.fixture
def db_url(_migrated_template, tmp_path):
    """A migrated, empty database for this test."""
    if PG_URL:
        url = _migrated_template
        engine = create_engine(url)
        with engine.begin() as conn:
            tables = [r[0] for r in conn.execute(text(
                "SELECT tablename FROM pg_tables WHERE schemaname='public' AND tablename <> 'alembic_version'"))]
            # The deletion log refuses TRUNCATE (a trigger); tests may reset it.
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        engine.dispose()
        return url
    path = tmp_path / "test.db"
    shutil.copy(_migrated_template, path)
    return f"sqlite:///{path}"


@dataclass
class Clock:
    """A settable clock for the app: call it for the current aware UTC time."""

    now: datetime = field(default_factory=lambda: datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@pytest.fixture
def clock():
    # Tuesday 1 December 2026, 12:00 in Tallinn: the line is open.
    return Clock()


@pytest.fixture
def app(db_url, clock, tmp_path):
    from app import create_app
    from telephony.client import FakeTelephonyClient

    application = create_app({
        "DATABASE_URL": db_url, "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TELEPHONY": FakeTelephonyClient(),
        "PUBLIC_BASE_URL": PUBLIC_BASE, "CLOCK": clock, "AUDIO_DIR": str(tmp_path / "audio"),
    })
    application.testing = True
    yield application
    application.extensions["db_engine"].dispose()


@pytest.fixture
def loaded_app(app):
    """The app with the sample configuration of the agency's line loaded and its agents logged
    in but not ready (so queues are staffed and nobody is offered a call until a test says so)."""
    result = app.test_cli_runner().invoke(args=["config", "load", str(SAMPLE_CONFIG)])
    assert result.exit_code == 0, result.output
    from routing.models import Agent
    with app.extensions["db_sessionmaker"]() as s:
        s.execute(Agent.__table__.update().values(state="not_ready", not_ready_reason="setup"))
        s.commit()
    return app


@pytest.fixture
def session(app):
    s = app.extensions["db_sessionmaker"]()
    yield s
    s.close()


def sign(url: str, params, token: str = AUTH_TOKEN) -> str:
    return RequestValidator(token).compute_signature(url, params)


class Caller:
    """Posts signed provider requests for one call, like the provider would."""

    def __init__(self, client, call_sid: str = "CA3f2a9c1e7b6d4058a1c2e3f4a5b6c7d8",
                 from_number: str = "+37251234567"):
        self.client = client
        self.call_sid = call_sid
        self.from_number = from_number

    def post(self, url: str, **params):
        """POST to an absolute public URL (or a path under PUBLIC_BASE), signed for it."""
        if url.startswith("/"):
            url = PUBLIC_BASE + url
        data = {"AccountSid": "AC0f1e2d3c4b5a69788796a5b4c3d2e1f0", "CallSid": self.call_sid,
                "From": self.from_number, "To": "+3726121360", "CallStatus": "in-progress",
                "Direction": "inbound", "ApiVersion": "2010-04-01"}
        data.update({k: v for k, v in params.items() if v is not None})
        path = url[len(PUBLIC_BASE):]
        return self.client.post(path, data=data, headers={"X-Twilio-Signature": sign(url, data)})


@pytest.fixture
def caller(loaded_app):
    return Caller(loaded_app.test_client())


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))
