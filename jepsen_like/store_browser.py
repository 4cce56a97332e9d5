"""`python -m jepsen_like serve store/`: browse stored runs, as Jepsen's `serve` does.

The root page lists every run under the store, newest first, with its
verdict; each run's folder is served as static files, so its index.html
links (timeline, plots, history, logs) work as they do from disk. A run
written before index pages existed gets one built from its results.json.

Standard library only (http.server). It binds the loopback address unless
told otherwise: a store holds logs and histories, not something to publish
by accident. Only files inside the store are served; anything else, `..`
or a link leading out included, is 404.
"""

from __future__ import annotations

import html
import json
import mimetypes
import shutil
import sys
from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from .report import index
from .report.style import VERDICT_COLOURS

TEXT_TYPES = {".jsonl": "text/plain", ".log": "text/plain", ".txt": "text/plain", ".json": "application/json"}


@dataclass(frozen=True)
class Run:
    path: str                      # relative to the store: "<test>/<time>"
    test: str
    started: datetime | None
    results: dict[str, Any] | None  # None: still running, or stopped before it wrote results.json

    @property
    def verdict(self) -> str | None:
        return self.results.get("verdict") if self.results else None


def runs(store: Path) -> list[Run]:
    """Every run folder (`<test>/<time>/` holding a history or results), newest first; `latest` links skipped."""
    out = []
    for test in sorted(p for p in store.iterdir() if p.is_dir() and not p.is_symlink()):
        for d in test.iterdir():
            if d.is_symlink() or not d.is_dir():
                continue
            if not ((d / "results.json").exists() or (d / "history.jsonl").exists()):
                continue
            out.append(Run(f"{test.name}/{d.name}", test.name, _started(d), _results(d)))
    return sorted(out, key=lambda r: (r.started or datetime.min, r.path), reverse=True)


def _started(d: Path) -> datetime | None:
    try:
        return datetime.strptime(d.name, "%Y%m%dT%H%M%S")
    except ValueError:
        return datetime.fromtimestamp(d.stat().st_mtime)


def _results(d: Path) -> dict[str, Any] | None:
    try:
        return json.loads((d / "results.json").read_text())
    except (OSError, ValueError):
        return None


def listing(store: Path) -> str:
    rows = []
    for r in runs(store):
        opts = (r.results or {}).get("test", {}).get("options", {})
        what = (f"{', '.join(opts.get('workloads', []))} · nemesis {', '.join(opts.get('nemeses', [])) or 'none'}"
                if opts else "")
        windows = len((r.results or {}).get("nemesis_windows", []))
        when = r.started.strftime("%Y-%m-%d %H:%M:%S") if r.started else "?"
        badge = (index.verdict_badge(r.verdict) if r.results
                 else f"<span class=verdict style='background:{VERDICT_COLOURS[None]}'>running or incomplete</span>")
        href = quote(r.path, safe="/+=,@:") + "/"  # test names hold + and =: legal in a path, kept readable
        rows.append(f"<tr><td>{html.escape(when)}</td><td>{badge}</td><td><a href='{href}'>"
                    f"{html.escape(r.test)}</a><div class=what>{html.escape(what)}</div></td>"
                    f"<td>{windows if r.results else ''}</td>"
                    f"<td><a href='{href}timeline.html'>timeline</a> · <a href='{href}history.jsonl'>history</a></td></tr>")
    body = "".join(rows) or "<tr><td colspan=5>no runs yet: <code>python -m jepsen_like run</code> writes them here</td></tr>"
    return f"""<!doctype html><meta charset=utf-8><title>jepsen_like store</title>
<style>{index.CSS}
.what{{color:#57606a;font-size:13px}} td{{padding:6px 14px 6px 0;border-bottom:1px solid #eaeef2}}</style>
<header><h1>jepsen_like runs</h1><div class=sub>{html.escape(str(store))} · newest first</div></header>
<main><table><tr><th>started</th><th>verdict</th><th>test</th><th>faults</th><th></th></tr>{body}</table></main>"""


class Handler(BaseHTTPRequestHandler):
    store: Path  # set on the subclass `serve` makes

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{self.address_string()} {format % args}\n")

    def _answer(self, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        if path == "/":
            return self._send(HTTPStatus.OK, "text/html; charset=utf-8", listing(self.store).encode(), body)
        target = self._inside(path)
        if target is None:
            return self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found\n", body)
        if target.is_dir():
            if not path.endswith("/"):  # a run's pages link relatively: its folder must end in /
                self.send_response(HTTPStatus.MOVED_PERMANENTLY)
                self.send_header("Location", quote(path) + "/")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            target = target / "index.html"
        if target.name == "index.html" and not target.exists() and (target.parent / "results.json").exists():
            page = index.render(target.parent, _results(target.parent) or {})
            return self._send(HTTPStatus.OK, "text/html; charset=utf-8", page.encode(), body)
        if not target.is_file():
            return self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found\n", body)
        kind = TEXT_TYPES.get(target.suffix) or mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if kind.startswith("text/") or kind == "application/json":
            kind += "; charset=utf-8"
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(target.stat().st_size))
        self.end_headers()
        if body:
            with target.open("rb") as fh:
                shutil.copyfileobj(fh, self.wfile)
        return None

    def _inside(self, path: str) -> Path | None:
        """The file or folder `path` names inside the store, or None (also for `..`, and links leading out)."""
        parts = [p for p in path.split("/") if p]
        if any(p in (".", "..") or "\\" in p or "\0" in p for p in parts):
            return None
        root = self.store.resolve()
        target = root.joinpath(*parts).resolve()
        if target != root and root not in target.parents:
            return None
        return target if target.exists() or target.name == "index.html" else None

    def _send(self, status: HTTPStatus, kind: str, data: bytes, body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)


def server(store: Path, host: str = "127.0.0.1", port: int = 8080) -> ThreadingHTTPServer:
    handler = type("StoreHandler", (Handler,), {"store": store})
    return ThreadingHTTPServer((host, port), handler)


def serve(store: Path, host: str = "127.0.0.1", port: int = 8080) -> int:
    if not store.is_dir():
        print(f"python -m jepsen_like serve: {store} is not a directory (runs are written to store/ by `run`)",
              file=sys.stderr)
        return 2
    httpd = server(store, host, port)
    shown = f"[{host}]" if ":" in host else host
    print(f"serving {store} on http://{shown}:{httpd.server_address[1]}/ (Ctrl-C to stop)", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
    return 0
