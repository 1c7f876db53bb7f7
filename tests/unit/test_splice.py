"""What a Remove or a Refresh plans before it reads the stored file (`splice.py`): which
members' lines can be counted, and how many parts a part per kept run would take."""

from __future__ import annotations

from trainingfiles_server.aggregate import ConversationSummary
from trainingfiles_server.duplicates import DIGEST_SIZE
from trainingfiles_server.models import StoredConversation
from trainingfiles_server.splice import Member, members_of, parts_needed
from trainingfiles_server.storage import COPY_PART_SIZE, MAX_PARTS, MIN_PART_SIZE


def _stored(conversation_id: str, pairs: int, digests: bytes | None) -> StoredConversation:
    summary = ConversationSummary(conversation_id, pairs, 4.0, False, "p", "a", "t")
    return StoredConversation(summary, digests, None, None)


def test_members_are_counted_from_their_digests_or_not_at_all() -> None:
    counted = members_of([_stored("a", 2, bytes(2 * DIGEST_SIZE)), _stored("b", 1, b"x" * 16)])
    assert counted == [Member("a", 2, bytes(32)), Member("b", 1, b"x" * 16)]
    # A member added before digests were kept, or whose digests disagree with its pair
    # count: the file's lines must be decoded.
    assert members_of([_stored("a", 2, bytes(32)), _stored("b", 1, None)]) is None
    assert members_of([_stored("a", 2, bytes(16))]) is None
    assert members_of([_stored("a", 0, b"")]) is None


def test_parts_needed_counts_a_part_per_kept_run() -> None:
    members = [Member(str(i), 1, bytes(DIGEST_SIZE)) for i in range(10)]
    size = 3 * MIN_PART_SIZE
    # Nothing removed: one run. Every other member removed: five runs.
    whole = parts_needed(members, frozenset(), None, size, MIN_PART_SIZE)
    spread = parts_needed(
        members, frozenset(str(i) for i in range(1, 10, 2)), None, size, MIN_PART_SIZE
    )
    assert spread - whole == 2 * 4
    assert whole == 2 + 2 + 3 + size // COPY_PART_SIZE
    # A file of 10,000 runs cannot have a part each: the writer then streams short runs.
    many = [Member(str(i), 1, bytes(DIGEST_SIZE)) for i in range(10_000)]
    odd = frozenset(str(i) for i in range(1, 10_000, 2))
    assert parts_needed(many, odd, None, size, MIN_PART_SIZE) > MAX_PARTS
