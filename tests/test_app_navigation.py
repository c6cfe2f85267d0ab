"""The way into the app (``studio.navigation``), through Streamlit's AppTest: each role's sidebar, and a page
refused by role with a way back (never Streamlit's "Page not found").

AppTest serves ``pages/`` in Streamlit's old folder mode on every run after the first (it resets the mode
for each run), so what needs several runs through ``app.py`` (a link followed through signing in, signing
out, a cold server's first request) is tested in a real browser: tests/e2e/test_navigation_browser.py."""

from __future__ import annotations

from tests.conftest import app_test

ANNOTATOR = ("ann", "annotator")
RESEARCHER = ("rita", "researcher")
ADMIN = ("ada", "admin")


def sidebar_links(at) -> list[str]:  # noqa: ANN001
    return [link.proto.label or link.proto.page for link in at.sidebar.get("page_link")]


def test_each_role_sees_its_pages_in_the_sidebar_and_lands_on_its_first(app_instance) -> None:  # noqa: ANN001
    at = app_test(app_instance, user=ANNOTATOR).run()
    assert at.title[0].value == "Annotate" and sidebar_links(at) == ["Annotate", "My account"]
    at = app_test(app_instance, user=RESEARCHER).run()
    assert at.title[0].value == "Articles"
    assert sidebar_links(at) == ["Articles", "Thresholds", "Disagreement", "Models", "Seeds", "Train", "Review",
                                 "Import", "Annotate", "My account"]
    assert sidebar_links(app_test(app_instance, user=ADMIN).run())[-2:] == ["Users", "My account"]
    assert any("Signed in as **rita** (researcher)" in c.value for c in at.sidebar.caption)


def test_a_page_of_another_role_says_whom_it_is_for_and_links_back(app_instance) -> None:  # noqa: ANN001
    at = app_test(app_instance, user=ANNOTATOR).run()
    at.switch_page("pages/train.py").run()
    assert not at.exception
    assert [e.value for e in at.error] == ["This page is for researchers and admins; you are signed in as an "
                                           "annotator."]
    assert [link.proto.page for link in at.main.get("page_link")] == ["annotate"]
    assert not any(b.key == "train_launch" for b in at.button)
