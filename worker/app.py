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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from faststream import AckPolicy, FastStream
from faststream.exceptions import NackMessage
from faststream.kafka import KafkaBroker
from faststream.kafka.publisher.usecase import DefaultPublisher
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from worker.indexer import CorpusChange
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


def build_broker(settings: Settings, deps: WorkerDeps, broker: KafkaBroker | None = None) -> KafkaBroker:
    """Declare the subscribers and publishers on ``broker``."""
    broker = broker or make_broker(settings)
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
        try:
            outcome = await deps.pipeline.process(raws)
            await publish_all(matches, dead, outcome.results, outcome.dead_letters)
        except DependencyUnavailable as exc:
            log.error("batch of %d left uncommitted: %s", len(raws), exc)
            raise NackMessage() from exc
        except Exception:
            # Not a dependency we know: still never commit what was not published. Back off
            # first so a persistent fault cannot turn redelivery into a busy loop.
            log.exception("batch of %d failed; it will be redelivered", len(raws))
            await asyncio.sleep(settings.retry_backoff_max_s)
            raise
        log.debug(
            "batch done",
            extra={
                "records": len(raws),
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
        events: list[FactCheckEvent] = []
        letters: list[DeadLetter] = []
        for record in records:
            decoded = decode_fact_check_event(to_raw(record))
            (letters if isinstance(decoded, DeadLetter) else events).append(decoded)  # type: ignore[arg-type]
        try:
            change = await deps.corpus.apply(events)
            await publish_all(matches, dead, [], letters)
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
        items: list[Feedback] = []
        letters: list[DeadLetter] = []
        for record in records:
            decoded = decode_feedback(to_raw(record))
            if isinstance(decoded, DeadLetter):
                letters.append(decoded)
            else:
                items.append(decoded)
        try:
            stored = await deps.feedback.insert_feedback(items)
            await publish_all(matches, dead, [], letters)
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
        self.store = Store(
            settings.require_database_url(),
            min_size=settings.db_pool_min,
            max_size=settings.db_pool_max,
            ef_search=settings.ef_search,
            connect_timeout_s=settings.db_connect_timeout_s,
        )
        self.models = ModelManager(self.store, encoder_loader(settings))
        transient = (psycopg.OperationalError, psycopg_pool.PoolTimeout)
        self.pipeline = MatchPipeline(self.models, self.store, PipelineConfig.from_settings(settings, transient))
        self.corpus = CorpusIndexer(self.store, self.models.encoder_for)
        self.broker = build_broker(
            settings, WorkerDeps(pipeline=self.pipeline, corpus=self.corpus, feedback=self.store)
        )
        self._watcher: asyncio.Task[None] | None = None

    async def start_services(self) -> None:
        from worker.models import bootstrap_active_version

        await self.store.open()
        await bootstrap_active_version(self.store, self.settings, self.models)
        await self.models.load_active()
        self._watcher = asyncio.create_task(self.models.watch(self.settings.model_poll_interval_s))

    async def stop_services(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
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
    configure_logging(settings.log_level)
    runtime = WorkerRuntime(settings)
    return FastStream(runtime.broker, on_startup=[runtime.start_services], after_shutdown=[runtime.stop_services])


def __getattr__(name: str) -> Any:
    # `faststream run worker.app:app` resolves `app` here, so importing this module (tests,
    # the CLI) never reads the environment.
    if name == "app":
        return create_app()
    raise AttributeError(name)
