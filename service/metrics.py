"""One node's Prometheus metrics: the registry and the metric objects, here so service
code counts without importing api (api/metrics.py times HTTP and serves the text).

Each node has its own `CollectorRegistry`, not prometheus_client's global one: tests
build several apps in one process, and a global registry would refuse the second.

Counters are bumped where the work is done; what other objects already know (each
peer's replication state, the serving model) is read when Prometheus scrapes, so the
hot path pays nothing for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from consistency.ap_store import ReplicaStore
from consistency.cp_store import CPStore
from consistency.hlc import HybridLogicalClock
from consistency.replication import Replicator

# A `_created` timestamp beside every counter and histogram doubles the series for what
# Prometheus itself infers from a reset; process-wide, as prometheus_client has it.
disable_created_metrics()

# An entries gauge counts the stream past a peer's ack by reading it; a peer further behind
# than this reads as this many (one shipper batch: a scrape never reads more per peer).
BEHIND_ENTRIES_CAP = 1000
# Requests are mostly milliseconds; predict and plan batches run to seconds.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http_duration = Histogram(
            "worldstate_http_request_duration_seconds",
            "HTTP requests by method, route template and status: time to the last body byte "
            "(to the response start for event streams)",
            ("method", "route", "status"), buckets=DURATION_BUCKETS, registry=self.registry)
        self.observations = Counter(
            "worldstate_observations_total",
            "Observations posted to this node: accepted, duplicate (event id seen), or refused "
            "(its batch was rejected: invalid, unknown world, quota, replica unavailable or full)",
            ("outcome",), registry=self.registry)
        for outcome in ("accepted", "duplicate", "refused"):
            self.observations.labels(outcome)  # each reads 0 from the start, so a rate has a base
        self.cp_requests = Counter(
            "worldstate_cp_requests_total",
            "Calls to the CP tier (etcd) by operation (get, list, put, create, cas, delete) and outcome "
            "(ok, not-found, conflict, unavailable, outcome-unknown, storage-full, compacted, refused, "
            "cancelled, error)", ("op", "outcome"), registry=self.registry)
        self.cp_duration = Histogram(
            "worldstate_cp_request_duration_seconds", "CP tier calls by operation, retries within the bound included",
            ("op",), buckets=DURATION_BUCKETS, registry=self.registry)
        self.quota_refusals = Counter(
            "worldstate_quota_refusals_total",
            "Requests refused with 429 because a key was over its quota, by key id and quota",
            ("key", "kind"), registry=self.registry)
        self._follower: _Follower | None = None

    def count_cp(self, store: CPStore) -> None:
        """Count every get, list, put and delete `store` makes."""
        def observe(op: str, outcome: str, seconds: float) -> None:
            self.cp_requests.labels(op, outcome).inc()
            self.cp_duration.labels(op).observe(seconds)
        store.on_call = observe

    def follow(self, home: ReplicaStore, replicator: Replicator, model_status: Callable[[], dict[str, Any]],
               hlc: HybridLogicalClock, now_ms: Callable[[], int]) -> None:
        """Report replication per peer, the home replica's logs, the HLC and the serving model,
        read at scrape time."""
        self._follower = _Follower(home, replicator, model_status)
        self.registry.register(self._follower)
        self.registry.register(HlcAhead(hlc, now_ms))

    async def refresh(self) -> None:
        """What a scrape needs from Redis, read before the text is made (collectors are sync)."""
        if self._follower is not None:
            await self._follower.read()


class _Follower(Collector):
    def __init__(self, home: ReplicaStore, replicator: Replicator, model_status: Callable[[], dict[str, Any]]) -> None:
        self.home = home
        self.replicator = replicator
        self.model_status = model_status
        self.behind_entries: dict[str, int] = {}
        self.lengths: tuple[int, int, int, int] | None = None

    async def read(self) -> None:
        await self.count_behind()
        try:
            self.lengths = await self.home.lengths()
        except Exception:  # noqa: BLE001 - as below: no sample while the home replica is down
            self.lengths = None

    async def count_behind(self) -> None:
        counts: dict[str, int] = {}
        for peer, shipper in self.replicator.shippers.items():
            st = shipper.status
            if not st.behind and st.reachable:
                counts[peer] = 0  # the shipper's last look found the peer caught up: no read needed
                continue
            try:
                unread = await self.home.read_partitions(st.offsets, BEHIND_ENTRIES_CAP)
                counts[peer] = min(BEHIND_ENTRIES_CAP, sum(len(listed) for listed in unread.values()))
            except Exception:  # noqa: BLE001 - a scrape must answer while the home replica is down
                continue  # no sample: unknown, rather than a made-up number
        self.behind_entries = counts

    def collect(self) -> Iterator[Any]:
        lag = GaugeMetricFamily("worldstate_replication_lag_seconds",
                                "Age of this replica's newest delta minus that of the newest one the peer applied",
                                labels=("peer",))
        behind = GaugeMetricFamily("worldstate_replication_behind_entries",
                                   f"Deltas of this replica the peer has not acknowledged (at most "
                                   f"{BEHIND_ENTRIES_CAP}: a peer further behind reads as that)", labels=("peer",))
        for peer, status in sorted(self.replicator.status().items()):
            lag.add_metric((peer,), float(status["lag_ms"]) / 1000)  # type: ignore[arg-type]
            if peer in self.behind_entries:
                behind.add_metric((peer,), self.behind_entries[peer])
        yield lag
        yield behind
        yield from self._anti_entropy()
        if self.lengths is not None:
            yield GaugeMetricFamily("worldstate_replica_stream_entries",
                                    "Deltas held in this replica's streams (T:stream, all partitions), trimmed once "
                                    "every peer has them", value=self.lengths[0])
            yield GaugeMetricFamily("worldstate_changes_log_entries",
                                    "Entries held in this replica's changes logs (T:changes, all partitions), which "
                                    "entity subscriptions read", value=self.lengths[1])
            yield GaugeMetricFamily("worldstate_replica_stream_partition_max_entries",
                                    "Deltas held in this replica's largest partition stream: a hot partition shows "
                                    "here", value=self.lengths[2])
            yield GaugeMetricFamily("worldstate_changes_log_partition_max_entries",
                                    "Entries held in this replica's largest partition changes log",
                                    value=self.lengths[3])
        model = self.model_status()
        info = InfoMetricFamily("worldstate_model", "The model this node serves (state none: no model loaded)")
        info.add_metric((), {"state": str(model.get("state")), "hash": str(model.get("hash", "")),
                             "version": str(model.get("version", ""))})
        yield info
        yield from _predictor(model)

    def _anti_entropy(self) -> Iterator[Any]:
        runs = CounterMetricFamily("worldstate_anti_entropy_runs",
                                   "Anti-entropy passes to a peer (its deltas had been trimmed away)", labels=("peer",))
        buckets = CounterMetricFamily("worldstate_anti_entropy_buckets_shipped",
                                      "Buckets anti-entropy found different at a peer and shipped whole",
                                      labels=("peer",))
        for peer, shipper in sorted(self.replicator.shippers.items()):
            runs.add_metric((peer,), shipper.status.anti_entropy_runs)
            buckets.add_metric((peer,), shipper.status.buckets_shipped)
        yield runs
        yield buckets

    def describe(self) -> Iterator[Any]:
        return iter(())  # names are not known before a scrape; registering must not run collect()


class HlcAhead(Collector):
    """How far the node's HLC runs ahead of its wall clock: the drift of a peer's clock that ran
    ahead, which the HLC follows rather than refuses (consistency/hlc.py)."""

    def __init__(self, hlc: HybridLogicalClock, now_ms: Callable[[], int]) -> None:
        self.hlc = hlc
        self.now_ms = now_ms

    def collect(self) -> Iterator[Any]:
        yield GaugeMetricFamily("worldstate_hlc_ahead_seconds",
                                "How far this node's hybrid logical clock runs ahead of its wall clock: a peer's "
                                "clock running ahead, followed (0 when the wall clock leads)",
                                value=max(0, self.hlc.last.wall_ms - self.now_ms()) / 1000)


BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


def _predictor(model: dict[str, Any]) -> Iterator[Any]:
    """The serving model's micro-batcher. Its counts start again at a hot swap (a new batcher),
    which Prometheus reads as a counter reset."""
    if model.get("state") != "ok":
        return
    yield GaugeMetricFamily("worldstate_predict_queue_depth", "Predict queries waiting for a batch",
                            value=model["queue_depth"])
    sizes: dict[int, int] = model["batch_sizes"]
    buckets = [(str(b), sum(c for n, c in sizes.items() if n <= b)) for b in BATCH_BUCKETS]
    buckets.append(("+Inf", sum(sizes.values())))
    yield HistogramMetricFamily("worldstate_predict_batch_size", "Queries answered by one forward pass",
                                buckets=buckets, sum_value=sum(n * c for n, c in sizes.items()))
    yield CounterMetricFamily("worldstate_predict_inference_seconds", "Time in batched predict forward passes",
                              value=model["inference_s"])
    yield CounterMetricFamily("worldstate_predict_memo_hits", "Predict queries answered from the memo, no forward pass",
                              value=model["memo"]["hits"])
