"""Database tables: media, datasets, items, model predictions (score sets), users, what
annotators say about items (leases, labels, the label event log, gold labels), and training
experiments with their runs (the job table of ``train_jobs``).

Every schema change goes through a new Alembic revision in ``annotations/migrations/versions``;
the models here must always match the newest revision (a test compares them).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.expression import false

# Explicit constraint names, so later migrations (batch mode on SQLite, PostgreSQL) can address them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite would otherwise hand back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use a timezone-aware datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Media(Base):
    """An image file in the content-addressed media store, named by its SHA-256."""

    __tablename__ = "media"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    suffix: Mapped[str] = mapped_column(String(16))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    source_file: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    item_count: Mapped[int] = mapped_column(Integer, default=0)
    # Annotation settings
    overlap: Mapped[int] = mapped_column(Integer, default=3, server_default="3")  # labels wanted per item
    lease_minutes: Mapped[int] = mapped_column(Integer, default=15, server_default="15")
    reveal_score_after_vote: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    guidelines: Mapped[str] = mapped_column(Text, default="", server_default="")
    # Optional ordering: items whose score is closest to the threshold first
    uncertainty_score_set_id: Mapped[int | None] = mapped_column(
        ForeignKey("score_sets.id", ondelete="SET NULL", use_alter=True)
    )
    uncertainty_threshold: Mapped[float | None] = mapped_column(Float)
    # Team (0006_team): the share of an annotator's items that are control items, when the dataset has some
    control_rate: Mapped[float] = mapped_column(Float, default=0.1, server_default="0.1")


class Item(Base):
    """One thumbnail/text pair of a dataset. ``external_id`` is the ``id`` column of the imported table."""

    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("dataset_id", "external_id", name="uq_items_dataset_external_id"),
        Index("ix_items_dataset_position", "dataset_id", "position"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(200))
    media_sha256: Mapped[str] = mapped_column(ForeignKey("media.sha256"), index=True)
    image_url: Mapped[str | None] = mapped_column(Text)
    title: Mapped[str] = mapped_column(Text)
    summary: Mapped[str] = mapped_column(Text)
    source_label: Mapped[int | None] = mapped_column(Integer)
    split: Mapped[str | None] = mapped_column(String(50))
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    position: Mapped[int] = mapped_column(Integer)


class ScoreSet(Base):
    """One model prediction run over a dataset: a similarity per scored item."""

    __tablename__ = "score_sets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    model_name: Mapped[str] = mapped_column(String(500))
    model_fingerprint: Mapped[str] = mapped_column(String(200))
    text_field: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    n_items: Mapped[int] = mapped_column(Integer)
    n_truncated: Mapped[int] = mapped_column(Integer)
    note: Mapped[str] = mapped_column(Text, default="")
    # Scores of a model with random weights (the tiny offline model): the UI flags them wherever they appear.
    meaningless: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The job whose model produced these scores (a training run's evaluation, or a scoring job), if any.
    train_run_id: Mapped[int | None] = mapped_column(ForeignKey("train_runs.id", ondelete="SET NULL"), index=True)


class Score(Base):
    __tablename__ = "scores"

    score_set_id: Mapped[int] = mapped_column(ForeignKey("score_sets.id", ondelete="CASCADE"), primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True, index=True)
    similarity: Mapped[float] = mapped_column(Float)
    truncated: Mapped[bool] = mapped_column(Boolean)


ROLES = ("admin", "researcher", "annotator")


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(80), unique=True)  # stored lower-case
    display_name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(20))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LoginFailure(Base):
    """Failed sign-ins per username typed, whether or not such a user exists (for the slowdown)."""

    __tablename__ = "login_failures"

    username: Mapped[str] = mapped_column(String(80), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LoginSession(Base):
    """A signed-in browser. Only a hash of the token is stored."""

    __tablename__ = "login_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Lease(Base):
    """An item handed to one annotator until it expires; at most one lease per item."""

    __tablename__ = "leases"

    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    leased_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Label(Base):
    """The current answer of one annotator for one item. ``value`` None means skipped."""

    __tablename__ = "labels"

    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), primary_key=True, index=True)
    value: Mapped[int | None] = mapped_column(Integer)
    reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    note: Mapped[str] = mapped_column(Text, default="")
    flagged: Mapped[bool] = mapped_column(Boolean, default=False)
    seconds_spent: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LabelEvent(Base):
    """Append-only log of every label change: who, what, when, and the value before."""

    __tablename__ = "label_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), index=True)
    action: Mapped[str] = mapped_column(String(20))  # vote | skip | undo
    value: Mapped[int | None] = mapped_column(Integer)
    previous_value: Mapped[int | None] = mapped_column(Integer)
    had_previous: Mapped[bool] = mapped_column(Boolean, default=False)
    reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    note: Mapped[str] = mapped_column(Text, default="")
    flagged: Mapped[bool] = mapped_column(Boolean, default=False)
    seconds_spent: Mapped[float | None] = mapped_column(Float)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The client's id for this action: a double click or a resent request is recorded once.
    request_id: Mapped[str | None] = mapped_column(String(64), unique=True)


class GoldLabel(Base):
    """A label settled by a researcher (majority votes are computed, not stored)."""

    __tablename__ = "gold_labels"

    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    value: Mapped[int] = mapped_column(Integer)
    method: Mapped[str] = mapped_column(String(20))  # adjudicated
    reason: Mapped[str] = mapped_column(Text, default="")
    decided_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class GoldEvent(Base):
    """Append-only history of gold decisions."""

    __tablename__ = "gold_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    value: Mapped[int | None] = mapped_column(Integer)  # None: the decision was withdrawn
    previous_value: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text, default="")
    decided_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


TRIAGE_VERDICTS = ("model_wrong", "humans_wrong", "ambiguous", "broken_image")


class TriageDecision(Base):
    """A researcher's verdict on a confident model/human disagreement, per item and score set.

    One current verdict per (item, score set), replaced when decided again; it feeds the hard-cases export.
    """

    __tablename__ = "triage_decisions"

    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    score_set_id: Mapped[int] = mapped_column(ForeignKey("score_sets.id", ondelete="CASCADE"), primary_key=True,
                                              index=True)
    verdict: Mapped[str] = mapped_column(String(20))  # one of TRIAGE_VERDICTS
    note: Mapped[str] = mapped_column(Text, default="")
    decided_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The threshold in force when it was decided, and how it was chosen (NULL for verdicts from before 0005).
    threshold: Mapped[float | None] = mapped_column(Float)
    threshold_strategy: Mapped[str | None] = mapped_column(String(40))


EXPERIMENT_KINDS = ("train", "proof", "score")  # the train command, the synthetic proof, a scoring job
BACKENDS = ("local", "torchrun", "slurm")
RUN_STATES = ("queued", "starting", "running", "succeeded", "failed", "cancelled", "lost")


class Experiment(Base):
    """One configuration run once per seed. ``config`` holds every setting except the seed."""

    __tablename__ = "experiments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(20))  # one of EXPERIMENT_KINDS
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    config_hash: Mapped[str] = mapped_column(String(64), index=True)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # command options outside the config
    backend: Mapped[str] = mapped_column(String(20))  # one of BACKENDS
    gpus_per_run: Mapped[int] = mapped_column(Integer, default=0)
    train_dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id", ondelete="SET NULL"))
    val_dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id", ondelete="SET NULL"))
    eval_dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id", ondelete="SET NULL"))
    folder: Mapped[str] = mapped_column(Text)  # under the instance folder: exported data and one folder per run
    note: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TrainRun(Base):
    """One job: a seed of an experiment, from the queue to its end (states in RUN_STATES).

    The row is the source of truth; the process reports through files in ``run_dir`` (heartbeat,
    exit status, metrics), which the reconciler copies here.
    """

    __tablename__ = "train_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), index=True)
    seed: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(20), default="queued", index=True)
    reason: Mapped[str] = mapped_column(Text, default="")  # why it waits, failed or was lost, in words
    command: Mapped[list[str]] = mapped_column(JSON, default=list)  # the job command, before any launcher
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # the experiment's config plus the seed
    config_hash: Mapped[str] = mapped_column(String(64))
    backend: Mapped[str] = mapped_column(String(20))
    n_gpus: Mapped[int] = mapped_column(Integer, default=0)
    gpus: Mapped[list[int]] = mapped_column(JSON, default=list)  # indices given to it (local backends)
    run_dir: Mapped[str] = mapped_column(Text)
    log_path: Mapped[str] = mapped_column(Text)
    host: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer)  # the launcher's process, leader of its process group
    pid_started: Mapped[str | None] = mapped_column(String(64))  # that process's start time: detects pid reuse
    slurm_job_id: Mapped[str | None] = mapped_column(String(64))
    exit_code: Mapped[int | None] = mapped_column(Integer)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    phase: Mapped[str | None] = mapped_column(String(20))
    step: Mapped[int | None] = mapped_column(Integer)
    total_steps: Mapped[int | None] = mapped_column(Integer)
    samples_per_s: Mapped[float | None] = mapped_column(Float)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    launched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # handed to its backend
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # its process began (Slurm: left the queue)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancel_requested_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # Provenance
    label_snapshot: Mapped[str | None] = mapped_column(String(64))  # hash of the labels exported for the run
    code_version: Mapped[str] = mapped_column(String(100), default="")
    package_versions: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    # Results, imported from the run folder when it ends
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # training summary (metrics.json)
    eval_metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # eval/metrics.json
    checkpoint_path: Mapped[str | None] = mapped_column(Text)
    results_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    results_error: Mapped[str] = mapped_column(Text, default="")


# --- Team: who may label a dataset, control items with known answers, comments (0006_team) --------


class DatasetAssignment(Base):
    """A user assigned to label a dataset. A dataset without any assignment is open to everyone."""

    __tablename__ = "dataset_assignments"

    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True)
    assigned_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


CONTROL_SOURCES = ("gold", "imported")  # where a control item's answer came from


class ControlItem(Base):
    """An item whose answer is known, mixed into every annotator's queue at the dataset's
    ``control_rate`` (never shown as such) to measure each annotator's accuracy."""

    __tablename__ = "control_items"

    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    value: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(20))  # one of CONTROL_SOURCES
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ItemComment(Base):
    """A comment on an item (a flagged one, usually): researchers write it, the flagging annotators read it."""

    __tablename__ = "item_comments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), index=True)
    body: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
