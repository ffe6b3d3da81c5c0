"""The local scoring pipeline: read and decode, infer, decode outputs, commit shards.

Threads read and pre-process images ahead of the model (a bounded window), the model runs one
batch at a time on the calling thread (ONNX Runtime releases the GIL and uses the cores it was
given), and outputs are decoded into rows on threads while the next batch runs. Batches never
cross a shard, so a resumed run forms the same batches as an uninterrupted one.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import pyarrow as pa

from serving.errors import BackendUnavailable
from serving.scoring.output import OutputDir, Shard
from serving.scoring.predictor import Predictor, Prepared
from serving.scoring.progress import Progress
from serving.scoring.sources import InputList

log = logging.getLogger("polyhead.score")

A = TypeVar("A")
R = TypeVar("R")

#: Shards handed to the committer thread and not yet written, at most (each holds its rows).
MAX_PENDING_COMMITS = 2

#: Attempts at one batch while the backend (a Triton server) is unavailable, and the wait
#: before each retry: a blip must not end a run of hours.
RETRY_DELAYS_S = (1.0, 2.0, 4.0, 8.0, 15.0)


def ordered_map(
    pool: ThreadPoolExecutor, fn: Callable[[A], R], items: Iterable[A], window: int
) -> Iterator[R]:
    """``map(fn, items)`` on ``pool``, in order, with at most ``window`` calls in flight."""
    pending: deque[Future[R]] = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


class ShardSink:
    """Collects rows (tables with an ``index`` column) and commits each shard once complete.

    Commits (Parquet encoding and fsync) run on a thread of their own, so the model is not
    idle while a shard is written (they took a third of the main thread's time when inline);
    at most ``MAX_PENDING_COMMITS`` wait, and :meth:`finished` waits for them and re-raises
    a failed one.
    """

    def __init__(
        self,
        out: OutputDir,
        shards: list[Shard],
        schema: pa.Schema,
        digest: str,
        progress: Progress,
    ) -> None:
        """Commit ``shards`` of the run ``digest`` into ``out``, rows of ``schema``."""
        self.out = out
        self.schema = schema
        self.digest = digest
        self.progress = progress
        self._shards = sorted(shards, key=lambda s: s.start)
        self._starts = [s.start for s in self._shards]
        self._parts: dict[int, list[pa.Table]] = {s.number: [] for s in shards}
        self._rows: dict[int, int] = {s.number: 0 for s in shards}
        self._pending: deque[Future[None]] = deque()
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="commit")
        self.committed = 0

    def _shard_of(self, index: int) -> Shard:
        import bisect

        k = bisect.bisect_right(self._starts, index) - 1
        shard = self._shards[k] if k >= 0 else None
        if shard is None or not shard.start <= index < shard.stop:
            raise RuntimeError(f"row {index} belongs to no pending shard")
        return shard

    def add(self, table: pa.Table) -> None:
        """Take a batch of rows; commit every shard it completes."""
        if table.num_rows == 0:
            return
        indices = table.column("index").to_pylist()
        errors = table.num_rows - table.column("error").null_count
        # a batch may span shards (Ray forms its own batches): split it by shard
        by_shard: dict[int, list[int]] = {}
        for pos, index in enumerate(indices):
            by_shard.setdefault(self._shard_of(index).number, []).append(pos)
        for number, positions in by_shard.items():
            part = table if len(by_shard) == 1 else table.take(positions)
            self._parts[number].append(part)
            self._rows[number] += part.num_rows
        for number in by_shard:
            shard = next(s for s in self._shards if s.number == number)
            if self._rows[number] == shard.stop - shard.start:
                self._commit(shard)
        self.progress.update(table.num_rows, errors)

    def _commit(self, shard: Shard) -> None:
        rows = pa.concat_tables(self._parts.pop(shard.number))
        expected = list(range(shard.start, shard.stop))
        if rows.column("index").to_pylist() != expected:  # batches came out of order (Ray)
            rows = rows.sort_by("index")
            if rows.column("index").to_pylist() != expected:
                raise RuntimeError(f"shard {shard.number}: rows missing or duplicated")
        while len(self._pending) >= MAX_PENDING_COMMITS:
            self._pending.popleft().result()
        self._pending.append(self._committer.submit(self._write, shard, rows))

    def _write(self, shard: Shard, rows: pa.Table) -> None:
        self.out.commit(shard, rows.drop_columns(["index"]).cast(self.schema), self.digest)
        self.committed += 1

    def finished(self) -> bool:
        """True when every shard was committed (waits for the commits in progress)."""
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            if not self._pending:
                self._committer.shutdown(wait=True)
        return not self._parts


def _items(inputs: InputList, shards: list[Shard]) -> Iterator[tuple[int, str, str]]:
    for shard in shards:
        for i in range(shard.start, shard.stop):
            yield i, inputs.ids[i], inputs.paths[i]


def _batches(
    prepared: Iterator[Prepared], shards: list[Shard], batch_size: int
) -> Iterator[list[Prepared]]:
    """Consecutive items in batches of ``batch_size``, never across a shard boundary."""
    stops = {s.start: s.stop for s in shards}
    batch: list[Prepared] = []
    stop = -1
    for item in prepared:
        if item.index in stops:  # a shard starts here
            if batch:
                yield batch
            batch, stop = [], stops[item.index]
        batch.append(item)
        if len(batch) == batch_size or item.index == stop - 1:
            yield batch
            batch = []
    if batch:
        yield batch


def infer_with_retry(predictor: Predictor, batch: list[Prepared]) -> object:
    """``predictor.infer``, retried while the backend is unavailable."""
    for delay in (*RETRY_DELAYS_S, None):
        try:
            return predictor.infer(batch)
        except BackendUnavailable as e:
            if delay is None:
                raise
            log.warning("backend unavailable (%s); retrying in %g s", e.message, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def run_local(
    predictor: Predictor,
    inputs: InputList,
    pending: list[Shard],
    sink: ShardSink,
    batch_size: int,
    workers: int,
) -> None:
    """Score the ``pending`` shards in this process."""
    schema = predictor.schema_with_index()

    def to_table(batch: list[Prepared], outputs: object) -> pa.Table:
        return pa.Table.from_pylist(predictor.rows(batch, outputs), schema=schema)  # type: ignore[arg-type]

    with (
        ThreadPoolExecutor(workers, thread_name_prefix="read") as readers,
        ThreadPoolExecutor(workers, thread_name_prefix="decode") as decoders,
    ):
        prepared = ordered_map(
            readers, lambda a: predictor.prepare(*a), _items(inputs, pending), 2 * batch_size
        )
        in_flight: deque[Future[pa.Table]] = deque()
        for batch in _batches(prepared, pending, batch_size):
            outputs = infer_with_retry(predictor, batch)
            in_flight.append(decoders.submit(to_table, batch, outputs))
            while in_flight and (in_flight[0].done() or len(in_flight) > workers):
                sink.add(in_flight.popleft().result())
        while in_flight:
            sink.add(in_flight.popleft().result())
    if not sink.finished():
        raise RuntimeError("some shards got no rows")
