"""Retrieval modes: which candidate sources a mode reads, and how it ranks what they return.

Adding a mode is adding one class to :data:`MODES` (and its name to
:data:`worker.domain.ModeName`, which ``Settings`` and the CLI reuse). A mode over the
existing sources needs nothing else; a new source also needs its SQL in
``worker/storage/candidates.py``.

Hybrid uses reciprocal rank fusion (Cormack et al., 2009), which needs no score calibration
between the two retrievers: each candidate scores ``w_dense / (k + dense_rank) +
w_lexical / (k + lexical_rank)``. Every candidate keeps its dense cosine, so ``min_score``
and the decision model see the same evidence whichever mode ranked it.

Fusion knows languages: lexical evidence can only exist between texts in the same language.
A fact-check in another language than the post (both known) takes its dense rank in the
lexical slot, so same-language fact-checks that merely share a name or a number with the
post are not fused above it (docs/measurements.md has what plain RRF lost this way).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

from worker.domain import MODE_NAMES, Candidate, ModeName, Source

__all__ = ["MODES", "MODE_NAMES", "Candidate", "FusionConfig", "ModeName", "Source", "fuse"]


@dataclass(frozen=True)
class FusionConfig:
    """How a mode turns ranks into one score; built from ``Settings`` by :mod:`worker.configs`
    (the defaults live in ``Settings`` only)."""

    mode: ModeName
    rrf_k: int
    dense_weight: float
    lexical_weight: float
    language_aware: bool = True


class Mode(Protocol):
    name: ClassVar[ModeName]
    sources: ClassVar[frozenset[Source]]

    def score(self, c: Candidate, config: FusionConfig, post_lang: str | None = None) -> float:
        """The candidate's ranking score; 0 when this mode cannot rank it."""
        ...


def _rrf(rank: int | None, k: int, weight: float = 1.0) -> float:
    return weight / (k + rank) if rank else 0.0


def _base_lang(lang: str | None) -> str | None:
    return lang.split("-")[0].lower() if lang else None


def cross_lingual(post_lang: str | None, fact_check_lang: str | None) -> bool:
    """True only when both languages are known and differ."""
    a, b = _base_lang(post_lang), _base_lang(fact_check_lang)
    return bool(a and b and a != b)


def effective_lexical_rank(c: Candidate, post_lang: str | None) -> int | None:
    """The lexical rank, or for a cross-lingual candidate the better of it and its dense rank."""
    if cross_lingual(post_lang, c.lang) and c.dense_rank:
        return min(c.lexical_rank or c.dense_rank, c.dense_rank)
    return c.lexical_rank


def hybrid_rrf(c: Candidate, config: FusionConfig, post_lang: str | None = None) -> float:
    return _rrf(c.dense_rank, config.rrf_k, config.dense_weight) + _rrf(
        effective_lexical_rank(c, post_lang), config.rrf_k, config.lexical_weight
    )


class Dense:
    name: ClassVar[ModeName] = "dense"
    sources: ClassVar[frozenset[Source]] = frozenset({"dense"})

    def score(self, c: Candidate, config: FusionConfig, post_lang: str | None = None) -> float:
        return _rrf(c.dense_rank, config.rrf_k)


class Lexical:
    name: ClassVar[ModeName] = "lexical"
    sources: ClassVar[frozenset[Source]] = frozenset({"lexical"})

    def score(self, c: Candidate, config: FusionConfig, post_lang: str | None = None) -> float:
        return _rrf(c.lexical_rank, config.rrf_k)


class Hybrid:
    name: ClassVar[ModeName] = "hybrid"
    sources: ClassVar[frozenset[Source]] = frozenset({"dense", "lexical"})

    def score(self, c: Candidate, config: FusionConfig, post_lang: str | None = None) -> float:
        if not config.language_aware:
            post_lang = None
        return hybrid_rrf(c, config, post_lang)


MODES: dict[ModeName, Mode] = {m.name: m for m in (Dense(), Lexical(), Hybrid())}
assert set(MODES) == set(MODE_NAMES), "every mode name needs a class in MODES"


def fuse(
    candidates: Sequence[Candidate],
    config: FusionConfig,
    *,
    top_k: int,
    min_score: float,
    post_lang: str | None = None,
) -> list[tuple[Candidate, float]]:
    """The top ``top_k`` candidates by the mode's ranking, each with its fused score."""
    mode = MODES[config.mode]
    # A candidate found only by a source outside the mode cannot be ranked by it.
    scored = [
        (c, mode.score(c, config, post_lang))
        for c in candidates
        if c.dense_score >= min_score
        and ((c.dense_rank and "dense" in mode.sources) or (c.lexical_rank and "lexical" in mode.sources))
    ]
    # Ties (equal fused scores) fall back to the dense cosine, then the id, for a stable order.
    scored.sort(key=lambda cs: (-cs[1], -cs[0].dense_score, cs[0].fact_check_id))
    return scored[:top_k]
