"""How often the moderators agree with each tier: verdicts counted by the tier they were shown in.

A verdict is on one fact-check shown for one post; the tier is the one that match had in the
post's result (``review_items.result``), the language is the post's (``und`` when unknown). An
undone verdict never counts; a pending one (inside its undo window) does. What the console turns
into its live precision per tier and language (:mod:`worker.console.precision`).
"""

from __future__ import annotations

from datetime import datetime

from worker.domain import VerdictTally
from worker.storage.db import Part


class VerdictStats(Part):
    """``console_verdicts`` joined with the matches they judged."""

    async def tallies(self, since: datetime) -> list[VerdictTally]:
        """Confirmations and rejections given since ``since``, per tier shown and post language."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT m->>'tier', coalesce(r.lang, 'und'),"
                " count(*) FILTER (WHERE v.verdict = 'confirm'), count(*) FILTER (WHERE v.verdict = 'reject')"
                " FROM console_verdicts v JOIN review_items r ON r.post_id = v.post_id"
                " CROSS JOIN LATERAL jsonb_array_elements(r.result->'matches') m"
                " WHERE v.state <> 'undone' AND v.created_at >= %s"
                " AND m->>'fact_check_id' = v.fact_check_id AND m->>'tier' IN ('match', 'suggestion')"
                " GROUP BY 1, 2 ORDER BY 1, 2",
                (since,),
            )
            rows = await cur.fetchall()
        return [VerdictTally(tier, lang, int(yes), int(no)) for tier, lang, yes, no in rows]
