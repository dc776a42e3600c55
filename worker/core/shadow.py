"""Shadow evaluation: a candidate version answers a share of live posts beside the active one.

Held-out metrics say how a candidate ranks a labelled set; shadow evaluation says how it
would change what moderators see on today's stream, before it does. As a batch's results
leave the pipeline, a sample of its posts (chosen by post id, so every replica and every
redelivery picks the same ones) is encoded and searched under the shadow version in the
background; its rank 1 is recorded beside the active version's, never published (a
redelivered batch may record a post twice). A bounded queue drops
samples when the worker is busy: the shadow can slow nothing down beyond its own share.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from worker.core.items import PostItem
from worker.core.pipeline import Searcher, ServingModel
from worker.domain import ShadowRow
from worker.retrieval.claims import claim_text
from worker.retrieval.retriever import Query
from worker.wire import MatchResult, Post

log = logging.getLogger(__name__)

__all__ = ["ShadowRow", "ShadowRunner", "sampled"]


class ShadowSource(Protocol):
    def shadow(self) -> ServingModel | None: ...


class ShadowLog(Protocol):
    async def record_shadow(self, rows: Sequence[ShadowRow]) -> None: ...


def sampled(post_id: str, share: float) -> bool:
    """The same answer for a post id on every replica and every redelivery."""
    digest = hashlib.sha1(post_id.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < share


class ShadowRunner:
    def __init__(
        self,
        models: ShadowSource,
        searcher: Searcher,
        store: ShadowLog,
        *,
        share: float,
        queue_size: int = 8,
        on_row: Callable[[ShadowRow], None] | None = None,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        self.models = models
        self.searcher = searcher
        self.store = store
        self.share = share
        self._queue: asyncio.Queue[tuple[ServingModel, list[tuple[Post, MatchResult]]]] = asyncio.Queue(queue_size)
        self._on_row = on_row
        self._on_drop = on_drop

    def observe(self, _model: ServingModel, items: Sequence[PostItem]) -> None:
        """The pipeline's observer: each answered batch; queues the sampled posts, never waits."""
        self.offer([(item.post, item.result) for item in items if item.result is not None])

    def offer(self, answered: Sequence[tuple[Post, MatchResult]]) -> None:
        """Queues the sampled posts of a batch's results, never waits."""
        shadow = self.models.shadow()
        if shadow is None or self.share <= 0:
            return
        picked = [
            (p, r) for p, r in answered if p.text and r.model_version != shadow.version and sampled(p.id, self.share)
        ]
        if not picked:
            return
        try:
            self._queue.put_nowait((shadow, picked))
        except asyncio.QueueFull:
            if self._on_drop is not None:
                self._on_drop(len(picked))

    async def answer(self, shadow: ServingModel, picked: Sequence[tuple[Post, MatchResult]]) -> list[ShadowRow]:
        texts = [claim_text(p.text) for p, _ in picked]
        vectors = await asyncio.to_thread(shadow.encoder.encode_queries, texts)
        # Each post in the language the active path saw it in (detected when missing).
        queries = [Query(t, r.lang, v) for t, (_, r), v in zip(texts, picked, vectors, strict=True)]
        found = await self.searcher.search(shadow.version, shadow.dimension, queries, shadow.decisions)
        rows = []
        for (post, result), searched in zip(picked, found, strict=True):
            ours = result.matches[0] if result.matches else None
            theirs = searched.matches[0] if searched.matches else None
            rows.append(
                ShadowRow(
                    model_version=shadow.version,
                    active_version=result.model_version,
                    post_id=post.id,
                    lang=result.lang,
                    active_fact_check_id=ours.fact_check_id if ours else None,
                    shadow_fact_check_id=theirs.fact_check_id if theirs else None,
                    active_score=ours.score if ours else None,
                    shadow_score=theirs.score if theirs else None,
                )
            )
        await self.store.record_shadow(rows)
        if self._on_row is not None:
            for row in rows:
                self._on_row(row)
        return rows

    async def run(self) -> None:
        while True:
            shadow, picked = await self._queue.get()
            try:
                await self.answer(shadow, picked)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a lost shadow sample, never a worker fault
                log.warning("shadow answer failed for %d post(s): %r", len(picked), exc)
