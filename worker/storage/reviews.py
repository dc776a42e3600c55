"""The moderators' queue's SQL: review items, claims, verdicts in their undo window, the audit.

Why it exists: several console processes serve the same moderators, so everything two of them
must agree on lives here, in one transaction each: an item is claimed by one browser session
at a time (a lease that ends on its own), a verdict needs the claim, and verdicts wait in an
outbox (``console_verdicts``) until their undo window closes and a sender publishes them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from worker.domain import TIER_RANK, ClaimLost, PendingVerdict, QueueFilter, ReviewItem, VerdictKind
from worker.storage.db import Part
from worker.storage.verdicts import REVIEW_CHANNEL, record_verdicts, undo_verdicts, write_audit
from worker.wire import DeadLetter, MatchResult

"""NOTIFY channel: a review item was added or changed (payload: the post id)."""

_RANK_TIER = {rank: tier for tier, rank in TIER_RANK.items()}
ITEM_COLUMNS = (
    "post_id, result, text, lang, platform, model_version, tier_rank, probability, published_at,"
    " status, claimed_by, claimed_until, cluster_id"
)


def safe_preview(value: bytes, chars: int) -> str:
    """The start of a value as printable text: undecodable bytes become U+FFFD, control
    characters (NUL included, which Postgres refuses) become spaces."""
    text = value[: chars * 4].decode("utf-8", errors="replace")[:chars]
    return "".join(c if c.isprintable() else " " for c in text)


def review_item(row: dict[str, Any]) -> ReviewItem:
    return ReviewItem(
        post_id=row["post_id"],
        result=row["result"],
        text=row["text"],
        lang=row["lang"],
        platform=row["platform"],
        model_version=row["model_version"],
        tier=_RANK_TIER[row["tier_rank"]],  # type: ignore[arg-type]
        probability=row["probability"],
        published_at=row["published_at"],
        status=row["status"],
        claimed_by=row["claimed_by"],
        claimed_until=row["claimed_until"],
        cluster_id=row["cluster_id"],
    )


def review_row(result: MatchResult) -> tuple[Any, ...] | None:
    """The review item of a result, or None when no match reached a tier (nothing to review)."""
    tiered = [m for m in result.matches if m.tier is not None]
    if not tiered:
        return None
    best = min(tiered, key=lambda m: (TIER_RANK[m.tier or "suggestion"], -(m.probability or 0.0)))
    return (
        result.post_id,
        Jsonb(json.loads(result.model_dump_json())),
        result.text,
        result.lang,
        result.platform,
        result.model_version,
        TIER_RANK[best.tier or "suggestion"],
        best.probability,
        [m.fact_check_id for m in result.matches],
        result.processed_at,
        result.cluster_id,
    )


def queue_where(filters: QueueFilter, session_id: str | None) -> tuple[sql.Composable, list[Any]]:
    """The open items a session may see: unclaimed, claimed by itself, or whose lease ended."""
    clauses: list[sql.Composable] = [sql.SQL("status = 'open'")]
    params: list[Any] = []
    if session_id is not None:
        clauses.append(sql.SQL("(claimed_until IS NULL OR claimed_until < now() OR claim_session = %s)"))
        params.append(session_id)
    for column, value in (
        ("lang", filters.lang),
        ("platform", filters.platform),
        ("model_version", filters.model_version),
    ):
        if value is not None:
            clauses.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
            params.append(value)
    if filters.tier is not None:
        clauses.append(sql.SQL("tier_rank = %s"))
        params.append(TIER_RANK[filters.tier])
    if filters.fact_check_id is not None:
        clauses.append(sql.SQL("fact_check_ids @> ARRAY[%s]::text[]"))
        params.append(filters.fact_check_id)
    return sql.SQL(" AND ").join(clauses), params


class Reviews(Part):
    """``review_items``, ``console_verdicts`` and ``console_audit``."""

    async def add_results(self, results: Sequence[MatchResult]) -> int:
        """Add one item per result with a tiered match; returns how many were new or changed.

        Idempotent: a redelivered result rewrites its row with the same values, and a post
        already decided is never reopened by a later result.
        """
        rows = [row for row in map(review_row, results) if row is not None]
        if not rows:
            return 0
        async with self.pool.connection() as conn, conn.transaction():
            changed = 0
            for row in rows:
                cur = await conn.execute(
                    "INSERT INTO review_items (post_id, result, text, lang, platform, model_version, tier_rank,"
                    " probability, fact_check_ids, published_at, cluster_id)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (post_id) DO UPDATE SET result = EXCLUDED.result, text = EXCLUDED.text,"
                    " lang = EXCLUDED.lang, platform = EXCLUDED.platform, model_version = EXCLUDED.model_version,"
                    " tier_rank = EXCLUDED.tier_rank, probability = EXCLUDED.probability,"
                    " fact_check_ids = EXCLUDED.fact_check_ids, published_at = EXCLUDED.published_at,"
                    " cluster_id = EXCLUDED.cluster_id"
                    " WHERE review_items.status = 'open' AND review_items.result IS DISTINCT FROM EXCLUDED.result",
                    row,
                )
                if cur.rowcount:
                    changed += 1
                    await conn.execute("SELECT pg_notify(%s, %s)", (REVIEW_CHANNEL, row[0]))
            return changed

    async def queue(
        self, filters: QueueFilter, session_id: str | None, *, limit: int = 50, offset: int = 0
    ) -> list[ReviewItem]:
        """Open items in the order a human should see them.

        A match before a suggestion, the surer first, the older first."""
        where, params = queue_where(filters, session_id)
        query = sql.SQL(
            "SELECT {cols} FROM review_items WHERE {where}"
            " ORDER BY tier_rank, probability DESC NULLS LAST, published_at, post_id LIMIT %s OFFSET %s"
        ).format(cols=sql.SQL(ITEM_COLUMNS), where=where)
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(query, [*params, limit, offset])
            return [review_item(r) for r in await cur.fetchall()]

    async def counts(self, filters: QueueFilter, session_id: str | None) -> dict[str, dict[str, int]]:
        """Items per value of each filter (within the other filters' choice), plus the total."""
        where, params = queue_where(filters, session_id)
        query = sql.SQL(
            "SELECT 'lang' AS facet, coalesce(lang, 'und') AS value, count(*) FROM review_items WHERE {w} GROUP BY 2"
            " UNION ALL SELECT 'tier', CASE tier_rank WHEN 0 THEN 'match' ELSE 'suggestion' END, count(*)"
            "  FROM review_items WHERE {w} GROUP BY 2"
            " UNION ALL SELECT 'platform', coalesce(platform, ''), count(*) FROM review_items WHERE {w} GROUP BY 2"
            " UNION ALL SELECT 'model_version', model_version, count(*) FROM review_items WHERE {w} GROUP BY 2"
            " UNION ALL (SELECT 'fact_check', fc, count(*) FROM review_items, unnest(fact_check_ids) AS fc"
            "  WHERE {w} GROUP BY 2 ORDER BY 3 DESC LIMIT 20)"
        ).format(w=where)
        counts: dict[str, dict[str, int]] = {"total": {"": 0}}
        async with self.pool.connection() as conn:
            cur = await conn.execute(query, params * 5)
            for facet, value, n in await cur.fetchall():
                counts.setdefault(facet, {})[value] = int(n)
        counts["total"][""] = sum(counts.get("tier", {}).values())
        return counts

    async def depth(self) -> int:
        """Open items nobody holds: what the queue badge shows."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM review_items WHERE status = 'open'"
                " AND (claimed_until IS NULL OR claimed_until < now())"
            )
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def item(self, post_id: str) -> ReviewItem | None:
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                sql.SQL("SELECT {} FROM review_items WHERE post_id = %s").format(sql.SQL(ITEM_COLUMNS)), (post_id,)
            )
            row = await cur.fetchone()
        return review_item(row) if row else None

    async def claim(self, post_id: str, user: str, session_id: str, lease_s: float) -> ReviewItem | None:
        """Hold ``post_id`` for this session for ``lease_s`` (renewed when it holds it already).

        None when another session holds it or it is decided: two moderators never work one post.
        """
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                sql.SQL(
                    "UPDATE review_items SET claimed_by = %s, claim_session = %s,"
                    " claimed_until = now() + make_interval(secs => %s)"
                    " WHERE post_id = %s AND status = 'open'"
                    " AND (claimed_until IS NULL OR claimed_until < now() OR claim_session = %s)"
                    " RETURNING {}"
                ).format(sql.SQL(ITEM_COLUMNS)),
                (user, session_id, lease_s, post_id, session_id),
            )
            row = await cur.fetchone()
            if row is not None:
                await conn.execute("SELECT pg_notify(%s, %s)", (REVIEW_CHANNEL, post_id))
        return review_item(row) if row else None

    async def release(self, post_id: str, session_id: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE review_items SET claimed_by = NULL, claim_session = NULL, claimed_until = NULL"
                " WHERE post_id = %s AND claim_session = %s",
                (post_id, session_id),
            )
            await conn.execute("SELECT pg_notify(%s, %s)", (REVIEW_CHANNEL, post_id))

    async def add_verdicts(
        self,
        post_id: str,
        verdicts: Sequence[tuple[str, VerdictKind, dict[str, Any]]],
        *,
        user: str,
        session_id: str,
        undo_s: float,
        note: str | None = None,
    ) -> list[PendingVerdict]:
        """Record ``(fact_check_id, verdict, feedback record)`` for a claimed item, each with its audit row.

        The item is done once a match is confirmed or every match it showed has a verdict
        (a lease that ran out still counts while no other session took the item). Raises :class:`ClaimLost`
        when the session does not hold the item's claim.
        """
        async with self.pool.connection() as conn, conn.transaction():
            pending = await record_verdicts(conn, post_id, verdicts, user, session_id, undo_s, note)
        if pending is None:
            raise ClaimLost(f"post {post_id} is not claimed by this session")
        return pending

    async def undo(self, post_id: str, *, user: str, session_id: str) -> int:
        """Withdraw this session's verdicts on ``post_id`` still inside their window; the item opens again, claimed."""
        async with self.pool.connection() as conn, conn.transaction():
            return await undo_verdicts(conn, post_id, user, session_id)

    async def send_due(self, send: Callable[[list[dict[str, Any]]], Awaitable[None]], *, limit: int = 100) -> int:
        """Publish verdicts whose undo window closed (``send`` publishes and raises on failure).

        Rows are locked while sent, so several console processes never send one twice; a failed
        send leaves them pending for the next round.
        """
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT id, feedback FROM console_verdicts WHERE state = 'pending' AND send_after <= now()"
                " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
                (limit,),
            )
            due = await cur.fetchall()
            if not due:
                return 0
            await send([feedback for _, feedback in due])
            await conn.execute(
                "UPDATE console_verdicts SET state = 'sent', sent_at = now() WHERE id = ANY(%s)",
                ([vid for vid, _ in due],),
            )
            return len(due)

    async def verdicts(self, post_id: str) -> list[PendingVerdict]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT id, post_id, fact_check_id, verdict, state, send_after FROM console_verdicts"
                " WHERE post_id = %s ORDER BY id",
                (post_id,),
            )
            return [PendingVerdict(*row) for row in await cur.fetchall()]

    async def audit(
        self,
        user: str,
        session_id: str | None,
        action: str,
        *,
        post_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        async with self.pool.connection() as conn:
            await write_audit(conn, user, session_id, action, post_id, None, None, None, detail)

    async def audit_log(self, post_id: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "SELECT * FROM console_audit WHERE %s::text IS NULL OR post_id = %s ORDER BY id DESC LIMIT %s",
                (post_id, post_id, limit),
            )
            return list(await cur.fetchall())

    async def add_dead_letters(self, letters: Sequence[DeadLetter], preview_chars: int = 300) -> int:
        """Keep what the console shows of each dead letter (a printable preview); a redelivered one is a no-op."""
        if not letters:
            return 0
        rows = [
            (
                d.topic,
                d.partition,
                d.offset,
                d.reason,
                d.error[:2000],
                safe_preview(d.original_value(), preview_chars),
                d.value_size,
                d.failed_at,
            )
            for d in letters
        ]
        async with self.pool.connection() as conn:
            cur = conn.cursor()
            await cur.executemany(
                'INSERT INTO console_dead_letters (topic, partition, "offset", reason, error, preview, value_size,'
                " failed_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                rows,
            )
        return len(rows)

    async def dead_letters(self, limit: int = 50) -> tuple[dict[str, int], list[dict[str, Any]]]:
        """Dead letters per reason, and the most recent ones."""
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT reason, count(*) FROM console_dead_letters GROUP BY 1 ORDER BY 2 DESC")
            counts = {str(r): int(n) for r, n in await cur.fetchall()}
            dict_cur = conn.cursor(row_factory=dict_row)
            await dict_cur.execute("SELECT * FROM console_dead_letters ORDER BY failed_at DESC LIMIT %s", (limit,))
            return counts, list(await dict_cur.fetchall())

    def changes(self) -> AsyncIterator[str]:
        """The post id of every item added or changed, as Postgres announces it, after an ``""`` once
        listening (anything may have changed before: resync); raises when the connection breaks."""
        return self.db.payloads(REVIEW_CHANNEL)
