"""Prometheus metrics of one app instance (its own registry, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_BATCH = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128)


class Metrics:
    """Counters and histograms of the gateway."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        """A fresh registry with every metric registered."""
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "polyhead_requests", "HTTP requests", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "polyhead_request_seconds",
            "HTTP request latency",
            ["route"],
            buckets=_LATENCY,
            registry=r,
        )
        self.queue_wait = Histogram(
            "polyhead_queue_wait_seconds",
            "Time a request waited for its batch",
            ["model"],
            buckets=_LATENCY,
            registry=r,
        )
        self.batch_size = Histogram(
            "polyhead_batch_size", "Rows per forward pass", ["model"], buckets=_BATCH, registry=r
        )
        self.inference = Histogram(
            "polyhead_inference_seconds",
            "Forward pass time",
            ["model"],
            buckets=_LATENCY,
            registry=r,
        )
        self.images = Counter("polyhead_images", "Images predicted", ["model"], registry=r)
        self.loads = Counter(
            "polyhead_model_loads", "Model version loads", ["model", "result"], registry=r
        )
        self.loaded = Gauge(
            "polyhead_model_versions_loaded", "Versions loaded", ["model"], registry=r
        )
        self.queued = Gauge("polyhead_queue_depth", "Requests waiting", ["model"], registry=r)

    def observer(self, model: str) -> BatchMetrics:
        """The batch observer of one model."""
        return BatchMetrics(self, model)

    def render(self) -> bytes:
        """Prometheus text exposition."""
        return generate_latest(self.registry)


class BatchMetrics:
    """Adapts ``Metrics`` to the batcher's observer protocol for one model."""

    def __init__(self, metrics: Metrics, model: str) -> None:
        """Observe batches of ``model``."""
        self.m, self.model = metrics, model

    def batch(self, rows: int, assemble_s: float, infer_s: float, split_s: float) -> None:
        """Record one forward pass."""
        self.m.batch_size.labels(self.model).observe(rows)
        self.m.inference.labels(self.model).observe(infer_s)

    def job(self, queue_s: float, infer_s: float) -> None:
        """Record one request's wait."""
        self.m.queue_wait.labels(self.model).observe(queue_s)
