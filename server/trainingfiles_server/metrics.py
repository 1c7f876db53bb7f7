"""Prometheus metrics, served on their own HTTP port (`METRICS_ADDRESS`).

The metrics live in prometheus-client's default registry, one set per process. Every
label takes values from a small fixed set (method names of the served services, status
codes, stage names, S3 operation names, failure reasons): no id is ever a label. The
hot paths count in batches (documents per progress message), and the pool's figures are
read at scrape time. docs/operations.md lists every metric.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .db import Database

log = logging.getLogger("trainingfiles.metrics")

# Calls: the names and labels of the usual gRPC server metrics.
CALLS_HANDLED = Counter(
    "grpc_server_handled_total",
    "Calls completed, by method and status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
CALL_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Call duration from the handler's start to its status, by method.",
    ["grpc_service", "grpc_method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
CALLS_IN_FLIGHT = Gauge(
    "grpc_server_calls_in_flight",
    "Calls being handled now, by method.",
    ["grpc_service", "grpc_method"],
)

# Builds (Create, Add, Remove, Refresh, export), by the stage of their progress messages.
BUILDS_IN_FLIGHT = Gauge(
    "trainingfiles_builds_in_flight",
    "Builds running now, by the stage they are in.",
    ["stage"],
)
STAGE_SECONDS = Histogram(
    "trainingfiles_build_stage_seconds",
    "Time builds spent in each stage.",
    ["stage"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
)
DOCUMENTS_FETCHED = Counter(
    "trainingfiles_documents_fetched_total",
    "Enriched documents fetched, checked and transformed.",
)
DOCUMENT_BYTES = Counter(
    "trainingfiles_document_bytes_fetched_total",
    "Bytes of the enriched documents fetched.",
)
DOCUMENT_FAILURES = Counter(
    "trainingfiles_document_failures_total",
    "Enriched documents that failed their build, by reason.",
    ["reason"],  # missing, too_large, invalid
)
STORAGE_RETRIES = Counter(
    "trainingfiles_storage_retries_total",
    "Object storage requests sent again after a transient failure, by operation.",
    ["operation"],
)
SWEEPER_ACTIONS = Counter(
    "trainingfiles_sweeper_actions_total",
    "What the sweeper did: builds failed, objects deleted, uploads aborted, failures.",
    ["action"],  # build_failed, object_deleted, upload_aborted, cleanup_failed
)
SWEEPS = Counter(
    "trainingfiles_sweeps_total",
    "Sweeps run by this process, by outcome.",
    ["outcome"],  # swept, skipped (another replica sweeps), unavailable, failed
)
REFRESHES = Counter(
    "trainingfiles_refreshes_total",
    "Automatic refreshes, by outcome.",
    ["outcome"],  # refreshed, failed
)
LEASES_LOST = Counter(
    "trainingfiles_leases_lost_total",
    "Leases this process lost: it stalled, or the database was away, for a lease or longer.",
    ["holder"],  # build, sweeper, refresher
)

for _reason in ("missing", "too_large", "invalid"):
    DOCUMENT_FAILURES.labels(_reason)
for _action in ("build_failed", "object_deleted", "upload_aborted", "cleanup_failed"):
    SWEEPER_ACTIONS.labels(_action)
for _outcome in ("refreshed", "failed"):
    REFRESHES.labels(_outcome)
for _holder in ("build", "sweeper", "refresher"):
    LEASES_LOST.labels(_holder)


def split_method(method: str) -> tuple[str, str]:
    """`/pkg.Service/Method` → (`pkg.Service`, `Method`)."""
    service, _, name = method.lstrip("/").partition("/")
    return service, name


class PoolCollector(Collector):
    """The database pools' connections, read when scraped (one pool per server; the
    figures add up the servers of the process, of which production runs one)."""

    def __init__(self) -> None:
        self.databases: list[Database] = []

    def collect(self) -> Iterator[Any]:
        pools = [database.pool for database in self.databases]
        connections = GaugeMetricFamily(
            "trainingfiles_db_pool_connections",
            "Connections of the database pool, by state.",
            labels=["state"],
        )
        size = sum(pool.get_size() for pool in pools)
        idle = sum(pool.get_idle_size() for pool in pools)
        connections.add_metric(["in_use"], size - idle)
        connections.add_metric(["idle"], idle)
        yield connections
        yield GaugeMetricFamily(
            "trainingfiles_db_pool_max_connections",
            "The pool's largest size (DATABASE_POOL_MAX_SIZE).",
            value=sum(pool.get_max_size() for pool in pools),
        )
        yield GaugeMetricFamily(
            "trainingfiles_db_pool_waiting",
            "Calls waiting for a connection of the pool.",
            value=sum(database.waiting for database in self.databases),
        )


POOLS = PoolCollector()
REGISTRY.register(POOLS)


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


@contextlib.contextmanager
def serving(address: str | None, database: Database) -> Iterator[int | None]:
    """Serve /metrics on `address` (host:port, port 0 picks one) while the block runs.

    Yields the port, or None when `address` is unset (no metrics endpoint).
    """
    if not address:
        yield None
        return
    POOLS.databases.append(database)
    try:
        host, port = _host_port(address)
        server, thread = start_http_server(port, addr=host)
        try:
            bound = int(server.server_port)
            log.info("metrics served", extra={"fields": {"address": f"{host}:{bound}"}})
            yield bound
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
    finally:
        POOLS.databases.remove(database)
