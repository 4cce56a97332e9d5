"""redis-server's command line for a region's AP replica, shared by the single Redis (deploy/launcher.py)
and every node of a Redis Cluster (deploy/redis_cluster.py), which the launcher imports in turn."""

from __future__ import annotations

from deploy import backend_auth

__all__ = ["REDIS_MAXMEMORY", "redis_args"]

# Redis refuses writes past maxmemory instead of evicting keys: an evicted key is an
# acknowledged observation, or a dedup record, silently gone.
REDIS_MAXMEMORY = "256mb"


def redis_args(port: int, data_dir: str, appendfsync: str = "always", bind: str = "127.0.0.1",
               maxmemory: str = REDIS_MAXMEMORY, user: tuple[str, str] | None = None) -> list[str]:
    """redis-server flags: AOF on, RDB snapshots off (the AOF is the durable log), bounded memory;
    with `user` (name, password), that ACL user alone may connect."""
    args = [
        "--port", str(port),
        "--bind", bind,
        "--dir", data_dir,
        "--appendonly", "yes",
        "--appendfsync", appendfsync,
        "--save", "",
        "--daemonize", "no",
        "--maxmemory", maxmemory,
        "--maxmemory-policy", "noeviction",
    ]
    if user is not None:
        args += backend_auth.redis_acl_args(*user)
    if bind != "127.0.0.1":
        # Redis 7's protected mode answers -DENIED to every non-loopback client of a
        # password-less server, even with an explicit bind; a non-loopback bind here is
        # a private address (jepsen_like's namespaces), reachable only by the deployment.
        args += ["--protected-mode", "no"]
    return args
