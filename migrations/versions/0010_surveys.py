"""surveys: invitations, answers (NPS), the SMS outbox and opt-outs

Revision ID: 0010
Revises: 0009

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0010'
down_revision: Union[str, Sequence[str], None] = '0009'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Create the four survey tables (new, empty: no data to move)."""
    op.create_table('survey_opt_outs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('number', sa.String(length=32), nullable=False),
    sa.Column('opted_out_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('message_sid', sa.String(length=64), nullable=True),
    sa.Column('body', sa.String(length=160), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_survey_opt_outs')),
    sa.UniqueConstraint('number', name=op.f('uq_survey_opt_outs_number'))
    )
    op.create_table('survey_invitations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('call_id', sa.Integer(), nullable=False),
    sa.Column('channel', sa.String(length=8), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=True),
    sa.Column('caller_key', sa.String(length=64), nullable=True),
    sa.Column('language', sa.String(length=8), nullable=True),
    sa.Column('queue_id', sa.Integer(), nullable=True),
    sa.Column('agent_id', sa.Integer(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('answered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('clarified_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], name=op.f('fk_survey_invitations_agent_id_agents'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['call_id'], ['calls.id'], name=op.f('fk_survey_invitations_call_id_calls'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['queue_id'], ['queues.id'], name=op.f('fk_survey_invitations_queue_id_queues'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_survey_invitations')),
    sa.UniqueConstraint('call_id', 'channel', name='uq_survey_invitations_call_id_channel')
    )
    with op.batch_alter_table('survey_invitations', schema=None) as batch_op:
        batch_op.create_index('ix_survey_invitations_caller_key_created_at', ['caller_key', 'created_at'], unique=False)
        batch_op.create_index('ix_survey_invitations_state', ['state'], unique=False)

    op.create_table('survey_responses',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('call_id', sa.Integer(), nullable=False),
    sa.Column('invitation_id', sa.Integer(), nullable=True),
    sa.Column('agent_id', sa.Integer(), nullable=True),
    sa.Column('queue_id', sa.Integer(), nullable=True),
    sa.Column('language', sa.String(length=8), nullable=True),
    sa.Column('channel', sa.String(length=8), nullable=False),
    sa.Column('score', sa.Integer(), nullable=False),
    sa.Column('resolved', sa.Boolean(), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('message_sid', sa.String(length=64), nullable=True),
    sa.CheckConstraint('score >= 0 AND score <= 10', name=op.f('ck_survey_responses_score_range')),
    sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], name=op.f('fk_survey_responses_agent_id_agents'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['call_id'], ['calls.id'], name=op.f('fk_survey_responses_call_id_calls'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['invitation_id'], ['survey_invitations.id'], name=op.f('fk_survey_responses_invitation_id_survey_invitations'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['queue_id'], ['queues.id'], name=op.f('fk_survey_responses_queue_id_queues'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_survey_responses')),
    sa.UniqueConstraint('call_id', name=op.f('uq_survey_responses_call_id')),
    sa.UniqueConstraint('message_sid', name=op.f('uq_survey_responses_message_sid'))
    )
    with op.batch_alter_table('survey_responses', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_survey_responses_agent_id'), ['agent_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_survey_responses_received_at'), ['received_at'], unique=False)

    op.create_table('survey_sms_outbox',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('invitation_id', sa.Integer(), nullable=False),
    sa.Column('idempotency_key', sa.String(length=64), nullable=False),
    sa.Column('to_number', sa.String(length=32), nullable=False),
    sa.Column('from_number', sa.String(length=32), nullable=False),
    sa.Column('body', sa.String(length=640), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('lost_claims', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('claim_token', sa.String(length=32), nullable=True),
    sa.Column('provider_sid', sa.String(length=64), nullable=True),
    sa.Column('last_error', sa.String(length=255), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['invitation_id'], ['survey_invitations.id'], name=op.f('fk_survey_sms_outbox_invitation_id_survey_invitations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_survey_sms_outbox')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_survey_sms_outbox_idempotency_key')),
    sa.UniqueConstraint('invitation_id', name=op.f('uq_survey_sms_outbox_invitation_id')),
    sa.UniqueConstraint('provider_sid', name=op.f('uq_survey_sms_outbox_provider_sid'))
    )
    with op.batch_alter_table('survey_sms_outbox', schema=None) as batch_op:
        batch_op.create_index('ix_survey_sms_outbox_state_next_attempt_at', ['state', 'next_attempt_at'], unique=False)


def downgrade() -> None:
    """Drop the survey tables (their data is lost)."""
    with op.batch_alter_table('survey_sms_outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_survey_sms_outbox_state_next_attempt_at')

    op.drop_table('survey_sms_outbox')
    with op.batch_alter_table('survey_responses', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_survey_responses_received_at'))
        batch_op.drop_index(batch_op.f('ix_survey_responses_agent_id'))

    op.drop_table('survey_responses')
    with op.batch_alter_table('survey_invitations', schema=None) as batch_op:
        batch_op.drop_index('ix_survey_invitations_state')
        batch_op.drop_index('ix_survey_invitations_caller_key_created_at')

    op.drop_table('survey_invitations')
    op.drop_table('survey_opt_outs')
