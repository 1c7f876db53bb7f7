"""Transport settings the README promises: the keepalive policy a client must respect.

The server accepts keepalive pings at most every 10 s (also without calls in flight); a
client that pings more often is told to calm down (GOAWAY `too_many_pings`) and loses
its connection, which gRPC clients report as UNAVAILABLE.
"""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from trainingfiles_server.app import RunningServer


async def _check(channel: grpc.aio.Channel) -> grpc.StatusCode:
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_a_client_pinging_every_second_is_sent_away(server: RunningServer) -> None:
    options = [
        ("grpc.keepalive_time_ms", 1_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=options) as channel:
        assert await _check(channel) == grpc.StatusCode.OK
        # Idle pings every second: after a few strikes the server sends GOAWAY and the
        # channel drops to IDLE/TRANSIENT_FAILURE (bounded: at most 20 s).
        async with asyncio.timeout(20):
            while channel.get_state() == grpc.ChannelConnectivity.READY:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        assert channel.get_state() != grpc.ChannelConnectivity.READY


async def test_a_client_pinging_every_ten_seconds_keeps_its_connection(
    server: RunningServer,
) -> None:
    """The client library's own policy (30 s) and the allowed minimum (10 s) are fine."""
    options = [
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=options) as channel:
        assert await _check(channel) == grpc.StatusCode.OK
        # Two ping periods and a bit: still the same READY connection.
        await asyncio.sleep(21)
        assert channel.get_state() == grpc.ChannelConnectivity.READY
        assert await _check(channel) == grpc.StatusCode.OK
