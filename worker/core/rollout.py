"""Moving model versions through their lifecycle: bootstrap, promote, prepare, shadow, roll back, retain.

Every path goes through the same steps, checked by :func:`worker.core.lifecycle.check_transition`:
``indexing`` (from then on workers embed every changed fact-check under the version too),
the corpus embedded with the worker's own encoder and indexer code, the HNSW index built,
``ready``, then ``active`` in one transaction that NOTIFYs the workers. A fresh database's
bootstrap is a promotion of the configured model; a rollback re-activates a retained
version whose index was kept, after catching up the fact-checks that changed meanwhile.
Everything here takes the store's narrow parts (:class:`~worker.storage.interfaces.VersionStores`)
and a :class:`RolloutConfig`, so the rules run against the in-memory store in unit tests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from worker.core.indexer import embed_fact_checks, index_version
from worker.core.lifecycle import LifecycleError, check_transition
from worker.domain import Encoder, ModelVersion, Threshold
from worker.storage.interfaces import VersionStores

log = logging.getLogger(__name__)

BOOTSTRAP_LOCK_ID = 0x66616375


@dataclass(frozen=True)
class RolloutConfig:
    """What moving a version needs to know (built from ``Settings`` by :mod:`worker.configs`)."""

    hnsw_m: int = 16
    hnsw_ef_construction: int = 200
    retain_versions: int = 2
    # Shadow evidence a promotion needs (0 posts: none).
    gate_shadow_min_posts: int = 0
    gate_shadow_min_agreement: float = 0.0
    # Called with a version's encoder once its corpus is embedded (the ONNX export for CPU workers).
    after_index: Callable[[Encoder], Awaitable[None]] | None = None


async def _index(
    store: VersionStores, config: RolloutConfig, mv: ModelVersion, encoder: Encoder, *, progress: bool
) -> int:
    """-> indexing -> ready: the whole corpus embedded under ``mv`` and its HNSW index built."""
    check_transition(mv.version, mv.status, "indexing")
    await store.registry.set_status(mv.version, "indexing")
    count = await index_version(
        store,
        mv.version,
        mv.dimension,
        encoder,
        hnsw_m=config.hnsw_m,
        hnsw_ef_construction=config.hnsw_ef_construction,
        progress=progress,
    )
    if config.after_index is not None:
        await config.after_index(encoder)
    check_transition(mv.version, "indexing", "ready")
    await store.registry.set_status(mv.version, "ready")
    return count


async def _index_and_activate(
    store: VersionStores, config: RolloutConfig, mv: ModelVersion, encoder: Encoder, *, progress: bool
) -> int:
    count = await _index(store, config, mv, encoder, progress=progress)
    await store.registry.activate(mv.version)
    log.info("version %s is active (%d fact-checks embedded)", mv.version, count)
    await apply_retention(store, config.retain_versions)
    return count


async def _get(store: VersionStores, version: str) -> ModelVersion:
    mv = await store.registry.get_version(version)
    if mv is None:
        raise LookupError(f"unknown model version {version!r}")
    return mv


async def check_shadow_gate(store: VersionStores, config: RolloutConfig, version: str) -> str:
    """Refuse a promotion the shadow evidence does not support (when the gate asks for any)."""
    needed = config.gate_shadow_min_posts
    if needed <= 0:
        return "no shadow evidence required"
    report = await store.shadow.shadow_report(version)
    if report.posts < needed:
        raise LifecycleError(
            f"version {version} has {report.posts} shadow post(s); the gate needs {needed}"
            f" (`factmatch shadow start {version}`, or FACTMATCH_GATE_SHADOW_MIN_POSTS=0)"
        )
    agreement = report.agreement or 0.0
    if agreement < config.gate_shadow_min_agreement:
        raise LifecycleError(
            f"version {version} agrees with the active version on rank 1 for {agreement:.1%} of"
            f" {report.posts} shadow posts; the gate needs {config.gate_shadow_min_agreement:.1%}"
        )
    return f"shadow: {report.posts} posts, rank-1 agreement {agreement:.1%}"


async def promote(
    store: VersionStores, config: RolloutConfig, version: str, encoder: Encoder, *, progress: bool = True
) -> int:
    """candidate (or ready, or an interrupted indexing) -> indexing -> ready -> active."""
    mv = await _get(store, version)
    if mv.status not in ("candidate", "ready", "indexing"):
        raise RuntimeError(f"version {version} is {mv.status}; only a candidate or ready version can be promoted")
    log.info("promoting %s: %s", version, await check_shadow_gate(store, config, version))
    return await _index_and_activate(store, config, mv, encoder, progress=progress)


async def prepare(
    store: VersionStores, config: RolloutConfig, version: str, encoder: Encoder, *, progress: bool = True
) -> None:
    """candidate (or an interrupted indexing) -> indexing -> ready: searchable, not serving."""
    mv = await _get(store, version)
    if mv.status in ("candidate", "indexing"):
        await _index(store, config, mv, encoder, progress=progress)
    elif mv.status != "ready":
        raise RuntimeError(f"version {version} is {mv.status}; only a candidate or ready version can be prepared")


async def start_shadow(
    store: VersionStores, config: RolloutConfig, version: str, encoder: Encoder, *, progress: bool = True
) -> ModelVersion:
    """Index ``version`` unless it is ready, and run it in shadow beside the active version."""
    await prepare(store, config, version, encoder, progress=progress)
    await store.shadow.set_shadow(version)
    log.info("version %s runs in shadow", version)
    return await _get(store, version)


@dataclass(frozen=True)
class ShippedDecision:
    """A decision model that came with a model (its directory, or the project's shipped files)."""

    model: dict[str, Any]
    thresholds: Sequence[Threshold]
    report: dict[str, Any] = field(default_factory=dict)
    source: str = "shipped"


@dataclass(frozen=True)
class Bootstrap:
    """What a fresh database is bootstrapped with: the model, its version name, its shipped decision."""

    model_ref: Callable[[], str]  # may be slow (the default model is converted on first use)
    encoder_for: Callable[[str, str], Encoder]  # (version, path) -> encoder
    version_name: Callable[[str], str]  # model ref -> version name, when none is configured
    configured_name: str | None = None
    shipped: Callable[[str], ShippedDecision | None] = lambda _ref: None


async def bootstrap(store: VersionStores, config: RolloutConfig, boot: Bootstrap) -> ModelVersion:
    """Make sure one version is active: register and promote the configured model if none is.

    Under an advisory lock, so replicas starting together on a fresh database do it once.
    """
    active = await store.registry.active_version()
    if active is not None:
        return active
    async with store.advisory_lock(BOOTSTRAP_LOCK_ID):
        active = await store.registry.active_version()
        if active is not None:
            return active
        ref = await asyncio.to_thread(boot.model_ref)
        version = boot.configured_name or boot.version_name(ref)
        encoder = await asyncio.to_thread(boot.encoder_for, version, ref)
        mv = await store.registry.get_version(version)
        if mv is None:
            mv = await store.registry.register_version(version, ref, encoder.dimension, status="candidate", base=ref)
        elif mv.status not in ("indexing", "ready", "retired"):
            raise RuntimeError(f"model version {version} exists with status {mv.status}; pick another name")
        log.info("bootstrapping model version %s from %s", version, ref)
        await _store_shipped_decision(store, version, ref, boot)
        await _index_and_activate(store, config, mv, encoder, progress=False)
        return await _get(store, version)


async def _store_shipped_decision(store: VersionStores, version: str, ref: str, boot: Bootstrap) -> None:
    """The decision model that came with the model, stored unless the version already has one."""
    shipped = await asyncio.to_thread(boot.shipped, ref)
    if shipped is None or await store.decisions.stored_decision(version) is not None:
        return
    await store.decisions.save_decision(
        version, shipped.model, shipped.thresholds, source=shipped.source, report=shipped.report
    )
    log.info("version %s decides with the decision model %s", version, shipped.source)


async def rollback_target(store: VersionStores, version: str | None) -> ModelVersion:
    """The named version, or the most recently retired one whose index was kept."""
    if version is not None:
        mv = await _get(store, version)
    else:
        retired = [v for v in await store.registry.versions_with_status(["retired"]) if v.indexed_at is not None]
        if not retired:
            raise LookupError("no retired version with a kept index to roll back to")
        mv = max(retired, key=lambda v: v.retired_at or v.created_at)
    if mv.status == "active":
        raise RuntimeError(f"version {mv.version} is already active")
    if mv.indexed_at is None:
        raise RuntimeError(f"version {mv.version} has no kept index (retention dropped it); promote it again")
    return mv


async def rollback(
    store: VersionStores, config: RolloutConfig, mv: ModelVersion, encoder: Callable[[], Encoder]
) -> int:
    """Re-activate ``mv`` at once; fact-checks that changed while it was retired are embedded first
    (``encoder`` is only loaded when there are any)."""
    check_transition(mv.version, mv.status, "active")
    stale = await store.corpus.fact_checks_missing(mv.version)
    count = (
        await embed_fact_checks(store.embeddings, mv.version, await asyncio.to_thread(encoder), stale) if stale else 0
    )
    await store.registry.activate(mv.version)
    log.info("rolled back to %s (%d fact-checks caught up)", mv.version, count)
    await apply_retention(store, config.retain_versions)
    return count


async def apply_retention(store: VersionStores, keep: int) -> list[str]:
    """Drop the embeddings of retired versions beyond the newest ``keep``."""
    retired = [v for v in await store.registry.versions_with_status(["retired"]) if v.indexed_at is not None]
    retired.sort(key=lambda v: v.retired_at or v.created_at, reverse=True)
    dropped = [v.version for v in retired[keep:]]
    for version in dropped:
        await store.embeddings.drop_version_index(version)
    return dropped
