"""Trending fact-checks' SQL: posts per fact-check and hour, and the trending list read from them.

The counts (``fact_check_hits``) are written by :class:`worker.storage.clusters.Clusters` in the
transaction that puts a post in its claim cluster, so each post counts once however often it is
delivered. This part reads them: per fact-check, posts in the last hour, day and week, by language
and platform, the last day hour by hour (what a sparkline draws), and a spike score against the
fact-check's own baseline.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from worker.domain import TrendingFactCheck
from worker.storage.db import Part

HOURS_PER_WEEK = 7 * 24


def spike_score(last_hour: int, last_week: int) -> float:
    """Posts in the last hour against the week's other hours: (last hour + 1) / (mean other hour + 1)."""
    baseline = (last_week - last_hour) / (HOURS_PER_WEEK - 1)
    return (last_hour + 1) / (baseline + 1)


class Trends(Part):
    """``fact_check_hits``, read as trending fact-checks."""

    async def trending(self, now: datetime, *, limit: int = 20, min_posts: int = 3) -> list[TrendingFactCheck]:
        """The fact-checks with at least ``min_posts`` posts in the day before ``now``, highest spike first."""
        hour = now.replace(minute=0, second=0, microsecond=0)
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT fact_check_id, sum(posts) FILTER (WHERE hour >= %(h)s)::bigint,"
                " sum(posts) FILTER (WHERE hour > %(h)s - interval '24 hours')::bigint, sum(posts)::bigint"
                " FROM fact_check_hits WHERE hour > %(h)s - interval '7 days' AND hour <= %(h)s"
                " GROUP BY fact_check_id"
                " HAVING coalesce(sum(posts) FILTER (WHERE hour > %(h)s - interval '24 hours'), 0) >= %(min)s",
                {"h": hour, "min": min_posts},
            )
            totals = {fc: (int(h1 or 0), int(d1 or 0), int(w or 0)) for fc, h1, d1, w in await cur.fetchall()}
            ranked = sorted(totals, key=lambda fc: (-spike_score(totals[fc][0], totals[fc][2]), -totals[fc][1], fc))
            top = ranked[:limit]
            cur = await conn.execute(
                "SELECT fact_check_id, hour, lang, platform, posts FROM fact_check_hits"
                " WHERE fact_check_id = ANY(%s) AND hour > %s - interval '24 hours' AND hour <= %s",
                (top, hour, hour),
            )
            rows = await cur.fetchall()
        return [self._trend(fc, totals[fc], [r for r in rows if r[0] == fc], hour) for fc in top]

    @staticmethod
    def _trend(fc: str, totals: tuple[int, int, int], rows: Sequence[Any], hour: datetime) -> TrendingFactCheck:
        langs: dict[str, int] = defaultdict(int)
        platforms: dict[str, int] = defaultdict(int)
        hourly = [0] * 24
        for _, at, lang, platform, posts in rows:
            langs[lang] += int(posts)
            platforms[platform] += int(posts)
            index = 23 - int((hour - at) / timedelta(hours=1))
            if 0 <= index < 24:
                hourly[index] += int(posts)
        last_hour, last_day, last_week = totals
        return TrendingFactCheck(
            fact_check_id=fc,
            last_hour=last_hour,
            last_day=last_day,
            last_week=last_week,
            spike=round(spike_score(last_hour, last_week), 3),
            langs=dict(langs),
            platforms=dict(platforms),
            hourly=hourly,
        )

    async def forget_hits(self, older_than_s: float) -> int:
        """Delete the counts of hours older than ``older_than_s``."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "DELETE FROM fact_check_hits WHERE hour < now() - make_interval(secs => %s)", (older_than_s,)
            )
            return cur.rowcount
