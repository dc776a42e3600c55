"""Decode, encode, search, decide: the matching pipeline, with no knowledge of Kafka.

The FastStream handler hands it raw records and publishes what it returns. It depends on
narrow protocols (a model source and a searcher, :class:`worker.retrieval.Retriever` in
production), so unit tests drive it with fakes. Each post travels as one
:class:`~worker.core.items.PostItem` (its record, post, language, vector, search and result),
never as parallel lists. A claim said again is answered once (:mod:`worker.core.reuse`) and every
post joins its claim cluster (:mod:`worker.core.clusters`).
Posts are searched one encoder call at a time while the next call encodes (torch and
Postgres then use the cores together instead of taking turns); results are still published
and committed per batch, after all of them, so commit-after-publish is unchanged.

What the pipeline does with failures, and what it leaves to its caller: a message's own fault
(bad bytes, bad schema) is a dead letter from decoding; a dependency's fault (Postgres
unreachable) is retried with backoff and then raised as :class:`DependencyUnavailable`, so the
caller leaves the offsets uncommitted and the batch comes back. Anything else raises: isolating
the record that caused it is the adapter's (:mod:`worker.adapter.failures`), for every topic alike.
Observers (the over-match watch, the index-recall probe, shadow evaluation) see every answered
batch after it was matched; an observer's failure never costs the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Protocol

from worker.core.batching import EmbeddingCache, EncodePlan, EncodeStage
from worker.core.clusters import Clustering
from worker.core.decoding import Limits, decode_post
from worker.core.images import ImageMatching, with_image_matches, with_text_in_images
from worker.core.items import PostItem, cluster_posts, mark_repeats
from worker.core.retry import RetryPolicy
from worker.core.reuse import Reuse
from worker.domain import Encoder, PostCandidates, Vectors
from worker.domain.images import ImageRead
from worker.retrieval.claims import claim_text
from worker.retrieval.decision import Decisions
from worker.retrieval.retriever import Query, Searched
from worker.wire import DeadLetter, Match, MatchResult, RawRecord

log = logging.getLogger(__name__)


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
        self, version: str, dimension: int, queries: Sequence[Query], decisions: Decisions | None = None
    ) -> list[Searched]: ...

    async def state(self) -> str:
        """A digest of what its answers depend on besides the corpus (settings, quarantine list)."""
        ...


# A batch's images being read: one list of reads per post that has images.
Reading = asyncio.Future[list[list[ImageRead]]] | None

Observer = Callable[[ServingModel, Sequence[PostItem]], Awaitable[None] | None]
"""Told of every answered batch; must not block (queue and return)."""


@dataclass(frozen=True)
class PipelineConfig:
    """The pipeline's share of ``Settings`` (built by :mod:`worker.configs`; defaults live there)."""

    token_budget: int
    limits: Limits
    retry: RetryPolicy
    encode_batch_size: int = 32
    embedding_cache_size: int = 0
    # Characters of the post's text each result carries (0: none).
    result_text_max_chars: int = 0


@dataclass(frozen=True)
class BatchStats:
    encoder_calls: int = 0
    tokens: int = 0
    encode_seconds: float = 0.0
    search_seconds: float = 0.0
    cache_hits: int = 0
    # Posts answered with an earlier post's matches (its claim said again).
    reused: int = 0
    # What the batch spent after its text was matched: waiting for its images and matching them,
    # and putting its posts in their claim clusters (neither overlaps the encoder).
    images_seconds: float = 0.0
    cluster_seconds: float = 0.0


@dataclass(frozen=True)
class BatchOutcome:
    """What one batch produced: one result per valid post, one dead letter per bad record.

    Returned, never edited: :meth:`with_dead_letters` makes a new outcome."""

    results: tuple[MatchResult, ...] = ()
    dead_letters: tuple[DeadLetter, ...] = ()
    model_version: str | None = None
    stats: BatchStats = field(default_factory=BatchStats)
    # Each result's post, in the order of ``results`` (what the adapter's latency metric reads).
    items: tuple[PostItem, ...] = ()

    def with_dead_letters(self, letters: Sequence[DeadLetter]) -> BatchOutcome:
        return replace(self, dead_letters=(*self.dead_letters, *letters))

    def plus(self, other: BatchOutcome) -> BatchOutcome:
        """Two outcomes as one (the adapter's record-by-record retry joins its singles this way)."""
        a, b = self.stats, other.stats
        stats = BatchStats(**{f.name: getattr(a, f.name) + getattr(b, f.name) for f in fields(BatchStats)})
        return BatchOutcome(
            (*self.results, *other.results),
            (*self.dead_letters, *other.dead_letters),
            self.model_version or other.model_version,
            stats,
            (*self.items, *other.items),
        )


class MatchPipeline:
    def __init__(
        self,
        models: ModelSource,
        searcher: Searcher,
        config: PipelineConfig,
        detect_language: Callable[[str], str | None] | None = None,
        observers: Sequence[Observer] = (),
        reuse: Reuse | None = None,
        clustering: Clustering | None = None,
        images: ImageMatching | None = None,
    ) -> None:
        self.models = models
        self.reuse = reuse
        self.clustering = clustering
        self.images = images
        self.searcher = searcher
        self.config = config
        self.detect_language = detect_language
        self.observers = list(observers)
        self.stage = EncodeStage(
            config.token_budget, config.encode_batch_size, EmbeddingCache(config.embedding_cache_size)
        )

    async def process(self, records: Sequence[RawRecord], released: Callable[[], None] | None = None) -> BatchOutcome:
        """The batch's outcome; ``released()`` is called once its text no longer needs the encoder
        (so the caller may start the next batch's encoding while this one finishes)."""
        items, letters = self._decode(records)
        if not items:
            return BatchOutcome(dead_letters=tuple(letters))
        # One snapshot per batch: a model switch lands between batches, never inside one.
        model = self.models.current()
        reading = self._read_images(items)
        try:
            await self._languages(items)
            todo = await self._repeats(model, items)
            stats = await self._match(model, todo, released or (lambda: None))
            images_started = time.perf_counter()
            await self._match_images(model, items, reading)
            images_seconds = time.perf_counter() - images_started if reading is not None else 0.0
        finally:
            if reading is not None and not reading.done():
                reading.cancel()
        cluster_started = time.perf_counter()
        await self._cluster(model, items)
        cluster_seconds = time.perf_counter() - cluster_started if self.clustering is not None else 0.0
        for item in items:
            item.result = item.to_result(model.version, self.config.result_text_max_chars)
        await self._remember(model, todo)
        reused = sum(1 for item in items if item.reused or item.copy_of)
        stats = replace(stats, reused=reused, images_seconds=images_seconds, cluster_seconds=cluster_seconds)
        await self._observe(model, items)
        return BatchOutcome(
            results=tuple(i.result for i in items if i.result is not None),
            dead_letters=tuple(letters),
            model_version=model.version,
            stats=stats,
            items=tuple(items),
        )

    def _decode(self, records: Sequence[RawRecord]) -> tuple[list[PostItem], list[DeadLetter]]:
        items: list[PostItem] = []
        letters: list[DeadLetter] = []
        for record in records:
            decoded = decode_post(record, self.config.limits)
            if isinstance(decoded, DeadLetter):
                letters.append(decoded)
            else:
                # A post of images alone is searched by their alt text, if any, and the text in them.
                text = decoded.text or " ".join(image.alt or "" for image in decoded.images)
                items.append(PostItem(record, decoded, lang=decoded.lang, claim=claim_text(text)))
        return items, letters

    async def _languages(self, items: Sequence[PostItem]) -> None:
        """Fill in the language of posts that carry none (off the event loop)."""
        detect = self.detect_language
        unknown = [item for item in items if not item.lang and item.claim]
        if detect is None or not unknown:
            return
        found = await asyncio.to_thread(lambda: [detect(item.claim) for item in unknown])
        for item, lang in zip(unknown, found, strict=True):
            item.lang, item.lang_detected = lang, lang is not None

    async def _match(self, model: ServingModel, items: Sequence[PostItem], released: Callable[[], None]) -> BatchStats:
        """Encode in planned calls and search each call's posts while the next call encodes (a post
        with no text at all, only images, has nothing to encode: its images answer it)."""
        for item in items:
            if not item.claim:
                item.searched = Searched(PostCandidates([]), [])
        items = [item for item in items if item.claim]
        if not items:
            released()
            return BatchStats()
        texts = [item.claim for item in items]
        started = time.perf_counter()
        plan = await asyncio.to_thread(self.stage.plan, model.encoder, model.version, texts)
        planned = time.perf_counter()
        search_seconds = 0.0
        offset = 1 if plan.ready else 0
        pending: asyncio.Future[None] | None = None
        # ``pending`` is awaited before anything leaves, so no encoder thread outlives the batch.
        try:
            pending = self._start(model, plan, 0, texts)
            for n, chunk in enumerate(plan.chunks):
                if n >= offset:
                    assert pending is not None
                    await pending
                    pending = self._start(model, plan, n - offset + 1, texts)
                if pending is None:
                    released()
                search_started = time.perf_counter()
                await self._search(model, [items[i] for i in chunk], plan, chunk)
                search_seconds += time.perf_counter() - search_started
        finally:
            if pending is not None:
                with contextlib.suppress(Exception):
                    await pending
        return BatchStats(
            encoder_calls=len(plan.calls),
            tokens=plan.tokens,
            encode_seconds=plan.encode_seconds + (planned - started),
            search_seconds=search_seconds,
            cache_hits=len(texts) - sum(len(call) for call in plan.calls),
        )

    def _start(
        self, model: ServingModel, plan: EncodePlan, call: int, texts: Sequence[str]
    ) -> asyncio.Future[None] | None:
        if call >= len(plan.calls):
            return None
        return asyncio.ensure_future(
            asyncio.to_thread(self.stage.encode, model.encoder, model.version, plan, plan.calls[call], texts)
        )

    async def _search(
        self, model: ServingModel, chunk_items: Sequence[PostItem], plan: EncodePlan, chunk: Sequence[int]
    ) -> None:
        for item, i in zip(chunk_items, chunk, strict=True):
            item.vector = plan.vectors[i]
        todo = await self._near_repeats(chunk_items)
        if not todo:
            return
        queries = [item.query() for item in todo]
        found = await self.config.retry.run(
            "search", lambda: self.searcher.search(model.version, model.dimension, queries, model.decisions)
        )
        for item, searched in zip(todo, found, strict=True):
            item.searched = searched

    def _read_images(self, items: Sequence[PostItem]) -> Reading:
        """Start reading the batch's images; they are read while the text is encoded and searched."""
        with_images = [item for item in items if item.post.images]
        if self.images is None or not with_images:
            return None
        return asyncio.ensure_future(self.images.read([item.post.images for item in with_images]))

    async def _match_images(self, model: ServingModel, items: Sequence[PostItem], reading: Reading) -> None:
        """Each post's images as read; the text in them searched; the same pictures among its matches."""
        if reading is None or self.images is None:
            return
        images = self.images
        with_images = [item for item in items if item.post.images]
        for item, reads in zip(with_images, await reading, strict=True):
            item.images = reads
        texts = [(item, read) for item in with_images for read in item.images if read.text]
        found = await self._search_texts(model, [read.text or "" for _, read in texts])
        hits = await self.config.retry.run("images", lambda: images.hits([item.images for item in with_images]))
        quarantined = await self.config.retry.run("images", images.quarantined)
        for item, pictured in zip(with_images, hits, strict=True):
            if item.searched is None:
                continue
            in_text = [(read.index, m) for (owner, read), m in zip(texts, found, strict=True) if owner is item]
            matches = with_text_in_images(item.searched.matches, in_text)
            item.searched = replace(item.searched, matches=with_image_matches(matches, pictured, quarantined))

    async def _search_texts(self, model: ServingModel, texts: Sequence[str]) -> list[list[Match]]:
        """Texts found in images, each searched as a post of its own (its language detected on its own)."""
        if not texts:
            return []
        claims = [claim_text(t) for t in texts]
        detect = self.detect_language
        langs = await asyncio.to_thread(lambda: [detect(c) if detect else None for c in claims])
        vectors = await asyncio.to_thread(model.encoder.encode_queries, claims)
        queries = [Query(c, lang, v, read=True) for c, lang, v in zip(claims, langs, vectors, strict=True)]
        found = await self.config.retry.run(
            "search", lambda: self.searcher.search(model.version, model.dimension, queries, model.decisions)
        )
        return [searched.matches for searched in found]

    async def _repeats(self, model: ServingModel, items: Sequence[PostItem]) -> list[PostItem]:
        """Mark the posts whose claim was answered before (stored, or earlier in the batch); the rest."""
        if self.reuse is None:
            return list(items)
        reuse = self.reuse
        state = f"{model.decisions.fingerprint}:{await self.config.retry.run('state', self.searcher.state)}"
        posts = [(item.claim, item.lang) for item in items]
        keys = await self.config.retry.run("reuse", lambda: reuse.keys(model.version, state, posts))
        found = await self.config.retry.run("reuse", lambda: reuse.find([key for key, _ in keys]))
        return mark_repeats(items, keys, found)

    async def _near_repeats(self, items: Sequence[PostItem]) -> list[PostItem]:
        """Mark the encoded posts a stored answer's post nearly repeats (by vector, in their context); the rest."""
        if self.reuse is None or self.reuse.near_similarity is None:
            return list(items)
        reuse = self.reuse
        probes: list[PostItem] = []
        pairs: list[tuple[str, Vectors]] = []
        for item in items:
            if item.context is not None and item.vector is not None:
                probes.append(item)
                pairs.append((item.context, item.vector))
        found = await self.config.retry.run("reuse", lambda: reuse.find_near(pairs))
        for item, reused in zip(probes, found, strict=True):
            item.reused = reused
        return [item for item in items if item.reused is None]

    async def _remember(self, model: ServingModel, answered: Sequence[PostItem]) -> None:
        """Store the answers of the posts this batch answered first (a near-duplicate under its
        own key too, in its origin's name, so its exact repeats need no encoding)."""
        if self.reuse is None or not answered:
            return
        reuse = self.reuse
        rows = [stored for item in answered if (stored := item.stored_answer()) is not None]
        await self.config.retry.run("reuse", lambda: reuse.remember(model.version, rows))

    async def _cluster(self, model: ServingModel, items: Sequence[PostItem]) -> None:
        """Put every post in its claim cluster: an encoded post by its vector, a repeat by its origin's."""
        if self.clustering is None:
            return
        clustering = self.clustering
        posts = cluster_posts(items)
        found = await self.config.retry.run(
            "clusters", lambda: clustering.assign(model.version, model.dimension, posts, model.decisions.cluster_cut)
        )
        for item, cluster in zip(items, found, strict=True):
            item.cluster = cluster

    async def _observe(self, model: ServingModel, items: Sequence[PostItem]) -> None:
        for observe in self.observers:
            try:
                outcome = observe(model, items)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception as exc:  # an observer never costs a batch
                log.warning("batch observer failed: %r", exc)
