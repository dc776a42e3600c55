"""What the stream says, claim by claim: trending fact-checks and emerging claims, read in SQL.

The counts (``fact_check_hits``) are written by :class:`worker.storage.clusters.Clusters` in the
transaction that puts a post in its claim cluster, so each post counts once however often it is
delivered. This part reads them: per fact-check, posts in the last hour, day and week, by language
and platform, the last day hour by hour (what a sparkline draws), and a spike score against the
fact-check's own baseline. The emerging claims are the claim clusters of a model version that no
post matched a fact-check in (:mod:`worker.storage.clusters` keeps them), growing fastest first.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from worker.domain import EmergingClaim, TrendingFactCheck
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

    async def emerging(
        self, version: str, now: datetime, *, limit: int = 20, min_posts: int = 3, examples: int = 3
    ) -> list[EmergingClaim]:
        """Clusters of ``version`` that no fact-check matched, with ``min_posts`` or more in the day before
        ``now``, fastest growing (that day against the day before) and then largest first."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT c.id, c.size, c.first_seen, c.last_seen, c.langs, c.platforms, c.representative_text,"
                " count(*) FILTER (WHERE p.seen_at > %(now)s - interval '24 hours') AS last_day,"
                " count(*) FILTER (WHERE p.seen_at <= %(now)s - interval '24 hours') AS day_before"
                " FROM claim_clusters c JOIN post_clusters p ON p.cluster_id = c.id"
                " WHERE c.model_version = %(v)s AND c.fact_check_id IS NULL"
                " AND p.seen_at > %(now)s - interval '48 hours' AND p.seen_at <= %(now)s"
                " GROUP BY c.id HAVING count(*) FILTER (WHERE p.seen_at > %(now)s - interval '24 hours') >= %(min)s",
                {"v": version, "now": now, "min": min_posts},
            )
            rows = await cur.fetchall()
            growth = {int(r[0]): (int(r[7]) + 1) / (int(r[8]) + 1) for r in rows}
            rows = sorted(rows, key=lambda r: (-growth[int(r[0])], -int(r[7]), int(r[0])))[:limit]
            cur = await conn.execute(
                "SELECT cluster_id, text FROM (SELECT cluster_id, text, row_number() OVER"
                " (PARTITION BY cluster_id ORDER BY seen_at DESC, post_id) AS n FROM post_clusters"
                " WHERE cluster_id = ANY(%s) AND seen_at <= %s) latest WHERE n <= %s",
                ([int(r[0]) for r in rows], now, 10 * examples),
            )
            texts: dict[int, list[str]] = defaultdict(list)
            for cluster, text in await cur.fetchall():
                if text not in texts[cluster] and len(texts[cluster]) < examples:
                    texts[cluster].append(text)
        return [
            EmergingClaim(
                cluster_id=int(r[0]),
                size=int(r[1]),
                last_day=int(r[7]),
                day_before=int(r[8]),
                growth=round(growth[int(r[0])], 3),
                first_seen=r[2],
                last_seen=r[3],
                langs=dict(r[4]),
                platforms=dict(r[5]),
                representative=r[6],
                examples=texts[int(r[0])],
            )
            for r in rows
        ]

    async def report_turn(self, name: str, interval_s: float) -> bool:
        """True for exactly one caller per ``interval_s`` across the group: that worker publishes ``name``."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO claim_reports AS r (name, published_at) VALUES (%s, now())"
                " ON CONFLICT (name) DO UPDATE SET published_at = now()"
                " WHERE r.published_at <= now() - make_interval(secs => %s) RETURNING 1",
                (name, interval_s),
            )
            return cur.rowcount == 1

    async def forget_hits(self, older_than_s: float) -> int:
        """Delete the counts of hours older than ``older_than_s``."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "DELETE FROM fact_check_hits WHERE hour < now() - make_interval(secs => %s)", (older_than_s,)
            )
            return cur.rowcount
