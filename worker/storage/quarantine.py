"""Quarantined fact-checks' SQL: shared by every worker.

The worker whose over-match watch flags a fact-check records it here; the others read it on
their next refresh; a moderator clears it (CLI or console).
"""

from __future__ import annotations

from typing import Any

from psycopg.rows import dict_row

from worker.storage.db import Part


class Quarantine(Part):
    """``quarantined_fact_checks``: fact-checks demoted a tier for over-matching."""

    async def quarantine(self, fact_check_id: str, reason: str, flagged_by: str) -> bool:
        """Withhold a fact-check from tier "match"; False when it already was."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO quarantined_fact_checks (fact_check_id, reason, flagged_by) VALUES (%s, %s, %s)"
                " ON CONFLICT (fact_check_id) WHERE cleared_at IS NULL DO NOTHING",
                (fact_check_id, reason[:2000], flagged_by),
            )
            return cur.rowcount == 1

    async def clear_quarantine(self, fact_check_id: str, cleared_by: str) -> bool:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE quarantined_fact_checks SET cleared_at = now(), cleared_by = %s"
                " WHERE fact_check_id = %s AND cleared_at IS NULL",
                (cleared_by, fact_check_id),
            )
            return cur.rowcount > 0

    async def quarantined(self) -> frozenset[str]:
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT fact_check_id FROM quarantined_fact_checks WHERE cleared_at IS NULL")
            return frozenset(r[0] for r in await cur.fetchall())

    async def quarantine_log(self) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute("SELECT * FROM quarantined_fact_checks ORDER BY flagged_at DESC")
            return list(await cur.fetchall())
