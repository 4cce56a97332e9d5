"""Micro-batching of concurrent predict queries (asyncio), on one model thread.

Queries are validated in the caller's task (bad input fails that caller
alone) and queued. A single worker takes the first query plus whatever is
already queued (up to `max_batch_size`) and runs them at once as one forward
pass: a lone query never waits for company (Triton's dynamic batcher with no
queue delay does the same). Queries that arrive while a batch runs queue up
and form the next batch, so batches grow with load by themselves.
`max_wait_ms` > 0 restores a wait for company after the first query; it only
pays when queries arrive spread out and a forward pass is much cheaper per
query in a batch than alone.

Every forward pass runs on the batcher's one thread, so two never run at
once; `call` runs other model work (plan, surprise) on that same thread,
between batches. Answers equal the one-by-one answers (padding is masked;
see WorldModel.predict_prepared). With `memo_size` > 0, a query whose inputs equal those of a
recent one gets that answer without queueing (world_model/memo.py).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .config import Physics
from .errors import BatcherClosed, Overloaded
from .inference import Prediction, PreparedPredict, WorldModel
from .memo import PredictionMemo, memo_key

T = TypeVar("T")
_Item = tuple[PreparedPredict, "asyncio.Future[Prediction]"]


@dataclass
class BatcherStats:
    queries: int = 0
    batches: int = 0
    largest_batch: int = 0
    sizes: dict[int, int] = field(default_factory=dict)
    calls: int = 0  # other model work run on the model thread (plan, surprise)
    inference_s: float = 0.0  # time in batched forward passes (predict), summed

    @property
    def mean_batch(self) -> float:
        return self.queries / self.batches if self.batches else 0.0


def set_torch_threads(n: int) -> int:
    """Use `n` intra-op threads for torch in this process (n <= 0: one per CPU); returns the count in use.

    Why: torch defaults to one OpenMP thread per core for every thread that runs model work, so the
    batcher's thread and a plan's thread together keep twice as many threads busy as there are cores
    (measured on 2 cores: predict p50 tripled after one plan, and stayed so). The inter-op pool is
    sized too, but torch allows that only once and before any parallel work: later calls leave it.
    """
    import os

    import torch

    if n <= 0:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:
        pass  # already set, or parallel work already started: the intra-op count is what matters here
    return torch.get_num_threads()


class MicroBatcher:
    def __init__(self, model: WorldModel, max_batch_size: int = 32, max_wait_ms: float = 0.0,
                 max_queue: int = 4096, memo_size: int = 0):
        if max_batch_size < 1 or max_wait_ms < 0:
            raise ValueError("max_batch_size >= 1 and max_wait_ms >= 0")
        self.model = model
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.stats = BatcherStats()
        self.memo = PredictionMemo(memo_size)
        self._queue: asyncio.Queue[_Item] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        # One thread: batches run one after another, never two forward passes at once.
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="wm-batch")

    async def __aenter__(self) -> "MicroBatcher":
        self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def start(self) -> None:
        if self._closed:
            raise BatcherClosed("batcher is closed")
        if self._worker is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="wm-microbatcher")

    async def close(self) -> None:
        """Stop taking queries; queries already queued still get answers."""
        self._closed = True
        if self._worker is not None and self._queue is not None:
            await self._queue.join()
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        self._pool.shutdown(wait=True)

    def depth(self) -> int:
        """Queries waiting for a batch (0 before start)."""
        return self._queue.qsize() if self._queue is not None else 0

    async def predict(self, states: Any, physics: Physics | dict[str, Any], horizon: int,
                      actions: Any = None) -> Prediction:
        """Same contract as WorldModel.predict, batched with concurrent callers."""
        if self._closed:
            raise BatcherClosed("batcher is closed")
        key = memo_key(states, physics, horizon, actions) if self.memo.size else None
        known = self.memo.get(key)
        if known is not None:
            return known
        req = self.model.prepare_predict(states, physics, horizon, actions)  # raises InvalidInput here
        self.start()
        assert self._queue is not None
        if self._queue.qsize() >= self.max_queue:
            raise Overloaded(f"more than {self.max_queue} queries waiting")
        fut: asyncio.Future[Prediction] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((req, fut))
        answer = await fut
        self.memo.put(key, answer)
        return answer

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn(*args) on the model thread, between batches (plan, surprise): model work never runs
        two at once, so it never oversubscribes the cores torch's threads were sized for."""
        if self._closed:
            raise BatcherClosed("batcher is closed")
        self.stats.calls += 1
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def _next_batch(self, q: asyncio.Queue[_Item]) -> list[_Item]:
        """The first query (waiting for it), then those already queued; with max_wait, later ones too."""
        batch = [await q.get()]
        while len(batch) < self.max_batch_size and not q.empty():
            batch.append(q.get_nowait())
        if self.max_wait <= 0:
            return batch
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while len(batch) < self.max_batch_size:
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(q.get(), left))
            except asyncio.TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        assert self._queue is not None
        q = self._queue
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch(q)
            live = [(r, f) for r, f in batch if not f.done()]  # caller may have given up
            try:
                if live:
                    t0 = time.perf_counter()
                    answers = await loop.run_in_executor(self._pool, self.model.predict_prepared,
                                                         [r for r, _ in live])
                    self.stats.inference_s += time.perf_counter() - t0
                    for (_, f), a in zip(live, answers):
                        if not f.done():
                            f.set_result(a)
                    self._record(len(live))
            except Exception as e:  # a failed forward pass fails its batch, not the worker
                for _, f in live:
                    if not f.done():
                        f.set_exception(e)
            finally:
                for _ in batch:
                    q.task_done()

    def _record(self, n: int) -> None:
        s = self.stats
        s.queries += n
        s.batches += 1
        s.largest_batch = max(s.largest_batch, n)
        s.sizes[n] = s.sizes.get(n, 0) + 1
