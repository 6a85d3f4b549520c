"""recordings: retention, encrypted storage, download job, deletion log, access audit, pauses

Revision ID: 0006
Revises: 0005

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0006'
down_revision: Union[str, Sequence[str], None] = '0005'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


APPEND_ONLY_SQLITE = (
    "CREATE TRIGGER recording_deletions_no_update BEFORE UPDATE ON recording_deletions "
    "BEGIN SELECT RAISE(ABORT, 'recording_deletions is append-only'); END",
    "CREATE TRIGGER recording_deletions_no_delete BEFORE DELETE ON recording_deletions "
    "BEGIN SELECT RAISE(ABORT, 'recording_deletions is append-only'); END",
)
APPEND_ONLY_POSTGRES = (
    "CREATE FUNCTION recording_deletions_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN RAISE EXCEPTION 'recording_deletions is append-only'; END $$",
    "CREATE TRIGGER recording_deletions_append_only BEFORE UPDATE OR DELETE ON recording_deletions "
    "FOR EACH ROW EXECUTE FUNCTION recording_deletions_append_only()",
)


def upgrade() -> None:
    """Recording storage and retention columns; deletion log (UPDATE/DELETE refused by
    triggers), access audit and pause tables. Existing recordings get ``recorded_at`` and a
    due date 6 months on (the default period), completed ones a pending download."""
    op.create_table('recording_accesses',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('token_id', sa.Integer(), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('call_sid', sa.String(length=64), nullable=True),
    sa.Column('recording_sid', sa.String(length=64), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('byte_range', sa.String(length=64), nullable=True),
    sa.Column('accessed_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_recording_accesses'))
    )
    with op.batch_alter_table('recording_accesses', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_recording_accesses_recording_sid'), ['recording_sid'], unique=False)

    op.create_table('recording_deletions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('recording_sid', sa.String(length=64), nullable=False),
    sa.Column('call_sid', sa.String(length=64), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=True),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('locations', sa.String(length=512), nullable=False),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('entry_hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_recording_deletions')),
    sa.UniqueConstraint('entry_hash', name=op.f('uq_recording_deletions_entry_hash')),
    sa.UniqueConstraint('seq', name=op.f('uq_recording_deletions_seq'))
    )
    with op.batch_alter_table('recording_deletions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_recording_deletions_recording_sid'), ['recording_sid'], unique=False)

    op.create_table('recording_pauses',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('call_sid', sa.String(length=64), nullable=False),
    sa.Column('paused_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('resumed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('token_id', sa.Integer(), nullable=False),
    sa.Column('reason', sa.String(length=255), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_recording_pauses'))
    )
    with op.batch_alter_table('recording_pauses', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_recording_pauses_call_sid'), ['call_sid'], unique=False)

    with op.batch_alter_table('recordings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('delete_after', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('fetch_state', sa.String(length=16), server_default='none', nullable=False))
        batch_op.add_column(sa.Column('fetch_attempts', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('next_fetch_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('fetch_lease_until', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('last_error', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('storage_key', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('key_id', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('size_bytes', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('media_seconds', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('sha256', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('stored_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('provider_deleted_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('deletion_reason', sa.String(length=32), nullable=True))
        batch_op.create_index('ix_recordings_delete_after', ['delete_after'], unique=False)
        batch_op.create_index('ix_recordings_fetch_state_next_fetch_at', ['fetch_state', 'next_fetch_at'], unique=False)

    bind = op.get_bind()
    for statement in (APPEND_ONLY_POSTGRES if bind.dialect.name == "postgresql" else APPEND_ONLY_SQLITE):
        op.execute(statement)
    _backfill(bind)


def _backfill(bind) -> None:
    from datetime import timezone

    from recording.retention import due_date

    recordings = sa.table("recordings", sa.column("id", sa.Integer), sa.column("status", sa.String),
                          sa.column("started_at", sa.DateTime(timezone=True)),
                          sa.column("received_at", sa.DateTime(timezone=True)),
                          sa.column("recorded_at", sa.DateTime(timezone=True)),
                          sa.column("delete_after", sa.DateTime(timezone=True)),
                          sa.column("fetch_state", sa.String))
    rows = bind.execute(sa.select(recordings.c.id, recordings.c.status, recordings.c.started_at,
                                  recordings.c.received_at)).all()
    for row in rows:
        made = row.started_at or row.received_at
        if made.tzinfo is None:
            made = made.replace(tzinfo=timezone.utc)
        has_media = row.status == "completed"
        bind.execute(recordings.update().where(recordings.c.id == row.id).values(
            recorded_at=made, delete_after=due_date(made, 6) if has_media else None,
            fetch_state="pending" if has_media else ("absent" if row.status in ("absent", "failed") else "none")))


def downgrade() -> None:
    """Drop the recording storage, deletion-log, audit and pause tables and columns."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS recording_deletions_append_only ON recording_deletions")
        op.execute("DROP FUNCTION IF EXISTS recording_deletions_append_only()")
    with op.batch_alter_table('recordings', schema=None) as batch_op:
        batch_op.drop_index('ix_recordings_fetch_state_next_fetch_at')
        batch_op.drop_index('ix_recordings_delete_after')
        batch_op.drop_column('deletion_reason')
        batch_op.drop_column('deleted_at')
        batch_op.drop_column('provider_deleted_at')
        batch_op.drop_column('stored_at')
        batch_op.drop_column('sha256')
        batch_op.drop_column('media_seconds')
        batch_op.drop_column('size_bytes')
        batch_op.drop_column('key_id')
        batch_op.drop_column('storage_key')
        batch_op.drop_column('last_error')
        batch_op.drop_column('fetch_lease_until')
        batch_op.drop_column('next_fetch_at')
        batch_op.drop_column('fetch_attempts')
        batch_op.drop_column('fetch_state')
        batch_op.drop_column('delete_after')
        batch_op.drop_column('recorded_at')

    with op.batch_alter_table('recording_pauses', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_recording_pauses_call_sid'))

    op.drop_table('recording_pauses')
    with op.batch_alter_table('recording_deletions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_recording_deletions_recording_sid'))

    op.drop_table('recording_deletions')
    with op.batch_alter_table('recording_accesses', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_recording_accesses_recording_sid'))

    op.drop_table('recording_accesses')
