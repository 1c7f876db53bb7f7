"""Transport settings the README promises: the keepalive policy a client must respect.

The server accepts keepalive pings at most every 10 s (also without calls in flight); a
client that pings more often is told to calm down (GOAWAY `too_many_pings`) and loses
its connection, which gRPC clients report as UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

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


# HTTP/2 framing, just enough to be a client that never answers a ping (RFC 9113).
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS, PING, GOAWAY = 0x4, 0x6, 0x7
ACK = 0x1
KEEPALIVE_SECONDS, KEEPALIVE_TIMEOUT_SECONDS = 60.0, 20.0


def _frame(kind: int, flags: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + (0).to_bytes(4, "big") + payload


async def test_an_idle_client_is_pinged_every_minute_and_dropped_when_it_does_not_answer(
    server: RunningServer,
) -> None:
    """A connection with no calls gets the server's keepalive ping after 60 s; unanswered,
    the connection is closed 20 s later. The minute and a third passing is the test."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(PREFACE + _frame(SETTINGS, 0))
        await writer.drain()
        opened = time.monotonic()
        pinged: float | None = None
        goaway = False
        async with asyncio.timeout(KEEPALIVE_SECONDS + KEEPALIVE_TIMEOUT_SECONDS + 20):
            while True:
                try:
                    header = await reader.readexactly(9)
                    payload = await reader.readexactly(int.from_bytes(header[:3], "big"))
                except (asyncio.IncompleteReadError, ConnectionResetError):
                    break  # the server closed the connection
                kind, flags = header[3], header[4]
                if kind == SETTINGS and not flags & ACK:
                    writer.write(_frame(SETTINGS, ACK))
                    await writer.drain()
                elif kind == PING and not flags & ACK and pinged is None:
                    pinged = time.monotonic()  # and never answered
                elif kind == GOAWAY:
                    goaway = True
                del payload
        closed = time.monotonic()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    assert pinged is not None, "no keepalive ping came"
    assert KEEPALIVE_SECONDS - 1 <= pinged - opened <= KEEPALIVE_SECONDS + 5, pinged - opened
    assert KEEPALIVE_TIMEOUT_SECONDS - 1 <= closed - pinged <= KEEPALIVE_TIMEOUT_SECONDS + 5, (
        closed - pinged
    )
    assert goaway or closed > pinged
