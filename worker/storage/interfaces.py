"""The narrow storage interfaces: what each consumer of the store may call, and nothing more.

Each protocol names one part of :class:`worker.storage.Store` (the Postgres implementation) and
of :class:`worker.storage.memory.MemoryStore` (the in-memory one the unit tests use). Core and
retrieval type against these, never against ``Store``, so a reader sees what each piece touches
and a unit test hands it a fake. This module imports only :mod:`worker.domain` and the wire models.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import numpy as np

from worker.domain import (
    ClusteredPost,
    ClusterPost,
    ClusterSummary,
    ConsoleSession,
    ConsoleUser,
    FactCheckDetails,
    ModelVersion,
    PendingVerdict,
    PostCandidates,
    QueueFilter,
    ReviewGroup,
    ReviewItem,
    Role,
    ShadowReport,
    ShadowRow,
    Source,
    StoredDecision,
    Threshold,
    UnmatchedCluster,
    Vectors,
    VerdictKind,
    VerdictTally,
    VersionStatus,
)
from worker.domain.images import ImageHit, ImageRead, PointPair
from worker.wire import DeadLetter, FactCheck, Feedback, Match, MatchResult


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


class VerdictTallies(Protocol):
    """The moderators' verdicts per tier shown and language (:class:`worker.storage.verdict_stats.VerdictStats`)."""

    async def tallies(self, since: datetime) -> list[VerdictTally]: ...


class ReviewQueue(Protocol):
    """The moderators' queue (:class:`worker.storage.reviews.Reviews`)."""

    async def add_results(self, results: Sequence[MatchResult]) -> int: ...
    async def queue(
        self, filters: QueueFilter, session_id: str | None, *, limit: int = 50, offset: int = 0
    ) -> list[ReviewItem]: ...
    async def counts(self, filters: QueueFilter, session_id: str | None) -> dict[str, dict[str, int]]: ...
    async def depth(self) -> int: ...
    async def item(self, post_id: str) -> ReviewItem | None: ...
    async def claim(self, post_id: str, user: str, session_id: str, lease_s: float) -> ReviewItem | None: ...
    async def release(self, post_id: str, session_id: str) -> None: ...
    async def add_verdicts(
        self,
        post_id: str,
        verdicts: Sequence[tuple[str, VerdictKind, dict[str, Any]]],
        *,
        user: str,
        session_id: str,
        undo_s: float,
        note: str | None = None,
    ) -> list[PendingVerdict]: ...
    async def undo(self, post_id: str, *, user: str, session_id: str) -> int: ...
    async def send_due(self, send: Callable[[list[dict[str, Any]]], Awaitable[None]], *, limit: int = 100) -> int: ...
    async def verdicts(self, post_id: str) -> list[PendingVerdict]: ...
    def changes(self) -> AsyncIterator[str]: ...
    async def add_dead_letters(self, letters: Sequence[DeadLetter], preview_chars: int = 300) -> int: ...
    async def dead_letters(self, limit: int = 50) -> tuple[dict[str, int], list[dict[str, Any]]]: ...
    async def audit(
        self,
        user: str,
        session_id: str | None,
        action: str,
        *,
        post_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None: ...


class ClusterReviewQueue(Protocol):
    """The queue by claim cluster (:class:`worker.storage.review_groups.ReviewGroups`)."""

    async def queue(
        self, filters: QueueFilter, session_id: str | None, *, limit: int = 50, chunk: int = 200, rounds: int = 5
    ) -> list[ReviewGroup]: ...
    async def claim(
        self,
        cluster_id: int,
        user: str,
        session_id: str,
        lease_s: float,
        *,
        filters: QueueFilter | None = None,
        post_ids: Sequence[str] | None = None,
        limit: int = 100,
    ) -> list[ReviewItem]: ...
    async def add_verdicts(
        self,
        cluster_id: int,
        verdicts: Mapping[str, Sequence[tuple[str, VerdictKind, dict[str, Any]]]],
        *,
        user: str,
        session_id: str,
        undo_s: float,
        note: str | None = None,
    ) -> list[PendingVerdict]: ...
    async def undo(self, post_ids: Sequence[str], *, user: str, session_id: str) -> int: ...
    async def release(self, post_ids: Sequence[str], session_id: str) -> None: ...


class AccountStore(Protocol):
    """The console's accounts and sessions (:class:`worker.storage.accounts.Accounts`)."""

    async def put_user(self, name: str, role: Role, password_hash: str | None) -> bool: ...
    async def user(self, name: str) -> ConsoleUser | None: ...
    async def start_session(self, token_sha256: str, user: str, csrf: str, ttl_s: float) -> None: ...
    async def session(self, token_sha256: str) -> ConsoleSession | None: ...
    async def end_session(self, token_sha256: str) -> None: ...
    async def active_sessions(self, within_s: float = 900) -> int: ...


@dataclass(frozen=True)
class ClaimAnswer:
    """The published matches of the first post that made a claim, as every later repeat reuses them."""

    post_id: str
    model_version: str
    matches: Sequence[Match]
    # What it depends on besides the claim (:func:`worker.core.reuse.context_key`) and the vector
    # its post was searched with: a near-duplicate in the same context may take it (None: by key only).
    context: str | None = None
    vector: Vectors | None = None


class AnswerStore(Protocol):
    """Claim answers shared by the workers of a group (:class:`worker.storage.answers.Answers`)."""

    async def generations(self, version: str) -> tuple[int, int]: ...
    async def find_answers(self, keys: Sequence[str], window_s: float) -> dict[str, ClaimAnswer]: ...
    async def remember_answers(self, answers: Sequence[tuple[str, ClaimAnswer]], window_s: float) -> None: ...
    async def find_near(
        self, probes: Sequence[tuple[str, Vectors]], window_s: float, min_similarity: float
    ) -> list[ClaimAnswer | None]: ...
    async def forget_answers(self, older_than_s: float, limit: int = 10_000) -> int: ...


class ClusterStore(Protocol):
    """Claim clusters shared by the workers of a group (:class:`worker.storage.clusters.Clusters`)."""

    async def assign_clusters(
        self,
        version: str,
        dimension: int,
        posts: Sequence[ClusterPost],
        *,
        cut: float,
        window_s: float,
        across_languages: bool = False,
    ) -> list[ClusterSummary]: ...
    async def forget_clusters(self, older_than_s: float, limit: int = 10_000) -> int: ...


class RematchStore(Protocol):
    """Unmatched claim clusters searched again when the corpus changes (:class:`worker.storage.rematch.Rematches`)."""

    async def rematch_generation(self, version: str) -> int | None: ...
    async def unmatched_clusters(self, version: str, window_s: float, limit: int) -> list[UnmatchedCluster]: ...
    async def abstained_posts(self, version: str, cluster_ids: Sequence[int], limit: int) -> list[ClusteredPost]: ...
    async def record_rematches(
        self, version: str, generation: int, matched: Sequence[tuple[ClusteredPost, str, float]]
    ) -> int: ...


class ImageIndex(Protocol):
    """Fact-checks' images by PDQ hash (:class:`worker.storage.images.FactCheckImages`)."""

    async def replace_images(self, images: Mapping[str, Sequence[tuple[ImageRead, str | None]]]) -> None: ...
    async def image_sources(self, fact_check_ids: Sequence[str]) -> dict[str, list[tuple[str | None, str | None]]]: ...
    async def nearest_images(
        self, hashes: Sequence[str], *, max_distance: int, limit: int = 5
    ) -> list[list[ImageHit]]: ...
    async def nearest_points(
        self, images: Sequence[Sequence[str]], *, max_distance: int, per_point: int
    ) -> list[list[PointPair]]: ...
    async def image_words(self, images: Sequence[tuple[str, int]]) -> dict[tuple[str, int], str | None]: ...
    async def fact_check_details(self, fact_check_ids: Sequence[str]) -> dict[str, FactCheckDetails]: ...


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
