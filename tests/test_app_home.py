"""The app's home page, driven through Streamlit's AppTest as a user would use it."""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture
def fresh_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CFTCLIP_INSTANCE", str(tmp_path / "instance"))
    monkeypatch.delenv("CFTCLIP_DATABASE_URL", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    st.cache_resource.clear()
    st.cache_data.clear()
    yield tmp_path / "instance"
    st.cache_resource.clear()
    st.cache_data.clear()


def test_first_start_creates_the_instance_and_shows_the_demo_articles(fresh_instance: Path) -> None:
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert (fresh_instance / "studio.db").is_file()
    assert at.selectbox[0].value == "demo"
    table = at.dataframe[0].value
    assert len(table) == 26 and table["similarity"].isna().all()
    assert any("no scores yet" in info.value for info in at.info)


def test_scoring_with_the_tiny_model_stores_scores_and_warns(fresh_instance: Path) -> None:
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.button[0].click().run()
    assert not at.exception
    assert any("Scored 26 articles with tiny-demo" in s.value for s in at.success)
    assert any("carry no meaning" in w.value for w in at.warning)
    table = at.dataframe[0].value
    assert table["similarity"].between(-1, 1).all()

    at = AppTest.from_file(APP, default_timeout=60).run()  # a new visit reads the stored score set
    assert at.dataframe[0].value["similarity"].notna().all()


def test_unknown_model_offline_shows_an_error_not_a_traceback(fresh_instance: Path) -> None:
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.selectbox[1].select("other: a hub id or a local model folder").run()
    at.text_input[0].input("nobody/unknown-clip").run()
    at.button[0].click().run()
    assert not at.exception
    assert any("Cannot load model 'nobody/unknown-clip'" in e.value for e in at.error)
