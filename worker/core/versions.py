"""Moving model versions through their lifecycle: bootstrap, promote, roll back, retain.

Every path goes through the same steps, checked by :func:`worker.core.lifecycle.check_transition`:
``indexing`` (from then on workers embed every changed fact-check under the version too),
the corpus embedded with the worker's own encoder and indexer code, the HNSW index built,
``ready``, then ``active`` in one transaction that NOTIFYs the workers. A fresh database's
bootstrap is a promotion of the configured model; a rollback re-activates a retained
version whose index was kept, after catching up the fact-checks that changed meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from worker.core.encoder import Encoder
from worker.core.indexer import embed_fact_checks, index_version
from worker.core.lifecycle import LifecycleError, check_transition
from worker.retrieval.shipped import shipped_decisions
from worker.settings import Settings
from worker.storage import ModelVersion, Store

log = logging.getLogger(__name__)

BOOTSTRAP_LOCK_ID = 0x66616375


async def _index(store: Store, settings: Settings, mv: ModelVersion, encoder: Encoder, *, progress: bool) -> int:
    """-> indexing -> ready: the whole corpus embedded under ``mv`` and its HNSW index built."""
    check_transition(mv.version, mv.status, "indexing")
    await store.set_status(mv.version, "indexing")
    count = await index_version(
        store,
        mv.version,
        mv.dimension,
        encoder,
        hnsw_m=settings.hnsw_m,
        hnsw_ef_construction=settings.hnsw_ef_construction,
        progress=progress,
    )
    await _export_for_onnx_workers(settings, encoder)
    check_transition(mv.version, "indexing", "ready")
    await store.set_status(mv.version, "ready")
    return count


async def _export_for_onnx_workers(settings: Settings, encoder: Encoder) -> None:
    """Workers on the ONNX backend find the version's export in the model store, so switching to
    it (or restarting on it) needs no torch; one export, not one per replica."""
    from worker.core.encoder import SentenceTransformerEncoder

    if settings.backend == "onnx" and isinstance(encoder, SentenceTransformerEncoder):
        from worker.core.onnx_backend import ensure_export

        await asyncio.to_thread(ensure_export, encoder, settings.model_store, int8=settings.onnx_int8)


async def _index_and_activate(
    store: Store, settings: Settings, mv: ModelVersion, encoder: Encoder, *, progress: bool
) -> int:
    count = await _index(store, settings, mv, encoder, progress=progress)
    await store.activate(mv.version)
    log.info("version %s is active (%d fact-checks embedded)", mv.version, count)
    await apply_retention(store, settings.retain_versions)
    return count


async def _get(store: Store, version: str) -> ModelVersion:
    mv = await store.get_version(version)
    if mv is None:
        raise LookupError(f"unknown model version {version!r}")
    return mv


async def check_shadow_gate(store: Store, settings: Settings, version: str) -> str:
    """Refuse a promotion the shadow evidence does not support (when the gate asks for any)."""
    needed = settings.gate_shadow_min_posts
    if needed <= 0:
        return "no shadow evidence required"
    report = await store.shadow_report(version)
    if report.posts < needed:
        raise LifecycleError(
            f"version {version} has {report.posts} shadow post(s); the gate needs {needed}"
            f" (`factmatch shadow start {version}`, or FACTMATCH_GATE_SHADOW_MIN_POSTS=0)"
        )
    agreement = report.agreement or 0.0
    if agreement < settings.gate_shadow_min_agreement:
        raise LifecycleError(
            f"version {version} agrees with the active version on rank 1 for {agreement:.1%} of"
            f" {report.posts} shadow posts; the gate needs {settings.gate_shadow_min_agreement:.1%}"
        )
    return f"shadow: {report.posts} posts, rank-1 agreement {agreement:.1%}"


async def promote(store: Store, settings: Settings, version: str, encoder: Encoder, *, progress: bool = True) -> int:
    """candidate (or ready, or an interrupted indexing) -> indexing -> ready -> active."""
    mv = await _get(store, version)
    if mv.status not in ("candidate", "ready", "indexing"):
        raise RuntimeError(f"version {version} is {mv.status}; only a candidate or ready version can be promoted")
    log.info("promoting %s: %s", version, await check_shadow_gate(store, settings, version))
    return await _index_and_activate(store, settings, mv, encoder, progress=progress)


async def prepare(store: Store, settings: Settings, version: str, encoder: Encoder, *, progress: bool = True) -> None:
    """candidate (or an interrupted indexing) -> indexing -> ready: searchable, not serving."""
    mv = await _get(store, version)
    if mv.status in ("candidate", "indexing"):
        await _index(store, settings, mv, encoder, progress=progress)
    elif mv.status != "ready":
        raise RuntimeError(f"version {version} is {mv.status}; only a candidate or ready version can be prepared")


async def start_shadow(
    store: Store, settings: Settings, version: str, encoder: Encoder, *, progress: bool = True
) -> ModelVersion:
    """Index ``version`` unless it is ready, and run it in shadow beside the active version."""
    await prepare(store, settings, version, encoder, progress=progress)
    await store.set_shadow(version)
    log.info("version %s runs in shadow", version)
    return await _get(store, version)


async def bootstrap(
    store: Store,
    settings: Settings,
    model_ref: Callable[[], str],
    encoder_for: Callable[[str, str], Encoder],
    version_name: Callable[[str], str],
) -> ModelVersion:
    """Make sure one version is active: register and promote the configured model if none is.

    Under an advisory lock, so replicas starting together on a fresh database do it once.
    ``model_ref`` may be slow (the default model is converted on first use): call it off the loop.
    """
    import asyncio

    active = await store.active_version()
    if active is not None:
        return active
    async with store.advisory_lock(BOOTSTRAP_LOCK_ID):
        active = await store.active_version()
        if active is not None:
            return active
        ref = await asyncio.to_thread(model_ref)
        version = settings.model_version or version_name(ref)
        encoder = await asyncio.to_thread(encoder_for, version, ref)
        mv = await store.get_version(version)
        if mv is None:
            mv = await store.register_version(version, ref, encoder.dimension, status="candidate", base=ref)
        elif mv.status not in ("indexing", "ready", "retired"):
            raise RuntimeError(f"model version {version} exists with status {mv.status}; pick another name")
        log.info("bootstrapping model version %s from %s", version, ref)
        shipped = await asyncio.to_thread(shipped_decisions, ref)
        if shipped is not None and (await store.decisions(version)).model is None:
            model, thresholds, report, path = shipped
            await store.save_decision(version, model, thresholds, source=f"shipped: {path.name}", report=report)
            log.info("version %s decides with the decision model shipped in %s", version, path)
        await _index_and_activate(store, settings, mv, encoder, progress=False)
        result = await store.get_version(version)
        assert result is not None
        return result


async def rollback_target(store: Store, version: str | None) -> ModelVersion:
    """The named version, or the most recently retired one whose index was kept."""
    if version is not None:
        mv = await store.get_version(version)
        if mv is None:
            raise LookupError(f"unknown model version {version!r}")
    else:
        retired = [v for v in await store.versions_with_status(["retired"]) if v.indexed_at is not None]
        if not retired:
            raise LookupError("no retired version with a kept index to roll back to")
        mv = max(retired, key=lambda v: v.retired_at or v.created_at)
    if mv.status == "active":
        raise RuntimeError(f"version {mv.version} is already active")
    if mv.indexed_at is None:
        raise RuntimeError(f"version {mv.version} has no kept index (retention dropped it); promote it again")
    return mv


async def rollback(store: Store, settings: Settings, mv: ModelVersion, encoder: Encoder) -> int:
    """Re-activate ``mv`` at once; fact-checks that changed while it was retired are embedded first."""
    check_transition(mv.version, mv.status, "active")
    stale = await store.fact_checks_missing(mv.version)
    count = await embed_fact_checks(store, mv.version, encoder, stale)
    await store.activate(mv.version)
    log.info("rolled back to %s (%d fact-checks caught up)", mv.version, count)
    await apply_retention(store, settings.retain_versions)
    return count


async def apply_retention(store: Store, keep: int) -> list[str]:
    """Drop the embeddings of retired versions beyond the newest ``keep``."""
    retired = [v for v in await store.versions_with_status(["retired"]) if v.indexed_at is not None]
    retired.sort(key=lambda v: v.retired_at or v.created_at, reverse=True)
    dropped = [v.version for v in retired[keep:]]
    for version in dropped:
        await store.drop_version_index(version)
    return dropped
