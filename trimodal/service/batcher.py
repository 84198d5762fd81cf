"""Dynamic batching for a codec replica: concurrent requests → one codec call, one call at a time.

Why not `ray.serve.batch`: in Ray 2.60 its loop forms the next batch as soon as the previous one
is *handed off*, and only then waits for its `max_concurrent_batches` permit, so while one slow
codec call runs, later requests are already cut into many small batches queued behind it. With
image passes of a fixed size (padded so that codes do not depend on the batch) every small batch
costs a whole pass: measured on 2 cores with the small VQ codec at 256 px, 32 clients got batches
of 1-3 images and 3.5 requests/s, a third of the in-process rate. Here a batch is formed only
when the codec is free: it takes everything queued (up to `max_batch_size`) at once, and waits up
to `wait_s` for more only when fewer are queued, so under load every call is full and at low
load a request waits at most `wait_s`.

Requests whose caller went away (cancelled futures) are dropped before the call; an exception
from the call fails exactly the requests of that batch.

The ingress uses the same class to send text requests to the text deployment in batches
(`max_concurrent` calls in flight, each one Serve call carrying a list): a call through Serve
costs ~1 ms of CPU on both sides whatever it carries, so one call per request was half of a
text request's cost (service/app.py, BATCHED_SEND; docs/service.md). `max_queued` bounds what waits
for a free call (`QueueFull` beyond it: the service answers 503 at once, not unbounded latency).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from typing import Any


class QueueFull(Exception):
    """More than `max_queued` items wait for a call."""


class Batcher:
    def __init__(
        self,
        fn: Callable[[list], Awaitable[list]],
        max_batch_size: int,
        wait_s: float,
        max_concurrent: int = 1,
        max_queued: int | None = None,
    ):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be >= 1")
        self.fn, self.max_batch_size, self.wait_s = fn, int(max_batch_size), max(0.0, float(wait_s))
        self.max_concurrent, self.max_queued = int(max_concurrent), max_queued
        self._queue: collections.deque = collections.deque()
        self._arrived: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._task: asyncio.Task | None = None
        self._calls: set[asyncio.Task] = set()  # calls in flight (max_concurrent > 1)
        self.batches = 0  # calls made, and items they held: for tests and metrics
        self.items = 0

    async def submit(self, item: Any) -> Any:
        """Queue `item`; returns its result once its batch ran. Raises QueueFull when
        `max_queued` items already wait."""
        loop = asyncio.get_running_loop()
        if self._arrived is None:
            self._arrived = asyncio.Event()
            self._slots = asyncio.Semaphore(self.max_concurrent)
        if self.max_queued is not None and len(self._queue) >= self.max_queued:
            raise QueueFull(f"{len(self._queue)} requests already wait")
        fut = loop.create_future()
        self._queue.append((item, fut))
        self._arrived.set()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run())
        return await fut

    async def _fill(self) -> None:
        """Wait up to `wait_s` for the queue to hold a full batch."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        while len(self._queue) < self.max_batch_size:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                return

    async def _run(self) -> None:
        while True:
            while not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            await self._slots.acquire()  # a batch is formed only when a call can start
            try:
                if len(self._queue) < self.max_batch_size and self.wait_s > 0:
                    await self._fill()
                batch = []
                while self._queue and len(batch) < self.max_batch_size:
                    item, fut = self._queue.popleft()
                    if not fut.done():  # cancelled: the caller is gone
                        batch.append((item, fut))
            except BaseException:
                self._slots.release()
                raise
            if not batch:
                self._slots.release()
                continue
            self.batches += 1
            self.items += len(batch)
            if self.max_concurrent == 1:
                await self._call(batch)
            else:
                task = asyncio.get_running_loop().create_task(self._call(batch))
                self._calls.add(task)
                task.add_done_callback(self._calls.discard)

    async def _call(self, batch: list) -> None:
        try:
            results = await self.fn([item for item, _ in batch])
        except BaseException as e:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(e if isinstance(e, Exception) else RuntimeError(f"batch aborted: {e!r}"))
            if not isinstance(e, Exception) and self.max_concurrent == 1:
                raise
            return
        finally:
            self._slots.release()
        for (_, fut), r in zip(batch, results):
            if not fut.done():
                fut.set_result(r)
