"""The development re-enrichment keeps a document valid and changes every target."""

from __future__ import annotations

import uuid

import orjson

from trainingfiles_dev.generator import generate
from trainingfiles_dev.reenrich import revised
from trainingfiles_server.documents import decode_json_object, validate_enriched_document


def test_a_revised_document_is_valid_and_every_target_changed() -> None:
    (conversation,) = generate(5, 1, owners=[uuid.uuid4()])
    assert conversation.document is not None
    before = orjson.loads(conversation.document)
    after = revised(conversation.document, "Revised:")
    validate_enriched_document(decode_json_object(after))
    targets = [p["target_response"] for p in orjson.loads(after)["training_pairs"]]
    assert targets == [f"Revised: {p['target_response']}" for p in before["training_pairs"]]
