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


STATISTICS = (("calls_offer_quarter_hours", "queue_entered_at", 900),
              ("calls_offer_hours", "queue_entered_at", 3600),
              ("calls_arrival_quarter_hours", "arrived_at", 900),
              ("calls_arrival_hours", "arrived_at", 3600))


def upgrade() -> None:
    """Add the column and fill it for the offered calls already logged."""
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.add_column(sa.Column('next_offer_at', sa.DateTime(timezone=True), nullable=True))
    from ivr.calls import FILL_NEXT_OFFER, FILL_NEXT_OFFER_POSTGRESQL  # as the import runs them
    postgresql = op.get_bind().dialect.name == "postgresql"
    op.execute(FILL_NEXT_OFFER_POSTGRESQL if postgresql else FILL_NEXT_OFFER)
    if postgresql:
        # Reports group by these buckets (reporting/aggregate.py); without statistics on them
        # the planner guesses one group per call and sorts a month of calls to disk.
        for name, column, size in STATISTICS:
            op.execute(f"CREATE STATISTICS IF NOT EXISTS {name} ON (date_bin(INTERVAL '{size} "
                       f"seconds', {column}, TIMESTAMPTZ '1970-01-01 00:00:00+00')) FROM calls")
        op.execute("ANALYZE calls")



def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name, _, _ in STATISTICS:
            op.execute(f"DROP STATISTICS IF EXISTS {name}")
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.drop_column('next_offer_at')
