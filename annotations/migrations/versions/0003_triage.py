"""Results: triage verdicts on confident model/human disagreements.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('triage_decisions',
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('score_set_id', sa.Integer(), nullable=False),
    sa.Column('verdict', sa.String(length=20), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('decided_by', sa.Integer(), nullable=True),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['decided_by'], ['users.id'], name=op.f('fk_triage_decisions_decided_by_users'),
                            ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['item_id'], ['items.id'], name=op.f('fk_triage_decisions_item_id_items'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['score_set_id'], ['score_sets.id'],
                            name=op.f('fk_triage_decisions_score_set_id_score_sets'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('item_id', 'score_set_id', name=op.f('pk_triage_decisions'))
    )
    with op.batch_alter_table('triage_decisions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_triage_decisions_score_set_id'), ['score_set_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('triage_decisions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_triage_decisions_score_set_id'))
    op.drop_table('triage_decisions')
