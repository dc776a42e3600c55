"""Shadow evaluation's SQL: which version runs in shadow, what it would have answered, and the
report the gate and ``factmatch models`` read."""

from __future__ import annotations

from collections.abc import Sequence

from worker.domain import NOTIFY_CHANNEL, ShadowReport, ShadowRow
from worker.storage.db import Part


class ShadowResults(Part):
    """The shadow flag on ``model_versions`` and ``shadow_results``."""

    async def set_shadow(self, version: str | None) -> None:
        """Make ``version`` the one shadow version (None: none); workers hear it on the model channel."""
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("UPDATE model_versions SET shadow = false WHERE shadow")
            if version is not None:
                cur = await conn.execute(
                    "UPDATE model_versions SET shadow = true"
                    " WHERE version = %s AND status = 'ready' AND indexed_at IS NOT NULL",
                    (version,),
                )
                if cur.rowcount != 1:
                    raise RuntimeError(f"version {version} is not a ready, fully indexed version")
            await conn.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, f"shadow:{version or ''}"))

    async def shadow_version_name(self) -> str | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT version FROM model_versions WHERE shadow")
            row = await cur.fetchone()
        return str(row[0]) if row else None

    async def record_shadow(self, rows: Sequence[ShadowRow]) -> None:
        if not rows:
            return
        columns = list(ShadowRow.__dataclass_fields__)
        async with self.pool.connection() as conn:
            await conn.cursor().executemany(
                f"INSERT INTO shadow_results ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})",
                [tuple(getattr(r, c) for c in columns) for r in rows],
            )

    async def shadow_report(self, version: str) -> ShadowReport:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*), avg((active_fact_check_id IS NOT DISTINCT FROM shadow_fact_check_id)::int)"
                " FROM shadow_results WHERE model_version = %s",
                (version,),
            )
            posts, agreement = await cur.fetchone() or (0, None)
            cur = await conn.execute(
                "SELECT coalesce(lang, 'und'), avg(shadow_score - active_score) FROM shadow_results"
                " WHERE model_version = %s AND shadow_score IS NOT NULL AND active_score IS NOT NULL GROUP BY 1",
                (version,),
            )
            shift = {str(lang): round(float(v), 6) for lang, v in await cur.fetchall()}
            # A verdict on a post's match judges whichever version put that fact-check at rank 1.
            cur = await conn.execute(
                "WITH v AS (SELECT DISTINCT ON (post_id, fact_check_id) post_id, fact_check_id, verdict"
                "           FROM match_feedback ORDER BY post_id, fact_check_id, created_at DESC)"
                " SELECT count(vs.verdict), avg((vs.verdict = 'confirm')::int), avg((va.verdict = 'confirm')::int)"
                " FROM shadow_results s"
                " LEFT JOIN v vs ON vs.post_id = s.post_id AND vs.fact_check_id = s.shadow_fact_check_id"
                " LEFT JOIN v va ON va.post_id = s.post_id AND va.fact_check_id = s.active_fact_check_id"
                " WHERE s.model_version = %s",
                (version,),
            )
            judged, precision, active_precision = await cur.fetchone() or (0, None, None)
        return ShadowReport(
            version,
            int(posts or 0),
            round(float(agreement), 6) if agreement is not None else None,
            shift,
            int(judged or 0),
            round(float(precision), 6) if precision is not None else None,
            round(float(active_precision), 6) if active_precision is not None else None,
        )
