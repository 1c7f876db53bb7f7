"""A TCP forwarder to the object store that holds a request (or its answer) until released.

The tests that need a build to be under way and unable to finish (a download during an
Add, a deadline that passes with uploads open, a store that has done something the
server has not heard of yet) point a server's `S3_ENDPOINT_URL` at it. Bytes pass
unchanged, so signatures stay valid; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import urllib.parse


class HoldingForwarder:
    """A TCP forwarder on 127.0.0.1 to the object store that holds one request.

    Bytes go through unchanged (signatures stay valid) until a client sends `pattern`
    (a document's key in a request line): that connection's request then waits, `held`
    is set, until `release` is. Every other request passes at once. With
    `answers=True` the pattern is looked for in what the store answers instead: the
    store has acted, and the answer waits.
    """

    def __init__(self, target: str, pattern: bytes, *, answers: bool = False) -> None:
        url = urllib.parse.urlsplit(target)
        assert url.hostname and url.port
        self._target = (url.hostname, url.port)
        self._pattern = pattern
        self._answers = answers
        self.held = asyncio.Event()
        self.release = asyncio.Event()
        self._connections: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> HoldingForwarder:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        assert self._server is not None
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
            try:
                await asyncio.gather(
                    self._pipe(reader, up_writer, hold=not self._answers),
                    self._pipe(up_reader, writer, hold=self._answers),
                )
            finally:
                up_writer.close()
        except OSError:
            pass
        finally:
            writer.close()
            self._connections.discard(task)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hold: bool = False
    ) -> None:
        """Copy one direction until it ends; closing ends the other direction too."""
        tail = b""
        try:
            while data := await reader.read(64 * 1024):
                seen = tail + data
                if hold and self._pattern in seen and not self.release.is_set():
                    self.held.set()
                    await self.release.wait()
                tail = seen[-len(self._pattern) :]
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()
