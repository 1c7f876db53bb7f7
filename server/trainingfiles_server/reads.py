"""The read side: get, list, download links, archive, and validation without a build."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from uuid import UUID

from . import formats
from .analytics import Analytics
from .analytics import compute as compute_analytics
from .config import Settings
from .db import Database
from .errors import FailedPrecondition, InvalidArgument, NotFound, Violation
from .formats import Format
from .models import (
    Caller,
    DownloadUrl,
    EligibleConversation,
    FileConversation,
    OutputRecord,
    Selector,
    Split,
    Status,
    TrainingFileRecord,
    VersionRecord,
)
from .pagination import PageTokens, page_size
from .rules import (
    check_count,
    id_violations,
    ineligible,
    not_active,
    parse_uuid,
    selection_owner,
    url_expiry,
    visible,
)
from .storage import Storage

# Rows a list keeps, newest use last: a few pages of every view a console shows.
LISTED_ROWS = 1024


class ListedRows:
    """The rows lists have read, by (id, row version, with outputs), least recently used
    first out. A row's version moves on with any change of the row or its outputs (its
    migration), so a kept row is the row as it is while its version is current: a list
    reads the page's versions, then only the rows it does not have (converting a row and
    its decoding were three quarters of a List's CPU, docs/bench.md)."""

    def __init__(self, capacity: int = LISTED_ROWS) -> None:
        self._capacity = capacity
        self._rows: OrderedDict[tuple[UUID, int, bool], TrainingFileRecord] = OrderedDict()

    def get(self, key: tuple[UUID, int, bool]) -> TrainingFileRecord | None:
        record = self._rows.get(key)
        if record is not None:
            self._rows.move_to_end(key)
        return record

    def put(self, record: TrainingFileRecord, with_outputs: bool) -> None:
        assert record.row_version is not None
        self._rows[(record.id, record.row_version, with_outputs)] = record
        while len(self._rows) > self._capacity:
            self._rows.popitem(last=False)


class Reads:
    """Every operation that builds nothing."""

    def __init__(
        self, settings: Settings, database: Database, storage: Storage, tokens: PageTokens
    ) -> None:
        self.settings = settings
        self.database = database
        self.storage = storage
        self.tokens = tokens
        self.listed = ListedRows()

    async def validate(
        self, caller: Caller, ids: Sequence[str], training_file_id: str, on_behalf_of: str
    ) -> tuple[list[Violation], int]:
        """Every problem Create (or Add to `training_file_id`) would report, and the count
        of conversations without one; changes nothing."""
        check_count(ids, self.settings.max_conversations_per_request)
        parsed, problems = id_violations(ids)
        file_id: UUID | None = None
        if training_file_id:
            file_id = parse_uuid(training_file_id, "training_file_id")
            record = visible(caller, await self.database.get_file(file_id), file_id)
            owner = record.created_by or caller.user_id
            if record.status is not Status.ACTIVE:
                problems.append(
                    not_active(record, "only active files can be extended").violations[0]
                )
        else:
            owner = caller.owner_for(on_behalf_of)
        candidates = await self.database.check_conversations(parsed, file_id) if parsed else []
        unusable = ineligible(candidates, owner)
        problems.extend(unusable)
        return problems, len(candidates) - len(unusable)

    async def get(
        self, caller: Caller, training_file_id: str, version: int = 0
    ) -> TrainingFileRecord:
        """The file, with its stale count; as it was at `version` when one is named (0:
        the current one)."""
        return await self._find(caller, training_file_id, version, with_staleness=True)

    async def _find(
        self,
        caller: Caller,
        training_file_id: str,
        version: int = 0,
        *,
        with_staleness: bool = False,
    ) -> TrainingFileRecord:
        """The file the caller may see, at `version` (0: the current one); with its stale
        count (read in the same statement) when asked."""
        _check_version(version)
        file_id = parse_uuid(training_file_id, "training_file_id")
        found = await self.database.get_file(file_id, with_staleness=with_staleness)
        record = visible(caller, found, file_id)
        if version in (0, record.version):
            return record
        # An earlier version has no stale count: staleness is the current members'.
        unstaled = dataclasses.replace(record, stale_conversation_count=None)
        return (await self._version(record, version)).describe(unstaled)

    async def _version(self, record: TrainingFileRecord, version: int) -> VersionRecord:
        found = await self.database.get_version(record.id, version)
        if found is None:
            raise NotFound(
                "training_file_version", f"{record.id}@{version}", reason="VERSION_NOT_FOUND"
            )
        return found

    async def analytics(
        self, caller: Caller, training_file_id: str, version: int = 0
    ) -> tuple[TrainingFileRecord, int, Analytics]:
        """The analytics of `version` (0: the current one), as stored when it was built;
        for a version built before they were kept, what its members' rows allow (no
        token statistics, no emotions for members added before)."""
        _check_version(version)
        file_id = parse_uuid(training_file_id, "training_file_id")
        record = visible(caller, await self.database.get_file(file_id), file_id)
        # A file still processing (or failed) has no version: VERSION_NOT_FOUND.
        wanted = version or record.version
        found, stored, members = await self.database.version_analytics(file_id, wanted)
        if not found:
            raise NotFound(
                "training_file_version", f"{record.id}@{wanted}", reason="VERSION_NOT_FOUND"
            )
        figures = stored or compute_analytics(members, self.settings.context_length)
        return record, wanted, figures

    async def list_versions(
        self, caller: Caller, training_file_id: str, size: int, token: str
    ) -> tuple[list[VersionRecord], TrainingFileRecord, str]:
        """A page of the file's versions, newest first, and the file."""
        record = await self._find(caller, training_file_id)
        limit = page_size(size)
        query = f"versions:{record.id}"
        position = self.tokens.position(query, token)
        rows = await self.database.list_versions(
            record.id, int(position[0]) if position else None, limit + 1
        )
        next_token = ""
        if len(rows) > limit:
            rows = rows[:limit]
            next_token = self.tokens.issue(query, [rows[-1].version])
        return rows, record, next_token

    async def set_auto_refresh(
        self, caller: Caller, training_file_id: str, enabled: bool
    ) -> TrainingFileRecord:
        record = await self._find(caller, training_file_id)
        updated = await self.database.set_auto_refresh(record.id, enabled)
        if updated is None:
            raise NotFound("training_file", str(record.id))
        return await self.database.with_staleness(updated)

    async def archive(self, caller: Caller, training_file_id: str) -> TrainingFileRecord:
        record = await self._find(caller, training_file_id)
        if record.status is Status.ARCHIVED:
            return await self.database.with_staleness(record)
        archived = await self.database.archive(record.id)
        if archived is not None:
            return await self.database.with_staleness(archived)
        current = await self._find(caller, training_file_id)
        if current.status is Status.ARCHIVED:
            return await self.database.with_staleness(current)
        raise not_active(current, "only active files can be archived")

    async def list_files(
        self,
        caller: Caller,
        status: Status | None,
        include_archived: bool,
        size: int,
        token: str,
        with_outputs: bool = False,
    ) -> tuple[list[TrainingFileRecord], str]:
        limit = page_size(size)
        query = (
            f"files:{status.value if status else ''}:{int(include_archived)}:{caller.user_id or ''}"
        )
        position = self.tokens.position(query, token)
        after = (datetime.fromisoformat(position[0]), UUID(position[1])) if position else None
        page = await self.database.list_file_versions(
            status=status,
            include_archived=include_archived,
            after=after,
            limit=limit + 1,
            owner=caller.user_id,
        )
        next_token = ""
        if len(page) > limit:
            page = page[:limit]
            last_id, _, last_created = page[-1]
            next_token = self.tokens.issue(query, [last_created.isoformat(), str(last_id)])
        return await self._listed_rows(page, with_outputs), next_token

    async def _listed_rows(
        self, page: Sequence[tuple[UUID, int, datetime]], with_outputs: bool
    ) -> list[TrainingFileRecord]:
        """The page's rows, in its order: those `listed` has at their version, and the
        others read in one query (a row deleted meanwhile is left out; one changed
        meanwhile is read as it is now)."""
        found = {
            file_id: self.listed.get((file_id, row_version, with_outputs))
            for file_id, row_version, _ in page
        }
        missing = [file_id for file_id, record in found.items() if record is None]
        if missing:
            for file_id, record in (await self.database.files_by_id(missing, with_outputs)).items():
                self.listed.put(record, with_outputs)
                found[file_id] = record
        return [record for record in found.values() if record is not None]

    async def list_file_conversations(
        self, caller: Caller, training_file_id: str, size: int, token: str, version: int = 0
    ) -> tuple[list[FileConversation], str]:
        record = await self._find(caller, training_file_id, version)
        limit = page_size(size)
        query = f"members:{record.id}:{version}"
        position = self.tokens.position(query, token)
        after = int(position[0]) if position else -1
        rows = await self.database.list_file_conversations(
            record.id, after, limit + 1, version or None
        )
        next_token = ""
        if len(rows) > limit:
            rows = rows[:limit]
            next_token = self.tokens.issue(query, [rows[-1].position])
        return rows, next_token

    async def list_eligible(
        self,
        caller: Caller,
        exclude_training_file_id: str,
        size: int,
        token: str,
        selector: Selector | None = None,
    ) -> tuple[list[EligibleConversation], str]:
        limit = page_size(size)
        if selector is not None and selector.document_filter is not None:
            # Their inputs are in the documents, which a listing does not read.
            why = (
                "min_average_quality, human_reviewed_only and emotions apply to Create and "
                "Add only (they are judged on each document as it is read)"
            )
            raise InvalidArgument(
                f"selector: {why}",
                [Violation("selector", "DOCUMENT_FILTER_NOT_LISTABLE", why)],
                reason="DOCUMENT_FILTER_NOT_LISTABLE",
            )
        exclude: UUID | None = None
        if exclude_training_file_id:
            # Parsed here so that a malformed id is reported under its own field name.
            file_id = parse_uuid(exclude_training_file_id, "exclude_training_file_id")
            exclude = visible(caller, await self.database.get_file(file_id), file_id).id
        chosen = selector or Selector()
        owner = selection_owner(caller, caller.user_id, chosen)
        query = f"eligible:{exclude or ''}:{owner or ''}:{chosen.key()}"
        position = self.tokens.position(query, token)
        after = (datetime.fromisoformat(position[0]), UUID(position[1])) if position else None
        rows = await self.database.list_eligible(
            exclude_file=exclude, after=after, limit=limit + 1, owner=owner, selector=chosen
        )
        next_token = ""
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1]
            next_token = self.tokens.issue(
                query, [last.created_at.isoformat(), str(last.conversation_id)]
            )
        return rows, next_token

    async def download_url(
        self,
        caller: Caller,
        training_file_id: str,
        file_format: Format | None,
        split: Split | None,
        expires_in: int | None,
        version: int = 0,
    ) -> DownloadUrl:
        if file_format is None:
            raise InvalidArgument.field("format", "name the output's format", "REQUIRED")
        _check_version(version)
        seconds = url_expiry(expires_in)
        file_id = parse_uuid(training_file_id, "training_file_id")
        expire = datetime.now(UTC) + timedelta(seconds=seconds)
        # The link's expiry is noted on the file before its keys are read: objects that
        # retention prunes later are kept until then (the sweeper deletes them after).
        # A commit pruning a version holds the file's row, so the version read after
        # this either is pruned already or has its objects kept for this link.
        record = await self.database.note_link(file_id, expire, caller.user_id)
        if record is None:
            current = visible(caller, await self.database.get_file(file_id), file_id)
            raise not_active(current, "it has no content to download")
        if version not in (0, record.version):
            found = await self._version(record, version)
            if found.pruned_at is not None:
                raise FailedPrecondition(
                    f"version {version} of training file {record.id} was pruned (only the "
                    f"last {self.settings.version_retention} versions keep their objects)",
                    [Violation(f"version/{version}", "VERSION_PRUNED", "its objects are gone")],
                    reason="VERSION_PRUNED",
                )
            record = found.describe(record)
        output = _pick_output(record, file_format, split)
        file_name = formats.file_name(record.name, file_format, output.split.value)
        url = await self.storage.presign(
            record.storage_bucket, output.object_key, file_name, seconds
        )
        return DownloadUrl(
            url,
            expire,
            output.format,
            output.split,
            output.size_bytes,
            file_name,
            output.sha256,
            record.version,
        )


def _check_version(version: int) -> None:
    if version < 0:
        raise InvalidArgument.field(
            "version", "a version is 1 or more (0: the current one)", "INVALID_VERSION"
        )


def _pick_output(record: TrainingFileRecord, fmt: Format, split: Split | None) -> OutputRecord:
    """The output asked for; an unset split means the whole file, or the train side."""
    candidates = [split] if split is not None else [Split.ALL, Split.TRAIN]
    for side in candidates:
        found = record.output(fmt.name, side)
        if found is not None:
            return found
    wanted = (split or Split.ALL).value
    have = ", ".join(f"{o.format}/{o.split.value}" for o in record.outputs)
    raise FailedPrecondition(
        f"training file {record.id} has no {fmt.name} output for split {wanted!r} (it has: "
        f"{have}); render it with ExportTrainingFile",
        [Violation(f"{fmt.name}/{wanted}", "OUTPUT_NOT_PRODUCED", f"outputs: {have}")],
        reason="OUTPUT_NOT_PRODUCED",
    )
