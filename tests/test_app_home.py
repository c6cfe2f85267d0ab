"""The app's home page, driven through Streamlit's AppTest as a user would use it."""

from __future__ import annotations

from tests.conftest import app_test

RESEARCHER = ("rita", "researcher")


def test_first_start_creates_the_instance_and_shows_the_demo_articles(app_instance) -> None:  # noqa: ANN001
    at = app_test(app_instance, user=RESEARCHER).run()
    assert not at.exception
    assert (app_instance.instance_dir / "studio.db").is_file()
    assert at.selectbox[0].value == "demo"
    table = at.dataframe[0].value
    assert len(table) == 26 and table["similarity"].isna().all()
    assert any("no scores yet" in info.value for info in at.info)


def test_scoring_with_the_tiny_model_stores_scores_and_warns(app_instance) -> None:  # noqa: ANN001
    at = app_test(app_instance, user=RESEARCHER).run()
    at.button[0].click().run()
    assert not at.exception
    assert any("Scored 26 articles with tiny\\-demo" in s.value for s in at.success)  # escaped: shown as typed
    assert any("carry no meaning" in w.value for w in at.warning)
    table = at.dataframe[0].value
    assert table["similarity"].between(-1, 1).all()

    at = app_test(app_instance, user=RESEARCHER).run()  # a new visit reads the stored score set
    assert at.dataframe[0].value["similarity"].notna().all()


def test_unknown_model_offline_shows_an_error_not_a_traceback(app_instance) -> None:  # noqa: ANN001
    at = app_test(app_instance, user=RESEARCHER).run()
    at.selectbox[1].select("other: a hub id or a local model folder").run()
    at.text_input[0].input("nobody/unknown-clip").run()
    at.button[0].click().run()
    assert not at.exception
    assert any("Cannot load model 'nobody/unknown\\-clip'" in e.value for e in at.error)
