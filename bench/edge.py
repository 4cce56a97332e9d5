"""Edges against the core, same run: predict latency, physics fan-out, memory per edge.

    python bench/edge.py                          # 50 edges, 20 physics changes, 300 predicts a target
    python bench/edge.py --edges 10 --changes 10 --queries 100 --json /tmp/edge.json

Starts a local core (1 etcd member, one Redis, API node r1; no model yet), makes a world
with physics and --bodies bodies, then:

fan-out   --edges `worldstate edge` processes follow r1, started --start-batch at a time
          (fewer if memory runs short: the output says how many). The physics is then PUT at
          r1 --changes times, --spacing-s apart, and each change is looked at once on every
          edge (GET .../physics) at one delay after the PUT's ack: --target-ms for half the
          changes, --looks-ms in turn for the rest; nothing asks an edge before its look, so
          the look does not slow what it measures. An edge without the change at its look is
          then polled every --poll-ms. Each (edge, change) pair gets a time it held the change
          by: the answer's return, or earlier, when the edge last heard from the core (its
          answer's staleness label says; the change came in a line it heard). These are upper
          bounds: their p99 <= --target-ms meets the target for sure. Raw floor: an aetcd watch
          on the physics key in this process, timed from the same acks (negative: it fired
          before the ack came back).
memory    VmRSS, PSS and USS (/proc/PID/status, smaps_rollup) of every edge: the fan-out
          edges (no model: the core had none while they ran, so they never import torch) and
          the predict edge (model loaded).
predict   the default model is published; one edge follows r1 and fetches it. Queries of
          --bodies bodies, --horizon, sequentially and from --clients concurrent clients, in
          --rounds blocks alternating core r1 / the edge / plain torch (the model called in
          this process on the same rows: the floor), in two workloads: "new", every query
          different, so the model runs for each; "again", one query asked over and over,
          which nodes answer from their predict memo. Target: edge <= 0.5x core.

Everything runs under a temporary directory that is removed at the end; --json writes
the figures to a file.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")  # the aetcd watch, then edges forked: no handlers

from bench.edge_predict import ANY_AGE, PHYSICS, WORLD, predict, stats  # noqa: E402
from bench.edge_report import show  # noqa: E402
from bench.rawhttp import Connection  # noqa: E402
from consistency import cp_keys  # noqa: E402
from deploy.launcher import Deployment, Topology, free_port  # noqa: E402

WORLDSTATE = Path(sys.executable).with_name("worldstate")
MIN_FREE_MB = 1024  # stop starting edges when less memory than this is left


def mem_available_mb() -> float:
    return int(Path("/proc/meminfo").read_text().split("MemAvailable:")[1].split()[0]) / 1024


def memory_mb(pid: int) -> dict[str, float]:
    """RSS counts every shared page in full (python, libraries); PSS shares them out; USS is its own."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    out = {"rss": int(status["VmRSS"].split()[0]) / 1024}
    rollup = {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in
              Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:])}
    out["pss"] = rollup["Pss"] / 1024
    out["uss"] = (rollup["Private_Clean"] + rollup["Private_Dirty"]) / 1024
    return out


async def call(conn: Connection, method: str, path: str, body: Any = None) -> Any:
    status, _, doc = await conn.request(method, path, body, {"Content-Type": "application/json"})
    if status >= 300:
        raise RuntimeError(f"{method} {conn.host}:{conn.port}{path}: {status} {doc}")
    return doc


async def until(check: Any, what: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = await check()
        except (OSError, RuntimeError, asyncio.IncompleteReadError):
            got = None
        if got:
            return got
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.1)


def die_with_parent() -> None:
    """PR_SET_PDEATHSIG: a benchmark killed by its caller leaves no edge behind."""
    ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)


class EdgeProc:
    """`worldstate edge` as a user runs it, following core r1."""

    def __init__(self, core: str, key: str | None, root: Path, name: str, probe_s: float) -> None:
        self.name, self.port = name, free_port()
        auth = {"Authorization": f"Bearer {key}"} if key else {}
        self.conn = Connection("127.0.0.1", self.port, auth)
        log = open(root / f"{name}.log", "ab")
        self.proc = subprocess.Popen(
            [str(WORLDSTATE), "edge", "--core", core, "--world", WORLD, "--data-dir", str(root / name),
             "--key", key or "", "--port", str(self.port), "--name", name, "--probe-s", str(probe_s)],
            stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        log.close()

    async def revision(self) -> int:
        """The physics revision this edge answers with now (0: it cannot answer yet)."""
        return (await self.answer())[0]

    async def answer(self) -> tuple[int, float]:
        """The physics revision it answers with, and a wall-clock time it had it by: when the answer
        came back, or earlier, when the edge last heard from the core (its label's heard_ms_ago,
        as_of_ms and stale_ms, ~2 ms of rounding; the change came in a line it heard)."""
        status, _, doc = await self.conn.request("GET", f"/v1/worlds/{WORLD}/physics?{ANY_AGE}")
        back = time.time()
        if status != 200:
            return 0, back
        label = doc["staleness"]
        heard = (label["as_of_ms"] + label["stale_ms"] - (label["heard_ms_ago"] or 0)) / 1000
        return int(doc["revision"]), min(back, heard)

    async def applied_at(self, revision: int) -> float | None:
        """When this edge applied `revision` by its own record (GET /v1/edge), wall-clock seconds."""
        status, _, doc = await self.conn.request("GET", "/v1/edge")
        if status != 200:
            return None
        return next((ms / 1000 for r, ms in doc.get("cp_applied_at_ms", []) if r == revision), None)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def start_edges(edges: list[EdgeProc], n: int, batch: int, core: str, key: str | None, root: Path,
                      probe_s: float, revision: int, notes: list[str]) -> None:
    """Start up to `n` edges into `edges`, `batch` at a time, each holding `revision` before the next batch."""
    while len(edges) < n:
        if mem_available_mb() < MIN_FREE_MB:
            notes.append(f"stopped starting edges at {len(edges)} of {n}: {mem_available_mb():.0f} MB left")
            break
        wave = [EdgeProc(core, key, root, f"edge-{len(edges) + i:03d}", probe_s)
                for i in range(min(batch, n - len(edges)))]
        edges += wave
        for e in wave:
            async def holds(e: EdgeProc = e) -> bool:
                if e.proc.poll() is not None:
                    raise SystemExit(f"{e.name} exited {e.proc.returncode}: see {root / (e.name + '.log')}")
                return await e.revision() >= revision
            await until(holds, f"{e.name} to follow the core", 180)


# -- fan-out ------------------------------------------------------------------------------------

async def poll_until(e: EdgeProc, revision: int, poll_s: float, timeout: float) -> float | None:
    """A wall-clock time the edge held `revision` by (None: not within `timeout`)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        got, by = await e.answer()
        if got >= revision:
            return by
        await asyncio.sleep(poll_s)
    return None


async def look(e: EdgeProc) -> tuple[int, float, float]:
    t = time.perf_counter()
    got, by = await e.answer()
    return got, by, (time.perf_counter() - t) * 1000


async def fan_out(core: Connection, edges: list[EdgeProc], endpoint: str, a: argparse.Namespace) -> dict[str, Any]:
    """One look per (edge, change), at one delay after the ack (see the module's docstring): polling
    50 edges every 10 ms instead took both cores here, and measured mostly itself."""
    import aetcd

    host, port = endpoint.removeprefix("http://").split(":")
    raw = aetcd.Client(host=host, port=int(port))
    seen: dict[int, float] = {}
    watch = await raw.watch((cp_keys.params_prefix(WORLD) + cp_keys.PHYSICS_KEY).encode())

    async def follow() -> None:
        async for ev in watch:
            seen.setdefault(ev.kv.mod_revision, time.time())

    watcher = asyncio.create_task(follow())
    others = [d for d in a.looks_ms if d != a.target_ms] or [a.target_ms]
    held: dict[float, list[int]] = {}  # look delay -> [pairs that held the change, pairs looked at]
    ms: dict[str, list[float]] = {"by": [], "late": [], "look_rtt": [], "raw": [], "put": [], "applied": [],
                                  "applied_sent": []}
    missing = 0
    for i in range(a.changes):
        delay = a.target_ms if i % 2 == 0 else others[(i // 2) % len(others)]
        sent = time.perf_counter()
        doc = await call(core, "PUT", f"/v1/worlds/{WORLD}/physics", {**PHYSICS, "gravity": 9.81 + (i + 1) / 1000})
        ack, rev = time.time(), int(doc["revision"])
        ms["put"].append((time.perf_counter() - sent) * 1000)
        await asyncio.sleep(max(0.0, ack + delay / 1000 - time.time()))
        got = await asyncio.gather(*(look(e) for e in edges))
        ms["look_rtt"] += [rtt for *_, rtt in got]
        ms["by"] += [(by - ack) * 1000 for r, by, _ in got if r >= rev]
        count = held.setdefault(delay, [0, 0])
        count[0] += sum(r >= rev for r, *_ in got)
        count[1] += len(edges)
        late = await asyncio.gather(*(poll_until(e, rev, a.poll_ms / 1000, 30)
                                      for e, (r, *_) in zip(edges, got) if r < rev))
        missing += sum(t is None for t in late)
        ms["late"] += [(t - ack) * 1000 for t in late if t is not None]
        # Exact: each edge's own record of when it applied the change (same machine, same clock).
        at = await asyncio.gather(*(e.applied_at(rev) for e in edges))
        ms["applied"] += [(t - ack) * 1000 for t in at if t is not None]
        ms["applied_sent"] += [(t - (ack - ms["put"][-1] / 1000)) * 1000 for t in at if t is not None]
        missing_record = sum(t is None for t in at)
        if missing_record:
            missing += missing_record
        await until(lambda: asyncio.sleep(0, rev in seen), "the raw etcd watch", 10)  # sleep(0, x) is x
        ms["raw"].append((seen[rev] - ack) * 1000)
        await asyncio.sleep(a.spacing_s)
    watcher.cancel()
    await asyncio.gather(watcher, return_exceptions=True)
    await raw.close()
    return {"held": {str(d): hn for d, hn in sorted(held.items())}, "arrived_by_ms": stats(ms["by"] + ms["late"]),
            "late_ms": stats(ms["late"]), "look_rtt_ms": stats(ms["look_rtt"]), "raw_watch_ms": stats(ms["raw"]),
            "put_ack_ms": stats(ms["put"]), "never_arrived": missing, "applied_ms": stats(ms["applied"]),
            "applied_from_sent_ms": stats(ms["applied_sent"])}


# -- the run ------------------------------------------------------------------------------------

async def setup_world(core: Connection, bodies: int) -> tuple[list[str], list[list[float]], int]:
    await call(core, "PUT", f"/v1/worlds/{WORLD}", {})
    rev = int((await call(core, "PUT", f"/v1/worlds/{WORLD}/physics", PHYSICS))["revision"])
    ids = [f"ball-{i}" for i in range(bodies)]
    rows = [[1.0 + i * 1.5, 3.0 + i % 3, 1.0, 0.5 - i * 0.1, 0.3, 1.0] for i in range(bodies)]
    obs = [{"event_id": f"init-{e}", "entity": e, "source": "bench",
            "fields": dict(zip(("x", "y", "vx", "vy", "radius", "mass"), r))} for e, r in zip(ids, rows)]
    token = (await call(core, "POST", f"/v1/worlds/{WORLD}/observations", obs))["token"]
    await call(core, "GET", f"/v1/worlds/{WORLD}/entities/{ids[-1]}?token={token}")
    return ids, rows, rev


async def run(d: Deployment, root: Path, a: argparse.Namespace) -> dict[str, Any]:
    key, core_url = d.admin_key, d.api["r1"].url
    host, port = core_url.removeprefix("http://").split(":")
    core = Connection(host, int(port), {"Authorization": f"Bearer {key}"} if key else {})
    ids, rows, rev = await setup_world(core, a.bodies)
    notes: list[str] = []
    result: dict[str, Any] = {"notes": notes}
    t0, edges = time.perf_counter(), list[EdgeProc]()
    try:
        await start_edges(edges, a.edges, a.start_batch, core_url, key, root, a.probe_s, rev, notes)
        result |= {"edges": len(edges), "start_s": time.perf_counter() - t0}
        result["fanout"] = await fan_out(core, edges, d.etcd_endpoints[0], a)
        result["memory_no_model"] = [memory_mb(e.proc.pid) for e in edges]
    finally:
        for e in edges:
            e.stop()
    await core.close()
    # The model comes only now: the fan-out edges above never had one to fetch.
    from world_model.batching import set_torch_threads
    from world_model.inference import WorldModel

    set_torch_threads(1)  # as every node runs it (WORLDSTATE_TORCH_THREADS, the edge's default)
    _, manifest = d.publish_default_model()
    model = WorldModel.load(manifest["hash"], str(d.run_dir / "checkpoints"), "cpu")
    edge = EdgeProc(core_url, key, root, "edge-predict", a.probe_s)
    try:
        async def serving() -> bool:
            doc = await call(edge.conn, "GET", "/v1/edge")
            return doc["model"].get("hash") == manifest["hash"] and await edge.revision() > 0
        await until(serving, "the predict edge to load the model", 180)
        result["predict"] = await predict(core_url, edge.port, key, model, rows, ids, a)
        result["memory_model"] = [memory_mb(edge.proc.pid)]
    finally:
        edge.stop()
        await edge.conn.close()
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--edges", type=int, default=50, help="edges in the fan-out (default 50)")
    p.add_argument("--start-batch", type=int, default=5, help="edges started at a time (default 5)")
    p.add_argument("--changes", type=int, default=20, help="physics changes at the core (default 20)")
    p.add_argument("--spacing-s", type=float, default=0.5, help="between two changes (default 0.5)")
    p.add_argument("--target-ms", type=float, default=100.0, help="fan-out target: half the looks (default 100)")
    p.add_argument("--looks-ms", type=float, nargs="+", default=[5.0, 10.0, 20.0, 50.0],
                   help="the other half's look delays, in turn (default 5 10 20 50)")
    p.add_argument("--poll-ms", type=float, default=10.0, help="polling of pairs late at their look (default 10)")
    p.add_argument("--probe-s", type=float, default=0.5, help="every edge's --probe-s (default 0.5, its own)")
    p.add_argument("--queries", type=int, default=300, help="predicts per target and client count (default 300)")
    p.add_argument("--clients", type=int, default=4, help="concurrent predict clients (default 4; 1 is always run)")
    p.add_argument("--rounds", type=int, default=3, help="alternating blocks per predict row (default 3)")
    p.add_argument("--bodies", type=int, default=4, help="bodies in the predict query (default 4)")
    p.add_argument("--horizon", type=int, default=10, help="(default 10)")
    p.add_argument("--etcd-members", type=int, default=1, choices=(1, 3, 5))
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = p.parse_args(argv)
    if min(a.edges, a.changes, a.start_batch, a.clients, a.rounds) < 1 or a.queries < a.rounds * a.clients:
        p.error("--edges, --changes, --start-batch, --clients and --rounds are at least 1, "
                "--queries at least --rounds x --clients")
    tmp = Path(tempfile.mkdtemp(prefix="worldstate-bench-edge-"))
    (tmp / "edges").mkdir()
    env = {"WORLDSTATE_DEVICE": "cpu", "WORLDSTATE_TORCH_THREADS": "1"}
    try:
        with Deployment(Topology(etcd_members=a.etcd_members, regions=1, run_dir=tmp / "core", api_env=env)) as d:
            result = asyncio.run(run(d, tmp / "edges", a))
    except BaseException:
        print(f"bench/edge.py failed; logs kept under {tmp}", file=sys.stderr)
        raise
    shutil.rmtree(tmp, ignore_errors=True)
    for note in result["notes"]:
        print(f"note: {note}")
    summary = show(result, a)
    print("\nsummary\n" + "\n".join(f"  {line}" for line in summary))
    if a.json:
        a.json.write_text(json.dumps({"options": {k: str(v) for k, v in vars(a).items()}, **result}, indent=1,
                                     default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
