"""Re-matching: when a fact-check arrives for a claim nobody had one for, its posts get an answer.

The worker abstains on a post no fact-check matches (no tier reached), and its claim cluster is
an emerging claim. When the fact-checks change (a version's vectors' corpus generation moves), a
pass searches the recent unmatched clusters again, each by its centroid and first post's claim,
with the serving version's decision model. For every cluster whose search now reaches a tier,
its abstained posts are encoded and searched one by one (each post is decided on its own text,
never given its cluster's answer) and each post that now reaches a tier gets a new result: an
update of its earlier one, ``rematched``. The caller publishes the updates and then records the
pass (:meth:`Rematcher.record`), so a worker stopped in between publishes them again next time
(an update is keyed by its post: consumers keep the latest). A pass is bounded: at most
``max_clusters`` clusters (most recently joined first) and ``max_posts`` posts (newest first);
older posts of a cluster beyond that keep their earlier result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from worker.core.pipeline import ModelSource, Searcher, ServingModel
from worker.domain import ClusteredPost
from worker.retrieval.retriever import Query
from worker.storage.interfaces import RematchStore
from worker.wire import Match, MatchResult


@dataclass(frozen=True)
class RematchConfig:
    """The re-match's share of ``Settings`` (built by :mod:`worker.configs`)."""

    window_s: float
    max_clusters: int
    max_posts: int
    encode_batch_size: int = 32
    result_text_max_chars: int = 0


@dataclass(frozen=True)
class RematchPass:
    """What one pass found: the generation it searched against, and the updates to publish."""

    version: str
    generation: int
    clusters: int
    results: list[MatchResult] = field(default_factory=list)
    matched: list[tuple[ClusteredPost, str, float]] = field(default_factory=list)


def _tiered(matches: Sequence[Match]) -> Match | None:
    return matches[0] if matches and matches[0].tier is not None else None


class Rematcher:
    def __init__(self, models: ModelSource, searcher: Searcher, store: RematchStore, config: RematchConfig) -> None:
        self.models = models
        self.searcher = searcher
        self.store = store
        self.config = config

    async def find(self) -> RematchPass | None:
        """A pass over the serving version's unmatched clusters; None when the corpus did not change
        since the last one."""
        model = self.models.current()
        generation = await self.store.rematch_generation(model.version)
        if generation is None:
            return None
        clusters = await self.store.unmatched_clusters(model.version, self.config.window_s, self.config.max_clusters)
        found = await self.searcher.search(
            model.version, model.dimension, [Query(c.text, c.lang, c.centroid) for c in clusters], model.decisions
        )
        hits = [c.cluster_id for c, searched in zip(clusters, found, strict=True) if _tiered(searched.matches)]
        posts = await self.store.abstained_posts(model.version, hits, self.config.max_posts)
        # A post of images alone has no text of its own to search again.
        results, matched = await self._posts(model, [p for p in posts if p.text])
        return RematchPass(model.version, generation, len(clusters), results, matched)

    async def record(self, found: RematchPass) -> int:
        """Record a published pass; how many posts it changed."""
        return await self.store.record_rematches(found.version, found.generation, found.matched)

    async def _posts(
        self, model: ServingModel, posts: Sequence[ClusteredPost]
    ) -> tuple[list[MatchResult], list[tuple[ClusteredPost, str, float]]]:
        results: list[MatchResult] = []
        matched: list[tuple[ClusteredPost, str, float]] = []
        size = self.config.encode_batch_size
        for start in range(0, len(posts), size):
            chunk = posts[start : start + size]
            vectors = await asyncio.to_thread(model.encoder.encode_queries, [p.text for p in chunk])
            queries = [Query(p.text, p.lang, v) for p, v in zip(chunk, vectors, strict=True)]
            found = await self.searcher.search(model.version, model.dimension, queries, model.decisions)
            for post, searched in zip(chunk, found, strict=True):
                top = _tiered(searched.matches)
                if top is None:
                    continue
                results.append(self._result(model, post, searched.matches))
                matched.append((post, top.fact_check_id, float(top.probability or 0.0)))
        return results, matched

    def _result(self, model: ServingModel, post: ClusteredPost, matches: list[Match]) -> MatchResult:
        cut = self.config.result_text_max_chars
        return MatchResult(
            post_id=post.post_id,
            lang=post.lang,
            platform=post.platform,
            matches=matches,
            model_version=model.version,
            cluster_id=post.cluster_id,
            rematched=True,
            text=post.text[:cut] if cut else None,
            text_truncated=bool(cut) and len(post.text) > cut,
            url=post.url,
        )
