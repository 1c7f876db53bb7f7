"""The gRPC layer: unpack the request, call the domain, build the reply.

Nothing here catches exceptions: domain errors propagate to the interceptor, which is the
one place that turns them into statuses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from trainingfiles.v1 import resources_pb2, service_pb2, service_pb2_grpc

from .config import Settings
from .db import Database
from .errors import Unimplemented
from .storage import Storage

Context = Any  # grpc.aio.ServicerContext; grpc ships no type information


def _unimplemented(method: str) -> Unimplemented:
    return Unimplemented(f"{method} is not implemented by this server yet")


class TrainingFileServicer(service_pb2_grpc.TrainingFileServiceServicer):
    """`trainingfiles.v1.TrainingFileService` over the database and object storage."""

    def __init__(self, settings: Settings, database: Database, storage: Storage) -> None:
        self.settings = settings
        self.database = database
        self.storage = storage

    async def CreateTrainingFile(
        self, request: service_pb2.CreateTrainingFileRequest, context: Context
    ) -> AsyncIterator[service_pb2.TrainingFileProgress]:
        raise _unimplemented("CreateTrainingFile")
        yield  # pragma: no cover - makes this an async generator, as streams are

    async def AddConversations(
        self, request: service_pb2.AddConversationsRequest, context: Context
    ) -> AsyncIterator[service_pb2.TrainingFileProgress]:
        raise _unimplemented("AddConversations")
        yield  # pragma: no cover

    async def GetTrainingFile(
        self, request: service_pb2.GetTrainingFileRequest, context: Context
    ) -> resources_pb2.TrainingFile:
        raise _unimplemented("GetTrainingFile")

    async def ListTrainingFiles(
        self, request: service_pb2.ListTrainingFilesRequest, context: Context
    ) -> service_pb2.ListTrainingFilesResponse:
        raise _unimplemented("ListTrainingFiles")

    async def ListTrainingFileConversations(
        self, request: service_pb2.ListTrainingFileConversationsRequest, context: Context
    ) -> service_pb2.ListTrainingFileConversationsResponse:
        raise _unimplemented("ListTrainingFileConversations")

    async def GetDownloadUrl(
        self, request: service_pb2.GetDownloadUrlRequest, context: Context
    ) -> service_pb2.GetDownloadUrlResponse:
        raise _unimplemented("GetDownloadUrl")

    async def ArchiveTrainingFile(
        self, request: service_pb2.ArchiveTrainingFileRequest, context: Context
    ) -> resources_pb2.TrainingFile:
        raise _unimplemented("ArchiveTrainingFile")

    async def ListEligibleConversations(
        self, request: service_pb2.ListEligibleConversationsRequest, context: Context
    ) -> service_pb2.ListEligibleConversationsResponse:
        raise _unimplemented("ListEligibleConversations")
