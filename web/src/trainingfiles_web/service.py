"""The console's calls to the Training File Service, each with the caller's token.

One shared `AsyncTrainingFilesClient` (one channel) serves every user: the client holds
no token, each call carries the signed-in user's as its `authorization` metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from trainingfiles.v1 import analytics_pb2, resources_pb2, service_pb2
from trainingfiles_client import (
    AsyncTrainingFileOperation,
    AsyncTrainingFilesClient,
    Format,
    NotFound,
    Selector,
    Split,
    TrainingFilesError,
    Unauthenticated,
    Unimplemented,
)

Metadata = list[tuple[str, str | bytes]]

TrainingFile = resources_pb2.TrainingFile


T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_page_token: str


class Service:
    def __init__(self, client: AsyncTrainingFilesClient, token: str) -> None:
        self._client = client
        self._metadata: Metadata = [("authorization", f"Bearer {token}")]

    async def list_files(
        self, status: int, page_token: str, page_size: int = 20
    ) -> Page[resources_pb2.TrainingFile]:
        request = service_pb2.ListTrainingFilesRequest(
            status=status,  # type: ignore[arg-type]
            page_size=page_size,
            page_token=page_token,
        )
        pager = self._client.list_training_files(request=request, metadata=self._metadata)
        async for page in pager.pages:
            return Page(list(page.training_files), page.next_page_token)
        return Page([], "")

    async def get_file(self, file_id: str) -> resources_pb2.TrainingFile:
        return await self._client.get_training_file(file_id, metadata=self._metadata)

    async def members(
        self, file_id: str, page_token: str, page_size: int = 25
    ) -> Page[resources_pb2.TrainingFileConversation]:
        request = service_pb2.ListTrainingFileConversationsRequest(
            training_file_id=file_id, page_size=page_size, page_token=page_token
        )
        pager = self._client.list_training_file_conversations(
            request=request, metadata=self._metadata
        )
        async for page in pager.pages:
            return Page(list(page.conversations), page.next_page_token)
        return Page([], "")

    async def versions(self, file_id: str) -> list[resources_pb2.TrainingFileVersion]:
        request = service_pb2.ListTrainingFileVersionsRequest(
            training_file_id=file_id, page_size=20
        )
        pager = self._client.list_training_file_versions(request=request, metadata=self._metadata)
        async for page in pager.pages:
            return list(page.versions)
        return []

    async def eligible(
        self, selector: Selector | None, exclude_file_id: str, page_token: str, page_size: int
    ) -> Page[resources_pb2.EligibleConversation]:
        request = service_pb2.ListEligibleConversationsRequest(
            exclude_training_file_id=exclude_file_id,
            page_size=page_size,
            page_token=page_token,
        )
        if selector is not None:
            request.selector.CopyFrom(selector.proto())
        pager = self._client.list_eligible_conversations(request=request, metadata=self._metadata)
        async for page in pager.pages:
            return Page(list(page.conversations), page.next_page_token)
        return Page([], "")

    async def download_url(self, file_id: str, fmt: Format, split: Split, version: int) -> str:
        link = await self._client.get_download_url(
            file_id, fmt, split=split, version=version or None, metadata=self._metadata
        )
        return str(link.url)

    async def archive(self, file_id: str) -> resources_pb2.TrainingFile:
        return await self._client.archive_training_file(file_id, metadata=self._metadata)

    def create(self, name: str, conversation_ids: list[str]) -> AsyncTrainingFileOperation:
        operation: AsyncTrainingFileOperation = self._client.create_training_file(
            name, conversation_ids, metadata=self._metadata
        )
        return operation

    def add(self, file_id: str, conversation_ids: list[str]) -> AsyncTrainingFileOperation:
        operation: AsyncTrainingFileOperation = self._client.add_conversations(
            file_id, conversation_ids, metadata=self._metadata
        )
        return operation

    async def analytics(
        self, file_id: str
    ) -> tuple[analytics_pb2.TrainingFileAnalytics | None, str]:
        """The current version's analytics, or None and why not: the page then draws
        what `TrainingFile` itself carries. A server without the rpc (UNIMPLEMENTED), a
        version without analytics, or a failed call costs the page its analytics, never
        the page; an expired token still leads to the sign-in page."""
        try:
            analytics: analytics_pb2.TrainingFileAnalytics = (
                await self._client.get_training_file_analytics(file_id, metadata=self._metadata)
            )
            return analytics, ""
        except Unimplemented:
            return None, "Analytics are unavailable from this service."
        except NotFound:  # the file was just read: its version has no analytics (yet)
            return None, "This version has no analytics yet."
        except Unauthenticated:
            raise
        except TrainingFilesError as error:
            return None, f"Analytics could not be read ({error.message})."
