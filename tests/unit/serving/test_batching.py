import asyncio

import numpy as np
import pytest

from serving.batching import MicroBatcher
from serving.errors import Overloaded


class Recorder:
    """A fake forward pass: output row = input row * 2, records batch sizes."""

    def __init__(self, delay: float = 0.0, fail: bool = False):
        self.batches: list[int] = []
        self.asked: list[list[str]] = []
        self.delay, self.fail = delay, fail

    async def __call__(self, batch, outputs):
        x = batch["x"]
        self.batches.append(x.shape[0])
        self.asked.append(list(outputs))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("boom")
        every = {"y": x * 2, "z": x.sum(axis=1)}
        return {k: every[k] for k in outputs}


YZ = ["y", "z"]


def rows(i, n=1):
    return {"x": np.full((n, 3), float(i))}


def run(coro):
    return asyncio.run(coro)


def test_each_request_gets_exactly_its_rows():
    async def main():
        rec = Recorder(delay=0.01)
        b = MicroBatcher(rec, max_batch_size=8, max_queue_delay_ms=5, max_queue_size=100)
        outs = await asyncio.gather(*(b.submit(rows(i, n=1 + i % 3), YZ) for i in range(40)))
        await b.stop()
        return rec, outs

    rec, outs = run(main())
    for i, out in enumerate(outs):
        n = 1 + i % 3
        assert out["y"].shape == (n, 3) and (out["y"] == 2 * i).all()
        assert (out["z"] == 3 * i).all()
    assert max(rec.batches) > 1, "concurrent requests were merged"
    assert max(rec.batches) <= 8
    assert sum(rec.batches) == sum(1 + i % 3 for i in range(40))


def test_lone_request_is_not_delayed():
    async def main():
        rec = Recorder()
        b = MicroBatcher(rec, max_batch_size=8, max_queue_delay_ms=500)
        loop = asyncio.get_running_loop()
        t = loop.time()
        await b.submit(rows(1), YZ)
        elapsed = loop.time() - t
        await b.stop()
        return elapsed

    assert run(main()) < 0.25  # far below the 500 ms queue delay


def test_requests_larger_than_a_batch_are_split_and_reassembled():
    async def main():
        rec = Recorder()
        b = MicroBatcher(rec, max_batch_size=4, max_queue_delay_ms=1)
        x = {"x": np.arange(30, dtype=float).reshape(10, 3)}
        out = await b.submit(x, YZ)
        await b.stop()
        return rec, x, out

    rec, x, out = run(main())
    assert np.array_equal(out["y"], x["x"] * 2)
    assert all(n <= 4 for n in rec.batches)


def test_full_queue_refuses_at_once_with_retry_after():
    async def main():
        rec = Recorder(delay=0.2)
        b = MicroBatcher(rec, max_batch_size=1, max_queue_delay_ms=0, max_queue_size=2)
        results = await asyncio.gather(
            *(b.submit(rows(i), YZ) for i in range(8)), return_exceptions=True
        )
        await b.stop()
        return results

    results = run(main())
    refused = [r for r in results if isinstance(r, Overloaded)]
    served = [r for r in results if isinstance(r, dict)]
    assert refused and served
    assert all(r.retry_after >= 1 for r in refused)
    assert len(served) + len(refused) == 8


def test_an_exception_reaches_every_waiting_request_and_the_batcher_survives():
    async def main():
        rec = Recorder(delay=0.01, fail=True)
        b = MicroBatcher(rec, max_batch_size=8, max_queue_delay_ms=5)
        results = await asyncio.gather(
            *(b.submit(rows(i), YZ) for i in range(5)), return_exceptions=True
        )
        rec.fail = False
        after = await b.submit(rows(7), YZ)
        await b.stop()
        return results, after

    results, after = run(main())
    assert all(isinstance(r, RuntimeError) for r in results)
    assert (after["y"] == 14).all()


def test_cancelled_caller_does_not_break_others():
    async def main():
        rec = Recorder(delay=0.05)
        b = MicroBatcher(rec, max_batch_size=2, max_queue_delay_ms=1)
        first = asyncio.ensure_future(b.submit(rows(1), YZ))
        doomed = asyncio.ensure_future(b.submit(rows(2), YZ))
        keep = asyncio.ensure_future(b.submit(rows(3), YZ))
        await asyncio.sleep(0)
        doomed.cancel()
        out = await asyncio.gather(first, keep)
        await b.stop()
        return out

    a, c = run(main())
    assert (a["y"] == 2).all() and (c["y"] == 6).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_batch_size": 0}, "max_batch_size must be >= 1"),
        ({"max_queue_delay_ms": -1}, "max_queue_delay_ms must be >= 0"),
        ({"max_queue_size": 0}, "max_queue_size must be >= 1"),
    ],
)
def test_arguments_are_validated_eagerly(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MicroBatcher(Recorder(), **kwargs)


def test_a_batch_fetches_the_union_of_its_requests_outputs():
    async def main():
        rec = Recorder(delay=0.01)
        b = MicroBatcher(rec, max_batch_size=8, max_queue_delay_ms=20, max_queue_size=100)
        first = asyncio.ensure_future(b.submit(rows(0), ["y"]))
        await asyncio.sleep(0)  # the first goes alone; the next three share a batch
        outs = await asyncio.gather(
            b.submit(rows(1), ["y"]), b.submit(rows(2), ["z"]), b.submit(rows(3), ["z", "y"])
        )
        await first
        await b.stop()
        return rec, outs

    rec, outs = run(main())
    assert rec.asked[0] == ["y"] and rec.asked[1] == ["y", "z"] and rec.batches[1] == 3
    assert set(outs[0]) == {"y"} and set(outs[1]) == {"z"} and list(outs[2]) == ["z", "y"]
    assert (outs[1]["z"] == 6).all() and (outs[2]["y"] == 6).all()


def test_requests_learn_their_queue_and_forward_times_and_statistics_agree():
    from serving.batching import Observers, Timing
    from serving.statistics import VersionStatistics

    async def main():
        stats = VersionStatistics("m", 1)
        b = MicroBatcher(
            Recorder(delay=0.02), max_batch_size=4, max_queue_delay_ms=5, observer=Observers(stats)
        )
        timings = [Timing() for _ in range(6)]
        # 5 one-row requests and one of 6 rows (split into parts of 4 and 2)
        sizes = [1, 1, 1, 1, 1, 6]
        await asyncio.gather(
            *(
                b.submit(rows(i, n), YZ, t)
                for i, (n, t) in enumerate(zip(sizes, timings, strict=True))
            )
        )
        await b.stop()
        for t in timings:
            stats.request(True, t.queue_s + t.infer_s, 0.001, t.queue_s, t.infer_s, 0.002)
        return stats, timings

    stats, timings = run(main())
    assert all(t.infer_s >= 0.02 and t.queue_s >= 0 for t in timings)
    assert timings[-1].infer_s >= 0.04  # two forward passes, added up
    d = stats.as_dict()
    counts = {p: d["inference_stats"][p]["count"] for p in d["inference_stats"]}
    assert counts["success"] == counts["queue"] == counts["compute_infer"] == 6
    assert counts["compute_input"] == counts["compute_output"] == 6 and counts["fail"] == 0
    assert d["inference_count"] == 11
    assert sum(b["compute_infer"]["count"] for b in d["batch_stats"]) == d["execution_count"]
