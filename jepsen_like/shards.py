"""The ``shard``, ``shard-behind`` and ``shard-cut`` nemeses: faults on one node of a region's Redis Cluster (docs/ap-cluster.md §12).

Each fault picks a clustered region, then one of its nodes by the role it has now (after earlier
failovers, not the role it started with), and does one of:

- ``kill-master``: kill -9 a master serving slots. Its replica, if it has one, is promoted once
  a majority of masters agree it failed (``cluster-node-timeout``; so never with 2 masters, whose
  slots stay down until the restart); the stop waits for that promotion (``PROMOTION_WAIT_S``),
  then restarts the old master, which rejoins as a replica of the new one, or, not replaced, as
  the master again (its AOF is written with ``appendfsync always``). What the region may lose here is §4's: with
  ``WORLDSTATE_AP_ACK_REPLICAS=0`` the writes the master acknowledged that its replica had not got.
- ``kill-master-behind`` (the ``shard-behind`` family, alone): the same, but its replica is paused, and its link dropped by the master
  (``CLIENT KILL TYPE replica``), ``BEHIND_S`` before the kill, and resumed just after it, so it is promoted without the master's last writes: with ack replicas 0
  those were acknowledged and are lost (§4's admitted loss); with 1, their WAIT timed out and
  they were answered OutcomeUnknown (503), never acknowledged.
- ``kill-replica``: kill -9 a replica; with ack replicas 1 its master's writes answer
  OutcomeUnknown (503) until it is back.
- ``pause-master`` / ``pause-replica``: SIGSTOP, SIGCONT at the stop. A master paused past the
  node timeout is failed over too, and learns at its resume that it is a replica.
- ``failover``: a planned ``CLUSTER FAILOVER`` on a replica; the replica catches up first, so
  nothing acknowledged is lost. Done at the start; the stop has nothing to undo.
- ``cut-master`` (the ``shard-cut`` family, alone): every API node's links to one master blackholed
  both ways (their proxies), the rest of the cluster untouched: the master serves on, its own
  cluster sees it well (the cluster bus is not proxied) and fails nothing over, while no client
  reaches its partitions: their writes answer 503 or 504, reads 503, and replication of the whole
  region stalls until the heal. (A cut between a master and its replica needs the bus cut too:
  netns, which refuses clusters.)

The stop ends once the node answers and the cluster serves again (every live node sees all 16384
slots on live masters). The history records the node, the role it had, its master (for a
replica), and at the stop the role it came back with.
"""

from __future__ import annotations

import random
import time
from typing import Any

from deploy.launcher import wait_until

from .cluster import Cluster
from .proxy import BLACKHOLE, PASS_RULE, Rule

# How long a killed master's stop waits for its replica to be promoted: node timeout (2 s), the
# other masters' FAIL vote, and the replica's election delay (0.5-1 s and 1 s a rank) take 3-4 s
# quiet; 20 s leaves room for a busy machine. Not promoted by then: it restarts as the master.
PROMOTION_WAIT_S = 20.0
KINDS = ("kill-master", "kill-replica", "pause-master", "pause-replica", "failover")  # the `shard` family's
BEHIND = ("kill-master-behind",)  # the `shard-behind` family's: a failover that loses what the replica lacked
CUT = ("cut-master",)  # the `shard-cut` family's: one master out of every client's reach
# kill-master-behind: how long the replica is held (SIGSTOP) before its master is killed, so that the
# master's writes of that time are on no replica when it dies. On loopback a replica is otherwise
# under a millisecond behind, and a plain kill-master almost never catches a write in between.
BEHIND_S = 1.5


class ShardFault:
    """One fault on one node of a clustered region; `health_timeout_s` bounds a stop (nemesis.py
    builds it with its HEALTH_TIMEOUT_S, as for the kill and pause families)."""

    def __init__(self, cluster: Cluster, health_timeout_s: float, name: str = "shard",
                 kinds: tuple[str, ...] = KINDS) -> None:
        self.name = name
        self.kinds = kinds
        self.cluster = cluster
        self.health_timeout_s = health_timeout_s
        self.region: str | None = None
        self.node: str | None = None
        self.undo: str | None = None  # the node's method that ends the fault: "start" or "resume"
        self.heirs: list[str] = []  # a killed master's replicas: one is promoted before it restarts
        self.cut: list[tuple[str, str]] = []  # cut-master: the (src, dst) links blackholed

    def start(self, rng: random.Random) -> dict[str, Any]:
        regions = self.cluster.clustered_regions()
        if not regions:
            raise RuntimeError("shard: this run has no clustered region (--ap-shards N or --ap-replicas R)")
        region = rng.choice(regions)
        rc = self.cluster.deployment.clusters[region]
        masters = sorted(rc.current_masters(), key=lambda n: n.name)
        master = rng.choice(masters)
        replicas = sorted(rc.replicas_of(master), key=lambda n: n.name)
        kinds = self.kinds if replicas else ("kill-master", "pause-master") if self.kinds == KINDS else ("kill-master",)
        kind = rng.choice(kinds)
        node = master if "-master" in kind else rng.choice(replicas)
        desc: dict[str, Any] = {"kind": kind, "region": region, "node": node.name,
                                "role": "master" if node is master else "replica"}
        if node is not master:
            desc["master"] = master.name
        else:
            desc["replicas"] = [r.name for r in replicas]
        self.region, self.node = region, node.name
        if kind == "failover":
            rc.failover(node, timeout=self.health_timeout_s)
            self.undo = None
        elif kind == "cut-master":
            apis = [f"api-{r}" for r in self.cluster.regions]
            self.cut = [pair for api in apis for pair in ((api, node.name), (node.name, api))]
            self.cluster.net.set(self.cut, Rule(BLACKHOLE))
            desc["cut_from"] = apis
            self.undo = None
        elif kind == "kill-master-behind":
            held = replicas[0]  # the one that will be promoted (one replica a master; with more, any may be)
            held.pause()
            # A stopped process's kernel still receives: what the master sends lands in the replica's
            # socket buffer and is read at the resume. Dropping the link makes the master keep it.
            with node.admin() as r:
                r.execute_command("CLIENT", "KILL", "TYPE", "replica")
            time.sleep(BEHIND_S)
            node.kill()
            held.resume()
            desc["held"] = held.name
            self.undo = "start"
            self.heirs = [r.name for r in replicas] if len(masters) >= 3 else []
        elif kind.startswith("kill"):
            node.kill()
            self.undo = "start"
            # Promotion needs a majority of masters to agree the master failed: none with 2 masters.
            self.heirs = [r.name for r in replicas] if node is master and len(masters) >= 3 else []
        else:
            node.pause()
            self.undo = "resume"
        return desc

    def stop(self) -> dict[str, Any]:
        region, name, undo, heirs = self.region, self.node, self.undo, self.heirs
        self.region = self.node = self.undo = None
        self.heirs = []
        if self.cut:
            self.cluster.net.set(self.cut, PASS_RULE)
            self.cut = []
        if region is None or name is None:
            return {}
        rc = self.cluster.deployment.clusters[region]
        node = next(n for n in rc.nodes if n.name == name)
        deadline = time.monotonic() + self.health_timeout_s
        out: dict[str, Any] = {"region": region, "node": name}
        if heirs:  # the failover this fault is for, before the old master comes back as a replica
            promoted = [n for n in rc.nodes if n.name in heirs]
            wait_until(lambda: any(n.role() == "master" for n in promoted), PROMOTION_WAIT_S, 0.2)
            out["promoted"] = next((n.name for n in promoted if n.role() == "master"), None)
        if undo is not None:
            getattr(node, undo)()
            node.wait_healthy(max(1.0, deadline - time.monotonic()))
        rc.wait_serving(max(1.0, deadline - time.monotonic()))
        return {**out, "role_now": "master" if node.role() == "master" else "replica"}

    def heal(self) -> None:
        """Every node of every cluster running and unpaused, and each cluster serving again."""
        try:
            self.stop()
        finally:
            for rc in self.cluster.deployment.clusters.values():
                for node in rc.nodes:
                    if node.paused:
                        node.resume()
                    if not node.running:
                        node.start()
                rc.wait_serving(self.health_timeout_s)


__all__ = ["BEHIND", "CUT", "KINDS", "ShardFault"]
