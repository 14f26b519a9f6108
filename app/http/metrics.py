"""`GET /metrics`: the Prometheus text format, for operators only (docs/operations.md).

What is counted per request costs two dictionary lookups and two increments (app.http.middleware
calls `observe`); everything else is read from the state objects the service keeps anyway (the
audit writer's, the read nodes', the coalescer's, the allowance's, shedding's, the job worker's)
by a task that copies them into the registry once a second, so a scrape does no work in the
request path and sees figures at most a second old.

Several processes (`tepat serve --workers N`): `tepat serve` gives them one fresh
`PROMETHEUS_MULTIPROC_DIR`, and prometheus-client's multiprocess mode sums their counters and
histograms and their gauges (live processes only) at scrape time, so a scrape answered by any
process shows the whole server. With one process, the figures live in memory.

No series carries a NIK, a No. KK or a name: the labels are route templates (never raw paths),
methods, statuses, client ids (not personal data), node names and reasons.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import re
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess
from starlette.types import Scope

from app.config import Settings

log = logging.getLogger("tepat.metrics")

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
REGISTRY = CollectorRegistry(auto_describe=True)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def _counter(name: str, doc: str, labels: Iterable[str] = ()) -> Counter:
    return Counter(name, doc, list(labels), registry=REGISTRY)


def _gauge(name: str, doc: str, labels: Iterable[str] = ()) -> Gauge:
    # livesum: with several processes, the sum over the live ones.
    return Gauge(name, doc, list(labels), registry=REGISTRY, multiprocess_mode="livesum")


REQUESTS = _counter(
    "tepat_http_requests", "Requests answered, by route template, method and status",
    ("route", "method", "status"),
)  # fmt: skip
LATENCY = Histogram(
    "tepat_http_request_duration_seconds",
    "Time from the request's arrival to its last byte, by route template and method",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
NIKS = _counter(
    "tepat_client_niks", "NIKs and No. KKs charged to each client (lookups, bulk, jobs)",
    ("client_id",),
)  # fmt: skip
NIKS_REFUNDED = _counter(
    "tepat_client_niks_refunded", "NIKs charged then given back (work that did not happen)",
    ("client_id",),
)  # fmt: skip
REFUSED = _counter(
    "tepat_allowance_refusals", "Allowance refusals (rate, quota, suspended)", ("reason",)
)
SHED = _counter("tepat_shed_requests", "Requests refused at once because the server was full")
EXPIRED = _counter("tepat_deadline_expired_requests", "Requests answered 503 at their deadline")
IN_FLIGHT = _gauge("tepat_requests_in_flight", "Requests being served (bulk streams apart)")
STREAMS = _gauge("tepat_streams", "Bulk streams and change lists being streamed")
AUDIT_QUEUE = _gauge("tepat_audit_queue_depth", "Audit records waiting for their batch")
AUDIT_BATCHES = _counter("tepat_audit_batches", "Audit batches (transactions) written")
AUDIT_RECORDS = _counter("tepat_audit_records", "Audit records written")
AUDIT_FAILED = _counter("tepat_audit_failed_records", "Audit records whose batch failed")
AUDIT_BATCH_SIZE = Histogram(
    "tepat_audit_batch_size",
    "Records per audit batch",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
    registry=REGISTRY,
)
AUDIT_COMMIT = Histogram(
    "tepat_audit_commit_seconds",
    "Time to write one audit batch",
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
POOL_SIZE = _gauge("tepat_db_pool_connections", "Open connections of the read pool", ("node",))
POOL_IDLE = _gauge("tepat_db_pool_idle_connections", "Idle connections of the read pool", ("node",))
NODE_UP = _gauge("tepat_read_node_up", "1 when the read node is in rotation", ("node",))
NODE_LAG = _gauge("tepat_replica_lag_seconds", "Seconds a replica is behind the primary", ("node",))
NODE_READS = _counter("tepat_read_node_reads", "Reads run on each node", ("node",))
NODE_RETRIED = _counter(
    "tepat_read_node_retried_reads", "Reads that failed on a node and ran on the next", ("node",)
)
COALESCED = _counter("tepat_coalesced_lookups", "Small lookups answered by merged statements")
COALESCE_STATEMENTS = _counter("tepat_coalesced_statements", "Statements the merged lookups ran")
JOBS_RUNNING = _gauge("tepat_bulk_jobs_running", "Bulk jobs this server's workers are running")


class RequestMetrics:
    """Per-request counting: the labelled children are kept, so a request costs a set lookup
    and two dictionary lookups beside the increments."""

    def __init__(self) -> None:
        self._requests: dict[tuple[str, str, int], Any] = {}
        self._latency: dict[tuple[str, str], Any] = {}
        self._static: frozenset[str] = frozenset()
        self._templates: list[tuple[re.Pattern[str], str]] = []

    def configure(self, templates: Iterable[str]) -> None:
        """The app's path templates (its OpenAPI paths and a few more)."""
        paths = set(templates)
        self._static = frozenset(p for p in paths if "{" not in p)
        self._templates = [
            (re.compile("^" + re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(p)) + "$"), p)
            for p in sorted(paths - self._static)
        ]

    def route_of(self, path: str) -> str:
        """The route template (`/v1/bulk/jobs/{job_id}`), else `unmatched`: a raw path never
        becomes a label (it could carry anything, and every one would be a new series)."""
        if path in self._static:
            return path
        for pattern, template in self._templates:
            if pattern.match(path):
                return template
        return "unmatched"

    def observe(self, scope: Scope, status: int, seconds: float) -> None:
        route = self.route_of(scope.get("path", ""))
        method: str = scope.get("method", "")
        key = (route, method, status)
        counter = self._requests.get(key)
        if counter is None:
            counter = self._requests[key] = REQUESTS.labels(route, method, str(status))
        counter.inc()
        timer = self._latency.get(key[:2])
        if timer is None:
            timer = self._latency[key[:2]] = LATENCY.labels(route, method)
        timer.observe(seconds)


REQUEST_METRICS = RequestMetrics()


class _Deltas:
    """Counters copied from cumulative figures: each sync adds what grew since the last one."""

    def __init__(self) -> None:
        self._last: dict[Any, float] = {}

    def add(self, key: Any, counter: Any, total: float) -> None:
        grown = total - self._last.get(key, 0)
        if grown > 0:
            counter.inc(grown)
        self._last[key] = max(total, self._last.get(key, 0))


class StateSync:
    """Once a second, the service's own state objects into the registry."""

    def __init__(self, read_state: Callable[[], dict[str, Any]]) -> None:
        self._read = read_state
        self._deltas = _Deltas()
        self._audit_seen = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="metrics-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self.sync()  # the last figures of a process going away

    async def _loop(self) -> None:
        while True:
            try:
                self.sync()
            except Exception:  # never let metrics take the service down
                log.exception("metrics sync failed")
            await asyncio.sleep(1.0)

    def sync(self) -> None:
        s = self._read()
        d = self._deltas
        overload = s.get("overload")
        if overload is not None:
            d.add("shed", SHED, overload.shed)
            d.add("expired", EXPIRED, overload.expired)
            IN_FLIGHT.set(overload.in_flight)
            STREAMS.set(overload.streams)
        allowance = s.get("allowance")
        if allowance is not None:
            for client_id, n in list(allowance.charged.items()):
                d.add(("niks", client_id), NIKS.labels(client_id), n)
            for client_id, n in list(allowance.refunded.items()):
                d.add(("refunded", client_id), NIKS_REFUNDED.labels(client_id), n)
            for why, n in list(allowance.refusals.items()):
                d.add(("refused", why), REFUSED.labels(why), n)
        audit = s.get("audit")
        if audit is not None:
            stats = audit.stats
            AUDIT_QUEUE.set(audit.queue_depth)
            d.add("audit_batches", AUDIT_BATCHES, stats.batches)
            d.add("audit_records", AUDIT_RECORDS, stats.records)
            d.add("audit_failed", AUDIT_FAILED, stats.failed_records)
            # The batch sizes and commit times since the last sync (the deques keep the latest).
            new = stats.batches - self._audit_seen
            if new > 0:
                sizes = list(stats.batch_sizes)[-new:]
                commits = list(stats.commit_seconds)[-new:]
                for size in sizes:
                    AUDIT_BATCH_SIZE.observe(size)
                for seconds in commits:
                    AUDIT_COMMIT.observe(seconds)
            self._audit_seen = stats.batches
        reads = s.get("reads")
        if reads is not None:
            for node in reads.nodes.all:
                POOL_SIZE.labels(node.name).set(node.pool.get_size())
                POOL_IDLE.labels(node.name).set(node.pool.get_idle_size())
                NODE_UP.labels(node.name).set(1 if node.up else 0)
                if not node.primary:
                    NODE_LAG.labels(node.name).set(node.lag)
                d.add(("reads", node.name), NODE_READS.labels(node.name), node.reads)
                d.add(("retried", node.name), NODE_RETRIED.labels(node.name), node.retried)
            d.add("coalesced", COALESCED, reads.coalescer.stats.lookups)
            d.add("coalesce_statements", COALESCE_STATEMENTS, reads.coalescer.stats.statements)
        worker = s.get("job_worker")
        JOBS_RUNNING.set(worker.running if worker is not None else 0)


CONTENT_TYPE = CONTENT_TYPE_LATEST


def render() -> bytes:
    if MULTIPROCESS:
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def mark_process_dead(pid: int) -> None:
    """A worker that exits: its live gauges leave the sums (uvicorn's supervisor calls nothing,
    so each process marks itself at shutdown)."""
    if MULTIPROCESS:
        with contextlib.suppress(Exception):
            prometheus_multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


# --- access ---------------------------------------------------------------------------------


def allowed(scope: Scope, settings: Settings) -> tuple[bool, str]:
    """(allowed, why not): a caller from TEPAT_METRICS_ALLOW, or bearing TEPAT_METRICS_TOKEN."""
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    if token:
        for name, value in scope.get("headers") or ():
            if name == b"authorization":
                given = value.decode("latin-1")
                if given.startswith("Bearer ") and _same(given[7:].strip(), token):
                    return True, ""
                return False, "the metrics token is not valid"
    client = scope.get("client")
    if client:
        with contextlib.suppress(ValueError):
            address = ipaddress.ip_address(client[0])
            if any(address in net for net in settings.metrics_networks):
                return True, ""
    return False, (
        "/metrics is for operators: call it from an address in TEPAT_METRICS_ALLOW"
        + (" or with the metrics token" if token else "")
    )


def _same(a: str, b: str) -> bool:
    import hmac

    return hmac.compare_digest(a.encode(), b.encode())
