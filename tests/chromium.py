"""Debian's chromium, driven headless by playwright (the pip package; its own browser downloads
are never used): how tests and scripts/ui_screenshot.py launch it, and where screenshots go."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
# No sandbox: the tests run as root in containers, where chromium's sandbox cannot start. The
# rest keep a headless run from reaching the network on its own (updates, sync, field trials).
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]


def missing() -> str | None:
    """Why a browser cannot be driven here, or None."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (Debian's chromium package: scripts/install-servers.sh installs it as root)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing (pip install -e '.[dev]')"
    return None


@contextmanager
def browser() -> Iterator[Any]:
    """A headless chromium (playwright's Browser), closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield b
        finally:
            b.close()


def artifacts_dir(root: Path) -> Path:
    """$WORLDSTATE_ARTIFACTS, else test-artifacts/ under `root` (the repository), created."""
    out = Path(os.environ.get("WORLDSTATE_ARTIFACTS") or root / "test-artifacts")
    out.mkdir(parents=True, exist_ok=True)
    return out
