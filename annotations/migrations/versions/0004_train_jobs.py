"""Training jobs: experiments (one config x seeds), their runs (the job table), and the training run
that produced a score set.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('experiments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('config_hash', sa.String(length=64), nullable=False),
    sa.Column('options', sa.JSON(), nullable=False),
    sa.Column('backend', sa.String(length=20), nullable=False),
    sa.Column('gpus_per_run', sa.Integer(), nullable=False),
    sa.Column('train_dataset_id', sa.Integer(), nullable=True),
    sa.Column('val_dataset_id', sa.Integer(), nullable=True),
    sa.Column('eval_dataset_id', sa.Integer(), nullable=True),
    sa.Column('folder', sa.Text(), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['created_by'], ['users.id'], name=op.f('fk_experiments_created_by_users'),
                            ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['eval_dataset_id'], ['datasets.id'],
                            name=op.f('fk_experiments_eval_dataset_id_datasets'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['train_dataset_id'], ['datasets.id'],
                            name=op.f('fk_experiments_train_dataset_id_datasets'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['val_dataset_id'], ['datasets.id'],
                            name=op.f('fk_experiments_val_dataset_id_datasets'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_experiments')),
    sa.UniqueConstraint('name', name=op.f('uq_experiments_name'))
    )
    with op.batch_alter_table('experiments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_experiments_config_hash'), ['config_hash'], unique=False)

    op.create_table('train_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('experiment_id', sa.Integer(), nullable=False),
    sa.Column('seed', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('command', sa.JSON(), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('config_hash', sa.String(length=64), nullable=False),
    sa.Column('backend', sa.String(length=20), nullable=False),
    sa.Column('n_gpus', sa.Integer(), nullable=False),
    sa.Column('gpus', sa.JSON(), nullable=False),
    sa.Column('run_dir', sa.Text(), nullable=False),
    sa.Column('log_path', sa.Text(), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=True),
    sa.Column('pid', sa.Integer(), nullable=True),
    sa.Column('pid_started', sa.String(length=64), nullable=True),
    sa.Column('slurm_job_id', sa.String(length=64), nullable=True),
    sa.Column('exit_code', sa.Integer(), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('phase', sa.String(length=20), nullable=True),
    sa.Column('step', sa.Integer(), nullable=True),
    sa.Column('total_steps', sa.Integer(), nullable=True),
    sa.Column('samples_per_s', sa.Float(), nullable=True),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('launched_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('cancel_requested_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('cancel_requested_by', sa.Integer(), nullable=True),
    sa.Column('label_snapshot', sa.String(length=64), nullable=True),
    sa.Column('code_version', sa.String(length=100), nullable=False),
    sa.Column('package_versions', sa.JSON(), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=True),
    sa.Column('eval_metrics', sa.JSON(), nullable=True),
    sa.Column('checkpoint_path', sa.Text(), nullable=True),
    sa.Column('results_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('results_error', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['cancel_requested_by'], ['users.id'],
                            name=op.f('fk_train_runs_cancel_requested_by_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['created_by'], ['users.id'], name=op.f('fk_train_runs_created_by_users'),
                            ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'],
                            name=op.f('fk_train_runs_experiment_id_experiments'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_train_runs'))
    )
    with op.batch_alter_table('train_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_train_runs_experiment_id'), ['experiment_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_train_runs_state'), ['state'], unique=False)

    with op.batch_alter_table('score_sets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('train_run_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_score_sets_train_run_id'), ['train_run_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_score_sets_train_run_id_train_runs'), 'train_runs',
                                    ['train_run_id'], ['id'], ondelete='SET NULL')


def downgrade() -> None:
    with op.batch_alter_table('score_sets', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_score_sets_train_run_id_train_runs'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_score_sets_train_run_id'))
        batch_op.drop_column('train_run_id')

    with op.batch_alter_table('train_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_train_runs_state'))
        batch_op.drop_index(batch_op.f('ix_train_runs_experiment_id'))
    op.drop_table('train_runs')

    with op.batch_alter_table('experiments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_experiments_config_hash'))
    op.drop_table('experiments')
