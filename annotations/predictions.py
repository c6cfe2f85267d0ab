"""Model predictions: score a stored dataset with a CLIP model and read the results back.

Embeddings are cached in the instance folder, so scoring a dataset again with the same model
only reads the cache.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from sqlalchemy.orm import Session, sessionmaker

from annotations.importer import dataset_items_frame
from annotations.score_sets import scores_frame, store_score_set
from annotations.models import ScoreSet
from annotations.settings import Settings
from cftclip_core.embedding_cache import EmbeddingCache
from cftclip_core.errors import DataError
from cftclip_core.formats import check_text_field
from cftclip_core.images import PixelCache
from cftclip_core.models import LoadedModel
from cftclip_core.scoring import Progress, ScoreItem, ScoreOptions, score_pairs



def score_dataset(
    factory: sessionmaker[Session],
    settings: Settings,
    dataset_id: int,
    loaded: LoadedModel,
    text_field: str,
    *,
    options: ScoreOptions = ScoreOptions(),
    progress: Progress | None = None,
) -> ScoreSet:
    """Score every item of a dataset and store the result as a new score set."""
    check_text_field(text_field)
    with factory() as session:
        items = dataset_items_frame(session, dataset_id, settings)
    missing = items[items["media_path"].isna()]
    if not missing.empty:
        raise DataError(
            f"{len(missing)} image(s) of this dataset are missing from the media store (e.g. item "
            f"'{missing.iloc[0]['external_id']}'); import the dataset again to restore them."
        )
    pairs = [ScoreItem(str(row.item_id), Path(row.media_path), getattr(row, text_field)) for row in items.itertuples()]
    with EmbeddingCache(settings.cache_dir / "embeddings.sqlite") as cache:
        run = score_pairs(loaded, pairs, cache=cache, pixel_cache=PixelCache(settings.cache_dir / "pixels",
                          loaded.preprocess), options=options, progress=progress)
    scores = {int(key): (float(sim), bool(cut)) for key, sim, cut in zip(run.keys, run.similarities, run.truncated)}
    return store_score_set(factory, dataset_id, loaded.name, loaded.fingerprint, text_field, scores,
                           meaningless=loaded.is_tiny)


def articles_frame(session: Session, dataset_id: int, settings: Settings, score_set_id: int | None) -> pd.DataFrame:
    """The dataset's items with the similarity of one score set (NaN where it scored none)."""
    items = dataset_items_frame(session, dataset_id, settings)
    if score_set_id is None:
        items["similarity"] = float("nan")
        items["truncated"] = False
        return items
    scores = scores_frame(session, score_set_id)[["item_id", "similarity", "truncated"]]
    return items.merge(scores, on="item_id", how="left")
