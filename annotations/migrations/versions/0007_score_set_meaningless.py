"""Score sets say in a column whether their scores carry no meaning (the tiny offline model's random
weights), instead of in a fixed note text; the old note becomes the flag.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

# The note that marked such score sets up to revision 0005.
OLD_NOTE = "tiny offline model with random weights: these scores carry no meaning"


def upgrade() -> None:
    with op.batch_alter_table('score_sets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('meaningless', sa.Boolean(), server_default=sa.false(), nullable=False))
    score_sets = sa.table('score_sets', sa.column('note', sa.Text()), sa.column('meaningless', sa.Boolean()))
    op.execute(score_sets.update().where(score_sets.c.note == OLD_NOTE).values(meaningless=True, note=''))


def downgrade() -> None:
    score_sets = sa.table('score_sets', sa.column('note', sa.Text()), sa.column('meaningless', sa.Boolean()))
    op.execute(score_sets.update().where(score_sets.c.meaningless == sa.true()).values(note=OLD_NOTE))
    with op.batch_alter_table('score_sets', schema=None) as batch_op:
        batch_op.drop_column('meaningless')
