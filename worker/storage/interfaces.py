"""The narrow storage interfaces: what each consumer of the store may call, and nothing more.

Each protocol names one part of :class:`worker.storage.Store` (the Postgres implementation) and
of :class:`worker.storage.memory.MemoryStore` (the in-memory one the unit tests use). Core and
retrieval type against these, never against ``Store``, so a reader sees what each piece touches
and a unit test hands it a fake. This module imports only :mod:`worker.domain` and the wire models.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

import numpy as np

from worker.domain import (
    FactCheckDetails,
    ModelVersion,
    PostCandidates,
    ShadowReport,
    ShadowRow,
    Source,
    StoredDecision,
    Threshold,
    Vectors,
    VersionStatus,
)
from worker.wire import FactCheck, Feedback


class VersionRegistry(Protocol):
    async def get_version(self, version: str) -> ModelVersion | None: ...
    async def active_version(self) -> ModelVersion | None: ...
    async def list_versions(self) -> list[ModelVersion]: ...
    async def versions_with_status(self, statuses: Sequence[VersionStatus]) -> list[ModelVersion]: ...
    async def register_version(
        self,
        version: str,
        path: str,
        dimension: int,
        *,
        status: VersionStatus = "candidate",
        base: str | None = None,
        metrics: dict[str, Any] | None = None,
        data_snapshot: dict[str, Any] | None = None,
    ) -> ModelVersion: ...
    async def set_status(self, version: str, status: VersionStatus, *, notes: str | None = None) -> None: ...
    async def activate(self, version: str) -> None: ...


class CorpusStore(Protocol):
    async def upsert_fact_checks(self, fact_checks: Sequence[FactCheck]) -> None: ...
    async def delete_fact_checks(self, ids: Sequence[str]) -> int: ...
    async def count_fact_checks(self) -> int: ...
    async def all_fact_checks(self) -> list[FactCheck]: ...
    async def fact_check_twins(self, ids: Sequence[str]) -> dict[str, set[str]]: ...
    async def fact_checks_missing(self, version: str) -> list[FactCheck]: ...


class EmbeddingIndex(Protocol):
    async def write_embeddings(self, version: str, ids: Sequence[str], vectors: Vectors) -> None: ...
    async def build_index(self, version: str, dimension: int, *, m: int = 16, ef_construction: int = 64) -> None: ...
    async def count_embeddings(self, version: str) -> int: ...
    async def drop_version_index(self, version: str) -> None: ...


class ExactSearch(Protocol):
    async def exact_neighbours(self, version: str, dimension: int, query: np.ndarray, k: int) -> list[str]: ...


class CandidateSource(Protocol):
    async def candidates(
        self,
        version: str,
        dimension: int,
        queries: Vectors,
        texts: Sequence[str],
        langs: Sequence[str | None],
        *,
        sources: frozenset[Source],
        limit: int,
    ) -> list[PostCandidates]: ...

    async def details(self, fact_check_ids: Sequence[str]) -> dict[str, FactCheckDetails]: ...


class DecisionStore(Protocol):
    async def save_decision(
        self,
        version: str,
        model: dict[str, Any],
        fitted: Sequence[Threshold],
        *,
        source: str,
        report: dict[str, Any] | None = None,
    ) -> None: ...
    async def stored_decision(self, version: str) -> StoredDecision | None: ...
    async def decision_report(self, version: str) -> dict[str, Any] | None: ...


class QuarantineStore(Protocol):
    async def quarantined(self) -> frozenset[str]: ...
    async def quarantine(self, fact_check_id: str, reason: str, flagged_by: str) -> bool: ...


class FeedbackStore(Protocol):
    async def insert_feedback(self, items: Sequence[Feedback]) -> int: ...
    async def feedback(self) -> list[dict[str, Any]]: ...


class ShadowStore(Protocol):
    async def set_shadow(self, version: str | None) -> None: ...
    async def shadow_version_name(self) -> str | None: ...
    async def record_shadow(self, rows: Sequence[ShadowRow]) -> None: ...
    async def shadow_report(self, version: str) -> ShadowReport: ...


class PayloadStore(Protocol):
    async def archive_payloads(self, payloads: Sequence[tuple[str, bytes]]) -> None: ...


class IndexingStores(Protocol):
    """What keeping a version's index in step with the corpus touches."""

    @property
    def registry(self) -> VersionRegistry: ...
    @property
    def corpus(self) -> CorpusStore: ...
    @property
    def embeddings(self) -> EmbeddingIndex: ...


class SearchableStores(IndexingStores, Protocol):
    """What indexing a corpus and searching it touches (an evaluation's scratch store)."""

    @property
    def candidates(self) -> CandidateSource: ...


ScratchFactory = Callable[[], contextlib.AbstractAsyncContextManager[SearchableStores]]
"""Opens an empty, private store for the length of a block (:func:`worker.storage.scratch.scratch_store`)."""


class VersionStores(IndexingStores, Protocol):
    """What moving versions through their lifecycle touches (bootstrap, promote, roll back, shadow)."""

    @property
    def decisions(self) -> DecisionStore: ...
    @property
    def shadow(self) -> ShadowStore: ...

    def advisory_lock(self, lock_id: int) -> contextlib.AbstractAsyncContextManager[None]: ...


class ServingStores(Protocol):
    """What following the active version touches (the worker's model manager)."""

    @property
    def registry(self) -> VersionRegistry: ...
    @property
    def decisions(self) -> DecisionStore: ...
    @property
    def shadow(self) -> ShadowStore: ...

    def notifications(self, channel: str, interval_s: float) -> AsyncIterator[None]: ...
