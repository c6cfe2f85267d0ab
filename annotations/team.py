"""The team around a dataset: who is assigned to label it, who holds which item now, and the pace.

Assignment: a dataset with no assigned user is open to everyone who may label; once users are
assigned, only they get its items (``annotations.labeling`` enforces it when handing items out).
Labels already given by others stay.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from annotations.db import write_session
from annotations.importer import get_dataset
from annotations.labeling import team_counts
from annotations.models import DatasetAssignment, Item, Label, Lease, User, utcnow
from cftclip_core import team_stats
from cftclip_core.errors import CftClipError


class TeamError(CftClipError):
    """A team change that cannot be made as asked."""


@dataclass(frozen=True)
class TeamView:
    holds: pd.DataFrame  # who holds which item now: annotator, item, title, since, expires
    activity: pd.DataFrame  # per annotator: new labels in the last hour and day, last label
    last_hour: team_stats.Pace
    last_day: team_stats.Pace


def assigned_usernames(session: Session, dataset_id: int) -> list[str]:
    """The users assigned to the dataset, by name; empty when it is open to everyone."""
    return list(session.scalars(
        select(User.username).join(DatasetAssignment, DatasetAssignment.user_id == User.id)
        .where(DatasetAssignment.dataset_id == dataset_id).order_by(User.username)
    ))


def assign(factory: sessionmaker[Session], dataset_id: int, usernames: Sequence[str], assigned_by: int | None) -> list[str]:
    """Make ``usernames`` the dataset's annotators (replacing the list); an empty list opens the dataset
    to everyone. Items the users no longer assigned hold are given back. Returns the names assigned."""
    wanted = sorted({name.strip().lower() for name in usernames if name.strip()})
    with write_session(factory) as session:
        get_dataset(session, dataset_id)
        users = {u.username: u for u in session.scalars(select(User).where(User.username.in_(wanted)))}
        unknown = [name for name in wanted if name not in users]
        if unknown:
            raise TeamError(f"No user named {', '.join(unknown)}; add them on the Users page first. Nothing was changed.")
        inactive = [name for name in wanted if not users[name].active]
        if inactive:
            raise TeamError(f"{', '.join(inactive)} is deactivated; activate them on the Users page or leave them out. "
                            "Nothing was changed.")
        session.execute(delete(DatasetAssignment).where(DatasetAssignment.dataset_id == dataset_id))
        now = utcnow()
        session.add_all(DatasetAssignment(dataset_id=dataset_id, user_id=users[name].id, assigned_by=assigned_by,
                                          assigned_at=now) for name in wanted)
        if wanted:
            kept = [users[name].id for name in wanted]
            in_dataset = select(Item.id).where(Item.dataset_id == dataset_id)
            session.execute(delete(Lease).where(Lease.item_id.in_(in_dataset), Lease.user_id.not_in(kept)))
    return wanted


def holds(session: Session, dataset_id: int, now: datetime | None = None) -> pd.DataFrame:
    """Who holds which item of the dataset right now (unexpired leases), longest held first."""
    now = now or utcnow()
    rows = session.execute(
        select(User.username, Item.external_id, Item.title, Lease.leased_at, Lease.expires_at)
        .join(Item, Item.id == Lease.item_id).join(User, User.id == Lease.user_id)
        .where(Item.dataset_id == dataset_id, Lease.expires_at > now)
        .order_by(Lease.leased_at)
    ).all()
    frame = pd.DataFrame(rows, columns=["annotator", "item", "title", "since", "expires"])
    frame["minutes_held"] = [(now - since).total_seconds() / 60 for since in frame["since"]]
    return frame


def label_times(session: Session, dataset_id: int, since: datetime) -> pd.DataFrame:
    """When each yes/no label of the dataset that stands now was first given, for those given since
    ``since`` (an undone vote is not counted, an edit counts once, a skip not at all)."""
    rows = session.execute(
        select(User.username, Label.created_at)
        .join(Item, Item.id == Label.item_id).join(User, User.id == Label.user_id)
        .where(Item.dataset_id == dataset_id, Label.value.is_not(None), Label.created_at > since)
    ).all()
    return pd.DataFrame(rows, columns=["annotator_id", "at"])


def team_view(session: Session, dataset_id: int, now: datetime | None = None) -> TeamView:
    """The live team view of a dataset: current holds, each annotator's recent labels, and the team's
    pace over the last hour and day with the time to finish at each."""
    now = now or utcnow()
    counts = team_counts(session, dataset_id)
    remaining = counts.labels_needed - counts.team_labels
    times = label_times(session, dataset_id, now - timedelta(days=1))
    return TeamView(
        holds=holds(session, dataset_id, now),
        activity=team_stats.activity(times, now),
        last_hour=team_stats.pace(times, now, remaining, timedelta(hours=1)),
        last_day=team_stats.pace(times, now, remaining, timedelta(days=1)),
    )
