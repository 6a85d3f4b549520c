"""``flask recordings …``: the download job, reconciliation with the provider, the retention
purge, per-caller erasure, the deletion-log check, and a new encryption key."""
from __future__ import annotations

import logging
import time

import click
import phonenumbers
from flask import current_app
from flask.cli import AppGroup

from db import get_session
from recording import jobs
from recording.crypto import KeyConfigError, new_key, valid_key_id
from recording.deletion_log import LogKeyMissing, verify_chain
from telephony.client import TelephonyError

recordings_cli = AppGroup("recordings", help="Call recordings: download, retention, erasure, audit.")
log = logging.getLogger("recordings")


def _now():
    return current_app.config["CLOCK"]()


def _services(*, needs_keys: bool = False) -> jobs.Services:
    """The jobs' services. A malformed RECORDINGS_KEYS stops only the commands that need the
    keys (``needs_keys``: fetch); the others warn on stderr and carry on."""
    try:
        services = jobs.Services.from_app(current_app)
    except (KeyConfigError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    if services.keys_error:
        if needs_keys:
            raise click.ClickException(services.keys_error)
        click.echo(f"WARNING\t{services.keys_error} (fetch and listening are stopped until it is "
                   "fixed; this command does not need the keys)", err=True)
    return services


RECONCILE_EVERY_SECONDS = 3600  # fetch --loop --reconcile: how often it asks the provider


def _reconcile(services: jobs.Services, since_days: float) -> bool:
    """Run one reconciliation and print it; returns False when the provider could not be listed."""
    try:
        report = jobs.reconcile(get_session(), services, _now(), since_days=since_days)
    except TelephonyError as exc:
        click.echo(f"FAILED\treconcile\t{exc}")
        return False
    for sid, status in report.created:
        click.echo(f"found\t{sid}\t{status}")
    for sid, status in report.updated:
        click.echo(f"caught up\t{sid}\t{status}")
    click.echo(f"reconcile: {report.listed} listed by the provider, {len(report.created)} unknown "
               f"added, {len(report.updated)} stuck caught up, {report.not_ours} of other calls")
    return True


@recordings_cli.command("reconcile")
@click.option("--since", "since_days", type=click.FloatRange(min=0, min_open=True), default=2.0,
              show_default=True, help="Look at recordings made in the last DAYS days.")
def recordings_reconcile(since_days: float) -> None:
    """List the provider's recent recordings of our calls and queue any whose completed
    callback never arrived (unknown, or stuck without a final status). Idempotent; exit
    status 1 if the provider could not be listed."""
    if not _reconcile(_services(), since_days):
        raise SystemExit(1)


@recordings_cli.command("fetch")
@click.option("--limit", type=click.IntRange(1, 10000), default=100, show_default=True,
              help="Recordings per round.")
@click.option("--loop", is_flag=True, help="Keep running, one round every --interval seconds.")
@click.option("--interval", type=click.FloatRange(min=1), default=30.0, show_default=True)
@click.option("--reconcile", "reconcile_days", type=click.FloatRange(min=0, min_open=True),
              default=None, help="Reconcile the last DAYS days with the provider first (with "
              "--loop: once an hour).")
def recordings_fetch(limit: int, loop: bool, interval: float, reconcile_days: float | None) -> None:
    """Download completed recordings, verify, encrypt and store them, then delete them at the
    provider. Prints one line per recording and a summary; exit status 1 if any failed."""
    services = _services(needs_keys=True)
    if services.keyring is None:
        raise click.ClickException("set RECORDINGS_KEYS: recordings are never stored unencrypted "
                                   "(make one with 'flask recordings new-key')")
    reconciled_at = None
    while True:
        reconcile_failed = False
        if reconcile_days is not None and (reconciled_at is None
                                           or time.monotonic() - reconciled_at >= RECONCILE_EVERY_SECONDS):
            reconcile_failed = not _reconcile(services, reconcile_days)
            reconciled_at = time.monotonic()
        report = jobs.fetch_due(get_session(), services, _now(), limit=limit)
        for sid in report.stored:
            click.echo(f"stored\t{sid}")
        for sid in report.provider_deleted:
            click.echo(f"deleted at provider\t{sid}")
        for sid, error, retry_at in report.failed:
            when = f"retry at {retry_at.isoformat()}" if retry_at else "GAVE UP"
            click.echo(f"FAILED\t{sid}\t{error}\t{when}")
        click.echo(f"fetch: {len(report.stored)} stored, {len(report.provider_deleted)} deleted at "
                   f"the provider, {len(report.failed)} failed")
        if not loop:
            if report.failed or reconcile_failed:
                raise SystemExit(1)
            return
        time.sleep(interval)


def _print_purge(report: jobs.PurgeReport, verb: str) -> None:
    for sid, error in report.failed:
        click.echo(f"FAILED\t{sid}\t{error}")
    click.echo(f"{verb}: {report.deleted} recording(s) deleted in {report.batches} batch(es): "
               f"{report.store_deleted} from storage, {report.provider_deleted} at the provider, "
               f"{report.provider_gone} already gone at the provider; {len(report.failed)} failed")


def _batch_line(report: jobs.PurgeReport) -> None:
    click.echo(f"batch {report.batches}: {report.deleted} deleted so far")


@recordings_cli.command("purge")
@click.option("--batch-size", type=click.IntRange(1, 10000), default=500, show_default=True)
@click.option("--max-batches", type=click.IntRange(min=1), default=None,
              help="Stop after this many batches (default: until none is due).")
def recordings_purge(batch_size: int, max_batches: int | None) -> None:
    """Delete every recording past its retention date from storage and at the provider (cron).
    Keeps the metadata with deleted_at; logs each deletion. Exit status 1 if any failed."""
    try:
        report = jobs.purge(get_session(), _services(), _now(), batch_size=batch_size,
                            max_batches=max_batches, on_batch=_batch_line)
    except LogKeyMissing as exc:
        raise click.ClickException(str(exc)) from exc
    _print_purge(report, "purge")
    if report.failed:
        raise SystemExit(1)


@recordings_cli.command("erase")
@click.option("--caller", required=True, help="The caller's number, +372… (E.164).")
@click.option("--batch-size", type=click.IntRange(1, 10000), default=500, show_default=True)
def recordings_erase(caller: str, batch_size: int) -> None:
    """Delete every recording of one caller now (a data subject's erasure request)."""
    try:
        parsed = phonenumbers.parse(caller, "EE")
    except phonenumbers.NumberParseException as exc:
        raise click.ClickException(f"--caller: not a phone number: {exc}") from exc
    if not phonenumbers.is_possible_number(parsed):
        raise click.ClickException("--caller: not a possible phone number")
    number = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    session = get_session()
    call_sids = jobs.caller_call_sids(session, number)
    click.echo(f"{number}: {len(call_sids)} call(s)")
    try:
        report = jobs.purge(session, _services(), _now(), reason="erasure", batch_size=batch_size,
                            call_sids=call_sids, actor=f"flask recordings erase --caller {number}")
    except LogKeyMissing as exc:
        raise click.ClickException(str(exc)) from exc
    _print_purge(report, "erase")
    if report.failed:
        raise SystemExit(1)


@recordings_cli.command("verify-log")
def recordings_verify_log() -> None:
    """Verify the deletion log's hash chain and list every recording past its date that still
    exists anywhere (and deletions missing from the log). Exit status 1 on any finding."""
    session = get_session()
    services = _services()
    chain = verify_chain(session, key=services.log_key)
    for problem in chain.problems:
        click.echo(f"CHAIN BROKEN\t{problem}")
    if services.log_key is None and any("do not match its hash" in p for p in chain.problems):
        click.echo("KEY?\tRECORDINGS_LOG_KEY is not set: entries written with the key read as "
                   "altered without it; if the log was written with RECORDINGS_LOG_KEY, set it "
                   "and verify again")
    retention = jobs.overdue_recordings(session, services, _now())
    for sid, where in retention.overdue:
        click.echo(f"OVERDUE\t{sid}\tstill in {where}")
    for sid in retention.unlogged:
        click.echo(f"UNLOGGED\t{sid}\tdeleted without a deletion-log entry")
    for name in retention.partial_files:
        click.echo(f"PARTIAL FILE\t{name}\tleft by an interrupted download (purge or the next "
                   "download of that recording removes it)")
    if services.log_key is None:
        click.echo("NOTE\tRECORDINGS_LOG_KEY is not set: the chain is unkeyed, so a rewrite of it "
                   "with fresh hashes would not be detected")
    click.echo(f"deletion log: {chain.entries} entries, chain {'intact' if chain.ok else 'BROKEN'}; "
               f"{len(retention.overdue)} overdue recording(s), {len(retention.unlogged)} unlogged, "
               f"{len(retention.partial_files)} partial file(s)")
    if not chain.ok or retention.overdue or retention.unlogged or retention.partial_files:
        raise SystemExit(1)


@recordings_cli.command("new-key")
@click.option("--id", "key_id", default="k1", show_default=True)
def recordings_new_key(key_id: str) -> None:
    """Print a fresh RECORDINGS_KEYS entry (``id:base64``); keep it secret. The id must be 1-32
    ASCII letters, digits, ``-`` or ``_`` (what RECORDINGS_KEYS accepts)."""
    if not valid_key_id(key_id):
        raise click.BadParameter(f"{key_id!r}: a key id is 1-32 ASCII letters, digits, '-' or '_'",
                                 param_hint="--id")
    click.echo(f"{key_id}:{new_key()}")
