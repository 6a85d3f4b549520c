"""reporting: caller identity for repeat contacts, import keys, hold and wrap-up, dispositions, feedback

Revision ID: 0007
Revises: 0006

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0007'
down_revision: Union[str, Sequence[str], None] = '0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """New call columns and the feedback table; offered calls already logged get their
    ``caller_key`` from their number (E.164 through phonenumbers, withheld numbers stay None)."""
    op.create_table('call_feedback',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('call_id', sa.Integer(), nullable=False),
    sa.Column('agent_id', sa.Integer(), nullable=True),
    sa.Column('category', sa.String(length=16), nullable=False),
    sa.Column('note', sa.String(length=500), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('reviewed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('reviewed_by', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['call_id'], ['calls.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('call_feedback', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_call_feedback_call_id'), ['call_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_call_feedback_created_at'), ['created_at'], unique=False)

    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.add_column(sa.Column('caller_key', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('import_key', sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column('hold_seconds', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('wrap_up_seconds', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('disposition', sa.String(length=24), nullable=True))
        batch_op.add_column(sa.Column('disposition_agent_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('disposition_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_unique_constraint('uq_calls_import_key', ['import_key'])
        batch_op.create_foreign_key('fk_calls_disposition_agent_id_agents', 'agents',
                                    ['disposition_agent_id'], ['id'], ondelete='SET NULL')
        batch_op.create_index('ix_calls_queue_entered_at', ['queue_entered_at'], unique=False)
        batch_op.create_index('ix_calls_caller_key_queue_entered_at',
                              ['caller_key', 'queue_entered_at'], unique=False)

    from line_config import normalise_number  # the same rule the live path uses
    bind = op.get_bind()
    calls = sa.table('calls', sa.column('id', sa.Integer), sa.column('from_number', sa.String),
                     sa.column('caller_key', sa.String), sa.column('queue_entered_at', sa.DateTime))
    rows = bind.execute(sa.select(calls.c.id, calls.c.from_number)
                        .where(calls.c.queue_entered_at.is_not(None))).all()
    for call_id, number in rows:
        key = normalise_number(number or "")
        if key:
            bind.execute(calls.update().where(calls.c.id == call_id).values(caller_key=key))


def downgrade() -> None:
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.drop_index('ix_calls_caller_key_queue_entered_at')
        batch_op.drop_index('ix_calls_queue_entered_at')
        batch_op.drop_constraint('fk_calls_disposition_agent_id_agents', type_='foreignkey')
        batch_op.drop_constraint('uq_calls_import_key', type_='unique')
        for column in ('disposition_at', 'disposition_agent_id', 'disposition', 'wrap_up_seconds',
                       'hold_seconds', 'import_key', 'caller_key'):
            batch_op.drop_column(column)
    with op.batch_alter_table('call_feedback', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_call_feedback_created_at'))
        batch_op.drop_index(batch_op.f('ix_call_feedback_call_id'))
    op.drop_table('call_feedback')
