"""Fakes of the pipeline's narrow protocols, for the unit and in-memory tiers."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from worker.core.pipeline import ServingModel
from worker.domain import Candidate, FactCheckDetails, PostCandidates, Vectors
from worker.retrieval.decision import FEATURES, DecisionModel, Decisions
from worker.retrieval.retriever import Query, Searched
from worker.wire import Match


class FakeEncoder:
    """Deterministic unit vectors from text hashes; counts words as tokens."""

    def __init__(self, dimension: int = 8, fail_on: str | None = None) -> None:
        self._dimension = dimension
        self.fail_on = fail_on
        self.calls: list[list[str]] = []

    @property
    def dimension(self) -> int:
        return self._dimension

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(t.split()) + 2 for t in texts]

    def _vec(self, text: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha1(text.encode()).digest()[:4], "big")
        v = np.random.default_rng(seed).normal(size=self._dimension).astype(np.float32)
        return v / np.linalg.norm(v)

    def encode_queries(self, texts: Sequence[str]) -> Vectors:
        self.calls.append(list(texts))
        if self.fail_on and any(self.fail_on.casefold() in t.casefold() for t in texts):
            raise RuntimeError("encoder exploded")
        return np.stack([self._vec(t) for t in texts]) if texts else np.zeros((0, self._dimension), np.float32)

    encode_documents = encode_queries


class FakeModels:
    def __init__(self, model: ServingModel) -> None:
        self.model = model

    def current(self) -> ServingModel:
        return self.model


class FakeSearcher:
    """Returns one match per query named after the version; can fail a number of times first."""

    def __init__(self, failures: int = 0, error: type[BaseException] = ConnectionError) -> None:
        self.failures = failures
        self.error = error
        self.calls: list[tuple[str, int]] = []
        # Each call's queries: whether each was text read in an image.
        self.read: list[list[bool]] = []
        # What its answers depend on besides the corpus (a reused answer's key); tests change it.
        self.settings = "s1"

    async def state(self) -> str:
        return self.settings

    async def search(
        self, version: str, dimension: int, queries: Sequence[Query], decisions: Decisions | None = None
    ) -> list[Searched]:
        self.calls.append((version, len(queries)))
        self.langs = [q.lang for q in queries]
        self.read.append([q.read for q in queries])
        self.decisions = decisions
        if self.failures > 0:
            self.failures -= 1
            raise self.error("database unreachable")
        assert all(len(q.vector) == dimension for q in queries)
        return [
            Searched(
                PostCandidates([]),
                [Match(fact_check_id=f"fc-{version}", score=float(q.vector[0]), rank=1, claim="claim")],
            )
            for q in queries
        ]


class TableSource:
    """A candidate source from a table of candidates per post; details for whatever is asked."""

    def __init__(self, table: list[list[Candidate]], lexemes: frozenset[str] = frozenset()) -> None:
        self.table = table
        self.lexemes = lexemes
        self.asked: list[str] = []
        self.sources: frozenset[str] = frozenset()

    async def candidates(  # type: ignore[no-untyped-def]
        self, version, dimension, queries, texts, langs, *, sources, limit
    ) -> list[PostCandidates]:
        self.sources = sources
        return [PostCandidates(list(self.table[i % len(self.table)]), self.lexemes) for i in range(len(queries))]

    async def details(self, fact_check_ids: Sequence[str]) -> dict[str, FactCheckDetails]:
        self.asked = list(fact_check_ids)
        return {w: FactCheckDetails(f"claim {w}", None, None, "en", None, None, self.lexemes) for w in fact_check_ids}


def queries(n: int, langs: Sequence[str | None] | None = None, dimension: int = 4) -> list[Query]:
    """``n`` zero-vector posts (the fakes' sources ignore vectors), in ``langs`` (English by default)."""
    return [Query("a post", (langs or ["en"] * n)[i], np.zeros(dimension, np.float32)) for i in range(n)]


def cosine_is_probability() -> DecisionModel:
    """A hand-made decision model whose probability is the candidate's cosine (clipped to [0, 1])."""
    n = len(FEATURES)
    coef = [0.0] * n
    coef[FEATURES.index("cosine")] = 1.0
    return DecisionModel(
        FEATURES, (0.0,) * n, (1.0,) * n, tuple(coef), 0.0, (0.0, 1.0), (0.0, 1.0), 0.0, {"hand": True}
    )
