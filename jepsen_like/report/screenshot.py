"""A PNG of a run's page in headless chromium, for the README: docs/img/jepsen-index.png.

    .venv/bin/python -m jepsen_like.report.screenshot store/<test>/latest docs/img/jepsen-index.png

Needs Debian's chromium (/usr/bin/chromium) and the playwright package (a
dev dependency, imported only here); playwright's own browser downloads are
never used.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
# No sandbox: root in a container cannot start chromium's. The rest keep it off the network.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]


def shoot(page: Path, out: Path, width: int = 1280, height: int = 1400) -> Path:
    from playwright.sync_api import sync_playwright

    out.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            tab = browser.new_page(viewport={"width": width, "height": height})
            tab.goto(page.resolve().as_uri())
            tab.wait_for_load_state("load")
            tab.screenshot(path=str(out))
        finally:
            browser.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jepsen_like.report.screenshot", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a run's folder (store/<test>/<time> or store/<test>/latest)")
    ap.add_argument("out", type=Path)
    ap.add_argument("--page", default="index.html", help="index.html (default) or timeline.html")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=1400)
    args = ap.parse_args(argv)
    page = args.run / args.page
    if not page.exists():
        print(f"{page} does not exist", file=sys.stderr)
        return 2
    print(shoot(page, args.out, args.width, args.height))
    return 0


if __name__ == "__main__":
    sys.exit(main())
