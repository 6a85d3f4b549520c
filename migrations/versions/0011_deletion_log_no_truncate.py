"""recordings: the deletion log cannot be truncated on PostgreSQL either

Revision ID: 0011
Revises: 0010

"""
from typing import Sequence, Union

from alembic import op


# revision identifiers, used by Alembic.
revision: str = '0011'
down_revision: Union[str, Sequence[str], None] = '0010'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """A statement-level BEFORE TRUNCATE trigger, next to the row triggers of 0006 that refuse
    UPDATE and DELETE: TRUNCATE fires no row triggers, so the table's owner could empty the log
    (every deleted recording would then read as UNLOGGED). SQLite has no TRUNCATE."""
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE TRIGGER recording_deletions_no_truncate BEFORE TRUNCATE ON "
               "recording_deletions FOR EACH STATEMENT "
               "EXECUTE FUNCTION recording_deletions_append_only()")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS recording_deletions_no_truncate ON recording_deletions")
