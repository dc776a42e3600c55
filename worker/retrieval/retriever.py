"""From query vectors to published matches: candidates, fusion, decision, tiers, explanations.

The pipeline's searcher. It asks the storage layer (a :class:`CandidateSource`) for each
source's candidates, lets the configured mode rank them into a pool, lets the version's
decision model give each pooled candidate its match probability and reorder the pool by it
(so rank 1 is the candidate the decision prefers, and a tier can never skip rank 1), cuts
the tiers per language, demotes quarantined fact-checks one tier, and builds the wire
:class:`Match` objects from one details fetch per chunk (the reranked and the published
fact-checks together). Each post travels as one :class:`Query` in and one :class:`Searched`
out; what monitors want to see of a search (its raw candidates) is in ``Searched``, and the
monitors themselves run as the pipeline's observers, not here. Nothing here knows SQL or Kafka.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from worker.domain import FactCheckDetails, PostCandidates, Vectors
from worker.retrieval.decision import DecisionModel, Decisions, features
from worker.retrieval.modes import MODES, Candidate, FusionConfig, ModeName, fuse
from worker.retrieval.rerank import Reranker
from worker.retrieval.tiers import Tier, tier_for
from worker.storage.interfaces import CandidateSource
from worker.wire import Match, document_text

log = logging.getLogger(__name__)

__all__ = ["CandidateSource", "Query", "RetrievalConfig", "Retriever", "Scored", "Searched"]


@dataclass(frozen=True)
class Query:
    """One post as the searcher sees it: its text, its (given or detected) language, its vector."""

    text: str
    lang: str | None
    vector: Vectors
    # Its text was read in an image (OCR), not typed: decided by the model for such text, if any.
    read: bool = False


def stack(queries: Sequence[Query], dimension: int) -> Vectors:
    """The queries' vectors as one matrix (what the SQL takes in one binary parameter)."""
    if not queries:
        return np.zeros((0, dimension), dtype=np.float32)
    return np.stack([np.asarray(q.vector, dtype=np.float32) for q in queries])


def queries_of(texts: Sequence[str], langs: Sequence[str | None], vectors: Vectors) -> list[Query]:
    """Queries from parallel columns (labelled sets, benchmarks): one place checks their lengths."""
    if not len(texts) == len(langs) == len(vectors):
        raise ValueError("one text and one language per query vector")
    return [Query(t, lang, v) for t, lang, v in zip(texts, langs, vectors, strict=True)]


@dataclass(frozen=True)
class RetrievalConfig:
    fusion: FusionConfig
    top_k: int
    min_score: float
    candidates: int
    decision_pool: int = 20
    publish_untiered: bool = False
    rerank_top_n: int = 0

    def with_mode(self, mode: ModeName) -> RetrievalConfig:
        return replace(self, fusion=replace(self.fusion, mode=mode))


@dataclass(frozen=True)
class Scored:
    """A pooled candidate with what fusion and the decision model made of it."""

    candidate: Candidate
    fused: float
    features: tuple[float, ...] | None = None
    probability: float | None = None


@dataclass(frozen=True)
class Searched:
    """One post's search: what the sources returned (monitors read it) and what is published."""

    found: PostCandidates
    matches: list[Match] = field(default_factory=list)


class QuarantineList(Protocol):
    async def current(self) -> frozenset[str]: ...


@dataclass
class _Chunk:
    """A chunk of queries on its way through :meth:`Retriever.search`."""

    found: list[PostCandidates]
    pools: list[list[Scored]]
    details: dict[str, FactCheckDetails] = field(default_factory=dict)


class Retriever:
    """Ranks the fact-checks of one model version for a chunk of posts, and decides."""

    def __init__(
        self, source: CandidateSource, config: RetrievalConfig, quarantine: QuarantineList | None = None
    ) -> None:
        self.source = source
        self.config = config
        self.quarantine = quarantine
        self._missing_reranker: set[str] = set()

    async def pools(
        self,
        version: str,
        dimension: int,
        queries: Sequence[Query],
        decisions: Decisions | None = None,
        *,
        exclude: Collection[str] = frozenset(),
        featurize: bool = False,
    ) -> list[list[Scored]]:
        """Each post's fused pool, ordered by match probability when the version has a decision model.

        ``exclude`` drops fact-checks as if they were not in the corpus (the other candidates'
        ranks close up): how an open-set split is made on a live corpus. ``featurize`` keeps
        each candidate's decision features (to fit a decision model).
        """
        chunk = await self._chunk(version, dimension, queries, decisions, exclude=exclude, featurize=featurize)
        return chunk.pools

    async def _chunk(
        self,
        version: str,
        dimension: int,
        queries: Sequence[Query],
        decisions: Decisions | None,
        *,
        exclude: Collection[str],
        featurize: bool,
    ) -> _Chunk:
        config = self.config
        found = await self.source.candidates(
            version,
            dimension,
            stack(queries, dimension),
            [q.text for q in queries],
            [q.lang for q in queries],
            sources=MODES[config.fusion.mode].sources,
            limit=max(config.candidates, config.top_k),
        )
        candidates = [_without(f.candidates, exclude) if exclude else f.candidates for f in found]
        model = decisions.model if decisions else None
        deciding = model is not None or featurize
        pool = max(config.decision_pool, config.top_k) if deciding else config.top_k
        fused = [
            fuse(c, config.fusion, top_k=pool, min_score=config.min_score, post_lang=q.lang)
            for c, q in zip(candidates, queries, strict=True)
        ]
        chunk = _Chunk(found, [])
        chunk.pools = await self._decided(version, decisions, fused, queries, chunk, featurize)
        return chunk

    async def _decided(
        self,
        version: str,
        decisions: Decisions | None,
        fused: Sequence[Sequence[tuple[Candidate, float]]],
        queries: Sequence[Query],
        chunk: _Chunk,
        featurize: bool,
    ) -> list[list[Scored]]:
        """Each post's pool decided (:meth:`_decided_typed`), but text read in images by the
        version's model for such text, where it has one (never reranked)."""
        model = decisions.model if decisions else None
        for_read = model.image_text if model and not featurize else None
        read = [i for i, q in enumerate(queries) if q.read] if for_read else []
        if for_read is None or not read:
            return await self._decided_typed(version, decisions, fused, queries, chunk, featurize)
        typed = [i for i, q in enumerate(queries) if not q.read]
        pools = await self._decided_typed(
            version, decisions, [fused[i] for i in typed], [queries[i] for i in typed], chunk, False
        )
        by_post = dict(zip(typed, pools, strict=True))
        by_post.update({i: self._decide(fused[i], queries[i], for_read, None, True, False) for i in read})
        return [by_post[i] for i in range(len(queries))]

    async def _decided_typed(
        self,
        version: str,
        decisions: Decisions | None,
        fused: Sequence[Sequence[tuple[Candidate, float]]],
        queries: Sequence[Query],
        chunk: _Chunk,
        featurize: bool,
    ) -> list[list[Scored]]:
        """Each post's pool decided: by the version's model, or by its cascade (the screen for every
        post, the reranked model for those within its band), or plainly fused when undecided."""
        model = decisions.model if decisions else None
        deciding = model is not None or featurize
        # The version's cross-encoder where reranking is on (None: off or missing).
        reranker = decisions.reranker if decisions and self.config.rerank_top_n > 0 else None
        pairs = list(zip(fused, queries, strict=True))
        if featurize or model is None or not model.uses_rerank:
            scores = await self._rerank(reranker, fused, queries, chunk) if featurize and reranker else None
            return [
                self._decide(f, q, model, scores[i] if scores else None, deciding, featurize)
                for i, (f, q) in enumerate(pairs)
            ]
        if reranker is None:
            if model.screen is not None:  # the cascade's screen decides alone, as calibrated
                return [self._decide(f, q, model.screen, None, deciding, False) for f, q in pairs]
            self._no_reranker(version)
            return [self._decide(f, q, model, [0.0] * len(f), deciding, False) for f, q in pairs]
        if model.screen is None:
            scores = await self._rerank(reranker, fused, queries, chunk)
            return [self._decide(f, q, model, scores[i], deciding, False) for i, (f, q) in enumerate(pairs)]
        decided = [self._decide(f, q, model.screen, None, deciding, False) for f, q in pairs]
        todo = [i for i, pool in enumerate(decided) if pool and model.reranks(pool[0].probability or 0.0)]
        if todo:
            scores = await self._rerank(reranker, [fused[i] for i in todo], [queries[i] for i in todo], chunk)
            for i, score in zip(todo, scores, strict=True):
                decided[i] = self._decide(fused[i], queries[i], model, score, deciding, False)
        return decided

    def _decide(
        self,
        fused: Sequence[tuple[Candidate, float]],
        query: Query,
        model: DecisionModel | None,
        rerank: Sequence[float] | None,
        deciding: bool,
        featurize: bool,
    ) -> list[Scored]:
        """One post's pool in the decision's order, each candidate with its probability."""
        if not deciding or not fused:
            return [Scored(c, f) for c, f in fused]
        neutral = model.neutral_lexical if model else 0.0
        x = features([c for c, _ in fused], self.config.fusion, query.text, query.lang, neutral, rerank)
        if model is None:
            return [Scored(c, f, tuple(row)) for (c, f), row in zip(fused, x, strict=True)]
        raw = model.raw(x)
        prob = model.probability(raw)
        order = sorted(range(len(fused)), key=lambda i: (-raw[i], -fused[i][1], fused[i][0].fact_check_id))
        return [
            Scored(fused[i][0], fused[i][1], tuple(x[i]) if featurize else None, round(float(prob[i]), 6))
            for i in order
        ]

    def _no_reranker(self, version: str) -> None:
        if version not in self._missing_reranker:  # once per version, not once per batch
            self._missing_reranker.add(version)
            log.error(
                "version %s decides with a reranker it does not have here (rerank_top_n is 0 or it is"
                " missing): its score counts as 0",
                version,
            )

    async def _rerank(
        self,
        reranker: Reranker,
        pools: Sequence[Sequence[tuple[Candidate, float]]],
        queries: Sequence[Query],
        chunk: _Chunk,
    ) -> list[list[float]]:
        """The cross-encoder's logit for each post's top ``rerank_top_n``; the rest get the lowest seen.
        The reranked fact-checks' details join the chunk's (the published ones are fetched later)."""
        n = self.config.rerank_top_n
        reread = [c.fact_check_id for pool in pools for c, _ in pool[:n] if c.fact_check_id not in chunk.details]
        if reread:
            chunk.details.update(await self.source.details(reread))
        details = chunk.details
        pairs = [
            (q.text, document_text(details[c.fact_check_id].title, details[c.fact_check_id].claim))
            for q, fused in zip(queries, pools, strict=True)
            for c, _ in fused[:n]
        ]
        logits = iter((await asyncio.to_thread(reranker.score, pairs)).tolist())
        out = []
        for fused in pools:
            top = [next(logits) for _ in fused[:n]]
            floor = min(top) if top else 0.0
            out.append(top + [floor] * (len(fused) - len(top)))
        return out

    async def state(self) -> str:
        """A digest of its settings and the quarantine list it searches with now (a reused answer's key)."""
        quarantined = sorted(await self.quarantine.current()) if self.quarantine else []
        return hashlib.sha256(f"{self.config!r}|{','.join(quarantined)}".encode()).hexdigest()[:16]

    async def search(
        self,
        version: str,
        dimension: int,
        queries: Sequence[Query],
        decisions: Decisions | None = None,
        *,
        exclude: Collection[str] = frozenset(),
    ) -> list[Searched]:
        """Each post's search under ``version``: its top-k, tiered when the version is calibrated."""
        if not queries:
            return []
        chunk = await self._chunk(version, dimension, queries, decisions, exclude=exclude, featurize=False)
        cuts = decisions.thresholds if decisions and decisions.model else {}
        quarantined = await self.quarantine.current() if self.quarantine else frozenset()
        published = [
            self._tiered(pool, q.lang, cuts, quarantined) for pool, q in zip(chunk.pools, queries, strict=True)
        ]
        wanted = [s.candidate.fact_check_id for kept in published for s, _ in kept]
        missing = [fc for fc in wanted if fc not in chunk.details]
        if missing:
            chunk.details.update(await self.source.details(missing))
        return [
            Searched(
                found,
                [
                    _match(s, rank, tier, chunk.details[s.candidate.fact_check_id], found.lexemes)
                    for rank, (s, tier) in enumerate(kept, 1)
                ],
            )
            for found, kept in zip(chunk.found, published, strict=True)
        ]

    def _tiered(
        self,
        pool: Sequence[Scored],
        lang: str | None,
        cuts: Mapping[tuple[str, str], float],
        quarantined: frozenset[str],
    ) -> list[tuple[Scored, Tier | None]]:
        """The published part of one pool: its top-k with their tiers (quarantined ones demoted)."""
        kept = []
        for s in pool[: self.config.top_k]:
            tier = tier_for(s.probability, lang, cuts) if cuts and s.probability is not None else None
            if tier is not None and s.candidate.fact_check_id in quarantined:
                tier = DEMOTED[tier]
            if tier is not None or not cuts or self.config.publish_untiered:
                kept.append((s, tier))
        return kept


# A quarantined fact-check is demoted one tier: never "match"; a suggestion is withheld.
DEMOTED: dict[Tier, Tier | None] = {"match": "suggestion", "suggestion": None}


def _without(cands: Sequence[Candidate], exclude: Collection[str]) -> list[Candidate]:
    kept = [c for c in cands if c.fact_check_id not in exclude]
    dense = {c.fact_check_id: r for r, c in enumerate(sorted((c for c in kept if c.dense_rank), key=_dense_key), 1)}
    lexical = {
        c.fact_check_id: r for r, c in enumerate(sorted((c for c in kept if c.lexical_rank), key=_lexical_key), 1)
    }
    return [replace(c, dense_rank=dense.get(c.fact_check_id), lexical_rank=lexical.get(c.fact_check_id)) for c in kept]


def _dense_key(c: Candidate) -> int:
    return c.dense_rank or 0


def _lexical_key(c: Candidate) -> int:
    return c.lexical_rank or 0


def _match(s: Scored, rank: int, tier: Tier | None, d: FactCheckDetails, post_lexemes: frozenset[str]) -> Match:
    c = s.candidate
    score = round(c.dense_score, 6)
    return Match(
        fact_check_id=c.fact_check_id,
        score=score,
        rank=rank,
        **d.shown(),
        tier=tier,
        probability=s.probability,
        dense_score=score,
        dense_rank=c.dense_rank,
        lexical_score=round(c.lexical_score, 6) if c.lexical_score is not None else None,
        lexical_rank=c.lexical_rank,
        fused_score=round(s.fused, 6),
        shared_terms=sorted(d.lexemes & post_lexemes),
    )
