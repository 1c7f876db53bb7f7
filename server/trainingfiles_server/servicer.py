"""The gRPC layer: unpack the request, call the domain, build the reply.

Nothing here catches exceptions: domain errors propagate to the interceptor, which is the
one place that turns them into statuses.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import Any

from trainingfiles.v1 import analytics_pb2, resources_pb2, service_pb2, service_pb2_grpc

from . import convert
from .auth import current_caller
from .errors import InvalidArgument
from .models import Caller, Progress
from .operations import Operations

Context = Any  # grpc.aio.ServicerContext; grpc ships no type information


async def _progress(
    events: AsyncGenerator[Progress, None],
) -> AsyncGenerator[service_pb2.TrainingFileProgress, None]:
    """A build's progress as messages; closed at once when the call ends early, so the
    build's cleanup runs now."""
    async with contextlib.aclosing(events):
        async for event in events:
            yield convert.progress(event)


def _caller(context: Context) -> Caller:
    """The caller the auth interceptor verified for this call."""
    return current_caller.get()


def _expires_in(request: service_pb2.GetDownloadUrlRequest) -> int | None:
    if not request.HasField("expires_in"):
        return None
    duration = request.expires_in
    if duration.nanos:
        raise InvalidArgument.field("expires_in", "must be whole seconds", "OUT_OF_RANGE")
    return int(duration.seconds)


class TrainingFileServicer(service_pb2_grpc.TrainingFileServiceServicer):
    """`trainingfiles.v1.TrainingFileService` over the domain operations."""

    def __init__(self, operations: Operations) -> None:
        self.operations = operations

    async def CreateTrainingFile(
        self, request: service_pb2.CreateTrainingFileRequest, context: Context
    ) -> AsyncGenerator[service_pb2.TrainingFileProgress, None]:
        description = request.description if request.HasField("description") else None
        events = self.operations.create(
            _caller(context),
            request.name,
            description,
            list(request.conversation_ids),
            request.on_behalf_of,
            convert.requested_formats(request.formats),
            convert.split_spec(request.split if request.HasField("split") else None),
            request.drop_duplicates,
            request.auto_refresh,
            convert.selector(request.selector if request.HasField("selector") else None),
            convert.pair_filter(request.pair_filter if request.HasField("pair_filter") else None),
        )
        async with contextlib.aclosing(_progress(events)) as messages:
            async for message in messages:
                yield message

    async def AddConversations(
        self, request: service_pb2.AddConversationsRequest, context: Context
    ) -> AsyncGenerator[service_pb2.TrainingFileProgress, None]:
        events = self.operations.add(
            _caller(context),
            request.training_file_id,
            list(request.conversation_ids),
            convert.requested_formats(request.formats),
            convert.selector(request.selector if request.HasField("selector") else None),
            convert.pair_filter(request.pair_filter if request.HasField("pair_filter") else None),
        )
        async with contextlib.aclosing(_progress(events)) as messages:
            async for message in messages:
                yield message

    async def RemoveConversations(
        self, request: service_pb2.RemoveConversationsRequest, context: Context
    ) -> AsyncGenerator[service_pb2.TrainingFileProgress, None]:
        events = self.operations.remove(
            _caller(context), request.training_file_id, list(request.conversation_ids)
        )
        async with contextlib.aclosing(_progress(events)) as messages:
            async for message in messages:
                yield message

    async def RefreshTrainingFile(
        self, request: service_pb2.RefreshTrainingFileRequest, context: Context
    ) -> AsyncGenerator[service_pb2.TrainingFileProgress, None]:
        events = self.operations.refresh(
            _caller(context), request.training_file_id, request.remove_ineligible
        )
        async with contextlib.aclosing(_progress(events)) as messages:
            async for message in messages:
                yield message

    async def SetAutoRefresh(
        self, request: service_pb2.SetAutoRefreshRequest, context: Context
    ) -> resources_pb2.TrainingFile:
        record = await self.operations.set_auto_refresh(
            _caller(context), request.training_file_id, request.enabled
        )
        return convert.training_file(record)

    async def ExportTrainingFile(
        self, request: service_pb2.ExportTrainingFileRequest, context: Context
    ) -> AsyncGenerator[service_pb2.TrainingFileProgress, None]:
        events = self.operations.export(
            _caller(context),
            request.training_file_id,
            convert.requested_formats(request.formats, export=True),
        )
        async with contextlib.aclosing(_progress(events)) as messages:
            async for message in messages:
                yield message

    async def GetTrainingFile(
        self, request: service_pb2.GetTrainingFileRequest, context: Context
    ) -> resources_pb2.TrainingFile:
        record = await self.operations.get(
            _caller(context), request.training_file_id, request.version
        )
        return convert.kept_file(record)

    async def GetTrainingFileAnalytics(
        self, request: service_pb2.GetTrainingFileAnalyticsRequest, context: Context
    ) -> analytics_pb2.TrainingFileAnalytics:
        record, version, figures = await self.operations.analytics(
            _caller(context), request.training_file_id, request.version
        )
        return convert.training_file_analytics(record.id, version, figures)

    async def ListTrainingFileVersions(
        self, request: service_pb2.ListTrainingFileVersionsRequest, context: Context
    ) -> service_pb2.ListTrainingFileVersionsResponse:
        rows, record, token = await self.operations.list_versions(
            _caller(context), request.training_file_id, request.page_size, request.page_token
        )
        return service_pb2.ListTrainingFileVersionsResponse(
            versions=[convert.training_file_version(v, record.name, record.version) for v in rows],
            next_page_token=token,
        )

    async def ListTrainingFiles(
        self, request: service_pb2.ListTrainingFilesRequest, context: Context
    ) -> service_pb2.ListTrainingFilesResponse:
        files, token = await self.operations.list_files(
            _caller(context),
            convert.status_filter(request.status),
            request.include_archived,
            request.page_size,
            request.page_token,
            convert.full_view(request.view),
        )
        return service_pb2.ListTrainingFilesResponse(
            training_files=[convert.kept_file(f) for f in files], next_page_token=token
        )

    async def ListTrainingFileConversations(
        self, request: service_pb2.ListTrainingFileConversationsRequest, context: Context
    ) -> service_pb2.ListTrainingFileConversationsResponse:
        rows, token = await self.operations.list_file_conversations(
            _caller(context),
            request.training_file_id,
            request.page_size,
            request.page_token,
            request.version,
        )
        return service_pb2.ListTrainingFileConversationsResponse(
            conversations=[convert.file_conversation(r) for r in rows], next_page_token=token
        )

    async def GetDownloadUrl(
        self, request: service_pb2.GetDownloadUrlRequest, context: Context
    ) -> service_pb2.GetDownloadUrlResponse:
        url = await self.operations.download_url(
            _caller(context),
            request.training_file_id,
            convert.file_format(request.format),
            convert.split(request.split),
            _expires_in(request),
            request.version,
        )
        return convert.download_url(url)

    async def ArchiveTrainingFile(
        self, request: service_pb2.ArchiveTrainingFileRequest, context: Context
    ) -> resources_pb2.TrainingFile:
        record = await self.operations.archive(_caller(context), request.training_file_id)
        return convert.training_file(record)

    async def ListEligibleConversations(
        self, request: service_pb2.ListEligibleConversationsRequest, context: Context
    ) -> service_pb2.ListEligibleConversationsResponse:
        rows, token = await self.operations.list_eligible(
            _caller(context),
            request.exclude_training_file_id,
            request.page_size,
            request.page_token,
            convert.selector(request.selector if request.HasField("selector") else None),
        )
        return service_pb2.ListEligibleConversationsResponse(
            conversations=[convert.eligible_conversation(r) for r in rows], next_page_token=token
        )

    async def ValidateConversations(
        self, request: service_pb2.ValidateConversationsRequest, context: Context
    ) -> service_pb2.ValidateConversationsResponse:
        problems, valid = await self.operations.validate(
            _caller(context),
            list(request.conversation_ids),
            request.training_file_id,
            request.on_behalf_of,
        )
        return service_pb2.ValidateConversationsResponse(
            problems=[convert.conversation_problem(p) for p in problems], valid_count=valid
        )
