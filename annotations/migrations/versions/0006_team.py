"""Team: datasets assigned to annotators, control items with known answers (and the rate they are
mixed in at), comments on items.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('control_rate', sa.Float(), server_default='0.1', nullable=False))
    op.create_table('dataset_assignments',
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('assigned_by', sa.Integer(), nullable=True),
    sa.Column('assigned_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['assigned_by'], ['users.id'], name=op.f('fk_dataset_assignments_assigned_by_users'),
                            ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_dataset_assignments_dataset_id_datasets'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_dataset_assignments_user_id_users'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('dataset_id', 'user_id', name=op.f('pk_dataset_assignments'))
    )
    with op.batch_alter_table('dataset_assignments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dataset_assignments_user_id'), ['user_id'], unique=False)
    op.create_table('control_items',
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('value', sa.Integer(), nullable=False),
    sa.Column('source', sa.String(length=20), nullable=False),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['created_by'], ['users.id'], name=op.f('fk_control_items_created_by_users'),
                            ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_control_items_dataset_id_datasets'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['item_id'], ['items.id'], name=op.f('fk_control_items_item_id_items'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('item_id', name=op.f('pk_control_items'))
    )
    with op.batch_alter_table('control_items', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_control_items_dataset_id'), ['dataset_id'], unique=False)
    op.create_table('item_comments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['items.id'], name=op.f('fk_item_comments_item_id_items'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_item_comments_user_id_users'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_item_comments'))
    )
    with op.batch_alter_table('item_comments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_item_comments_item_id'), ['item_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_item_comments_user_id'), ['user_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('item_comments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_item_comments_user_id'))
        batch_op.drop_index(batch_op.f('ix_item_comments_item_id'))
    op.drop_table('item_comments')
    with op.batch_alter_table('control_items', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_control_items_dataset_id'))
    op.drop_table('control_items')
    with op.batch_alter_table('dataset_assignments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dataset_assignments_user_id'))
    op.drop_table('dataset_assignments')
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.drop_column('control_rate')
