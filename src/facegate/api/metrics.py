"""Prometheus metrics: requests by route template and status, time per inference stage, gallery size.

Each app has its own registry, so that several apps in one process (tests) do not share counters.
Labels are route templates (`/users/{user_id}`), never raw paths, names or keys: the label sets stay
small and the metrics hold no personal data.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import anyio
import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from facegate.detection import DetectionParams, Detector
from facegate.embedding import Embedder
from facegate.faces import DEFAULT_DETECTION, Face
from facegate.gallery import CollectionRecord
from facegate.pipeline import Pipeline

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """The service's metrics in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["method", "route", "status"]
        self._requests = Counter(
            "facegate_http_requests", "HTTP requests answered", labels, registry=self.registry
        )
        self._latency = Histogram(
            "facegate_http_request_duration_seconds",
            "Time from receiving a request to the end of its answer",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._stages = Histogram(
            "facegate_inference_stage_seconds",
            "Time per inference stage (decode, detect, embed, search)",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._users = Gauge("facegate_gallery_users", "People in every collection", registry=self.registry)
        self._faces = Gauge("facegate_gallery_faces", "Faces in every collection", registry=self.registry)
        self._database_up = Gauge(
            "facegate_database_up", "1 when the database answered the last scrape", registry=self.registry
        )
        self._inference = Gauge(
            "facegate_inference_requests", "Inference work by state", ["state"], registry=self.registry
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self._requests.labels(method, route, str(status)).inc()
        self._latency.labels(method, route, str(status)).observe(seconds)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time one inference stage."""
        with self._stages.labels(name).time():
            yield

    def render(self, collections: list[CollectionRecord] | None, limiter: anyio.CapacityLimiter) -> bytes:
        """The text exposition format, with the gauges read now; `collections` None = database down."""
        self._database_up.set(0 if collections is None else 1)
        if collections is not None:
            self._users.set(sum(collection.people for collection in collections))
            self._faces.set(sum(collection.faces for collection in collections))
        statistics = limiter.statistics()
        self._inference.labels("running").set(statistics.borrowed_tokens)
        self._inference.labels("waiting").set(statistics.tasks_waiting)
        return generate_latest(self.registry)


class MeteredEmbedder(Embedder):
    """An embedder that times each call as the `embed` stage."""

    def __init__(self, inner: Embedder, metrics: Metrics) -> None:
        self.name = inner.name
        self.dim = inner.dim
        self._inner = inner
        self._metrics = metrics

    @property
    def providers(self) -> tuple[str, ...]:
        return self._inner.providers

    def embed(self, image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        with self._metrics.stage("embed"):
            return self._inner.embed(image, faces)


class MeteredDetector(Detector):
    """A detector that times each call as the `detect` stage."""

    def __init__(self, inner: Detector, metrics: Metrics) -> None:
        self.name = inner.name
        self._inner = inner
        self._metrics = metrics

    @property
    def providers(self) -> tuple[str, ...]:
        return self._inner.providers

    def detect(self, image: np.ndarray, params: DetectionParams = DEFAULT_DETECTION) -> list[Face]:
        with self._metrics.stage("detect"):
            return self._inner.detect(image, params)

    def close(self) -> None:
        self._inner.close()


class MeteredPipeline(Pipeline):
    """The pipeline on its own detector and embedder, each timed; the pipeline itself knows no metrics."""

    def __init__(self, inner: Pipeline, metrics: Metrics) -> None:
        super().__init__(
            MeteredDetector(inner.detector, metrics), MeteredEmbedder(inner.embedder, metrics), inner.quality
        )
