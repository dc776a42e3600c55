"""Noticing a fact-check that suddenly matches far too much.

A generic claim ("this is false"), a bad edit or an encoding bug can make one fact-check the
best match of everything. Each worker keeps a sliding window of its recent posts and, per
fact-check, how many of them showed it in a tier; a fact-check is flagged when its
share of the window passes ``overmatch_share``, with at least ``overmatch_min_matches``
matches, and is ``overmatch_factor`` times its own baseline (its share over earlier windows,
so a fact-check about this week's viral rumour that always matched a lot is judged against
itself). What follows a flag (metrics, logs, a quarantine in the database) is the caller's.
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


@dataclass(frozen=True)
class Flag:
    fact_check_id: str
    share: float
    baseline: float
    matches: int
    window: int

    def reason(self) -> str:
        return (
            f"matched {self.matches} of the last {self.window} posts ({self.share:.1%}),"
            f" {self.share / self.baseline:.0f}x its baseline of {self.baseline:.2%}"
            if self.baseline > 0
            else f"matched {self.matches} of the last {self.window} posts ({self.share:.1%}) with no baseline"
        )


class OverMatchWatch:
    def __init__(self, config: OverMatchConfig) -> None:
        self.config = config
        self._window: deque[frozenset[str]] = deque()
        self._counts: Counter[str] = Counter()
        # Matches and posts seen before the current window: the baseline.
        self._earlier: Counter[str] = Counter()
        self._earlier_posts = 0
        self._flagged: set[str] = set()

    def observe(self, matched: Iterable[frozenset[str]]) -> list[Flag]:
        """Record each post's tiered fact-checks; the newly flagged fact-checks."""
        touched: set[str] = set()
        for ids in matched:
            self._window.append(ids)
            self._counts.update(ids)
            touched |= ids
            if len(self._window) > self.config.window:
                old = self._window.popleft()
                self._counts.subtract(old)
                self._earlier.update(old)
                self._earlier_posts += 1
        flags = []
        posts = len(self._window)
        for fc in touched:
            count = self._counts[fc]
            share = count / posts
            baseline = self._earlier[fc] / self._earlier_posts if self._earlier_posts else 0.0
            if (
                fc not in self._flagged
                and count >= self.config.min_matches
                and share >= self.config.share
                and share >= self.config.factor * baseline
            ):
                self._flagged.add(fc)
                flags.append(Flag(fc, share, baseline, count, posts))
        return flags

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

    async def observe(self, matched: Iterable[frozenset[str]]) -> list[Flag]:
        flags = self.watch.observe(matched)
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
