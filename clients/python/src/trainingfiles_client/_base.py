"""The client, written once: `BaseClient` and one method per rpc.

As httpx builds `Client` and `AsyncClient` on one `BaseClient`, both clients of this
package are faces of the class below. It holds the connection settings and the channels,
and every rpc's method: its signature (GAPIC's shape: the request's fields, or
``request=``, then keyword-only ``timeout``, ``metadata`` and ``retry``) and its
docstring. Each method is a declaration: its arguments go, by name, into a `Call`
(``Call.of(locals())``), which `_calls` checks and builds into the request by the fields
they fill. The faces only send a prepared call: the synchronous one returns the
response, the asyncio one awaits it (`_client.py`, `_async_client.py`). How a method
reaches both faces is `_calls.rpc`; each method's defaults are a row of the table in
`_methods`.
"""

from __future__ import annotations

import datetime
import functools
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeAlias, Unpack

from trainingfiles.v1 import analytics_pb2, resources_pb2, service_pb2
from trainingfiles.v1.service_pb2 import (
    AddConversationsRequest,
    ArchiveTrainingFileRequest,
    CreateTrainingFileRequest,
    ExportTrainingFileRequest,
    GetDownloadUrlRequest,
    GetTrainingFileAnalyticsRequest,
    GetTrainingFileRequest,
    ListEligibleConversationsRequest,
    ListTrainingFileConversationsRequest,
    ListTrainingFilesRequest,
    ListTrainingFileVersionsRequest,
    RefreshTrainingFileRequest,
    RemoveConversationsRequest,
    SetAutoRefreshRequest,
    ValidateConversationsRequest,
)

from ._calls import (
    Blocking,
    Call,
    CallOptions,
    Faced,
    FaceT,
    Listed,
    Prepared,
    Steps,
    Streamed,
    Unary,
    helper,
    options,
    request,
    rpc,
)
from ._config import Connection, channel_options, resolve
from ._downloads import Downloaded, DownloadError, download, safe_name
from ._methods import DEFAULT, Kind, Method, Policy, service_config
from ._outputs import Format, FormatLike, Split, SplitLike, SplitOptions
from ._selectors import PairFilter, Selector

__all__ = ["BaseClient"]


Status: TypeAlias = resources_pb2.TrainingFileStatus.ValueType


class BaseClient(Faced[FaceT]):
    """What `TrainingFilesClient` and `AsyncTrainingFilesClient` share.

    Target, token and TLS come from the arguments, else from ``TRAININGFILES_TARGET``,
    ``TRAININGFILES_TOKEN`` and ``TRAININGFILES_TLS``, else default to ``127.0.0.1:50051``,
    no token, and plaintext for loopback targets (TLS for any other). The token goes out
    as ``authorization: Bearer <token>`` on every call. Each method has a default
    deadline and retry policy (reads are retried on UNAVAILABLE by the channel; Create,
    Add, Remove, Refresh, Export, Archive and SetAutoRefresh never are), which
    ``timeout=`` and ``retry=`` override per call. Every failure raises a
    `TrainingFilesError` subclass.
    """

    asynchronous: ClassVar[bool] = False
    _grpc: ClassVar[Any]  # the module that opens this face's channels: grpc or grpc.aio

    def __init__(
        self,
        target: str | None = None,
        *,
        token: str | None = None,
        tls: bool | None = None,
        credentials: Any = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self._connection: Connection = resolve(
            target, token=token, tls=tls, credentials=credentials
        )
        self._options = tuple(options)
        self._lock = threading.Lock()
        # One channel per retry policy in use: the table's, and one for each `retry=`
        # that differs from its method's default (opened on first use).
        self._channels: dict[Policy, Any] = {}
        self._senders: dict[tuple[Policy, str], Any] = {}
        self._channel(DEFAULT)

    @property
    def target(self) -> str:
        """The gRPC target this client talks to."""
        return self._connection.target

    def __repr__(self) -> str:
        return f"<{type(self).__name__} target={self.target!r}>"

    def _channel(self, policy: Policy) -> Any:
        with self._lock:
            channel = self._channels.get(policy)
            if channel is None:
                options = channel_options(service_config(policy), self._options)
                target, credentials = self._connection.target, self._connection.credentials
                if credentials is None:
                    channel = self._grpc.insecure_channel(target, options=options)
                else:
                    channel = self._grpc.secure_channel(target, credentials, options=options)
                self._channels[policy] = channel
            return channel

    def _prepare(self, method: Method, call: Call[Any, Any]) -> Prepared:
        """The call with its message built and its options resolved against the table."""
        timeout, metadata, retry = options(method, call)
        message = request(method, call)
        # The method's own policy is the main channel's; any other, a channel of its own.
        policy: Policy = DEFAULT if retry == method.retry else retry
        sender = self._senders.get((policy, method.name))
        if sender is None:
            channel = self._channel(policy)
            streaming = method.kind is Kind.STREAMING
            sender = (channel.unary_stream if streaming else channel.unary_unary)(
                method.path,
                request_serializer=method.request.SerializeToString,
                response_deserializer=method.response.FromString,
            )
            self._senders[(policy, method.name)] = sender
        metadata = self._connection.metadata(metadata)
        return Prepared(method, message, timeout, metadata, sender)

    def _invoke(self, method: Method, call: Call[Any, Any]) -> Any:
        prepared = self._prepare(method, call)
        if method.kind is Kind.STREAMING:
            return self._stream(prepared)
        if method.kind is Kind.PAGED:
            return self._paged(prepared)
        return self._unary(prepared)

    # How each face sends a call: the only code that differs between them.

    def _unary(self, call: Prepared) -> Any:
        raise NotImplementedError

    def _paged(self, call: Prepared) -> Any:
        raise NotImplementedError

    def _stream(self, call: Prepared) -> Any:
        raise NotImplementedError

    # ------------------------------------------------------------------ streaming rpcs

    @rpc
    def create_training_file(
        self,
        name: str | None = None,
        conversation_ids: Iterable[str] | None = None,
        description: str | None = None,
        on_behalf_of: str | None = None,
        formats: Iterable[FormatLike] | None = None,
        split: SplitOptions | resources_pb2.SplitOptions | None = None,
        drop_duplicates: bool | None = None,
        auto_refresh: bool | None = None,
        selector: Selector | service_pb2.ConversationSelector | None = None,
        pair_filter: PairFilter | resources_pb2.PairFilter | None = None,
        **options: Unpack[CallOptions[CreateTrainingFileRequest]],
    ) -> Streamed:
        """Create a training file from conversations; returns the running operation.

        The call starts at once; iterate the operation for progress events and call
        `result()` for the finished (ACTIVE) file. A rejected request raises from the
        first iteration or from `result()`. No deadline and never retried by default:
        after a failure, look the file up by the operation's `training_file_id` before
        calling again.

        `formats` (names such as ``"openai_chat"``, `Format` members or `FileFormat`
        values) are produced besides the two v4 outputs every version has; `split`
        divides the trainer formats into train and validation outputs; with
        `drop_duplicates`, repeated pairs are left out of them. With `auto_refresh`, the
        service refreshes the file by itself when its conversations are re-enriched (as
        `refresh_training_file` would; see `set_auto_refresh`).

        With a `selector` (a `Selector`, or the contract's `ConversationSelector`) the
        database chooses conversations too: every enriched one of the file's owner that
        matches, oldest first, after the listed `conversation_ids` (which may then be
        left out). Nothing matched and no id listed is `FailedPrecondition`
        (``NO_CONVERSATIONS_SELECTED``); more than the server's cap (100,000 by default)
        matched, `ResourceExhausted` (``TOO_MANY_CONVERSATIONS``); a selector's `owner`
        from a caller other than ``service_role``, or other than the file's owner,
        `PermissionDenied` (``SELECTOR_OWNER_NOT_ALLOWED``). The selector's document
        filters (`Selector.min_average_quality` and the like) leave out selected
        conversations once their documents are read; nothing left is
        `FailedPrecondition` (``ALL_CONVERSATIONS_FILTERED_OUT``).

        A `pair_filter` (``PairFilter(min_quality=4, reviewed_only=True)``) keeps only the
        pairs that meet it, in this version and every later one; the file counts what it
        left out (`excluded_pair_count`, `filtered_out_conversation_count`).

        Example:
            >>> operation = client.create_training_file("advisors-q3", ids, "Q3 set")
            >>> for event in operation:  # asyncio client: async for
            ...     print(event.stage, f"{event.done}/{event.total}")
            >>> operation.result().total_training_pairs  # asyncio: await ….result()
            412
            >>> client.create_training_file(request={"name": "q4", "conversation_ids": ids})
            >>> client.create_training_file(
            ...     "q4", ids, formats=["openai_chat", "parquet"],
            ...     split=SplitOptions(validation_fraction=0.1, seed=7), drop_duplicates=True,
            ... ).result().outputs
            >>> client.create_training_file("q4", ids, auto_refresh=True).result().auto_refresh
            True
            >>> since = datetime.datetime(2026, 11, 1, tzinfo=datetime.UTC)
            >>> client.create_training_file(
            ...     "november", selector=Selector(persona_ids=[persona], created_after=since)
            ... ).result().conversation_count
            57
        """
        return Call.of(locals())

    @rpc
    def add_conversations(
        self,
        training_file_id: str | None = None,
        conversation_ids: Iterable[str] | None = None,
        formats: Iterable[FormatLike] | None = None,
        selector: Selector | service_pb2.ConversationSelector | None = None,
        pair_filter: PairFilter | resources_pb2.PairFilter | None = None,
        **options: Unpack[CallOptions[AddConversationsRequest]],
    ) -> Streamed:
        """Add conversations to an ACTIVE file; returns the running operation.

        The file keeps its previous content until the rebuilt one is swapped in at the
        end (`version` + 1); on any failure nothing changes. The new version keeps the
        formats, split and duplicate handling of the current one, plus any `formats`
        named here. With a `selector`, the conversations of the file's owner it matches
        that the file lacks are added too, oldest first, after the listed ids (which may
        then be left out); see `create_training_file`. The file's pair filter applies to
        the added conversations; a `pair_filter` given must be the file's
        (`FailedPrecondition`, ``PAIR_FILTER_MISMATCH``). Never retried by default.

        Example:
            >>> updated = client.add_conversations(file_id, more_ids).result()
            >>> updated = await aclient.add_conversations(file_id, more_ids).result()
            >>> updated.version
            2
            >>> client.add_conversations(file_id, more_ids, formats=["sharegpt"]).result()
            >>> client.add_conversations(file_id, selector=Selector(training_topic_ids=[t]))
        """
        return Call.of(locals())

    @rpc
    def remove_conversations(
        self,
        training_file_id: str | None = None,
        conversation_ids: Iterable[str] | None = None,
        **options: Unpack[CallOptions[RemoveConversationsRequest]],
    ) -> Streamed:
        """Remove conversations from an ACTIVE file; returns the running operation.

        The new version (`version` + 1, reason REMOVED) is built from the stored file, no
        document fetched: the other pairs are kept as they were, every format of the file
        (and its split) is written again; stage RENDERING counts the stored pairs. On any
        failure nothing changes. Every id must be in the file (else
        `FailedPrecondition`, reason ``CONVERSATIONS_NOT_IN_FILE``, a violation per id);
        removing every conversation is refused (``WOULD_EMPTY_FILE``). A removed
        conversation may be added again (at the end). Never retried by default.

        Example:
            >>> updated = client.remove_conversations(file_id, [conversation_id]).result()
            >>> updated = await aclient.remove_conversations(file_id, ids).result()
            >>> updated.version, updated.conversation_count
            (3, 6)
        """
        return Call.of(locals())

    @rpc
    def refresh_training_file(
        self,
        training_file_id: str | None = None,
        remove_ineligible: bool | None = None,
        **options: Unpack[CallOptions[RefreshTrainingFileRequest]],
    ) -> Streamed:
        """Rebuild the stale conversations of an ACTIVE file; returns the running operation.

        A conversation is stale when it was re-enriched since the file was built (its
        `stale_conversation_count` on `get_training_file`). Only the stale documents are
        fetched (stage FETCHING), the other pairs are kept as they were, each refreshed
        conversation keeps its place, every format (and the split) is written again, as a
        new version (`version` + 1, reason REFRESHED). Nothing stale: the stream is
        VALIDATING, then the file as it is, `version` unchanged. A stale conversation that
        can no longer be used (not enriched, no enriched file, gone) fails the call
        (`FailedPrecondition`, reason ``CONVERSATIONS_NOT_ELIGIBLE``, a violation per
        conversation, its id the subject) unless `remove_ineligible` leaves it out of the
        new version; leaving out every conversation is refused (``WOULD_EMPTY_FILE``). On
        any failure nothing changes. Never retried by default.

        Example:
            >>> before = client.get_training_file(file_id)
            >>> before.version, before.stale_conversation_count
            (3, 2)
            >>> client.refresh_training_file(file_id).result().version
            4
            >>> again = await aclient.refresh_training_file(file_id).result()
            >>> again.version  # nothing stale any more: the file as it was
            4
            >>> client.refresh_training_file(file_id, remove_ineligible=True).result()
        """
        return Call.of(locals())

    @rpc
    def export_training_file(
        self,
        training_file_id: str | None = None,
        formats: Iterable[FormatLike] | None = None,
        **options: Unpack[CallOptions[ExportTrainingFileRequest]],
    ) -> Streamed:
        """Render formats of an ACTIVE file's current version; returns the running
        operation, as Create and Add do.

        The server renders from the stored v4 JSONL (stage RENDERING counts pairs), with
        the version's split and duplicate handling; `result()` is the file with the new
        `outputs`, `version` unchanged. On failure the file keeps the outputs it had.
        No deadline and not retried by default, like the other builds; calling it again
        after a failure is safe (it renders the same content again).

        Example:
            >>> operation = client.export_training_file(file_id, ["alpaca", "parquet"])
            >>> for event in operation:  # asyncio client: async for
            ...     print(event.stage, f"{event.done}/{event.total}")
            >>> [o.file_name for o in operation.result().outputs]
        """
        return Call.of(locals())

    # ------------------------------------------------------------------ unary rpcs

    @rpc
    def get_training_file(
        self,
        training_file_id: str | None = None,
        version: int | None = None,
        **options: Unpack[CallOptions[GetTrainingFileRequest]],
    ) -> Unary[resources_pb2.TrainingFile]:
        """One training file's metadata, in any status. Retried on UNAVAILABLE.

        `version` (None or 0: the current one) describes an earlier version: its counts,
        metrics, object paths and outputs; name, status and build settings are the
        file's. A version the file never had is NOT_FOUND (`VERSION_NOT_FOUND`).

        Example:
            >>> training_file = client.get_training_file(file_id)
            >>> training_file = await aclient.get_training_file(file_id, timeout=5)
            >>> training_file.status == resources_pb2.TRAINING_FILE_STATUS_ACTIVE
            True
            >>> client.get_training_file(file_id, version=1).total_training_pairs
            40
        """
        return Call.of(locals())

    @rpc
    def get_training_file_analytics(
        self,
        training_file_id: str | None = None,
        version: int | None = None,
        **options: Unpack[CallOptions[GetTrainingFileAnalyticsRequest]],
    ) -> Unary[analytics_pb2.TrainingFileAnalytics]:
        """The analytics of a version of a file (None or 0: the current one), as computed
        when it was built: distributions by persona, emotional arc, training topic and
        emotion with their balance, the quality histogram, pairs per conversation and the
        token statistics (`tokens`, unset for a version built before tokens were
        counted). Nothing is fetched; retried on UNAVAILABLE. A version the file never
        had (or a file still processing) is NOT_FOUND (`VERSION_NOT_FOUND`).

        Example:
            >>> figures = client.get_training_file_analytics(file_id)
            >>> figures.tokens.tokenizer, figures.tokens.p95_pair_tokens
            ('tiktoken:cl100k_base', 1874)
            >>> [(b.key, b.count) for b in figures.distributions[0].buckets][:2]
            [('overwhelmed_avoider', 12), ('anxious_planner', 9)]
            >>> first = await aclient.get_training_file_analytics(file_id, version=1)
        """
        return Call.of(locals())

    @rpc
    def list_training_files(
        self,
        status: Status | None = None,
        include_archived: bool | None = None,
        page_size: int | None = None,
        view: resources_pb2.TrainingFileView.ValueType | None = None,
        **options: Unpack[CallOptions[ListTrainingFilesRequest]],
    ) -> Listed[service_pb2.ListTrainingFilesResponse, resources_pb2.TrainingFile]:
        """Training files, newest first, across every page (fetched lazily).

        `status` UNSPECIFIED lists every status but ARCHIVED (with `include_archived`,
        ARCHIVED too). `view` TRAINING_FILE_VIEW_FULL includes each file's `outputs`
        (left out by default). `timeout` applies to each page's call.

        Example:
            >>> for training_file in client.list_training_files(
            ...     status=resources_pb2.TRAINING_FILE_STATUS_ACTIVE
            ... ):  # asyncio client: async for
            ...     print(training_file.id, training_file.name)
        """
        return Call.of(locals())

    @rpc
    def list_training_file_conversations(
        self,
        training_file_id: str | None = None,
        page_size: int | None = None,
        version: int | None = None,
        **options: Unpack[CallOptions[ListTrainingFileConversationsRequest]],
    ) -> Listed[
        service_pb2.ListTrainingFileConversationsResponse, resources_pb2.TrainingFileConversation
    ]:
        """A file's conversations in the order they were added, across every page.

        `version` (None or 0: the current one) lists an earlier version's members.

        Example:
            >>> for member in client.list_training_file_conversations(file_id):
            ...     print(member.conversation_id, member.quality_score, member.added_at)
            >>> members = [m async for m in aclient.list_training_file_conversations(file_id)]
            >>> first = list(client.list_training_file_conversations(file_id, version=1))
        """
        return Call.of(locals())

    @rpc
    def list_training_file_versions(
        self,
        training_file_id: str | None = None,
        page_size: int | None = None,
        **options: Unpack[CallOptions[ListTrainingFileVersionsRequest]],
    ) -> Listed[service_pb2.ListTrainingFileVersionsResponse, resources_pb2.TrainingFileVersion]:
        """A file's versions, newest first, across every page. Retried on UNAVAILABLE.

        Each Create, Add, Remove and Refresh that succeeds makes a version, which keeps
        its members, counts and outputs (an Export adds outputs to the current one).
        Versions past the server's retention are `pruned`: their metadata stays, their
        objects are gone, and a download URL of one is FAILED_PRECONDITION
        (`VERSION_PRUNED`).

        Example:
            >>> for v in client.list_training_file_versions(file_id):  # asyncio: async for
            ...     print(v.version, v.reason, v.change_count, v.pruned, v.current)
            >>> oldest = [v async for v in aclient.list_training_file_versions(file_id)][-1]
        """
        return Call.of(locals())

    @rpc
    def get_download_url(
        self,
        training_file_id: str | None = None,
        format: FormatLike | None = None,
        expires_in: datetime.timedelta | float | None = None,
        split: SplitLike | None = None,
        version: int | None = None,
        **options: Unpack[CallOptions[GetDownloadUrlRequest]],
    ) -> Unary[service_pb2.GetDownloadUrlResponse]:
        """A presigned HTTPS GET URL for one output (format and split) of the file.

        `format` and `split` are names (``"parquet"``, ``"validation"``), `Format` /
        `Split` members or the enums' values; without `split`, the whole file (or, for a
        trainer format of a split version, its train side). `expires_in` is seconds or a
        timedelta; None means the server's default (the contract says which range it
        accepts). `version` (None or 0: the current one) serves an earlier version's
        output. The response also carries the object's `size_bytes`, `sha256`, `split`,
        `version` and a safe `file_name`. An output the version lacks is
        FAILED_PRECONDITION (`OUTPUT_NOT_PRODUCED`): produce it with
        `export_training_file`; a pruned version's objects are gone (FAILED_PRECONDITION,
        `VERSION_PRUNED`); a version the file never had is NOT_FOUND (`VERSION_NOT_FOUND`).

        Example:
            >>> link = client.get_download_url(file_id, "v4_jsonl", expires_in=600)
            >>> link = await aclient.get_download_url(file_id, "parquet", split="validation")
            >>> link.size_bytes, link.sha256, link.expire_time.ToDatetime()
            >>> client.get_download_url(file_id, "v4_jsonl", version=1).version
            1
        """
        return Call.of(locals())

    @rpc
    def archive_training_file(
        self,
        training_file_id: str | None = None,
        **options: Unpack[CallOptions[ArchiveTrainingFileRequest]],
    ) -> Unary[resources_pb2.TrainingFile]:
        """Archive an ACTIVE file (kept and downloadable, no longer listed by default).

        Archiving an archived file returns it unchanged, so calling again after a failure
        is safe; like every write, it is not retried unless `retry` asks for it.

        Example:
            >>> archived = client.archive_training_file(file_id)
            >>> archived = await aclient.archive_training_file(request={"training_file_id": i})
            >>> archived.status == resources_pb2.TRAINING_FILE_STATUS_ARCHIVED
            True
        """
        return Call.of(locals())

    @rpc
    def set_auto_refresh(
        self,
        training_file_id: str | None = None,
        enabled: bool | None = None,
        **options: Unpack[CallOptions[SetAutoRefreshRequest]],
    ) -> Unary[resources_pb2.TrainingFile]:
        """Turn automatic refresh of a file on or off; returns the file.

        While it is on, the service refreshes the file by itself (as
        `refresh_training_file` would) once changes to its conversations' enrichment
        have settled; a refresh that fails is counted on the file (`refresh_attempts`,
        `refresh_error`) and tried again after a back-off (`next_refresh_time`).
        Switching clears the failures counted so far. Setting the state it already has
        is harmless, so calling again after a failure is safe; like every write, it is
        not retried unless `retry` asks for it.

        Example:
            >>> client.set_auto_refresh(file_id, True).auto_refresh
            True
            >>> await aclient.set_auto_refresh(file_id, enabled=False)
        """
        return Call.of(locals())

    @rpc
    def list_eligible_conversations(
        self,
        exclude_training_file_id: str | None = None,
        page_size: int | None = None,
        selector: Selector | service_pb2.ConversationSelector | None = None,
        **options: Unpack[CallOptions[ListEligibleConversationsRequest]],
    ) -> Listed[service_pb2.ListEligibleConversationsResponse, resources_pb2.EligibleConversation]:
        """Conversations that can be added to a file, newest first, across every page.

        With `exclude_training_file_id`, those already in that file are left out. With a
        `selector`, only those it matches: what a Create with it would take (its `limit`
        aside: the pager reads every page).

        Example:
            >>> import itertools
            >>> newest = itertools.islice(client.list_eligible_conversations(), 20)
            >>> ids = [c.conversation_id async for c in aclient.list_eligible_conversations()]
            >>> theirs = client.list_eligible_conversations(selector=Selector(persona_ids=[p]))
        """
        return Call.of(locals())

    @rpc
    def validate_conversations(
        self,
        conversation_ids: Iterable[str] | None = None,
        training_file_id: str | None = None,
        on_behalf_of: str | None = None,
        **options: Unpack[CallOptions[ValidateConversationsRequest]],
    ) -> Unary[service_pb2.ValidateConversationsResponse]:
        """Every problem a Create (or an Add to `training_file_id`) of these ids would
        report, changing nothing. Retried on UNAVAILABLE.

        Unlike an error's `violations`, which list only as many as fit gRPC's metadata
        limit (see `TrainingFilesError.violations_cut`), the response holds every one.

        Example:
            >>> report = client.validate_conversations(ids)
            >>> report = await aclient.validate_conversations(ids, file_id)
            >>> [(p.subject, p.reason) for p in report.problems]
            [('conversation_ids[1]', 'MALFORMED_ID')]
        """
        return Call.of(locals())

    # ------------------------------------------------------------------ helpers

    @helper
    def download_outputs(
        self,
        training_file_id: str,
        directory: str | os.PathLike[str],
        *,
        version: int | None = None,
        expires_in: datetime.timedelta | float | None = None,
        timeout: float | None = None,
        on_saved: Callable[[Downloaded], object] | None = None,
    ) -> Steps[list[Downloaded]]:
        """Download every output of the file's current version (or of `version`), the card
        included, into `directory` (created if missing) under their `file_name`s.

        A folder so filled loads with Hugging Face ``datasets.load_dataset(directory)``.
        Each object streams to ``NAME.part`` and is renamed once its size and SHA-256
        match the stored ones; files of the same names are replaced. The first failure
        raises (a `TrainingFilesError` of a call, or `DownloadError`); the files saved
        before it stay. `timeout` bounds each call and each wait for the object store;
        `on_saved` is called with each file as it is saved. Returns them in order. A
        pruned version's objects are gone: its first URL raises `FailedPrecondition`
        (`VERSION_PRUNED`), before anything is written.

        Example:
            >>> for saved in client.download_outputs(file_id, "advisors-q3/"):
            ...     print(saved.path, saved.size, saved.format, saved.split)
            >>> saved = await aclient.download_outputs(file_id, "advisors-q3/")
            >>> datasets.load_dataset("advisors-q3")["validation"].num_rows
            >>> client.download_outputs(file_id, "advisors-q3-v1/", version=1)
        """
        folder = Path(directory)
        options: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        face: Any = self  # its calls return results, or awaitables: the face's driver's
        training_file: resources_pb2.TrainingFile = yield face.get_training_file(
            training_file_id, version=version, **options
        )
        # A file without outputs has no content (the server says why), or comes from a
        # server older than outputs: it has the two v4 ones.
        outputs = list(training_file.outputs) or [
            resources_pb2.TrainingFileOutput(format=f, split=resources_pb2.SPLIT_ALL)
            for f in (resources_pb2.FILE_FORMAT_JSON, resources_pb2.FILE_FORMAT_JSONL)
        ]
        # Every URL first: a folder of one state of the version, or none.
        planned = []
        for output in outputs:
            link: service_pb2.GetDownloadUrlResponse = yield face.get_download_url(
                training_file_id,
                output.format,
                expires_in,
                output.split,
                version=version,
                **options,
            )
            changed = bool(output.object_key) and (
                link.size_bytes != output.size_bytes
                or (output.sha256 and link.sha256 and link.sha256 != output.sha256)
            )
            # A server that knows versions says which one the URL serves.
            if changed or (link.version and link.version != training_file.version):
                raise DownloadError(
                    f"{output.file_name} changed while its URL was issued (an Add or an "
                    "Export ran): download again"
                )
            planned.append((_known(Format, output.format), _known(Split, output.split), link))
        yield Blocking(functools.partial(folder.mkdir, parents=True, exist_ok=True))
        saved = []
        for file_format, split, link in planned:
            path = folder / safe_name(link.file_name)
            fetched: Downloaded = yield Blocking(
                functools.partial(download, link, path, timeout=timeout)
            )
            done = Downloaded(path, fetched.size, fetched.sha256, file_format, split)
            saved.append(done)
            if on_saved is not None:
                on_saved(done)
        return saved


def _known(kind: type[Format] | type[Split], value: int) -> Any:
    """The member for an enum value, or None for one newer than this client."""
    try:
        return kind.of(value)
    except ValueError:
        return None
