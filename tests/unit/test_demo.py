"""The demo data of `make run` is what the README's session and the client guide rely on.

The demo conversations come from a fixed seed, so the ids the README names are the same
on every machine; each must still be what the text says it is (eligible, not enriched,
without an enriched file, another user's, with a missing document), the selector
examples must select what the text says (and only conversations whose documents can be
built), and the token `make run` prints must be the demo user's.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence
from pathlib import Path
from uuid import UUID

import jwt
import orjson
import pytest

from trainingfiles_dev.demo import DEMO_AWKWARD, DEMO_COUNT, DEMO_SEED, DEMO_USERS
from trainingfiles_dev.generator import PERSONAS, GeneratedConversation, Kind, generate
from trainingfiles_dev.token import DEVELOPMENT_JWT_SECRET, development_token

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", ROOT / "docs" / "client.md"]
UUID_PATTERN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
DEMO_USER, OTHER_USER = DEMO_USERS

# What the README's grpcurl session says of each id it uses.
README_IDS = {
    # created from, and added
    "5795833f-20da-45aa-9b56-d4b07e575bcc": (Kind.ELIGIBLE, DEMO_USER),
    "9c41aecb-e43a-4af7-9751-862e7009fb08": (Kind.ELIGIBLE, DEMO_USER),
    "93410a99-edee-4724-ad2b-f536b293601c": (Kind.ELIGIBLE, DEMO_USER),
    "e84503e0-3170-4096-a8a2-607a2fa003d6": (Kind.ELIGIBLE, DEMO_USER),
    "168391b5-de40-4120-a198-cba11f065424": (Kind.ELIGIBLE, DEMO_USER),
    # "not enriched yet, no enriched file, and another user's conversation"
    "0d396c23-4c76-433d-aaa5-08084be556f9": (Kind.NOT_STARTED, DEMO_USER),
    "e45c3977-9516-45ab-8e75-4c4e3e7d79ba": (Kind.NULL_PATH, DEMO_USER),
    "9f8de1bc-3de8-497b-ae73-75ed9cffee17": (Kind.ELIGIBLE, OTHER_USER),
    # "a missing enriched document is found once work has begun"
    "0b6fed5b-d661-49f4-956c-842ea48e86cd": (Kind.MISSING_OBJECT, DEMO_USER),
}


@pytest.fixture(scope="module")
def demo() -> dict[str, GeneratedConversation]:
    conversations = generate(DEMO_SEED, DEMO_COUNT, owners=DEMO_USERS, awkward=DEMO_AWKWARD)
    return {str(c.conversation_id): c for c in conversations}


@pytest.mark.parametrize("conversation_id", list(README_IDS))
def test_each_id_of_the_readme_session_is_what_the_readme_says(
    demo: dict[str, GeneratedConversation], conversation_id: str
) -> None:
    kind, owner = README_IDS[conversation_id]
    conversation = demo[conversation_id]

    assert (conversation.kind, conversation.created_by) == (kind, owner)
    assert conversation_id in (ROOT / "README.md").read_text()


def test_every_id_the_documents_name_is_a_demo_conversation_or_user(
    demo: dict[str, GeneratedConversation],
) -> None:
    # Or a persona, arc or topic of one (the selector examples name personas). The name
    # stays as the promises ledger (DV-3) cites it.
    scaffolds = {
        str(each)
        for c in demo.values()
        for each in (c.persona_id, c.emotional_arc_id, c.training_topic_id)
    }
    known = set(demo) | {str(user) for user in DEMO_USERS} | scaffolds
    for path in DOCUMENTS:
        named = set(UUID_PATTERN.findall(path.read_text()))
        assert named, path
        assert named <= known, f"{path.name}: {sorted(named - known)}"


def test_some_demo_conversations_are_deliberately_not_eligible(
    demo: dict[str, GeneratedConversation],
) -> None:
    kinds = {c.kind for c in demo.values()}

    assert {Kind.NOT_STARTED, Kind.IN_PROGRESS, Kind.NULL_PATH, Kind.MISSING_OBJECT} <= kinds
    assert sum(c.kind is Kind.ELIGIBLE for c in demo.values()) > DEMO_COUNT // 2


def test_the_printed_development_token_is_the_demo_users() -> None:
    claims = jwt.decode(
        development_token(), DEVELOPMENT_JWT_SECRET, algorithms=["HS256"], audience="authenticated"
    )

    assert (UUID(claims["sub"]), claims["role"]) == (DEMO_USER, "authenticated")
    assert str(DEMO_USER) in (ROOT / "README.md").read_text()


# The selector examples' personas, and the time they select from.
ANXIOUS_PLANNER = "a470bec7-786c-5fcb-94a4-6808e23da119"
RECENT_WIDOW = "5b9a383e-17bc-5350-a2b1-ad89e37812c5"
AFTERNOON = datetime.datetime(2025, 1, 6, 13, tzinfo=datetime.UTC)


def selected(
    demo: dict[str, GeneratedConversation],
    personas: Sequence[str],
    after: datetime.datetime | None = None,
    limit: int | None = None,
) -> list[GeneratedConversation]:
    """What a selector of the demo user's takes, as the server chooses: enriched (completed,
    with a file), of those personas, created at or after `after`, the oldest first."""
    chosen = sorted(
        (
            c
            for c in demo.values()
            if c.created_by == DEMO_USER
            and c.enrichment_status == "completed"
            and c.enriched_file_path
            and str(c.persona_id) in personas
            and (after is None or c.created_at >= after)
        ),
        key=lambda c: (c.created_at, c.conversation_id),
    )
    return chosen[:limit]


def test_the_selector_examples_select_what_the_documents_say(
    demo: dict[str, GeneratedConversation],
) -> None:
    keys = {str(p.id): p.key for p in PERSONAS}
    assert (keys[ANXIOUS_PLANNER], keys[RECENT_WIDOW]) == ("anxious_planner", "recent_widow")
    readme, guide = ((ROOT / name).read_text() for name in ("README.md", "docs/client.md"))
    assert '"created_after": "2025-01-06T13:00:00Z"' in readme
    assert "--created-after 2025-01-06T13:00Z" in readme + guide
    assert "datetime.datetime(2025, 1, 6, 13, tzinfo=datetime.UTC)" in guide
    # README: "the demo's anxious_planner and recent_widow conversations created from 13:00
    # on, 10 of them"; the guide's, the planners alone, then the 3 (README: 5) oldest.
    examples = [
        (10, selected(demo, [ANXIOUS_PLANNER, RECENT_WIDOW], AFTERNOON)),
        (5, selected(demo, [ANXIOUS_PLANNER], AFTERNOON)),
        (3, selected(demo, [RECENT_WIDOW], limit=3)),
        (5, selected(demo, [ANXIOUS_PLANNER], limit=5)),
    ]
    for count, conversations in examples:
        assert len(conversations) == count
        # Every document can be built: the examples' Creates and Adds succeed.
        assert all(c.kind.document_valid for c in conversations), count


def test_the_filter_example_takes_what_the_documents_say(
    demo: dict[str, GeneratedConversation],
) -> None:
    """README: of the anxious_planner's 21 conversations, 4 with a mean quality of at
    least 3.5 and a reviewed pair; of their 27 pairs, 24 score 3.5 or more."""
    readme = (ROOT / "README.md").read_text()
    assert '"min_average_quality": 3.5' in readme and '"min_quality": 3.5}' in readme
    planners = selected(demo, [ANXIOUS_PLANNER])
    kept, excluded = [], 0
    for conversation in planners:
        pairs = orjson.loads(conversation.document or b"")["training_pairs"]
        scores = [p["training_metadata"]["quality_score"] for p in pairs]
        if sum(scores) / len(scores) >= 3.5 and any(
            p["training_metadata"]["human_reviewed"] for p in pairs
        ):
            kept.append(sum(score >= 3.5 for score in scores))
            excluded += sum(score < 3.5 for score in scores)
    assert (len(planners), len(kept), sum(kept), excluded) == (21, 4, 24, 3)
    assert all(kept)  # no conversation loses every pair
