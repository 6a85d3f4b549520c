"""The deletion log: append-only, hash-chained entries an auditor can verify.

Each entry says what was deleted (recording and call SID, the media's SHA-256), when, why
(``retention``, ``erasure``), where (every location a copy was removed from) and by whom
(the command). ``entry_hash = HMAC-SHA256(key, prev_hash || canonical JSON of the fields)``
with the key from ``RECORDINGS_LOG_KEY`` (plain SHA-256 when none is set); the first entry's
``prev_hash`` is 64 zeros. The database refuses UPDATE and DELETE on the table (migration
0006's triggers); :func:`verify_chain` detects an entry altered, removed or reordered by
someone who got past that. Only with a key is a rewrite of the chain from some entry on,
with every later hash recomputed, detected too: without the key nobody can compute them.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from recording.models import RecordingDeletion

GENESIS = "0" * 64


def entry_digest(prev_hash: str, *, seq: int, recording_sid: str, call_sid: str,
                 sha256: str | None, reason: str, locations: str, actor: str,
                 deleted_at: datetime, key: bytes | None = None) -> str:
    """Return the hex HMAC-SHA256 (with ``key``; plain SHA-256 without) that chains an entry
    with these fields to ``prev_hash``."""
    body = json.dumps({"seq": seq, "recording_sid": recording_sid, "call_sid": call_sid,
                       "sha256": sha256, "reason": reason, "locations": locations, "actor": actor,
                       "deleted_at": deleted_at.isoformat(timespec="microseconds")},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    message = (prev_hash + body).encode("ascii")
    if key:
        return hmac.new(key, message, hashlib.sha256).hexdigest()
    return hashlib.sha256(message).hexdigest()


class LogKeyMissing(ValueError):
    """RECORDINGS_LOG_KEY is not set but the deletion log was written with a key."""


class DeletionLog:
    """Appends entries within the caller's transaction. Only one writer at a time: on
    PostgreSQL the first append takes a transaction-scoped advisory lock (SQLite's write
    transactions are exclusive already), so concurrent purges extend one chain."""

    LOCK_ID = 0x5EC0_4D31

    def __init__(self, session: Session, key: bytes | None = None):
        self.session = session
        self.key = key
        self._head: tuple[int, str] | None = None
        self._rows: list[dict] = []

    def _load_head(self) -> tuple[int, str]:
        if self.session.get_bind().dialect.name == "postgresql":
            self.session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": self.LOCK_ID})
        last = self.session.execute(select(RecordingDeletion.seq, RecordingDeletion.entry_hash)
                                    .order_by(RecordingDeletion.seq.desc()).limit(1)).first()
        return (last.seq, last.entry_hash) if last else (0, GENESIS)

    def check_key(self) -> None:
        """Without a key, refuse to extend a chain whose last entry was written with one: the
        unkeyed entries appended would each read as altered under the key. Raises
        LogKeyMissing. (With a key nothing is checked here: verify-log reports a wrong key.)"""
        if self.key:
            return
        head = self.session.scalar(select(RecordingDeletion).order_by(RecordingDeletion.seq.desc()).limit(1))
        if head is None:
            return
        digest = entry_digest(head.prev_hash, seq=head.seq, recording_sid=head.recording_sid,
                              call_sid=head.call_sid, sha256=head.sha256, reason=head.reason,
                              locations=head.locations, actor=head.actor, deleted_at=head.deleted_at)
        if not hmac.compare_digest(digest, head.entry_hash):
            raise LogKeyMissing(
                f"RECORDINGS_LOG_KEY is not set, but the deletion log's last entry ({head.seq}) was "
                "written with a key (or altered): set RECORDINGS_LOG_KEY to the log's key; nothing "
                "was deleted")

    def begin(self) -> None:
        """Take the writer's lock (PostgreSQL) and read the chain's head, if not done yet in
        this transaction. Call it before choosing what to delete, so two purges never pick
        the same recordings."""
        if self._head is None:
            self._head = self._load_head()

    def append(self, *, recording_sid: str, call_sid: str, sha256: str | None, reason: str,
               locations: list[str], actor: str, deleted_at: datetime) -> dict:
        """Add one entry; returns its row values (a dict, for a bulk insert by :meth:`flush`)."""
        self.begin()
        seq, prev = self._head[0] + 1, self._head[1]
        where = "; ".join(locations)[:512]
        digest = entry_digest(prev, seq=seq, recording_sid=recording_sid, call_sid=call_sid,
                              sha256=sha256, reason=reason, locations=where, actor=actor,
                              deleted_at=deleted_at, key=self.key)
        self._head = (seq, digest)
        row = {"seq": seq, "recording_sid": recording_sid, "call_sid": call_sid, "sha256": sha256,
               "reason": reason, "locations": where, "actor": actor[:128], "deleted_at": deleted_at,
               "prev_hash": prev, "entry_hash": digest}
        self._rows.append(row)
        return row

    def flush(self) -> int:
        """Insert the appended entries (one statement); returns how many."""
        rows, self._rows = self._rows, []
        if rows:
            self.session.execute(RecordingDeletion.__table__.insert(), rows)
        return len(rows)

    def reset(self) -> None:
        """Forget the cached head (after a rollback)."""
        self._head = None
        self._rows = []


@dataclass
class ChainReport:
    """Result of :func:`verify_chain`: entries checked, and one message per broken link."""

    entries: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_chain(session: Session, batch: int = 5000, *, key: bytes | None = None) -> ChainReport:
    """Recompute every entry's hash (with the log ``key``, as written) in order of ``seq``;
    report each entry whose stored hash, link to its predecessor or sequence number does not
    fit (altered, removed, inserted, or hashed without the key)."""
    problems: list[str] = []
    prev, expected_seq, count, last_seq = GENESIS, 1, 0, 0
    while True:
        rows = session.scalars(select(RecordingDeletion).where(RecordingDeletion.seq > last_seq)
                               .order_by(RecordingDeletion.seq).limit(batch)).all()
        if not rows:
            break
        for row in rows:
            count += 1
            if row.seq != expected_seq:
                problems.append(f"entry {row.seq}: expected sequence number {expected_seq} "
                                "(an entry is missing or was inserted)")
            if row.prev_hash != prev:
                problems.append(f"entry {row.seq}: does not link to the entry before it")
            digest = entry_digest(row.prev_hash, seq=row.seq, recording_sid=row.recording_sid,
                                  call_sid=row.call_sid, sha256=row.sha256, reason=row.reason,
                                  locations=row.locations, actor=row.actor,
                                  deleted_at=row.deleted_at, key=key)
            if not hmac.compare_digest(digest, row.entry_hash):
                problems.append(f"entry {row.seq} ({row.recording_sid}): contents do not match "
                                "its hash (altered)")
            prev, expected_seq, last_seq = row.entry_hash, row.seq + 1, row.seq
        session.expunge_all()
    return ChainReport(count, problems)
