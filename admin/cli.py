"""Command-line jobs: ``flask config load``, ``flask tokens create``, ``flask calls close-stale``,
``flask calls import``, ``flask prompts render``, ``flask db upgrade|downgrade``; reporting and
the simulator add theirs."""
from __future__ import annotations

import csv
import logging
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import click
import yaml
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext
from sqlalchemy import select

from admin.auth import issue_token
from admin.config_loader import apply_line_config
from admin.models import ROLES
from db import get_read_session, get_session
from ivr.audio import TtsUnavailable, render
from ivr.calls import close_stale, fill_next_offers
from line_config import LineConfigError, current_line_config, parse_line_config
from reporting import call_log
from reporting.aggregate import ReportError, parse_filters
from routing.agents import find_agent

config_cli = AppGroup("config", help="Line configuration (menus, queues, agents, units, hours).")
tokens_cli = AppGroup("tokens", help="API bearer tokens.")
calls_cli = AppGroup("calls", help="Call-log maintenance jobs.")
prompts_cli = AppGroup("prompts", help="Prompt audio.")
db_cli = AppGroup("db", help="Database schema (Alembic migrations).")
surveys_cli = AppGroup("surveys", help="Post-call NPS survey: the SMS outbox.")


class UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML loading that refuses a key given twice in one mapping (YAML would keep the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _now():
    return current_app.config["CLOCK"]()


@config_cli.command("load")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def config_load(path: Path) -> None:
    """Validate the YAML file at PATH and make it the configuration in force."""
    try:
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=UniqueKeyLoader)
    except UnicodeDecodeError as exc:
        raise click.ClickException(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except yaml.YAMLError as exc:
        raise click.ClickException(f"{path}: not valid YAML: {exc}") from exc
    try:
        config = parse_line_config(document)
    except LineConfigError as exc:
        raise click.ClickException(f"{path}: {exc}") from exc
    session = get_session()
    counts = apply_line_config(session, config, document, _now(), source_name=str(path))
    session.commit()
    current_app.extensions.pop("line_config_cache", None)
    click.echo(f"loaded {path}: {counts['queues']} queues, {counts['agents']} agents, "
               f"{counts['units']} units" + (f"; {counts['retired']} agent(s) not in the file "
                                             "lost their skills" if counts["retired"] else ""))


@tokens_cli.command("create")
@click.option("--role", required=True, type=click.Choice(ROLES))
@click.option("--agent", "agent_name", default=None, help="Agent name or id (agent tokens).")
@click.option("--label", default="", help="Who or what the token is for.")
def tokens_create(role: str, agent_name: str | None, label: str) -> None:
    """Issue a bearer token and print it once; only its hash is stored."""
    session = get_session()
    agent_id = None
    if agent_name is not None:
        agent = find_agent(session, agent_name)
        if agent is None:
            raise click.ClickException(f"no agent {agent_name!r}")
        agent_id = agent.id
    try:
        token = issue_token(session, role, _now(), agent_id=agent_id, label=label)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    session.commit()
    click.echo(token)


@calls_cli.command("close-stale")
@click.option("--hours", type=click.FloatRange(min=0.25, max=24 * 366), default=None,
              help="Close calls with no event for this long (default STALE_CALL_HOURS).")
@click.option("--limit", type=int, default=1000, show_default=True)
def calls_close_stale(hours: float | None, limit: int) -> None:
    """Close calls whose final status callback never arrived, from their last known event."""
    hours = current_app.config["STALE_CALL_HOURS"] if hours is None else hours
    session = get_session()
    closed = close_stale(session, _now(), timedelta(hours=hours), limit=limit)
    session.commit()
    for call in closed:
        click.echo(f"{call.call_sid}\t{call.outcome}\tended {call.ended_at.isoformat()}")
    click.echo(f"closed {len(closed)} stale call(s)")


@calls_cli.command("import")
@click.option("--format", "fmt", required=True, type=click.Choice(("anonymous-bank", "csv")),
              help="anonymous-bank: the raw monthly TSV or the normalised CSV; csv: the generic "
                   "format (README, 'Importing call history').")
@click.option("--timezone", "tz_name", default=None,
              help="Time zone of the files' local times (default: TIMEZONE, e.g. Europe/Tallinn).")
@click.option("--skip-bad-rows", is_flag=True,
              help="Import a file's good rows and report the bad ones (default: refuse the file).")
@click.option("--key-prefix", default="csv", show_default=True,
              help="csv format: import keys are PREFIX:call_id (one prefix per source system).")
@click.option("--region", default="EE", show_default=True,
              help="csv format: region for caller numbers without a country code.")
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=5000, show_default=True)
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
def calls_import(fmt: str, tz_name: str | None, skip_bad_rows: bool, key_prefix: str,
                 region: str, batch_size: int, files: tuple[Path, ...]) -> None:
    """Import call history from FILES (marked imported; importing a file again adds nothing).

    Progress goes to stderr, one summary line per file and a total to stdout. Exit status 1 if
    a file had bad rows (refused, or skipped with --skip-bad-rows) or could not be read.
    """
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from reporting.importer import FileSummary, ImportFileError, import_file

    tz_name = current_app.config["TIMEZONE"] if tz_name is None else tz_name
    try:
        tz = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise click.BadParameter(f"unknown time zone {tz_name!r}", param_hint="'--timezone'") from None

    def progress(summary: FileSummary) -> None:
        click.echo(f"{summary.path}: read {summary.read}, imported {summary.imported}, "
                   f"already present {summary.already_present}, PHANTOM {summary.phantom}, "
                   f"bad {len(summary.bad)}", err=True)

    def line(name: str, s: FileSummary, bad: int) -> str:
        return (f"{name}: read {s.read}, imported {s.imported}, already present "
                f"{s.already_present}, PHANTOM skipped {s.phantom}, IVR-only {s.ivr_only}, "
                f"bad rows {bad} ({s.seconds:.1f} s)")

    session = get_session()
    total = FileSummary(path="total", format=fmt)
    bad_rows = 0
    failed = False
    for path in files:
        try:
            summary = import_file(session, path, fmt, tz=tz, skip_bad_rows=skip_bad_rows,
                                  key_prefix=key_prefix, region=region, batch_size=batch_size,
                                  progress=progress)
        except ImportFileError as exc:
            click.echo(f"error: {exc}", err=True)
            failed = True
            continue
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            click.echo(f"error: {path}: cannot be read, nothing imported from it: {exc}", err=True)
            failed = True
            continue
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
        for bad in summary.bad[:50]:
            click.echo(f"bad row: {bad}", err=True)
        if len(summary.bad) > 50:
            click.echo(f"… and {len(summary.bad) - 50} more bad rows in {path}", err=True)
        if summary.refused:
            click.echo(f"{path}: refused: {len(summary.bad)} bad row(s), nothing imported from "
                       "it (fix them, or use --skip-bad-rows)", err=True)
        click.echo(line(str(path), summary, len(summary.bad)))
        for name in ("read", "imported", "already_present", "phantom", "ivr_only"):
            setattr(total, name, getattr(total, name) + getattr(summary, name))
        bad_rows += len(summary.bad)
        total.seconds += summary.seconds
        failed = failed or bool(summary.bad)
    if len(files) > 1:
        click.echo(line("total", total, bad_rows))
    if failed:
        raise SystemExit(1)


@calls_cli.command("relink")
@click.option("--days", type=click.FloatRange(min=0.01, max=3660), default=8.0, show_default=True,
              help="Repair calls offered in the last DAYS days (at least the longest FCR window).")
def calls_relink(days: float) -> None:
    """Repair the repeat-contact links (next offer of the same caller) of recent calls: two
    offers of one number racing on two lines may miss each other. Cron, e.g. hourly."""
    session = get_session()
    changed = fill_next_offers(session, since=_now() - timedelta(days=days))
    session.commit()
    click.echo(f"relinked {changed} calls offered in the last {days:g} days")


@calls_cli.command("export")
@click.option("--from", "start", required=True, metavar="YYYY-MM-DD", help="First local day (included).")
@click.option("--to", "end", required=True, metavar="YYYY-MM-DD", help="Last local day (included).")
@click.option("--timezone", "tz_name", default=None, help="Time zone of the days and times (default: TIMEZONE).")
@click.option("--filter", "filters", multiple=True, metavar="DIM=VALUE",
              help="Only calls with this queue, agent, language or topic (repeatable).")
@click.option("--numbers", is_flag=True,
              help="Show callers' numbers instead of pseudonyms (the operator's own export).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file (default: standard output).")
def calls_export(start: str, end: str, tz_name: str | None, filters: tuple[str, ...],
                 numbers: bool, output: Path | None) -> None:
    """The call log as CSV, callers pseudonymised with REPORT_PSEUDONYM_KEY unless --numbers;
    progress on standard error every 50,000 calls."""
    try:
        first, last = date.fromisoformat(start), date.fromisoformat(end)
    except ValueError as exc:
        raise click.BadParameter(f"dates are YYYY-MM-DD ({exc})") from None
    try:
        pairs = parse_filters(filters)
    except ReportError as exc:
        raise click.BadParameter(str(exc), param_hint="'--filter'") from None
    key = current_app.config["REPORT_PSEUDONYM_KEY"]
    if not numbers and not key:
        raise click.UsageError("set REPORT_PSEUDONYM_KEY to pseudonymise callers, or pass --numbers")
    query = call_log.CallLogQuery(first, last, timezone=tz_name or current_app.config["TIMEZONE"],
                                  filters=pairs)
    session = get_read_session()
    try:
        total = call_log.count(session, query)
    except ReportError as exc:
        raise click.UsageError(str(exc)) from None
    handle = output.open("w", newline="", encoding="utf-8") if output else sys.stdout
    writer = csv.DictWriter(handle, fieldnames=call_log.COLUMNS, lineterminator="\n")
    writer.writeheader()
    written = 0
    for row in call_log.iterate(session, query, reveal=numbers, key=key.encode() if key else None):
        writer.writerow(row)
        written += 1
        if written % 50_000 == 0:
            click.echo(f"exported {written} of {total} calls", err=True)
    if output:
        handle.close()
    click.echo(f"exported {written} calls ({'numbers' if numbers else 'pseudonyms'})", err=True)


@click.command("worker")
@click.option("--interval", type=click.FloatRange(min=0.1, max=60), default=1.0, show_default=True,
              help="Seconds between dispatch rounds.")
@click.option("--once", is_flag=True, help="Run one round and exit (for cron or a test).")
@with_appcontext
def worker_command(interval: float, once: bool) -> None:
    """Offer waiting calls to agents freed by a timer (wrap-up over), then redirect those callers;
    dial callbacks that became due (retry delay over, agreed time, the line opened); retry
    callback dials lost by a process that died before asking the provider.

    Also queues and sends survey SMS (see `flask surveys send`).

    Webhooks and the agent API dispatch on every event; this long-running job covers the
    moments without an event: it wakes when the next wrap-up timer or callback delay runs out
    (and at least every --interval seconds), so a free agent does not wait for a caller.
    Needs PUBLIC_BASE_URL (the URLs the provider is redirected to). Stop it with SIGTERM/Ctrl-C.
    """
    from ivr.webhooks import dispatch_and_connect, recover_lost_dials
    from routing.dispatch import next_timer

    if not current_app.config["PUBLIC_BASE_URL"]:
        raise click.ClickException("set PUBLIC_BASE_URL: the worker redirects calls to it")
    log = logging.getLogger("worker")
    try:
        while True:
            with current_app.test_request_context("/"):
                recover_lost_dials(get_session())
                offered = dispatch_and_connect(get_session())
                due = next_timer(get_session(), _now())
                get_session().rollback()
                surveys = _survey_round(log)
            if offered:
                log.info("offered %d waiting call(s)", offered)
            if once:
                click.echo(f"offered {offered} waiting call(s)")
                if surveys is not None and (surveys.plan.queued or surveys.send.sent):
                    click.echo(f"survey SMS: {surveys.plan.queued} queued, {len(surveys.send.sent)} sent")
                return
            # Wake when the next wrap-up or callback delay runs out, at most --interval later.
            pause = interval if due is None else (due - _now()).total_seconds()
            time.sleep(min(interval, max(0.01, pause)))
    except KeyboardInterrupt:
        click.echo("worker stopped")


def _survey_round(log):
    """The survey SMS part of a worker round; an error is logged, never stops the worker."""
    from survey.jobs import survey_round

    try:
        report = survey_round(get_session())
    except Exception:  # the calls must still be offered: log and go on
        log.exception("survey SMS round failed")
        get_session().rollback()
        return None
    if report.plan.queued or report.send.sent or report.send.failed or report.send.unknown:
        log.info("survey SMS: %d queued, %d sent, %d failed, %d unknown", report.plan.queued,
                 len(report.send.sent), len(report.send.failed), len(report.send.unknown))
    return report


@surveys_cli.command("send")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True,
              help="Calls examined and messages sent at most in this run.")
def surveys_send(limit: int) -> None:
    """Queue survey SMS for callers who hung up before the IVR survey, send the due ones and
    report messages left in doubt by a worker that died (state unknown). Safe to run beside
    `flask worker` and several at once. Needs PUBLIC_BASE_URL (the status-callback URL)."""
    from survey.jobs import survey_round
    from survey.outbox import unknown_messages

    if not current_app.config["PUBLIC_BASE_URL"]:
        raise click.ClickException("set PUBLIC_BASE_URL: survey SMS carry a status-callback URL")
    with current_app.test_request_context("/"):
        report = survey_round(get_session(), limit=limit)
        doubtful = unknown_messages(get_session())
        get_session().rollback()
    click.echo(f"queued {report.plan.queued} survey SMS ({report.plan.skipped} calls not surveyed, "
               f"{report.plan.ivr_abandoned} hung up during the IVR survey); sent "
               f"{len(report.send.sent)}, retry later {len(report.send.retry)}, failed "
               f"{len(report.send.failed)}")
    for message in doubtful:
        click.echo(f"UNKNOWN\toutbox {message.id}\tto {message.to_number}\t{message.last_error}")
    if doubtful:
        click.echo(f"{len(doubtful)} message(s) may or may not have been sent: check the "
                   "provider's message log", err=True)


@prompts_cli.command("render")
def prompts_render() -> None:
    """Render every prompt without a provider voice or an audio URL to WAV in AUDIO_DIR."""
    config = current_line_config(get_session())
    if config is None:
        raise click.ClickException("no configuration loaded: run 'flask config load FILE'")
    count = 0
    for key, by_language in config.prompts.items():
        for language, prompt in by_language.items():
            if prompt.audio_url or config.language(language).voice or "{" in prompt.text:
                continue
            try:
                render(prompt.text, language, current_app.config["AUDIO_DIR"],
                       current_app.config["TTS_COMMAND"])
            except TtsUnavailable as exc:
                raise click.ClickException(str(exc)) from exc
            count += 1
    click.echo(f"rendered {count} prompt(s) into {current_app.config['AUDIO_DIR']}")


def _alembic_config():
    from alembic.config import Config

    root = Path(__file__).resolve().parent.parent
    cfg = Config(str(root / "alembic.ini"))
    cfg.set_main_option("script_location", str(root / "migrations"))
    cfg.attributes["url"] = current_app.config["DATABASE_URL"]
    return cfg


@db_cli.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Migrate the database at DATABASE_URL up to REVISION (default: head)."""
    from alembic import command

    command.upgrade(_alembic_config(), revision)


@db_cli.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Migrate the database down to REVISION (e.g. base)."""
    from alembic import command

    command.downgrade(_alembic_config(), revision)


def register_cli(app: Flask) -> None:
    """Attach every command group to ``app``."""
    from admin.recordings_cli import recordings_cli
    from reporting.cli import report_command
    from simulator.cli import simulate_command

    for group in (config_cli, tokens_cli, calls_cli, prompts_cli, db_cli, recordings_cli,
                  surveys_cli):
        app.cli.add_command(group)
    app.cli.add_command(report_command)
    app.cli.add_command(worker_command)
    app.cli.add_command(simulate_command)
