"""An in-memory store: the parts lifecycle and version code need, without Postgres.

Why it exists: the rules of a version's lifecycle (one active version, an index complete
before activation, retention, rollback, shadow) and of following the active version live in
core; with this store they get unit tests that run in milliseconds. It keeps the Postgres
parts' contracts (``tests/integration/test_store_contract.py`` runs the same checks against
both), not their performance. Not for production: nothing is persisted or shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from worker.domain import (
    NOTIFY_CHANNEL,
    TWIN_QUOTES,
    TWIN_SPACES,
    ModelVersion,
    ShadowReport,
    ShadowRow,
    StoredDecision,
    Threshold,
    Vectors,
    VersionStatus,
)
from worker.storage.interfaces import ClaimAnswer
from worker.wire import FactCheck, Feedback


def _now() -> datetime:
    return datetime.now(UTC)


class _Bus:
    """NOTIFY for in-memory parts: every listener of a channel hears every message."""

    def __init__(self) -> None:
        self.listeners: dict[str, list[asyncio.Queue[str]]] = {}

    def notify(self, channel: str, payload: str) -> None:
        for queue in self.listeners.get(channel, []):
            queue.put_nowait(payload)


class MemoryRegistry:
    def __init__(self, bus: _Bus) -> None:
        self.bus = bus
        self.versions: dict[str, ModelVersion] = {}

    async def get_version(self, version: str) -> ModelVersion | None:
        return self.versions.get(version)

    async def active_version(self) -> ModelVersion | None:
        return next((v for v in self.versions.values() if v.status == "active"), None)

    async def list_versions(self) -> list[ModelVersion]:
        return sorted(self.versions.values(), key=lambda v: (v.created_at, v.version))

    async def versions_with_status(self, statuses: Sequence[VersionStatus]) -> list[ModelVersion]:
        return [v for v in await self.list_versions() if v.status in statuses]

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
    ) -> ModelVersion:
        if version in self.versions:
            raise ValueError(f"model version {version!r} already exists")
        mv = ModelVersion(version, path, dimension, status, base, dict(metrics or {}), _now(), None, None)
        self.versions[version] = replace(mv, data_snapshot=dict(data_snapshot or {}))
        return self.versions[version]

    async def set_status(self, version: str, status: VersionStatus, *, notes: str | None = None) -> None:
        if version in self.versions:
            mv = self.versions[version]
            self.versions[version] = replace(mv, status=status, notes=notes if notes is not None else mv.notes)

    async def activate(self, version: str) -> None:
        mv = self.versions.get(version)
        if mv is None:
            raise LookupError(f"unknown model version {version!r}")
        if mv.indexed_at is None:
            raise RuntimeError(f"model version {version!r} has no complete index yet")
        for name, other in self.versions.items():
            if other.status == "active" and name != version:
                self.versions[name] = replace(other, status="retired", retired_at=_now())
        self.versions[version] = replace(mv, status="active", activated_at=_now(), shadow=False)
        self.bus.notify(NOTIFY_CHANNEL, version)

    def mark_indexed(self, version: str, indexed: bool) -> None:
        if version in self.versions:
            self.versions[version] = replace(self.versions[version], indexed_at=_now() if indexed else None)


def _twin_key(fc: FactCheck) -> str:
    def part(text: str | None) -> str:
        return re.sub(TWIN_SPACES, " ", re.sub(TWIN_QUOTES, "", text or "")).strip(" ")

    return f"{part(fc.title)}\n{part(fc.claim)}"


class MemoryCorpus:
    def __init__(self, embeddings: MemoryEmbeddings) -> None:
        self.embeddings = embeddings
        self.fact_checks: dict[str, tuple[FactCheck, datetime]] = {}

    async def upsert_fact_checks(self, fact_checks: Sequence[FactCheck]) -> None:
        for fc in fact_checks:
            self.fact_checks[fc.id] = (fc, _now())
        if fact_checks:
            self.embeddings.generations["*"] += 1

    async def delete_fact_checks(self, ids: Sequence[str]) -> int:
        deleted = sum(self.fact_checks.pop(i, None) is not None for i in set(ids))
        if deleted:
            self.embeddings.generations["*"] += 1
        return deleted

    async def count_fact_checks(self) -> int:
        return len(self.fact_checks)

    async def all_fact_checks(self) -> list[FactCheck]:
        return [fc for _, (fc, _) in sorted(self.fact_checks.items())]

    async def fact_check_twins(self, ids: Sequence[str]) -> dict[str, set[str]]:
        groups: dict[str, set[str]] = {}
        for fc, _ in self.fact_checks.values():
            groups.setdefault(_twin_key(fc), set()).add(fc.id)
        found = {i: groups[_twin_key(self.fact_checks[i][0])] for i in ids if i in self.fact_checks}
        return {i: set(ids) for i, ids in found.items() if len(ids) > 1}

    async def fact_checks_missing(self, version: str) -> list[FactCheck]:
        missing = []
        for fc_id, (fc, updated) in sorted(self.fact_checks.items()):
            stored = self.embeddings.vectors.get((version, fc_id))
            if stored is None or stored[1] < updated:
                missing.append(fc)
        return missing


class MemoryEmbeddings:
    def __init__(self, registry: MemoryRegistry) -> None:
        self.registry = registry
        self.vectors: dict[tuple[str, str], tuple[np.ndarray, datetime]] = {}
        # Corpus generations by scope ("*": the fact-checks; a version: its vectors), as the triggers keep them.
        self.generations: Counter[str] = Counter()

    async def write_embeddings(self, version: str, ids: Sequence[str], vectors: Vectors) -> None:
        if len(ids) != len(vectors):
            raise ValueError("ids and vectors differ in length")
        for fc_id, vector in zip(ids, vectors, strict=True):
            self.vectors[(version, fc_id)] = (np.asarray(vector, dtype=np.float32), _now())
        if len(ids):
            self.generations[version] += 1

    async def build_index(self, version: str, dimension: int, *, m: int = 16, ef_construction: int = 64) -> None:
        self.registry.mark_indexed(version, True)

    async def count_embeddings(self, version: str) -> int:
        return sum(1 for v, _ in self.vectors if v == version)

    async def drop_version_index(self, version: str) -> None:
        for key in [k for k in self.vectors if k[0] == version]:
            del self.vectors[key]
            self.generations[version] += 1
        self.registry.mark_indexed(version, False)


class MemoryDecisions:
    def __init__(self, bus: _Bus) -> None:
        self.bus = bus
        self.stored: dict[str, StoredDecision] = {}

    async def save_decision(
        self,
        version: str,
        model: dict[str, Any],
        fitted: Sequence[Threshold],
        *,
        source: str,
        report: dict[str, Any] | None = None,
    ) -> None:
        cuts: dict[tuple[str, str], float] = {(t.lang, t.tier): t.threshold for t in fitted}
        self.stored[version] = StoredDecision(dict(model), cuts, dict(report or {}))
        self.bus.notify(NOTIFY_CHANNEL, version)

    async def stored_decision(self, version: str) -> StoredDecision | None:
        return self.stored.get(version)

    async def decision_report(self, version: str) -> dict[str, Any] | None:
        found = self.stored.get(version)
        return dict(found.report) if found else None


class MemoryShadow:
    def __init__(self, registry: MemoryRegistry, bus: _Bus) -> None:
        self.registry = registry
        self.bus = bus
        self.rows: list[ShadowRow] = []

    async def set_shadow(self, version: str | None) -> None:
        versions = self.registry.versions
        if version is not None:
            mv = versions.get(version)
            if mv is None or mv.status != "ready" or mv.indexed_at is None:
                raise RuntimeError(f"version {version} is not a ready, fully indexed version")
        for name, mv in versions.items():
            versions[name] = replace(mv, shadow=name == version)
        self.bus.notify(NOTIFY_CHANNEL, f"shadow:{version or ''}")

    async def shadow_version_name(self) -> str | None:
        return next((v.version for v in self.registry.versions.values() if v.shadow), None)

    async def record_shadow(self, rows: Sequence[ShadowRow]) -> None:
        self.rows.extend(rows)

    async def shadow_report(self, version: str) -> ShadowReport:
        mine = [r for r in self.rows if r.model_version == version]
        if not mine:
            return ShadowReport(version)
        agree = sum(r.active_fact_check_id == r.shadow_fact_check_id for r in mine) / len(mine)
        return ShadowReport(version, len(mine), round(agree, 6))


class MemoryFeedback:
    def __init__(self) -> None:
        self.items: list[Feedback] = []

    async def insert_feedback(self, items: Sequence[Feedback]) -> int:
        self.items.extend(items)
        return len(items)

    async def feedback(self) -> list[dict[str, Any]]:
        return [f.model_dump() for f in self.items]


class MemoryQuarantine:
    def __init__(self) -> None:
        self.active: dict[str, str] = {}

    async def quarantined(self) -> frozenset[str]:
        return frozenset(self.active)

    async def quarantine(self, fact_check_id: str, reason: str, flagged_by: str) -> bool:
        if fact_check_id in self.active:
            return False
        self.active[fact_check_id] = reason
        return True

    async def clear_quarantine(self, fact_check_id: str, cleared_by: str) -> bool:
        return self.active.pop(fact_check_id, None) is not None


class MemoryAnswers:
    """Claim answers by key, with the time each was stored (``clock``: seconds, monotonic)."""

    def __init__(self, embeddings: MemoryEmbeddings, clock: Callable[[], float] = time.monotonic) -> None:
        self.embeddings = embeddings
        self.clock = clock
        self.answers: dict[str, tuple[ClaimAnswer, float]] = {}

    async def generations(self, version: str) -> tuple[int, int]:
        return self.embeddings.generations["*"], self.embeddings.generations[version]

    async def find_answers(self, keys: Sequence[str], window_s: float) -> dict[str, ClaimAnswer]:
        now = self.clock()
        found = {k: self.answers[k] for k in keys if k in self.answers}
        return {k: answer for k, (answer, at) in found.items() if now - at < window_s}

    async def remember_answers(self, answers: Sequence[tuple[str, ClaimAnswer]], window_s: float) -> None:
        now = self.clock()
        for key, answer in answers:
            if key not in self.answers or now - self.answers[key][1] >= window_s:
                self.answers[key] = (answer, now)

    async def find_near(
        self, probes: Sequence[tuple[str, Vectors]], window_s: float, min_similarity: float
    ) -> list[ClaimAnswer | None]:
        now = self.clock()
        fresh = [a for a, at in self.answers.values() if now - at < window_s and a.vector is not None]
        found: list[ClaimAnswer | None] = []
        for context, vector in probes:
            v = np.asarray(vector, dtype=np.float32)
            same = [(float(np.asarray(a.vector, dtype=np.float32) @ v), a) for a in fresh if a.context == context]
            best = max(same, key=lambda pair: pair[0], default=None)
            found.append(best[1] if best is not None and best[0] >= min_similarity else None)
        return found

    async def forget_answers(self, older_than_s: float, limit: int = 10_000) -> int:
        now = self.clock()
        old = [k for k, (_, at) in self.answers.items() if now - at > older_than_s][:limit]
        for key in old:
            del self.answers[key]
        return len(old)


class MemoryStore:
    """Registry, corpus, embeddings, decisions, shadow, feedback and quarantine in dictionaries."""

    def __init__(self) -> None:
        self.bus = _Bus()
        self.registry = MemoryRegistry(self.bus)
        self.embeddings = MemoryEmbeddings(self.registry)
        self.corpus = MemoryCorpus(self.embeddings)
        self.decisions = MemoryDecisions(self.bus)
        self.shadow = MemoryShadow(self.registry, self.bus)
        self.feedback = MemoryFeedback()
        self.quarantine = MemoryQuarantine()
        self.answers = MemoryAnswers(self.embeddings)
        self._locks: dict[int, asyncio.Lock] = {}

    @contextlib.asynccontextmanager
    async def _lock(self, lock_id: int) -> AsyncIterator[None]:
        async with self._locks.setdefault(lock_id, asyncio.Lock()):
            yield

    def advisory_lock(self, lock_id: int) -> contextlib.AbstractAsyncContextManager[None]:
        return self._lock(lock_id)

    async def notifications(self, channel: str, interval_s: float) -> AsyncIterator[None]:
        queue: asyncio.Queue[str] = asyncio.Queue()
        self.bus.listeners.setdefault(channel, []).append(queue)
        try:
            while True:
                yield
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(queue.get(), timeout=interval_s)
        finally:
            self.bus.listeners[channel].remove(queue)
