"""jepsen_like with clustered regions: the ``shard`` nemesis on a real run, and how shard nodes are placed.

The run is the README's command (docs/ap-cluster.md §12): two regions, each a Redis Cluster of three
masters (a master's failure needs a majority of masters to agree) with one replica each, writes acknowledged once one replica has them
(--ap-ack-replicas 1), while the nemesis kills, pauses or fails over one shard node at a time and
partitions the regions' hosts. With ack 1 a promoted replica holds every acknowledged write, so the
convergence checker (every acknowledged observation in every region, once) must find nothing lost.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from jepsen_like.hosts import host_of
from jepsen_like.shards import KINDS

ROOT = Path(__file__).resolve().parent.parent

def readme_command() -> list[str]:
    """The README's run with --ap-shards ("Shard faults: a region's Redis Cluster under jepsen_like"), as argv."""
    text = (ROOT / "README.md").read_text()
    m = re.search(r"\.venv/bin/python -m jepsen_like run --workload observations --nemesis shard,[^`]*?\n(?=\S|$)", text)
    assert m, "the README shows no jepsen_like run with the shard nemesis"
    argv = shlex.split(m.group(0).replace("\\\n", " "))
    return [sys.executable, *argv[1:]]


def test_a_cluster_node_runs_on_its_region_s_host() -> None:
    # "redis-r2-0" ends in 0; read as a plain name it would be host n0, which no partition names.
    assert host_of("redis-r2-0") == "n2" and host_of("redis-r1-3") == "n1"
    assert host_of("redis-r2") == "n2" and host_of("api-r1") == "n1" and host_of("etcd3") == "n3"


def test_shard_faults_on_clustered_regions_lose_no_acknowledged_write(tmp_path: Path) -> None:
    done = subprocess.run(readme_command(), cwd=tmp_path, capture_output=True,
                          text=True, timeout=400, env={**os.environ, "PYTHONPATH": str(ROOT)})
    print(done.stdout[-4000:], done.stderr[-4000:])
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    [latest] = list((tmp_path / "store").glob("*/latest"))
    results = json.loads((latest / "results.json").read_text())
    assert results["valid"] is True
    conv = results["checkers"]["convergence"]
    assert conv["valid"] is True and conv["stats"]["acknowledged"] > 0, conv
    assert results["clients_completed"] == {"before_faults": True, "after_faults": True}

    log = results["test"]["nemesis_log"]
    assert not [e for e in log if "error" in e], log  # every fault applied, and undone with the cluster serving
    shard_starts = [e for e in log if e["fault"] == "shard" and e["f"] == "start"]
    assert shard_starts, log
    for e in shard_starts:  # what was done, to which node, in which role at the time
        assert e["kind"] in KINDS and e["region"] in ("r1", "r2"), e
        assert e["node"].startswith(f"redis-{e['region']}-") and e["role"] in ("master", "replica"), e
        assert ("master" in e) == (e["role"] == "replica"), e
    # Seed 2 draws a master's kill first: its replica is promoted and the old master comes back as a
    # replica, the case where ack 1 is what keeps acknowledged writes. Other draws change with the schedule's.
    assert shard_starts[0]["kind"] == "kill-master", shard_starts
    first_stop = next(e for e in log if e["fault"] == "shard" and e["f"] == "stop")
    assert first_stop["promoted"] == shard_starts[0]["replicas"][0] and first_stop["role_now"] == "replica", log
    stops = [e for e in log if e["fault"] == "shard" and e["f"] == "stop" and "node" in e]
    assert all(e["role_now"] in ("master", "replica") for e in stops), stops
    # A master cut off from both API nodes (the cluster still sees it: nothing fails over).
    cuts = [e for e in log if e["fault"] == "shard-cut" and e["f"] == "start"]
    assert cuts and all(e["kind"] == "cut-master" and e["role"] == "master" and e["cut_from"] == ["api-r1", "api-r2"]
                        for e in cuts), log
    # The partitions cut cluster nodes with their region: a peer's nodes are behind the cut.
    parts = [e for e in log if e["fault"] == "partition" and e["f"] == "start"]
    assert parts and all(e["drops"] for e in parts), parts
    # The options went to the run as given.
    opts = results["test"]["options"]
    assert (opts["ap_shards"], opts["ap_replicas"], opts["ap_ack_replicas"]) == (3, 1, 1)
    assert (latest / "cluster" / "logs" / "redis-r2-5.log").stat().st_size > 0  # every node of each cluster ran


def test_the_shard_nemesis_refuses_a_run_without_clusters(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "jepsen_like", "run", "--workload", "observations",
                           "--nemesis", "shard"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2 and "needs clustered regions" in done.stderr, done.stderr
    assert not (tmp_path / "store").exists()


def test_clustered_regions_refuse_netns_mode_before_starting_anything(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "jepsen_like", "run", "--net", "netns", "--ap-shards", "3"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 3 and "proxy mode only" in done.stderr, done.stderr
    assert not (tmp_path / "store").exists()
