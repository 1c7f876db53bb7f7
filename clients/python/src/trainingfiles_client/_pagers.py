"""Pagers: iterate a list rpc's items across pages, following `next_page_token` lazily.

Nothing is fetched until the pager is iterated, and each page only when the previous one
is used up, so ``itertools.islice(pager, 10)`` costs one page. Iterating a pager again
starts again from the first page (the request's own `page_token`, if it had one).
`pages` gives the raw responses instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Generic, Protocol, TypeVar

__all__ = ["AsyncPager", "Pager"]


class _Page(Protocol):
    @property
    def next_page_token(self) -> str: ...


ResponseT = TypeVar("ResponseT", bound=_Page)
ItemT = TypeVar("ItemT")
FetchT = TypeVar("FetchT")


class _Pages(Generic[ResponseT, ItemT, FetchT]):
    """What both pagers hold: how to fetch a page, where its items are, the first token."""

    def __init__(
        self, fetch: FetchT, items: Callable[[ResponseT], Sequence[ItemT]], start: str = ""
    ) -> None:
        self._fetch = fetch
        self._items = items
        self._start = start

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


class Pager(_Pages[ResponseT, ItemT, Callable[[str], ResponseT]]):
    """The items of a list rpc, one page at a time.

    Example:
        >>> pager = client.list_training_files(page_size=100)
        >>> for training_file in pager:
        ...     print(training_file.name)
        >>> for page in pager.pages:  # the raw ListTrainingFilesResponse messages
        ...     print(len(page.training_files), page.next_page_token)
    """

    @property
    def pages(self) -> Iterator[ResponseT]:
        """The raw responses, fetching each page as it is reached (see the class example)."""
        token = self._start
        while True:
            page = self._fetch(token)
            yield page
            token = page.next_page_token
            if not token:
                return

    def __iter__(self) -> Iterator[ItemT]:
        for page in self.pages:
            yield from self._items(page)


class AsyncPager(_Pages[ResponseT, ItemT, Callable[[str], Awaitable[ResponseT]]]):
    """The items of a list rpc for the asyncio client: ``async for`` over it.

    Example:
        >>> async for conversation in client.list_eligible_conversations():
        ...     print(conversation.conversation_id)
        >>> async for page in client.list_eligible_conversations().pages:
        ...     print(page.next_page_token)
    """

    @property
    async def pages(self) -> AsyncIterator[ResponseT]:
        """The raw responses, fetching each page as it is reached (see the class example)."""
        token = self._start
        while True:
            page = await self._fetch(token)
            yield page
            token = page.next_page_token
            if not token:
                return

    async def __aiter__(self) -> AsyncIterator[ItemT]:
        async for page in self.pages:
            for item in self._items(page):
                yield item
