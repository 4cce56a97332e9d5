"""The command lines of `worldstate up --learn`'s roles: a learner per region and one aggregator
(learn/loop.py runs each as a loop). docker-compose.yml's learner-r1, learner-r2 and aggregator run
the same flags at the compose names; tests/test_launcher.py compares them."""

from __future__ import annotations

import sys
from pathlib import Path

DEFAULT_EVERY_S = 300.0


def learner_argv(*, world: str, region: str, api: str, redis_url: str, run_dir: Path, every: float,
                 extra: list[str] | None = None) -> list[str]:
    """A region's learner: catches up on its replica's log into <run_dir>/shards/<region>, fine-tunes,
    announces its update in the same Redis."""
    return [sys.executable, "-m", "deploy", "learn", "--world", world, "--api", api,
            "--key-file", str(run_dir / "admin.key"), "--checkpoint-dir", str(run_dir / "checkpoints"),
            "--from-log", redis_url, "--shard-dir", str(run_dir / "shards" / region), "--region", region,
            "--publish", "update", "--announce", redis_url, "--learner", f"learner-{region}",
            "--every", f"{every:g}", *(extra or [])]


def aggregator_argv(*, world: str, api: str, redis_urls: dict[str, str], run_dir: Path, every: float,
                    extra: list[str] | None = None) -> list[str]:
    """The aggregator: reads every region's announcements and shards, publishes by CAS."""
    shard_dirs = [a for region in redis_urls for a in ("--shard-dir", str(run_dir / "shards" / region))]
    return [sys.executable, "-m", "deploy", "aggregate", "--world", world, "--api", api,
            "--key-file", str(run_dir / "admin.key"), "--checkpoint-dir", str(run_dir / "checkpoints"),
            "--region-redis", ",".join(f"{r}={u}" for r, u in redis_urls.items()), *shard_dirs,
            "--aggregator", "aggregator", "--every", f"{every:g}", *(extra or [])]
