"""Fusing dense and lexical candidates into one ranked list (pure logic, unit-tested).

Reciprocal rank fusion (Cormack et al., 2009) needs no score calibration between the two
retrievers: each candidate scores ``w_dense / (k + dense_rank) + w_lexical / (k + lexical_rank)``.
Every candidate keeps its dense cosine, so ``min_score`` and the calibrated thresholds mean
the same whichever mode ranked it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

RetrievalMode = Literal["dense", "lexical", "hybrid"]


@dataclass(frozen=True)
class Candidate:
    fact_check_id: str
    dense_score: float
    dense_rank: int | None
    lexical_score: float | None
    lexical_rank: int | None


@dataclass(frozen=True)
class FusionConfig:
    mode: RetrievalMode = "hybrid"
    rrf_k: int = 60
    dense_weight: float = 1.0
    lexical_weight: float = 1.0


def fused_score(c: Candidate, config: FusionConfig) -> float:
    if config.mode == "dense":
        return 1.0 / (config.rrf_k + c.dense_rank) if c.dense_rank else 0.0
    if config.mode == "lexical":
        return 1.0 / (config.rrf_k + c.lexical_rank) if c.lexical_rank else 0.0
    score = 0.0
    if c.dense_rank:
        score += config.dense_weight / (config.rrf_k + c.dense_rank)
    if c.lexical_rank:
        score += config.lexical_weight / (config.rrf_k + c.lexical_rank)
    return score


def fuse(
    candidates: Sequence[Candidate], config: FusionConfig, *, top_k: int, min_score: float
) -> list[tuple[Candidate, float]]:
    """The top ``top_k`` candidates by the mode's ranking, each with its fused score."""
    eligible = [
        c
        for c in candidates
        if c.dense_score >= min_score
        and (config.mode != "dense" or c.dense_rank)
        and (config.mode != "lexical" or c.lexical_rank)
    ]
    scored = [(c, fused_score(c, config)) for c in eligible]
    # Ties (equal fused scores) fall back to the dense cosine, then the id, for a stable order.
    scored.sort(key=lambda cs: (-cs[1], -cs[0].dense_score, cs[0].fact_check_id))
    return scored[:top_k]
