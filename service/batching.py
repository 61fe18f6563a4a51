"""Server micro-batching: concurrent scoring requests share one model call.

While the model is busy, arriving requests wait at most ``max_wait`` for company (never past
their own deadline); an idle model starts at once. Up to two model calls run in worker threads
while the event loop keeps serving. A request whose deadline passes answers 503 with
``Retry-After`` instead of waiting on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import anyio.from_thread

from model.scorer import Prediction, Scorer

logger = logging.getLogger(__name__)


class ScoringTimeout(Exception):
    """The model did not answer within the request's deadline."""


@dataclass
class _Job:
    texts: Sequence[str]
    future: asyncio.Future[list[Prediction]]
    deadline: float


class MicroBatcher:
    def __init__(
        self,
        scorer: Scorer,
        max_wait_s: float,
        max_batch: int,
        deadline_s: float,
        calls_in_flight: int = 2,
        on_call: Callable[[int, float], None] | None = None,
    ):
        """``on_call(rows, seconds)`` is told of every model call (metrics)."""
        self.scorer = scorer
        self.on_call = on_call
        self.max_wait_s, self.max_batch, self.deadline_s = max_wait_s, max_batch, deadline_s
        self._jobs: deque[_Job] = deque()
        self._arrived = asyncio.Event()
        # Two calls in flight: the next batch is gathered and started while the event loop is
        # still answering the previous one, so the cores never wait on HTTP work.
        self._executor = ThreadPoolExecutor(calls_in_flight, thread_name_prefix="model")
        self._slots = asyncio.Semaphore(calls_in_flight)
        self._running: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self.calls = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._serve(), name="micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, *self._running, return_exceptions=True)
        for job in self._jobs:
            if not job.future.done():
                job.future.set_exception(ScoringTimeout("the server is shutting down"))
        self._executor.shutdown(wait=True)

    async def predict(self, texts: Sequence[str]) -> list[Prediction]:
        if not texts:
            return []
        loop = asyncio.get_running_loop()
        job = _Job(texts, loop.create_future(), time.monotonic() + self.deadline_s)
        self._jobs.append(job)
        self._arrived.set()
        # A timer, not ``asyncio.wait_for``: no extra task per request. A caller that gives up
        # (deadline or disconnect) leaves a done future, which ``_take`` skips.
        timer = loop.call_later(self.deadline_s, self._expire, job)
        try:
            return await job.future
        finally:
            timer.cancel()

    def _expire(self, job: _Job) -> None:
        if not job.future.done():
            job.future.set_exception(
                ScoringTimeout(f"the model did not answer within {self.deadline_s * 1000:.0f} ms")
            )

    def _take(self) -> list[_Job]:
        """The oldest jobs that fit one call; a job bigger than ``max_batch`` goes alone."""
        taken: list[_Job] = []
        size = 0
        now = time.monotonic()
        while self._jobs:
            job = self._jobs[0]
            if job.future.done() or job.deadline <= now:  # its caller has given up
                self._jobs.popleft()
                continue
            if taken and size + len(job.texts) > self.max_batch:
                break
            taken.append(self._jobs.popleft())
            size += len(job.texts)
        return taken

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._jobs:
                self._arrived.clear()
                await self._arrived.wait()
            # While the model is busy, wait for company (never beyond the earliest deadline or a
            # full batch); an idle model starts at once, so a lone request pays no wait.
            wait = self.max_wait_s if self._running else 0.0
            window_end = min(time.monotonic() + wait, self._jobs[0].deadline)
            while (
                sum(len(j.texts) for j in self._jobs) < self.max_batch
                and (remaining := window_end - time.monotonic()) > 0
            ):
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    break
            await self._slots.acquire()
            jobs = self._take()
            if not jobs:
                self._slots.release()
                continue
            task = loop.create_task(self._call(jobs))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _call(self, jobs: list[_Job]) -> None:
        texts = [text for job in jobs for text in job.texts]
        started = time.perf_counter()
        try:
            predictions = await asyncio.get_running_loop().run_in_executor(
                self._executor, self.scorer.predict, texts
            )
        except Exception as exc:  # handed to every waiting request, never swallowed
            logger.exception("model call failed for %d comments", len(texts))
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        finally:
            self._slots.release()
        self.calls += 1
        if self.on_call is not None:
            self.on_call(len(texts), time.perf_counter() - started)
        start = 0
        for job in jobs:
            if not job.future.done():
                job.future.set_result(predictions[start : start + len(job.texts)])
            start += len(job.texts)


class BlockingBatcher:
    """The micro-batcher for code running in a worker thread (ingest): its comments join the
    same model calls as ``/v1/score``'s instead of making small calls of their own."""

    def __init__(self, batcher: MicroBatcher):
        self.batcher = batcher
        self.name, self.version = batcher.scorer.name, batcher.scorer.version

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        if len(texts) > self.batcher.max_batch:  # a batch of its own, not held to the deadline
            return self.batcher.scorer.predict(texts)
        return anyio.from_thread.run(self.batcher.predict, texts)
