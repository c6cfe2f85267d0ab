"""Render time of the results pages on 1,000 items and 10 score sets: ours vs a naive version, same run.

Setup: a fresh instance folder (SQLite) seeded by ``tests.test_results.seed_results``: 1,000 synthetic items
(train/val/test), 10 score sets, 3 annotators (1,000 + 1,000 + 500 votes). Every page runs through
Streamlit's AppTest in this process, signed in as a researcher: the time is the page script's run
(queries, computation, building and serialising the charts and tables), not the browser's drawing.

ours:  each page (Articles, Thresholds, Disagreement, Models) on its first render (caches emptied) and on a
       rerun after an interaction (a search for a colour word that about a quarter of the titles hold, a
       slider move, a cell picked, another metric).
naive: a first version of the two busiest pages, written the straightforward way and run the same way:
       - Thresholds: the score set and every item's votes and gold read through ORM objects one item at a
         time, metrics by scikit-learn at every distinct threshold, charts of the raw rows (the 5,000-row
         limit switched off), nothing cached;
       - Articles: every item with every score set's similarity read one item at a time, thumbnails drawn
         for every row of the table on each run, nothing cached, no pages.
Each figure is the median of ``--rounds`` runs. ``max_chart_rows`` is the largest number of data rows any
chart of the page sent to the browser (Altair refuses more than 5,000 by default).

    python benchmarks/bench_results_pages.py [--items 1000] [--score-sets 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import streamlit

RESEARCHER = ("rita", "researcher")
COLOURS = ("red", "green", "pink", "brown")  # the synthetic world's object colours, searched for

NAIVE_SETUP = '''
import numpy as np, pandas as pd, altair as alt, streamlit as st
from sklearn.metrics import cohen_kappa_score, precision_recall_fscore_support, roc_auc_score, roc_curve
from annotations.models import Dataset, GoldLabel, Item, Label, Score, ScoreSet, User
from studio.common import require_role, studio
alt.data_transformers.disable_max_rows()
require_role("researcher", "admin")
session = studio().sessions()
dataset = session.query(Dataset).first()
score_sets = session.query(ScoreSet).filter_by(dataset_id=dataset.id).order_by(ScoreSet.id.desc()).all()
'''

NAIVE_THRESHOLDS = NAIVE_SETUP + '''
st.title("Thresholds (naive)")
shown = score_sets[0]
rows, votes = [], []
for item in session.query(Item).filter_by(dataset_id=dataset.id).order_by(Item.position):
    score = session.get(Score, (shown.id, item.id))
    labels = [l for l in session.query(Label).filter_by(item_id=item.id) if l.value is not None]
    gold = session.get(GoldLabel, item.id)
    yes = sum(l.value for l in labels)
    majority = None if 2 * yes == len(labels) else int(2 * yes > len(labels))
    reference = gold.value if gold else majority
    rows.append({"item_id": item.id, "split": item.split, "similarity": score.similarity, "reference": reference})
    votes += [{"item_id": item.id, "annotator": session.get(User, l.user_id).username, "value": l.value,
               "reference": reference} for l in labels]
frame = pd.DataFrame(rows)
val_median = float(frame[frame["split"] == "val"]["similarity"].median())
known = frame[(frame["split"] != "val") & frame["reference"].notna()]
s, y = known["similarity"].to_numpy(), known["reference"].astype(int).to_numpy()
mine = st.slider("Your threshold", float(s.min()), float(s.max()), val_median, 0.001, key="naive_slider")
sweep = []
for t in np.unique(s):
    p, r, f, _ = precision_recall_fscore_support(y, (s > t).astype(int), average="binary", zero_division=0)
    sweep.append({"threshold": t, "precision": p, "recall": r, "f1": f,
                  "kappa": cohen_kappa_score(y, (s > t).astype(int))})
sweep = pd.DataFrame(sweep)
f1_optimal = float(sweep.loc[sweep["f1"].idxmax(), "threshold"])
for name, t in {"val-median": val_median, "f1-optimal": f1_optimal, "yours": mine}.items():
    p, r, f, _ = precision_recall_fscore_support(y, (s > t).astype(int), average="binary", zero_division=0)
    st.metric(f"F1 ({name})", f"{f:.3f}")
st.metric("ROC-AUC", f"{roc_auc_score(y, s):.3f}")
fpr, tpr, _ = roc_curve(y, s)
st.altair_chart(alt.Chart(known).mark_bar().encode(alt.X("similarity:Q", bin=alt.Bin(maxbins=40)), y="count()",
                                                   color="reference:N"))
st.altair_chart(alt.Chart(sweep.melt(id_vars="threshold", value_vars=["precision", "recall", "f1"])).mark_line()
                .encode(x="threshold:Q", y="value:Q", color="variable:N"))
st.altair_chart(alt.Chart(pd.DataFrame({"fpr": fpr, "tpr": tpr})).mark_line().encode(x="fpr:Q", y="tpr:Q"))
st.altair_chart(alt.Chart(sweep).mark_line().encode(x="recall:Q", y="precision:Q"))
humans = pd.DataFrame(votes).dropna(subset=["reference"])
ceiling = [cohen_kappa_score(g["value"], g["reference"].astype(int)) for _, g in humans.groupby("annotator")]
st.altair_chart(alt.layer(alt.Chart(sweep).mark_line().encode(x="threshold:Q", y="kappa:Q"),
                          alt.Chart(pd.DataFrame({"kappa": ceiling})).mark_rule().encode(y="kappa:Q")))
st.dataframe(humans)
'''

NAIVE_ARTICLES = NAIVE_SETUP + '''
import base64, io
from pathlib import Path
from cftclip_core.images import load_image
from studio.common import media_path
st.title("Articles (naive)")
search = st.text_input("Search", key="naive_search")
rows = []
for item in session.query(Item).filter_by(dataset_id=dataset.id).order_by(Item.position):
    if search and search.lower() not in (item.title + item.summary + item.external_id).lower():
        continue
    row = {"id": item.external_id, "title": item.title, "summary": item.summary, "split": item.split}
    for score_set in score_sets:
        score = session.get(Score, (score_set.id, item.id))
        row[f"#{score_set.id}"] = score.similarity if score else None
    for label in session.query(Label).filter_by(item_id=item.id):
        row[f"label_{session.get(User, label.user_id).username}"] = label.value
    image = load_image(Path(media_path(item.media_sha256)))
    image.thumbnail((160, 160))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    row["thumbnail"] = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
    rows.append(row)
table = pd.DataFrame(rows)
st.dataframe(table, column_config={"thumbnail": st.column_config.ImageColumn()})
st.altair_chart(alt.Chart(table).mark_circle().encode(x=f"#{score_sets[0].id}:Q", y="split:N", tooltip=["title"]))
'''


def chart_rows(at) -> int:  # noqa: ANN001 - an AppTest
    """The most data rows any chart of the page carries."""
    most = 0
    for chart in at.get("vega_lite_chart"):
        blobs = [d.data.data for d in chart.proto.datasets] + ([chart.proto.data.data] if chart.proto.data.data else [])
        for blob in blobs:
            most = max(most, pa.ipc.open_stream(blob).read_all().num_rows)
    return most


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def median_ms(values: list[float]) -> float:
    return round(1000 * statistics.median(values), 1)


def measure_ours(settings, page: str, interact: Callable[[object, int], object], rounds: int) -> dict:  # noqa: ANN001
    from tests.conftest import app_test

    first, rerun, rows = [], [], 0
    for round_ in range(rounds):
        at = app_test(settings, user=RESEARCHER).run()  # signs in and lands on Articles
        streamlit.cache_data.clear()  # so that the page's first render reads everything from the database
        first.append(timed(lambda: at.switch_page(page).run()))
        assert not at.exception, at.exception
        interact(at, round_)
        rerun.append(timed(at.run))
        assert not at.exception, at.exception
        rows = max(rows, chart_rows(at))
    return {"first_render_ms": median_ms(first), "rerun_after_interaction_ms": median_ms(rerun),
            "max_chart_rows": rows}


def measure_naive(settings, script: str, interact: Callable[[object, int], object],  # noqa: ANN001
                  rounds: int) -> dict:
    from streamlit.testing.v1 import AppTest

    from tests.conftest import app_test

    first, rerun, rows = [], [], 0
    for round_ in range(rounds):
        signed_in = app_test(settings, user=RESEARCHER)  # only for its session token
        at = AppTest.from_string(script, default_timeout=600)
        at.session_state["session"] = signed_in.session_state["session"]
        first.append(timed(at.run))
        assert not at.exception, at.exception
        interact(at, round_)
        rerun.append(timed(at.run))
        rows = max(rows, chart_rows(at))
    return {"first_render_ms": median_ms(first), "rerun_after_interaction_ms": median_ms(rerun),
            "max_chart_rows": rows}


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    import altair
    import pandas

    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "streamlit": streamlit.__version__,
            "altair": altair.__version__, "pandas": pandas.__version__, "sqlite": sqlite3.sqlite_version,
            "os": platform.platform()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--score-sets", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # AppTest outside a server warns about its missing runtime on every run

    with tempfile.TemporaryDirectory() as tmp:
        os.environ.update(CFTCLIP_INSTANCE=str(Path(tmp) / "instance"), HF_HUB_OFFLINE="1")
        os.environ.pop("CFTCLIP_DATABASE_URL", None)
        from annotations.db import make_engine, session_factory, upgrade
        from annotations.settings import Settings
        from tests.test_results import seed_results

        settings = Settings.from_env().ensure()
        upgrade(settings.database_url)
        started = time.perf_counter()
        seed_results(session_factory(make_engine(settings.database_url)), settings, Path(tmp), args.items,
                     n_score_sets=args.score_sets)
        seeding_s = round(time.perf_counter() - started, 1)

        def search(at, i: int):  # noqa: ANN001, ANN202 - a colour word: about a quarter of the articles
            return at.text_input(key="articles_search").input(COLOURS[i % 4])

        ours = {
            "articles": measure_ours(settings, "pages/home.py", search, args.rounds),
            "thresholds": measure_ours(settings, "pages/thresholds.py", lambda at, i: at.slider[0].set_value(
                0.2 + 0.01 * i), args.rounds),
            "disagreement": measure_ours(settings, "pages/disagreement.py", lambda at, i: at.segmented_control(
                key="disagreement_cell").set_value(["FP", "FN", "TP", "TN"][i % 4]), args.rounds),
            "models": measure_ours(settings, "pages/models.py", lambda at, i: at.selectbox(
                key="models_metric").set_value(["macro_f1", "precision", "recall", "accuracy"][i % 4]), args.rounds),
        }
        naive = {
            "articles": measure_naive(settings, NAIVE_ARTICLES, lambda at, i: at.text_input(key="naive_search").input(
                COLOURS[i % 4]), args.rounds),
            "thresholds": measure_naive(settings, NAIVE_THRESHOLDS, lambda at, i: at.slider(key="naive_slider").set_value(
                0.2 + 0.01 * i), args.rounds),
        }
    ratios = {page: {k: round(naive[page][k] / ours[page][k], 1) for k in ("first_render_ms", "rerun_after_interaction_ms")}
              for page in naive}
    print(json.dumps({
        "benchmark": "results pages: script render time through AppTest, ours vs a naive version",
        "setup": {"items": args.items, "score_sets": args.score_sets, "annotators": 3, "rounds": args.rounds,
                  "seeding_s": seeding_s},
        "ours": ours, "naive": naive, "naive_over_ours": ratios, "machine": machine(),
    }, indent=2))


if __name__ == "__main__":
    main()
