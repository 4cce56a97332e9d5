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

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from consistency.ap_store import ReplicaStore
from consistency.replication import Replicator

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
        self._follower: _Follower | None = None

    def follow(self, home: ReplicaStore, replicator: Replicator, model_status: Callable[[], dict[str, Any]]) -> None:
        """Report replication per peer and the serving model, read at scrape time."""
        self._follower = _Follower(home, replicator, model_status)
        self.registry.register(self._follower)

    async def refresh(self) -> None:
        """What a scrape needs from Redis, read before the text is made (collectors are sync)."""
        if self._follower is not None:
            await self._follower.count_behind()


class _Follower(Collector):
    def __init__(self, home: ReplicaStore, replicator: Replicator, model_status: Callable[[], dict[str, Any]]) -> None:
        self.home = home
        self.replicator = replicator
        self.model_status = model_status
        self.behind_entries: dict[str, int] = {}

    async def count_behind(self) -> None:
        counts: dict[str, int] = {}
        for peer, shipper in self.replicator.shippers.items():
            st = shipper.status
            if not st.behind and st.reachable:
                counts[peer] = 0  # the shipper's last look found the peer caught up: no read needed
                continue
            try:
                counts[peer] = len(await self.home.read_after(st.acked, BEHIND_ENTRIES_CAP))
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
        model = self.model_status()
        info = InfoMetricFamily("worldstate_model", "The model this node serves (state none: no model loaded)")
        info.add_metric((), {"state": str(model.get("state")), "hash": str(model.get("hash", "")),
                             "version": str(model.get("version", ""))})
        yield info
        yield from _predictor(model)

    def describe(self) -> Iterator[Any]:
        return iter(())  # names are not known before a scrape; registering must not run collect()


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
