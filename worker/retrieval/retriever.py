"""From query vectors to published matches: candidates, fusion, decision, tiers, explanations.

The pipeline's searcher. It asks the storage layer (a :class:`CandidateSource`) for each
source's candidates, lets the configured mode rank them into a pool, lets the version's
decision model give each pooled candidate its match probability and reorder the pool by it
(so rank 1 is the candidate the decision prefers, and a tier can never skip rank 1), cuts
the tiers per language, demotes quarantined fact-checks one tier, fetches the
details of the published matches alone, and builds the wire :class:`Match` objects. Nothing
here knows SQL or Kafka.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from worker.retrieval.decision import Decisions, features
from worker.retrieval.modes import MODES, Candidate, FusionConfig, ModeName, Source, fuse
from worker.retrieval.overmatch import QuarantineGuard
from worker.retrieval.recall import RecallMonitor
from worker.retrieval.rerank import Reranker
from worker.retrieval.tiers import Tier, tier_for
from worker.wire import Match, document_text

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from worker.core.encoder import Vectors
    from worker.settings import Settings


@dataclass(frozen=True)
class CandidateDetails:
    """What a published match shows besides its scores."""

    claim: str
    title: str | None
    url: str | None
    lang: str | None
    rating: str | None
    published_at: datetime | None
    shared_terms: list[str]


class CandidateSource(Protocol):
    async def candidates(
        self,
        version: str,
        dimension: int,
        queries: Vectors,
        texts: Sequence[str],
        langs: Sequence[str | None],
        *,
        sources: frozenset[Source],
        limit: int,
    ) -> list[list[Candidate]]: ...

    async def details(
        self, wanted: Sequence[tuple[int, str]], texts: Sequence[str], langs: Sequence[str | None]
    ) -> dict[tuple[int, str], CandidateDetails]: ...


@dataclass(frozen=True)
class RetrievalConfig:
    fusion: FusionConfig
    top_k: int
    min_score: float
    candidates: int
    decision_pool: int = 20
    publish_untiered: bool = False
    rerank_top_n: int = 0

    @classmethod
    def from_settings(cls, settings: Settings, mode: ModeName | None = None) -> RetrievalConfig:
        return cls(
            fusion=FusionConfig.from_settings(settings, mode),
            top_k=settings.top_k,
            min_score=settings.min_score,
            candidates=settings.retrieval_candidates,
            decision_pool=settings.decision_pool,
            publish_untiered=settings.publish_untiered,
            rerank_top_n=settings.rerank_top_n,
        )

    def with_mode(self, mode: ModeName) -> RetrievalConfig:
        return replace(self, fusion=replace(self.fusion, mode=mode))


@dataclass(frozen=True)
class Scored:
    """A pooled candidate with what fusion and the decision model made of it."""

    candidate: Candidate
    fused: float
    features: tuple[float, ...] | None = None
    probability: float | None = None


class Retriever:
    """Ranks the fact-checks of one model version for a batch of posts, and decides."""

    def __init__(
        self,
        source: CandidateSource,
        config: RetrievalConfig,
        guard: QuarantineGuard | None = None,
        recall: RecallMonitor | None = None,
    ) -> None:
        self.source = source
        self.config = config
        self.guard = guard
        self.recall = recall
        self._missing_reranker: set[str] = set()

    async def pools(
        self,
        version: str,
        dimension: int,
        queries: Vectors,
        texts: Sequence[str],
        langs: Sequence[str | None],
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
        if len(texts) != len(queries) or len(langs) != len(queries):
            raise ValueError("one text and one language per query vector")
        config = self.config
        model = decisions.model if decisions else None
        found = await self.source.candidates(
            version,
            dimension,
            queries,
            texts,
            langs,
            sources=MODES[config.fusion.mode].sources,
            limit=max(config.candidates, config.top_k),
        )
        if self.recall is not None and not exclude:
            self.recall.offer(version, dimension, queries, found)
        if exclude:
            found = [_without(cands, exclude) for cands in found]
        deciding = model is not None or featurize
        pool = max(config.decision_pool, config.top_k) if deciding else config.top_k
        fused_pools = [
            fuse(cands, config.fusion, top_k=pool, min_score=config.min_score, post_lang=langs[qi])
            for qi, cands in enumerate(found)
        ]
        reranker = decisions.reranker if decisions else None
        wants_rerank = featurize or (model is not None and model.uses_rerank)
        rerank: list[list[float]] | None = None
        if wants_rerank and reranker is not None and config.rerank_top_n > 0:
            rerank = await self._rerank(reranker, fused_pools, texts, langs)
        elif model is not None and model.uses_rerank:
            if version not in self._missing_reranker:  # once per version, not once per batch
                self._missing_reranker.add(version)
                log.error(
                    "version %s decides with a reranker it does not have here (rerank_top_n is 0 or it is"
                    " missing): its score counts as 0",
                    version,
                )
            rerank = [[0.0] * len(fused) for fused in fused_pools]
        out: list[list[Scored]] = []
        for qi, fused in enumerate(fused_pools):
            if not deciding or not fused:
                out.append([Scored(c, f) for c, f in fused])
                continue
            neutral = model.neutral_lexical if model else 0.0
            scores = rerank[qi] if rerank is not None else None
            x = features([c for c, _ in fused], config.fusion, texts[qi], langs[qi], neutral, scores)
            if model is None:
                out.append([Scored(c, f, tuple(row)) for (c, f), row in zip(fused, x, strict=True)])
                continue
            raw = model.raw(x)
            prob = model.probability(raw)
            order = sorted(range(len(fused)), key=lambda i: (-raw[i], -fused[i][1], fused[i][0].fact_check_id))
            out.append(
                [
                    Scored(fused[i][0], fused[i][1], tuple(x[i]) if featurize else None, round(float(prob[i]), 6))
                    for i in order
                ]
            )
        return out

    async def _rerank(
        self,
        reranker: Reranker,
        pools: Sequence[Sequence[tuple[Candidate, float]]],
        texts: Sequence[str],
        langs: Sequence[str | None],
    ) -> list[list[float]]:
        """The cross-encoder's logit for each post's top ``rerank_top_n``; the rest get the lowest seen."""
        n = self.config.rerank_top_n
        wanted = [(qi, c.fact_check_id) for qi, fused in enumerate(pools) for c, _ in fused[:n]]
        details = await self.source.details(wanted, texts, langs)
        pairs = [(texts[qi], document_text(details[w].title, details[w].claim)) for w in wanted for qi in (w[0],)]
        logits = iter((await asyncio.to_thread(reranker.score, pairs)).tolist())
        out = []
        for fused in pools:
            top = [next(logits) for _ in fused[:n]]
            floor = min(top) if top else 0.0
            out.append(top + [floor] * (len(fused) - len(top)))
        return out

    async def search(
        self,
        version: str,
        dimension: int,
        queries: Vectors,
        texts: Sequence[str],
        langs: Sequence[str | None],
        decisions: Decisions | None = None,
        *,
        exclude: Collection[str] = frozenset(),
    ) -> list[list[Match]]:
        """The published matches of each post under ``version``: its top-k, tiered when the version is calibrated."""
        pools = await self.pools(version, dimension, queries, texts, langs, decisions, exclude=exclude)
        cuts = decisions.thresholds if decisions and decisions.model else {}
        quarantined = await self.guard.current() if self.guard else frozenset()
        published: list[list[tuple[Scored, Tier | None]]] = []
        for qi, pool in enumerate(pools):
            kept = []
            for s in pool[: self.config.top_k]:
                tier = tier_for(s.probability, langs[qi], cuts) if cuts and s.probability is not None else None
                if tier is not None and s.candidate.fact_check_id in quarantined:
                    tier = _DEMOTED[tier]
                if tier is not None or not cuts or self.config.publish_untiered:
                    kept.append((s, tier))
            published.append(kept)
        if self.guard:
            # What moderators are shown: every tiered match, so a version with no "match" cut is watched too.
            await self.guard.observe(
                frozenset(s.candidate.fact_check_id for s, t in kept if t is not None) for kept in published
            )
        details = await self.source.details(
            [(qi, s.candidate.fact_check_id) for qi, kept in enumerate(published) for s, _ in kept], texts, langs
        )
        return [
            [_match(s, rank, tier, details[(qi, s.candidate.fact_check_id)]) for rank, (s, tier) in enumerate(kept, 1)]
            for qi, kept in enumerate(published)
        ]


# A quarantined fact-check is demoted one tier: never "match"; a suggestion is withheld.
_DEMOTED: dict[Tier, Tier | None] = {"match": "suggestion", "suggestion": None}


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


def _match(s: Scored, rank: int, tier: Tier | None, d: CandidateDetails) -> Match:
    c = s.candidate
    score = round(c.dense_score, 6)
    return Match(
        fact_check_id=c.fact_check_id,
        score=score,
        rank=rank,
        claim=d.claim,
        title=d.title,
        url=d.url,
        lang=d.lang,
        rating=d.rating,
        published_at=d.published_at,
        tier=tier,
        probability=s.probability,
        dense_score=score,
        dense_rank=c.dense_rank,
        lexical_score=round(c.lexical_score, 6) if c.lexical_score is not None else None,
        lexical_rank=c.lexical_rank,
        fused_score=round(s.fused, 6),
        shared_terms=d.shared_terms,
    )
