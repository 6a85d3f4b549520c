"""Historical import: another centre's call history into the call log (``flask calls import``).

Two formats:

* ``anonymous-bank``: the "Anonymous Bank" records (Technion SEE Lab, 1999), either a raw
  monthly TSV (gzip or not; parsed by :mod:`simulator.data`, which handles the file's quirks) or
  the normalised CSV derived from them (``anonymous_bank_1999_available_months_normalised.csv``;
  its 17 original fields are parsed by the same code). A row becomes one ``calls`` row keyed
  ``anonymous-bank:<vru+line>:<call_id>:<YYYY-MM-DD>``, the same key from either file, so
  importing the raw months and the normalised file adds every call once.
* ``csv``: the documented generic format (README, "Importing call history"; example in
  ``data/examples/call-history.csv``), one row per call, keyed ``<key prefix>:<call_id>``.

Every imported row has ``source = "imported"``, ``status = "ended"`` and a ``call_sid`` of
``IM`` + 32 hex digits of the SHA-256 of its import key. Rows are written in batches with
``INSERT … ON CONFLICT (import_key) DO NOTHING`` (the same SQL on PostgreSQL and SQLite), so
importing a file again adds nothing. Each file is one transaction.

Local times: the files hold the centre's wall-clock times; they are read in the time zone given
(``--timezone``, default Europe/Tallinn) and stored in UTC. A wall time that does not exist
(the hour skipped in spring) or occurs twice (the hour repeated in autumn) is resolved with
``fold=0``: a skipped time is read with the offset in force *before* the change (03:30 on a
spring-forward day in Tallinn is 01:30 UTC, i.e. 04:30 summer time), a repeated time as its
*first* occurrence (summer time). Times in the generic CSV that carry an explicit offset are
taken as they are.

Bad rows: by default a file with any bad row is refused as a whole (rolled back, every bad line
reported as ``FILE:LINE: message``); with ``skip_bad_rows`` its good rows are imported and the
bad ones reported, to be corrected and imported again (which adds only them).
"""
from __future__ import annotations

import csv
import hashlib
import gzip
import io
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Callable, Iterator
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, select, text
from sqlalchemy.orm import Session

from db import UTCDateTime
from ivr.calls import fill_next_offers
from line_config import normalise_number
from routing.models import Agent, Queue
from simulator import data as bank

FORMATS = ("anonymous-bank", "csv")
BATCH_SIZE = 5000
SOURCE = "imported"
BANK_KEY_PREFIX = "anonymous-bank"
BANK_QUEUE_PREFIX = "bank."
BANK_AGENT_PREFIX = "bank."
UNDETERMINED_LANGUAGE = "und"
IMPORTED_ENDPOINT_KIND = "none"
IMPORTED_ENDPOINT = "imported"

# Generic CSV: required and optional columns (any other column refuses the file).
CSV_REQUIRED = ("call_id", "arrived_at", "ended_at")
CSV_OPTIONAL = ("caller", "queue", "language", "topic", "ivr_exited_at", "queue_entered_at",
                "answered_at", "talk_seconds", "hold_seconds", "wrap_up_seconds", "agent",
                "outcome")
CSV_COLUMNS = CSV_REQUIRED + CSV_OPTIONAL
# Outcomes a generic CSV row may give; answered and abandoned calls were offered (they need
# queue_entered_at), the others were not (they must not have it).
CSV_OFFERED_OUTCOMES = ("answered", "abandoned")
CSV_NOT_OFFERED_OUTCOMES = ("ivr_abandoned", "out_of_hours", "referred")
CSV_OUTCOMES = CSV_OFFERED_OUTCOMES + CSV_NOT_OFFERED_OUTCOMES
# A queue named like the service's own (``<language>.<topic>``) can be created from its name.
_QUEUE_NAME = re.compile(r"^([a-z]{2,3})\.([A-Za-z0-9_-]{1,32})$")
_MAX_CALL_ID = 100

_INSERT_COLUMNS = ("call_sid", "from_number", "to_number", "language", "topic", "queue_id",
                   "agent_id", "priority", "status", "outcome", "arrived_at", "ivr_exited_at",
                   "queue_entered_at", "answered_at", "ended_at", "talk_seconds",
                   "no_input_count", "invalid_input_count", "ivr_struggle", "last_event_at",
                   "closed_by_sweep", "source", "escalated", "caller_key", "import_key",
                   "hold_seconds", "wrap_up_seconds")
_TIME_COLUMNS = ("arrived_at", "ivr_exited_at", "queue_entered_at", "answered_at", "ended_at",
                 "last_event_at")
# One statement for both databases; UTCDateTime binds store UTC the way the ORM does.
_INSERT = text(
    f"INSERT INTO calls ({', '.join(_INSERT_COLUMNS)}) "
    f"VALUES ({', '.join(':' + c for c in _INSERT_COLUMNS)}) "
    "ON CONFLICT (import_key) DO NOTHING"
).bindparams(*(bindparam(c, type_=UTCDateTime) for c in _TIME_COLUMNS))


class ImportFileError(ValueError):
    """A whole file cannot be read as the format given (unknown header, wrong columns); the
    message names the file."""


class RowError(ValueError):
    """One row is bad; the message says why and names the column (the caller adds file and
    line)."""


@dataclass(frozen=True)
class BadRow:
    """A row that was not imported: ``path``, ``line`` (1-based, the header is line 1), why."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


@dataclass
class FileSummary:
    """Counts for one file.

    ``read``: data rows read; ``imported``: rows added to the call log; ``already_present``:
    rows whose call was imported before (same import key); ``phantom``: PHANTOM rows skipped
    (anonymous-bank); ``ivr_only``: rows imported or present that never reached a queue (not
    offered); ``bad``: rows not imported, with file and line. ``refused``: the file had bad rows
    and was rolled back as a whole (then ``imported`` and ``already_present`` are 0).
    ``seconds``: wall-clock time the file took.
    """

    path: str
    format: str
    read: int = 0
    imported: int = 0
    already_present: int = 0
    phantom: int = 0
    ivr_only: int = 0
    bad: list[BadRow] = field(default_factory=list)
    refused: bool = False
    seconds: float = 0.0


def import_key_sid(import_key: str) -> str:
    """The ``call_sid`` of an imported call: ``IM`` + the first 32 hex digits of SHA-256(key)."""
    return "IM" + hashlib.sha256(import_key.encode("utf-8")).hexdigest()[:32]


def local_to_utc(local: datetime, tz: ZoneInfo) -> datetime:
    """Read the naive wall-clock time ``local`` in ``tz`` and return it as an aware UTC datetime.

    Deterministic at DST changes (``fold=0``): a time in the spring gap gets the offset in force
    before the change (it lands one hour later on the clock: Tallinn 03:30 → 01:30 UTC); a time
    in the repeated autumn hour is its first occurrence (summer time). Raises ValueError if
    ``local`` is aware.
    """
    if local.tzinfo is not None:
        raise ValueError("local_to_utc takes a naive wall-clock time")
    return local.replace(tzinfo=tz, fold=0).astimezone(timezone.utc)


def bank_import_key(record: bank.CallRecord) -> str:
    """``anonymous-bank:<vru+line>:<call_id>:<YYYY-MM-DD>`` (entry date): unique over the three
    stored months, and the same whether the row came from the raw TSV or the normalised CSV."""
    return f"{BANK_KEY_PREFIX}:{record.vru_line}:{record.call_id}:{record.date.isoformat()}"


def bank_caller_key(customer_id: str) -> str | None:
    """``anonymous-bank:<customer_id>``; None for 0 (unidentified) and for ids that are not all
    digits (the ids mangled into scientific notation, unusable for linking)."""
    customer_id = customer_id.strip()
    if not customer_id.isdigit() or int(customer_id) == 0:
        return None
    return f"{BANK_KEY_PREFIX}:{int(customer_id)}"


class _Resolver:
    """Finds or creates (once per run) the queues and agents imported rows refer to."""

    def __init__(self, session: Session):
        self.session = session
        self.queues: dict[str, Queue] = {}
        self.agents: dict[str, int] = {}

    def queue(self, name: str, language: str | None = None, topic: str | None = None) -> Queue:
        """The queue called ``name``; created with ``language``/``topic`` if it does not exist
        (from a ``<language>.<topic>`` name when they are not given). Raises RowError."""
        found = self.queues.get(name)
        if found is not None:
            return found
        found = self.session.scalar(select(Queue).where(Queue.name == name))
        if found is None:
            if not language or not topic:
                match = _QUEUE_NAME.match(name)
                if match is None:
                    raise RowError(f"queue {name!r} does not exist; give the language and "
                                    "topic columns to create it")
                language, topic = language or match.group(1), topic or match.group(2)
            if len(name) > 64 or len(language) > 8 or len(topic) > 32:
                raise RowError(f"queue {name!r}: name (64), language (8) or topic (32 "
                                "characters) too long")
            other = self.session.scalar(select(Queue.name).where(Queue.language == language,
                                                                 Queue.topic == topic))
            if other is not None:
                raise RowError(f"queue {name!r} does not exist and queue {other!r} already "
                                f"serves language {language!r}, topic {topic!r}")
            found = Queue(name=name, language=language, topic=topic)
            self.session.add(found)
            self.session.flush()
        self.queues[name] = found
        return found

    def agent(self, name: str) -> int:
        """The id of the agent called ``name``, created (offline, no endpoint) if new."""
        found = self.agents.get(name)
        if found is not None:
            return found
        if len(name) > 64:
            raise RowError(f"agent name {name!r} is longer than 64 characters")
        found = self.session.scalar(select(Agent.id).where(Agent.name == name))
        if found is None:
            agent = Agent(name=name, endpoint_kind=IMPORTED_ENDPOINT_KIND,
                          endpoint=IMPORTED_ENDPOINT, state="offline")
            self.session.add(agent)
            self.session.flush()
            found = agent.id
        self.agents[name] = found
        return found


def _row(import_key: str, *, arrived_at: datetime, ended_at: datetime, outcome: str,
         ivr_exited_at: datetime | None = None, queue_entered_at: datetime | None = None,
         answered_at: datetime | None = None, talk_seconds: int | None = None,
         hold_seconds: int | None = None, wrap_up_seconds: int | None = None,
         queue: Queue | None = None, language: str | None = None, topic: str | None = None,
         agent_id: int | None = None, caller_key: str | None = None, from_number: str = "",
         priority: int = 0) -> dict:
    offered = queue_entered_at is not None
    return {
        "call_sid": import_key_sid(import_key), "from_number": from_number[:64], "to_number": "",
        "language": queue.language if queue is not None else language,
        "topic": queue.topic if queue is not None else topic,
        "queue_id": queue.id if queue is not None and offered else None,
        "agent_id": agent_id, "priority": priority, "status": "ended", "outcome": outcome,
        "arrived_at": arrived_at, "ivr_exited_at": ivr_exited_at,
        "queue_entered_at": queue_entered_at, "answered_at": answered_at, "ended_at": ended_at,
        "talk_seconds": talk_seconds, "no_input_count": 0, "invalid_input_count": 0,
        "ivr_struggle": False, "last_event_at": ended_at, "closed_by_sweep": False,
        "source": SOURCE, "escalated": False, "caller_key": caller_key,
        "import_key": import_key, "hold_seconds": hold_seconds,
        "wrap_up_seconds": wrap_up_seconds,
    }


# --- anonymous-bank -------------------------------------------------------------------------

PHANTOM = object()  # what a row reader yields for a PHANTOM row


def bank_record_row(record: bank.CallRecord, tz: ZoneInfo, resolver: _Resolver) -> dict | None:
    """Map one parsed Anonymous Bank record to the values of a ``calls`` row (None for PHANTOM).

    * arrived_at = vru_entry; ivr_exited_at = vru_exit when the call left the VRU for a queue
      or an agent (None for a hang-up in the VRU, as for live calls);
    * queued (``q_start``/``q_exit`` not the empty pair): queue_entered_at = q_start;
      AGENT → ``answered``, answered_at = q_exit (so the wait is the file's q_time),
      ended_at = ser_exit, talk = ser_time;
      HANG → ``abandoned``, ended_at = q_exit;
    * AGENT without queueing (sent straight to an agent, offered with wait 0):
      queue_entered_at = answered_at = ser_start, ended_at = ser_exit;
    * HANG without queueing → ``ivr_abandoned`` (not offered): ended_at = vru_exit, no queue;
    * an AGENT row without service times (rare) is answered when it left the queue (q_exit) or
      the VRU, with talk time 0.

    The files' seconds-resolution clocks disagree by a second or two, so ended_at is never
    put before answered_at.

    ``type`` → queue ``bank.<type>`` (language ``und``, topic the type code; queue_id only for
    offered calls), ``server`` → agent ``bank.<server>`` (NO_SERVER: none), priority 2 → 1
    (high), customer id → caller_key (see :func:`bank_caller_key`). Times are UTC (see
    :func:`local_to_utc`).
    """
    if record.phantom:
        return None
    utc = lambda moment: None if moment is None else local_to_utc(moment, tz)  # noqa: E731
    queue = resolver.queue(BANK_QUEUE_PREFIX + record.type, UNDETERMINED_LANGUAGE, record.type)
    arrived, vru_exit = utc(record.vru_entry), utc(record.vru_exit)
    ivr_exited = queue_entered = answered = None
    talk = None
    if record.outcome == "AGENT":
        outcome = "answered"
        ivr_exited = vru_exit
        if record.queued:
            # The wait is the file's own q_time (q_exit − q_start): a queued call is answered
            # when it leaves the queue. ser_start is usually 0–2 s earlier (the data README:
            # second-resolution clocks), which would shorten waits against q_time. Durations
            # come from the file, anchored at the queue entry, so a call that crosses a DST
            # change keeps its real length.
            answered = utc(record.q_start) + timedelta(seconds=record.q_time)
        else:
            answered = utc(record.ser_start if record.ser_start is not None else record.vru_exit)
        if record.ser_start is not None and record.ser_exit is not None:
            # Service starts where the file says relative to leaving the queue (0–2 s before,
            # usually) and lasts ser_time.
            left = record.q_exit if record.queued else record.ser_start
            start = answered + (record.ser_start - left)
            ended = max(answered, start + timedelta(seconds=max(record.ser_time, 0)))
        else:
            ended = answered
        queue_entered = utc(record.q_start) if record.queued else answered
        talk = record.ser_time if record.ser_start is not None else 0
    elif record.queued:
        outcome = "abandoned"
        ivr_exited = vru_exit
        queue_entered = utc(record.q_start)
        ended = queue_entered + timedelta(seconds=record.q_time)
    else:
        outcome = "ivr_abandoned"
        ended = vru_exit
    agent_id = None
    if record.outcome == "AGENT" and record.has_server:
        agent_id = resolver.agent(BANK_AGENT_PREFIX + record.server)
    return _row(bank_import_key(record), arrived_at=arrived, ended_at=ended, outcome=outcome,
                ivr_exited_at=ivr_exited, queue_entered_at=queue_entered, answered_at=answered,
                talk_seconds=talk, queue=queue, agent_id=agent_id,
                caller_key=bank_caller_key(record.customer_id),
                priority=1 if record.priority == 2 else 0)


def _bank_error(exc: bank.DataError, line: int) -> str:
    return str(exc).removeprefix(f"line {line}: ")


def _read_bank(path: Path, tz: ZoneInfo, resolver: _Resolver) -> Iterator[tuple[int, object]]:
    """Yield (line, row dict | PHANTOM | RowError) for a raw TSV or the normalised CSV."""
    with bank.open_text(path) as handle:
        header = handle.readline().rstrip("\r\n")
        if header.split("\t") == list(bank.FIELDS):
            for number, raw in enumerate(handle, start=2):
                raw = raw.rstrip("\r\n")
                if raw.strip():
                    yield number, _bank_parsed(raw, number, tz, resolver)
            return
        names = next(csv.reader([header]), [])
        missing = [name for name in bank.FIELDS if name not in names]
        if "," not in header or missing:
            raise ImportFileError(
                f"{path}: neither an Anonymous Bank raw TSV (tab-separated header "
                f"{'/'.join(bank.FIELDS[:3])}/…) nor its normalised CSV"
                + (f" (missing columns: {', '.join(missing)})" if "," in header else ""))
        positions = [names.index(name) for name in bank.FIELDS]
        reader = csv.reader(handle)
        for values in reader:
            number = reader.line_num + 1  # the header was read before the reader started
            if not any(v.strip() for v in values):
                continue
            if len(values) != len(names):
                yield number, RowError(f"{len(values)} fields, expected {len(names)}")
                continue
            raw = "\t".join(values[i] for i in positions)
            yield number, _bank_parsed(raw, number, tz, resolver)


def _bank_parsed(raw: str, number: int, tz: ZoneInfo, resolver: _Resolver) -> object:
    try:
        record = bank.parse_row(raw, number)
    except bank.DataError as exc:
        return RowError(_bank_error(exc, number))
    try:
        row = bank_record_row(record, tz, resolver)
    except RowError as exc:
        return exc
    return PHANTOM if row is None else row


# --- generic CSV ----------------------------------------------------------------------------

def _open_csv_text(path: Path) -> io.TextIOBase:
    raw = path.open("rb")
    if raw.read(2) == b"\x1f\x8b":
        raw.seek(0)
        return io.TextIOWrapper(gzip.GzipFile(fileobj=raw), encoding="utf-8-sig", newline="")
    raw.seek(0)
    return io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")


def _csv_time(values: dict, column: str, tz: ZoneInfo) -> datetime | None:
    text_value = (values.get(column) or "").strip()
    if not text_value:
        return None
    try:
        moment = datetime.fromisoformat(text_value)
    except ValueError:
        raise RowError(f"{column} {text_value!r} is not an ISO 8601 date and time") from None
    if len(text_value) <= 10:
        raise RowError(f"{column} {text_value!r} has no time of day")
    if moment.tzinfo is None:
        return local_to_utc(moment, tz)
    return moment.astimezone(timezone.utc)


def _csv_seconds(values: dict, column: str) -> int | None:
    text_value = (values.get(column) or "").strip()
    if not text_value:
        return None
    try:
        number = Decimal(text_value)
    except InvalidOperation:
        raise RowError(f"{column} {text_value!r} is not a number of seconds") from None
    if not number.is_finite() or number < 0 or number > 10 ** 7:
        raise RowError(f"{column} {text_value!r} is not a number of seconds ≥ 0")
    return int(number.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def csv_row(values: dict, tz: ZoneInfo, resolver: _Resolver, *, key_prefix: str = "csv",
            region: str = "EE") -> dict:
    """Map one generic-CSV row (column → text) to the values of a ``calls`` row.

    Times: ISO 8601; naive ones are wall-clock times in ``tz`` (:func:`local_to_utc`), ones
    with an offset (``+03:00``, ``Z``) are taken as given; stored in UTC. Seconds columns are
    numbers ≥ 0, rounded to whole seconds. ``outcome`` defaults to answered (answered_at
    given), abandoned (queue_entered_at given) or ivr_abandoned. ``talk_seconds`` of an answered
    call defaults to ended_at − answered_at. ``caller`` is normalised to E.164 (``region``);
    withheld or invalid numbers give no caller_key. Raises RowError naming the column.
    """
    call_id = (values.get("call_id") or "").strip()
    if not call_id:
        raise RowError("call_id is empty")
    if len(call_id) > _MAX_CALL_ID:
        raise RowError(f"call_id is longer than {_MAX_CALL_ID} characters")
    times = {column: _csv_time(values, column, tz) for column in
             ("arrived_at", "ivr_exited_at", "queue_entered_at", "answered_at", "ended_at")}
    for column in CSV_REQUIRED[1:]:
        if times[column] is None:
            raise RowError(f"{column} is empty")
    order = ("arrived_at", "ivr_exited_at", "queue_entered_at", "answered_at", "ended_at")
    present = [(c, times[c]) for c in order if times[c] is not None]
    for (first, early), (second, late) in zip(present, present[1:]):
        if late < early:
            raise RowError(f"{second} ({late.isoformat()}) is before {first} "
                            f"({early.isoformat()})")
    outcome = (values.get("outcome") or "").strip().lower()
    if not outcome:
        outcome = ("answered" if times["answered_at"] is not None else
                   "abandoned" if times["queue_entered_at"] is not None else "ivr_abandoned")
    if outcome not in CSV_OUTCOMES:
        raise RowError(f"outcome {outcome!r} is not one of {', '.join(CSV_OUTCOMES)}")
    if outcome == "answered" and times["answered_at"] is None:
        raise RowError("outcome answered needs answered_at")
    if outcome != "answered" and times["answered_at"] is not None:
        raise RowError(f"outcome {outcome} but answered_at is given")
    if outcome in CSV_OFFERED_OUTCOMES and times["queue_entered_at"] is None:
        raise RowError(f"outcome {outcome} needs queue_entered_at (the offer; for a call sent "
                        "straight to an agent, the same time as answered_at)")
    if outcome in CSV_NOT_OFFERED_OUTCOMES and times["queue_entered_at"] is not None:
        raise RowError(f"outcome {outcome} is not offered but queue_entered_at is given")
    queue_name = (values.get("queue") or "").strip()
    if times["queue_entered_at"] is not None and not queue_name:
        raise RowError("queue is empty but queue_entered_at is given")
    talk = _csv_seconds(values, "talk_seconds")
    hold = _csv_seconds(values, "hold_seconds")
    wrap_up = _csv_seconds(values, "wrap_up_seconds")
    if outcome != "answered" and any(v for v in (talk, hold, wrap_up)):
        raise RowError(f"talk, hold or wrap-up seconds given for a call that was not answered "
                        f"({outcome})")
    if outcome == "answered" and talk is None:
        talk = round((times["ended_at"] - times["answered_at"]).total_seconds())
    caller = (values.get("caller") or "").strip()
    caller_key = normalise_number(caller, region)
    language = (values.get("language") or "").strip() or None
    topic = (values.get("topic") or "").strip() or None
    queue = resolver.queue(queue_name, language, topic) if queue_name else None
    agent_name = (values.get("agent") or "").strip()
    agent_id = resolver.agent(agent_name) if agent_name else None
    ivr_exited = times["ivr_exited_at"]
    if ivr_exited is None and times["queue_entered_at"] is not None:
        ivr_exited = times["queue_entered_at"]
    return _row(f"{key_prefix}:{call_id}", arrived_at=times["arrived_at"],
                ended_at=times["ended_at"], outcome=outcome, ivr_exited_at=ivr_exited,
                queue_entered_at=times["queue_entered_at"], answered_at=times["answered_at"],
                talk_seconds=talk, hold_seconds=hold, wrap_up_seconds=wrap_up, queue=queue,
                language=language, topic=topic, agent_id=agent_id, caller_key=caller_key,
                from_number=caller_key or caller)


def _read_csv(path: Path, tz: ZoneInfo, resolver: _Resolver, key_prefix: str,
              region: str) -> Iterator[tuple[int, object]]:
    with _open_csv_text(path) as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise ImportFileError(f"{path}: line 1: cannot read the header: {exc}") from None
        if header is None:
            raise ImportFileError(f"{path}: empty file (expected a header line)")
        names = [name.strip().lower() for name in header]
        unknown = [name for name in names if name not in CSV_COLUMNS]
        missing = [name for name in CSV_REQUIRED if name not in names]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if unknown or missing or repeated:
            problems = ([f"unknown column(s) {', '.join(map(repr, unknown))}"] if unknown else []) \
                + ([f"missing column(s) {', '.join(missing)}"] if missing else []) \
                + ([f"column(s) given twice: {', '.join(repeated)}"] if repeated else [])
            raise ImportFileError(f"{path}: line 1: {'; '.join(problems)} (columns: "
                                  f"{', '.join(CSV_COLUMNS)})")
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except (csv.Error, UnicodeDecodeError) as exc:
                raise ImportFileError(f"{path}: line {reader.line_num + 1}: not readable as "
                                      f"CSV: {exc}") from None
            number = reader.line_num
            if not any(v.strip() for v in fields):
                continue
            if len(fields) != len(names):
                yield number, RowError(f"{len(fields)} fields, expected {len(names)}")
                continue
            try:
                yield number, csv_row(dict(zip(names, fields)), tz, resolver,
                                      key_prefix=key_prefix, region=region)
            except RowError as exc:
                yield number, exc


# --- the import -----------------------------------------------------------------------------

def _insert(session: Session, rows: list[dict]) -> int:
    """Insert ``rows``; returns how many were new (the rest were already present)."""
    if not rows:
        return 0
    return session.execute(_INSERT, rows).rowcount


def import_file(session: Session, path: str | Path, fmt: str, *, tz: ZoneInfo,
                skip_bad_rows: bool = False, key_prefix: str = "csv", region: str = "EE",
                batch_size: int = BATCH_SIZE,
                progress: Callable[[FileSummary], None] | None = None) -> FileSummary:
    """Import the call history in the file at ``path`` (format ``anonymous-bank`` or ``csv``).

    Rows are inserted ``batch_size`` at a time (on conflict of ``import_key`` nothing happens)
    inside one transaction, committed at the end; ``progress`` is called with the running
    summary after every batch. With bad rows the file is rolled back and marked ``refused``
    unless ``skip_bad_rows``, in which case the good rows are committed. The CSV format's
    import keys are ``<key_prefix>:<call_id>``; its caller numbers are read in ``region``.

    Returns the :class:`FileSummary`. Raises ImportFileError when the file is not of the
    format (nothing imported from it), OSError when it cannot be read, ValueError for an
    unknown ``fmt``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: one of {', '.join(FORMATS)}")
    if not 1 <= batch_size <= 100_000:
        raise ValueError("batch_size must be between 1 and 100000")
    if len(key_prefix) > 24 or not key_prefix:
        raise ValueError("key_prefix must have 1 to 24 characters")
    path = Path(path)
    started = time.monotonic()
    summary = FileSummary(path=str(path), format=fmt)
    resolver = _Resolver(session)
    rows_in = (_read_bank(path, tz, resolver) if fmt == "anonymous-bank"
               else _read_csv(path, tz, resolver, key_prefix, region))
    seen: dict[str, int] = {}
    batch: list[dict] = []
    batch_ivr_only = 0

    def flush() -> None:
        nonlocal batch, batch_ivr_only
        if batch and (skip_bad_rows or not summary.bad):
            inserted = _insert(session, batch)
            summary.imported += inserted
            summary.already_present += len(batch) - inserted
            summary.ivr_only += batch_ivr_only
        batch, batch_ivr_only = [], 0
        if progress is not None:
            progress(summary)

    try:
        for number, item in rows_in:
            summary.read += 1
            if item is PHANTOM:
                summary.phantom += 1
            elif isinstance(item, RowError):
                summary.bad.append(BadRow(str(path), number, str(item)))
            else:
                key = item["import_key"]
                first = seen.setdefault(key, number)
                if first != number:
                    summary.bad.append(BadRow(str(path), number,
                                              f"the same call as line {first} ({key})"))
                    continue
                batch.append(item)
                batch_ivr_only += item["queue_entered_at"] is None
                if len(batch) >= batch_size:
                    flush()
        flush()
    except BaseException:
        session.rollback()
        raise
    if summary.bad and not skip_bad_rows:
        session.rollback()
        summary.refused = True
        summary.imported = summary.already_present = summary.ivr_only = 0
    else:
        # Repeat-contact FCR reads each call's next offer from the same caller.
        fill_next_offers(session)
        session.commit()
    summary.seconds = time.monotonic() - started
    return summary
