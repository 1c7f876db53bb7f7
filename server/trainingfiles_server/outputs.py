"""The outputs of one version of a file: its JSON and its JSONL, written as lines arrive.

Both objects are written in one pass (each line goes to both), each through a streaming
`storage.ObjectWriter`; an Add starts them with the file's stored pairs, copied by the
store itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from . import aggregate
from .aggregate import JsonlToJsonPairs
from .errors import ResourceExhausted
from .storage import Storage, UploadHook

_T = TypeVar("_T")


class Outputs:
    """The JSON and the JSONL of one version of a file, written as lines arrive in order.

    Each line goes to both objects at once (the JSON's copy with its newline turned into
    a comma), so both uploads proceed while documents are still being fetched. The JSON's
    first part waits for the header, which needs every conversation's metrics: `close`
    sends it last. Nothing is visible in the bucket before `close`; `abort` drops it all.
    """

    def __init__(
        self,
        storage: Storage,
        bucket: str,
        json_key: str,
        jsonl_key: str,
        max_bytes: int,
        on_upload: UploadHook | None = None,
    ) -> None:
        self.json = storage.writer(
            bucket, json_key, "application/json", hold_first=True, on_upload=on_upload
        )
        self.jsonl = storage.writer(bucket, jsonl_key, "application/x-ndjson", on_upload=on_upload)
        self._pairs = JsonlToJsonPairs()
        self._max_bytes = max_bytes
        self._stored: asyncio.Future[list[None]] | None = None

    @property
    def jsonl_size(self) -> int:
        return self.jsonl.size

    def append_stored(self, json_key: str, json_size: int, jsonl_key: str, jsonl_size: int) -> None:
        """Start appending a file's stored pairs; new lines wait until they are in place.

        The JSON holds the JSONL's lines joined by commas between its header and
        `JSON_FOOTER`, so the pairs are a byte range of each stored object, which the
        store copies itself where it can.
        """
        pairs = jsonl_size - 1
        start = json_size - len(aggregate.JSON_FOOTER) - pairs
        self._stored = asyncio.ensure_future(
            together(
                self.jsonl.append_object(jsonl_key, 0, jsonl_size),
                self.json.append_object(json_key, start, start + pairs),
            )
        )
        self._pairs.feed(b"\n")  # the stored pairs ended a line: the next pair follows a comma

    async def write(self, lines: bytes) -> None:
        if self._stored is not None:
            await self._stored
        if self.jsonl.size + len(lines) > self._max_bytes:
            raise ResourceExhausted(
                f"the training file would exceed the per-object limit of {self._max_bytes} bytes",
                "max_object_bytes",
                reason="OBJECT_TOO_LARGE",
            )
        await self.jsonl.write(lines)
        body = self._pairs.feed(lines)
        if body:
            await self.json.write(body)

    async def close(self, header: bytes) -> tuple[int, int]:
        """Store both objects; returns their sizes, JSON and JSONL."""
        if self._stored is not None:
            await self._stored
        await self.json.write(self._pairs.close())
        json_size, jsonl_size = await together(self.json.close(header), self.jsonl.close())
        return json_size, jsonl_size

    async def abort(self) -> None:
        if self._stored is not None:
            self._stored.cancel()
            await asyncio.gather(self._stored, return_exceptions=True)
        await asyncio.gather(self.json.abort(), self.jsonl.abort())


async def together(*calls: Awaitable[_T]) -> list[_T]:
    """Like `gather`, but the first failure cancels the others before it propagates."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
