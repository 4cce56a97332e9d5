"""Storage and connection limits, against real etcd, Redis and API nodes.

- etcd compacts its history by itself, and a write past its space quota answers
  507 storage-full, changes nothing, and leaves reads answering; the README's
  recovery commands bring writes back.
- Redis at maxmemory (noeviction) refuses an AP write whole: 503 replica-full with
  Retry-After and not a byte changed; housekeeping still frees memory while full.
- A node holds thousands of silent and slow-header connections and still answers
  /healthz; it closes them once the header timeout passes, cuts a slow body with 408,
  refuses a head over its size limit with 431, and refuses connections past its cap
  as they open.

No timing assertions: every wait is a generous deadline for what must happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from consistency import ap_keys
from consistency.ap_store import ALL, ReplicaStore
from consistency.errors import Compacted
from deploy import binaries
from deploy.connection_limits import FD_RESERVE, fit_connections
from deploy.launcher import (ETCD_COMPACTION_RETENTION, ETCD_QUOTA_BYTES, REDIS_MAXMEMORY, Deployment, Topology,
                             wait_until)
from service.config import Settings
from tests.conftest import CP_TIMEOUT_S, auth_headers, etcd_revision, repo_root, run

CPU = {"WORLDSTATE_DEVICE": "cpu"}


def _flags(argv: list[str]) -> dict[str, str]:
    return {argv[i]: argv[i + 1] for i in range(0, len(argv) - 1, 2) if argv[i].startswith("--")}


def test_compose_states_the_same_limits_as_the_launcher() -> None:
    services = yaml.safe_load((repo_root() / "docker-compose.yml").read_text())["services"]
    for name in ("etcd1", "etcd2", "etcd3"):
        flags = _flags(services[name]["command"][1:])
        assert flags["--quota-backend-bytes"] == str(ETCD_QUOTA_BYTES), name
        assert (flags["--auto-compaction-mode"], flags["--auto-compaction-retention"]) == \
            ("periodic", ETCD_COMPACTION_RETENTION), name
    for name in ("redis-r1", "redis-r2"):
        flags = _flags((services[name].get("command") or services["redis-r1"]["command"])[1:])
        assert (flags["--maxmemory"], flags["--maxmemory-policy"]) == (REDIS_MAXMEMORY, "noeviction"), name
    defaults = Settings().to_env()
    for name in ("api-r1", "api-r2"):
        env = {k: str(v) for k, v in services[name]["environment"].items()}
        for key in ("MAX_CONNECTIONS", "HEADER_TIMEOUT_S", "BODY_TIMEOUT_S", "KEEP_ALIVE_S", "MAX_HEADER_BYTES"):
            assert env[f"WORLDSTATE_{key}"] == defaults[f"WORLDSTATE_{key}"], (name, key)


def test_the_connection_cap_fits_under_the_open_file_limit() -> None:
    assert fit_connections(4096, 20000) == 4096
    assert fit_connections(4096, 1024) == (1024 - FD_RESERVE) // 2
    assert fit_connections(4096, 100) == 1


# -- etcd ------------------------------------------------------------------------------------


def test_etcd_compacts_its_history_by_itself(tmp_path: Path) -> None:
    from consistency.cp_store import CPStore

    with Deployment(Topology(etcd_members=1, regions=1, api=False, run_dir=tmp_path,
                             etcd_compaction_retention="1s")) as d:
        async def compacted_to() -> int:
            store = CPStore(d.etcd_endpoints, CP_TIMEOUT_S)
            await store.connect()
            try:
                for i in range(5):
                    await store.put("compaction/probe", {"i": i})
                try:
                    async for _ in store.watch("compaction/", start_revision=1):
                        return 0
                except Compacted as c:
                    return c.compact_revision
                return 0
            finally:
                await store.close()

        # Periodic with a 1 s window: etcd compacts about every second to the revision of a second ago.
        assert wait_until(lambda: run(compacted_to()) > 1, timeout=60, interval=1.0), "etcd never compacted"


@pytest.fixture
def small_quota(tmp_path: Path) -> Iterator[Deployment]:
    with Deployment(Topology(etcd_members=1, regions=1, run_dir=tmp_path, cp_timeout_s=CP_TIMEOUT_S,
                             etcd_quota_bytes=16 << 20, api_env=CPU)) as d:
        yield d


def _etcdctl(d: Deployment, *args: str) -> str:
    etcdctl = binaries.find("etcdctl").path
    out = subprocess.run([etcdctl, f"--endpoints={d.etcd[0].client_url}", *args], capture_output=True, text=True,
                         env={"ETCDCTL_API": "3"}, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_cp_write_past_the_quota_answers_507_changes_nothing_and_reads_answer(small_quota: Deployment) -> None:
    d = small_quota
    with httpx.Client(base_url=d.api["r1"].url, timeout=30, headers=auth_headers(d)) as api:
        assert api.put("/v1/worlds/full", json={}).status_code == 200
        url = "/v1/worlds/full/params/blob"
        last: httpx.Response | None = None
        for i in range(100):  # 900 kB each, every revision kept: ~18 fill 16 MiB
            r = api.put(url, json={"i": i, "pad": "x" * 900_000})
            if r.status_code != 200:
                break
            last = r
        assert last is not None, "the first write was refused"
        print(f"etcd quota 16 MiB: {i} writes of 900 kB applied, then {r.status_code}")
        assert r.status_code == 507, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"] == "/problems/storage-full", r.json()
        before = etcd_revision(d)
        assert api.put(url, json={"i": -1}).status_code == 507  # a small write is refused too
        assert api.put("/v1/worlds/full/params/other", json=1).status_code == 507
        assert etcd_revision(d) == before, "a refused write moved the store"
        got = api.get(url)
        # The crossing write is refused whole (i - 1 is last) or applied and then answered NOSPACE
        # (etcd's apply-time quota check): either way whole, and nothing after it.
        assert got.status_code == 200 and got.json()["value"]["i"] in (i - 1, i), "the last write is not whole"
        if got.json()["value"]["i"] == i - 1:
            assert got.headers["etag"] == last.headers["etag"]
        assert api.get("/v1/worlds/full/params").status_code == 200
        assert api.get("/v1/worlds/full/params", params={"consistency": "serializable"}).status_code == 200

        # The README's recovery, as an operator runs it.
        status = json.loads(_etcdctl(d, "endpoint", "status", "--write-out=json"))
        _etcdctl(d, "compact", str(status[0]["Status"]["header"]["revision"]))
        _etcdctl(d, "defrag")
        _etcdctl(d, "alarm", "disarm")
        assert api.put(url, json={"i": "after"}).status_code == 200


# -- Redis -----------------------------------------------------------------------------------


def _fill(r: redis.Redis, most_bytes: int = 64 << 20) -> None:
    """Write filler keys until Redis refuses with OOM (it must, well before `most_bytes`). Small keys
    last: a refused big SET's own argument is what pushed memory over, and it is freed at once."""
    n, written = 0, 0
    for size in (64_000, 1_000, 10):
        with contextlib.suppress(redis.exceptions.OutOfMemoryError):
            while written < most_bytes:
                r.set(f"filler:{n}", b"x" * size)
                n, written = n + 1, written + size
    assert written < most_bytes, f"Redis took {written} bytes without refusing a write: no maxmemory"
    # Used memory moves a little on its own (client and AOF buffers): top it up until a tiny write
    # is refused now, which raises out of here as the callers expect.
    for i in range(100_000):
        r.set(f"probe:{i}", b"x")


def _snapshot(r: redis.Redis) -> dict[bytes, bytes]:
    """Every key but the filler, dumped: any change to the AP tier's keys shows."""
    return {k: r.dump(k) for k in r.scan_iter() if not k.startswith(b"filler:")}  # type: ignore[misc]


@pytest.fixture
def small_redis(tmp_path: Path) -> Iterator[Deployment]:
    with Deployment(Topology(etcd_members=1, regions=1, run_dir=tmp_path, cp_timeout_s=CP_TIMEOUT_S,
                             redis_maxmemory="8mb", api_env=CPU)) as d:
        yield d


def test_ap_write_to_a_full_redis_answers_503_and_changes_nothing(small_redis: Deployment) -> None:
    d = small_redis
    r = redis.Redis(port=d.redis["r1"].port)
    assert r.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
    ob = {"event_id": "e0", "entity": "ball", "source": "cam", "fields": {"x": 1.0, "y": 2.0}}
    batch = [{**ob, "event_id": f"e{i}", "fields": {"x": float(i), "label": "y" * 200}} for i in range(1, 300)]
    with httpx.Client(base_url=d.api["r1"].url, timeout=30, headers=auth_headers(d)) as api:
        assert api.put("/v1/worlds/ap", json={}).status_code == 200
        assert api.post("/v1/worlds/ap/observations", json=ob).status_code == 202
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            _fill(r)
        before = _snapshot(r)
        refused = api.post("/v1/worlds/ap/observations", json=batch)
        assert refused.status_code == 503, refused.text
        assert refused.json()["type"] == "/problems/replica-full", refused.json()
        assert int(refused.headers["retry-after"]) >= 1
        assert _snapshot(r) == before, "a refused write changed the replica"
        got = api.get("/v1/worlds/ap/entities/ball")
        assert got.status_code == 200 and got.json()["fields"]["x"]["value"] == 1.0

        # Housekeeping deletes before it writes, so Redis lets it run while full.
        async def housekeep() -> str:
            store = ReplicaStore(d.redis["r1"].url, "r1", "test")
            try:
                for p in ALL:
                    await store.expire_dedup(p)
                return "".join([await store.trim(p, maxlen=0) for p in ALL])
            finally:
                await store.close()

        assert run(housekeep()) != "" and sum(r.xlen(ap_keys.stream(p)) for p in ALL) == 0

        for key in r.scan_iter("filler:*"):
            r.delete(key)
        again = api.post("/v1/worlds/ap/observations", json=batch)
        assert again.status_code == 202 and again.json()["accepted"] == len(batch), again.text


def test_a_script_that_has_written_runs_whole_past_maxmemory(small_redis: Deployment) -> None:
    """The other half of what ReplicaStore relies on: Redis refuses only a script's first write."""
    r = redis.Redis(port=small_redis.redis["r1"].port)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        _fill(r)
    grow = "redis.call('DEL', KEYS[1]); for i = 1, 50 do redis.call('HSET', KEYS[2], i, string.rep('z', 1000)) end"
    r.eval(grow, 2, "filler:0", "grown")
    assert r.hlen("grown") == 50
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        r.eval("redis.call('HSET', KEYS[1], 'a', 'b'); redis.call('DEL', KEYS[2])", 2, "refused", "filler:1")
    assert not r.exists("refused") and r.exists("filler:1")


# -- connections -----------------------------------------------------------------------------

IDLE, SLOW_HEADS = 3000, 300


def _raise_own_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"this process may open {hard} files; the test holds {needed} connections")
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _open(host: str, port: int, n: int) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    for start in range(0, n, 250):  # under the listen backlog, so no SYN is dropped and retried
        conns += await asyncio.gather(*(asyncio.open_connection(host, port) for _ in range(start, min(n, start + 250))))
    return conns


async def _answer(reader: asyncio.StreamReader, timeout_s: float) -> bytes | None:
    """What the node sends before it closes the connection; None if still open at the deadline."""
    try:
        return await asyncio.wait_for(reader.read(), timeout_s)
    except asyncio.TimeoutError:
        return None
    except ConnectionError:
        return b""


async def _trickle(writers: list[asyncio.StreamWriter], stop: asyncio.Event) -> None:
    """A header line every half second on each connection: never the blank line that ends a head."""
    while not stop.is_set():
        for w in writers:
            with contextlib.suppress(ConnectionError, RuntimeError):
                if not w.is_closing():
                    w.write(b"X-Slow: 1\r\n")
        await asyncio.sleep(0.5)


@pytest.fixture(scope="module")
def default_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """A node with the connection settings at their defaults."""
    with Deployment(Topology(etcd_members=1, regions=1, run_dir=tmp_path_factory.mktemp("conns"),
                             api_env=CPU)) as d:
        yield d


def test_held_connections_leave_healthz_answering_and_are_closed(default_node: Deployment) -> None:
    _raise_own_fd_limit(IDLE + SLOW_HEADS + 200)
    api, defaults = default_node.api["r1"], Settings()

    async def scenario() -> dict[str, Any]:
        t0 = time.monotonic()
        idle = await _open(api.host, api.port, IDLE)
        slow = await _open(api.host, api.port, SLOW_HEADS)
        for _, w in slow:
            w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        opened_s = time.monotonic() - t0
        stop = asyncio.Event()
        trickle = asyncio.create_task(_trickle([w for _, w in slow], stop))
        t1 = time.monotonic()
        async with httpx.AsyncClient(timeout=10) as client:
            health = await client.get(f"{api.url}/healthz")
        healthz_s = time.monotonic() - t1
        deadline = defaults.header_timeout_s + 60  # the timeout, then a loaded machine's slack
        answers = await asyncio.gather(*(_answer(r, deadline) for r, _ in idle + slow))
        stop.set()
        await trickle
        for _, w in idle + slow:
            w.close()
        return {"opened_s": opened_s, "healthz": health.status_code, "healthz_s": healthz_s,
                "idle": answers[:IDLE], "slow": answers[IDLE:]}

    got = run(scenario())
    print(f"\nheld {IDLE} silent + {SLOW_HEADS} slow-header connections (opened in {got['opened_s']:.2f} s, "
          f"under the {defaults.header_timeout_s:.0f} s header timeout); /healthz answered "
          f"{got['healthz']} in {got['healthz_s'] * 1000:.0f} ms")
    assert got["healthz"] == 200
    assert sum(a is None for a in got["idle"]) == 0, "silent connections were never closed"
    assert all(a == b"" for a in got["idle"]), "a connection that asked nothing got an answer"
    assert sum(a is None for a in got["slow"]) == 0, "slow-header connections were never closed"
    timed_out = sum(a is not None and a.startswith(b"HTTP/1.1 408") for a in got["slow"])
    assert timed_out >= SLOW_HEADS * 0.9, f"only {timed_out} of {SLOW_HEADS} slow heads got 408"
    assert httpx.get(f"{api.url}/healthz", timeout=10).status_code == 200


SMALL = {"WORLDSTATE_MAX_CONNECTIONS": "100", "WORLDSTATE_HEADER_TIMEOUT_S": "5.0",
         "WORLDSTATE_BODY_TIMEOUT_S": "2.0", "WORLDSTATE_MAX_HEADER_BYTES": "4096"}


@pytest.fixture(scope="module")
def small_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """A node with a cap of 100 connections, started with a soft open-file limit of 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 1024:
        pytest.skip("the hard open-file limit is 1024 or less: nothing to raise")
    d = Deployment(Topology(etcd_members=1, regions=1, run_dir=tmp_path_factory.mktemp("small-conns"),
                            api_env={**CPU, **SMALL}))
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))  # children inherit it
    try:
        d.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        yield d
    finally:
        d.stop()


def _open_files_limit(pid: int) -> tuple[int, int]:
    line = next(x for x in Path(f"/proc/{pid}/limits").read_text().splitlines() if x.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    return int(soft), int(hard)


def test_a_node_raises_its_open_file_limit(small_node: Deployment) -> None:
    api = small_node.api["r1"]
    assert api.pid is not None
    soft, hard = _open_files_limit(api.pid)
    assert soft == hard > 1024


def test_connections_past_the_cap_are_refused_as_they_open(small_node: Deployment) -> None:
    api = small_node.api["r1"]

    async def scenario() -> list[bytes | None]:
        conns = await _open(api.host, api.port, 300)
        answers = await asyncio.gather(*(_answer(r, 60) for r, _ in conns))
        for _, w in conns:
            w.close()
        return answers

    answers = run(scenario())
    refused = [a for a in answers if a and a.startswith(b"HTTP/1.1 503")]
    assert len(refused) >= 150, f"{len(refused)} of 300 refused with a cap of 100"
    head, _, body = refused[0].partition(b"\r\n\r\n")
    assert b"retry-after: 1" in head.lower()
    assert json.loads(body)["type"] == "/problems/too-many-connections"
    assert None not in answers, "an admitted silent connection outlived the header timeout"
    assert httpx.get(f"{api.url}/healthz", timeout=10).status_code == 200


def _exchange(api: Any, data: bytes, timeout_s: float = 60) -> bytes | None:
    async def go() -> bytes | None:
        reader, writer = await asyncio.open_connection(api.host, api.port)
        writer.write(data)
        try:
            return await _answer(reader, timeout_s)
        finally:
            writer.close()

    return run(go())


def test_a_slow_body_is_cut_with_408(small_node: Deployment) -> None:
    api = small_node.api["r1"]
    key = auth_headers(small_node)["Authorization"].encode()
    head = (b"PUT /v1/worlds/slow HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Authorization: " + key + b"\r\nContent-Length: 100\r\n\r\n{\"a\": ")
    answer = _exchange(api, head)
    assert answer is not None, "a body that never came was waited for forever"
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["type"] == "/problems/request-timeout"
    assert httpx.get(f"{api.url}/v1/worlds/slow", timeout=10,
                     headers=auth_headers(small_node)).status_code == 404, "the cut request wrote"


def test_a_head_over_the_limit_answers_431(small_node: Deployment) -> None:
    api = small_node.api["r1"]
    answer = _exchange(api, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000)
    assert answer is not None and answer.startswith(b"HTTP/1.1 431"), answer and answer[:200]
    # A head under the limit is served as ever.
    ok = _exchange(api, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nX-Small: aaaa\r\n\r\n")
    assert ok is not None and ok.startswith(b"HTTP/1.1 200"), ok


def test_pipelined_and_kept_alive_requests_are_answered_then_closed_quietly(small_node: Deployment) -> None:
    answer = _exchange(small_node.api["r1"], b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 2)
    assert answer is not None, "an idle kept-alive connection was never closed"
    assert answer.count(b"HTTP/1.1 200") == 2 and b"HTTP/1.1 408" not in answer, answer
