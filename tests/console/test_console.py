"""The web console in a real headless Chromium, against the real server, PostgreSQL and
SeaweedFS: sign in, create from the picker with live progress, refused requests, the file
page with its charts, downloads equal to the API's bytes, archive, CSRF and headers."""

from __future__ import annotations

import asyncio
import re
import urllib.error
import urllib.request
import uuid

import pytest
from playwright.async_api import Browser, Page, expect

from tests.conftest import Stack, authorized_channel, mint, stack_settings
from tests.e2e.conftest import Dataset
from trainingfiles.v1 import analytics_pb2, resources_pb2, service_pb2, service_pb2_grpc
from trainingfiles_client import Format, Split
from trainingfiles_dev.console import start_console, stop_console
from trainingfiles_dev.generator import Kind
from trainingfiles_server.app import RunningServer, running_server

from .conftest import WAIT_MS, Console, fetch_async, screenshot, sign_in

pytestmark = pytest.mark.timeout(180)


def auth(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


async def pick_eligible(page: Page, dataset: Dataset, count: int) -> list[str]:
    """Tick `count` conversations of the picker's first page whose documents are valid."""
    good = set(dataset.ids(Kind.ELIGIBLE))
    picked: list[str] = []
    rows = page.locator("#eligible tbody tr[data-conversation-id]")
    for index in range(await rows.count()):
        row = rows.nth(index)
        conversation_id = await row.get_attribute("data-conversation-id")
        if conversation_id in good:
            await row.locator("input[name=selected]").check()
            picked.append(conversation_id)
            if len(picked) == count:
                break
    assert len(picked) == count, "the picker's first page lacks eligible conversations"
    return picked


async def test_create_from_the_picker_then_file_page_downloads_and_archive(
    page: Page,
    console: Console,
    dataset: Dataset,
    owner_token: str,
    stub: service_pb2_grpc.TrainingFileServiceStub,
) -> None:
    await sign_in(page, owner_token)
    await screenshot(page, "files")

    await page.goto("/new")
    picked = await pick_eligible(page, dataset, 6)
    await expect(page.locator("#selected-count")).to_have_text("6 selected")
    name = f"console-{uuid.uuid4().hex[:8]}"
    await page.fill("#name", name)
    await screenshot(page, "new")
    await page.click("#start-build")

    # The progress page, fed by server-sent events, reaches 100 % and opens the file.
    await page.wait_for_url(re.compile(r"/builds/"))
    await expect(page.locator("#build-progress")).to_have_js_property("value", 100)
    await expect(page.locator("#build-percent")).to_have_text("100 %")
    await screenshot(page, "progress")
    await page.wait_for_url(re.compile(r"/files/[0-9a-f-]{36}$"))
    file_id = page.url.rsplit("/", 1)[1]

    training_file = await stub.GetTrainingFile(
        service_pb2.GetTrainingFileRequest(training_file_id=file_id), metadata=auth(owner_token)
    )
    assert training_file.name == name
    assert training_file.conversation_count == len(picked)
    await expect(page.locator("#file-name")).to_contain_text(name)
    await expect(page.locator("#conversation-count")).to_have_text(str(len(picked)))
    await expect(page.locator("#pair-count")).to_have_text(
        f"{training_file.total_training_pairs:,}"
    )
    members = page.locator("#members tbody tr")
    assert [await members.nth(i).get_attribute("data-conversation-id") for i in range(6)] == picked

    # Its charts are GetTrainingFileAnalytics' figures, written out in the SVG: readable
    # without hovering.
    analytics = await stub.GetTrainingFileAnalytics(
        service_pb2.GetTrainingFileAnalyticsRequest(training_file_id=file_id),
        metadata=auth(owner_token),
    )
    await expect(page.locator("#analytics-unavailable")).to_have_count(0)
    scaffolding = training_file.scaffolding_distribution
    titles = {
        analytics_pb2.ANALYTICS_DIMENSION_PERSONA: ("Personas", scaffolding.personas),
        analytics_pb2.ANALYTICS_DIMENSION_EMOTIONAL_ARC: (
            "Emotional arcs",
            scaffolding.emotional_arcs,
        ),
        analytics_pb2.ANALYTICS_DIMENSION_TRAINING_TOPIC: (
            "Training topics",
            scaffolding.training_topics,
        ),
        analytics_pb2.ANALYTICS_DIMENSION_EMOTION: ("Emotions (per training pair)", None),
    }
    assert sorted(d.dimension for d in analytics.distributions) == sorted(titles)
    for distribution in analytics.distributions:
        title, scaffolded = titles[distribution.dimension]
        figure = page.locator(f'figure[data-chart="{title}"]')
        bars = figure.locator("svg g.bar")
        shown: list[tuple[str | None, int]] = []
        for index in range(await bars.count()):
            bar = bars.nth(index)
            count = int(await bar.get_attribute("data-count") or -1)
            shown.append((await bar.get_attribute("data-label"), count))
            text = await bar.locator("text.bar-value").text_content()
            assert text == f"{count:,} ({100 * count / distribution.total:.0f}%)", title
        assert shown == [(b.key, b.count) for b in distribution.buckets], title
        if scaffolded is not None:
            assert dict(shown) == dict(scaffolded), title
        caption = await figure.locator("figcaption").text_content() or ""
        if distribution.HasField("normalized_entropy"):
            assert f"balance {distribution.normalized_entropy:.2f}" in caption, title
        assert f"largest ÷ smallest {distribution.largest_to_smallest_ratio:.1f}" in caption
    emotions = next(
        d
        for d in analytics.distributions
        if d.dimension == analytics_pb2.ANALYTICS_DIMENSION_EMOTION
    )
    assert emotions.buckets, "the dataset's pairs carry emotions"

    async def columns(chart: str) -> list[tuple[str | None, int, str | None]]:
        found = page.locator(f'figure[data-chart="{chart}"] svg g.column')
        return [
            (
                await found.nth(i).get_attribute("data-label"),
                int(await found.nth(i).get_attribute("data-count") or -1),
                await found.nth(i).locator("text.bar-value").text_content(),
            )
            for i in range(await found.count())
        ]

    quality = analytics.quality
    assert [b.upper - b.lower for b in quality.bins] == [0.5] * len(quality.bins)
    assert await columns("Quality") == [
        (f"{b.lower:g}–{b.upper:g}", b.count, f"{b.count:,}") for b in quality.bins
    ]
    assert sum(b.count for b in quality.bins) == len(picked)
    await expect(page.locator('figure[data-chart="Quality"] figcaption')).to_contain_text(
        f"{quality.reviewed_count:,} reviewed ({quality.reviewed_share:.0%})"
    )
    assert await columns("Pairs per conversation") == [
        (str(b.pair_count), b.conversation_count, f"{b.conversation_count:,}")
        for b in analytics.pairs_per_conversation
    ]
    assert analytics.HasField("tokens")
    tokens = analytics.tokens
    figures = {
        "#tokens-counted": f"{tokens.counted_pairs:,}",
        "#tokens-total": f"{tokens.total_tokens:,}",
        "#tokens-prompt": f"{tokens.prompt_tokens:,}",
        "#tokens-completion": f"{tokens.completion_tokens:,}",
        "#tokens-mean": f"{tokens.mean_pair_tokens:,.1f}",
        "#tokens-percentiles": " / ".join(
            f"{value:,}"
            for value in (
                tokens.p5_pair_tokens,
                tokens.p50_pair_tokens,
                tokens.p95_pair_tokens,
                tokens.max_pair_tokens,
            )
        ),
        "#tokens-epoch": f"{tokens.training_tokens_per_epoch:,}",
        "#tokens-tokenizer": tokens.tokenizer,
    }
    for selector, text in figures.items():
        await expect(page.locator(selector)).to_have_text(text)
    over = page.locator("#tokens-over-context span[data-context]")
    assert [
        (
            int(await over.nth(i).get_attribute("data-context") or -1),
            await over.nth(i).text_content(),
        )
        for i in range(await over.count())
    ] == [
        (c.context_length, f"{c.pair_count:,} over {c.context_length:,}")
        for c in tokens.pairs_over_context
    ]
    assert tokens.pairs_over_context
    await screenshot(page, "file")

    # Both v4 formats download through GetDownloadUrl, byte for byte the API's.
    for fmt, proto_format in (
        ("v4_json", resources_pb2.FILE_FORMAT_JSON),
        ("v4_jsonl", resources_pb2.FILE_FORMAT_JSONL),
    ):
        async with page.expect_download() as info:
            await page.click(f'#downloads a[data-format="{fmt}"][data-split="all"]')
        downloaded = await info.value
        path = await downloaded.path()
        link = await stub.GetDownloadUrl(
            service_pb2.GetDownloadUrlRequest(training_file_id=file_id, format=proto_format),
            metadata=auth(owner_token),
        )
        assert path.read_bytes() == await fetch_async(link.url), fmt
        assert downloaded.suggested_filename == link.file_name

    # The picker shows the quality and pairs the API knows (a file was built from their
    # documents) and "–" where it knows none.
    await page.goto("/new")
    listed = await stub.ListEligibleConversations(
        service_pb2.ListEligibleConversationsRequest(page_size=25), metadata=auth(owner_token)
    )
    rows = page.locator("#eligible tbody tr[data-conversation-id]")
    assert await rows.count() == len(listed.conversations)
    for index, eligible in enumerate(listed.conversations):
        row = rows.nth(index)
        assert await row.get_attribute("data-conversation-id") == eligible.conversation_id
        quality_text = await row.locator("td.quality").text_content()
        pairs_text = await row.locator("td.pairs").text_content()
        if eligible.HasField("quality_score"):
            assert quality_text == f"{eligible.quality_score:.2f}"
            assert pairs_text == str(eligible.training_pair_count)
        else:
            assert (quality_text, pairs_text) == ("–", "–")
    member_rows = await stub.ListTrainingFileConversations(
        service_pb2.ListTrainingFileConversationsRequest(training_file_id=file_id, page_size=25),
        metadata=auth(owner_token),
    )
    in_file = {m.conversation_id: m for m in member_rows.conversations}
    known = [c for c in listed.conversations if c.conversation_id in in_file]
    assert known, "the picked conversations are on the picker's first page"
    for eligible in known:
        assert eligible.HasField("quality_score")
        assert eligible.training_pair_count == in_file[eligible.conversation_id].training_pair_count
    await screenshot(page, "new-known")

    # Archive: the page shows it, and the service agrees.
    await page.goto(f"/files/{file_id}")
    await page.click("#archive")
    await expect(page.locator("#file-status")).to_have_text("archived")
    archived = await stub.GetTrainingFile(
        service_pb2.GetTrainingFileRequest(training_file_id=file_id), metadata=auth(owner_token)
    )
    assert archived.status == resources_pb2.TRAINING_FILE_STATUS_ARCHIVED
    await page.goto("/files?status=archived")
    await expect(page.locator(f'#files tr[data-file-id="{file_id}"]')).to_be_visible()
    await page.goto("/files")
    await expect(page.locator(f'#files tr[data-file-id="{file_id}"]')).to_have_count(0)


async def test_a_refused_add_shows_every_offender_next_to_its_conversation(
    page: Page,
    dataset: Dataset,
    owner_token: str,
    stub: service_pb2_grpc.TrainingFileServiceStub,
) -> None:
    first = await stub.ListEligibleConversations(
        service_pb2.ListEligibleConversationsRequest(page_size=25), metadata=auth(owner_token)
    )
    good = set(dataset.ids(Kind.ELIGIBLE))
    member = next(c.conversation_id for c in first.conversations if c.conversation_id in good)
    events = [
        event
        async for event in stub.CreateTrainingFile(
            service_pb2.CreateTrainingFileRequest(
                name=f"console-refused-{uuid.uuid4().hex[:8]}", conversation_ids=[member]
            ),
            metadata=auth(owner_token),
        )
    ]
    file_id = events[-1].training_file.id
    not_enriched = dataset.ids(Kind.NOT_STARTED)[0]
    no_file = dataset.ids(Kind.NULL_PATH)[0]
    unknown = str(uuid.uuid4())

    await sign_in(page, owner_token)
    await page.goto(f"/new?file={file_id}&include_members=1")
    await page.locator(f'#eligible tr[data-conversation-id="{member}"] input').check()
    await page.click("#picker details summary")
    await page.fill("#ids", f"{not_enriched}\n{no_file}, {unknown}")
    await page.click("#start-build")

    refusal = page.locator("#refusal")
    await expect(refusal).to_be_visible()
    expected = {
        member: "already in the file",
        not_enriched: "not enriched",
        no_file: "no enriched file",
        unknown: "not found",
    }
    for conversation_id, reason in expected.items():
        await expect(refusal.locator(f'li[data-offender="{conversation_id}"]')).to_contain_text(
            reason
        )
    # Next to its row in the picker too, with the selection and the pasted ids kept.
    row = page.locator(f'#eligible tr[data-conversation-id="{member}"]')
    await expect(row.locator("td.offence")).to_have_text("already in the file")
    await expect(row.locator("input[name=selected]")).to_be_checked()
    await expect(page.locator("#ids")).to_have_value(f"{not_enriched}\n{no_file}, {unknown}")
    await screenshot(page, "refused")

    # A malformed id is refused before any other check: shown against what was typed.
    await page.fill("#ids", "not-a-uuid")
    await page.click("#start-build")
    await expect(page.locator('#refusal li[data-offender="not-a-uuid"]')).to_contain_text(
        "not a conversation id"
    )

    # Nothing changed.
    unchanged = await stub.GetTrainingFile(
        service_pb2.GetTrainingFileRequest(training_file_id=file_id), metadata=auth(owner_token)
    )
    assert unchanged.version == 1
    assert unchanged.conversation_count == 1


async def test_sign_in_with_a_pasted_token_and_sign_out(page: Page, owner_token: str) -> None:
    await page.goto("/files")
    await page.wait_for_url("**/signin")
    await page.fill("#token", "not-a-token")
    await page.click("form[action='/signin'] button[type=submit]")
    await expect(page.locator("#signin-error")).to_contain_text("refused this token")
    await screenshot(page, "signin")

    await page.fill("#token", owner_token)
    await page.click("form[action='/signin'] button[type=submit]")
    await page.wait_for_url("**/files")
    cookies = {c["name"]: c for c in await page.context.cookies()}
    session = cookies["tf_session"]
    assert session["value"] == owner_token
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Strict"
    assert cookies["tf_csrf"]["httpOnly"] is True

    await page.click(".signout button")
    await page.wait_for_url("**/signin")
    assert "tf_session" not in {c["name"] for c in await page.context.cookies()}
    await page.goto("/files")
    await page.wait_for_url("**/signin")


async def test_another_users_file_is_not_found_in_the_console(
    page: Page, dataset: Dataset, owner_token: str, stub: service_pb2_grpc.TrainingFileServiceStub
) -> None:
    """The console shows what the API lets the user see: another user's file is a 404."""
    events = [
        event
        async for event in stub.CreateTrainingFile(
            service_pb2.CreateTrainingFileRequest(
                name=f"console-owned-{uuid.uuid4().hex[:8]}",
                conversation_ids=dataset.ids(Kind.ELIGIBLE)[-1:],
            ),
            metadata=auth(owner_token),
        )
    ]
    file_id = events[-1].training_file.id
    await sign_in(page, mint("authenticated"))
    response = await page.goto(f"/files/{file_id}")
    assert response is not None
    assert response.status == 404
    shown = await page.locator("#error-message").text_content()
    # Word for word what a file that does not exist shows: its existence is not revealed.
    missing = str(uuid.uuid4())
    response = await page.goto(f"/files/{missing}")
    assert response is not None
    assert response.status == 404
    assert shown == (await page.locator("#error-message").text_content() or "").replace(
        missing, file_id
    )
    assert shown == f"training_file {file_id} not found"


async def test_csrf_refusal_and_security_headers(
    page: Page, dataset: Dataset, owner_token: str, stub: service_pb2_grpc.TrainingFileServiceStub
) -> None:
    events = [
        event
        async for event in stub.CreateTrainingFile(
            service_pb2.CreateTrainingFileRequest(
                name=f"console-csrf-{uuid.uuid4().hex[:8]}",
                conversation_ids=dataset.ids(Kind.ELIGIBLE)[-2:-1],
            ),
            metadata=auth(owner_token),
        )
    ]
    file_id = events[-1].training_file.id
    await sign_in(page, owner_token)
    response = await page.goto(f"/files/{file_id}")
    assert response is not None
    headers = response.headers
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["cache-control"] == "no-store"
    # No inline script: every script comes from the console itself.
    scripts = page.locator("script")
    for index in range(await scripts.count()):
        assert await scripts.nth(index).get_attribute("src") == "/static/console.js"

    # A POST with the session cookie but without the form's token, or with another
    # page's token, is refused with 403 and changes nothing.
    forms: list[dict[str, str | float | bool]] = [{}, {"csrf_token": "0" * 64}]
    for form in forms:
        refused = await page.request.post(f"/files/{file_id}/archive", form=form)
        assert refused.status == 403
        assert "CSRF_TOKEN_INVALID" in await refused.text()
    still = await stub.GetTrainingFile(
        service_pb2.GetTrainingFileRequest(training_file_id=file_id), metadata=auth(owner_token)
    )
    assert still.status == resources_pb2.TRAINING_FILE_STATUS_ACTIVE

    # The page's own token works.
    token = await page.locator("input[name=csrf_token]").first.get_attribute("value")
    accepted = await page.request.post(
        f"/files/{file_id}/archive", form={"csrf_token": token or ""}, max_redirects=0
    )
    assert accepted.status == 303
    archived = await stub.GetTrainingFile(
        service_pb2.GetTrainingFileRequest(training_file_id=file_id), metadata=auth(owner_token)
    )
    assert archived.status == resources_pb2.TRAINING_FILE_STATUS_ARCHIVED


async def test_files_and_picker_pages_follow_the_apis_page_tokens(
    page: Page, dataset: Dataset, owner_token: str, stub: service_pb2_grpc.TrainingFileServiceStub
) -> None:
    """The files table pages through ListTrainingFiles' tokens (20 a page); the picker
    pages through ListEligibleConversations' and keeps what was ticked on earlier pages."""
    listed = await stub.ListTrainingFiles(
        service_pb2.ListTrainingFilesRequest(page_size=1000), metadata=auth(owner_token)
    )
    for _ in range(21 - len(listed.training_files)):
        async for _event in stub.CreateTrainingFile(
            service_pb2.CreateTrainingFileRequest(
                name=f"console-page-{uuid.uuid4().hex[:8]}",
                conversation_ids=dataset.ids(Kind.ELIGIBLE)[:1],
            ),
            metadata=auth(owner_token),
        ):
            pass
    listed = await stub.ListTrainingFiles(
        service_pb2.ListTrainingFilesRequest(page_size=1000), metadata=auth(owner_token)
    )
    expected = [f.id for f in listed.training_files]
    assert len(expected) > 20

    await sign_in(page, owner_token)
    shown: list[str | None] = []
    while True:
        rows = page.locator("#files tbody tr")
        count = await rows.count()
        assert count == min(20, len(expected) - len(shown))
        shown += [await rows.nth(i).get_attribute("data-file-id") for i in range(count)]
        following = page.locator("#next-page")
        if not await following.count():
            break
        await following.click()
    assert shown == expected

    # The picker: one conversation ticked on its first page, one on its second.
    await page.goto("/new")
    good = set(dataset.ids(Kind.ELIGIBLE))
    first_page = page.locator("#eligible tbody tr[data-conversation-id]")
    assert await first_page.count() == 25
    on_first = [await first_page.nth(i).get_attribute("data-conversation-id") for i in range(25)]
    one = next(c for c in on_first if c in good)
    await page.locator(f'input[name=selected][value="{one}"]').check()
    await page.click("#picker-next")
    second_page = page.locator("#eligible tbody tr[data-conversation-id]")
    on_second = [
        await second_page.nth(i).get_attribute("data-conversation-id")
        for i in range(await second_page.count())
    ]
    assert on_second
    assert not set(on_first) & set(on_second)
    other = next(c for c in on_second if c in good)
    await page.locator(f'input[name=selected][value="{other}"]').check()
    await expect(page.locator("#selected-count")).to_have_text("2 selected")
    await page.fill("#name", f"console-two-pages-{uuid.uuid4().hex[:8]}")
    await page.click("#start-build")
    await page.wait_for_url(re.compile(r"/files/[0-9a-f-]{36}$"))
    members = page.locator("#members tbody tr")
    assert [await members.nth(i).get_attribute("data-conversation-id") for i in range(2)] == [
        one,
        other,
    ]
    assert await members.count() == 2

    # An id in the picker's table filters by it.
    await page.goto("/new")
    persona = await page.locator("#eligible tbody tr td:nth-child(3) a").first.get_attribute(
        "title"
    )
    assert persona is not None
    await page.locator("#eligible tbody tr td:nth-child(3) a").first.click()
    await expect(page.locator("#persona")).to_have_value(persona.removeprefix("only "))
    filtered = await stub.ListEligibleConversations(
        service_pb2.ListEligibleConversationsRequest(
            page_size=25,
            selector=service_pb2.ConversationSelector(persona_ids=[persona.removeprefix("only ")]),
        ),
        metadata=auth(owner_token),
    )
    rows = page.locator("#eligible tbody tr[data-conversation-id]")
    assert [
        await rows.nth(i).get_attribute("data-conversation-id") for i in range(await rows.count())
    ] == [c.conversation_id for c in filtered.conversations]
    assert len(filtered.conversations) < 25


async def test_every_versions_outputs_download_and_a_pruned_one_is_refused(
    browser: Browser, stack: Stack, server: RunningServer, dataset: Dataset, owner_token: str
) -> None:
    """Each version lists a link per output it has: an earlier version's JSONL is the
    API's bytes for that version; a pruned one shows no links and its download is refused
    with the service's reason. (A server keeping two versions: the suite's keeps one.)"""
    settings = stack_settings(stack.postgres, stack.seaweed, version_retention=2)
    ids = dataset.ids(Kind.ELIGIBLE)
    async with (
        running_server(settings) as kept,
        authorized_channel(kept.port, owner_token) as channel,
    ):
        stub = service_pb2_grpc.TrainingFileServiceStub(channel)
        events = [
            event
            async for event in stub.CreateTrainingFile(
                service_pb2.CreateTrainingFileRequest(
                    name=f"console-versions-{uuid.uuid4().hex[:8]}", conversation_ids=ids[:2]
                )
            )
        ]
        file_id = events[-1].training_file.id

        async def add(conversation_id: str) -> None:
            async for _event in stub.AddConversations(
                service_pb2.AddConversationsRequest(
                    training_file_id=file_id, conversation_ids=[conversation_id]
                )
            ):
                pass

        await add(ids[2])
        process, url = await asyncio.to_thread(
            start_console, "127.0.0.1:0", f"127.0.0.1:{kept.port}", development_sign_in=True
        )
        context = await browser.new_context(base_url=url, accept_downloads=True)
        context.set_default_timeout(WAIT_MS)
        try:
            page = await context.new_page()
            await sign_in(page, owner_token)
            await page.goto(f"/files/{file_id}")
            listed = await stub.ListTrainingFileVersions(
                service_pb2.ListTrainingFileVersionsRequest(training_file_id=file_id)
            )
            assert [v.version for v in listed.versions] == [2, 1]
            for version in listed.versions:
                links = page.locator(
                    f'#versions tr[data-version="{version.version}"] a.download-link'
                )
                shown = [
                    (
                        await links.nth(i).get_attribute("data-format"),
                        await links.nth(i).get_attribute("data-split"),
                    )
                    for i in range(await links.count())
                ]
                assert sorted(shown) == sorted(
                    (Format.of(o.format).value, Split.of(o.split).value if o.split else "all")
                    for o in version.outputs
                ), version.version
            versioned: dict[int, bytes] = {}
            for number in (1, 2):
                async with page.expect_download() as info:
                    await page.click(
                        f'#versions tr[data-version="{number}"] '
                        'a[data-format="v4_jsonl"][data-split="all"]'
                    )
                downloaded = await info.value
                path = await downloaded.path()
                link = await stub.GetDownloadUrl(
                    service_pb2.GetDownloadUrlRequest(
                        training_file_id=file_id,
                        format=resources_pb2.FILE_FORMAT_JSONL,
                        version=number,
                    )
                )
                versioned[number] = path.read_bytes()
                assert versioned[number] == await fetch_async(link.url), number
            assert versioned[1].count(b"\n") < versioned[2].count(b"\n")

            # A third version prunes the first: no links, and its download is refused.
            await add(ids[3])
            await page.goto(f"/files/{file_id}")
            first = page.locator('#versions tr[data-version="1"]')
            await expect(first.locator("td.version-downloads")).to_contain_text("pruned")
            await expect(first.locator("a")).to_have_count(0)
            await screenshot(page, "file-versions")
            response = await page.goto(
                f"/files/{file_id}/download?format=v4_jsonl&split=all&version=1"
            )
            assert response is not None
            assert response.status == 409
            await expect(page.locator("#error-message")).to_contain_text("was pruned")
            await expect(page.locator("code")).to_have_text("VERSION_PRUNED")
        finally:
            await context.close()
            await asyncio.to_thread(stop_console, process)


def _no_redirect(url: str) -> tuple[int, str]:
    """(status, Set-Cookie) of a GET, without following its redirect."""

    class Keep(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    try:
        with urllib.request.build_opener(Keep).open(url, timeout=10) as response:
            return response.status, response.headers.get("set-cookie", "")
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("set-cookie", "")


@pytest.mark.parametrize("development", [True, False])
async def test_the_development_link_signs_in_only_when_enabled(
    server: RunningServer, owner_token: str, development: bool
) -> None:
    """`make run`'s console (started as `make run` starts it): the printed link sets the
    session cookie and opens the files; without development sign-in it is not found."""
    process, url = await asyncio.to_thread(
        start_console,
        "127.0.0.1:0",
        f"127.0.0.1:{server.port}",
        development_sign_in=development,
    )
    try:
        status, cookie = await asyncio.to_thread(
            _no_redirect, f"{url}/signin/link?token={owner_token}"
        )
    finally:
        await asyncio.to_thread(stop_console, process)
    assert process.returncode is not None
    if development:
        assert status == 303
        assert cookie.startswith(f"tf_session={owner_token};")
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
    else:
        assert status == 404
        assert "tf_session" not in cookie
