"""Which model version serves, and where its encoder comes from.

The database's ``model_versions`` table is the source of truth: a worker serves the one
active version, loaded from the path registered there. On a fresh database the configured
bootstrap model is registered, indexed and activated first, under an advisory lock so that
replicas starting together do it once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import re
import threading
from collections.abc import Callable
from pathlib import Path

import psycopg

from worker.encoder import Encoder, EncoderOptions, SentenceTransformerEncoder, default_model_ref
from worker.indexer import index_version
from worker.observability import Metrics
from worker.pipeline import ServingModel
from worker.settings import Settings
from worker.store import ModelVersion, Store

log = logging.getLogger(__name__)

BOOTSTRAP_LOCK_ID = 0x66616375
Loader = Callable[[str], Encoder]


def version_name_for(model_ref: str) -> str:
    """A readable, stable version name for a model directory or hub name."""
    path = Path(model_ref).expanduser()
    if path.is_dir():
        name = path.name if path.name not in ("model", "models", "") else path.parent.name
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
    return lambda ref: SentenceTransformerEncoder(ref, options)


class ModelManager:
    """Holds the loaded encoders by version and the one that currently serves."""

    def __init__(self, store: Store, loader: Loader, metrics: Metrics | None = None) -> None:
        self.metrics = metrics
        self.store = store
        self.loader = loader
        self._encoders: dict[str, Encoder] = {}
        self._current: ServingModel | None = None
        self._lock = threading.Lock()
        self.switching = False
        self.switches = 0

    def current(self) -> ServingModel:
        if self._current is None:
            raise RuntimeError("no model loaded yet")
        return self._current

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
            raise RuntimeError("no active model version; run `factmatch models bootstrap` or start a worker")
        return await self.serve(active)

    async def serve(self, mv: ModelVersion) -> ServingModel:
        encoder = await asyncio.to_thread(self.encoder_for, mv.version, mv.path)
        if encoder.dimension != mv.dimension:
            raise RuntimeError(
                f"model at {mv.path} gives {encoder.dimension} dimensions, version {mv.version} expects {mv.dimension}"
            )
        previous = self._current.version if self._current else None
        # One assignment: a batch that already took its snapshot finishes on the old version,
        # the next batch starts on the new one.
        thresholds = await self.store.thresholds(mv.version)
        self._current = ServingModel(mv.version, mv.dimension, encoder, thresholds)
        self.switches += previous is not None and previous != mv.version
        if self.metrics is not None:
            self.metrics.model.info({"version": mv.version, "path": mv.path, "dimension": str(mv.dimension)})
            if previous is not None and previous != mv.version:
                self.metrics.model_switches.inc()
        log.info("serving model version %s", mv.version, extra={"model_version": mv.version, "previous": previous})
        self._forget_unused(keep={mv.version})
        return self._current

    def _forget_unused(self, keep: set[str]) -> None:
        # Versions still being indexed may be needed by the corpus indexer; it reloads on demand.
        with self._lock:
            for version in list(self._encoders):
                if version not in keep and len(self._encoders) > 2:
                    del self._encoders[version]

    async def refresh(self) -> bool:
        """Serve the active version if it changed; True when a switch happened."""
        active = await self.store.active_version()
        if active is None:
            return False
        if self._current is not None and active.version == self._current.version:
            # Same version; thresholds may have been (re)fitted since.
            thresholds = await self.store.thresholds(active.version)
            if thresholds != dict(self._current.thresholds):
                self._current = dataclasses.replace(self._current, thresholds=thresholds)
                log.info("thresholds reloaded", extra={"model_version": active.version})
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
                async with await psycopg.AsyncConnection.connect(self.store.conninfo, autocommit=True) as conn:
                    await conn.execute("LISTEN factmatch_model")
                    while True:
                        await self.refresh()
                        async for _ in conn.notifies(timeout=interval_s, stop_after=1):
                            pass
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
    """Make sure one version is active: register, index and activate the configured model if none is."""
    active = await store.active_version()
    if active is not None:
        return active
    # The lock lives on its own connection so that a pool of one can still do the work.
    async with await psycopg.AsyncConnection.connect(store.conninfo, autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (BOOTSTRAP_LOCK_ID,))
        try:
            active = await store.active_version()
            if active is not None:
                return active
            # Off the loop: the first use of the default model converts it (tens of seconds).
            ref = await asyncio.to_thread(bootstrap_model_ref, settings)
            version = settings.model_version or version_name_for(ref)
            encoder = await asyncio.to_thread(manager.encoder_for, version, ref)
            mv = await store.get_version(version)
            if mv is None:
                mv = await store.register_version(version, ref, encoder.dimension, status="indexing", base=ref)
            elif mv.status not in ("indexing", "ready", "retired"):
                raise RuntimeError(f"model version {version} exists with status {mv.status}; pick another name")
            else:
                await store.set_status(version, "indexing")
            log.info("bootstrapping model version %s from %s", version, ref)
            await index_version(
                store,
                version,
                encoder.dimension,
                encoder,
                hnsw_m=settings.hnsw_m,
                hnsw_ef_construction=settings.hnsw_ef_construction,
            )
            await store.activate(version)
            result = await store.get_version(version)
            assert result is not None
            return result
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (BOOTSTRAP_LOCK_ID,))
