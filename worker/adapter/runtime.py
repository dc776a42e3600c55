"""The composition root: the production worker's parts, built once from ``Settings`` and wired.

Store, model manager, retriever, pipeline, side-topic processors, sinks and broker are
created here and nowhere else; health checks and background tasks (model watcher, lag,
corpus size) start and stop with the worker. ``create_app`` runs it under FastStream; the
demo and the tests start it in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Sequence
from typing import Any

from worker.adapter import kafka
from worker.adapter.broker import WorkerDeps, build_broker
from worker.adapter.broker_watch import BrokerWatch
from worker.adapter.claim_reports import ClaimReporter
from worker.adapter.coverage import PartitionCoverage, watch_partitions
from worker.adapter.rematching import RematchLoop
from worker.adapter.sinks import DeadLetterArchive, ResultSink
from worker.core.clusters import Clustering
from worker.core.images import ImageMatching
from worker.core.indexer import CorpusIndexer
from worker.core.items import PostItem
from worker.core.language import fasttext_detector
from worker.core.pipeline import MatchPipeline, ServingModel
from worker.core.rematch import Rematcher
from worker.core.reuse import Reuse
from worker.core.serving import AfterFirstLoad, ServingEvents
from worker.core.shadow import ShadowRunner
from worker.core.side_topics import FactCheckEvents, FeedbackEvents
from worker.domain import SERVING_STATUSES, ShadowRow
from worker.observability import HealthServer, Metrics
from worker.retrieval.overmatch import OverMatchWatch, QuarantineGuard
from worker.retrieval.recall import RecallMonitor
from worker.retrieval.retriever import Retriever
from worker.settings import Settings
from worker.storage.db import UNAVAILABLE
from worker.wire import MatchResult

log = logging.getLogger(__name__)

# How long the trending fact-checks' hourly counts are kept: their week and a day's margin.
TREND_HISTORY_S = 8 * 86_400


class WorkerRuntime:
    """The production worker's parts: store, models, pipeline, corpus indexer and broker."""

    def __init__(self, settings: Settings, extra_sinks: list[ResultSink] | None = None) -> None:
        from worker.configs import image_reader, model_manager, store_from_settings

        self.settings = settings
        self.metrics = Metrics()
        self.store = store_from_settings(settings)
        self.models = model_manager(self.store, settings)
        self.models.events = ServingEvents(
            loaded=self.metrics.model_loads.inc,
            switched=self.metrics.model_switches.inc,
            serving=lambda mv, precision: self.metrics.model.info(
                {"version": mv.version, "path": mv.path, "dimension": str(mv.dimension), "precision": precision}
            ),
        )
        # One image reader (its fetcher's connections and limits) for posts and fact-checks.
        self.image_reader = image_reader(settings)
        self.pipeline = self._pipeline()
        self.corpus = CorpusIndexer(self.store, self.models.encoder_for, self.image_reader, self.store.images)
        self.broker_watch = BrokerWatch(settings, self.consumers)
        self.coverage = PartitionCoverage(settings.unserved_partition_after_s)
        self.deps = self._deps(extra_sinks)
        self.broker = build_broker(settings, self.deps, metrics=self.metrics, watch=self.broker_watch)
        self.reporter = (
            ClaimReporter(self.store, self.broker, settings)
            if settings.claims_report_interval_s > 0 and settings.claim_clusters
            else None
        )
        self.rematch = self._rematch_loop(extra_sinks or [])
        self.health = HealthServer(
            self.metrics,
            {
                "consumer": self._check_consumer,
                "model": self._check_model,
                "database": self._check_database,
                "index": self._check_index,
            },
            host=settings.metrics_host,
            port=settings.metrics_port,
            startup_checks={"model": self._check_model},
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._loading: asyncio.Task[None] | None = None

    def _watchers(self) -> None:
        """The over-match guard (it also filters what the retriever shows) and the recall probe."""
        from worker.configs import overmatch_config

        settings, flags = self.settings, self.metrics.overmatch_flags
        self.guard = QuarantineGuard(
            self.store.quarantine,
            OverMatchWatch(overmatch_config(settings)),
            refresh_s=settings.quarantine_refresh_s,
            enforce=settings.overmatch_quarantine,
            worker_id=f"worker@{socket.gethostname()}",
            on_flag=lambda flag: flags.labels(fact_check_id=flag.fact_check_id).inc(),
        )
        self.recall = (
            RecallMonitor(
                self.store.embeddings,
                share=settings.recall_sample_share,
                k=min(10, settings.retrieval_candidates),
                on_recall=self._recorded,
            )
            if settings.recall_sample_share > 0
            else None
        )

    def _pipeline(self) -> MatchPipeline:
        """The match pipeline and what watches it: over-match guard, recall probe, shadow."""
        from worker.configs import pipeline_config, retrieval_config

        settings, metrics = self.settings, self.metrics
        self._watchers()
        # One retriever; the shadow calls it without the observers, so it never flags
        # fact-checks or samples searches for what nobody was shown.
        retriever = self.retriever = Retriever(self.store.candidates, retrieval_config(settings), self.guard)
        self.shadow = ShadowRunner(
            self.models,
            retriever,
            self.store.shadow,
            share=settings.shadow_share,
            on_row=self._shadow_row,
            on_drop=lambda n: metrics.shadow_dropped.inc(n),
        )
        retries = metrics.retries
        self.reuse = (
            Reuse(self.store.answers, settings.reuse_window_s, settings.reuse_near_similarity)
            if settings.reuse_window_s > 0
            else None
        )
        self.clustering = (
            Clustering(
                self.store.clusters,
                settings.cluster_similarity,
                settings.cluster_window_s,
                fitted=settings.cluster_cut_fitted,
                across_languages=settings.cluster_across_languages,
            )
            if settings.claim_clusters
            else None
        )
        return MatchPipeline(
            self.models,
            retriever,
            pipeline_config(settings, UNAVAILABLE, on_retry=lambda what: retries.labels(what=what).inc()),
            detect_language=fasttext_detector(settings.language_min_confidence) if settings.detect_language else None,
            observers=[
                self._watch_overmatch,
                *([self._probe_recall] if self.recall else []),
                *([self.shadow.observe] if settings.shadow_share > 0 else []),
            ],
            reuse=self.reuse,
            clustering=self.clustering,
            images=self._images(),
        )

    def _deps(self, extra_sinks: list[ResultSink] | None) -> WorkerDeps:
        from worker.configs import limits as limits_of

        settings = self.settings
        limits = limits_of(settings)
        archive = (
            [DeadLetterArchive(self.store.dead_letters, settings.dead_letter_max_value_bytes)]
            if settings.dead_letter_archive
            else []
        )
        return WorkerDeps(
            pipeline=AfterFirstLoad(self.pipeline, self.model_loaded),
            factchecks=FactCheckEvents(self.corpus, limits),
            feedback=FeedbackEvents(self.store.feedback, limits),
            sinks=[*archive, *(extra_sinks or [])],
            outages=UNAVAILABLE,
        )

    def _images(self) -> ImageMatching | None:
        """Posts' images read and matched by PDQ hash (None when images are off)."""
        from worker.configs import image_config

        if self.image_reader is None:
            return None
        return ImageMatching(self.image_reader, self.store.images, image_config(self.settings), self.guard)

    def _rematch_loop(self, extra_sinks: list[ResultSink]) -> RematchLoop | None:
        """Updates for the posts nobody had a fact-check for, when one arrives (needs the claim clusters)."""
        from worker.configs import rematch_config

        settings = self.settings
        if settings.rematch_interval_s <= 0 or not settings.claim_clusters:
            return None

        async def publish(results: Sequence[MatchResult]) -> None:
            for result in results:
                await self.broker.publish(
                    result.model_dump_json().encode(), topic=settings.topic_matches, key=result.post_id.encode()
                )
            for sink in extra_sinks:
                await sink.publish(results, ())

        rematcher = Rematcher(self.models, self.retriever, self.store.rematches, rematch_config(settings))
        return RematchLoop(
            rematcher, self.store.trends.report_turn, publish, settings.rematch_interval_s, self.metrics.rematched.inc
        )

    async def _watch_overmatch(self, _model: ServingModel, items: Sequence[PostItem]) -> None:
        # What moderators are shown: every tiered match, so a version with no "match" cut is watched too;
        # counted per claim cluster, so a viral claim is a trend and not an over-match.
        await self.guard.observe(
            (
                frozenset(m.fact_check_id for m in item.result.matches if m.tier is not None),
                str(item.result.cluster_id) if item.result.cluster_id is not None else None,
            )
            for item in items
            if item.result is not None
        )

    def _probe_recall(self, model: ServingModel, items: Sequence[PostItem]) -> None:
        assert self.recall is not None
        import numpy as np

        pairs = [
            (i.vector, i.searched.found.candidates) for i in items if i.searched is not None and i.vector is not None
        ]
        if pairs:
            self.recall.offer(model.version, model.dimension, np.stack([v for v, _ in pairs]), [c for _, c in pairs])

    def _shadow_row(self, row: ShadowRow) -> None:
        self.metrics.shadow_posts.labels(model_version=row.model_version).inc()
        if row.active_fact_check_id == row.shadow_fact_check_id:
            self.metrics.shadow_agreements.labels(model_version=row.model_version).inc()
        if row.active_score is not None and row.shadow_score is not None:
            shift = self.metrics.shadow_score_shift.labels(model_version=row.model_version, lang=row.lang or "und")
            shift.observe(row.shadow_score - row.active_score)

    def _recorded(self, version: str, _recall: float, mean: float) -> None:
        self.metrics.ann_recall.labels(model_version=version).set(mean)
        self.metrics.ann_recall_probes.labels(model_version=version).inc()

    def consumers(self) -> list[Any]:
        return [c for sub in self.broker.subscribers if (c := getattr(sub, "consumer", None)) is not None]

    async def _check_consumer(self) -> tuple[bool, str]:
        consumers = self.consumers()
        if not consumers:
            return False, "consumers not started"
        posts = [c for c in consumers if self.settings.topic_posts in c.subscription()]
        assigned = sum(len(c.assignment()) for c in posts)
        if not assigned:
            # Also a replica beyond the partition count: it serves nothing until a rebalance.
            return False, "no partition of the posts topic assigned"
        if not self.broker_watch.reachable:
            return False, "brokers unreachable; consumption paused"
        if (unserved := self.coverage.describe()) is not None:
            return False, unserved
        return True, f"{assigned} partition(s) assigned"

    async def _check_model(self) -> tuple[bool, str]:
        if not self.models.loaded:
            return False, "no model loaded"
        if self.models.switching:
            return False, "model switch in flight"
        return True, self.models.current().version

    async def _check_database(self) -> tuple[bool, str]:
        return (True, "reachable") if await self.store.ping() else (False, "unreachable")

    async def _check_index(self) -> tuple[bool, str]:
        active = await self.store.registry.active_version()
        if active is None or active.indexed_at is None:
            return False, "active version has no complete index"
        if self.models.loaded and active.version != self.models.current().version:
            return False, f"active version is {active.version}, switch pending"
        return True, f"{active.version} indexed at {active.indexed_at:%Y-%m-%dT%H:%M:%S}"

    async def _stats(self) -> None:
        """Housekeeping now and then: the corpus size per serving version; answers and clusters past their window."""
        while True:
            try:
                for mv in await self.store.registry.versions_with_status(SERVING_STATUSES):
                    size = await self.store.embeddings.count_embeddings(mv.version)
                    self.metrics.corpus_size.labels(model_version=mv.version).set(size)
                if self.reuse is not None:
                    await self.reuse.forget()
                if self.clustering is not None:
                    await self.clustering.forget()
                    await self.store.trends.forget_hits(TREND_HISTORY_S)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("corpus stats failed: %r", exc)
            await asyncio.sleep(max(15.0, self.settings.lag_interval_s))

    async def start_services(self, *, wait_for_model: bool = True) -> None:
        """Everything but the broker. With ``wait_for_model`` off the model loads in the
        background, so the consumer groups join meanwhile (a restart's first result comes
        seconds sooner); batches wait for it in :class:`~worker.core.serving.AfterFirstLoad`."""
        from worker.configs import bootstrap_active_version

        if self.settings.metrics_enabled:
            await self.health.start()
        await kafka.preflight(self.settings)
        await self.store.open()
        await bootstrap_active_version(self.store, self.settings, self.models)
        self._loading = asyncio.create_task(self._load())
        if wait_for_model:
            await self.model_loaded()

    async def _load(self) -> None:
        await self.models.load_active()
        # Started after the first load: the watcher switches versions, which assumes one serves.
        self._tasks = [
            asyncio.create_task(self.models.watch(self.settings.model_poll_interval_s)),
            asyncio.create_task(
                watch_partitions(self.metrics, self.consumers, self.coverage, self.settings.lag_interval_s)
            ),
            asyncio.create_task(self._stats()),
            asyncio.create_task(self.broker_watch.run()),
            *([asyncio.create_task(self.recall.run())] if self.recall else []),
            asyncio.create_task(self.shadow.run()),
            *([asyncio.create_task(self.reporter.run())] if self.reporter else []),
            *([asyncio.create_task(self.rematch.run())] if self.rematch else []),
        ]

    async def model_loaded(self) -> None:
        """Returns once the active version serves; raises what stopped it from loading."""
        if self._loading is None:
            raise RuntimeError("start_services() has not run")
        await asyncio.shield(self._loading)

    async def fail_unless_loaded(self) -> None:
        # FastStream's after-startup hook: a model that cannot load stops the worker, as it
        # did when the load came before the broker.
        try:
            await self.model_loaded()
        except BaseException:
            await self.broker.stop()
            raise

    async def stop_services(self) -> None:
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._loading
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.health.stop()
        if self.image_reader is not None:
            await self.image_reader.close()
        await self.store.close()

    async def start(self) -> None:
        await self.start_services()
        await self.broker.start()

    async def settle_batches(self) -> None:
        """Before the consumers stop: the posts' batches in flight publish and commit."""
        for handler in self.deps.overlapped:
            await handler.close()

    async def stop(self) -> None:
        await self.settle_batches()
        await self.broker.stop()
        await self.stop_services()


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[WorkerRuntime]:
    """A started worker for the length of the block (the demo, ``factmatch up``, tests)."""
    runtime = WorkerRuntime(settings)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()
