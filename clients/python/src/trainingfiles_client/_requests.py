"""Request messages from the clients' typed arguments, shared by the sync and async client.

Only what both clients would otherwise repeat: argument checks that protect the caller
from silent mistakes (a string where a list of ids belongs), and type conversions. The
server validates everything else and reports it with typed details.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import TypeAlias

from google.protobuf import duration_pb2

from trainingfiles.v1 import resources_pb2, service_pb2

TrainingFileStatus: TypeAlias = resources_pb2.TrainingFileStatus.ValueType
FileFormat: TypeAlias = resources_pb2.FileFormat.ValueType
Expiry: TypeAlias = datetime.timedelta | int | None


def ids(conversation_ids: Iterable[str]) -> list[str]:
    # A lone string is an iterable of one-character "ids": refuse it rather than send it.
    if isinstance(conversation_ids, str | bytes):
        raise TypeError("conversation_ids must be a list of ids, not a single string")
    return list(conversation_ids)


def create(
    name: str, conversation_ids: Iterable[str], description: str | None, on_behalf_of: str
) -> service_pb2.CreateTrainingFileRequest:
    request = service_pb2.CreateTrainingFileRequest(
        name=name, conversation_ids=ids(conversation_ids), on_behalf_of=on_behalf_of
    )
    if description is not None:
        request.description = description
    return request


def add(
    training_file_id: str, conversation_ids: Iterable[str]
) -> service_pb2.AddConversationsRequest:
    return service_pb2.AddConversationsRequest(
        training_file_id=training_file_id, conversation_ids=ids(conversation_ids)
    )


def get(training_file_id: str) -> service_pb2.GetTrainingFileRequest:
    return service_pb2.GetTrainingFileRequest(training_file_id=training_file_id)


def list_files(
    status: TrainingFileStatus, include_archived: bool, page_size: int, page_token: str
) -> service_pb2.ListTrainingFilesRequest:
    return service_pb2.ListTrainingFilesRequest(
        status=status,
        include_archived=include_archived,
        page_size=page_size,
        page_token=page_token,
    )


def list_file_conversations(
    training_file_id: str, page_size: int, page_token: str
) -> service_pb2.ListTrainingFileConversationsRequest:
    return service_pb2.ListTrainingFileConversationsRequest(
        training_file_id=training_file_id, page_size=page_size, page_token=page_token
    )


def download_url(
    training_file_id: str, file_format: FileFormat, expires_in: Expiry
) -> service_pb2.GetDownloadUrlRequest:
    request = service_pb2.GetDownloadUrlRequest(
        training_file_id=training_file_id, format=file_format
    )
    if isinstance(expires_in, datetime.timedelta):
        request.expires_in.CopyFrom(_duration(expires_in))
    elif expires_in is not None:
        request.expires_in.seconds = expires_in
    return request


def archive(training_file_id: str) -> service_pb2.ArchiveTrainingFileRequest:
    return service_pb2.ArchiveTrainingFileRequest(training_file_id=training_file_id)


def list_eligible(
    exclude_training_file_id: str, page_size: int, page_token: str
) -> service_pb2.ListEligibleConversationsRequest:
    return service_pb2.ListEligibleConversationsRequest(
        exclude_training_file_id=exclude_training_file_id,
        page_size=page_size,
        page_token=page_token,
    )


def _duration(delta: datetime.timedelta) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromTimedelta(delta)
    return duration


def validate(
    conversation_ids: Iterable[str], training_file_id: str, on_behalf_of: str
) -> service_pb2.ValidateConversationsRequest:
    return service_pb2.ValidateConversationsRequest(
        conversation_ids=ids(conversation_ids),
        training_file_id=training_file_id,
        on_behalf_of=on_behalf_of,
    )
