"""Micro-batching of concurrent predict queries (asyncio).

Queries are validated in the caller's task (bad input fails that caller
alone), queued, and a single worker takes up to `max_batch_size` of them,
waiting at most `max_wait_ms` after the first for company. The batch runs as
one forward pass in a worker thread, so the event loop keeps accepting
queries meanwhile; those form the next batch. Answers equal the one-by-one
answers (padding is masked; see WorldModel.predict_prepared).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
from dataclasses import dataclass, field
from typing import Any

from .config import Physics
from .errors import BatcherClosed, Overloaded
from .inference import Prediction, PreparedPredict, WorldModel


@dataclass
class BatcherStats:
    queries: int = 0
    batches: int = 0
    largest_batch: int = 0
    sizes: dict[int, int] = field(default_factory=dict)

    @property
    def mean_batch(self) -> float:
        return self.queries / self.batches if self.batches else 0.0


class MicroBatcher:
    def __init__(self, model: WorldModel, max_batch_size: int = 32, max_wait_ms: float = 2.0,
                 max_queue: int = 4096):
        if max_batch_size < 1 or max_wait_ms < 0:
            raise ValueError("max_batch_size >= 1 and max_wait_ms >= 0")
        self.model = model
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.stats = BatcherStats()
        self._queue: asyncio.Queue[tuple[PreparedPredict, asyncio.Future[Prediction]]] | None = None
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

    async def predict(self, states: Any, physics: Physics | dict[str, Any], horizon: int,
                      actions: Any = None) -> Prediction:
        """Same contract as WorldModel.predict, batched with concurrent callers."""
        if self._closed:
            raise BatcherClosed("batcher is closed")
        req = self.model.prepare_predict(states, physics, horizon, actions)  # raises InvalidInput here
        self.start()
        assert self._queue is not None
        if self._queue.qsize() >= self.max_queue:
            raise Overloaded(f"more than {self.max_queue} queries waiting")
        fut: asyncio.Future[Prediction] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((req, fut))
        return await fut

    async def _run(self) -> None:
        assert self._queue is not None
        q = self._queue
        loop = asyncio.get_running_loop()
        while True:
            batch = [await q.get()]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch_size:
                try:
                    batch.append(q.get_nowait())  # already waiting: take without sleeping
                    continue
                except asyncio.QueueEmpty:
                    pass
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(q.get(), left))
                except asyncio.TimeoutError:
                    break
            live = [(r, f) for r, f in batch if not f.done()]  # caller may have given up
            try:
                if live:
                    answers = await loop.run_in_executor(self._pool, self.model.predict_prepared,
                                                         [r for r, _ in live])
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
