"""Assignment is atomic under real concurrency: PostgreSQL with many threads, SQLite under gunicorn."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select, update

from ivr.models import Call
from routing.dispatch import dispatch
from routing.models import Agent, AgentSkill, Queue, QueueEntry
from tests.conftest import AUTH_TOKEN, PG_URL, ROOT, alembic_config, sign

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)


@pytest.mark.skipif(not PG_URL, reason="concurrency on PostgreSQL needs TEST_DATABASE_URL")
def test_parallel_dispatch_never_double_assigns_on_postgresql(loaded_app):
    maker = loaded_app.extensions["db_sessionmaker"]
    with maker() as s:
        queue = s.scalar(select(Queue).where(Queue.name == "et.pension"))
        agents = []
        for i in range(3):
            agent = Agent(name=f"load-{i}", endpoint_kind="client", endpoint=f"load{i}",
                          state="offline", state_changed_at=NOW)
            agent.skills = [AgentSkill(skill="et.pension")]
            s.add(agent)
            agents.append(agent)
        calls = [Call(call_sid=f"CA{i:032d}", arrived_at=NOW, last_event_at=NOW, status="queued",
                      queue_id=queue.id) for i in range(20)]
        s.add_all(calls)
        s.commit()
        agent_ids = [a.id for a in agents]
        call_ids = [c.id for c in calls]
        queue_id = queue.id

    def reset():
        with maker() as s:
            s.execute(QueueEntry.__table__.delete())
            s.execute(update(Agent).values(state="offline", current_call_id=None))
            s.execute(update(Agent).where(Agent.id.in_(agent_ids))
                      .values(state="available", idle_since=NOW))
            s.add_all(QueueEntry(call_id=cid, queue_id=queue_id, priority=0, state="waiting",
                                 entered_at=NOW + timedelta(seconds=i))
                      for i, cid in enumerate(call_ids))
            s.commit()

    def worker(barrier):
        barrier.wait()
        with maker() as s:
            made = dispatch(s, NOW)
            s.commit()
        return made

    for repetition in range(50):
        reset()
        barrier = threading.Barrier(8)
        with ThreadPoolExecutor(8) as pool:
            results = [a for part in pool.map(worker, [barrier] * 8) for a in part]
        per_agent = Counter(a.agent_id for a in results)
        per_call = Counter(a.call_id for a in results)
        assert max(per_agent.values()) == 1, (repetition, per_agent)
        assert max(per_call.values()) == 1, (repetition, per_call)
        assert len(results) == 3
        with maker() as s:
            busy = s.execute(select(Agent.id, Agent.current_call_id)
                             .where(Agent.state == "offered")).all()
            offered = s.execute(select(QueueEntry.call_id, QueueEntry.agent_id)
                                .where(QueueEntry.state == "offered")).all()
        assert sorted((agent, call) for call, agent in offered) == sorted(busy)
        # The three earliest callers were the ones offered.
        assert sorted(call for call, _ in offered) == call_ids[:3]


@pytest.mark.skipif(not PG_URL, reason="concurrency on PostgreSQL needs TEST_DATABASE_URL")
def test_two_agents_accepting_one_call_at_once_on_postgresql(loaded_app):
    from routing.dispatch import AlreadyTaken, accept

    maker = loaded_app.extensions["db_sessionmaker"]
    with maker() as s:
        queue = s.scalar(select(Queue).where(Queue.name == "et.pension"))
        agents = []
        for i in range(2):
            agent = Agent(name=f"rival-{i}", endpoint_kind="client", endpoint=f"rival{i}",
                          state="available", idle_since=NOW, state_changed_at=NOW)
            agent.skills = [AgentSkill(skill="et.pension")]
            agents.append(agent)
        s.add_all(agents)
        s.commit()
        agent_ids = [a.id for a in agents]
        queue_id = queue.id

    outcomes = Counter()
    for repetition in range(50):
        with maker() as s:
            call = Call(call_sid=f"CA{repetition:032d}", arrived_at=NOW, last_event_at=NOW,
                        status="queued", queue_id=queue_id)
            s.add(call)
            s.flush()
            s.add(QueueEntry(call_id=call.id, queue_id=queue_id, priority=0, state="waiting",
                             entered_at=NOW))
            s.execute(update(Agent).where(Agent.id.in_(agent_ids))
                      .values(state="available", current_call_id=None))
            s.commit()
            call_id = call.id
        barrier = threading.Barrier(2)

        def try_accept(agent_id: int):
            with maker() as s:
                barrier.wait()
                try:
                    accept(s, agent_id, call_id, NOW)
                    s.commit()
                    return agent_id, "connected"
                except AlreadyTaken:
                    s.rollback()
                    return agent_id, "already taken"

        with ThreadPoolExecutor(2) as pool:
            results = dict(pool.map(try_accept, agent_ids))
        assert sorted(results.values()) == ["already taken", "connected"], (repetition, results)
        winner = next(a for a, r in results.items() if r == "connected")
        loser = next(a for a, r in results.items() if r != "connected")
        with maker() as s:
            states = dict(s.execute(select(Agent.id, Agent.state).where(Agent.id.in_(agent_ids))).all())
            entry = s.scalar(select(QueueEntry).where(QueueEntry.call_id == call_id))
        assert states == {winner: "offered", loser: "available"}
        assert (entry.state, entry.agent_id) == ("offered", winner)
        outcomes[winner] += 1
        with maker() as s:
            s.execute(QueueEntry.__table__.delete())
            s.commit()
    assert sum(outcomes.values()) == 50


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_gunicorn_workers_share_one_sqlite_file_without_lock_errors(tmp_path):
    db_path = tmp_path / "shared.db"
    from alembic import command
    command.upgrade(alembic_config(f"sqlite:///{db_path}"), "head")
    port = _free_port()
    env = dict(os.environ, DATABASE_URL=f"sqlite:///{db_path}", TWILIO_AUTH_TOKEN=AUTH_TOKEN,
               PUBLIC_BASE_URL="https://hotline.example.ee", TELEPHONY_CLIENT="fake")
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-w", "4", "-b", f"127.0.0.1:{port}",
             "app:create_app()"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.post(f"http://127.0.0.1:{port}/twilio/status", timeout=5)
                break
            except (requests.ConnectionError, requests.Timeout):
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)
        barrier = threading.Barrier(20)

        def post(i: int):
            params = {"CallSid": f"CA{i:032x}", "CallStatus": "completed", "CallDuration": "30",
                      "From": "+37251234567", "To": "+3726121360"}
            signature = sign("https://hotline.example.ee/twilio/status", params)
            barrier.wait()
            return requests.post(f"http://127.0.0.1:{port}/twilio/status", data=params,
                                 headers={"X-Twilio-Signature": signature}, timeout=60)

        with ThreadPoolExecutor(20) as pool:
            responses = list(pool.map(post, range(20)))
        assert [r.status_code for r in responses] == [200] * 20
        assert all(b"locked" not in r.content for r in responses)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    from sqlalchemy import create_engine
    engine = create_engine(f"sqlite:///{db_path}")
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Call.__table__)).scalar() == 20
        assert conn.execute(select(func.count()).select_from(Call.__table__)
                            .where(Call.__table__.c.status == "ended")).scalar() == 20
    engine.dispose()
    assert "database is locked" not in log_path.read_text()


@pytest.mark.skipif(not PG_URL, reason="concurrency on PostgreSQL needs TEST_DATABASE_URL")
def test_due_callbacks_are_dialled_exactly_once_by_parallel_workers_on_postgresql(loaded_app, clock):
    """Six workers run the dispatch edge at the same moment over four due callbacks and three
    free agents, 20 times: each time exactly three callbacks are dialled, each once."""
    from ivr.webhooks import dispatch_and_connect
    from db import get_session
    from routing.callbacks import schedule
    from routing.models import Callback

    maker = loaded_app.extensions["db_sessionmaker"]
    fake = loaded_app.extensions["telephony"]
    with maker() as s:
        queue_id = s.scalar(select(Queue.id).where(Queue.name == "et.pension"))
        agents = []
        for i in range(3):
            agent = Agent(name=f"cb-{i}", endpoint_kind="client", endpoint=f"cb{i}",
                          state="offline", state_changed_at=clock())
            agent.skills = [AgentSkill(skill="et.pension")]
            agents.append(agent)
        s.add_all(agents)
        s.commit()
        agent_ids = [a.id for a in agents]
    workers = 6
    for repetition in range(20):
        with maker() as s:
            s.execute(update(Agent).where(Agent.id.in_(agent_ids))
                      .values(state="available", current_call_id=None, idle_since=clock()))
            queue = s.get(Queue, queue_id)
            for i in range(4):
                schedule(s, number=f"+3725{repetition:02d}{i:05d}", queue=queue, due_at=clock(),
                         now=clock())
            s.commit()
        before = len(fake.dialled)
        barrier = threading.Barrier(workers)

        def work(_):
            with loaded_app.test_request_context("/"):
                barrier.wait()
                return dispatch_and_connect(get_session())

        with ThreadPoolExecutor(workers) as pool:
            offered = sum(pool.map(work, range(workers)))
        dialled = [d["to"] for d in fake.dialled[before:]]
        assert offered == 3 and len(dialled) == 3 and len(set(dialled)) == 3, (repetition, dialled)
        with maker() as s:
            states = Counter(s.scalars(select(Callback.state).where(
                Callback.number.like(f"+3725{repetition:02d}%"))))
            assert states == {"dialing": 3, "pending": 1}, (repetition, states)
            assert sorted(s.scalars(select(Agent.state).where(Agent.id.in_(agent_ids)))) == ["offered"] * 3
            # Clear this round: the reserved agents and the calls are released for the next one.
            s.execute(update(Agent).where(Agent.id.in_(agent_ids)).values(current_call_id=None))
            s.execute(QueueEntry.__table__.delete())
            s.execute(update(Callback).values(state="done"))
            s.commit()
