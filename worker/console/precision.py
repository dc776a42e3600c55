"""The console's metrics (:class:`ConsoleMetrics`), and the live precision of each tier: how
often the moderators confirm what it showed.

Per tier and post language over the last ``window_s`` (and over every language, ``lang="*"``):
confirmations over verdicts, from :class:`~worker.storage.interfaces.VerdictTallies`. Exposed on
the console's ``/metrics`` as ``factmatch_live_precision{tier,lang}``, beside
``factmatch_live_verdicts{tier,lang}`` (how many verdicts it rests on) and
``factmatch_tier_target_precision{tier}`` (what the tier was fitted to); the chart's
PrometheusRule alerts when a tier falls below its target on enough verdicts. Moderators judge
what they were shown, so this is the precision of published matches as people see them, the
figure a refit has to keep (issue 26's recalibration gates on it).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from worker.console.web import Recent
from worker.domain import Tier, VerdictTally
from worker.storage.interfaces import VerdictTallies

log = logging.getLogger(__name__)
EVERY_LANGUAGE = "*"


class ConsoleMetrics:
    """What the console exposes on /metrics."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.verdicts = Counter("factmatch_console_verdicts", "Verdicts given, by kind.", ["verdict"], registry=r)
        self.undos = Counter("factmatch_console_undos", "Verdicts undone in their window.", registry=r)
        self.queue_depth = Gauge("factmatch_console_queue_depth", "Open review items nobody holds.", registry=r)
        self.active_sessions = Gauge("factmatch_console_active_sessions", "Sessions seen in 15 min.", registry=r)
        self.first_verdict_seconds = Histogram(
            "factmatch_console_first_verdict_seconds",
            "From a result's publication to its item's first verdict.",
            buckets=(10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600),
            registry=r,
        )
        self.items_added = Counter("factmatch_console_items_added", "Review items added from results.", registry=r)


def live_precision(tallies: Sequence[VerdictTally]) -> dict[tuple[str, str], tuple[float, int]]:
    """(tier, lang) -> (share of verdicts that confirmed, verdicts), with every language as ``*``."""
    counts: dict[tuple[str, str], list[int]] = {}
    for t in tallies:
        for key in ((t.tier, t.lang), (t.tier, EVERY_LANGUAGE)):
            yes_no = counts.setdefault(key, [0, 0])
            yes_no[0] += t.confirmed
            yes_no[1] += t.rejected
    return {key: (yes / (yes + no), yes + no) for key, (yes, no) in counts.items() if yes + no}


class LivePrecision:
    """Keeps the gauges current: read at most once per ``ttl_s`` (when /metrics is scraped)."""

    def __init__(
        self,
        tallies: VerdictTallies,
        registry: CollectorRegistry,
        targets: Mapping[Tier, float],
        *,
        window_s: float,
        ttl_s: float = 60.0,
    ) -> None:
        self.tallies = tallies
        self.window_s = window_s
        self.recent = Recent(ttl_s)
        self.precision = Gauge(
            "factmatch_live_precision",
            "Share of the moderators' verdicts on a tier's matches that confirmed them, over the window.",
            ["tier", "lang"],
            registry=registry,
        )
        self.verdicts = Gauge(
            "factmatch_live_verdicts", "Verdicts the live precision rests on.", ["tier", "lang"], registry=registry
        )
        target = Gauge(
            "factmatch_tier_target_precision", "The precision a tier's cut was fitted to.", ["tier"], registry=registry
        )
        for tier, value in targets.items():
            target.labels(tier).set(value)
        self._shown: set[tuple[str, str]] = set()

    async def refresh(self) -> None:
        """Update the gauges if they are older than ``ttl_s``; a database error leaves them as they were."""
        try:
            await self.recent.get("tallies", self._read)
        except Exception as exc:  # the rest of /metrics must still answer
            log.warning("live precision not refreshed: %r", exc)

    async def _read(self) -> None:
        since = datetime.now(UTC) - timedelta(seconds=self.window_s)
        figures = live_precision(await self.tallies.tallies(since))
        for key in self._shown - figures.keys():  # a language with no verdict left in the window
            self.precision.remove(*key)
            self.verdicts.remove(*key)
        for (tier, lang), (share, n) in figures.items():
            self.precision.labels(tier, lang).set(share)
            self.verdicts.labels(tier, lang).set(n)
        self._shown = set(figures)
