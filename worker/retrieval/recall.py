"""The HNSW index's recall, measured on live traffic.

An approximate index degrades silently: after bulk inserts and deletes, with an ``ef_search``
too low for a grown corpus, or after a bad ``halfvec`` cast, rank 1 quietly becomes the
second-best fact-check. A small share of live searches is re-run exactly (a sequential scan
of the version's vectors, no index) in the background, and recall@k of the index against the
exact answer is exported per version. The probe never holds a batch: offered searches go to a
bounded queue and are dropped when it is full; the exact scans run one at a time.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from worker.domain import Candidate, Vectors

log = logging.getLogger(__name__)


class ExactSearch(Protocol):
    async def exact_neighbours(self, version: str, dimension: int, query: np.ndarray, k: int) -> list[str]: ...


@dataclass(frozen=True)
class Probe:
    version: str
    dimension: int
    query: np.ndarray
    approximate: tuple[str, ...]  # the index's top-k ids, best first


def recall_at_k(approximate: Sequence[str], exact: Sequence[str]) -> float:
    """Share of the exact top-k that the index also returned."""
    if not exact:
        return 1.0
    return len(set(approximate) & set(exact)) / len(exact)


class RecallMonitor:
    """Samples searches, re-runs them exactly, keeps a sliding recall@k per version."""

    def __init__(
        self,
        exact: ExactSearch,
        *,
        share: float,
        k: int = 10,
        window: int = 200,
        queue_size: int = 32,
        on_recall: Callable[[str, float, float], None] | None = None,
        seed: int | None = None,
    ) -> None:
        self.exact = exact
        self.share = share
        self.k = k
        self._queue: asyncio.Queue[Probe] = asyncio.Queue(maxsize=queue_size)
        self._recent: dict[str, deque[float]] = {}
        self._window = window
        self._on_recall = on_recall  # (version, this probe's recall, the window's mean)
        self._random = random.Random(seed)
        self.dropped = 0

    def offer(self, version: str, dimension: int, queries: Vectors, found: Sequence[Sequence[Candidate]]) -> None:
        """Called with every batch's candidates; keeps a ``share`` of the posts that had dense candidates."""
        for qi, candidates in enumerate(found):
            if self._random.random() >= self.share:
                continue
            dense = sorted((c for c in candidates if c.dense_rank is not None), key=lambda c: c.dense_rank or 0)
            if not dense:
                continue
            probe = Probe(version, dimension, np.asarray(queries[qi]), tuple(c.fact_check_id for c in dense[: self.k]))
            try:
                self._queue.put_nowait(probe)
            except asyncio.QueueFull:
                self.dropped += 1

    def recall(self, version: str) -> float | None:
        recent = self._recent.get(version)
        return float(np.mean(recent)) if recent else None

    async def check(self, probe: Probe) -> float:
        exact = await self.exact.exact_neighbours(probe.version, probe.dimension, probe.query, self.k)
        # Fewer than k from the index where the corpus holds k (ef_search below k) is lost recall too.
        value = recall_at_k(probe.approximate, exact)
        recent = self._recent.setdefault(probe.version, deque(maxlen=self._window))
        recent.append(value)
        if self._on_recall is not None:
            self._on_recall(probe.version, value, float(np.mean(recent)))
        return value

    async def run(self) -> None:
        while True:
            probe = await self._queue.get()
            try:
                await self.check(probe)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failed probe is a missing sample, never a worker fault
                log.debug("recall probe failed: %r", exc)
