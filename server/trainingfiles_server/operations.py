"""The service's operations, free of gRPC: the builds and the reads, over one database
and one object store.

    rules.py      what a valid request is, which conversations may be used (pure)
    builds.py     Create and Add: one pipeline, leases, cleanup, the shutdown drain
    fetching.py   the fetch scheduler: bounded workers, lines in add order, progress
    outputs.py    the JSON and the JSONL of a version, written in one pass
    reads.py      get, list, download links, archive, validation without a build
"""

from __future__ import annotations

from .builds import Builds
from .config import Settings
from .db import Database
from .pagination import PageTokens
from .reads import Reads
from .storage import Storage


class Operations(Builds, Reads):
    """Every operation of the service; the servicer's one collaborator."""

    def __init__(
        self, settings: Settings, database: Database, storage: Storage, tokens: PageTokens
    ) -> None:
        Builds.__init__(self, settings, database, storage)
        Reads.__init__(self, settings, database, storage, tokens)
