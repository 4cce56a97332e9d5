"""Reading the live view (/ui) in a browser page: its state object, its canvas, and the
observations the UI tests post (bodies moving in straight lines)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
# Straight lines at constant speed (no gravity, no drag): the model's predicted path runs through
# every later observation, so none is surprising until one is moved by hand.
STILL_PHYSICS = {"gravity": 0.0, "restitution": 0.9, "drag": 0.0, "time_step": 0.05}
# Apart, and staying apart within the rounds and the horizon after them (no collision to predict).
START = {"ball-1": (2.0, 5.5, 1.0, 0.0), "ball-2": (8.0, 2.0, 0.0, 1.0), "ball-3": (7.5, 8.5, -1.0, 0.0)}
ROUND_S = 0.2  # simulated seconds between two rounds of observations


def open_page(browser: Any, url: str, viewport: dict[str, int] = DESKTOP) -> Any:
    page = browser.new_page(viewport=viewport)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors
    page.goto(url)
    return page


def view(page: Any) -> dict[str, Any]:
    return page.evaluate("() => window.worldstateView")  # type: ignore[no-any-return]


def wait_view(page: Any, check: Callable[[dict[str, Any]], bool], timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        v = view(page)
        if check(v):
            return v
        assert time.monotonic() < deadline, f"the view never got there; it shows {v}; page errors: {page.errors}"
        time.sleep(0.1)


def canvas(page: Any) -> str:
    return page.evaluate("() => document.getElementById('box').toDataURL('image/png')")  # type: ignore[no-any-return]


def pixels(page: Any, kind: str, at: tuple[float, float] | None = None, half: int = 8) -> int:
    """How many canvas pixels are of `kind` ("drawn": darker than the box's background and grid;
    "red": the surprise mark's #e03131, in which no body is drawn): in the whole canvas, or in
    the square of 2*half+1 pixels around the world point `at` (metres, y up in a 10 m box)."""
    return page.evaluate("""([kind, at, half]) => {
      const kinds = {drawn: (r, g, b) => Math.min(r, g, b) < 200, red: (r, g, b) => r > 200 && g < 80 && b < 80};
      const c = document.getElementById('box'), ctx = c.getContext('2d'), test = kinds[kind];
      const m = 6 * (window.devicePixelRatio || 1), scale = (c.width - 2 * m) / 10;
      let x0 = 0, y0 = 0, w = c.width, h = c.height;
      if (at) { x0 = Math.round(m + at[0] * scale) - half; y0 = Math.round(c.height - m - at[1] * scale) - half;
                w = h = 2 * half + 1; }
      const d = ctx.getImageData(x0, y0, w, h).data;
      let n = 0;
      for (let i = 0; i < d.length; i += 4) if (test(d[i], d[i + 1], d[i + 2])) n++;
      return n;
    }""", [kind, list(at) if at else None, half])


def post_round(api: httpx.Client, world: str, n: int, moved: dict[str, tuple[float, float]] | None = None) -> None:
    """Every body where straight motion puts it after n rounds (or where `moved` says)."""
    obs = []
    for entity, (x, y, vx, vy) in START.items():
        t = n * ROUND_S
        px, py = (moved or {}).get(entity, (x + vx * t, y + vy * t))
        obs.append({"event_id": f"{world}-{n}-{entity}", "entity": entity, "source": "ui-test",
                    "fields": {"x": px, "y": py, "vx": vx, "vy": vy, "radius": 0.4}})
    r = api.post(f"/v1/worlds/{world}/observations", json=obs)
    assert r.status_code == 202, r.text


def make_world(api: httpx.Client, world: str, physics: dict[str, float]) -> None:
    assert api.put(f"/v1/worlds/{world}", json={}).status_code in (200, 201)
    assert api.put(f"/v1/worlds/{world}/physics", json=physics).status_code == 200
