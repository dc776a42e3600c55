"""Publishing what the stream says: the trending fact-checks and the emerging claims, to their topics.

Every ``claims_report_interval_s`` each worker asks Postgres whose turn it is
(:meth:`worker.storage.trends.Trends.report_turn`); the one that gets it reads both lists and
publishes them (``topic_trending`` keyed ``trending``, ``topic_emerging`` keyed ``emerging``), so a
group publishes each report once per interval however many replicas it runs. A failed report is
logged and tried again at the next interval: downstream tools see the next one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from worker.settings import Settings
from worker.storage import Store
from worker.wire import EmergingClaim, EmergingClaims, TrendingFactCheck, TrendingFactChecks

log = logging.getLogger(__name__)

LIMIT = 50


async def trending_report(store: Store, now: datetime) -> TrendingFactChecks:
    """The trending fact-checks as the topic carries them: the store's counts with each claim, title and link."""
    rows = await store.trends.trending(now, limit=LIMIT)
    details = await store.candidates.details([r.fact_check_id for r in rows]) if rows else {}
    return TrendingFactChecks(
        at=now,
        fact_checks=[
            TrendingFactCheck(
                **asdict(r),
                claim=fc.claim if (fc := details.get(r.fact_check_id)) else None,
                title=fc.title if fc else None,
                url=fc.url if fc else None,
            )
            for r in rows
        ],
    )


async def emerging_report(store: Store, version: str, now: datetime) -> EmergingClaims:
    """The emerging claims as the topic carries them (the wire model has the store's fields)."""
    rows = await store.trends.emerging(version, now, limit=LIMIT)
    claims = [EmergingClaim(**asdict(r)) for r in rows]
    return EmergingClaims(at=now, model_version=version, claims=claims)


class ClaimReporter:
    """The runtime's background task that publishes both reports when it is this worker's turn."""

    def __init__(self, store: Store, broker: Any, settings: Settings) -> None:
        self.store = store
        self.broker = broker
        self.settings = settings

    async def publish(self, now: datetime | None = None) -> list[str]:
        """Publish each report whose turn this worker gets; the names of those published."""
        now = now or datetime.now(UTC)
        interval = self.settings.claims_report_interval_s
        published = []
        if await self.store.trends.report_turn("trending", interval):
            trending = await trending_report(self.store, now)
            await self.broker.publish(
                trending.model_dump_json().encode(), topic=self.settings.topic_trending, key=b"trending"
            )
            published.append("trending")
        active = await self.store.registry.active_version()
        if active is not None and await self.store.trends.report_turn("emerging", interval):
            emerging = await emerging_report(self.store, active.version, now)
            await self.broker.publish(
                emerging.model_dump_json().encode(), topic=self.settings.topic_emerging, key=b"emerging"
            )
            published.append("emerging")
        return published

    async def run(self) -> None:
        await every(self.settings.claims_report_interval_s, self.publish, "claim reports not published")


async def every(interval_s: float, step: Callable[[], Awaitable[object]], failed: str) -> None:
    """Run ``step`` every ``interval_s``, for ever: a failure is logged (``failed``: what it means)
    and the next interval tries again. A group job's loop (its turn is the step's to take)."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the next interval tries again
            log.warning("%s: %r", failed, exc)
