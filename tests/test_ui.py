"""The live view (/ui) in a real browser: Debian's chromium, headless, driven by playwright,
against a deployment started by `worldstate up` as a user starts it.

Observations posted to a world move its bodies on the page's canvas, the model's predicted
paths are drawn ahead of them, and an observation that lands off its predicted path is marked.
Screenshots (desktop and phone width) are saved under $WORLDSTATE_ARTIFACTS or test-artifacts/.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import chromium
from tests.conftest import repo_root
from tests.ui_pages import (PHONE, STILL_PHYSICS, canvas, make_world, open_page, pixels, post_round, view,
                            wait_view)
from tests.up_output import admin_key, until_up

pytestmark = pytest.mark.skipif(chromium.missing() is not None, reason=chromium.missing() or "")

ROOT = repo_root()
WORLDSTATE = Path(sys.executable).with_name("worldstate")
_UI = re.compile(r"^\s*ui\s+(\S+)\s+(http://\S+/ui/)\s*$", re.MULTILINE)
@dataclass(frozen=True)
class Up:
    ui: dict[str, str]  # region -> the UI address `up` printed
    key: str
    out: str

    def api(self, region: str = "r1") -> str:
        return self.ui[region].removesuffix("/ui/")


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """`worldstate up` as a user runs it (one etcd member, to spare the machine), read as a user reads it."""
    run_dir = tmp_path_factory.mktemp("ui-up")
    proc = subprocess.Popen([str(WORLDSTATE), "up", "--etcd-members", "1", "--run-dir", str(run_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        out = until_up(proc)
        assert "Ctrl-C stops everything" in out and "published the default model" in out, out
        yield Up(dict(_UI.findall(out)), admin_key(out), out)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium.browser() as b:
        yield b


@pytest.fixture(scope="module")
def artifacts() -> Path:
    out = chromium.artifacts_dir(ROOT) / "ui"
    out.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots of the live view: {out}")
    return out


@pytest.fixture
def api(up: Up) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=up.api(), headers={"Authorization": f"Bearer {up.key}"}, timeout=30) as c:
        yield c


def test_up_prints_each_regions_ui_address(up: Up) -> None:
    assert sorted(up.ui) == ["r1", "r2"], up.out
    for url in up.ui.values():
        r = httpx.get(url, timeout=10)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), r.text
        assert "/ui/assets/index.js" in r.text


def test_the_pages_load_nothing_from_outside_the_node(up: Up) -> None:
    for path in ("/ui/", "/ui/worlds/lab"):
        r = httpx.get(up.api() + path, timeout=10)
        assert r.status_code == 200
        assert re.findall(r"https?://", r.text) == []
        assert "script-src 'self'" in r.headers["content-security-policy"]
        urls = re.findall(r"""(?:src|href)=["']([^"'#]+)["']""", r.text)
        assert any(u.endswith(".js") for u in urls) and any(u.endswith(".css") for u in urls)
        for url in urls:
            if url.startswith("/docs") and not url.startswith("/docs/assets"):
                continue  # the link to the API document
            got = httpx.get(up.api() + url, timeout=10)
            assert got.status_code == 200 and got.content, url
            assert not re.search(rb"https?://(?!www\.w3\.org|html\.spec)", got.content), url
    assert httpx.get(up.api() + "/ui", timeout=10, follow_redirects=True).url.path == "/ui/"


@pytest.mark.parametrize("name", [".lab", "x" * 65, "a b"])
def test_a_bad_world_name_gets_the_apis_problem(up: Up, api: httpx.Client, name: str) -> None:
    page = httpx.get(f"{up.api()}/ui/worlds/{name}", timeout=10)
    from_api = api.get(f"/v1/worlds/{name}")
    assert page.status_code == from_api.status_code == 400
    assert page.headers["content-type"] == from_api.headers["content-type"] == "application/problem+json"
    mine, theirs = page.json(), from_api.json()
    assert mine["type"] == theirs["type"] == "/problems/invalid-key" and mine["detail"] == theirs["detail"]


def test_an_unknown_world_shows_the_apis_404_until_it_is_made(up: Up, api: httpx.Client, browser: Any) -> None:
    world = "ui-made-later"
    from_api = api.get(f"/v1/worlds/{world}/entities/stream")
    assert from_api.status_code == 404
    page = open_page(browser, f"{up.ui['r1']}worlds/{world}#key={up.key}")
    try:
        v = wait_view(page, lambda v: v.get("error") is not None)
        assert v["error"] == {"status": 404, "type": from_api.json()["type"]}
        banner = page.locator("#problem")
        assert banner.is_visible() and banner.inner_text().startswith("404 " + from_api.json()["title"])
        make_world(api, world, STILL_PHYSICS)  # the page asks again, and shows the world once it exists
        post_round(api, world, 0)
        wait_view(page, lambda v: v["error"] is None and v["bodies"] == 3)
        assert not banner.is_visible()
        assert page.errors == []
    finally:
        page.close()


def test_posted_observations_move_the_drawing_with_predicted_paths(up: Up, api: httpx.Client, browser: Any,
                                                                   artifacts: Path) -> None:
    world = "ui-straight"
    make_world(api, world, STILL_PHYSICS)
    page = open_page(browser, f"{up.ui['r1']}worlds/{world}#key={up.key}")
    try:
        assert "key=" not in page.url  # taken from the fragment, kept in the tab, gone from the address bar
        wait_view(page, lambda v: v.get("stream") == "live" and v.get("physicsRevision") is not None
                  and v.get("modelHash"))
        empty = canvas(page)
        ahead = (3.5, 5.5)  # on ball-1's way: no trail or body there, only its predicted path
        assert pixels(page, "drawn", ahead) == 0

        post_round(api, world, 0)
        v = wait_view(page, lambda v: v["bodies"] == 3 and v["predicted"] == 3)
        assert v["modelHash"] == api.get("/v1/models/current").json()["hash"]
        first = canvas(page)
        assert first != empty
        assert pixels(page, "drawn", ahead) > 0, "no predicted path drawn ahead of ball-1"

        for n in range(1, 5):
            before = view(page)["predictions"]
            post_round(api, world, n)
            wait_view(page, lambda v: v["predictions"] > before)
        moved = canvas(page)
        assert moved != first
        assert view(page)["surprises"] == 0, "an observation on its predicted path was marked surprising"
        page.screenshot(path=str(artifacts / "world-desktop.png"))

        assert pixels(page, "red") == 0
        post_round(api, world, 5, moved={"ball-1": (2.0, 1.5)})  # picked up and put down elsewhere
        v = wait_view(page, lambda v: v["surprising"] == 1)
        assert v["surprises"] == 1
        assert pixels(page, "red") > 0
        row = page.locator("#bodies tr.surprising")
        assert row.count() == 1 and row.first.inner_text().startswith("ball-1")
        page.screenshot(path=str(artifacts / "world-surprise-desktop.png"))
        assert page.errors == []
    finally:
        page.close()


def test_the_phone_layout_fits_the_width(up: Up, api: httpx.Client, browser: Any, artifacts: Path) -> None:
    world = "ui-straight-phone"
    make_world(api, world, STILL_PHYSICS)
    post_round(api, world, 0)
    odd = [{"event_id": f"{world}-ghost", "entity": "ghost", "source": "ui-test",  # outside the 10 m box
            "fields": {"x": 15.0, "y": 5.0, "vx": 0.0, "vy": 0.0}},
           {"event_id": f"{world}-partial", "entity": "partial", "source": "ui-test", "fields": {"x": 1.0, "y": 1.0}}]
    assert api.post(f"/v1/worlds/{world}/observations", json=odd).status_code == 202
    page = open_page(browser, f"{up.ui['r1']}worlds/{world}#key={up.key}", PHONE)
    try:
        wait_view(page, lambda v: v["entities"] == 5 and v["predicted"] == 3 and v.get("physicsRevision"))
        rows = page.locator("#bodies tr")
        rows.filter(has_text="ghost").filter(has_text="left out by the model: x").wait_for()
        assert "lacks vx, vy" in rows.filter(has_text="partial").inner_text()
        page.locator("#replicas tr[data-region=r2]").wait_for()
        width, inner = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        assert width <= inner, f"the page is {width} px wide in a {inner} px window"
        box = page.locator("#box").bounding_box()
        assert box["width"] <= inner and box["width"] >= inner - 40  # the box takes the phone's width
        page.screenshot(path=str(artifacts / "world-phone.png"), full_page=True)
        assert page.errors == []
    finally:
        page.close()


def test_the_readme_demo_moves_in_the_view(up: Up, browser: Any, artifacts: Path) -> None:
    """The README's commands: the demo feeding a world, and the address to watch it at."""
    readme = (ROOT / "README.md").read_text()
    assert "\n.venv/bin/python scripts/ui_demo.py --world demo --surprise-every 5\n" in readme
    env = {"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin", "WORLDSTATE_URL": up.api(),
           "WORLDSTATE_KEY": up.key}
    demo = subprocess.Popen([sys.executable, "scripts/ui_demo.py", "--world", "demo", "--surprise-every", "5"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    page = None
    try:
        assert demo.stdout is not None
        line = demo.stdout.readline()
        assert line.strip() == f"live view: {up.api()}/ui/worlds/demo#key=<your key>", line
        # As the README says: the `ui` address up printed, with the admin key after #key=, then the world.
        page = open_page(browser, f"{up.ui['r1']}#key={up.key}")
        assert "key=" not in page.url
        page.click("#worlds a[href='/ui/worlds/demo']")
        page.wait_for_url(f"{up.api()}/ui/worlds/demo")
        wait_view(page, lambda v: v["bodies"] == 3 and v["predicted"] == 3)
        drawn = {canvas(page)}
        deadline = time.monotonic() + 30
        while len(drawn) < 3 and time.monotonic() < deadline:
            time.sleep(0.5)
            drawn.add(canvas(page))
        assert len(drawn) >= 3, "the drawing did not change while the demo posted"
        wait_view(page, lambda v: v["surprises"] >= 1)  # the demo's jump every 5 s
        page.screenshot(path=str(artifacts / "demo-desktop.png"))
    finally:
        if page is not None:
            page.close()
        demo.send_signal(signal.SIGINT)  # what Ctrl-C delivers
        out, _ = demo.communicate(timeout=30)
    assert demo.returncode == 0, out
    assert re.search(r"posted \d+ rounds of 3 bodies", out), out


def test_the_index_lists_the_worlds_and_the_key_box_takes_a_key(up: Up, api: httpx.Client, browser: Any) -> None:
    world = "ui-index"
    make_world(api, world, STILL_PHYSICS)
    post_round(api, world, 0)
    page = open_page(browser, up.ui["r1"])  # no key: the API answers 401 and the page asks for one
    try:
        page.locator("#keybox").wait_for(state="visible")
        assert "401" in page.locator("#problem").inner_text()
        page.fill("#keybox input", up.key)
        page.click("#keybox button[type=submit]")
        link = page.locator(f"#worlds a[href='/ui/worlds/{world}']")
        link.wait_for()
        names = page.locator("#worlds a").all_inner_texts()
        assert names == api.get("/v1/worlds", params={"limit": 1000}).json()["worlds"]  # in the API's order
        link.click()
        page.wait_for_url(f"**/ui/worlds/{world}")
        wait_view(page, lambda v: v["bodies"] == 3)  # the key went along, kept in the tab
        assert json.loads(page.evaluate("() => JSON.stringify(sessionStorage)")) == {"worldstate.key": up.key}
        assert page.errors == []
    finally:
        page.close()
