"""Micro-batching of concurrent requests on the CPU: one model forward for every request that is waiting.

The server's event loop parses and validates requests; each one becomes a :class:`Job` handed to a
:class:`MicroBatcher`. While the inference thread is busy with a batch, new jobs queue up; when it is
free it takes all of them (up to ``max_batch``) in one forward. Under no load a request goes straight
through (no fixed delay); ``max_wait_ms`` > 0 adds a short collection window when more throughput
per forward is worth a little latency.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import torch


@dataclass
class Job:
    kind: str
    """``recommend`` (top ``k`` after ``history``) or ``score`` (scores of ``candidates``)."""
    history: list[int]
    k: int = 10
    exclude_seen: bool = True
    candidates: list[int] = field(default_factory=list)


@torch.inference_mode()
def run_jobs(rec, jobs: list[Job]) -> list[list]:
    """One forward over all histories; per job, its top items (index, score) or its candidates' scores."""
    s = rec.scores([j.history for j in jobs])
    out: list[list] = [[] for _ in jobs]
    rows = [i for i, j in enumerate(jobs) if j.kind == "recommend"]
    if rows:
        sub = s[rows] if len(rows) < len(jobs) else s
        sub[:, 0] = float("-inf")
        seen = [(r, jobs[i].history) for r, i in enumerate(rows) if jobs[i].exclude_seen and jobs[i].history]
        if seen:  # one indexed write for the whole batch
            r_idx = torch.tensor([r for r, h in seen for _ in h], dtype=torch.long)
            c_idx = torch.tensor([x for _, h in seen for x in h], dtype=torch.long)
            sub[r_idx, c_idx] = float("-inf")
        kmax = min(max(jobs[i].k for i in rows), rec.n_items)
        top = torch.topk(sub, kmax, dim=1)
        values, indices = top.values.tolist(), top.indices.tolist()
        ninf = float("-inf")
        for r, i in enumerate(rows):
            k = jobs[i].k
            out[i] = [(j, v) for v, j in zip(values[r][:k], indices[r][:k]) if v != ninf]
    for i, j in enumerate(jobs):
        if j.kind == "score":
            out[i] = s[i, torch.as_tensor(j.candidates, dtype=torch.long)].tolist()
    return out


class MicroBatcher:
    """Collects jobs from coroutines and runs ``fn(jobs) -> results`` on ``executor``, one batch at a time.

    ``executor=None`` runs each batch on the event loop itself: on a machine with one or two cores a thread
    hand-off per batch costs more (a scheduler wake-up, often milliseconds under load) than it saves; the
    requests that arrive meanwhile wait in the socket buffers and make up the next batch.
    """

    def __init__(self, fn: Callable[[list], list], executor: Executor | None, max_batch: int = 64, max_wait_ms: float = 0.0,
                 on_batch: Callable[[int, float], None] | None = None):
        self.fn, self.executor = fn, executor
        self.max_batch, self.max_wait = max(1, max_batch), max(0.0, max_wait_ms) / 1000.0
        self.on_batch = on_batch
        self._pending: list[tuple[object, asyncio.Future]] = []
        self._running = False

    async def submit(self, job):
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._pending.append((job, fut))
        if not self._running:
            self._running = True
            loop.create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                if self.max_wait and len(self._pending) < self.max_batch:
                    deadline = loop.time() + self.max_wait
                    while len(self._pending) < self.max_batch and loop.time() < deadline:
                        await asyncio.sleep(0)  # let the loop parse more requests
                        if len(self._pending) < self.max_batch:
                            await asyncio.sleep(min(0.0002, max(0.0, deadline - loop.time())))
                batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
                live = [(j, f) for j, f in batch if not f.done()]  # a client that went away cancels its future
                if not live:
                    continue
                t0 = time.perf_counter()
                try:
                    if self.executor is None:  # on the loop: no thread hand-off, requests wait in the socket
                        results = self.fn([j for j, _ in live])
                    else:
                        results = await loop.run_in_executor(self.executor, self.fn, [j for j, _ in live])
                except Exception as e:  # noqa: BLE001 - handed to every waiting request
                    for _, f in live:
                        if not f.done():
                            f.set_exception(e)
                    continue
                if self.on_batch:
                    self.on_batch(len(live), time.perf_counter() - t0)
                for (_, f), r in zip(live, results):
                    if not f.done():
                        f.set_result(r)
        finally:
            self._running = False
