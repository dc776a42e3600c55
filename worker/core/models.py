"""Which model version serves, and where its encoder comes from.

The database's ``model_versions`` table is the source of truth: a worker serves the one
active version, loaded from the path registered there, and follows the registry's NOTIFY
channel (with polling as the bound on lag) to switch between two batches. On a fresh
database the configured bootstrap model is promoted first (:mod:`worker.core.versions`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from worker.core.encoder import Encoder, EncoderOptions, SentenceTransformerEncoder, default_model_ref
from worker.core.indexer import CorpusIndexer
from worker.core.lifecycle import NOTIFY_CHANNEL
from worker.core.pipeline import ServingModel
from worker.core.versions import bootstrap
from worker.observability import Metrics
from worker.retrieval.rerank import Reranker
from worker.retrieval.shipped import model_key
from worker.settings import Settings
from worker.storage import ModelVersion, Store
from worker.wire import FactCheck

log = logging.getLogger(__name__)

Loader = Callable[[str], Encoder]


def version_name_for(model_ref: str) -> str:
    """A readable, stable version name for a model directory or hub name."""
    path = Path(model_ref).expanduser()
    if path.is_dir():
        name = model_key(str(path))
        digest = hashlib.sha1()
        for file in ("modules.json", "config.json", "config_sentence_transformers.json"):
            if (path / file).is_file():
                digest.update((path / file).read_bytes())
        suffix = digest.hexdigest()[:8]
    else:
        name = model_ref.rsplit("/", 1)[-1]
        suffix = ""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")[:80] or "model"
    return f"{name}-{suffix}" if suffix else name


def encoder_loader(settings: Settings) -> Loader:
    options = EncoderOptions.from_settings(settings)
    if settings.backend == "onnx":
        from worker.core.onnx_backend import load_onnx_encoder

        return lambda ref: load_onnx_encoder(ref, options, store=settings.model_store, int8=settings.onnx_int8)
    return lambda ref: SentenceTransformerEncoder(ref, options)


def reranker_loader(settings: Settings) -> Callable[[str], Reranker | None] | None:
    """Loads a version's cross-encoder when reranking is on (``rerank_top_n`` > 0)."""
    if settings.rerank_top_n == 0:
        return None
    from worker.core.encoder import resolve_device
    from worker.retrieval.rerank import load_reranker

    device = resolve_device(settings.device)
    return lambda path: load_reranker(path, device)


class ModelManager:
    """Holds the loaded encoders by version and the one that currently serves."""

    def __init__(
        self,
        store: Store,
        loader: Loader,
        metrics: Metrics | None = None,
        rerankers: Callable[[str], Reranker | None] | None = None,
    ) -> None:
        self.metrics = metrics
        self.rerankers = rerankers
        self.store = store
        self.loader = loader
        self._encoders: dict[str, Encoder] = {}
        self._current: ServingModel | None = None
        self._shadow: ServingModel | None = None
        self._lock = threading.Lock()
        self.switching = False

    def current(self) -> ServingModel:
        if self._current is None:
            raise RuntimeError("no model loaded yet")
        return self._current

    def shadow(self) -> ServingModel | None:
        """The version answering a share of posts in shadow (never published), if any."""
        return self._shadow

    @property
    def loaded(self) -> bool:
        return self._current is not None

    def encoder_for(self, version: str, path: str) -> Encoder:
        """The encoder of a version, loaded once (called from worker threads)."""
        with self._lock:
            encoder = self._encoders.get(version)
            if encoder is None:
                encoder = self.loader(path)
                self._encoders[version] = encoder
                if self.metrics is not None:
                    self.metrics.model_loads.inc()
            return encoder

    async def load_active(self) -> ServingModel:
        active = await self.store.active_version()
        if active is None:
            raise RuntimeError("no active model version: start a worker (it bootstraps one) or run `factmatch load`")
        served = await self.serve(active)
        await self.refresh_shadow()
        return served

    async def serve(self, mv: ModelVersion) -> ServingModel:
        encoder = await asyncio.to_thread(self.encoder_for, mv.version, mv.path)
        if encoder.dimension != mv.dimension:
            raise RuntimeError(
                f"model at {mv.path} gives {encoder.dimension} dimensions, version {mv.version} expects {mv.dimension}"
            )
        previous = self._current.version if self._current else None
        # One assignment: a batch that already took its snapshot finishes on the old version,
        # the next batch starts on the new one.
        decisions = await self.store.decisions(mv.version)
        if self.rerankers is not None:
            decisions = dataclasses.replace(decisions, reranker=await asyncio.to_thread(self.rerankers, mv.path))
        self._current = ServingModel(mv.version, mv.dimension, encoder, decisions)
        if self.metrics is not None:
            self.metrics.model.info({"version": mv.version, "path": mv.path, "dimension": str(mv.dimension)})
            if previous is not None and previous != mv.version:
                self.metrics.model_switches.inc()
        log.info("serving model version %s", mv.version, extra={"model_version": mv.version, "previous": previous})
        self._forget_unused(keep={mv.version, *([self._shadow.version] if self._shadow else [])})
        return self._current

    def _forget_unused(self, keep: set[str]) -> None:
        # Versions still being indexed may be needed by the corpus indexer; it reloads on demand.
        with self._lock:
            for version in list(self._encoders):
                if version not in keep and len(self._encoders) > 2:
                    del self._encoders[version]

    async def refresh_shadow(self) -> None:
        """Follow the registry's shadow version: load it beside the active one, or drop it.

        The shadow is optional: a failure here is logged and never stops the active version."""
        try:
            await self._follow_shadow()
        except Exception as exc:
            log.warning("shadow version not loaded: %r", exc)

    async def _follow_shadow(self) -> None:
        name = await self.store.shadow_version_name()
        if name is None or (self._current is not None and name == self._current.version):
            self._shadow = None
            return
        if self._shadow is not None and self._shadow.version == name:
            return
        mv = await self.store.get_version(name)
        if mv is None or mv.indexed_at is None:
            self._shadow = None
            return
        encoder = await asyncio.to_thread(self.encoder_for, mv.version, mv.path)
        self._shadow = ServingModel(mv.version, mv.dimension, encoder, await self.store.decisions(mv.version))
        log.info("shadow version %s loaded", mv.version, extra={"model_version": mv.version})

    async def refresh(self) -> bool:
        """Serve the active version if it changed; True when a switch happened."""
        await self.refresh_shadow()
        active = await self.store.active_version()
        if active is None:
            return False
        if self._current is not None and active.version == self._current.version:
            # Same version; its decision model and tiers may have been (re)fitted since.
            decisions = dataclasses.replace(
                await self.store.decisions(active.version), reranker=self._current.decisions.reranker
            )
            if decisions != self._current.decisions:
                self._current = dataclasses.replace(self._current, decisions=decisions)
                log.info("decision model reloaded", extra={"model_version": active.version})
            return False
        if active.indexed_at is None:
            log.error("active version %s has no complete index; keeping %s", active.version, self._current)
            return False
        self.switching = True
        try:
            await self.serve(active)
        finally:
            self.switching = False
        return True

    async def watch(self, interval_s: float) -> None:
        """Follow the active version: Postgres NOTIFY for promptness, polling as the bound on lag."""
        while True:
            try:
                async for _ in self.store.notifications(NOTIFY_CHANNEL, interval_s):
                    await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("model watcher: %r; retrying in %.1fs", exc, interval_s)
                await asyncio.sleep(interval_s)


def bootstrap_model_ref(settings: Settings) -> str:
    """The configured model, or the default; a local directory as an absolute path, since the
    path is registered for every worker and a relative one would depend on each one's cwd."""
    ref = settings.model or default_model_ref(settings.model_store)
    path = Path(ref).expanduser()
    return str(path.resolve()) if path.is_dir() else ref


async def bootstrap_active_version(store: Store, settings: Settings, manager: ModelManager) -> ModelVersion:
    """Make sure one version is active: the configured model, promoted if none is."""
    return await bootstrap(
        store, settings, lambda: bootstrap_model_ref(settings), manager.encoder_for, version_name_for
    )


async def load_fact_checks(store: Store, settings: Settings, fact_checks: Sequence[FactCheck]) -> int:
    """Load fact-checks and embed them under every serving version (bootstrapping one if none is active)."""
    manager = ModelManager(store, encoder_loader(settings))
    if await store.active_version() is None:
        # Rows first, index after: the bootstrap embeds everything, then builds the index.
        await store.upsert_fact_checks(fact_checks)
        await bootstrap_active_version(store, settings, manager)
        return len({fc.id for fc in fact_checks})
    change = await CorpusIndexer(store, manager.encoder_for).upsert(fact_checks, progress=True)
    return change.upserted


async def eval_model_ref(settings: Settings, model: str | None) -> str:
    """The model an evaluation uses: the one named, else the active version's, else the configured default."""
    if model:
        return model
    if settings.database_url is not None:
        from worker.storage import open_store

        async with open_store(settings, migrate_first=False) as store:
            active = await store.active_version()
        if active is not None:
            return active.path
    return settings.model or default_model_ref(settings.model_store)
