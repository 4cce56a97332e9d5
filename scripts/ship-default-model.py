#!/usr/bin/env python3
"""Train the model that ships with the package and write it to world_model/default_model/.

    .venv/bin/python scripts/ship-default-model.py --config default --threads 2

replaces the packaged blob (`<sha256>.pt`, the old one is removed) and its
manifest.json; `worldstate up` publishes it on a deployment that has no model.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, installed or not

from world_model.config import default_config, tiny_config  # noqa: E402
from world_model.shipped import DEFAULT_DIR, ship  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=["default", "tiny"], default="default")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda ... (the blob is stored on CPU either way)")
    p.add_argument("--seed", type=int, help="data and training seed (default: the config's)")
    p.add_argument("--steps", type=int, help="JEPA optimisation steps (default: the config's; for trying the script)")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_DIR, help="where the packaged model lives")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    cfg = tiny_config() if args.config == "tiny" else default_config()
    cfg.train.threads = args.threads
    cfg.train.device = args.device
    if args.steps is not None:
        cfg.train.steps = args.steps
    if args.seed is not None:
        cfg.train.seed = cfg.data.seed = args.seed
    manifest = ship(cfg, args.out_dir, progress=not args.no_progress)
    size = (args.out_dir / f"{manifest['hash']}.pt").stat().st_size
    print(f"shipped {manifest['hash']} (version {manifest['version']}, {size / 1024:.0f} KiB) in {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
