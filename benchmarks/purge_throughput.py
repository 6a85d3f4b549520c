"""Purge throughput: ``flask recordings purge``'s job on 100,000 expired recordings, on
PostgreSQL with the local-disk store, in recordings deleted per second.

Set-up (not timed): a scratch database on the PostgreSQL server of ``BENCH_DATABASE_URL``
(default ``postgresql://postgres@127.0.0.1:5432/postgres``; the user must be allowed to CREATE
DATABASE; the scratch database is dropped at the end), migrated with Alembic; ``--count``
recording rows (default 100,000) whose retention date has passed, each with an object of
``--size`` bytes (default 32 KiB, random: stands for the encrypted blob) in a local store
under a temporary directory. ``--at-provider`` of them (a fraction, default 0) still have a
copy at the provider, which is the in-process fake provider (a dict): a real provider
deletion is an HTTPS round trip, which this benchmark does not measure.

Timed: :func:`recording.jobs.purge` as the command runs it (batches of ``--batch-size``,
default 500, each committed with its hash-chained deletion-log entries). Then, separately,
the chain verification (``flask recordings verify-log``'s chain check).

Prints recordings, batches, seconds and recordings per second for the purge, and the seconds
for the verification. Checks that every row has ``deleted_at``, the store is empty, the log
has one entry per recording and the chain verifies; exit status 1 if not, 2 on set-up error.

    .venv/bin/python benchmarks/purge_throughput.py [--count 100000] [--batch-size 500]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, func, select, text  # noqa: E402

from db import make_engine, make_sessionmaker, normalise_url  # noqa: E402


def _scratch(server_url: str) -> tuple[str, Callable[[], None]]:
    base = normalise_url(server_url)
    name = f"purge_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop():
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return base.rsplit("/", 1)[0] + "/" + name, drop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--size", type=int, default=32 * 1024, help="bytes per stored object")
    parser.add_argument("--at-provider", type=float, default=0.0,
                        help="fraction of recordings still at the (fake) provider")
    parser.add_argument("--database-url", default=os.environ.get(
        "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args(argv)

    from alembic import command
    from alembic.config import Config

    from recording.deletion_log import verify_chain
    from recording.jobs import Services, purge
    from recording.models import Recording, RecordingDeletion
    from recording.storage import LocalStore
    from telephony.client import FakeTelephonyClient

    try:
        url, drop = _scratch(args.database_url)
    except Exception as exc:  # noqa: BLE001 (report any set-up failure)
        print(f"cannot create a scratch database on {args.database_url}: {exc}", file=sys.stderr)
        return 2
    engine = None
    try:
        cfg = Config(str(ROOT / "alembic.ini"))
        cfg.set_main_option("script_location", str(ROOT / "migrations"))
        cfg.attributes["url"] = url
        command.upgrade(cfg, "head")
        engine = make_engine(url)
        sessions = make_sessionmaker(engine)
        with tempfile.TemporaryDirectory(prefix="purge-bench-") as tmp:
            store = LocalStore(Path(tmp) / "store")
            provider = FakeTelephonyClient()
            made = datetime(2026, 1, 10, 9, 0, tzinfo=timezone.utc)
            now = datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)
            blob = os.urandom(args.size)
            at_provider_every = int(1 / args.at_provider) if args.at_provider > 0 else 0
            setup_started = time.perf_counter()
            rows = []
            for i in range(args.count):
                sid = f"RE{i:032x}"
                key = f"2026/01/{sid}.bin"
                path = store.root / key
                if i == 0:
                    path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(blob)
                still_there = at_provider_every and i % at_provider_every == 0
                if still_there:
                    provider.add_recording(sid, b"media")
                rows.append({"recording_sid": sid, "call_sid": f"CA{i:032x}", "status": "completed",
                             "url": "", "received_at": made, "updated_at": made, "recorded_at": made,
                             "delete_after": made + timedelta(days=181),
                             "fetch_state": "stored" if still_there else "done", "fetch_attempts": 0,
                             "storage_key": key, "size_bytes": args.size, "sha256": "0" * 64,
                             "provider_deleted_at": None if still_there else made})
                if len(rows) == 10_000:
                    with sessions() as s:
                        s.execute(Recording.__table__.insert(), rows)
                        s.commit()
                    rows = []
            if rows:
                with sessions() as s:
                    s.execute(Recording.__table__.insert(), rows)
                    s.commit()
            with sessions() as s:
                s.execute(text("ANALYZE recordings"))
                s.commit()
            print(f"set-up: {args.count} expired recordings of {args.size} B in "
                  f"{time.perf_counter() - setup_started:.1f} s (not timed)")

            services = Services(provider, store, None)
            with sessions() as s:
                started = time.perf_counter()
                report = purge(s, services, now, batch_size=args.batch_size)
                elapsed = time.perf_counter() - started
            with sessions() as s:
                started = time.perf_counter()
                chain = verify_chain(s)
                verify_seconds = time.perf_counter() - started
                remaining = s.scalar(select(func.count()).select_from(Recording)
                                     .where(Recording.deleted_at.is_(None)))
                entries = s.scalar(select(func.count()).select_from(RecordingDeletion))
            left_in_store = len(store.keys())
        rate = report.deleted / elapsed if elapsed else float("inf")
        print(f"purge: {report.deleted} recordings in {report.batches} batches of "
              f"{args.batch_size}: {elapsed:.2f} s, {rate:,.0f} recordings/s "
              f"({report.store_deleted} files deleted, {report.provider_deleted} provider "
              f"deletions via the in-process fake)")
        print(f"verify-log chain: {chain.entries} entries in {verify_seconds:.2f} s, "
              f"{'intact' if chain.ok else 'BROKEN'}")
        ok = (report.deleted == args.count and remaining == 0 and left_in_store == 0
              and entries == args.count and chain.ok and not report.failed)
        if not ok:
            print(f"FAILED: deleted {report.deleted}, rows left {remaining}, objects left "
                  f"{left_in_store}, log entries {entries}, failures {len(report.failed)}")
            return 1
        print(f"load: {os.getloadavg()[0]:.2f} (1-min average) on {os.cpu_count()} CPUs")
        return 0
    finally:
        if engine is not None:
            engine.dispose()
        drop()


if __name__ == "__main__":
    sys.exit(main())
