"""Triage verdicts keep the threshold in force when they were decided (the hard-cases export shows it).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('triage_decisions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('threshold', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('threshold_strategy', sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('triage_decisions', schema=None) as batch_op:
        batch_op.drop_column('threshold_strategy')
        batch_op.drop_column('threshold')
