"""Model work besides predict batches (plan, surprise): one thread, a bounded queue, cancellable.

Predict batches run on the batcher's thread; everything else a query asks of the model runs
here, one job at a time, so two cores never hold more than two model jobs. A job beyond
`max_waiting` is refused at once (Overloaded, 503) with a Retry-After drawn around the time
the queue needs to drain, jittered so refused clients do not all come back together. A job
whose caller gave up is skipped if it has not started, and a running plan stops at its next
CEM iteration.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from world_model.errors import Cancelled, Overloaded

T = TypeVar("T")


@dataclass
class WorkStats:
    done: int = 0
    refused: int = 0
    cancelled: int = 0
    mean_s: float = 0.1  # running mean of a job's time, for Retry-After


class ModelWork:
    def __init__(self, max_waiting: int = 8) -> None:
        if max_waiting < 1:
            raise ValueError("max_waiting >= 1")
        self.max_waiting = max_waiting
        self.stats = WorkStats()
        self._admitted = 0  # queued or running
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="wm-work")

    def status(self) -> dict[str, Any]:
        s = self.stats
        return {"admitted": self._admitted, "max_waiting": self.max_waiting, "done": s.done,
                "refused": s.refused, "cancelled": s.cancelled}

    async def run(self, fn: Callable[..., T], *args: Any, cancel: threading.Event | None = None,
                  cancellable: bool = False) -> T:
        """fn(*args) on the model thread; with `cancellable`, fn also gets `cancelled=` (a callable
        that turns true once `cancel` is set) to stop at its own checkpoints."""
        if self._admitted >= self.max_waiting:
            self.stats.refused += 1
            drain = self._admitted * self.stats.mean_s
            raise Overloaded(f"{self._admitted} model jobs admitted, at most {self.max_waiting}",
                             retry_after_s=max(1.0, drain * random.uniform(0.5, 1.5)))
        event = cancel or threading.Event()

        def job() -> T:
            if event.is_set():
                raise Cancelled("the caller gave up before the job started")
            t0 = time.perf_counter()
            out = fn(*args, cancelled=event.is_set) if cancellable else fn(*args)
            self.stats.mean_s = 0.8 * self.stats.mean_s + 0.2 * (time.perf_counter() - t0)
            return out

        loop = asyncio.get_running_loop()
        self._admitted += 1
        fut = self._pool.submit(job)
        # Counted until the thread is done with it, not until the caller stops waiting.
        fut.add_done_callback(lambda _: loop.call_soon_threadsafe(self._finished))
        try:
            result = await asyncio.wrap_future(fut)
        except Cancelled:
            self.stats.cancelled += 1
            raise
        self.stats.done += 1
        return result

    def _finished(self) -> None:
        self._admitted -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
