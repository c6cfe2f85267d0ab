"""The Seeds page through AppTest: per-seed metrics, mean and t-interval, and the paired test across seeds,
checked against the metrics library; and its empty state."""

from __future__ import annotations

from pathlib import Path

import pytest

from annotations.db import make_engine, session_factory
from cftclip_core.metrics import aggregate_seeds, paired_seed_test
from tests.conftest import app_test
from tests.test_train_jobs_comparison import make_experiments

RESEARCHER = ("rita", "researcher")


def open_seeds(settings):  # noqa: ANN001, ANN201
    at = app_test(settings, user=RESEARCHER).run()
    return at.switch_page("pages/seeds.py").run()


def test_seeds_page_without_experiments_says_where_to_start(app_instance) -> None:  # noqa: ANN001
    at = open_seeds(app_instance)
    assert not at.exception
    assert any("No experiment yet" in i.value and "Train page" in i.value for i in at.info)


def test_seeds_page_shows_the_mean_interval_and_paired_test_of_the_library(app_instance, tmp_path: Path) -> None:  # noqa: ANN001
    factory = session_factory(make_engine(app_instance.database_url))
    made = make_experiments(factory, app_instance, tmp_path)
    F1, ids = made.f1, made.ids  # noqa: N806
    at = open_seeds(app_instance)
    assert not at.exception
    assert at.multiselect(key="seeds_experiments").value == [ids["model-a"]]  # model-b is still running a seed
    at.multiselect(key="seeds_experiments").select(ids["model-b"]).run()
    at.radio(key="seeds_reference").set_value("imported").run()
    at.selectbox(key="seeds_metric").set_value("f1").run()
    assert any("Reference: the imported file's label" in c.value and "val-median" in c.value for c in at.caption)
    summary = at.dataframe[0].value.set_index("experiment")
    expected = aggregate_seeds(F1["model-a"])
    assert (summary.loc["model-a", "mean"], summary.loc["model-a", "ci_low"], summary.loc["model-a", "ci_high"]) == (
        pytest.approx((expected.mean, expected.ci_low, expected.ci_high)))
    assert summary.loc["model-b", "n"] == 4  # its fifth seed is still running
    test = paired_seed_test(F1["model-a"][:4], F1["model-b"][:4])
    shown = {m.label: m.value for m in at.metric}
    assert shown["A - B"] == f"{test.mean_diff:.3f}" and shown["p-value (paired t-test)"] == f"{test.p_value:.3f}"
    assert any(f"Seeds 0, 1, 2, 3: A better on {test.wins_a}" in c.value for c in at.caption)
