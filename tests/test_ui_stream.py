"""The live view on a deployment with auth off (no key anywhere), and its entity subscription
surviving its node's restart: the page resumes after the last change it saw (Last-Event-ID),
so a change merged while the node was down still reaches the drawing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from deploy.launcher import Deployment, Topology
from tests import chromium
from tests.ui_pages import START, STILL_PHYSICS, make_world, open_page, post_round, view, wait_view

pytestmark = pytest.mark.skipif(chromium.missing() is not None, reason=chromium.missing() or "")


@pytest.fixture(scope="module")
def open_deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Two regions, auth off; no model (predictions answer 503, which the page shows)."""
    env = {"WORLDSTATE_AUTH": "off", "WORLDSTATE_DEVICE": "cpu"}
    with Deployment(Topology(etcd_members=1, regions=2, run_dir=tmp_path_factory.mktemp("ui-open"),
                             api_env=env)) as d:
        yield d


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium.browser() as b:
        yield b


def x_of(page: Any, entity: str) -> str:
    """The x the bodies table shows for `entity`."""
    return page.locator("#bodies tr", has_text=entity).locator("td").nth(1).inner_text()  # type: ignore[no-any-return]


def test_with_auth_off_the_page_needs_no_key(open_deployment: Deployment, browser: Any) -> None:
    url = open_deployment.api["r1"].url
    with httpx.Client(base_url=url, timeout=30) as api:
        make_world(api, "ui-open", STILL_PHYSICS)
        post_round(api, "ui-open", 0)
    page = open_page(browser, f"{url}/ui/worlds/ui-open")
    try:
        v = wait_view(page, lambda v: v["bodies"] == 3 and v["physicsRevision"] is not None)
        assert v["error"] is None and v["predicted"] == 0  # no model published here
        page.locator("#model .problem", has_text="503").wait_for()
        assert not page.locator("#keybox").is_visible()
        assert page.errors == []
    finally:
        page.close()


def test_the_stream_resumes_after_its_node_restarts(open_deployment: Deployment, browser: Any) -> None:
    world = "ui-resume"
    r1, r2 = open_deployment.api["r1"], open_deployment.api["r2"]
    with httpx.Client(base_url=r1.url, timeout=30) as api1, httpx.Client(base_url=r2.url, timeout=30) as api2:
        make_world(api1, world, STILL_PHYSICS)
        post_round(api1, world, 0)
        page = open_page(browser, f"{r1.url}/ui/worlds/{world}")
        try:
            wait_view(page, lambda v: v["bodies"] == 3 and v["stream"] == "live")
            assert x_of(page, "ball-1") == f"{START['ball-1'][0]:.2f}"
            r1.stop()
            wait_view(page, lambda v: v["stream"] == "reconnecting")
            # Written in the other region while this page's node is down: replicated into r1's
            # replica, and in its changes log after the last position the page saw.
            post_round(api2, world, 1, moved={"ball-1": (4.25, 5.5)})
            r1.start()
            r1.wait_healthy(60)
            wait_view(page, lambda v: v["stream"] == "live")
            page.locator("#bodies tr", has_text="ball-1").locator("td", has_text="4.25").wait_for(timeout=30000)
            # Resumed, not started again from now: the entities were listed once, when the page opened.
            assert view(page)["listings"] == 1 and view(page)["entities"] == 3 and page.errors == []
        finally:
            page.close()
