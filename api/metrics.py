"""Operating the API: ``GET /metrics`` (Prometheus), and what is observed of each request.

- ``RequestObserver`` (ASGI middleware): gives each request an id (``X-Request-ID``, taken
  from the request when it is a sensible one, else generated; echoed in the response),
  puts it in the log context, counts the request by route template and status, times it,
  and logs one line for it.
- ``TimedModel``: a model client that times each call (``instrument_models``).
- ``GET /metrics``: this process's counters (or every worker's, in prometheus_client's
  multiprocess mode), plus gauges read at scrape time from the store and the read models:
  pending decisions and the age of the oldest, paused runs, the log's head, each
  projection's position and lag. The domain counters are in ``service.metrics``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from time import perf_counter
from typing import Any
from uuid import uuid4

from fastapi import APIRouter, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent.loop import AgentLoop
from agent.models.base import ModelClient, ModelTurn, ToolSpec
from api.auth import allow
from api.deps import Container, ContainerDep
from projections import queue, webhooks
from service import tracing
from service.logs import CONTEXT, LogContext
from service.metrics import MODEL_SECONDS

log = logging.getLogger("signoff.http")

# No ``*_created`` series: they double the output, and multiprocess mode has none.
disable_created_metrics()  # type: ignore[no-untyped-call]

HTTP_REQUESTS = Counter("signoff_http_requests", "HTTP requests answered, by route template "
                        "and status.", ["method", "route", "status"])
HTTP_SECONDS = Histogram("signoff_http_request_duration_seconds",
                         "Seconds from a request's arrival to the end of its response (a "
                         "streamed run: until the stream ends).", ["method", "route"],
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
                                  60, 300))
HTTP_IN_PROGRESS = Gauge("signoff_http_requests_in_progress", "Requests being answered.",
                         multiprocess_mode="livesum")

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,200}")
# Probes and scrapes come every few seconds: their lines are debug, not info.
_QUIET = frozenset({"/health", "/ready", "/metrics"})


def multiprocess_mode() -> bool:
    return "PROMETHEUS_MULTIPROC_DIR" in os.environ


# ------------------------------------------------------------------ requests

class RequestObserver:
    """Pure ASGI middleware (streamed responses pass through untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        # Not reset at the end: each request runs in a task of its own, and the server's
        # error handler (outside this middleware) should log with the request id too.
        CONTEXT.set(LogContext(request_id=request_id, scope=scope))
        status = 500  # unless a response starts: an error escaped the app

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append("X-Request-ID", request_id)
            await send(message)

        started = perf_counter()
        HTTP_IN_PROGRESS.inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            HTTP_IN_PROGRESS.dec()
            seconds = perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in _METHODS else "other"
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
            HTTP_SECONDS.labels(method, route).observe(seconds)
            level = logging.DEBUG if route in _QUIET and status < 500 else logging.INFO
            log.log(level, "%s %s %s", method, route, status, extra={
                "method": method, "route": route, "path": scope["path"][:500],
                "status": status, "duration_ms": round(seconds * 1000, 3)})


def _request_id(scope: Scope) -> str:
    for key, value in scope["headers"]:
        if key == b"x-request-id":
            text: str = value.decode("latin-1")
            if _REQUEST_ID.fullmatch(text):
                return text
            break
    return uuid4().hex


# ------------------------------------------------------------------ models

class TimedModel:
    """A model client whose calls are timed (``signoff_model_call_duration_seconds``)."""

    def __init__(self, inner: ModelClient) -> None:
        self.inner = inner
        self.name = inner.name
        self.provider = inner.provider

    def respond(self, messages: list[dict[str, Any]], tools: list[ToolSpec]) -> ModelTurn:
        started = perf_counter()
        outcome = "error"
        try:
            with tracing.span("signoff.model", model=self.name, provider=self.provider):
                turn = self.inner.respond(messages, tools)
            outcome = "ok"
            return turn
        finally:
            MODEL_SECONDS.labels(self.name, self.provider, outcome).observe(
                perf_counter() - started)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def instrument_models(loop: AgentLoop) -> None:
    """Time every model the loop may call: its default, and the agents' own."""
    if not isinstance(loop.default_model, TimedModel):
        loop.default_model = TimedModel(loop.default_model)
    for agent in loop.agents.values():
        if agent.model is not None and not isinstance(agent.model, TimedModel):
            agent.model = TimedModel(agent.model)


# ------------------------------------------------------------------ /metrics

router = APIRouter(tags=["Operations"])


@router.get("/metrics", response_class=Response, dependencies=[allow()], responses={
    200: {"content": {"text/plain": {"schema": {"type": "string"}}},
          "description": "Prometheus text format"}})
def metrics(c: ContainerDep) -> Response:
    """Prometheus metrics (text format): requests, runs, decisions, tool and model call
    durations; pending decisions, projection lag (read when scraped). See
    docs/operations.md."""
    if multiprocess_mode():
        counted = CollectorRegistry()
        multiprocess.MultiProcessCollector(counted)  # type: ignore[no-untyped-call]
    else:
        counted = REGISTRY
    live = CollectorRegistry(auto_describe=False)
    live.register(LiveGauges(c))
    return Response(generate_latest(counted) + generate_latest(live),
                    media_type=CONTENT_TYPE_LATEST)


def mark_process_dead() -> None:
    """A worker stops: drop its live gauges from the multiprocess directory."""
    if multiprocess_mode():
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


class LiveGauges(Collector):
    """Read at each scrape: the same answer whichever worker is asked."""

    def __init__(self, container: Container) -> None:
        self.c = container

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("signoff_store_up",
                               "1 when the event store and the read models answered this "
                               "scrape, else 0 (and the gauges read from them are missing).")
        try:
            found = list(self._read())
        except Exception as e:
            log.warning("metrics: the store or the read models did not answer (%s)",
                        type(e).__name__, exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from found

    def _read(self) -> Iterator[Metric]:
        statuses = self.c.projections.status()
        head = statuses[0].head if statuses else self.c.store.head()
        yield GaugeMetricFamily("signoff_event_log_head",
                                "Position of the newest event in the log.", value=head)
        position = GaugeMetricFamily("signoff_projection_position",
                                     "Last log position each projection applied.",
                                     labels=["projection"])
        lag = GaugeMetricFamily("signoff_projection_lag_events",
                                "Events in the log a projection has not applied yet.",
                                labels=["projection"])
        for s in statuses:
            position.add_metric([s.name], s.position)
            lag.add_metric([s.name], s.lag)
        yield position
        yield lag
        yield from self._pool()
        yield from self._queue()
        yield from self._webhooks()

    def _pool(self) -> Iterator[Metric]:
        """This process's PostgreSQL pool (psycopg_pool's statistics); none on SQLite."""
        pool = getattr(getattr(self.c.store.recorder, "datastore", None), "pool", None)
        stats = getattr(pool, "get_stats", None)
        if stats is None:
            return
        found = stats()
        for key, name, text in (
                ("pool_size", "size", "Connections the pool holds now."),
                ("pool_available", "available", "Connections idle in the pool."),
                ("requests_waiting", "waiting", "Requests waiting for a connection.")):
            yield GaugeMetricFamily(f"signoff_db_pool_{name}", text + " (this process)",
                                    value=found.get(key, 0))

    def _queue(self) -> Iterator[Metric]:
        """From the queue read model (its tables are described in docs/projections.md)."""
        pending = GaugeMetricFamily("signoff_pending_decisions",
                                    "Tool calls waiting for a decision, by kind (queue read "
                                    "model).", labels=["kind"])
        oldest = GaugeMetricFamily("signoff_oldest_pending_decision_age_seconds",
                                   "Seconds the longest-waiting tool call has waited for a "
                                   "decision (0 when none waits).")
        with self.c.projections.views[queue.QueueProjection.name].read() as cur:
            rows = cur.execute("SELECT kind, COUNT(*) AS n, MIN(requested_at) AS oldest "
                               "FROM signoff_queue_calls WHERE waiting GROUP BY kind"
                               ).fetchall()
            paused = cur.execute("SELECT COUNT(*) AS n FROM signoff_queue_runs "
                                 "WHERE paused_since IS NOT NULL").fetchone()
            dialect = cur.dialect
        counts = dict.fromkeys(("confirmation", "external_execution", "user_input",
                                "in_doubt"), 0)
        first: datetime | None = None
        for row in rows:
            counts[row["kind"]] = int(row["n"])
            when = dialect.from_time(row["oldest"])
            if when is not None and (first is None or when < first):
                first = when
        for kind, n in counts.items():
            pending.add_metric([kind], n)
        yield pending
        age = (datetime.now(UTC) - first).total_seconds() if first is not None else 0.0
        oldest.add_metric([], max(0.0, age))
        yield oldest
        yield GaugeMetricFamily("signoff_paused_runs", "Runs paused, waiting for decisions "
                                "(queue read model).", value=int(paused["n"]) if paused else 0)

    def _webhooks(self) -> Iterator[Metric]:
        """From the webhook deliveries (docs/webhooks.md)."""
        with self.c.projections.views[webhooks.WebhooksProjection.name].read() as cur:
            stats = webhooks.read_stats(cur)
        yield GaugeMetricFamily("signoff_webhook_deliveries_pending", "Webhook deliveries "
                                "not yet made (being retried, or not tried yet).",
                                value=stats["pending"])
        yield GaugeMetricFamily("signoff_webhook_deliveries_failed", "Webhook deliveries "
                                "given up after the last attempt (kept for good).",
                                value=stats["failed"])
        oldest = stats["oldest"]
        age = (datetime.now(UTC) - oldest).total_seconds() if oldest is not None else 0.0
        yield GaugeMetricFamily("signoff_oldest_pending_webhook_age_seconds",
                                "Seconds since the event of the oldest webhook delivery not "
                                "yet made (0 when none).", value=max(0.0, age))

