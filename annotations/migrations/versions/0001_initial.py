"""Initial schema: media, datasets, items, score sets and scores.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("source_file", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("item_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_datasets")),
        sa.UniqueConstraint("name", name=op.f("uq_datasets_name")),
    )
    op.create_table(
        "media",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("suffix", sa.String(length=16), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_media")),
    )
    op.create_table(
        "items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.String(length=200), nullable=False),
        sa.Column("media_sha256", sa.String(length=64), nullable=False),
        sa.Column("image_url", sa.Text(), nullable=True),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("source_label", sa.Integer(), nullable=True),
        sa.Column("split", sa.String(length=50), nullable=True),
        sa.Column("extra", sa.JSON(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name=op.f("fk_items_dataset_id_datasets"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["media_sha256"], ["media.sha256"], name=op.f("fk_items_media_sha256_media")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_items")),
        sa.UniqueConstraint("dataset_id", "external_id", name="uq_items_dataset_external_id"),
    )
    op.create_index("ix_items_dataset_position", "items", ["dataset_id", "position"])
    op.create_index(op.f("ix_items_media_sha256"), "items", ["media_sha256"])
    op.create_table(
        "score_sets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("model_name", sa.String(length=500), nullable=False),
        sa.Column("model_fingerprint", sa.String(length=200), nullable=False),
        sa.Column("text_field", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("n_items", sa.Integer(), nullable=False),
        sa.Column("n_truncated", sa.Integer(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name=op.f("fk_score_sets_dataset_id_datasets"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_score_sets")),
    )
    op.create_index(op.f("ix_score_sets_dataset_id"), "score_sets", ["dataset_id"])
    op.create_table(
        "scores",
        sa.Column("score_set_id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("similarity", sa.Float(), nullable=False),
        sa.Column("truncated", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["item_id"], ["items.id"], name=op.f("fk_scores_item_id_items"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["score_set_id"], ["score_sets.id"], name=op.f("fk_scores_score_set_id_score_sets"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("score_set_id", "item_id", name=op.f("pk_scores")),
    )
    op.create_index(op.f("ix_scores_item_id"), "scores", ["item_id"])


def downgrade() -> None:
    op.drop_table("scores")
    op.drop_table("score_sets")
    op.drop_table("items")
    op.drop_table("media")
    op.drop_table("datasets")
