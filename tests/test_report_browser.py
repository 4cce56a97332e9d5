"""The run's pages in a real browser (Debian's chromium, headless, through playwright): index.html and
timeline.html of a synthetic run open where a reader looks, with a time axis, and leave screenshots
in $WORLDSTATE_ARTIFACTS (else test-artifacts/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import report_fixtures as rf
from tests.chromium import artifacts_dir, browser, missing

ROOT = Path(__file__).resolve().parent.parent
VIEWPORT = {"width": 1400, "height": 900}

pytestmark = pytest.mark.skipif(missing() is not None, reason=missing() or "")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return rf.write_run(tmp_path_factory.mktemp("store"), verdict="illegal")


def test_the_index_reads_at_a_glance(run_dir: Path) -> None:
    shots = artifacts_dir(ROOT)
    with browser() as b:
        tab = b.new_page(viewport=VIEWPORT)
        tab.goto((run_dir / "index.html").as_uri())
        verdict = tab.locator("header .verdict.big")
        assert verdict.inner_text() == "INVALID"
        box = verdict.bounding_box()
        assert box and box["y"] + box["height"] <= VIEWPORT["height"]
        assert tab.locator(".checkers tr").count() == 2
        assert "stale-read" in tab.locator(".checkers").inner_text()
        # the plot is loaded (a broken image has no natural width), and the timeline is one click away
        assert tab.locator("img[src='plot.png']").evaluate("i => i.complete && i.naturalWidth") > 1000
        tab.screenshot(path=str(shots / "report-index.png"), full_page=True)
        tab.locator("a[href='timeline.html']").first.click()
        tab.wait_for_load_state("load")
        assert tab.url.endswith("/timeline.html")
    print(f"screenshot: {shots / 'report-index.png'}")


def test_the_timeline_opens_on_operations_with_a_time_axis(run_dir: Path) -> None:
    shots = artifacts_dir(ROOT)
    with browser() as b:
        tab = b.new_page(viewport=VIEWPORT)
        tab.goto((run_dir / "timeline.html").as_uri())
        first = tab.locator(".op").first.bounding_box()
        head = tab.locator(".head").bounding_box()
        assert first and head
        # within the first screen, below the column names
        assert head["y"] + head["height"] <= first["y"] < VIEWPORT["height"], (head, first)
        assert first["x"] + first["width"] <= VIEWPORT["width"]
        ticks = tab.locator(".tick span").all_inner_texts()
        assert len(ticks) >= 5 and all(t.endswith(" s") for t in ticks), ticks
        assert tab.locator(".colhead b").first.inner_text() == "time"
        assert "client 0" in tab.locator(".head").inner_text() and "r1 · api-r1" in tab.locator(".head").inner_text()
        tab.screenshot(path=str(shots / "report-timeline.png"))
        # the column names stay on screen when the reader scrolls down
        tab.evaluate("window.scrollTo(0, document.body.scrollHeight)")
        assert tab.evaluate("window.scrollY") > 200
        assert tab.locator(".head").bounding_box()["y"] == 0  # type: ignore[index]
        tab.screenshot(path=str(shots / "report-timeline-scrolled.png"))
    print(f"screenshots: {shots / 'report-timeline.png'}, {shots / 'report-timeline-scrolled.png'}")
