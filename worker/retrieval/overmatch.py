"""Noticing a fact-check that suddenly matches far too much, told apart from a claim going viral.

A generic claim ("this is false"), a bad edit or an encoding bug can make one fact-check the
best match of everything. A viral claim makes one fact-check the best match of thousands of
posts too, but they all make the same claim: that is a trend, and quarantining its fact-check
would withhold it at the moment it matters most. So the watch counts *claims* (claim clusters,
:mod:`worker.core.clusters`), not posts: each worker keeps a sliding window of its recent posts
and, per fact-check, how many distinct clusters among them showed it in a tier; a fact-check is
flagged when that share of the window's clusters passes ``overmatch_share``, with at least
``overmatch_min_matches`` clusters, and is ``overmatch_factor`` times its own baseline (its share
over earlier windows, so a fact-check that always matched many claims is judged against itself).
A post without a cluster (clustering off) counts as a claim of its own, which is counting posts.
What follows a flag (metrics, logs, a quarantine in the database) is the caller's.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OverMatchConfig:
    window: int
    share: float
    factor: float
    min_matches: int


Shown = tuple[frozenset[str], str | None]
"""One answered post as the watch sees it: the fact-checks it was shown in a tier, and its claim cluster."""


@dataclass(frozen=True)
class Flag:
    fact_check_id: str
    share: float
    baseline: float
    matches: int
    window: int

    def reason(self) -> str:
        return (
            f"matched {self.matches} of the {self.window} claims of the last posts ({self.share:.1%}),"
            f" {self.share / self.baseline:.0f}x its baseline of {self.baseline:.2%}"
            if self.baseline > 0
            else f"matched {self.matches} of the {self.window} claims of the last posts ({self.share:.1%})"
            " with no baseline"
        )


class OverMatchWatch:
    def __init__(self, config: OverMatchConfig) -> None:
        self.config = config
        self._window: deque[tuple[frozenset[str], str]] = deque()
        # Posts in the window per cluster, and per (fact-check, cluster): a count reaching zero
        # means the cluster (or the fact-check's share of it) left the window.
        self._clusters: Counter[str] = Counter()
        self._pairs: Counter[tuple[str, str]] = Counter()
        self._counts: Counter[str] = Counter()  # fact-check -> distinct clusters in the window
        # Clusters and (fact-check, cluster) pairs that left the window: the baseline.
        self._earlier: Counter[str] = Counter()
        self._earlier_clusters = 0
        self._flagged: set[str] = set()
        self._posts = 0

    def observe(self, shown: Iterable[Shown]) -> list[Flag]:
        """Record each post's tiered fact-checks and cluster; the newly flagged fact-checks."""
        touched: set[str] = set()
        for ids, cluster in shown:
            self._posts += 1
            claim = cluster if cluster is not None else f"post:{self._posts}"
            self._enter(ids, claim)
            touched |= ids
            if len(self._window) > self.config.window:
                self._leave(*self._window.popleft())
        flags = []
        claims = len(self._clusters)
        for fc in touched:
            count = self._counts[fc]
            share = count / claims
            baseline = self._earlier[fc] / self._earlier_clusters if self._earlier_clusters else 0.0
            if (
                fc not in self._flagged
                and count >= self.config.min_matches
                and share >= self.config.share
                and share >= self.config.factor * baseline
            ):
                self._flagged.add(fc)
                flags.append(Flag(fc, share, baseline, count, claims))
        return flags

    def _enter(self, ids: frozenset[str], claim: str) -> None:
        self._window.append((ids, claim))
        self._clusters[claim] += 1
        for fc in ids:
            self._pairs[(fc, claim)] += 1
            if self._pairs[(fc, claim)] == 1:
                self._counts[fc] += 1

    def _leave(self, ids: frozenset[str], claim: str) -> None:
        self._clusters[claim] -= 1
        if self._clusters[claim] == 0:
            del self._clusters[claim]
            self._earlier_clusters += 1
        for fc in ids:
            self._pairs[(fc, claim)] -= 1
            if self._pairs[(fc, claim)] == 0:
                del self._pairs[(fc, claim)]
                self._counts[fc] -= 1
                self._earlier[fc] += 1

    def cleared(self, fact_check_id: str) -> None:
        """A cleared fact-check may be flagged again: against a baseline that by then holds the
        rate the moderator accepted, so only a new jump flags it."""
        self._flagged.discard(fact_check_id)


class QuarantineStore(Protocol):
    async def quarantined(self) -> frozenset[str]: ...
    async def quarantine(self, fact_check_id: str, reason: str, flagged_by: str) -> bool: ...


class QuarantineGuard:
    """The retriever's view of quarantines: the shared list (re-read every ``refresh_s``) and
    this worker's over-match watch, which adds to it when ``enforce`` is set."""

    def __init__(
        self,
        store: QuarantineStore,
        watch: OverMatchWatch,
        *,
        refresh_s: float,
        enforce: bool,
        worker_id: str,
        on_flag: Callable[[Flag], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.watch = watch
        self.refresh_s = refresh_s
        self.enforce = enforce
        self.worker_id = worker_id
        self.on_flag = on_flag
        self.clock = clock
        self._ids: frozenset[str] = frozenset()
        self._read_at: float | None = None

    async def current(self) -> frozenset[str]:
        now = self.clock()
        if self._read_at is None or now - self._read_at >= self.refresh_s:
            previous = self._ids
            self._ids = await self.store.quarantined()
            self._read_at = now
            for fc in previous - self._ids:
                self.watch.cleared(fc)
        return self._ids

    async def observe(self, shown: Iterable[Shown]) -> list[Flag]:
        flags = self.watch.observe(shown)
        for flag in flags:
            log.warning(
                "fact-check %s over-matches: %s",
                flag.fact_check_id,
                flag.reason(),
                extra={"fact_check_id": flag.fact_check_id, "quarantined": self.enforce},
            )
            if self.on_flag:
                self.on_flag(flag)
            if self.enforce:
                await self.store.quarantine(flag.fact_check_id, flag.reason(), self.worker_id)
                self._ids = self._ids | {flag.fact_check_id}
        return flags
