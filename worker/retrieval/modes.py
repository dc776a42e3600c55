"""Retrieval modes: which candidate sources a mode reads, and how it ranks what they return.

Adding a mode is adding one class to :data:`MODES` (and its name to :data:`ModeName`, which
``Settings`` and the CLI reuse). A mode over the existing sources needs nothing else; a new
source also needs its SQL in ``worker/storage/candidates.py``.

Hybrid uses reciprocal rank fusion (Cormack et al., 2009), which needs no score calibration
between the two retrievers: each candidate scores ``w_dense / (k + dense_rank) +
w_lexical / (k + lexical_rank)``. Every candidate keeps its dense cosine, so ``min_score``
and the calibrated thresholds mean the same whichever mode ranked it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol, get_args

if TYPE_CHECKING:
    from worker.settings import Settings

ModeName = Literal["dense", "lexical", "hybrid"]
Source = Literal["dense", "lexical"]


@dataclass(frozen=True)
class Candidate:
    fact_check_id: str
    dense_score: float
    dense_rank: int | None
    lexical_score: float | None
    lexical_rank: int | None


@dataclass(frozen=True)
class FusionConfig:
    """How a mode turns ranks into one score; built from ``Settings`` only (its defaults live there)."""

    mode: ModeName
    rrf_k: int
    dense_weight: float
    lexical_weight: float

    @classmethod
    def from_settings(cls, settings: Settings, mode: ModeName | None = None) -> FusionConfig:
        return cls(mode or settings.retrieval_mode, settings.rrf_k, settings.dense_weight, settings.lexical_weight)


class Mode(Protocol):
    name: ClassVar[ModeName]
    sources: ClassVar[frozenset[Source]]

    def score(self, c: Candidate, config: FusionConfig) -> float:
        """The candidate's ranking score; 0 when this mode cannot rank it."""
        ...


def _rrf(rank: int | None, k: int, weight: float = 1.0) -> float:
    return weight / (k + rank) if rank else 0.0


class Dense:
    name: ClassVar[ModeName] = "dense"
    sources: ClassVar[frozenset[Source]] = frozenset({"dense"})

    def score(self, c: Candidate, config: FusionConfig) -> float:
        return _rrf(c.dense_rank, config.rrf_k)


class Lexical:
    name: ClassVar[ModeName] = "lexical"
    sources: ClassVar[frozenset[Source]] = frozenset({"lexical"})

    def score(self, c: Candidate, config: FusionConfig) -> float:
        return _rrf(c.lexical_rank, config.rrf_k)


class Hybrid:
    name: ClassVar[ModeName] = "hybrid"
    sources: ClassVar[frozenset[Source]] = frozenset({"dense", "lexical"})

    def score(self, c: Candidate, config: FusionConfig) -> float:
        return _rrf(c.dense_rank, config.rrf_k, config.dense_weight) + _rrf(
            c.lexical_rank, config.rrf_k, config.lexical_weight
        )


MODES: dict[ModeName, Mode] = {m.name: m for m in (Dense(), Lexical(), Hybrid())}
MODE_NAMES: tuple[ModeName, ...] = get_args(ModeName)
assert set(MODES) == set(MODE_NAMES), "every mode name needs a class in MODES"


def fused_score(c: Candidate, config: FusionConfig) -> float:
    return MODES[config.mode].score(c, config)


def fuse(
    candidates: Sequence[Candidate], config: FusionConfig, *, top_k: int, min_score: float
) -> list[tuple[Candidate, float]]:
    """The top ``top_k`` candidates by the mode's ranking, each with its fused score."""
    mode = MODES[config.mode]
    # A candidate found only by a source outside the mode cannot be ranked by it.
    scored = [
        (c, mode.score(c, config))
        for c in candidates
        if c.dense_score >= min_score
        and ((c.dense_rank and "dense" in mode.sources) or (c.lexical_rank and "lexical" in mode.sources))
    ]
    # Ties (equal fused scores) fall back to the dense cosine, then the id, for a stable order.
    scored.sort(key=lambda cs: (-cs[1], -cs[0].dense_score, cs[0].fact_check_id))
    return scored[:top_k]
