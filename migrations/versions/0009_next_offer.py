"""calls.next_offer_at: when the same caller's next offered call began (repeat-contact FCR)

Revision ID: 0009
Revises: 0008

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0009'
down_revision: Union[str, Sequence[str], None] = '0008'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Add the column and fill it for the offered calls already logged."""
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.add_column(sa.Column('next_offer_at', sa.DateTime(timezone=True), nullable=True))
    from ivr.calls import FILL_NEXT_OFFER, FILL_NEXT_OFFER_POSTGRESQL  # as the import runs them
    postgresql = op.get_bind().dialect.name == "postgresql"
    op.execute(FILL_NEXT_OFFER_POSTGRESQL if postgresql else FILL_NEXT_OFFER)


def downgrade() -> None:
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.drop_column('next_offer_at')
