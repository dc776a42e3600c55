"""From query vectors to published matches: candidates, fusion, cut, tiers, explanations.

The pipeline's searcher. It asks the storage layer (a :class:`CandidateSource`) for each
source's candidates, lets the configured mode rank them, keeps the top-k above the cosine
floor, fetches the details of those alone, and builds the wire :class:`Match` objects with
their calibrated tier. Nothing here knows SQL or Kafka.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from worker.retrieval.modes import MODES, Candidate, FusionConfig, ModeName, Source, fuse
from worker.retrieval.tiers import tier_for
from worker.wire import Match

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

    @classmethod
    def from_settings(cls, settings: Settings, mode: ModeName | None = None) -> RetrievalConfig:
        return cls(
            fusion=FusionConfig.from_settings(settings, mode),
            top_k=settings.top_k,
            min_score=settings.min_score,
            candidates=settings.retrieval_candidates,
        )

    def with_mode(self, mode: ModeName) -> RetrievalConfig:
        return replace(self, fusion=replace(self.fusion, mode=mode))


class Retriever:
    """Ranks the fact-checks of one model version for a batch of posts."""

    def __init__(self, source: CandidateSource, config: RetrievalConfig) -> None:
        self.source = source
        self.config = config

    async def search(
        self,
        version: str,
        dimension: int,
        queries: Vectors,
        texts: Sequence[str],
        langs: Sequence[str | None],
        thresholds: Mapping[tuple[str, str], float] | None = None,
    ) -> list[list[Match]]:
        """Top-k matches for each query under ``version``, each with its tier when thresholds exist."""
        if len(texts) != len(queries) or len(langs) != len(queries):
            raise ValueError("one text and one language per query vector")
        config = self.config
        found = await self.source.candidates(
            version,
            dimension,
            queries,
            texts,
            langs,
            sources=MODES[config.fusion.mode].sources,
            limit=max(config.candidates, config.top_k),
        )
        ranked = [fuse(c, config.fusion, top_k=config.top_k, min_score=config.min_score) for c in found]
        details = await self.source.details(
            [(qi, c.fact_check_id) for qi, kept in enumerate(ranked) for c, _ in kept], texts, langs
        )
        return [
            [
                _match(c, fused, rank, details[(qi, c.fact_check_id)], langs[qi], thresholds)
                for rank, (c, fused) in enumerate(kept, 1)
            ]
            for qi, kept in enumerate(ranked)
        ]


def _match(
    c: Candidate,
    fused: float,
    rank: int,
    d: CandidateDetails,
    post_lang: str | None,
    thresholds: Mapping[tuple[str, str], float] | None,
) -> Match:
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
        tier=tier_for(score, post_lang, thresholds) if thresholds else None,
        dense_score=score,
        dense_rank=c.dense_rank,
        lexical_score=round(c.lexical_score, 6) if c.lexical_score is not None else None,
        lexical_rank=c.lexical_rank,
        fused_score=round(fused, 6),
        shared_terms=d.shared_terms,
    )
