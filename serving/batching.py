"""Dynamic micro-batching: concurrent requests share one forward pass.

Requests wait at most ``max_queue_delay_ms`` for company, a batch holds at most
``max_batch_size`` rows, and the queue is bounded: when it is full a request is refused at once
(``Overloaded``, a 503 with Retry-After) instead of waiting behind an ever longer line. An idle
batcher dispatches a lone request immediately: the delay is only spent when other requests are
actually arriving. Each request gets exactly its own rows back; an exception in the forward pass
reaches every request of that batch. Each request names the outputs it needs; a batch
fetches the union of its requests' outputs (on a GPU, what is not fetched is never copied to
the host).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from serving.errors import Overloaded

log = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]
#: One forward pass: (inputs, the outputs wanted) -> those outputs by name.
RunFn = Callable[[Arrays, list[str]], Awaitable[Arrays]]


class BatchObserver(Protocol):
    """Receives what the batcher measures (Prometheus metrics and model statistics)."""

    def batch(self, rows: int, assemble_s: float, infer_s: float, split_s: float) -> None:
        """One forward pass of ``rows`` rows: assembling the batch, running it, splitting it."""

    def job(self, queue_s: float, infer_s: float) -> None:
        """One request waited ``queue_s`` for its batch, whose forward pass took ``infer_s``."""


class Observers:
    """Several observers as one."""

    def __init__(self, *observers: BatchObserver) -> None:
        """Tell each of ``observers`` everything."""
        self.observers = observers

    def batch(self, rows: int, assemble_s: float, infer_s: float, split_s: float) -> None:
        """Forward to every observer."""
        for o in self.observers:
            o.batch(rows, assemble_s, infer_s, split_s)

    def job(self, queue_s: float, infer_s: float) -> None:
        """Forward to every observer."""
        for o in self.observers:
            o.job(queue_s, infer_s)


@dataclass
class Timing:
    """Filled in for one request: its wait for a batch, and its forward pass(es)."""

    queue_s: float = 0.0  # the longest wait of its parts
    infer_s: float = 0.0  # the forward passes of its parts, added up


@dataclass
class _Job:
    inputs: Arrays
    rows: int
    outputs: tuple[str, ...]
    future: asyncio.Future[Arrays]
    timing: Timing | None = None
    enqueued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Merges concurrent ``submit`` calls into forward passes of ``run``."""

    def __init__(
        self,
        run: RunFn,
        max_batch_size: int = 8,
        max_queue_delay_ms: float = 2.0,
        max_queue_size: int = 64,
        observer: BatchObserver | None = None,
    ) -> None:
        """Batch calls to ``run`` (a backend's forward pass over a dict of input arrays)."""
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_queue_delay_ms < 0:
            raise ValueError(f"max_queue_delay_ms must be >= 0, got {max_queue_delay_ms}")
        if max_queue_size < 1:
            raise ValueError(f"max_queue_size must be >= 1, got {max_queue_size}")
        self.run = run
        self.max_batch_size = max_batch_size
        self.max_delay = max_queue_delay_ms / 1000.0
        self.max_queue_size = max_queue_size
        self.observer = observer
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=max_queue_size)
        self._carry: _Job | None = None
        self._worker: asyncio.Task[None] | None = None
        self._batch_seconds = 0.05  # running estimate, for Retry-After
        self._busy = False

    @property
    def queued(self) -> int:
        """Requests waiting (not yet in a forward pass)."""
        return self._queue.qsize() + (1 if self._carry else 0)

    def start(self) -> None:
        """Start the worker (on the running event loop)."""
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._loop(), name="batcher")

    async def stop(self) -> None:
        """Finish what is queued, then stop the worker."""
        while (self.queued or self._busy) and self._worker is not None and not self._worker.done():
            await asyncio.sleep(0.005)
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    async def submit(
        self, inputs: Arrays, outputs: Sequence[str], timing: Timing | None = None
    ) -> Arrays:
        """Run ``inputs`` (arrays sharing their first axis); its rows of each of ``outputs``.

        ``timing``, when given, gets the request's queue and forward-pass times.
        """
        self.start()
        rows = _rows(inputs)
        wanted = tuple(dict.fromkeys(outputs))
        if not wanted:
            raise ValueError("no output requested")
        if rows <= self.max_batch_size:
            return await self._submit_one(inputs, rows, wanted, timing)
        parts = [
            {k: v[i : i + self.max_batch_size] for k, v in inputs.items()}
            for i in range(0, rows, self.max_batch_size)
        ]
        if len(parts) > self.max_queue_size - self._queue.qsize():
            raise self._overloaded()
        results = await asyncio.gather(
            *(self._submit_one(p, _rows(p), wanted, timing) for p in parts)
        )
        return {k: np.concatenate([r[k] for r in results]) for k in wanted}

    async def _submit_one(
        self, inputs: Arrays, rows: int, outputs: tuple[str, ...], timing: Timing | None
    ) -> Arrays:
        job = _Job(inputs, rows, outputs, asyncio.get_running_loop().create_future(), timing)
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            raise self._overloaded() from None
        return await job.future

    def _overloaded(self) -> Overloaded:
        wait = self.queued * self._batch_seconds / max(self.max_batch_size, 1)
        return Overloaded(
            f"server busy: {self.queued} requests queued "
            f"(limit {self.max_queue_size}); retry later",
            retry_after=max(1.0, math.ceil(wait)),
        )

    async def _next_job(self, timeout: float | None) -> _Job | None:
        if self._carry is not None:
            job, self._carry = self._carry, None
            return job
        if timeout is None:
            return await self._queue.get()
        if timeout <= 0:
            try:
                return self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return None
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None

    async def _collect(self) -> list[_Job]:
        first = await self._next_job(None)
        assert first is not None
        jobs, rows = [first], first.rows
        deadline = time.perf_counter() + self.max_delay
        while rows < self.max_batch_size:
            # Alone and nothing else queued: go now (an idle server adds no delay).
            remaining = 0.0 if len(jobs) == 1 else deadline - time.perf_counter()
            job = await self._next_job(max(remaining, 0.0))
            if job is None:
                break
            if rows + job.rows > self.max_batch_size:
                self._carry = job
                break
            jobs.append(job)
            rows += job.rows
        return jobs

    async def _loop(self) -> None:
        while True:
            self._busy = False
            jobs = await self._collect()
            self._busy = True
            live = [j for j in jobs if not j.future.done()]  # skip callers that went away
            if not live:
                continue
            assembling = time.perf_counter()
            if len(live) == 1:
                batch = live[0].inputs
            else:
                batch = {k: np.concatenate([j.inputs[k] for j in live]) for k in live[0].inputs}
            wanted = list(dict.fromkeys(o for j in live for o in j.outputs))
            started = time.perf_counter()
            try:
                out = await self.run(batch, wanted)
            except asyncio.CancelledError:
                for j in live:
                    if not j.future.done():
                        j.future.cancel()
                raise
            except Exception as e:  # delivered to every waiting caller, the loop goes on
                for j in live:
                    if not j.future.done():
                        j.future.set_exception(e)
                continue
            finished = time.perf_counter()
            elapsed = finished - started
            self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * elapsed
            offset = 0
            for j in live:
                rows = {k: out[k][offset : offset + j.rows] for k in j.outputs}
                offset += j.rows
                if j.timing is not None:
                    j.timing.queue_s = max(j.timing.queue_s, assembling - j.enqueued)
                    j.timing.infer_s += elapsed
                if not j.future.done():
                    j.future.set_result(rows)
            if self.observer:
                split = time.perf_counter() - finished
                total = sum(j.rows for j in live)
                self.observer.batch(total, started - assembling, elapsed, split)
                for j in live:
                    self.observer.job(assembling - j.enqueued, elapsed)


class PassThrough:
    """No gateway batching: each request is its own call (the backend batches, e.g. Triton).

    Calls in flight are bounded like the batcher's queue (``Overloaded`` beyond it), and a
    request larger than ``max_batch_size`` is split, as the backend would refuse it whole.
    """

    def __init__(
        self,
        run: RunFn,
        max_batch_size: int = 8,
        max_in_flight: int = 64,
        observer: BatchObserver | None = None,
    ) -> None:
        """Forward calls to ``run``, at most ``max_in_flight`` at once."""
        self.run = run
        self.max_batch_size = max_batch_size
        self.max_queue_size = max_in_flight
        self.max_delay = 0.0
        self.observer = observer
        self._in_flight = 0

    @property
    def queued(self) -> int:
        """Calls in flight."""
        return self._in_flight

    def start(self) -> None:
        """Nothing to start."""

    async def stop(self) -> None:
        """Wait for the calls in flight."""
        while self._in_flight:
            await asyncio.sleep(0.005)

    async def submit(
        self, inputs: Arrays, outputs: Sequence[str], timing: Timing | None = None
    ) -> Arrays:
        """Run ``inputs`` now (split into parts of at most ``max_batch_size`` rows)."""
        rows = _rows(inputs)
        wanted = list(dict.fromkeys(outputs))
        parts = [
            {k: v[i : i + self.max_batch_size] for k, v in inputs.items()}
            for i in range(0, rows, self.max_batch_size)
        ]
        if self._in_flight + len(parts) > self.max_queue_size:
            raise Overloaded(
                f"server busy: {self._in_flight} calls in flight (limit {self.max_queue_size}); "
                "retry later",
                retry_after=1.0,
            )
        self._in_flight += len(parts)
        try:
            results = await asyncio.gather(*(self._one(p, wanted, timing) for p in parts))
        finally:
            self._in_flight -= len(parts)
        if len(results) == 1:
            return results[0]
        return {k: np.concatenate([r[k] for r in results]) for k in results[0]}

    async def _one(self, part: Arrays, outputs: list[str], timing: Timing | None) -> Arrays:
        started = time.perf_counter()
        out = await self.run(part, outputs)
        elapsed = time.perf_counter() - started
        if timing is not None:
            timing.infer_s += elapsed
        if self.observer:
            self.observer.batch(_rows(part), 0.0, elapsed, 0.0)
            self.observer.job(0.0, elapsed)
        return out


def _rows(inputs: Arrays) -> int:
    counts = {v.shape[0] for v in inputs.values()}
    if len(counts) != 1:
        raise ValueError(f"inputs disagree on the batch size: {sorted(counts)}")
    return counts.pop()
