"""Control items: items whose answer is known, mixed into every annotator's queue to measure accuracy.

A researcher makes control items from answers already trusted: the gold labels settled in the
Review queue, or the label column of the imported file. ``annotations.labeling`` hands them out at
the dataset's ``control_rate`` (0.1: one item in ten), to every annotator (no overlap limit), and a
card never tells that it shows one.

Their votes are ordinary labels: they count in the agreement statistics and the majority gold like
any other vote (each is a blind judgment of a real item). The known answers do not replace the gold
(settle an item on Review for that); they only measure each annotator's accuracy, shown apart on
Review.
"""

from __future__ import annotations

import pandas as pd
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from annotations.db import write_session
from annotations.importer import get_dataset
from annotations.models import CONTROL_SOURCES, ControlItem, GoldLabel, Item, Label, User, utcnow
from cftclip_core import team_stats
from cftclip_core.errors import CftClipError

SOURCES = {"gold": "the gold labels settled in the Review queue", "imported": "the imported file's label column"}
assert set(SOURCES) == set(CONTROL_SOURCES)


class ControlError(CftClipError):
    """Control items cannot be made as asked."""


def make_control_items(factory: sessionmaker[Session], dataset_id: int, source: str, user_id: int | None) -> int:
    """Make every item of the dataset with a known answer from ``source`` (see SOURCES) a control item
    with that answer (an existing control item takes the new answer). Returns how many there are now
    from this source. Refused, changing nothing, when the source has no answer in the dataset."""
    if source not in SOURCES:
        raise ControlError(f"Unknown source {source!r} of control answers; use one of {', '.join(SOURCES)}.")
    with write_session(factory) as session:
        get_dataset(session, dataset_id)
        if source == "gold":
            known = session.execute(select(GoldLabel.item_id, GoldLabel.value).join(Item, Item.id == GoldLabel.item_id)
                                    .where(Item.dataset_id == dataset_id)).all()
        else:
            known = session.execute(select(Item.id, Item.source_label)
                                    .where(Item.dataset_id == dataset_id, Item.source_label.is_not(None))).all()
        if not known:
            raise ControlError(
                f"This dataset has no answers in {SOURCES[source]}; "
                + ("settle some items in the Review queue first." if source == "gold"
                   else "import it with a 'label' column, or use settled gold labels.")
                + " Nothing was changed."
            )
        now = utcnow()
        for item_id, value in known:
            control = session.get(ControlItem, item_id)
            if control is None:
                session.add(ControlItem(item_id=item_id, dataset_id=dataset_id, value=int(value), source=source,
                                        created_by=user_id, created_at=now))
            else:
                control.value, control.source, control.created_by, control.created_at = int(value), source, user_id, now
    return len(known)


def clear_control_items(factory: sessionmaker[Session], dataset_id: int) -> int:
    """Make the dataset's control items ordinary items again (their labels stay). Returns how many."""
    with write_session(factory) as session:
        return session.execute(delete(ControlItem).where(ControlItem.dataset_id == dataset_id)).rowcount or 0


def control_items(session: Session, dataset_id: int) -> pd.DataFrame:
    """The dataset's control items: item, known answer and where it came from, in dataset order."""
    rows = session.execute(
        select(ControlItem.item_id, Item.external_id, ControlItem.value, ControlItem.source)
        .join(Item, Item.id == ControlItem.item_id).where(ControlItem.dataset_id == dataset_id).order_by(Item.position)
    ).all()
    return pd.DataFrame(rows, columns=["item_id", "external_id", "value", "source"])


def control_accuracy(session: Session, dataset_id: int) -> pd.DataFrame:
    """Each annotator's accuracy on the control items they answered (skips left out), with a 95% interval."""
    known = dict(session.execute(select(ControlItem.item_id, ControlItem.value)
                                 .where(ControlItem.dataset_id == dataset_id)).all())
    votes = pd.DataFrame(
        session.execute(select(Label.item_id, User.username, Label.value).join(User, User.id == Label.user_id)
                        .join(ControlItem, ControlItem.item_id == Label.item_id)
                        .where(ControlItem.dataset_id == dataset_id, Label.value.is_not(None))).all(),
        columns=["item_id", "annotator_id", "value"],
    )
    return team_stats.accuracy_on_known(votes, known)
