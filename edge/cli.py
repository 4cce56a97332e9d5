"""`worldstate edge`: run one edge node next to the sensors."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("edge", help="run an edge node: a world (or part of it) followed from the core, "
                                    "answered locally with its staleness")
    p.add_argument("--core", required=True,
                   help="the core's API URLs, comma-separated, tried in order (e.g. http://127.0.0.1:8001)")
    p.add_argument("--world", required=True, help="the world this edge holds")
    p.add_argument("--entities", default="", metavar="PREFIX", help="hold only entities whose id starts with it")
    p.add_argument("--max-staleness", type=float, default=5.0, metavar="SECONDS",
                   help="answer 503 past it, unless a request accepts more with ?max_staleness_ms= (default 5)")
    p.add_argument("--data-dir", type=Path, default=Path("edge-data"),
                   help="its SQLite store and model blobs (default ./edge-data)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8100)
    p.add_argument("--name", default=None, help="how answers and logs name it (default edge-PORT)")
    p.add_argument("--key", default=None, help="a key for the core with read, observe and predict on the world "
                                               "(default $WORLDSTATE_KEY)")
    p.add_argument("--key-file", type=Path, default=None, help="a file holding that key")
    p.add_argument("--access-key-file", type=Path, default=None,
                   help="a file holding the token clients of the edge must send (default: the core key)")
    p.add_argument("--probe-s", type=float, default=0.5, help="how often it asks the core where it is")
    p.add_argument("--device", default="auto", help="where the model runs: auto (cuda when present), cpu, cuda")
    p.add_argument("--log-level", default="warning")
    p.set_defaults(func=run)


def _read(path: Path | None) -> str | None:
    return path.read_text().strip() if path else None


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from edge.app import create_app
    from edge.config import EdgeConfig
    from service import logs

    key = args.key or _read(args.key_file) or os.environ.get("WORLDSTATE_KEY")
    try:
        cfg = EdgeConfig(core=[u for u in args.core.split(",") if u], world=args.world, key=key,
                         data_dir=args.data_dir, entities=args.entities, max_staleness_s=args.max_staleness,
                         probe_s=args.probe_s, name=args.name or f"edge-{args.port}", device=args.device,
                         access_key=_read(args.access_key_file))
    except ValueError as e:
        print(f"worldstate edge: {e}", file=sys.stderr)
        return 2
    uvicorn.run(create_app(cfg), host=args.host, port=args.port, log_level=args.log_level, access_log=False,
                log_config=logs.log_config(args.log_level, "json"))
    return 0
