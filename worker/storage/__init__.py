"""Postgres + pgvector: every SQL statement factmatch runs, as a store made of parts.

One module per seam, each a :class:`~worker.storage.db.Part` over one shared pool: ``registry``
(model versions), ``corpus`` (fact-checks), ``embeddings`` (vectors and HNSW indexes),
``candidates`` (search), ``decisions`` (decision models and tier cuts), ``quarantine``,
``feedback`` (moderator verdicts), ``shadow`` (shadow evaluation), ``dead_letters`` (archived
payloads), ``reviews`` and ``accounts`` (the console), ``answers`` (a claim answered once for all
its repeats), ``clusters`` (claim clusters), ``trends`` (trending fact-checks) and ``rematches`` (unmatched
clusters searched again when the fact-checks change), ``images`` (fact-checks' images by PDQ hash),
``verdict_stats`` (the moderators' agreement per tier). :class:`Store`
holds one of each, the way hasher-matcher-actioner keeps its storage interface apart from its
Postgres implementation: callers take the narrow protocol of the part they use
(:mod:`worker.storage.interfaces`), and the parts lifecycle and version code need have an
in-memory twin (:mod:`worker.storage.memory`).
This package imports no retrieval and no core (``tests/unit/test_layers.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from worker.domain import ClaimLost, ModelVersion, ShadowReport
from worker.storage.accounts import Accounts
from worker.storage.answers import Answers
from worker.storage.candidates import Candidates
from worker.storage.clusters import Clusters
from worker.storage.corpus import Corpus
from worker.storage.db import Database, apply_migrations, migrate, with_search_path
from worker.storage.dead_letters import DeadLetterPayloads
from worker.storage.decisions import DecisionModels
from worker.storage.embeddings import Embeddings, index_name, vector_type
from worker.storage.feedback import FeedbackLog
from worker.storage.images import FactCheckImages
from worker.storage.quarantine import Quarantine
from worker.storage.registry import Registry
from worker.storage.rematch import Rematches
from worker.storage.review_groups import ReviewGroups
from worker.storage.reviews import Reviews
from worker.storage.shadow import ShadowResults
from worker.storage.trends import Trends
from worker.storage.verdict_stats import VerdictStats

__all__ = [
    "ClaimLost",
    "Database",
    "ModelVersion",
    "ShadowReport",
    "Store",
    "apply_migrations",
    "index_name",
    "migrate",
    "vector_type",
    "with_search_path",
]


class Store:
    """Every part on one connection pool; ``open`` and ``close`` are the pool's."""

    def __init__(
        self,
        conninfo: str,
        *,
        min_size: int = 1,
        max_size: int = 4,
        ef_search: int = 100,
        connect_timeout_s: float = 10.0,
        pool_timeout_s: float = 2.0,
    ) -> None:
        self.db = Database(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            ef_search=ef_search,
            connect_timeout_s=connect_timeout_s,
            pool_timeout_s=pool_timeout_s,
        )
        self.registry = Registry(self.db)
        self.corpus = Corpus(self.db)
        self.embeddings = Embeddings(self.db)
        self.candidates = Candidates(self.db)
        self.decisions = DecisionModels(self.db)
        self.quarantine = Quarantine(self.db)
        self.feedback = FeedbackLog(self.db)
        self.shadow = ShadowResults(self.db)
        self.dead_letters = DeadLetterPayloads(self.db)
        self.reviews = Reviews(self.db)
        self.review_groups = ReviewGroups(self.db)
        self.accounts = Accounts(self.db)
        self.answers = Answers(self.db)
        self.clusters = Clusters(self.db)
        self.trends = Trends(self.db)
        self.rematches = Rematches(self.db)
        self.images = FactCheckImages(self.db)
        self.verdict_stats = VerdictStats(self.db)

    @property
    def conninfo(self) -> str:
        return self.db.conninfo

    async def open(self, wait: bool = True) -> None:
        await self.db.open(wait=wait)

    async def close(self) -> None:
        await self.db.close()

    async def ping(self, timeout_s: float = 1.0) -> bool:
        return await self.db.ping(timeout_s)

    def advisory_lock(self, lock_id: int) -> contextlib.AbstractAsyncContextManager[None]:
        return self.db.advisory_lock(lock_id)

    def notifications(self, channel: str, interval_s: float) -> AsyncIterator[None]:
        return self.db.notifications(channel, interval_s)
