"""Encode, search, decide: the matching pipeline, with no knowledge of Kafka.

The FastStream handler hands it raw records and publishes what it returns. It depends on
two narrow protocols (a model source and a searcher, :class:`worker.retrieval.Retriever` in
production), so unit tests drive it with fakes.
Posts are searched one encoder call at a time while the next call encodes (torch and
Postgres then use the cores together instead of taking turns); results are still published
and committed per batch, after all of them, so commit-after-publish is unchanged.
Failures split in two: a message's own fault becomes a dead letter; a dependency's fault
(Postgres unreachable) is retried with backoff and then raised, so the caller leaves the
offsets uncommitted and the batch comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from worker.core.batching import EmbeddingCache, EncodeStage
from worker.core.decoding import Limits, decode_post
from worker.core.encoder import Encoder, Vectors, serving_device
from worker.retrieval.decision import Decisions
from worker.settings import Settings
from worker.wire import DeadLetter, Match, MatchResult, Post, RawRecord

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class ServingModel:
    """A model version a batch is encoded with and searched under: never one without the other."""

    version: str
    dimension: int
    encoder: Encoder
    # Its decision model and tier cuts; empty when the version was never calibrated.
    decisions: Decisions = field(default_factory=Decisions)


class ModelSource(Protocol):
    def current(self) -> ServingModel: ...


class Searcher(Protocol):
    async def search(
        self,
        version: str,
        dimension: int,
        queries: Vectors,
        texts: Sequence[str],
        langs: Sequence[str | None],
        decisions: Decisions | None = None,
    ) -> list[list[Match]]: ...


class DependencyUnavailable(RuntimeError):
    """A dependency stayed down through every retry; the batch must not be committed."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int
    initial_s: float
    max_s: float
    transient: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError, OSError)
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, compare=False)
    on_retry: Callable[[str], None] | None = field(default=None, compare=False)

    def delay(self, attempt: int) -> float:
        # Full jitter keeps a fleet of workers from hammering a recovering database in step.
        ceiling = min(self.max_s, self.initial_s * (2 ** (attempt - 1)))
        return float(ceiling / 2 + random.uniform(0, ceiling / 2))

    async def run(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        for attempt in range(1, self.attempts + 1):
            try:
                return await call()
            except self.transient as exc:
                if attempt == self.attempts:
                    raise DependencyUnavailable(f"{what} failed {attempt} times: {exc!r}") from exc
                delay = self.delay(attempt)
                if self.on_retry is not None:
                    self.on_retry(what)
                log.warning(
                    "%s failed (attempt %d/%d), retrying in %.2fs: %r", what, attempt, self.attempts, delay, exc
                )
                await self.sleep(delay)
        raise AssertionError("unreachable")


@dataclass(frozen=True)
class PipelineConfig:
    """The pipeline's share of ``Settings`` (whose defaults are the only ones)."""

    token_budget: int
    limits: Limits
    retry: RetryPolicy
    encode_batch_size: int = 32
    embedding_cache_size: int = 0

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        transient: tuple[type[BaseException], ...] = (),
        on_retry: Callable[[str], None] | None = None,
    ) -> PipelineConfig:
        return cls(
            token_budget=settings.token_budget(serving_device(settings)),
            encode_batch_size=settings.encode_batch_size,
            embedding_cache_size=settings.embedding_cache_size,
            limits=Limits.from_settings(settings),
            retry=RetryPolicy(
                attempts=settings.retry_attempts,
                initial_s=settings.retry_backoff_initial_s,
                max_s=settings.retry_backoff_max_s,
                transient=RetryPolicy.transient + transient,
                on_retry=on_retry,
            ),
        )


@dataclass
class BatchOutcome:
    """What one batch produced: one result per valid post, one dead letter per bad record."""

    results: list[MatchResult] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    model_version: str | None = None
    encoder_calls: int = 0
    tokens: int = 0
    encode_seconds: float = 0.0
    search_seconds: float = 0.0
    cache_hits: int = 0


class MatchPipeline:
    def __init__(
        self,
        models: ModelSource,
        searcher: Searcher,
        config: PipelineConfig,
        detect_language: Callable[[str], str | None] | None = None,
        observers: Sequence[Callable[[Sequence[tuple[Post, MatchResult]]], None]] = (),
    ) -> None:
        self.models = models
        self.searcher = searcher
        self.config = config
        self.detect_language = detect_language
        # Told of every batch's answered posts (shadow evaluation); must not block.
        self.observers = list(observers)
        self.stage = EncodeStage(
            config.token_budget, config.encode_batch_size, EmbeddingCache(config.embedding_cache_size)
        )

    async def process(self, records: Sequence[RawRecord]) -> BatchOutcome:
        outcome, posts = await self._process(records)
        if self.observers and outcome.results:
            by_id = {post.id: post for post in posts}
            answered = [(by_id[r.post_id], r) for r in outcome.results if r.post_id in by_id]
            for observe in self.observers:
                try:
                    observe(answered)
                except Exception as exc:  # an observer never costs a batch
                    log.warning("batch observer failed: %r", exc)
        return outcome

    async def _process(self, records: Sequence[RawRecord]) -> tuple[BatchOutcome, list[Post]]:
        outcome = BatchOutcome()
        valid: list[tuple[RawRecord, Post]] = []
        for record in records:
            decoded = decode_post(record, self.config.limits)
            if isinstance(decoded, DeadLetter):
                outcome.dead_letters.append(decoded)
            else:
                valid.append((record, decoded))
        posts = [post for _, post in valid]
        if not valid:
            return outcome, posts
        # One snapshot per batch: a model switch lands between batches, never inside one.
        model = self.models.current()
        outcome.model_version = model.version
        try:
            outcome.results, outcome.encoder_calls = await self._match(model, valid, outcome)
        except DependencyUnavailable:
            raise
        except Exception as exc:
            if len(valid) == 1:
                record, post = valid[0]
                log.exception("post %s could not be processed", post.id)
                outcome.dead_letters.append(record.dead_letter("processing_error", f"{type(exc).__name__}: {exc}"))
                return outcome, posts
            log.warning("batch of %d failed (%r); retrying its posts one by one", len(valid), exc)
            for item in valid:
                try:
                    results, calls = await self._match(model, [item], outcome)
                    outcome.results.extend(results)
                    outcome.encoder_calls += calls
                except DependencyUnavailable:
                    raise
                except Exception as single_exc:
                    log.exception("post %s could not be processed", item[1].id)
                    outcome.dead_letters.append(
                        item[0].dead_letter("processing_error", f"{type(single_exc).__name__}: {single_exc}")
                    )
        return outcome, posts

    async def _match(
        self, model: ServingModel, valid: Sequence[tuple[RawRecord, Post]], outcome: BatchOutcome
    ) -> tuple[list[MatchResult], int]:
        texts = [post.text for _, post in valid]
        langs: list[str | None] = [post.lang for _, post in valid]
        detected = [False] * len(valid)
        if self.detect_language is not None and not all(langs):
            found_langs = await asyncio.to_thread(self._detect, texts, langs)
            detected = [not lang and found is not None for lang, found in zip(langs, found_langs, strict=True)]
            langs = found_langs
        encoder = model.encoder
        started = time.perf_counter()
        plan = await asyncio.to_thread(self.stage.plan, encoder, model.version, texts)
        outcome.tokens += plan.tokens
        outcome.cache_hits += len(texts) - sum(len(call) for call in plan.calls)
        planned = time.perf_counter()
        matches: list[list[Match]] = [[] for _ in texts]
        chunks = plan.chunks
        # Call i + 1 encodes while chunk i is searched; ``pending`` is awaited before anything
        # leaves, so no thread outlives the batch.
        offset = 1 if plan.ready else 0
        pending: asyncio.Future[None] | None = None

        def start(call: int) -> asyncio.Future[None] | None:
            if call >= len(plan.calls):
                return None
            return asyncio.ensure_future(
                asyncio.to_thread(self.stage.encode, encoder, model.version, plan, plan.calls[call], texts)
            )

        try:
            pending = start(0)
            for n, chunk in enumerate(chunks):
                if n >= offset:
                    assert pending is not None
                    await pending
                    pending = start(n - offset + 1)
                search_started = time.perf_counter()
                found = await self.config.retry.run(
                    "search",
                    lambda chunk=chunk: self.searcher.search(  # type: ignore[misc]
                        model.version,
                        model.dimension,
                        plan.vectors[chunk],
                        [texts[i] for i in chunk],
                        [langs[i] for i in chunk],
                        model.decisions,
                    ),
                )
                outcome.search_seconds += time.perf_counter() - search_started
                for i, result in zip(chunk, found, strict=True):
                    matches[i] = result
        finally:
            if pending is not None:
                with contextlib.suppress(Exception):
                    await pending
        outcome.encode_seconds += plan.encode_seconds + (planned - started)
        results = [
            MatchResult(
                post_id=post.id,
                lang=lang,
                lang_detected=was_detected,
                platform=post.platform,
                matches=found,
                model_version=model.version,
                source=record.source(),
            )
            for (record, post), found, lang, was_detected in zip(valid, matches, langs, detected, strict=True)
        ]
        return results, len(plan.calls)

    def _detect(self, texts: Sequence[str], langs: Sequence[str | None]) -> list[str | None]:
        assert self.detect_language is not None
        return [lang or self.detect_language(text) for text, lang in zip(texts, langs, strict=True)]
