"""transfers: how a call was transferred to a unit, and complaint escalation

Revision ID: 0004
Revises: 0003

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0004'
down_revision: Union[str, Sequence[str], None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Transfer kind, state, the unit's answer, hand-over time, escalation, warm-transfer legs."""
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.add_column(sa.Column('transfer_kind', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('transfer_state', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('transfer_result', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('transferred_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('escalated', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('conference', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('agent_leg_sid', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('unit_leg_sid', sa.String(length=64), nullable=True))


def downgrade() -> None:
    """Drop them."""
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.drop_column('unit_leg_sid')
        batch_op.drop_column('agent_leg_sid')
        batch_op.drop_column('conference')
        batch_op.drop_column('escalated')
        batch_op.drop_column('transferred_at')
        batch_op.drop_column('transfer_result')
        batch_op.drop_column('transfer_state')
        batch_op.drop_column('transfer_kind')
