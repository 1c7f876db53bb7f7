"""The service's operations, free of gRPC: the builds and the reads, over one database
and one object store.

    rules.py      what a valid request is, which conversations may be used (pure)
    plans.py      what a build writes: formats, split, duplicates, object keys (pure)
    builds.py     Create, Add and export: requests, leases, the commit, cleanup, the drain
    passes.py     the pass over a version's pairs each build makes, staged for the commit
    fetching.py   the fetch scheduler: bounded workers, lines in add order, progress
    filters.py    which documents and pairs go into a file (pure)
    outputs.py    every output of a version, written in one pass as pairs arrive
    formats/      one module per output format, behind one registry (pure)
    splits.py, duplicates.py, card.py   the split, duplicate digests, the card (pure)
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
