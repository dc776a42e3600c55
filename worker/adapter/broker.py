"""The FastStream adapter: Kafka in, processor, sinks out.

Thin on purpose. Each subscribed topic hands its raw records to a processor (the match
pipeline for posts, the side-topic processors for fact-checks and verdicts), gives the
outcome to every :class:`~worker.adapter.sinks.ResultSink`, and commits only after all of
them returned. A dependency that stays down leaves the batch uncommitted (nack: the
consumer seeks back and the batch returns after the pipeline's backoff), so nothing is lost
and nothing spins. Every topic is declared through :func:`subscribe`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast

from faststream import AckPolicy
from faststream.exceptions import NackMessage
from faststream.kafka import KafkaBroker

from worker.adapter import kafka
from worker.adapter.assignor import assignment_strategy
from worker.adapter.broker_watch import BrokerWatch, ResyncAfterOutage
from worker.adapter.failures import AttemptLog, Outages, process_isolating
from worker.adapter.overlap import OverlappedHandler, SettleOnRevoke, consumer_offsets
from worker.adapter.sinks import KafkaTopicsSink, ResultSink
from worker.core.pipeline import BatchOutcome
from worker.core.retry import DependencyUnavailable
from worker.core.side_topics import SideOutcome
from worker.observability import Metrics
from worker.settings import Settings
from worker.wire import DeadLetter, EmergingClaims, MatchResult, RawRecord, TrendingFactChecks

log = logging.getLogger(__name__)


class PostProcessor(Protocol):
    async def process(
        self, records: Sequence[RawRecord], released: Callable[[], None] | None = None
    ) -> BatchOutcome: ...


class SideProcessor(Protocol):
    async def process(self, records: Sequence[RawRecord]) -> SideOutcome: ...


@dataclass
class WorkerDeps:
    """What the handlers call; real ones in production, fakes in the in-memory tests."""

    pipeline: PostProcessor
    factchecks: SideProcessor
    feedback: SideProcessor
    # Beside the Kafka topics; each gets every batch's outcome before the commit.
    sinks: list[ResultSink] = field(default_factory=list)
    # Exceptions that mean a dependency is down, never a record's fault (worker.adapter.failures).
    outages: Outages = ()
    # Filled by build_broker: the handlers whose batches in flight must settle before the consumers stop.
    overlapped: list[OverlappedHandler] = field(default_factory=list)


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
    # Bodies are validated one record at a time by the processors, so that one bad message
    # goes to the dead-letter topic instead of failing its whole batch.
    raw = message.raw_message
    return list(raw) if isinstance(raw, (list, tuple)) else [raw]


def count_dead_letters(metrics: Metrics, source: str, letters: Sequence[DeadLetter]) -> None:
    for letter in letters:
        metrics.dead_letters.labels(source=source, reason=letter.reason).inc()


def observe_posts(metrics: Metrics, outcome: BatchOutcome, publish_s: float) -> None:
    stats = outcome.stats
    metrics.batch_tokens.observe(stats.tokens)
    metrics.stage_seconds.labels(stage="encode").observe(stats.encode_seconds)
    metrics.stage_seconds.labels(stage="search").observe(stats.search_seconds)
    metrics.stage_seconds.labels(stage="publish").observe(publish_s)
    # Observed only for batches that had them (a zero would pull every quantile down).
    if stats.images_seconds:
        metrics.stage_seconds.labels(stage="images").observe(stats.images_seconds)
    if stats.cluster_seconds:
        metrics.stage_seconds.labels(stage="cluster").observe(stats.cluster_seconds)
    metrics.results_published.inc(len(outcome.results))
    metrics.embedding_cache_hits.inc(stats.cache_hits)
    metrics.answers_reused.inc(stats.reused)
    now = time.time()
    for item in outcome.items:
        result = item.result
        if result is None:
            continue
        best_tier = result.matches[0].tier if result.matches else None
        metrics.results_by_language.labels(lang=result.lang or "unknown", tier=best_tier or "none").inc()
        metrics.matches_per_post.observe(len(result.matches))
        if result.matches:
            metrics.best_score.observe(result.matches[0].score)
            if result.matches[0].probability is not None:
                metrics.best_probability.observe(result.matches[0].probability)
        if item.record.timestamp_ms:
            metrics.end_to_end_seconds.observe(max(0.0, now - item.record.timestamp_ms / 1000))


@dataclass(frozen=True)
class Subscription:
    """One consumed topic: where it is read, how its batches are cut, and what a done batch records."""

    title: Literal["posts", "factchecks", "feedback"]
    topic: str
    group_id: str
    max_records: int
    max_wait_ms: int
    auto_offset_reset: Literal["earliest", "latest"]
    observe: Callable[[Any, Sequence[RawRecord], float], None]


@dataclass(frozen=True)
class Prepared:
    """One group of a batch, processed and not yet published."""

    group: list[RawRecord]
    # The group's records that were tried (the rest had used up their attempts).
    fresh: list[RawRecord]
    outcome: Any


@dataclass(eq=False)
class BatchHandler:
    """A subscription's handler: each batch processed, published, observed, then committed (by
    FastStream, when it returns; a raise leaves the batch uncommitted). Its steps (:meth:`prepare`,
    :meth:`deliver`, :meth:`failed`) are also what :mod:`worker.adapter.overlap` runs for posts."""

    settings: Settings
    metrics: Metrics
    sub: Subscription
    processor: PostProcessor | SideProcessor
    sinks: Sequence[ResultSink]
    outages: Outages

    def __post_init__(self) -> None:
        self.attempts = AttemptLog(self.settings.max_record_attempts)
        self.empty = BatchOutcome if self.sub.title == "posts" else SideOutcome

    def context(self, raws: Sequence[RawRecord]) -> dict[str, Any]:
        return {"batch_id": uuid.uuid4().hex[:12], "topic": self.sub.title, "records": len(raws)}

    async def __call__(self, records: list[Any]) -> None:
        raws = [to_raw(r) for r in records]
        context = self.context(raws)
        current = raws
        try:
            for prepared in await self.prepare(raws):
                current = prepared.fresh
                await self.deliver(prepared, context)
        except Exception as exc:
            await self.failed(exc, current, context)
            if isinstance(exc, DependencyUnavailable):
                raise NackMessage() from exc
            raise

    async def prepare(self, raws: list[RawRecord], released: Callable[[], None] | None = None) -> list[Prepared]:
        """Process the batch (whole, or one record at a time after a publish failure: the one
        that keeps failing is isolated); ``released`` is passed on to a posts processor."""
        process: Any = self.processor.process
        if released is not None:
            process = functools.partial(cast(PostProcessor, self.processor).process, released=released)
        prepared = []
        for group in [[r] for r in raws] if self.attempts.suspect(raws) else [raws]:
            fresh, exhausted = self.attempts.split(group)
            outcome: Any = await process_isolating(fresh, process, self.empty, self.outages)
            prepared.append(Prepared(group, fresh, outcome.with_dead_letters(exhausted)))
        return prepared

    async def deliver(self, prepared: Prepared, context: dict[str, Any]) -> None:
        """Publish to every sink and observe; raises what a sink raised."""
        outcome = prepared.outcome
        started = time.perf_counter()
        for sink in self.sinks:
            await sink.publish(outcome.results, outcome.dead_letters)
        self.sub.observe(outcome, prepared.group, time.perf_counter() - started)
        count_dead_letters(self.metrics, self.sub.title, outcome.dead_letters)
        self.attempts.forget(prepared.group)
        for letter in outcome.dead_letters:
            log.warning(
                "dead-lettered",
                extra={**context, "reason": letter.reason, "partition": letter.partition, "offset": letter.offset},
            )

    async def failed(self, exc: Exception, fresh: Sequence[RawRecord], context: dict[str, Any]) -> None:
        """Count and log a batch's failure, then back off before it comes back (never a busy loop)."""
        if isinstance(exc, DependencyUnavailable):
            self.metrics.errors.labels(stage="dependency").inc()
            log.error("batch left uncommitted: %s", exc, extra=context)
            await asyncio.sleep(self.settings.retry_backoff_initial_s)
            return
        # Publishing failed: never commit what was not published, and count the try against each record.
        self.attempts.failed(fresh, exc)
        self.metrics.errors.labels(stage="unexpected").inc()
        log.error("batch failed; it will be redelivered", exc_info=exc, extra=context)
        await asyncio.sleep(self.settings.retry_backoff_max_s)


def subscribe(
    broker: KafkaBroker,
    settings: Settings,
    metrics: Metrics,
    sub: Subscription,
    processor: PostProcessor | SideProcessor,
    sinks: Sequence[ResultSink],
    watch: BrokerWatch | None = None,
    outages: Outages = (),
) -> OverlappedHandler | None:
    """Declare ``sub`` on ``broker``: batches to ``processor``, outcomes to ``sinks``, then commit.

    Returns the posts' :class:`~worker.adapter.overlap.OverlappedHandler` where ``overlap_batches``
    is on (what must settle before the consumers stop), else None."""
    handler: Any = BatchHandler(settings, metrics, sub, processor, sinks, outages)

    async def handle(records: list[Any]) -> None:  # FastStream reads a plain function's signature
        await handler(records)

    def consumer() -> Any:
        return subscriber.consumer

    listener: Any = None
    if watch is not None:
        listener = ResyncAfterOutage(watch, consumer, sub.auto_offset_reset)
    overlapped: OverlappedHandler | None = None
    if sub.title == "posts" and settings.overlap_batches:
        offsets = lambda: consumer_offsets(consumer())  # noqa: E731
        handler = overlapped = OverlappedHandler(handler, offsets, to_raw, settings.shutdown_grace_s)
        listener = SettleOnRevoke(overlapped, listener)
    subscriber = broker.subscriber(
        sub.topic,
        batch=True,
        group_id=sub.group_id,
        auto_offset_reset=sub.auto_offset_reset,
        max_records=sub.max_records,
        batch_timeout_ms=sub.max_wait_ms,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=max(500, settings.session_timeout_ms // 3),
        max_poll_interval_ms=settings.max_poll_interval_ms,
        # An overlapped handler commits its own batches (worker.adapter.overlap).
        ack_policy=AckPolicy.MANUAL if overlapped is not None else AckPolicy.NACK_ON_ERROR,
        decoder=_raw_records,
        title=sub.title,
        listener=listener,
        # Partitions a topic gains are assigned on every coordinator (see worker.adapter.assignor).
        partition_assignment_strategy=assignment_strategy(consumer),
    )
    subscriber(handle)
    return overlapped


def subscriptions(
    settings: Settings, metrics: Metrics, deps: WorkerDeps
) -> list[tuple[Subscription, PostProcessor | SideProcessor]]:
    """The worker's three topics, each with the processor it feeds."""

    def posts_done(outcome: BatchOutcome, raws: Sequence[RawRecord], publish_s: float) -> None:
        metrics.posts_consumed.inc(len(raws))
        metrics.batch_records.observe(len(raws))
        observe_posts(metrics, outcome, publish_s)
        log.debug(
            "batch done",
            extra={
                "records": len(raws),
                "post_ids": [r.post_id for r in outcome.results][:100],
                "results": len(outcome.results),
                "dead_letters": len(outcome.dead_letters),
                "model_version": outcome.model_version,
            },
        )

    def factchecks_done(outcome: SideOutcome, raws: Sequence[RawRecord], publish_s: float) -> None:
        metrics.corpus_changes.labels(op="upsert").inc(outcome.counts.get("upserted", 0))
        metrics.corpus_changes.labels(op="delete").inc(outcome.counts.get("deleted", 0))
        log.info("corpus updated", extra={**outcome.counts, "dead_letters": len(outcome.dead_letters)})

    def feedback_done(outcome: SideOutcome, raws: Sequence[RawRecord], publish_s: float) -> None:
        metrics.feedback_stored.inc(outcome.counts.get("stored", 0))
        log.info("feedback stored", extra={**outcome.counts, "dead_letters": len(outcome.dead_letters)})

    s = settings
    return [
        (
            Subscription(
                "posts", s.topic_posts, s.group_id, s.batch_max_records, s.batch_max_wait_ms, s.auto_offset_reset,
                posts_done,
            ),
            deps.pipeline,
        ),
        (
            Subscription(
                "factchecks", s.topic_factchecks, s.indexer_group_id, s.factchecks_batch_max_records,
                s.factchecks_batch_max_wait_ms, "earliest", factchecks_done,
            ),
            deps.factchecks,
        ),
        (
            Subscription(
                "feedback", s.topic_feedback, s.feedback_group_id, s.feedback_batch_max_records,
                s.feedback_batch_max_wait_ms, "earliest", feedback_done,
            ),
            deps.feedback,
        ),
    ]  # fmt: skip


def build_broker(
    settings: Settings,
    deps: WorkerDeps,
    broker: KafkaBroker | None = None,
    metrics: Metrics | None = None,
    watch: BrokerWatch | None = None,
) -> KafkaBroker:
    """Declare the publishers and the three subscribers on ``broker``."""
    broker = broker or kafka.broker(settings)
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
    if settings.claims_report_interval_s > 0:
        # Published by the runtime's claim reporter (worker/adapter/claim_reports.py); declared here for the contract.
        broker.publisher(
            settings.topic_trending,
            title="trending-fact-checks",
            description="The trending fact-checks, every claims_report_interval_s, from one worker of the group.",
            schema=TrendingFactChecks,
        )
        broker.publisher(
            settings.topic_emerging,
            title="emerging-claims",
            description="Claims with no fact-check yet, growing, every claims_report_interval_s.",
            schema=EmergingClaims,
        )
    sinks: list[ResultSink] = [KafkaTopicsSink(matches, dead, settings.dead_letter_max_value_bytes), *deps.sinks]
    for sub, processor in subscriptions(settings, metrics, deps):
        overlapped = subscribe(broker, settings, metrics, sub, processor, sinks, watch, deps.outages)
        if overlapped is not None:
            deps.overlapped.append(overlapped)
    return broker
