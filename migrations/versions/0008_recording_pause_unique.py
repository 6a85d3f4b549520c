"""recordings: at most one open pause per call; the outcome of each recording access

Revision ID: 0008
Revises: 0007

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0008'
down_revision: Union[str, Sequence[str], None] = '0007'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """A partial unique index on ``recording_pauses(call_sid) WHERE resumed_at IS NULL`` (two
    simultaneous pause requests on PostgreSQL could both insert an open pause). Open pauses
    that duplicate an earlier open pause of the same call are closed first, as zero-length
    stretches (``resumed_at = paused_at``): the earliest one is the pause that is in force.
    ``recording_accesses.outcome``: the HTTP status each access was answered with."""
    op.execute(
        "UPDATE recording_pauses SET resumed_at = paused_at "
        "WHERE resumed_at IS NULL AND EXISTS (SELECT 1 FROM recording_pauses AS earlier "
        "WHERE earlier.call_sid = recording_pauses.call_sid AND earlier.resumed_at IS NULL "
        "AND earlier.id < recording_pauses.id)")
    with op.batch_alter_table('recording_pauses', schema=None) as batch_op:
        batch_op.create_index('uq_recording_pauses_open_call_sid', ['call_sid'], unique=True,
                              postgresql_where=sa.text('resumed_at IS NULL'),
                              sqlite_where=sa.text('resumed_at IS NULL'))
    with op.batch_alter_table('recording_accesses', schema=None) as batch_op:
        batch_op.add_column(sa.Column('outcome', sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('recording_accesses', schema=None) as batch_op:
        batch_op.drop_column('outcome')
    with op.batch_alter_table('recording_pauses', schema=None) as batch_op:
        batch_op.drop_index('uq_recording_pauses_open_call_sid')
