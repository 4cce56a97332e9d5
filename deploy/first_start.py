"""What a deployment does once it is up: make its first admin key, publish the
packaged model. `worldstate up` does both; docker-compose's one-shot services
run the same code (`worldstate keys bootstrap`, `worldstate publish-default`)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from consistency.cp_store import CPStore
from consistency.errors import Unavailable
from deploy.processes import wait_until
from service.keys import bootstrap_admin

__all__ = ["admin_key", "publish_default_model"]


def admin_key(cp_store: Callable[[], CPStore], path: Path, timeout: float) -> str | None:
    """The admin key, made in etcd at the cluster's first start and kept (mode 0600) at
    `path`; None when etcd already had one and `path` does not hold it."""

    async def bootstrap() -> str | None:
        deadline = time.monotonic() + timeout
        while True:
            store = cp_store()
            try:
                await store.connect()
                return await bootstrap_admin(store)
            except Unavailable:  # healthy members, no leader elected yet
                if time.monotonic() > deadline:
                    raise
            finally:
                await store.close()
            await asyncio.sleep(0.2)

    # In a thread of its own: the caller may be running an event loop.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        token = pool.submit(asyncio.run, bootstrap()).result()
    if token is None:
        return path.read_text().strip() if path.exists() else None
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def _request(method: str, url: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30.0) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def publish_default_model(api_urls: list[str], checkpoint_dir: str | Path, timeout: float = 120.0,
                          key: str | None = None) -> tuple[str, dict[str, Any]]:
    """Install the packaged model's blob into the checkpoint directory the API nodes
    share and publish its manifest create-only (If-None-Match: *), so a deployment
    that already names a model keeps it. Waits until every node serves the manifest
    now current. Returns ("published" | "kept", that manifest)."""
    from world_model import shipped  # torch loads with it: only when a model is published

    manifest = shipped.install(checkpoint_dir)
    auth = {"Authorization": f"Bearer {key}"} if key else {}
    status, answer = _request("PUT", f"{api_urls[0]}/v1/models/manifest", json.dumps(manifest).encode(),
                              {"Content-Type": "application/json", "If-None-Match": "*", **auth})
    if status == 412:
        outcome = "kept"
        status, answer = _request("GET", f"{api_urls[0]}/v1/models/manifest", headers=auth)
        if status != 200:
            raise RuntimeError(f"reading the existing model manifest answered {status}: {answer}")
        manifest = answer["manifest"]
    elif status in (200, 201):
        outcome = "published"
    else:
        raise RuntimeError(f"publishing the default model answered {status}: {answer}")
    deadline = time.monotonic() + timeout
    for url in api_urls:
        current = f"{url}/v1/models/current"
        if not wait_until(lambda: _request("GET", current, headers=auth)[1].get("hash") == manifest["hash"],
                          max(0.0, deadline - time.monotonic()), interval=0.2):
            raise RuntimeError(f"{url} does not serve model {manifest['hash'][:12]} after {timeout:.0f} s: "
                               f"{_request('GET', current, headers=auth)[1]}")
    return outcome, manifest
