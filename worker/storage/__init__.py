"""Postgres + pgvector: every SQL statement factmatch runs, behind narrow interfaces.

The storage layer is split along its seams, one module each: ``db`` (pool, migrations,
locks, notifications), ``registry`` (model versions and thresholds), ``corpus``
(fact-checks), ``embeddings`` (vectors and HNSW indexes), ``feedback`` (moderator verdicts),
``candidates`` (retrieval), ``decisions`` (decision models, quarantines), ``dead_letters``
(archived payloads) and ``shadow`` (shadow evaluation). :class:`Store` is all of them on one pool, the way
hasher-matcher-actioner's unified store implements its narrow storage interfaces; callers
type against the protocols in ``interfaces`` where they need one seam only.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from worker.storage.candidates import CandidateQueries
from worker.storage.corpus import CorpusQueries
from worker.storage.db import apply_migrations, migrate, with_search_path
from worker.storage.dead_letters import DeadLetterQueries
from worker.storage.decisions import DecisionQueries
from worker.storage.embeddings import EmbeddingQueries, index_name, vector_type
from worker.storage.feedback import FeedbackQueries
from worker.storage.registry import ModelVersion, RegistryQueries
from worker.storage.shadow import ShadowQueries

if TYPE_CHECKING:
    from worker.settings import Settings

__all__ = [
    "ModelVersion",
    "Store",
    "apply_migrations",
    "index_name",
    "migrate",
    "open_store",
    "store_from_settings",
    "vector_type",
    "with_search_path",
]


class Store(
    RegistryQueries,
    CorpusQueries,
    EmbeddingQueries,
    FeedbackQueries,
    CandidateQueries,
    DecisionQueries,
    DeadLetterQueries,
    ShadowQueries,
):
    """Every seam's queries on one connection pool."""


def store_from_settings(settings: Settings, conninfo: str | None = None) -> Store:
    return Store(
        conninfo or settings.require_database_url(),
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        ef_search=settings.ef_search,
        connect_timeout_s=settings.db_connect_timeout_s,
        pool_timeout_s=settings.db_pool_timeout_s,
    )


@contextlib.asynccontextmanager
async def open_store(settings: Settings, *, migrate_first: bool = True) -> AsyncIterator[Store]:
    """The one way tools open the database: migrations applied, pool open, closed on exit."""
    url = settings.require_database_url()
    if migrate_first:
        await apply_migrations(url)
    store = store_from_settings(settings)
    await store.open()
    try:
        yield store
    finally:
        await store.close()
