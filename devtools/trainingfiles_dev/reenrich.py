"""`make reenrich ID=…`: re-enrich demo conversations the way the pipeline does.

For trying re-generation against `make run`'s embedded servers (it reads their ports and
keys from `.data/embedded.json`; run it while `make run` serves): each conversation's
`enrichment_status` goes to `enrichment_in_progress`, its enriched document is rewritten
at the same key with every target response revised, and the status goes back to
`completed`. The trigger records the change, so the files holding the conversation are
stale (`GetTrainingFile` says how many) until refreshed, or refreshed by themselves when
they opted in to automatic refresh.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from typing import Any

import aiobotocore.session
import asyncpg
import orjson

from .run import STATE_FILE, _load_state

CONVERSATIONS_BUCKET = "conversation-files"


def revised(document: bytes, note: str) -> bytes:
    """The document with `note` before every target response: new content, still valid."""
    parsed: dict[str, Any] = orjson.loads(document)
    for pair in parsed.get("training_pairs", []):
        if isinstance(pair.get("target_response"), str):
            pair["target_response"] = f"{note} {pair['target_response']}"
    return orjson.dumps(parsed)


async def reenrich(ids: list[uuid.UUID], note: str) -> None:
    state = _load_state()
    if not state:
        raise SystemExit(f"reenrich: no {STATE_FILE} (start `make run` first)")
    database = await asyncpg.connect(
        f"postgresql://postgres@127.0.0.1:{state['postgres_port']}/trainingfiles"
    )
    session = aiobotocore.session.get_session()
    async with session.create_client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{state['s3_port']}",
        region_name="us-east-1",
        aws_access_key_id=str(state["s3_access_key"]),
        aws_secret_access_key=str(state["s3_secret_key"]),
    ) as s3:
        try:
            for conversation_id in ids:
                key = await database.fetchval(
                    "SELECT enriched_file_path FROM conversations WHERE conversation_id = $1",
                    conversation_id,
                )
                if key is None:
                    raise SystemExit(f"reenrich: {conversation_id} has no enriched file")
                await database.execute(
                    "UPDATE conversations SET enrichment_status = 'enrichment_in_progress' "
                    "WHERE conversation_id = $1",
                    conversation_id,
                )
                stored = await s3.get_object(Bucket=CONVERSATIONS_BUCKET, Key=key)
                async with stored["Body"] as body:
                    document = await body.read()
                await s3.put_object(
                    Bucket=CONVERSATIONS_BUCKET, Key=key, Body=revised(document, note)
                )
                await database.execute(
                    "UPDATE conversations SET enrichment_status = 'completed' "
                    "WHERE conversation_id = $1",
                    conversation_id,
                )
                print(f"re-enriched {conversation_id} ({key})", flush=True)
        finally:
            await database.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="reenrich", description=__doc__.splitlines()[0])
    parser.add_argument("ids", nargs="+", type=uuid.UUID, help="conversation ids")
    parser.add_argument("--note", default="Revised:", help="text put before each target")
    args = parser.parse_args(argv if argv is not None else sys.argv[1:])
    asyncio.run(reenrich(args.ids, args.note))


if __name__ == "__main__":
    main()
