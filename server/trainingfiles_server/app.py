"""The server's lifespan: open the pool and the S3 client, serve, drain, close.

Tracing (`tracing.py`) is set up first, so the pool's connections and the S3 client
are traced from the start; the metrics endpoint (`metrics.py`) serves while the server
does.

`running_server` is an async context manager used by `serve` (the process entry point)
and by the tests, which bind port 0 and connect to whatever port they got.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection as grpc_reflection
from opentelemetry.sdk.trace import TracerProvider

from trainingfiles.v1 import service_pb2, service_pb2_grpc

from . import logs, metrics, reflection, tracing
from .auth import Authenticator, ConfigurationError
from .config import Settings
from .db import Database, open_database
from .health import monitored
from .interceptors import AuthInterceptor, ServiceInterceptor
from .operations import Operations
from .pagination import PageTokens
from .refresher import Refresher, refreshing
from .servicer import TrainingFileServicer
from .storage import Storage, open_storage
from .sweeper import Sweeper, sweeping
from .tokens import counter

log = logging.getLogger("trainingfiles.server")

SERVICE_NAMES = (
    service_pb2.DESCRIPTOR.services_by_name["TrainingFileService"].full_name,
    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
    grpc_reflection.SERVICE_NAME,
)


def server_options(settings: Settings) -> list[tuple[str, int]]:
    """Explicit transport limits; see the README's Limits section."""
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_concurrent_streams", settings.max_concurrent_streams),
        # Count streams the way clients do (open HTTP/2 streams), so a client over the
        # limit waits for a free stream instead of being refused. gRPC's default also
        # counts streams whose trailers are already sent but whose call is not yet freed
        # by the server's event loop: a client at the limit then gets RST_STREAM
        # REFUSED_STREAM (UNAVAILABLE) — thousands of times a minute under sustained load.
        ("grpc.http.overload_protection", 0),
        # Ping idle clients every 60 s and drop them if they do not answer in 20 s. gRPC
        # waits `ping_timeout_ms` (60 s by default) for a ping's answer: without it, a
        # client that never answered was dropped after 60 s, not 20 s.
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.http2.ping_timeout_ms", 20_000),
        # Accept client keepalive pings at most every 10 s, also without calls in flight.
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        # Refuse to share a port with another process: a second server must fail loudly.
        ("grpc.so_reuseport", 0),
    ]


@dataclass(frozen=True)
class RunningServer:
    port: int
    database: Database
    storage: Storage
    health: health.aio.HealthServicer
    operations: Operations
    sweeper: Sweeper
    refresher: Refresher | None = None
    metrics_port: int | None = None


@contextlib.asynccontextmanager
async def running_server(
    settings: Settings, *, tracer_provider: TracerProvider | None = None
) -> AsyncIterator[RunningServer]:
    """Serve until the block exits, then shut down in order.

    Shutdown: health says NOT_SERVING; the server stops accepting calls and lets running
    ones finish within the grace period, then cancels the rest; their cleanup (marking a
    Create failed, deleting what it stored) gets `shutdown_cleanup_seconds` more; only
    then do the sweeper, the pool and the S3 client stop. What cleanup cannot finish,
    the sweeper of this or another replica finishes once the build's lease expires.

    Traces go to `tracer_provider` when one is given (the tests' in-memory exporter),
    else wherever the OTEL_* variables say, if anywhere.
    """
    authenticator = Authenticator(settings)  # refuses unsafe identity settings first
    # The tokenizer is loaded once, before serving: a bad TOKENIZER_JSON stops startup.
    if settings.count_tokens:
        counter(settings.tokenizer_json)
    owned = tracer_provider is None
    provider = tracing.provider_from_environment() if owned else tracer_provider
    with tracing.tracing(provider, owned=owned):
        async with _running(settings, authenticator) as running:
            yield running


@contextlib.asynccontextmanager
async def _running(
    settings: Settings, authenticator: Authenticator
) -> AsyncIterator[RunningServer]:
    async with open_database(settings) as database, open_storage(settings) as storage:
        server = grpc.aio.server(
            interceptors=[ServiceInterceptor(), AuthInterceptor(authenticator)],
            options=server_options(settings),
        )
        secret = settings.page_token_secret
        tokens = PageTokens(secret.get_secret_value().encode() if secret else os.urandom(32))
        operations = Operations(settings, database, storage, tokens)
        sweeper = Sweeper(
            database,
            storage,
            interval=settings.sweep_interval_seconds,
            orphan_upload_age=settings.lease_seconds,
            lease_seconds=settings.lease_seconds,
        )
        refresher = Refresher(settings, database, operations)
        service_pb2_grpc.add_TrainingFileServiceServicer_to_server(
            TrainingFileServicer(operations), server
        )
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable(SERVICE_NAMES, server)
        port = server.add_insecure_port(settings.listen_address)
        with metrics.serving(settings.metrics_address, database) as metrics_port:
            async with (
                sweeping(sweeper),
                refreshing(refresher),
                monitored(
                    health_servicer,
                    database,
                    storage,
                    interval=settings.health_check_interval_seconds,
                    timeout=settings.health_check_timeout_seconds,
                ),
            ):
                await server.start()
                try:
                    yield RunningServer(
                        port,
                        database,
                        storage,
                        health_servicer,
                        operations,
                        sweeper,
                        refresher,
                        metrics_port,
                    )
                finally:
                    await health_servicer.enter_graceful_shutdown()
                    await server.stop(settings.shutdown_grace_seconds)
                    await operations.drain(settings.shutdown_cleanup_seconds)


async def serve(
    settings: Settings, *, on_ready: Callable[[RunningServer], None] | None = None
) -> None:
    """Serve until SIGINT or SIGTERM, then shut down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with running_server(settings) as running:
        log.info("serving", extra={"fields": {"address": settings.listen_address}})
        if on_ready is not None:
            on_ready(running)
        await stop.wait()
        log.info("shutting down", extra={"fields": {"grace_s": settings.shutdown_grace_seconds}})
    log.info("stopped")


def main() -> None:
    settings = Settings()
    logs.configure(settings.log_level)
    try:
        asyncio.run(serve(settings))
    except (ConfigurationError, tracing.TracingConfigurationError) as exc:
        # An operator's mistake, not a crash: one clear line, no traceback, exit code 2.
        log.error("refusing to start", extra={"fields": {"reason": str(exc)}})
        raise SystemExit(2) from None
