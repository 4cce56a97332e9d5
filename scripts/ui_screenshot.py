#!/usr/bin/env python3
"""The README's pictures of the live view, taken from a real deployment in Debian's chromium.

    .venv/bin/python scripts/ui_screenshot.py

starts `worldstate up` (one etcd member) in a temporary run directory, feeds a world with
scripts/ui_demo.py, opens its live view headless at desktop and phone width, waits until
every body has a predicted path and one observation is marked surprising, and writes
docs/img/ui-world.png and docs/img/ui-world-phone.png. Everything it started is stopped.
"""
from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout, installed or not

from tests import chromium  # noqa: E402
from tests.up_output import admin_key, until_up  # noqa: E402

_API = re.compile(r"^\s*api\s+r1\s+(http://\S+)\s*$", re.MULTILINE)
SIZES = {"ui-world.png": {"width": 1280, "height": 800}, "ui-world-phone.png": {"width": 390, "height": 844}}


def holds(page: Any, check: str) -> bool:
    """Whether the JS expression `check` over `v` (window.worldstateView) holds now."""
    return bool(page.evaluate(f"() => {{ const v = window.worldstateView; return !!v && ({check}); }}"))


def wait_view(page: Any, check: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not holds(page, check):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the view never showed {check}: {page.evaluate('() => window.worldstateView')}")
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", type=Path, default=ROOT / "docs" / "img")
    args = p.parse_args(argv)
    reason = chromium.missing()
    if reason:
        print(f"cannot take screenshots: {reason}", file=sys.stderr)
        return 1
    args.out_dir.mkdir(parents=True, exist_ok=True)
    worldstate = Path(sys.executable).with_name("worldstate")
    with tempfile.TemporaryDirectory(prefix="ui-screenshot-") as run_dir:
        up = subprocess.Popen([str(worldstate), "up", "--etcd-members", "1", "--run-dir", run_dir],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
        demo = None
        try:
            out = until_up(up)
            m = _API.search(out)
            if m is None or "Ctrl-C" not in out:
                print(out, file=sys.stderr)
                return 1
            url, key = m.group(1), admin_key(out)
            env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "WORLDSTATE_URL": url,
                   "WORLDSTATE_KEY": key}
            demo = subprocess.Popen([sys.executable, "scripts/ui_demo.py", "--world", "lab", "--surprise-every", "4"],
                                    cwd=ROOT, env=env)
            with chromium.browser() as browser:
                for name, viewport in SIZES.items():
                    page = browser.new_page(viewport=viewport)
                    page.goto(f"{url}/ui/worlds/lab#key={key}")
                    ready = "v.bodies === 3 && v.predicted === 3 && v.surprising >= 1"
                    for _ in range(10):  # a mark lasts until the body's next observation is judged
                        wait_view(page, ready)
                        time.sleep(0.3)  # a body jumping there has finished its slide
                        if holds(page, ready):
                            break
                    page.screenshot(path=str(args.out_dir / name))
                    page.close()
                    print(args.out_dir / name)
        finally:
            if demo is not None:
                demo.send_signal(signal.SIGINT)
                demo.wait(30)
            up.send_signal(signal.SIGINT)
            up.wait(60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
