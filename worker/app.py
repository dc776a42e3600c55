"""The FastStream adapter: Kafka in, pipeline, Kafka out.

Thin on purpose. Handlers turn consumed records into :class:`RawRecord`s, call the
pipeline or the corpus indexer, and publish what comes back; offsets are committed only
after every result and dead letter of the batch is acknowledged by Kafka. A dependency
that stays down leaves the batch uncommitted (nack: the consumer seeks back and the batch
returns after the pipeline's backoff), so nothing is lost and nothing spins.

``faststream run worker.app:app`` builds the app from the environment on first access.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import logging
import ssl
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from faststream import AckPolicy, FastStream
from faststream.exceptions import NackMessage
from faststream.kafka import KafkaBroker
from faststream.kafka.publisher.usecase import DefaultPublisher
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from worker.indexer import CorpusChange
from worker.observability import HealthServer, Metrics, watch_lag
from worker.pipeline import BatchOutcome, DependencyUnavailable
from worker.settings import Settings
from worker.wire import (
    DeadLetter,
    FactCheckEvent,
    Feedback,
    MatchResult,
    RawRecord,
    decode_fact_check_event,
    decode_feedback,
)

log = logging.getLogger(__name__)


class PostProcessor(Protocol):
    async def process(self, records: Sequence[RawRecord]) -> BatchOutcome: ...


class CorpusUpdater(Protocol):
    async def apply(self, events: Sequence[FactCheckEvent]) -> CorpusChange: ...


class FeedbackSink(Protocol):
    async def insert_feedback(self, items: Sequence[Feedback]) -> int: ...


@dataclass
class WorkerDeps:
    """What the handlers call; real ones in production, fakes in the in-memory tests."""

    pipeline: PostProcessor
    corpus: CorpusUpdater
    feedback: FeedbackSink


def kafka_security(settings: Settings) -> BaseSecurity | None:
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = ssl.create_default_context(cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None)
    if protocol == "SSL":
        return BaseSecurity(ssl_context=context)
    use_ssl = protocol == "SASL_SSL"
    assert settings.kafka_sasl_username and settings.kafka_sasl_password  # checked by Settings
    username, password = settings.kafka_sasl_username, settings.kafka_sasl_password.get_secret_value()
    ctx = context if use_ssl else None
    if settings.kafka_sasl_mechanism == "SCRAM-SHA-256":
        return SASLScram256(username, password, ssl_context=ctx, use_ssl=use_ssl)
    if settings.kafka_sasl_mechanism == "SCRAM-SHA-512":
        return SASLScram512(username, password, ssl_context=ctx, use_ssl=use_ssl)
    return SASLPlaintext(username, password, ssl_context=ctx, use_ssl=use_ssl)


def make_broker(settings: Settings, **kwargs: Any) -> KafkaBroker:
    return KafkaBroker(
        settings.kafka_bootstrap,
        security=kafka_security(settings),
        client_id="factmatch",
        acks="all",
        linger_ms=5,
        # Results carry fact-check texts; aiokafka's 16 KiB default batch is too small for many.
        max_batch_size=1024 * 1024,
        max_request_size=4 * 1024 * 1024,
        graceful_timeout=settings.shutdown_grace_s,
        # Per-message "Received/Processed" lines go to DEBUG; our own batch logs say more.
        log_level=logging.DEBUG,
        **kwargs,
    )


def to_raw(record: Any) -> RawRecord:
    return RawRecord(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value,
        timestamp_ms=record.timestamp,
    )


async def _raw_records(message: Any) -> Any:
    # Bodies are validated one record at a time by the pipeline, so that one bad message
    # goes to the dead-letter topic instead of failing its whole batch.
    raw = message.raw_message
    return list(raw) if isinstance(raw, (list, tuple)) else [raw]


async def publish_all(
    matches: DefaultPublisher,
    dead: DefaultPublisher,
    outcome_results: Sequence[MatchResult],
    dead_letters: Sequence[DeadLetter],
) -> None:
    """Publish every result (keyed by post id) and dead letter, then wait for all acks."""
    futures: list[asyncio.Future[Any]] = []
    for result in outcome_results:
        futures.append(await matches.publish(result, key=result.post_id.encode(), no_confirm=True))
    for letter in dead_letters:
        key = letter.key_b64
        futures.append(
            await dead.publish(
                letter,
                key=None if key is None else base64.b64decode(key),
                headers={"factmatch-reason": letter.reason},
                no_confirm=True,
            )
        )
    # The in-memory test broker confirms at once and hands back no future.
    pending = [f for f in futures if inspect.isawaitable(f)]
    if pending:
        await asyncio.gather(*pending)


T = TypeVar("T")


def split_decoded(
    records: Sequence[Any], decode: Callable[[RawRecord], T | DeadLetter]
) -> tuple[list[T], list[DeadLetter]]:
    """Decode each consumed record alone: the good ones, and a dead letter for each bad one."""
    items: list[T] = []
    letters: list[DeadLetter] = []
    for record in records:
        decoded = decode(to_raw(record))
        if isinstance(decoded, DeadLetter):
            letters.append(decoded)
        else:
            items.append(decoded)
    return items, letters


def count_dead_letters(metrics: Metrics, source: str, letters: Sequence[DeadLetter]) -> None:
    for letter in letters:
        metrics.dead_letters.labels(source=source, reason=letter.reason).inc()


def observe_batch(metrics: Metrics, outcome: BatchOutcome, raws: Sequence[RawRecord], publish_s: float) -> None:
    metrics.batch_tokens.observe(outcome.tokens)
    metrics.stage_seconds.labels(stage="encode").observe(outcome.encode_seconds)
    metrics.stage_seconds.labels(stage="search").observe(outcome.search_seconds)
    metrics.stage_seconds.labels(stage="publish").observe(publish_s)
    metrics.results_published.inc(len(outcome.results))
    count_dead_letters(metrics, "posts", outcome.dead_letters)
    produced = {(r.partition, r.offset): r.timestamp_ms for r in raws}
    now = time.time()
    for result in outcome.results:
        best_tier = result.matches[0].tier if result.matches else None
        metrics.results_by_language.labels(lang=result.lang or "unknown", tier=best_tier or "none").inc()
        metrics.matches_per_post.observe(len(result.matches))
        if result.matches:
            metrics.best_score.observe(result.matches[0].score)
        stamp = produced.get((result.source.partition, result.source.offset)) if result.source else None
        if stamp:
            metrics.end_to_end_seconds.observe(max(0.0, now - stamp / 1000))


def build_broker(
    settings: Settings, deps: WorkerDeps, broker: KafkaBroker | None = None, metrics: Metrics | None = None
) -> KafkaBroker:
    """Declare the subscribers and publishers on ``broker``."""
    broker = broker or make_broker(settings)
    metrics = metrics or Metrics()
    matches = broker.publisher(
        settings.topic_matches, title="matches", description="One MatchResult per post.", schema=MatchResult
    )
    dead = broker.publisher(
        settings.topic_dead_letter,
        title="dead-letters",
        description="Messages that could not be processed.",
        schema=DeadLetter,
    )

    @broker.subscriber(
        settings.topic_posts,
        batch=True,
        group_id=settings.group_id,
        auto_offset_reset=settings.auto_offset_reset,
        max_records=settings.batch_max_records,
        batch_timeout_ms=settings.batch_max_wait_ms,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=max(500, settings.session_timeout_ms // 3),
        max_poll_interval_ms=settings.max_poll_interval_ms,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        decoder=_raw_records,
        title="posts",
    )
    async def on_posts(records: list[Any]) -> None:
        raws = [to_raw(r) for r in records]
        batch_id = uuid.uuid4().hex[:12]
        metrics.posts_consumed.inc(len(raws))
        metrics.batch_records.observe(len(raws))
        try:
            outcome = await deps.pipeline.process(raws)
            started = time.perf_counter()
            await publish_all(matches, dead, outcome.results, outcome.dead_letters)
            observe_batch(metrics, outcome, raws, time.perf_counter() - started)
        except DependencyUnavailable as exc:
            metrics.errors.labels(stage="dependency").inc()
            log.error("batch left uncommitted: %s", exc, extra={"batch_id": batch_id, "records": len(raws)})
            raise NackMessage() from exc
        except Exception:
            # Not a dependency we know: still never commit what was not published. Back off
            # first so a persistent fault cannot turn redelivery into a busy loop.
            metrics.errors.labels(stage="unexpected").inc()
            log.exception("batch failed; it will be redelivered", extra={"batch_id": batch_id, "records": len(raws)})
            await asyncio.sleep(settings.retry_backoff_max_s)
            raise
        for letter in outcome.dead_letters:
            log.warning(
                "dead-lettered",
                extra={
                    "batch_id": batch_id,
                    "reason": letter.reason,
                    "partition": letter.partition,
                    "offset": letter.offset,
                },
            )
        log.debug(
            "batch done",
            extra={
                "batch_id": batch_id,
                "records": len(raws),
                "post_ids": [r.post_id for r in outcome.results][:100],
                "results": len(outcome.results),
                "dead_letters": len(outcome.dead_letters),
                "model_version": outcome.model_version,
            },
        )

    @broker.subscriber(
        settings.topic_factchecks,
        batch=True,
        group_id=settings.indexer_group_id,
        auto_offset_reset="earliest",
        max_records=256,
        batch_timeout_ms=200,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=max(500, settings.session_timeout_ms // 3),
        max_poll_interval_ms=settings.max_poll_interval_ms,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        decoder=_raw_records,
        title="factchecks",
    )
    async def on_factchecks(records: list[Any]) -> None:
        events, letters = split_decoded(records, decode_fact_check_event)
        try:
            change = await deps.corpus.apply(events)
            await publish_all(matches, dead, [], letters)
            metrics.corpus_changes.labels(op="upsert").inc(change.upserted)
            metrics.corpus_changes.labels(op="delete").inc(change.deleted)
            count_dead_letters(metrics, "factchecks", letters)
        except Exception:
            log.exception("fact-check batch of %d failed; it will be redelivered", len(records))
            await asyncio.sleep(settings.retry_backoff_max_s)
            raise
        log.info(
            "corpus updated",
            extra={
                "upserted": change.upserted,
                "deleted": change.deleted,
                "embedded": change.embedded,
                "dead_letters": len(letters),
            },
        )

    @broker.subscriber(
        settings.topic_feedback,
        batch=True,
        group_id=settings.feedback_group_id,
        auto_offset_reset="earliest",
        max_records=500,
        batch_timeout_ms=200,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=max(500, settings.session_timeout_ms // 3),
        max_poll_interval_ms=settings.max_poll_interval_ms,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        decoder=_raw_records,
        title="match-feedback",
    )
    async def on_feedback(records: list[Any]) -> None:
        items, letters = split_decoded(records, decode_feedback)
        try:
            stored = await deps.feedback.insert_feedback(items)
            await publish_all(matches, dead, [], letters)
            metrics.feedback_stored.inc(stored)
            count_dead_letters(metrics, "feedback", letters)
        except Exception:
            log.exception("feedback batch of %d failed; it will be redelivered", len(records))
            await asyncio.sleep(settings.retry_backoff_max_s)
            raise
        log.info("feedback stored", extra={"stored": stored, "dead_letters": len(letters)})

    return broker


class WorkerRuntime:
    """The production worker's parts: store, models, pipeline, corpus indexer and broker.

    ``create_app`` runs it under FastStream; the demo and the tests start it in-process.
    """

    def __init__(self, settings: Settings) -> None:
        import psycopg
        import psycopg_pool

        from worker.indexer import CorpusIndexer
        from worker.models import ModelManager, encoder_loader
        from worker.pipeline import MatchPipeline, PipelineConfig
        from worker.store import Store

        self.settings = settings
        self.metrics = Metrics()
        self.store = Store(
            settings.require_database_url(),
            min_size=settings.db_pool_min,
            max_size=settings.db_pool_max,
            ef_search=settings.ef_search,
            connect_timeout_s=settings.db_connect_timeout_s,
        )
        self.models = ModelManager(self.store, encoder_loader(settings), metrics=self.metrics)
        transient = (psycopg.OperationalError, psycopg_pool.PoolTimeout)
        retries = self.metrics.retries
        from worker.language import fasttext_detector

        self.pipeline = MatchPipeline(
            self.models,
            self.store,
            PipelineConfig.from_settings(settings, transient, on_retry=lambda what: retries.labels(what=what).inc()),
            detect_language=fasttext_detector(settings.language_min_confidence) if settings.detect_language else None,
        )
        self.corpus = CorpusIndexer(self.store, self.models.encoder_for)
        self.broker = build_broker(
            settings, WorkerDeps(pipeline=self.pipeline, corpus=self.corpus, feedback=self.store), metrics=self.metrics
        )
        self.health = HealthServer(
            self.metrics,
            {
                "consumer": self._check_consumer,
                "model": self._check_model,
                "database": self._check_database,
                "index": self._check_index,
            },
            port=settings.metrics_port,
        )
        self._tasks: list[asyncio.Task[None]] = []

    def consumers(self) -> list[Any]:
        return [c for sub in self.broker.subscribers if (c := getattr(sub, "consumer", None)) is not None]

    async def _check_consumer(self) -> tuple[bool, str]:
        consumers = self.consumers()
        if not consumers:
            return False, "consumers not started"
        posts = [c for c in consumers if self.settings.topic_posts in c.subscription()]
        # A replica beyond the partition count is a healthy group member with nothing assigned.
        joined = [c for c in posts if c.assignment() or getattr(getattr(c, "_coordinator", None), "member_id", "")]
        return (bool(joined), f"{sum(len(c.assignment()) for c in posts)} partition(s) assigned")

    async def _check_model(self) -> tuple[bool, str]:
        if not self.models.loaded:
            return False, "no model loaded"
        if self.models.switching:
            return False, "model switch in flight"
        return True, self.models.current().version

    async def _check_database(self) -> tuple[bool, str]:
        return (True, "reachable") if await self.store.ping() else (False, "unreachable")

    async def _check_index(self) -> tuple[bool, str]:
        active = await self.store.active_version()
        if active is None or active.indexed_at is None:
            return False, "active version has no complete index"
        if self.models.loaded and active.version != self.models.current().version:
            return False, f"active version is {active.version}, switch pending"
        return True, f"{active.version} indexed at {active.indexed_at:%Y-%m-%dT%H:%M:%S}"

    async def _stats(self) -> None:
        from worker.store import SERVING_STATUSES

        while True:
            try:
                for mv in await self.store.versions_with_status(SERVING_STATUSES):
                    size = await self.store.count_embeddings(mv.version)
                    self.metrics.corpus_size.labels(model_version=mv.version).set(size)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("corpus stats failed: %r", exc)
            await asyncio.sleep(max(15.0, self.settings.lag_interval_s))

    async def start_services(self) -> None:
        from worker.models import bootstrap_active_version

        if self.settings.metrics_enabled:
            await self.health.start()
        await self.store.open()
        await bootstrap_active_version(self.store, self.settings, self.models)
        await self.models.load_active()
        self._tasks = [
            asyncio.create_task(self.models.watch(self.settings.model_poll_interval_s)),
            asyncio.create_task(watch_lag(self.metrics, self.consumers, self.settings.lag_interval_s)),
            asyncio.create_task(self._stats()),
        ]

    async def stop_services(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.health.stop()
        await self.store.close()

    async def start(self) -> None:
        await self.start_services()
        await self.broker.start()

    async def stop(self) -> None:
        await self.broker.stop()
        await self.stop_services()


def create_app(settings: Settings | None = None) -> FastStream:
    """The production worker app: real store, real model, real broker."""
    from worker.logs import configure_logging

    settings = settings or Settings()
    configure_logging(settings.log_level, secrets=settings.secrets())
    runtime = WorkerRuntime(settings)
    return FastStream(runtime.broker, on_startup=[runtime.start_services], after_shutdown=[runtime.stop_services])


def __getattr__(name: str) -> Any:
    # `faststream run worker.app:app` resolves `app` here, so importing this module (tests,
    # the CLI) never reads the environment.
    if name == "app":
        return create_app()
    raise AttributeError(name)
