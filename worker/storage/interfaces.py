"""The narrow storage interfaces that the serving core and the trainer depend on.

Each names one seam of :class:`worker.storage.Store`; code that needs one seam takes the
protocol, so a unit test can hand it a fake and a reader sees what it touches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from worker.core.encoder import Vectors
from worker.core.lifecycle import VersionStatus
from worker.retrieval.decision import Decisions
from worker.storage.registry import ModelVersion
from worker.wire import FactCheck, Feedback


class VersionRegistry(Protocol):
    async def get_version(self, version: str) -> ModelVersion | None: ...
    async def active_version(self) -> ModelVersion | None: ...
    async def versions_with_status(self, statuses: Sequence[VersionStatus]) -> list[ModelVersion]: ...
    async def set_status(self, version: str, status: VersionStatus, *, notes: str | None = None) -> None: ...
    async def activate(self, version: str) -> None: ...
    async def decisions(self, version: str) -> Decisions: ...


class Corpus(Protocol):
    async def upsert_fact_checks(self, fact_checks: Sequence[FactCheck]) -> None: ...
    async def delete_fact_checks(self, ids: Sequence[str]) -> int: ...
    async def fact_checks_missing(self, version: str) -> list[FactCheck]: ...


class EmbeddingIndex(Protocol):
    async def write_embeddings(self, version: str, ids: Sequence[str], vectors: Vectors) -> None: ...
    async def build_index(self, version: str, dimension: int, *, m: int = 16, ef_construction: int = 64) -> None: ...


class FeedbackLog(Protocol):
    async def insert_feedback(self, items: Sequence[Feedback]) -> int: ...
    async def feedback(self) -> list[dict[str, Any]]: ...


class IndexingStore(VersionRegistry, Corpus, EmbeddingIndex, Protocol):
    """What keeping a version's index in step with the corpus touches."""
