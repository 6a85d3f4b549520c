"""callbacks: keep-place and scheduled callbacks waiting in the queue

Revision ID: 0005
Revises: 0004

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0005'
down_revision: Union[str, Sequence[str], None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Callbacks, and the columns that let one wait in a queue entry."""
    op.create_table(
        'callbacks',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('call_id', sa.Integer(), nullable=False),
        sa.Column('origin_call_id', sa.Integer(), nullable=True),
        sa.Column('number', sa.String(length=32), nullable=False),
        sa.Column('queue_id', sa.Integer(), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('last_attempt_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_result', sa.String(length=32), nullable=True),
        sa.Column('outbound_call_sid', sa.String(length=64), nullable=True),
        sa.Column('requested_by_agent_id', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['call_id'], ['calls.id'], name=op.f('fk_callbacks_call_id_calls'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['origin_call_id'], ['calls.id'], name=op.f('fk_callbacks_origin_call_id_calls'), ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['queue_id'], ['queues.id'], name=op.f('fk_callbacks_queue_id_queues')),
        sa.ForeignKeyConstraint(['requested_by_agent_id'], ['agents.id'], name=op.f('fk_callbacks_requested_by_agent_id_agents'), ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_callbacks')),
        sa.UniqueConstraint('call_id', name=op.f('uq_callbacks_call_id')),
        sa.UniqueConstraint('outbound_call_sid', name=op.f('uq_callbacks_outbound_call_sid')),
    )
    op.create_index('ix_callbacks_number_state', 'callbacks', ['number', 'state'], unique=False)
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.add_column(sa.Column('announced_position', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('callback_offered_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('overflowed_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index('ix_calls_queue_id_answered_at', ['queue_id', 'answered_at'], unique=False)
    with op.batch_alter_table('queue_entries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('callback_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('not_before', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('reserved_agent_id', sa.Integer(), nullable=True))
        batch_op.create_unique_constraint(batch_op.f('uq_queue_entries_callback_id'), ['callback_id'])
        batch_op.create_foreign_key(batch_op.f('fk_queue_entries_callback_id_callbacks'), 'callbacks', ['callback_id'], ['id'], ondelete='CASCADE')
        batch_op.create_foreign_key(batch_op.f('fk_queue_entries_reserved_agent_id_agents'), 'agents', ['reserved_agent_id'], ['id'], ondelete='SET NULL')


def downgrade() -> None:
    """Drop callbacks and their queue-entry columns."""
    with op.batch_alter_table('queue_entries', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_queue_entries_reserved_agent_id_agents'), type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('fk_queue_entries_callback_id_callbacks'), type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('uq_queue_entries_callback_id'), type_='unique')
        batch_op.drop_column('reserved_agent_id')
        batch_op.drop_column('not_before')
        batch_op.drop_column('callback_id')
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.drop_index('ix_calls_queue_id_answered_at')
        batch_op.drop_column('overflowed_at')
        batch_op.drop_column('callback_offered_at')
        batch_op.drop_column('announced_position')
    op.drop_index('ix_callbacks_number_state', table_name='callbacks')
    op.drop_table('callbacks')
