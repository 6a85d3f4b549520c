"""ivr struggle

Revision ID: 0003
Revises: 0002

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0003'
down_revision: Union[str, Sequence[str], None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Mark calls whose callers struggled with the menus."""
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ivr_struggle', sa.Boolean(), server_default=sa.false(), nullable=False))



def downgrade() -> None:
    """Drop the mark."""
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.drop_column('ivr_struggle')

