"""Prometheus metrics and the per-request observer (request id, latency, access line).

Counts that live in the database (queue depth per view and state, decisions per action, batch
jobs per state) are read from it at scrape time, so they are right whatever the number of
workers and across restarts; process-local series (request latency, model batch sizes) follow
prometheus_client's multiprocess mode when ``PROMETHEUS_MULTIPROC_DIR`` is set (several workers).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.db.engine import read_only
from service.db.tables import BatchJob, Decision, QueueItem
from service.logs import new_request_id, redact_query, request_id

logger = logging.getLogger("commentdesk.access")

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


class DatabaseCounts(Collector):
    """Queue depth, decisions and batch jobs, counted in the database when scraped."""

    def __init__(self, sessions: sessionmaker[Session]):
        self.sessions = sessions

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "commentdesk_queue_items", "Queue items per view and status.", labels=["view", "status"]
        )
        decisions = CounterMetricFamily(
            "commentdesk_decisions", "Moderator decisions per action.", labels=["action"]
        )
        jobs = GaugeMetricFamily(
            "commentdesk_batch_jobs", "Batch jobs per status.", labels=["status"]
        )
        with self.sessions() as session:
            read_only(session)
            counts = select(QueueItem.view, QueueItem.status, func.count())
            for view, status, count in session.execute(
                counts.group_by(QueueItem.view, QueueItem.status)
            ):
                depth.add_metric([view, status], count)
            for action, count in session.execute(
                select(Decision.action, func.count()).group_by(Decision.action)
            ):
                decisions.add_metric([action], count)
            for status, count in session.execute(
                select(BatchJob.status, func.count()).group_by(BatchJob.status)
            ):
                jobs.add_metric([status], count)
        yield from (depth, decisions, jobs)


class Metrics:
    """The process's series; one instance per app (tests build many apps in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "commentdesk_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.model_batch = Histogram(
            "commentdesk_model_batch_size",
            "Comments per model call of the serving micro-batcher.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.model_seconds = Histogram(
            "commentdesk_model_batch_duration_seconds",
            "Time of one model call of the serving micro-batcher.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._database: DatabaseCounts | None = None

    def watch_database(self, sessions: sessionmaker[Session]) -> None:
        self._database = DatabaseCounts(sessions)
        self.registry.register(self._database)

    def observe_model_call(self, rows: int, seconds: float) -> None:
        self.model_batch.observe(rows)
        self.model_seconds.observe(seconds)

    def exposition(self) -> bytes:
        """The text format; with several workers, every worker's series merged."""
        if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        if self._database is not None:
            registry.register(self._database)
        return generate_latest(registry)


class RequestObserver:
    """Pure ASGI middleware: gives each request an id (``X-Request-ID``), times it into the
    latency histogram by route template, and writes one access line."""

    def __init__(self, app: ASGIApp, metrics: Metrics, access_log: bool = True):
        self.app = app
        self.metrics = metrics
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        presented = dict(scope.get("headers") or []).get(b"x-request-id")
        rid = new_request_id(presented.decode("latin-1") if presented else None)
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500  # what the client gets if the app dies before answering

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = rid
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(scope["method"], template, str(status)).observe(seconds)
            if self.access_log:
                query = scope.get("query_string", b"").decode("latin-1")
                path = scope["path"] + (f"?{redact_query(query)}" if query else "")
                logger.info(
                    '"%s %s" %d %.1f ms',
                    scope["method"],
                    path,
                    status,
                    seconds * 1000,
                    extra={
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round(seconds * 1000, 2),
                    },
                )
            request_id.reset(token)
