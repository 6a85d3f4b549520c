"""Alembic environment: every models module is imported so autogenerate sees all tables."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from alembic import context
from sqlalchemy import create_engine, pool

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import admin.models  # noqa: E402,F401
import ivr.models  # noqa: E402,F401
import line_config  # noqa: E402,F401
import recording.models  # noqa: E402,F401
import routing.models  # noqa: E402,F401
import survey.models  # noqa: E402,F401
from db import Base, UTCDateTime, normalise_url  # noqa: E402

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    """The URL given by the caller (flask db, tests), else DATABASE_URL, else alembic.ini's."""
    return normalise_url(config.attributes.get("url") or os.environ.get("DATABASE_URL")
                         or config.get_main_option("sqlalchemy.url"))


def render_item(type_, obj, autogen_context):
    """Render the UTC column type as a plain timezone-aware DateTime in migration files."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=True, compare_type=True, render_item=render_item)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as conn:
        _run(conn)


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=True, compare_type=True, render_item=render_item)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
