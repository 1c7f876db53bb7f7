"""The reads and small writes: Get, List (filters, keyset pagination, page tokens),
GetDownloadUrl (expiry, format), Archive, ListEligibleConversations."""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import orjson
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2

from tests.e2e.conftest import OWNER, Dataset
from tests.e2e.helpers import (
    ACTIVE,
    ARCHIVED,
    FAILED,
    JSON,
    JSONL,
    TIMEOUT,
    Stub,
    add,
    collect,
    conversations_by_id,
    create,
    create_ok,
    detail,
    download,
    expect_error,
    get,
    precondition_violations,
    stream_error,
    unique_name,
    violation_fields,
)
from trainingfiles.v1 import resources_pb2, service_pb2
from trainingfiles_dev.generator import Kind
from trainingfiles_server.app import RunningServer

UNSPECIFIED = resources_pb2.TRAINING_FILE_STATUS_UNSPECIFIED
BASIC = resources_pb2.TRAINING_FILE_VIEW_BASIC
FULL = resources_pb2.TRAINING_FILE_VIEW_FULL


async def _list_page(
    stub: Stub,
    status: int = UNSPECIFIED,
    include_archived: bool = False,
    page_size: int = 0,
    page_token: str = "",
) -> service_pb2.ListTrainingFilesResponse:
    response: service_pb2.ListTrainingFilesResponse = await stub.ListTrainingFiles(
        service_pb2.ListTrainingFilesRequest(
            status=status,  # type: ignore[arg-type]
            include_archived=include_archived,
            page_size=page_size,
            page_token=page_token,
        ),
        timeout=TIMEOUT,
    )
    return response


async def _list_all(
    stub: Stub, status: int = UNSPECIFIED, include_archived: bool = False, page_size: int = 1000
) -> list[resources_pb2.TrainingFile]:
    files: list[resources_pb2.TrainingFile] = []
    token = ""
    while True:
        page = await _list_page(stub, status, include_archived, page_size, token)
        files.extend(page.training_files)
        token = page.next_page_token
        if not token:
            return files


async def _eligible_page(
    stub: Stub, page_size: int = 0, page_token: str = "", exclude: str = ""
) -> service_pb2.ListEligibleConversationsResponse:
    response: service_pb2.ListEligibleConversationsResponse = await stub.ListEligibleConversations(
        service_pb2.ListEligibleConversationsRequest(
            page_size=page_size, page_token=page_token, exclude_training_file_id=exclude
        ),
        timeout=TIMEOUT,
    )
    return response


async def _eligible_all(
    stub: Stub, page_size: int, exclude: str = ""
) -> list[resources_pb2.EligibleConversation]:
    found: list[resources_pb2.EligibleConversation] = []
    token = ""
    while True:
        page = await _eligible_page(stub, page_size, token, exclude)
        assert len(page.conversations) <= page_size
        found.extend(page.conversations)
        token = page.next_page_token
        if not token:
            return found


async def _archive(stub: Stub, file_id: str) -> resources_pb2.TrainingFile:
    file: resources_pb2.TrainingFile = await stub.ArchiveTrainingFile(
        service_pb2.ArchiveTrainingFileRequest(training_file_id=file_id), timeout=TIMEOUT
    )
    return file


async def _url(
    stub: Stub, file_id: str, file_format: int = JSON, seconds: int | None = None, nanos: int = 0
) -> service_pb2.GetDownloadUrlResponse:
    request = service_pb2.GetDownloadUrlRequest(
        training_file_id=file_id,
        format=file_format,  # type: ignore[arg-type]
    )
    if seconds is not None:
        request.expires_in.CopyFrom(duration_pb2.Duration(seconds=seconds, nanos=nanos))
    response: service_pb2.GetDownloadUrlResponse = await stub.GetDownloadUrl(
        request, timeout=TIMEOUT
    )
    return response


def _newest_first(files: list[resources_pb2.TrainingFile]) -> bool:
    keys = [(f.created_at.ToDatetime(), uuid.UUID(f.id)) for f in files]
    return keys == sorted(keys, reverse=True)


@dataclass(frozen=True)
class ByStatus:
    active: resources_pb2.TrainingFile
    archived: resources_pb2.TrainingFile
    failed: resources_pb2.TrainingFile


@pytest.fixture(scope="module")
async def by_status(stub: Stub, dataset: Dataset) -> ByStatus:
    """One file in each final status, created in the order active, archived, failed."""
    active = await create_ok(stub, unique_name("reads-active"), dataset.ids()[50:51])
    archived = await _archive(
        stub, (await create_ok(stub, unique_name("reads-archived"), dataset.ids()[51:52])).id
    )
    failed = await create(
        stub, unique_name("reads-failed"), [*dataset.ids(Kind.MISSING_OBJECT)[:1]]
    )
    assert stream_error(failed).code() == grpc.StatusCode.FAILED_PRECONDITION
    return ByStatus(active, archived, await get(stub, failed.training_file_id))


# ----------------------------------------------------------------- Get


async def test_get_of_an_unknown_file_is_not_found(stub: Stub) -> None:
    unknown = str(uuid.uuid4())

    error = await expect_error(get(stub, unknown))

    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert detail(error, error_details_pb2.ResourceInfo).resource_name == unknown


async def test_get_of_a_malformed_id_is_invalid_argument(stub: Stub) -> None:
    error = await expect_error(get(stub, "12345"))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation_fields(error) == ["training_file_id"]


async def test_get_returns_a_file_in_any_status(by_status: ByStatus, stub: Stub) -> None:
    assert (await get(stub, by_status.active.id)).status == ACTIVE
    assert (await get(stub, by_status.archived.id)).status == ARCHIVED
    assert (await get(stub, by_status.failed.id)).status == FAILED
    assert by_status.failed.error_message


# ----------------------------------------------------------------- List: filters and order


async def test_list_is_newest_first(by_status: ByStatus, stub: Stub) -> None:
    files = await _list_all(stub, include_archived=True)

    assert _newest_first(files)
    positions = {f.id: i for i, f in enumerate(files)}
    assert (
        positions[by_status.failed.id]
        < positions[by_status.archived.id]
        < positions[by_status.active.id]
    )


async def test_list_hides_archived_files_by_default(by_status: ByStatus, stub: Stub) -> None:
    files = await _list_all(stub)
    ids = {f.id for f in files}

    assert by_status.archived.id not in ids
    assert {by_status.active.id, by_status.failed.id} <= ids
    assert ARCHIVED not in {f.status for f in files}


async def test_list_with_include_archived_shows_every_status(
    by_status: ByStatus, stub: Stub
) -> None:
    ids = {f.id for f in await _list_all(stub, include_archived=True)}

    assert {by_status.active.id, by_status.archived.id, by_status.failed.id} <= ids


@pytest.mark.parametrize("status", [ACTIVE, ARCHIVED, FAILED])
@pytest.mark.parametrize("include_archived", [False, True])
async def test_list_with_a_status_returns_only_files_in_that_status(
    by_status: ByStatus, stub: Stub, status: int, include_archived: bool
) -> None:
    expected: dict[int, resources_pb2.TrainingFile] = {
        ACTIVE: by_status.active,
        ARCHIVED: by_status.archived,
        FAILED: by_status.failed,
    }

    files = await _list_all(stub, status, include_archived)

    assert {f.status for f in files} == {status}
    assert expected[status].id in {f.id for f in files}
    assert _newest_first(files)


async def test_list_with_an_unknown_status_is_invalid_argument(stub: Stub) -> None:
    error = await expect_error(_list_page(stub, status=42))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation_fields(error) == ["status"]


async def test_list_with_a_negative_page_size_is_invalid_argument(stub: Stub) -> None:
    error = await expect_error(_list_page(stub, page_size=-1))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation_fields(error) == ["page_size"]


# ----------------------------------------------------------------- List: pagination


async def test_paging_lists_every_existing_file_once_while_files_are_created(
    stub: Stub, dataset: Dataset
) -> None:
    for i in range(7):
        await create_ok(stub, unique_name(f"page-{i}"), dataset.ids()[i : i + 1])
    existing = [f.id for f in await _list_all(stub)]
    assert len(existing) >= 7

    seen: list[str] = []
    created_meanwhile: list[str] = []
    token = ""
    while True:
        page = await _list_page(stub, page_size=2, page_token=token)
        assert 0 < len(page.training_files) <= 2
        seen.extend(f.id for f in page.training_files)
        token = page.next_page_token
        if not token:
            break
        if len(created_meanwhile) < 3:
            file = await create_ok(stub, unique_name("page-new"), dataset.ids()[:1])
            created_meanwhile.append(file.id)

    assert len(created_meanwhile) == 3
    assert seen == existing
    assert len(set(seen)) == len(seen)
    assert not set(created_meanwhile) & set(seen)


async def test_page_size_zero_means_fifty(stub: Stub, dataset: Dataset) -> None:
    while len(await _list_all(stub)) <= 50:
        await create_ok(stub, unique_name("fifty"), dataset.ids()[:1])

    page = await _list_page(stub)

    assert len(page.training_files) == 50
    assert page.next_page_token


async def test_the_last_page_has_no_next_token(stub: Stub) -> None:
    total = len(await _list_all(stub))

    exact = await _list_page(stub, page_size=total)
    beyond = await _list_page(stub, page_size=total + 1)

    assert len(exact.training_files) == len(beyond.training_files) == total
    assert exact.next_page_token == beyond.next_page_token == ""


async def _listed(stub: Stub, file_id: str, view: int) -> resources_pb2.TrainingFile:
    page = await stub.ListTrainingFiles(
        service_pb2.ListTrainingFilesRequest(
            include_archived=True,
            page_size=1000,
            view=view,  # type: ignore[arg-type]
        ),
        timeout=TIMEOUT,
    )
    listed: resources_pb2.TrainingFile = next(f for f in page.training_files if f.id == file_id)
    return listed


async def _as_got(stub: Stub, file_id: str, view: int) -> resources_pb2.TrainingFile:
    """What a list must show of a file: its Get, without the stale count a Get alone
    computes, and without outputs in the BASIC view."""
    expected = await get(stub, file_id)
    expected.ClearField("stale_conversation_count")
    if view == BASIC:
        del expected.outputs[:]
    return expected


async def test_a_list_shows_every_change_of_a_row_it_has_listed_before(
    server: RunningServer, stub: Stub, dataset: Dataset
) -> None:
    """Lists keep the rows (and their conversions) they read by row version
    (`reads.ListedRows`): a change made through the service (an export's new output, an
    archive) or straight in the database (a renamed row, a deleted output row) is
    listed at once, in both views, as a Get shows it."""
    file_id = (await create_ok(stub, unique_name("listed"), dataset.ids()[53:54])).id

    async def listed_as_got() -> dict[int, resources_pb2.TrainingFile]:
        shown: dict[int, resources_pb2.TrainingFile] = {}
        for view in (BASIC, FULL):
            for _ in range(2):  # the second is answered from what the first kept
                assert await _listed(stub, file_id, view) == await _as_got(stub, file_id, view)
            shown[view] = await _listed(stub, file_id, view)
        return shown

    before = await listed_as_got()
    assert len(before[FULL].outputs) == 3 and not before[BASIC].outputs

    exported = await collect(
        stub.ExportTrainingFile(
            service_pb2.ExportTrainingFileRequest(
                training_file_id=file_id, formats=[resources_pb2.FILE_FORMAT_SHAREGPT]
            ),
            timeout=TIMEOUT,
        )
    )
    assert exported.error is None, exported.error
    shown = await listed_as_got()
    assert resources_pb2.FILE_FORMAT_SHAREGPT in {o.format for o in shown[FULL].outputs}

    async with server.database.pool.acquire() as conn:
        await conn.execute(
            "UPDATE training_files SET name = name || '-renamed' WHERE id = $1", uuid.UUID(file_id)
        )
        shown = await listed_as_got()
        assert all(f.name.endswith("-renamed") for f in shown.values())
        await conn.execute(  # the output's row alone: the file's row is not written
            "DELETE FROM training_file_outputs WHERE training_file_id = $1 AND format = $2",
            uuid.UUID(file_id),
            "sharegpt",
        )
    shown = await listed_as_got()
    assert len(shown[FULL].outputs) == 3

    await _archive(stub, file_id)
    shown = await listed_as_got()
    assert all(f.status == ARCHIVED for f in shown.values())


async def test_a_get_of_an_earlier_version_is_never_the_kept_current_one(
    stub: Stub, dataset: Dataset
) -> None:
    """A Get of version 1 after the current version 2 was got (and kept by its row
    version, `convert.kept_file`) describes version 1, without a stale count."""
    file_id = (await create_ok(stub, unique_name("kept-versions"), dataset.ids()[54:55])).id
    added = await add(stub, file_id, dataset.ids()[55:57])
    assert added.error is None, added.error
    current = await get(stub, file_id)

    async def at(version: int) -> resources_pb2.TrainingFile:
        got: resources_pb2.TrainingFile = await stub.GetTrainingFile(
            service_pb2.GetTrainingFileRequest(training_file_id=file_id, version=version),
            timeout=TIMEOUT,
        )
        return got

    first = await at(1)
    assert (first.version, first.conversation_count) == (1, 1)
    assert (current.version, current.conversation_count) == (2, 3)
    assert not first.HasField("stale_conversation_count")
    assert current.HasField("stale_conversation_count")
    assert await at(2) == current == await get(stub, file_id)


def _tampered(token: str) -> str:
    """The token with its keyset position changed but its original MAC kept."""
    payload, mac = token.split(".")
    decoded = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    decoded["p"][-1] = str(uuid.uuid4())
    forged = base64.urlsafe_b64encode(orjson.dumps(decoded)).rstrip(b"=").decode()
    return f"{forged}.{mac}"


@pytest.fixture(scope="module")
async def two_active(stub: Stub, dataset: Dataset) -> None:
    """Two active files, so a page of one has a next page whichever test runs first."""
    for index in (52, 53):
        await create_ok(stub, unique_name("reads-paged"), dataset.ids()[index : index + 1])


async def _files_token(stub: Stub, status: int = UNSPECIFIED) -> str:
    token = (await _list_page(stub, status=status, page_size=1)).next_page_token
    assert token
    return token


@pytest.mark.parametrize(
    "page_token",
    [
        pytest.param("not a token", id="garbage"),
        pytest.param("e30.AAAA", id="bad-mac"),
        pytest.param("e30", id="no-mac"),
        pytest.param("a.b.c", id="three-parts"),
        pytest.param("%%%.%%%", id="not-base64"),
        pytest.param("x" * 2000 + ".x", id="too-long"),
    ],
)
async def test_garbage_page_tokens_are_invalid_argument(stub: Stub, page_token: str) -> None:
    error = await expect_error(_list_page(stub, page_token=page_token))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation_fields(error) == ["page_token"]


@pytest.mark.usefixtures("two_active")
async def test_a_tampered_page_token_is_invalid_argument(stub: Stub) -> None:
    token = await _files_token(stub)

    error = await expect_error(_list_page(stub, page_size=1, page_token=_tampered(token)))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation_fields(error) == ["page_token"]


@pytest.mark.usefixtures("two_active")
async def test_a_page_token_from_another_filter_is_invalid_argument(stub: Stub) -> None:
    token = await _files_token(stub, status=ACTIVE)

    for status, include_archived in ((UNSPECIFIED, False), (UNSPECIFIED, True), (FAILED, False)):
        error = await expect_error(
            _list_page(stub, status, include_archived, page_size=1, page_token=token)
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violation_fields(error) == ["page_token"]
    assert (await _list_page(stub, ACTIVE, page_size=1, page_token=token)).training_files


async def test_a_page_token_from_another_rpc_is_invalid_argument(stub: Stub) -> None:
    token = (await _eligible_page(stub, page_size=1)).next_page_token
    assert token

    error = await expect_error(_list_page(stub, page_token=token))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation_fields(error) == ["page_token"]


# ----------------------------------------------------------------- ListTrainingFileConversations


async def test_file_conversations_page_tokens_belong_to_one_file(
    stub: Stub, dataset: Dataset
) -> None:
    one = await create_ok(stub, unique_name("members-1"), dataset.ids()[:3])
    two = await create_ok(stub, unique_name("members-2"), dataset.ids()[:3])
    first = await stub.ListTrainingFileConversations(
        service_pb2.ListTrainingFileConversationsRequest(training_file_id=one.id, page_size=2)
    )
    assert [c.conversation_id for c in first.conversations] == dataset.ids()[:2]

    error = await expect_error(
        stub.ListTrainingFileConversations(
            service_pb2.ListTrainingFileConversationsRequest(
                training_file_id=two.id, page_size=2, page_token=first.next_page_token
            )
        )
    )

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation_fields(error) == ["page_token"]


@pytest.mark.parametrize(
    ("file_id", "page_size", "code", "field"),
    [
        ("bad", 0, grpc.StatusCode.INVALID_ARGUMENT, "training_file_id"),
        (str(uuid.UUID(int=1)), 0, grpc.StatusCode.NOT_FOUND, None),
    ],
)
async def test_file_conversations_of_a_bad_or_unknown_file(
    stub: Stub, file_id: str, page_size: int, code: grpc.StatusCode, field: str | None
) -> None:
    error = await expect_error(
        stub.ListTrainingFileConversations(
            service_pb2.ListTrainingFileConversationsRequest(
                training_file_id=file_id, page_size=page_size
            )
        )
    )

    assert error.code() == code
    if field is not None:
        assert violation_fields(error) == [field]


async def test_file_conversations_with_a_negative_page_size_is_invalid_argument(
    by_status: ByStatus, stub: Stub
) -> None:
    error = await expect_error(
        stub.ListTrainingFileConversations(
            service_pb2.ListTrainingFileConversationsRequest(
                training_file_id=by_status.active.id, page_size=-5
            )
        )
    )

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation_fields(error) == ["page_size"]


# ----------------------------------------------------------------- GetDownloadUrl


async def test_download_url_expires_in_an_hour_by_default(by_status: ByStatus, stub: Stub) -> None:
    before = datetime.now(UTC)

    response = await _url(stub, by_status.active.id)

    expire = response.expire_time.ToDatetime(tzinfo=UTC)
    assert before + timedelta(seconds=3590) <= expire <= datetime.now(UTC) + timedelta(hours=1)
    assert "X-Amz-Expires=3600" in response.url
    assert response.format == JSON


@pytest.mark.parametrize("seconds", [60, 604_800])
async def test_download_url_accepts_the_bounds_of_the_expiry(
    by_status: ByStatus, stub: Stub, seconds: int
) -> None:
    before = datetime.now(UTC)

    response = await _url(stub, by_status.active.id, JSONL, seconds)

    expire = response.expire_time.ToDatetime(tzinfo=UTC)
    assert expire - before >= timedelta(seconds=seconds - 10)
    assert expire <= datetime.now(UTC) + timedelta(seconds=seconds)
    assert f"X-Amz-Expires={seconds}" in response.url
    assert response.format == JSONL


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(59, 0), (604_801, 0), (0, 0), (-60, 0), (120, 500_000_000)],
)
async def test_download_url_with_an_expiry_out_of_bounds_is_invalid_argument(
    by_status: ByStatus, stub: Stub, seconds: int, nanos: int
) -> None:
    error = await expect_error(_url(stub, by_status.active.id, JSON, seconds, nanos))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation_fields(error) == ["expires_in"]


@pytest.mark.parametrize("file_format", [resources_pb2.FILE_FORMAT_UNSPECIFIED, 99])
async def test_download_url_without_a_known_format_is_invalid_argument(
    by_status: ByStatus, stub: Stub, file_format: int
) -> None:
    error = await expect_error(_url(stub, by_status.active.id, file_format))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation_fields(error) == ["format"]


async def test_download_url_of_a_failed_file_is_failed_precondition(
    by_status: ByStatus, stub: Stub
) -> None:
    error = await expect_error(_url(stub, by_status.failed.id))

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert precondition_violations(error) == [("TRAINING_FILE_NOT_ACTIVE", by_status.failed.id)]


async def test_download_url_of_an_unknown_file_is_not_found(stub: Stub) -> None:
    error = await expect_error(_url(stub, str(uuid.uuid4())))

    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_an_archived_file_can_still_be_downloaded(by_status: ByStatus, stub: Stub) -> None:
    body = await download(stub, by_status.archived.id, JSONL)

    assert len(body) == by_status.archived.jsonl_file_size
    assert body.count(b"\n") == by_status.archived.total_training_pairs


# ----------------------------------------------------------------- Archive


async def test_archive_makes_an_active_file_archived(stub: Stub, dataset: Dataset) -> None:
    created = await create_ok(stub, unique_name("archive"), dataset.ids()[52:53])

    archived = await _archive(stub, created.id)

    assert archived.status == ARCHIVED
    assert await get(stub, created.id) == archived
    unchanged = ("json_file_path", "jsonl_file_path", "version", "conversation_count")
    assert all(getattr(archived, f) == getattr(created, f) for f in unchanged)


async def test_archiving_an_archived_file_returns_it_unchanged(
    by_status: ByStatus, stub: Stub
) -> None:
    again = await _archive(stub, by_status.archived.id)

    assert again == by_status.archived
    assert await get(stub, by_status.archived.id) == by_status.archived


async def test_archiving_a_failed_file_is_failed_precondition(
    by_status: ByStatus, stub: Stub
) -> None:
    error = await expect_error(_archive(stub, by_status.failed.id))

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert precondition_violations(error) == [("TRAINING_FILE_NOT_ACTIVE", by_status.failed.id)]
    assert await get(stub, by_status.failed.id) == by_status.failed


async def test_a_processing_file_can_be_neither_archived_nor_downloaded(
    stub: Stub, server: RunningServer
) -> None:
    file_id = uuid.uuid4()
    pool = server.database.pool
    await pool.execute(
        "INSERT INTO training_files (id, name, status) VALUES ($1, $2, 'processing')",
        file_id,
        unique_name("processing"),
    )
    try:
        archive_error = await expect_error(_archive(stub, str(file_id)))
        url_error = await expect_error(_url(stub, str(file_id)))

        for error in (archive_error, url_error):
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert precondition_violations(error) == [("TRAINING_FILE_NOT_ACTIVE", str(file_id))]
        assert (
            await get(stub, str(file_id))
        ).status == resources_pb2.TRAINING_FILE_STATUS_PROCESSING
    finally:
        await pool.execute("DELETE FROM training_files WHERE id = $1", file_id)


@pytest.mark.parametrize(
    ("file_id", "code"),
    [
        ("nope", grpc.StatusCode.INVALID_ARGUMENT),
        (str(uuid.UUID(int=2)), grpc.StatusCode.NOT_FOUND),
    ],
)
async def test_archive_of_a_bad_or_unknown_id(
    stub: Stub, file_id: str, code: grpc.StatusCode
) -> None:
    error = await expect_error(_archive(stub, file_id))

    assert error.code() == code


# ----------------------------------------------------------------- ListEligibleConversations


async def _eligible_in_database(server: RunningServer) -> set[str]:
    rows = await server.database.pool.fetch(
        "SELECT conversation_id FROM conversations "
        "WHERE enrichment_status = 'completed' AND enriched_file_path IS NOT NULL"
    )
    return {str(row["conversation_id"]) for row in rows}


async def test_eligible_lists_completed_conversations_with_a_path_once_each(
    stub: Stub, server: RunningServer, dataset: Dataset
) -> None:
    listed = await _eligible_all(stub, page_size=25)
    ids = [c.conversation_id for c in listed]

    assert len(ids) == len(set(ids))
    assert set(ids) == await _eligible_in_database(server)
    ready = {str(c.conversation_id) for c in dataset.conversations if c.kind.row_ready}
    not_ready = {str(c.conversation_id) for c in dataset.conversations if not c.kind.row_ready}
    assert ready <= set(ids)
    assert not not_ready & set(ids)
    assert len(not_ready) == 6


async def test_eligible_is_newest_first_and_describes_each_conversation(
    stub: Stub, dataset: Dataset
) -> None:
    listed = await _eligible_all(stub, page_size=40)
    by_id = conversations_by_id(dataset.conversations)

    keys = [(c.created_at.ToDatetime(), uuid.UUID(c.conversation_id)) for c in listed]
    assert keys == sorted(keys, reverse=True)
    for entry in listed:
        source = by_id.get(entry.conversation_id)
        if source is None:
            continue
        assert entry.persona_id == str(source.persona_id)
        assert entry.emotional_arc_id == str(source.emotional_arc_id)
        assert entry.training_topic_id == str(source.training_topic_id)
        assert entry.created_by == str(OWNER)
        assert entry.created_at.ToDatetime(tzinfo=UTC) == source.created_at


async def test_eligible_pages_have_at_most_page_size_entries(stub: Stub) -> None:
    first = await _eligible_page(stub, page_size=7)
    second = await _eligible_page(stub, page_size=7, page_token=first.next_page_token)

    assert len(first.conversations) == len(second.conversations) == 7
    assert not {c.conversation_id for c in first.conversations} & {
        c.conversation_id for c in second.conversations
    }


async def test_eligible_excludes_the_conversations_of_a_file(
    stub: Stub, server: RunningServer, dataset: Dataset
) -> None:
    members = dataset.ids()[60:63]
    file = await create_ok(stub, unique_name("exclude"), members)

    listed = {c.conversation_id for c in await _eligible_all(stub, 30, exclude=file.id)}

    assert listed == await _eligible_in_database(server) - set(members)


async def test_eligible_page_token_is_bound_to_the_excluded_file(
    stub: Stub, dataset: Dataset
) -> None:
    file = await create_ok(stub, unique_name("exclude-token"), dataset.ids()[:1])
    token = (await _eligible_page(stub, page_size=3)).next_page_token

    error = await expect_error(_eligible_page(stub, 3, token, exclude=file.id))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation_fields(error) == ["page_token"]


@pytest.mark.parametrize(
    ("exclude", "page_size", "code", "field"),
    [
        ("nope", 0, grpc.StatusCode.INVALID_ARGUMENT, "exclude_training_file_id"),
        (str(uuid.UUID(int=3)), 0, grpc.StatusCode.NOT_FOUND, None),
        ("", -1, grpc.StatusCode.INVALID_ARGUMENT, "page_size"),
    ],
)
async def test_eligible_with_bad_arguments(
    stub: Stub, exclude: str, page_size: int, code: grpc.StatusCode, field: str | None
) -> None:
    error = await expect_error(_eligible_page(stub, page_size, exclude=exclude))

    assert error.code() == code
    if field is not None:
        assert violation_fields(error) == [field]


async def test_file_conversations_of_an_archived_file_are_still_listed(
    by_status: ByStatus, stub: Stub, dataset: Dataset
) -> None:
    listed = await stub.ListTrainingFileConversations(
        service_pb2.ListTrainingFileConversationsRequest(training_file_id=by_status.archived.id)
    )

    assert [c.conversation_id for c in listed.conversations] == dataset.ids()[51:52]


# ----------------------------------------------------------------- updated_at


async def test_updated_at_moves_with_content_and_status_only(stub: Stub, dataset: Dataset) -> None:
    """An Add and an Archive change the record; a download link or a refused Add does not."""
    created = await create_ok(stub, unique_name("touched"), dataset.ids()[53:54])
    assert created.updated_at.ToDatetime() >= created.created_at.ToDatetime()

    await _url(stub, created.id, JSONL)
    refused = await add(stub, created.id, dataset.ids()[53:54])  # already in the file
    assert stream_error(refused).code() == grpc.StatusCode.FAILED_PRECONDITION
    assert await get(stub, created.id) == created

    added = await add(stub, created.id, dataset.ids()[54:55])
    extended = added.training_file
    assert extended.updated_at.ToDatetime() > created.updated_at.ToDatetime()

    archived = await _archive(stub, created.id)
    assert archived.updated_at.ToDatetime() > extended.updated_at.ToDatetime()
    assert archived.created_at == created.created_at


# ----------------------------------------------------------------- eligible conversations' fields


async def test_eligible_fields_are_empty_when_the_conversation_has_none(
    stub: Stub, server: RunningServer
) -> None:
    """A conversation without scaffolding ids or an owner lists them as empty strings."""
    conversation_id = uuid.uuid4()
    pool = server.database.pool
    await pool.execute(
        "INSERT INTO conversations (conversation_id, enriched_file_path, enrichment_status)"
        " VALUES ($1, $2, 'completed')",
        conversation_id,
        f"nobody/{conversation_id}/enriched.json",
    )
    try:
        listed = {c.conversation_id: c for c in await _eligible_all(stub, page_size=1000)}
    finally:
        await pool.execute("DELETE FROM conversations WHERE conversation_id = $1", conversation_id)

    entry = listed[str(conversation_id)]
    assert (entry.persona_id, entry.emotional_arc_id, entry.training_topic_id) == ("", "", "")
    assert entry.created_by == ""
    assert entry.HasField("created_at")
