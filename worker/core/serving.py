"""Which model version serves: the worker's view of the registry.

The database's ``model_versions`` table is the source of truth: a worker serves the one
active version, loaded from the path registered there, and follows the registry's NOTIFY
channel (with polling as the bound on lag) to switch between two batches. On a fresh
database the configured bootstrap model is promoted first (:mod:`worker.core.rollout`).
How encoders are built from settings is the composition root's (:mod:`worker.configs`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import re
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from worker.core.pipeline import BatchOutcome, MatchPipeline, ServingModel
from worker.core.retry import DependencyUnavailable
from worker.domain import NOTIFY_CHANNEL, Encoder, ModelVersion
from worker.retrieval.decision import Decisions
from worker.retrieval.rerank import Reranker
from worker.retrieval.shipped import model_key
from worker.storage.interfaces import ServingStores
from worker.wire import RawRecord

log = logging.getLogger(__name__)

Loader = Callable[[str], Encoder]


@dataclass(frozen=True)
class ServingEvents:
    """What the manager tells whoever watches it (the worker's metrics); every hook optional."""

    loaded: Callable[[], None] | None = None
    switched: Callable[[], None] | None = None
    # The version now serving and its encoder's arithmetic (``precision``, e.g. "float32, bfloat16 autocast").
    serving: Callable[[ModelVersion, str], None] | None = None


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


class ModelManager:
    """Holds the loaded encoders by version and the one that currently serves."""

    def __init__(
        self,
        store: ServingStores,
        loader: Loader,
        events: ServingEvents | None = None,
        rerankers: Callable[[str], Reranker | None] | None = None,
    ) -> None:
        self.events = events or ServingEvents()
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
                if self.events.loaded is not None:
                    self.events.loaded()
            return encoder

    async def load_active(self) -> ServingModel:
        active = await self.store.registry.active_version()
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
        decisions = await self.decisions(mv.version)
        if self.rerankers is not None:
            decisions = dataclasses.replace(decisions, reranker=await asyncio.to_thread(self.rerankers, mv.path))
        self._current = ServingModel(mv.version, mv.dimension, encoder, decisions)
        if self.events.serving is not None:
            self.events.serving(mv, str(getattr(encoder, "precision", "unknown")))
        if previous is not None and previous != mv.version and self.events.switched is not None:
            self.events.switched()
        log.info("serving model version %s", mv.version, extra={"model_version": mv.version, "previous": previous})
        self._forget_unused(keep={mv.version, *([self._shadow.version] if self._shadow else [])})
        return self._current

    async def decisions(self, version: str) -> Decisions:
        """The version's decision model and tier cuts, as the store keeps them."""
        return Decisions.from_stored(await self.store.decisions.stored_decision(version), version)

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
        name = await self.store.shadow.shadow_version_name()
        if name is None or (self._current is not None and name == self._current.version):
            self._shadow = None
            return
        if self._shadow is not None and self._shadow.version == name:
            return
        mv = await self.store.registry.get_version(name)
        if mv is None or mv.indexed_at is None:
            self._shadow = None
            return
        encoder = await asyncio.to_thread(self.encoder_for, mv.version, mv.path)
        self._shadow = ServingModel(mv.version, mv.dimension, encoder, await self.decisions(mv.version))
        log.info("shadow version %s loaded", mv.version, extra={"model_version": mv.version})

    async def refresh(self) -> bool:
        """Serve the active version if it changed; True when a switch happened."""
        await self.refresh_shadow()
        active = await self.store.registry.active_version()
        if active is None:
            return False
        if self._current is not None and active.version == self._current.version:
            # Same version; its decision model and tiers may have been (re)fitted since.
            decisions = dataclasses.replace(
                await self.decisions(active.version), reranker=self._current.decisions.reranker
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


class AfterFirstLoad:
    """The pipeline, behind the first model load (the consumer groups join while it runs)."""

    def __init__(self, pipeline: MatchPipeline, loaded: Callable[[], Awaitable[None]]) -> None:
        self.pipeline = pipeline
        self.loaded = loaded

    async def process(self, records: Sequence[RawRecord], released: Callable[[], None] | None = None) -> BatchOutcome:
        try:
            await self.loaded()
        except Exception as exc:
            # Not the posts' fault: left uncommitted (no attempt counted) while the worker stops.
            raise DependencyUnavailable(f"the model did not load: {exc!r}") from exc
        return await self.pipeline.process(records, released)
