"""Rolling a model version out, and back.

Promotion re-embeds the whole corpus under the new version with the worker's own encoder,
store and indexer code, builds its index, and only then flips the active version in one
transaction (which NOTIFYs the workers). Rollback re-activates a retained version at once:
its embeddings and index were kept, and only fact-checks that changed meanwhile are
re-embedded first.
"""

from __future__ import annotations

import logging

from worker.encoder import Encoder
from worker.indexer import embed_fact_checks, index_version
from worker.settings import Settings
from worker.store import ModelVersion, Store

log = logging.getLogger(__name__)


async def promote(store: Store, settings: Settings, version: str, encoder: Encoder, *, progress: bool = True) -> None:
    """candidate -> indexing -> ready -> active; workers switch between two batches."""
    mv = await store.get_version(version)
    if mv is None:
        raise LookupError(f"unknown model version {version!r}")
    if mv.status not in ("candidate", "ready", "indexing"):
        raise RuntimeError(f"version {version} is {mv.status}; only a candidate or ready version can be promoted")
    # From here on, workers embed every changed fact-check under this version too.
    await store.set_status(version, "indexing")
    count = await index_version(
        store,
        version,
        mv.dimension,
        encoder,
        hnsw_m=settings.hnsw_m,
        hnsw_ef_construction=settings.hnsw_ef_construction,
        progress=progress,
    )
    await store.set_status(version, "ready")
    await store.activate(version)
    log.info("version %s is active (%d fact-checks embedded)", version, count)
    await apply_retention(store, settings.retain_versions)


async def rollback_target(store: Store, version: str | None) -> ModelVersion:
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
    """Re-activate ``mv``; fact-checks that changed while it was retired are embedded first."""
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
