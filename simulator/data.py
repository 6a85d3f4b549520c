"""Reader for the "Anonymous Bank" call records (Technion SEE Lab, 1999) and their day figures.

The raw format is tab-separated text with a header line, one row per call, 17 fields (see
``data/anonymous-bank/README.md``). The reader handles the documented quirks:

- ``PHANTOM`` rows are read (``outcome == "PHANTOM"``) but count nowhere; callers skip them;
- ``0:00:00`` means "did not happen" only when *both* times of a pair (queue, service) are
  ``0:00:00`` (one call genuinely started service at midnight);
- times past midnight keep the entry date in ``date``: a time more than 12 h earlier than the
  previous event of the call is moved to the next day;
- two October rows have spaces instead of a tab between ``priority`` and ``type``;
- ``vru_time`` may be negative (clock skew); it is kept as given.

Times in the file are the centre's local wall-clock times; the simulator treats them as
Europe/Tallinn local time on the same calendar date. Datetimes here are naive local times.
"""
from __future__ import annotations

import gzip
import io
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import IO, Iterable, Iterator

FIELDS = ("vru+line", "call_id", "customer_id", "priority", "type", "date", "vru_entry",
          "vru_exit", "vru_time", "q_start", "q_exit", "q_time", "outcome", "ser_start",
          "ser_exit", "ser_time", "server")
OUTCOMES = ("AGENT", "HANG", "PHANTOM")
EMPTY_TIME = "0:00:00"
NO_SERVER = "NO_SERVER"
ROLL_OVER = timedelta(hours=12)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO_ROOT / "data" / "anonymous-bank" / "1999-10-excerpt.tsv.gz"


class DataError(ValueError):
    """A row cannot be read; the message names the line (the header is line 1)."""


@dataclass(frozen=True)
class CallRecord:
    """One row. Times are naive local datetimes with midnight roll-over applied; None = did not happen."""

    line: int
    vru_line: str
    call_id: str
    customer_id: str
    priority: int
    type: str
    date: date
    vru_entry: datetime
    vru_exit: datetime
    vru_time: int
    q_start: datetime | None
    q_exit: datetime | None
    q_time: int
    outcome: str
    ser_start: datetime | None
    ser_exit: datetime | None
    ser_time: int
    server: str
    repaired: bool = False

    @property
    def key(self) -> tuple[str, str]:
        """(``vru+line``, ``call_id``): unique within a month."""
        return (self.vru_line, self.call_id)

    @property
    def phantom(self) -> bool:
        return self.outcome == "PHANTOM"

    @property
    def queued(self) -> bool:
        """The call joined the queue (the queue pair is not the empty sentinel)."""
        return self.q_start is not None

    @property
    def offered(self) -> bool:
        """Reached a queue or went straight to an agent (PHANTOM never counts)."""
        return not self.phantom and (self.outcome == "AGENT" or self.queued)

    @property
    def answered(self) -> bool:
        return self.outcome == "AGENT"

    @property
    def abandoned(self) -> bool:
        """Offered, then hung up before an agent answered."""
        return self.offered and self.outcome == "HANG"

    @property
    def ivr_only(self) -> bool:
        """Hung up in the VRU, never queued."""
        return self.outcome == "HANG" and not self.queued

    @property
    def has_server(self) -> bool:
        return self.server != NO_SERVER and self.server != ""


def _seconds(text: str, line: int, name: str) -> int:
    try:
        hours, minutes, seconds = text.split(":")
        value = int(hours) * 3600 + int(minutes) * 60 + int(seconds)
    except ValueError:
        raise DataError(f"line {line}: {name} {text!r} is not H:MM:SS") from None
    if not 0 <= value < 86400 or not (0 <= int(minutes) < 60 and 0 <= int(seconds) < 60):
        raise DataError(f"line {line}: {name} {text!r} is not a time of day")
    return value


def _int(text: str, line: int, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DataError(f"line {line}: {name} {text!r} is not an integer") from None


def _split(raw: str, line: int) -> tuple[list[str], bool]:
    fields = raw.split("\t")
    if len(fields) == len(FIELDS):
        return fields, False
    if len(fields) == len(FIELDS) - 1:
        # Documented malformed rows: "0       NW" — spaces instead of a tab after the priority.
        parts = fields[3].split()
        if len(parts) == 2:
            return fields[:3] + parts + fields[4:], True
    raise DataError(f"line {line}: {len(fields)} fields, expected {len(FIELDS)}")


def parse_row(raw: str, line: int) -> CallRecord:
    """Parse one data row (without its line end). Raises DataError naming the line."""
    fields, repaired = _split(raw, line)
    values = dict(zip(FIELDS, (f.strip() for f in fields)))
    try:
        day = datetime.strptime(values["date"], "%y%m%d").date()
    except ValueError:
        raise DataError(f"line {line}: date {values['date']!r} is not YYMMDD") from None
    outcome = values["outcome"]
    if outcome not in OUTCOMES:
        raise DataError(f"line {line}: outcome {outcome!r} is not one of {', '.join(OUTCOMES)}")
    midnight = datetime.combine(day, datetime.min.time())
    entry = midnight + timedelta(seconds=_seconds(values["vru_entry"], line, "vru_entry"))
    previous = entry

    def place(name: str) -> datetime:
        nonlocal previous
        moment = midnight + timedelta(seconds=_seconds(values[name], line, name))
        while moment < previous - ROLL_OVER:
            moment += timedelta(days=1)
        previous = moment
        return moment

    def pair(start: str, end: str) -> tuple[datetime | None, datetime | None]:
        if values[start] == EMPTY_TIME and values[end] == EMPTY_TIME:
            return None, None
        first = place(start)
        return first, place(end)

    vru_exit = place("vru_exit")
    q_start, q_exit = pair("q_start", "q_exit")
    ser_start, ser_exit = pair("ser_start", "ser_exit")
    priority = _int(values["priority"], line, "priority")
    return CallRecord(
        line=line, vru_line=values["vru+line"], call_id=values["call_id"],
        customer_id=values["customer_id"], priority=priority, type=values["type"], date=day,
        vru_entry=entry, vru_exit=vru_exit, vru_time=_int(values["vru_time"], line, "vru_time"),
        q_start=q_start, q_exit=q_exit, q_time=_int(values["q_time"], line, "q_time"),
        outcome=outcome, ser_start=ser_start, ser_exit=ser_exit,
        ser_time=_int(values["ser_time"], line, "ser_time"), server=values["server"],
        repaired=repaired)


def _open_text(path: Path) -> IO[str]:
    raw = path.open("rb")
    if raw.read(2) == b"\x1f\x8b":
        raw.seek(0)
        return io.TextIOWrapper(gzip.GzipFile(fileobj=raw), encoding="latin-1", newline="")
    raw.seek(0)
    return io.TextIOWrapper(raw, encoding="latin-1", newline="")


def open_text(path: str | Path) -> IO[str]:
    """Open the file at ``path`` (gzip or plain) as Latin-1 text with its line ends kept.

    For readers that go row by row (the historical import); raises OSError for the file.
    """
    return _open_text(Path(path))


def parse_lines(lines: Iterable[str]) -> Iterator[CallRecord]:
    """Parse raw lines (header first; CRLF or LF line ends); blank lines are skipped."""
    iterator = iter(lines)
    header = next(iterator, None)
    if header is None:
        return
    names = tuple(header.rstrip("\r\n").split("\t"))
    if names != FIELDS:
        raise DataError(f"line 1: header {names!r} is not the Anonymous Bank header")
    for number, raw in enumerate(iterator, start=2):
        raw = raw.rstrip("\r\n")
        if raw.strip():
            yield parse_row(raw, number)


def read_records(path: str | Path, day: date | None = None) -> list[CallRecord]:
    """Read every row of the file at ``path`` (raw TSV, gzip or not); only ``day``'s if given.

    Rows keep file order. Raises DataError for a row that cannot be read, OSError for the file.
    """
    with _open_text(Path(path)) as handle:
        records = parse_lines(handle)
        return [r for r in records if day is None or r.date == day]


def days_in(records: Iterable[CallRecord]) -> list[date]:
    """The distinct entry dates, ascending."""
    return sorted({r.date for r in records})


@dataclass(frozen=True)
class DayFigures:
    """Input-side figures for a set of rows (normally one day), computed straight from the file.

    ``offered``: not PHANTOM and (AGENT, or queued); ``answered``: AGENT; ``abandoned``:
    offered and HANG; ``ivr_only``: HANG never queued. ``service_level``: answered with
    ``q_time`` ≤ threshold / offered (None without offered calls); ``asa``: mean ``q_time`` of
    answered calls in seconds (a direct connection waits 0 s).
    """

    rows: int
    phantom: int
    offered: int
    answered: int
    abandoned: int
    ivr_only: int
    answered_within: int
    threshold: int
    service_level: float | None
    asa: float | None


def day_figures(records: Iterable[CallRecord], threshold: int = 20) -> DayFigures:
    """Count offered, answered, abandoned, IVR-only calls, service level and ASA of ``records``."""
    rows = phantom = offered = answered = abandoned = ivr_only = within = 0
    total_wait = 0
    for record in records:
        rows += 1
        if record.phantom:
            phantom += 1
            continue
        if record.offered:
            offered += 1
        if record.answered:
            answered += 1
            total_wait += record.q_time
            if record.q_time <= threshold:
                within += 1
        elif record.abandoned:
            abandoned += 1
        if record.ivr_only:
            ivr_only += 1
    return DayFigures(rows=rows, phantom=phantom, offered=offered, answered=answered,
                      abandoned=abandoned, ivr_only=ivr_only, answered_within=within,
                      threshold=threshold,
                      service_level=within / offered if offered else None,
                      asa=total_wait / answered if answered else None)
