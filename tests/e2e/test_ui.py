"""The web page in a real headless Chromium: the study list, a study page and a range-test page
load without console errors, failed loads or HTTP errors, and every plot is a decoded,
non-blank image."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import matplotlib.image
import numpy as np
import pytest

from tests.e2e.browser import Browser, find_chromium
from tests.e2e.conftest import Server

CHROMIUM = find_chromium()
# .ci/run installs Debian's chromium and fails if these tests skip.
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed "
                                "(apt-get install chromium)")

IMAGES = ("Array.from(document.images).map(i => ({src: i.src, complete: i.complete, "
          "width: i.naturalWidth, height: i.naturalHeight}))")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    assert CHROMIUM is not None
    b = Browser(CHROMIUM, tmp_path_factory.mktemp("chromium"))
    yield b
    b.close()


def assert_plots_render(browser: Browser, expected: int) -> None:
    images = browser.evaluate(IMAGES)
    assert len(images) == expected, images
    for image in images:
        assert image["complete"] and image["width"] > 100 and image["height"] > 100, image
        pixels = matplotlib.image.imread(io.BytesIO(httpx.get(image["src"]).content),
                                         format="png")
        assert float(np.std(pixels)) > 0.01, f"{image['src']} is blank"


def text(browser: Browser) -> str:
    return str(browser.evaluate("document.body.innerText"))


def test_study_list_page(browser: Browser, server: Server, finished_study: dict[str, Any],
                         finished_range_test: dict[str, Any]) -> None:
    assert browser.load(f"{server.url}/ui") == []
    page = text(browser)
    assert "e2e-cross-family" in page and "succeeded" in page and "4/4" in page
    assert finished_range_test["id"] in page
    assert "Workers alive: 1" in page
    links = browser.evaluate("Array.from(document.links).map(a => a.pathname)")
    assert f"/ui/studies/{finished_study['id']}" in links
    assert f"/ui/range-tests/{finished_range_test['id']}" in links


def test_study_page(browser: Browser, server: Server, finished_study: dict[str, Any]) -> None:
    assert browser.load(f"{server.url}/ui/studies/{finished_study['id']}") == []
    page = text(browser)
    assert "Best schedule" in page and finished_study["best"]["family"] in page
    assert "keras.optimizers.schedules.deserialize(config)" in page or "FamilySchedule" in page
    assert page.count("complete") >= 4  # the trial table
    # lr_curves, history, leaderboard, then the parameters section's importance and params:
    # 4 complete trials over 2 families give one of them at least the 2 an importance needs.
    assert "Parameters" in page and "fANOVA" in page, page
    assert_plots_render(browser, expected=5)
    sources = [i["src"].split("?")[0].rsplit("/", 1)[1] for i in browser.evaluate(IMAGES)]
    assert sources == ["lr_curves.png", "history.png", "leaderboard.png", "importance.png",
                       "params.png"], sources
    assert "Estimated time left" not in page  # a finished study has no ETA


def test_study_page_reports_the_baseline_and_the_confirmation(
        browser: Browser, server: Server, confirmed_study: dict[str, Any]) -> None:
    assert browser.load(f"{server.url}/ui/studies/{confirmed_study['id']}") == []
    page = text(browser)
    assert "8/8 finished (2 search, 6 baseline and confirmation)" in page
    assert "mean of the confirmation's seeds" in page
    assert "Against a tuned constant LR (single runs; lr = " in page and "gain " in page
    assert "Confirmation (finished)" in page and "(winner)" in page
    assert "Paired gain over the constant:" in page and "95 % interval" in page


def test_range_test_page(browser: Browser, server: Server,
                         finished_range_test: dict[str, Any]) -> None:
    assert browser.load(f"{server.url}/ui/range-tests/{finished_range_test['id']}") == []
    page = text(browser)
    assert "Suggested learning rates" in page and "valley" in page and "one_cycle" in page
    assert_plots_render(browser, expected=1)


def test_unknown_study_page_is_a_readable_404(browser: Browser, server: Server) -> None:
    url = f"{server.url}/ui/studies/doesnotexist"
    problems = browser.load(url)  # the page's own 404, seen twice (network and log), nothing else
    assert f"HTTP 404: {url}" in problems and all(p.endswith(url) for p in problems), problems
    assert "Unknown study `doesnotexist`" in text(browser)


def test_screenshots_for_the_readme(browser: Browser, server: Server,
                                    finished_study: dict[str, Any], tmp_path: Path) -> None:
    """A full-page screenshot decodes to a non-blank picture (what a user sees)."""
    import base64

    browser.load(f"{server.url}/ui/studies/{finished_study['id']}")
    shot = browser.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    (tmp_path / "study_page.png").write_bytes(base64.b64decode(shot["data"]))  # to look at
    pixels = matplotlib.image.imread(tmp_path / "study_page.png", format="png")
    assert pixels.shape[0] > 500 and float(np.std(pixels)) > 0.05
