"""Application factory: configuration, database, telephony client, blueprints, CLI. Wiring only.

Serve with ``gunicorn 'app:create_app()'``; run jobs with ``flask --app app <command>``.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Mapping

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from config import load_settings
from db import close_session, make_engine, make_sessionmaker, utcnow


def create_app(overrides: Mapping[str, Any] | None = None) -> Flask:
    """Build the service. ``overrides`` win over environment variables (tests, the simulator).

    Raises config.ConfigError at start-up when a required setting (TWILIO_AUTH_TOKEN) is missing.
    """
    app = Flask(__name__, instance_relative_config=True)
    settings = load_settings(overrides=overrides)
    app.config.update(settings)
    app.config.setdefault("CLOCK", utcnow)
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"))

    if app.config["PROXY_FIX_HOPS"] > 0:
        hops = app.config["PROXY_FIX_HOPS"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops,
                                x_prefix=hops)

    url = app.config["DATABASE_URL"]
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        os.makedirs(os.path.dirname(url[len("sqlite:///"):]) or ".", exist_ok=True)
    engine = make_engine(url)
    app.extensions["db_engine"] = engine
    app.extensions["db_sessionmaker"] = make_sessionmaker(engine)
    app.teardown_appcontext(close_session)

    from telephony.client import make_client
    app.extensions["telephony"] = app.config.get("TELEPHONY") or make_client(
        app.config["TELEPHONY_CLIENT"], app.config["TWILIO_ACCOUNT_SID"],
        app.config["TWILIO_AUTH_TOKEN"], app.config["TWILIO_API_BASE_URL"])

    from admin.api import bp as api_bp
    from admin.callbacks_api import bp as callbacks_api_bp
    from ivr.media import bp as audio_bp
    import ivr.callback_webhooks  # noqa: F401  (its views are on the voice blueprint)
    from ivr.webhooks import bp as voice_bp
    from recording.webhooks import bp as recording_bp
    from survey.webhooks import bp as sms_bp
    for blueprint in (voice_bp, recording_bp, sms_bp, audio_bp, api_bp, callbacks_api_bp):
        app.register_blueprint(blueprint)
    from ivr.transfers import bp as transfers_bp  # transfers to units, escalation
    app.register_blueprint(transfers_bp)
    from admin.recordings_api import bp as recordings_api_bp  # recordings: access, pause
    app.register_blueprint(recordings_api_bp)
    from admin.dispositions_api import bp as dispositions_api_bp  # dispositions, feedback
    app.register_blueprint(dispositions_api_bp)
    from admin.reports_api import bp as reports_api_bp  # reports and call log for jobs
    app.register_blueprint(reports_api_bp)
    from survey.ivr import bp as survey_voice_bp  # post-call IVR survey
    app.register_blueprint(survey_voice_bp)
    from admin.nps_api import bp as nps_api_bp  # NPS report, low scores
    app.register_blueprint(nps_api_bp)

    from admin.cli import register_cli
    register_cli(app)
    from reporting.staffing_cli import staffing_command  # Erlang C / A staffing
    app.cli.add_command(staffing_command)
    return app
