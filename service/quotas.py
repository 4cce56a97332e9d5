"""Per-key rate quotas: observations and model queries per second, counted in this
region's Redis so every node of the region charges the same bucket.

A key's quotas are part of its record (`service.keys`); a key without one, or a
node running without auth, is not limited. The burst is one second's worth: a
batch larger than that is refused whatever the wait, with a detail saying so.
"""

from __future__ import annotations

from consistency.ap_store import ReplicaStore
from service.errors import QuotaExceeded
from service.keys import acting
from service.metrics import Metrics

__all__ = ["Quotas"]


class Quotas:
    def __init__(self, ap: ReplicaStore, metrics: Metrics | None = None) -> None:
        self.ap = ap
        self.metrics = metrics

    async def charge(self, kind: str, cost: int = 1) -> None:
        """Charge the acting key's `kind` quota `cost`, or raise QuotaExceeded (nothing done)."""
        key = acting.get()
        rate = key.quotas.get(kind) if key is not None else None
        if key is None or rate is None:
            return
        burst = max(rate, 1.0)
        if cost > burst:
            self._refused(key.id, kind)
            raise QuotaExceeded(f"{cost} at once is more than key {key.id}'s {kind} quota allows in one "
                                f"second ({rate:g}); send smaller batches", kind, rate, None)
        wait_s = await self.ap.charge(f"{key.id}:{kind}", rate, burst, cost)
        if wait_s > 0:
            self._refused(key.id, kind)
            raise QuotaExceeded(f"key {key.id} is over its {kind} quota of {rate:g}", kind, rate, wait_s)

    def _refused(self, key_id: str, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.quota_refusals.labels(key_id, kind).inc()
