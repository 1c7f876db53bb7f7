"""The synchronous client: one method per rpc, over one channel it owns."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

import grpc

from trainingfiles.v1 import resources_pb2, service_pb2, service_pb2_grpc

from . import _requests
from ._config import Connection, channel_options, resolve
from ._exceptions import translated
from ._operations import TrainingFileOperation
from ._pagers import Pager

__all__ = ["TrainingFilesClient"]

Metadata = Sequence[tuple[str, str | bytes]]


class TrainingFilesClient:
    """A client of the Training File Service, for synchronous code.

    Target, token and TLS come from the arguments, else from ``TRAININGFILES_TARGET``,
    ``TRAININGFILES_TOKEN`` and ``TRAININGFILES_TLS``, else default to ``127.0.0.1:50051``,
    no token, and plaintext for loopback targets (TLS for any other). The token goes out
    as ``authorization: Bearer <token>`` on every call. Idempotent reads are retried on
    UNAVAILABLE by the channel; Create and Add never are. Every failure raises a
    `TrainingFilesError` subclass.

    Example:
        >>> from trainingfiles_client import TrainingFilesClient
        >>> with TrainingFilesClient("127.0.0.1:50051", token=token) as client:
        ...     training_file = client.get_training_file(file_id)
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        token: str | None = None,
        tls: bool | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self._connection: Connection = resolve(
            target, token=token, tls=tls, credentials=credentials
        )
        target = self._connection.target
        if self._connection.credentials is None:
            self._channel = grpc.insecure_channel(target, options=channel_options(options))
        else:
            self._channel = grpc.secure_channel(
                target, self._connection.credentials, options=channel_options(options)
            )
        self._stub = service_pb2_grpc.TrainingFileServiceStub(self._channel)

    @property
    def target(self) -> str:
        """The gRPC target this client talks to."""
        return self._connection.target

    def close(self) -> None:
        """Close the channel; running calls are cancelled. ``with`` does it for you.

        Example:
            >>> client = TrainingFilesClient()
            >>> try:
            ...     client.get_training_file(file_id)
            ... finally:
            ...     client.close()
        """
        self._channel.close()

    def __enter__(self) -> TrainingFilesClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<TrainingFilesClient target={self.target!r}>"

    def _metadata(self, metadata: Metadata | None) -> list[tuple[str, str | bytes]]:
        return self._connection.metadata(metadata)

    # ------------------------------------------------------------------ streaming rpcs

    def create_training_file(
        self,
        name: str,
        conversation_ids: Iterable[str],
        description: str | None = None,
        on_behalf_of: str = "",
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> TrainingFileOperation:
        """Create a training file from conversations; returns the running operation.

        The call starts at once; iterate the operation for progress events and call
        `result()` for the finished (ACTIVE) file. A rejected request raises from the
        first iteration or from `result()`. Never retried: after a failure, look the file
        up by the operation's `training_file_id` before calling again.

        Example:
            >>> operation = client.create_training_file("advisors-q3", ids, "Q3 set")
            >>> for event in operation:
            ...     print(event.stage, f"{event.done}/{event.total}")
            >>> operation.result().total_training_pairs
            412
        """
        request = _requests.create(name, conversation_ids, description, on_behalf_of)
        with translated():
            call = self._stub.CreateTrainingFile(
                request, timeout=timeout, metadata=self._metadata(metadata)
            )
        return TrainingFileOperation(call)

    def add_conversations(
        self,
        training_file_id: str,
        conversation_ids: Iterable[str],
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> TrainingFileOperation:
        """Add conversations to an ACTIVE file; returns the running operation.

        The file keeps its previous content until the rebuilt one is swapped in at the
        end (`version` + 1); on any failure nothing changes. Never retried.

        Example:
            >>> updated = client.add_conversations(file_id, more_ids).result()
            >>> updated.version
            2
        """
        request = _requests.add(training_file_id, conversation_ids)
        with translated():
            call = self._stub.AddConversations(
                request, timeout=timeout, metadata=self._metadata(metadata)
            )
        return TrainingFileOperation(call)

    # ------------------------------------------------------------------ unary rpcs

    def get_training_file(
        self,
        training_file_id: str,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> resources_pb2.TrainingFile:
        """One training file's metadata, in any status. Retried on UNAVAILABLE.

        Example:
            >>> training_file = client.get_training_file(file_id)
            >>> training_file.status == resources_pb2.TRAINING_FILE_STATUS_ACTIVE
            True
        """
        with translated():
            response: resources_pb2.TrainingFile = self._stub.GetTrainingFile(
                _requests.get(training_file_id),
                timeout=timeout,
                metadata=self._metadata(metadata),
            )
        return response

    def list_training_files(
        self,
        status: _requests.TrainingFileStatus = resources_pb2.TRAINING_FILE_STATUS_UNSPECIFIED,
        include_archived: bool = False,
        page_size: int = 0,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> Pager[service_pb2.ListTrainingFilesResponse, resources_pb2.TrainingFile]:
        """Training files, newest first, across every page (fetched lazily).

        `status` UNSPECIFIED lists every status but ARCHIVED (with `include_archived`,
        ARCHIVED too). `timeout` applies to each page's call.

        Example:
            >>> for training_file in client.list_training_files(
            ...     status=resources_pb2.TRAINING_FILE_STATUS_ACTIVE
            ... ):
            ...     print(training_file.id, training_file.name)
        """

        def fetch(token: str) -> service_pb2.ListTrainingFilesResponse:
            request = _requests.list_files(status, include_archived, page_size, token)
            with translated():
                response: service_pb2.ListTrainingFilesResponse = self._stub.ListTrainingFiles(
                    request, timeout=timeout, metadata=self._metadata(metadata)
                )
            return response

        return Pager(fetch, lambda page: page.training_files)

    def list_training_file_conversations(
        self,
        training_file_id: str,
        page_size: int = 0,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> Pager[
        service_pb2.ListTrainingFileConversationsResponse, resources_pb2.TrainingFileConversation
    ]:
        """A file's conversations in the order they were added, across every page.

        Example:
            >>> for member in client.list_training_file_conversations(file_id):
            ...     print(member.conversation_id, member.quality_score, member.added_at)
        """

        def fetch(token: str) -> service_pb2.ListTrainingFileConversationsResponse:
            request = _requests.list_file_conversations(training_file_id, page_size, token)
            with translated():
                response: service_pb2.ListTrainingFileConversationsResponse = (
                    self._stub.ListTrainingFileConversations(
                        request, timeout=timeout, metadata=self._metadata(metadata)
                    )
                )
            return response

        return Pager(fetch, lambda page: page.conversations)

    def get_download_url(
        self,
        training_file_id: str,
        format: _requests.FileFormat,
        expires_in: _requests.Expiry = None,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> service_pb2.GetDownloadUrlResponse:
        """A presigned HTTPS GET URL for the file's JSON or JSONL object.

        `expires_in` is whole seconds (or a timedelta) from 60 s to 7 days; None means
        one hour. The response also carries the object's `size_bytes` and a safe
        `file_name`.

        Example:
            >>> link = client.get_download_url(
            ...     file_id, resources_pb2.FILE_FORMAT_JSONL, expires_in=600
            ... )
            >>> urllib.request.urlretrieve(link.url, link.file_name)
        """
        with translated():
            response: service_pb2.GetDownloadUrlResponse = self._stub.GetDownloadUrl(
                _requests.download_url(training_file_id, format, expires_in),
                timeout=timeout,
                metadata=self._metadata(metadata),
            )
        return response

    def archive_training_file(
        self,
        training_file_id: str,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> resources_pb2.TrainingFile:
        """Archive an ACTIVE file (kept and downloadable, no longer listed by default).

        Archiving an archived file returns it unchanged, so calling again after a failure
        is safe; like every write, it is never retried automatically.

        Example:
            >>> archived = client.archive_training_file(file_id)
            >>> archived.status == resources_pb2.TRAINING_FILE_STATUS_ARCHIVED
            True
        """
        with translated():
            response: resources_pb2.TrainingFile = self._stub.ArchiveTrainingFile(
                _requests.archive(training_file_id),
                timeout=timeout,
                metadata=self._metadata(metadata),
            )
        return response

    def list_eligible_conversations(
        self,
        exclude_training_file_id: str = "",
        page_size: int = 0,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> Pager[service_pb2.ListEligibleConversationsResponse, resources_pb2.EligibleConversation]:
        """Conversations that can be added to a file, newest first, across every page.

        With `exclude_training_file_id`, those already in that file are left out.

        Example:
            >>> import itertools
            >>> newest = itertools.islice(client.list_eligible_conversations(), 20)
            >>> ids = [c.conversation_id for c in newest]
        """

        def fetch(token: str) -> service_pb2.ListEligibleConversationsResponse:
            request = _requests.list_eligible(exclude_training_file_id, page_size, token)
            with translated():
                response: service_pb2.ListEligibleConversationsResponse = (
                    self._stub.ListEligibleConversations(
                        request, timeout=timeout, metadata=self._metadata(metadata)
                    )
                )
            return response

        return Pager(fetch, lambda page: page.conversations)

    def validate_conversations(
        self,
        conversation_ids: Iterable[str],
        training_file_id: str = "",
        on_behalf_of: str = "",
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> service_pb2.ValidateConversationsResponse:
        """Every problem a Create (or an Add to `training_file_id`) of these ids would
        report, changing nothing. Retried on UNAVAILABLE.

        Unlike an error's `violations`, which list only as many as fit gRPC's metadata
        limit (see `TrainingFilesError.violations_cut`), the response holds every one.

        Example:
            >>> report = client.validate_conversations(ids)
            >>> [(p.subject, p.reason) for p in report.problems]
            [('conversation_ids[1]', 'MALFORMED_ID')]
        """
        with translated():
            response: service_pb2.ValidateConversationsResponse = self._stub.ValidateConversations(
                _requests.validate(conversation_ids, training_file_id, on_behalf_of),
                timeout=timeout,
                metadata=self._metadata(metadata),
            )
        return response
