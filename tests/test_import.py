"""Historical import (``flask calls import``): Anonymous Bank raw TSV and normalised CSV, the
generic CSV format, idempotence, local time → UTC (summer, winter, DST gap), bad rows."""
from __future__ import annotations

import csv
import gzip
import io
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select

from ivr.models import Call
from reporting.importer import import_key_sid
from routing.models import Agent, Queue

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_CSV = ROOT / "data" / "examples" / "call-history.csv"
SHARED = ROOT.parent / "shared" / "data" / "anonymous-bank"
UTC = timezone.utc

HEADER = ("vru+line\tcall_id\tcustomer_id\tpriority\ttype\tdate\tvru_entry\tvru_exit\tvru_time\t"
          "q_start\tq_exit\tq_time\toutcome\tser_start\tser_exit\tser_time\tserver")
# One line each (tab-separated like the original; CRLF like January). The comment is the
# line number in the file (header = 1).
RAW_ROWS = [
    # 2: queued, hung up after 153 s; high priority; winter time (+02:00)
    "AA0101\t33116\t9664491\t2\tPS\t990101\t0:00:31\t0:00:36\t5\t0:00:36\t0:03:09\t153\tHANG\t0:00:00\t0:00:00\t0\tNO_SERVER",
    # 3: hung up in the VRU (never offered), customer 0; the spaces-for-a-tab quirk
    "AA0101\t33117\t0\t0       NW\t990101\t0:34:12\t0:34:23\t11\t0:00:00\t0:00:00\t0\tHANG\t0:00:00\t0:00:00\t0\tNO_SERVER",
    # 4: queued 29 s, answered by TOVA, 300 s of service
    "AA0102\t40001\t12345678\t1\tNW\t990101\t10:00:00\t10:00:10\t10\t10:00:10\t10:00:40\t30\tAGENT\t10:00:39\t10:05:39\t300\tTOVA",
    # 5: straight to an agent (never queued), unidentified customer
    "AA0103\t40002\t0\t0\tPS\t990101\t11:00:00\t11:00:05\t5\t0:00:00\t0:00:00\t0\tAGENT\t11:00:05\t11:02:05\t120\tAVI",
    # 6: PHANTOM (skipped)
    "AA0104\t40003\t0\t0\tPS\t990101\t12:00:00\t12:00:05\t5\t12:00:05\t12:00:20\t15\tPHANTOM\t12:00:19\t12:00:30\t11\tNO_SERVER",
    # 7: service runs past midnight (ends on 2 January)
    "AA0105\t40004\t7777\t1\tPS\t990101\t23:58:00\t23:58:30\t30\t23:58:30\t23:59:50\t80\tAGENT\t23:59:50\t0:04:50\t300\tTOVA",
    # 8: summer time (+03:00), answered by SHARON
    "AA0201\t50001\t8888\t1\tIN\t991025\t14:00:00\t14:00:20\t20\t14:00:20\t14:01:00\t40\tAGENT\t14:01:00\t14:03:00\t120\tSHARON",
    # 9: 03:30 on 28 March 1999, in Tallinn's spring-forward gap; a mangled customer id
    "AA0202\t50002\t6.02E+11\t1\tPS\t990328\t3:30:00\t3:30:10\t10\t3:30:10\t3:30:40\t30\tHANG\t0:00:00\t0:00:00\t0\tNO_SERVER",
]
NORMALISED_HEADER = ["source_file", "source_line", "month", "repaired_row", *HEADER.split("\t"),
                     "date_iso", "call_class", "reached_queue", "customer_id_linkable",
                     "vru_entry_ts", "vru_exit_ts", "q_start_ts", "q_exit_ts", "ser_start_ts",
                     "ser_exit_ts"]


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def write_raw(path: Path, rows=RAW_ROWS, compress: bool = True) -> Path:
    content = "\r\n".join([HEADER, *rows]) + "\r\n"
    if compress:
        path.write_bytes(gzip.compress(content.encode("latin-1")))
    else:
        path.write_text(content, encoding="latin-1", newline="")
    return path


def write_normalised(path: Path, rows=RAW_ROWS) -> Path:
    """The derived file's layout: the 17 original string values (the malformed row split),
    extra columns around them (their values are not used by the import)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(NORMALISED_HEADER)
    for number, row in enumerate(rows, start=2):
        fields = row.split("\t")
        repaired = len(fields) == 16
        if repaired:
            fields = fields[:3] + fields[3].split() + fields[4:]
        writer.writerow(["raw.tsv.gz", number, "1999-xx", int(repaired), *fields,
                         "", "", "", "", "", "", "", "", "", ""])
    path.write_bytes(gzip.compress(out.getvalue().encode("utf-8")))
    return path


def run(app, *args):
    result = app.test_cli_runner().invoke(args=["calls", "import", *map(str, args)])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def snapshot(session) -> dict[str, tuple]:
    """Every call by import key, with the columns the import sets (queue and agent by name)."""
    rows = session.execute(
        select(Call.import_key, Call.call_sid, Call.source, Call.status, Call.outcome,
               Call.arrived_at, Call.ivr_exited_at, Call.queue_entered_at, Call.answered_at,
               Call.ended_at, Call.talk_seconds, Call.caller_key, Call.priority, Call.language,
               Call.topic, Queue.name, Agent.name)
        .outerjoin(Queue, Queue.id == Call.queue_id).outerjoin(Agent, Agent.id == Call.agent_id)
    ).all()
    session.rollback()  # SQLite: do not keep the write lock the import needs
    return {row[0]: tuple(row[1:]) for row in rows}


def count_calls(session) -> int:
    session.rollback()
    count = session.scalar(select(func.count()).select_from(Call))
    session.rollback()
    return count


def test_raw_tsv_maps_every_kind_of_row(app, session, tmp_path):
    result = run(app, "--format", "anonymous-bank", write_raw(tmp_path / "month.tsv.gz"))
    assert result.exit_code == 0, result.output
    assert ("read 8, imported 7, already present 0, PHANTOM skipped 1, IVR-only 1, bad rows 0"
            in result.stdout)
    assert "read 8, imported 7" in result.stderr  # progress
    calls = snapshot(session)
    assert len(calls) == 7
    assert not any(key.endswith(":40003:1999-01-01") for key in calls)  # PHANTOM

    key = "anonymous-bank:AA0101:33116:1999-01-01"
    assert calls[key] == (
        import_key_sid(key), "imported", "ended", "abandoned",
        utc(1998, 12, 31, 22, 0, 31), utc(1998, 12, 31, 22, 0, 36), utc(1998, 12, 31, 22, 0, 36),
        None, utc(1998, 12, 31, 22, 3, 9), None, "anonymous-bank:9664491", 1, "und", "PS",
        "bank.PS", None)
    assert calls[key][0].startswith("IM") and len(calls[key][0]) == 34

    ivr_only = calls["anonymous-bank:AA0101:33117:1999-01-01"]
    assert ivr_only[3] == "ivr_abandoned"
    assert ivr_only[5:9] == (None, None, None, utc(1998, 12, 31, 22, 34, 23))  # not offered
    assert ivr_only[10] is None  # customer 0: unidentified
    assert ivr_only[13:16] == ("NW", None, None)  # its type is kept, no queue: never queued

    queued = calls["anonymous-bank:AA0102:40001:1999-01-01"]
    assert queued[3] == "answered"
    # answered when it left the queue (q_exit 10:00:40), a second after ser_start: the wait
    # is the file's q_time, 30 s
    assert queued[6:10] == (utc(1999, 1, 1, 8, 0, 10), utc(1999, 1, 1, 8, 0, 40),
                            utc(1999, 1, 1, 8, 5, 39), 300)
    assert (queued[10], queued[14], queued[15]) == ("anonymous-bank:12345678", "bank.NW",
                                                     "bank.TOVA")

    direct = calls["anonymous-bank:AA0103:40002:1999-01-01"]
    assert direct[3] == "answered"
    # sent straight to an agent: offered and answered at ser_start (wait 0)
    assert direct[6] == direct[7] == utc(1999, 1, 1, 9, 0, 5)
    assert direct[10] is None and direct[15] == "bank.AVI"

    past_midnight = calls["anonymous-bank:AA0105:40004:1999-01-01"]
    assert past_midnight[7:10] == (utc(1999, 1, 1, 21, 59, 50), utc(1999, 1, 1, 22, 4, 50), 300)

    # queues and agents are created once, inert
    queues = session.execute(select(Queue.name, Queue.language, Queue.topic)
                             .order_by(Queue.name)).all()
    assert queues == [("bank.IN", "und", "IN"), ("bank.NW", "und", "NW"), ("bank.PS", "und", "PS")]
    agents = session.execute(select(Agent.name, Agent.state, Agent.endpoint_kind, Agent.endpoint)
                             .order_by(Agent.name)).all()
    assert agents == [("bank.AVI", "offline", "none", "imported"),
                      ("bank.SHARON", "offline", "none", "imported"),
                      ("bank.TOVA", "offline", "none", "imported")]


def test_local_times_summer_winter_and_dst_gap(app, session, tmp_path):
    assert run(app, "--format", "anonymous-bank", write_raw(tmp_path / "m.tsv.gz")).exit_code == 0
    calls = snapshot(session)
    # winter: EET, UTC+2
    assert calls["anonymous-bank:AA0102:40001:1999-01-01"][4] == utc(1999, 1, 1, 8, 0, 0)
    # summer: EEST, UTC+3 (Tallinn's clocks went back on 31 October 1999)
    summer = calls["anonymous-bank:AA0201:50001:1999-10-25"]
    assert summer[4] == utc(1999, 10, 25, 11, 0, 0)
    assert summer[6:9] == (utc(1999, 10, 25, 11, 0, 20), utc(1999, 10, 25, 11, 1, 0),
                           utc(1999, 10, 25, 11, 3, 0))
    # 03:30 on 28 March 1999 did not exist in Tallinn (03:00 → 04:00): fold=0 reads it with
    # the winter offset, i.e. 01:30 UTC (= 04:30 summer time)
    gap = calls["anonymous-bank:AA0202:50002:1999-03-28"]
    assert gap[4] == utc(1999, 3, 28, 1, 30, 0)
    assert gap[8] == utc(1999, 3, 28, 1, 30, 40)
    assert gap[10] is None  # 6.02E+11: not linkable

    # another zone for the same file: the same wall times, other instants (same keys: nothing new)
    session.execute(delete(Call))
    session.commit()
    assert run(app, "--format", "anonymous-bank", "--timezone", "Asia/Jerusalem",
               tmp_path / "m.tsv.gz").exit_code == 0
    calls = snapshot(session)
    assert calls["anonymous-bank:AA0102:40001:1999-01-01"][4] == utc(1999, 1, 1, 8, 0, 0)
    assert calls["anonymous-bank:AA0201:50001:1999-10-25"][4] == utc(1999, 10, 25, 12, 0, 0)

    result = run(app, "--format", "anonymous-bank", "--timezone", "Mars/Olympus",
                 tmp_path / "m.tsv.gz")
    assert result.exit_code == 2 and "unknown time zone 'Mars/Olympus'" in result.output


def test_raw_and_normalised_give_the_same_rows_and_import_once(app, session, tmp_path):
    raw = write_raw(tmp_path / "month.tsv.gz")
    normalised = write_normalised(tmp_path / "normalised.csv.gz")

    assert run(app, "--format", "anonymous-bank", raw).exit_code == 0
    from_raw = snapshot(session)
    again = run(app, "--format", "anonymous-bank", raw, normalised)
    assert again.exit_code == 0, again.output
    assert ("month.tsv.gz: read 8, imported 0, already present 7, PHANTOM skipped 1, IVR-only 1"
            in again.stdout)
    assert ("normalised.csv.gz: read 8, imported 0, already present 7, PHANTOM skipped 1"
            in again.stdout)
    assert "total: read 16, imported 0, already present 14, PHANTOM skipped 2" in again.stdout
    assert count_calls(session) == 7

    session.execute(delete(Call))
    session.commit()
    result = run(app, "--format", "anonymous-bank", normalised)
    assert result.exit_code == 0, result.output
    assert "read 8, imported 7" in result.stdout
    assert snapshot(session) == from_raw
    # a plain (not gzipped) raw file is read too, and adds nothing
    result = run(app, "--format", "anonymous-bank", write_raw(tmp_path / "m.tsv", compress=False))
    assert "imported 0, already present 7" in result.stdout and count_calls(session) == 7


def test_bad_raw_row_refuses_the_file_naming_file_and_line(app, session, tmp_path):
    rows = list(RAW_ROWS)
    rows[2] = rows[2].replace("10:00:39", "25:00:39")  # line 4
    rows[5] = rows[5].replace("AGENT", "MAYBE")  # line 7
    path = write_raw(tmp_path / "bad.tsv.gz", rows)
    result = run(app, "--format", "anonymous-bank", path)
    assert result.exit_code == 1
    assert f"{path}:4: ser_start '25:00:39' is not a time of day" in result.stderr
    assert f"{path}:7: outcome 'MAYBE' is not one of AGENT, HANG, PHANTOM" in result.stderr
    assert "refused: 2 bad row(s), nothing imported" in result.stderr
    assert count_calls(session) == 0
    assert session.scalar(select(func.count()).select_from(Queue)) == 0  # rolled back too
    session.rollback()

    result = run(app, "--format", "anonymous-bank", "--skip-bad-rows", path)
    assert result.exit_code == 1
    assert "read 8, imported 5, already present 0, PHANTOM skipped 1, IVR-only 1, bad rows 2" \
        in result.stdout
    assert count_calls(session) == 5
    # the corrected file adds just the two rows that were bad
    result = run(app, "--format", "anonymous-bank", write_raw(tmp_path / "fixed.tsv.gz"))
    assert result.exit_code == 0 and "imported 2, already present 5" in result.stdout


def test_not_an_anonymous_bank_file(app, session, tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b,c\n1,2,3\n", encoding="utf-8")
    result = run(app, "--format", "anonymous-bank", path)
    assert result.exit_code == 1
    assert "neither an Anonymous Bank raw TSV" in result.stderr and "missing columns" in result.stderr
    assert count_calls(session) == 0


GENERIC = """\
call_id,caller,arrived_at,queue,language,topic,queue_entered_at,answered_at,ended_at,talk_seconds,hold_seconds,wrap_up_seconds,agent,outcome
c1,5123 4567,2026-01-15 10:00:00,et.pension,,,2026-01-15 10:00:30,2026-01-15 10:00:50,2026-01-15 10:05:50,280,20,45.5,Mari,answered
c2,+372 5551 2345,2026-07-15T10:00:00+03:00,et.pension,,,2026-07-15T10:00:30+03:00,,2026-07-15T10:01:10+03:00,,,,,abandoned
c3,anonymous,2026-03-29 03:30:00,,,,,,2026-03-29 03:31:00,,,,,
c4,5123 4567,2026-10-25 03:30:00,legacy-billing,en,billing,2026-10-25 03:30:10,2026-10-25 03:30:12,2026-10-25 03:32:12,,,,Jaan,
"""


def test_generic_csv_round_trip(app, session, tmp_path):
    path = tmp_path / "history.csv"
    path.write_text(GENERIC, encoding="utf-8")
    result = run(app, "--format", "csv", path)
    assert result.exit_code == 0, result.output
    assert "read 4, imported 4, already present 0, PHANTOM skipped 0, IVR-only 1, bad rows 0" \
        in result.stdout
    rows = {c.import_key: c for c in session.scalars(select(Call))}
    assert set(rows) == {"csv:c1", "csv:c2", "csv:c3", "csv:c4"}

    c1 = rows["csv:c1"]
    assert (c1.source, c1.status, c1.outcome, c1.call_sid) == ("imported", "ended", "answered",
                                                                import_key_sid("csv:c1"))
    assert (c1.arrived_at, c1.queue_entered_at, c1.answered_at, c1.ended_at) == (
        utc(2026, 1, 15, 8, 0, 0), utc(2026, 1, 15, 8, 0, 30), utc(2026, 1, 15, 8, 0, 50),
        utc(2026, 1, 15, 8, 5, 50))
    assert (c1.talk_seconds, c1.hold_seconds, c1.wrap_up_seconds) == (280, 20, 46)
    assert c1.caller_key == c1.from_number == "+37251234567"
    assert session.get(Queue, c1.queue_id).name == "et.pension"  # created from its name
    assert session.get(Agent, c1.agent_id).name == "Mari"
    assert (c1.language, c1.topic) == ("et", "pension")

    c2 = rows["csv:c2"]  # explicit offset wins over --timezone
    assert (c2.outcome, c2.queue_entered_at, c2.ended_at, c2.answered_at, c2.talk_seconds) == (
        "abandoned", utc(2026, 7, 15, 7, 0, 30), utc(2026, 7, 15, 7, 1, 10), None, None)
    assert c2.caller_key == "+37255512345"

    c3 = rows["csv:c3"]  # withheld, never offered; a time in the spring gap (fold=0)
    assert (c3.outcome, c3.queue_id, c3.queue_entered_at, c3.caller_key) == (
        "ivr_abandoned", None, None, None)
    assert c3.arrived_at == utc(2026, 3, 29, 1, 30, 0)

    c4 = rows["csv:c4"]  # ambiguous autumn time: the first 03:30 (summer, fold=0)
    assert c4.arrived_at == utc(2026, 10, 25, 0, 30, 0)
    assert (c4.outcome, c4.talk_seconds) == ("answered", 120)  # defaults: ended − answered
    queue = session.get(Queue, c4.queue_id)
    assert (queue.name, queue.language, queue.topic) == ("legacy-billing", "en", "billing")

    session.rollback()
    again = run(app, "--format", "csv", path)
    assert again.exit_code == 0
    assert "read 4, imported 0, already present 4" in again.stdout
    assert count_calls(session) == 4
    # another system's ids do not collide with these
    other = run(app, "--format", "csv", "--key-prefix", "oldpbx", path)
    assert "imported 4, already present 0" in other.stdout and count_calls(session) == 8


def test_shipped_example_imports(app, session):
    result = run(app, "--format", "csv", EXAMPLE_CSV)
    assert result.exit_code == 0, result.output
    assert "read 5, imported 5, already present 0, PHANTOM skipped 0, IVR-only 1, bad rows 0" \
        in result.stdout


def test_generic_csv_bad_rows(app, session, tmp_path):
    lines = GENERIC.splitlines()
    lines[2] = lines[2].replace("2026-07-15T10:01:10+03:00", "yesterday")  # line 3
    lines.append("c1,,2026-01-16 10:00:00,,,,,,2026-01-16 10:01:00,,,,,")  # line 6: same id
    lines.append("c9,,2026-01-16 10:00:00,nosuchqueue,,,2026-01-16 10:00:10,,2026-01-16 10:01:00,,,,,")
    lines.append("c10,,2026-01-16 10:00:00,et.pension,,,2026-01-16 09:00:00,,2026-01-16 10:01:00,,,,,")
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run(app, "--format", "csv", path)
    assert result.exit_code == 1
    err = result.stderr
    assert f"{path}:3: ended_at 'yesterday' is not an ISO 8601 date and time" in err
    assert f"{path}:6: the same call as line 2 (csv:c1)" in err
    assert (f"{path}:7: queue 'nosuchqueue' does not exist; give the language and topic "
            "columns to create it") in err
    assert f"{path}:8: queue_entered_at (2026-01-16T07:00:00+00:00) is before arrived_at" in err
    assert "refused: 4 bad row(s)" in err
    assert count_calls(session) == 0

    result = run(app, "--format", "csv", "--skip-bad-rows", path)
    assert result.exit_code == 1
    assert "read 7, imported 3, already present 0, PHANTOM skipped 0, IVR-only 1, bad rows 4" \
        in result.stdout
    assert count_calls(session) == 3


def test_generic_csv_unknown_column_refuses_the_file(app, session, tmp_path):
    path = tmp_path / "typo.csv"
    path.write_text("call_id,arrived_at,ended_at,answerd_at\nx,2026-01-01 10:00,2026-01-01 10:01,\n",
                    encoding="utf-8")
    result = run(app, "--format", "csv", path)
    assert result.exit_code == 1
    assert f"{path}: line 1: unknown column(s) 'answerd_at'" in result.stderr
    assert count_calls(session) == 0


@pytest.mark.skipif(not (SHARED / "raw" / "1999-01_january.tsv.gz").exists(),
                    reason="the shared Anonymous Bank data is not here")
def test_real_january_counts_and_times_match_the_normalised_file(app, session):
    result = run(app, "--format", "anonymous-bank", "--timezone", "UTC",
                 SHARED / "raw" / "1999-01_january.tsv.gz")
    assert result.exit_code == 0, result.output
    # README of the data: 31,599 rows, AGENT 27,060 / HANG 4,299 / PHANTOM 240; 1,198 VRU hang-ups
    assert ("read 31599, imported 31359, already present 0, PHANTOM skipped 240, IVR-only 1198, "
            "bad rows 0") in result.stdout
    outcomes = dict(session.execute(select(Call.outcome, func.count()).group_by(Call.outcome)).all())
    assert outcomes == {"answered": 27060, "abandoned": 4299 - 1198, "ivr_abandoned": 1198}
    # every time agrees with the normalised file's roll-over-corrected timestamps (UTC here)
    calls = {key: row for key, *row in session.execute(
        select(Call.import_key, Call.arrived_at, Call.queue_entered_at, Call.answered_at,
               Call.ended_at, Call.outcome))}
    checked = 0
    with gzip.open(SHARED / "anonymous_bank_1999_available_months_normalised.csv.gz", "rt",
                   encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["month"] != "1999-01" or row["outcome"] == "PHANTOM":
                continue
            arrived, entered, answered, ended, outcome = calls[
                f"anonymous-bank:{row['vru+line']}:{row['call_id']}:{row['date_iso']}"]
            ts = lambda name: datetime.fromisoformat(row[name]).replace(tzinfo=UTC) if row[name] else None  # noqa: E731
            assert arrived == ts("vru_entry_ts")
            if row["call_class"] == "ANSWERED_AFTER_QUEUE":
                # answered when it left the queue: the wait is the file's q_time
                assert (entered, answered) == (ts("q_start_ts"), ts("q_exit_ts"))
                assert (answered - entered).total_seconds() == int(row["q_time"]) \
                    or row["q_start"] == "0:00:00"   # the one midnight sentinel collision
                assert ended == max(ts("ser_exit_ts") or ts("q_exit_ts"), answered)
            elif row["call_class"] == "ANSWERED_DIRECT":
                assert entered == answered == (ts("ser_start_ts") or ts("vru_exit_ts"))
                assert outcome == "answered"
            elif row["call_class"] == "ABANDONED_IN_QUEUE":
                assert (entered, ended, outcome) == (ts("q_start_ts"), ts("q_exit_ts"), "abandoned")
            elif row["call_class"] == "VRU_ABANDON":
                assert (entered, ended, outcome) == (None, ts("vru_exit_ts"), "ivr_abandoned")
            checked += 1
    assert checked == 31359


def test_truncated_file_imports_nothing_and_fails(app, session, tmp_path):
    whole = write_raw(tmp_path / "whole.tsv.gz", RAW_ROWS).read_bytes()
    path = tmp_path / "cut.tsv.gz"
    path.write_bytes(whole[:-12])  # the gzip trailer is missing
    result = run(app, "--format", "anonymous-bank", path, write_raw(tmp_path / "ok.tsv.gz"))
    assert result.exit_code == 1
    assert f"error: {path}: cannot be read, nothing imported from it" in result.stderr
    assert "ok.tsv.gz: read 8, imported 7" in result.stdout  # the other file still imports
    assert count_calls(session) == 7
