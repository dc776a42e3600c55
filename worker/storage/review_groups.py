"""The moderators' queue by claim cluster: a cluster's open posts listed as one entry, claimed
together, and a verdict recorded for each of them in one transaction.

Why it exists: a viral claim puts hundreds of copies in the queue; a moderator who has seen one
has seen them all. Each post keeps its own item, claim and verdicts (one Feedback record per
post, so the trainer still learns per post); what is shared is the page and the transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from psycopg import sql
from psycopg.rows import dict_row

from worker.domain import TIER_RANK, ClaimLost, PendingVerdict, QueueFilter, ReviewGroup, ReviewItem, VerdictKind
from worker.storage.db import Part
from worker.storage.reviews import ITEM_COLUMNS, queue_where, review_item
from worker.storage.verdicts import REVIEW_CHANNEL, record_verdicts, undo_verdicts, write_audit

_ORDER = sql.SQL("ORDER BY tier_rank, probability DESC NULLS LAST, published_at, post_id")


class ReviewGroups(Part):
    """``review_items`` seen by claim cluster (``cluster_id``, migration 0016)."""

    async def queue(
        self, filters: QueueFilter, session_id: str | None, *, limit: int = 50, chunk: int = 200, rounds: int = 5
    ) -> list[ReviewGroup]:
        """Up to ``limit`` entries in the queue's order, each cluster once (at its first post).

        Reads the queue ``chunk`` rows at a time, leaving out clusters already listed, for at
        most ``rounds`` reads (a queue of one huge cluster then still lists what follows it);
        then counts each listed cluster's open posts in one statement.
        """
        where, params = queue_where(filters, session_id)
        firsts: list[ReviewItem] = []
        seen_clusters: list[int] = []
        seen_posts: list[str] = []
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            for _ in range(rounds):
                query = sql.SQL(
                    "SELECT {cols} FROM review_items WHERE {where}"
                    " AND (cluster_id IS NULL OR NOT cluster_id = ANY(%s)) AND NOT post_id = ANY(%s) {order} LIMIT %s"
                ).format(cols=sql.SQL(ITEM_COLUMNS), where=where, order=_ORDER)
                await cur.execute(query, [*params, seen_clusters, seen_posts, chunk])
                rows = [review_item(r) for r in await cur.fetchall()]
                for item in rows:
                    seen_posts.append(item.post_id)
                    if item.cluster_id is None or item.cluster_id not in seen_clusters:
                        firsts.append(item)
                        if item.cluster_id is not None:
                            seen_clusters.append(item.cluster_id)
                    if len(firsts) == limit:
                        break
                if len(firsts) == limit or len(rows) < chunk:
                    break
            sizes: dict[int, int] = {}
            if seen_clusters:
                count = sql.SQL(
                    "SELECT cluster_id, count(*) FROM review_items WHERE {where} AND cluster_id = ANY(%s) GROUP BY 1"
                ).format(where=where)
                counted = await conn.execute(count, [*params, seen_clusters])
                sizes = {int(c): int(n) for c, n in await counted.fetchall()}
        return [ReviewGroup(i, sizes.get(i.cluster_id, 1) if i.cluster_id is not None else 1) for i in firsts]

    async def claim(
        self,
        cluster_id: int,
        user: str,
        session_id: str,
        lease_s: float,
        *,
        filters: QueueFilter | None = None,
        post_ids: Sequence[str] | None = None,
        limit: int = 100,
    ) -> list[ReviewItem]:
        """Hold the cluster's open posts this session may take (within ``filters``; only
        ``post_ids`` when given, which renews a page's claims without taking posts it never
        showed), at most ``limit``, in the queue's order. Empty when none is left to take."""
        where, params = queue_where(filters or QueueFilter(), session_id)
        only = sql.SQL(" AND post_id = ANY(%s)") if post_ids is not None else sql.SQL("")
        extra = [list(post_ids)] if post_ids is not None else []
        query = sql.SQL(
            "WITH taken AS (SELECT post_id FROM review_items WHERE {where} AND cluster_id = %s{only} {order}"
            "  LIMIT %s FOR UPDATE SKIP LOCKED)"
            " UPDATE review_items r SET claimed_by = %s, claim_session = %s,"
            "  claimed_until = now() + make_interval(secs => %s)"
            " FROM taken WHERE r.post_id = taken.post_id RETURNING r.*"
        ).format(where=where, only=only, order=_ORDER)
        async with self.pool.connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(query, [*params, cluster_id, *extra, limit, user, session_id, lease_s])
            items = [review_item(r) for r in await cur.fetchall()]
            for item in items:
                await conn.execute("SELECT pg_notify(%s, %s)", (REVIEW_CHANNEL, item.post_id))
        return sorted(items, key=lambda i: (TIER_RANK[i.tier], -(i.probability or 0.0), i.published_at, i.post_id))

    async def add_verdicts(
        self,
        cluster_id: int,
        verdicts: Mapping[str, Sequence[tuple[str, VerdictKind, dict[str, Any]]]],
        *,
        user: str,
        session_id: str,
        undo_s: float,
        note: str | None = None,
    ) -> list[PendingVerdict]:
        """Record each post's verdicts (as :meth:`Reviews.add_verdicts` does for one) in one transaction.

        A post this session no longer holds (its lease ran out and another session took it, or
        it was decided) is left out; :class:`ClaimLost` when it holds none of them. One audit
        row says the verdict was given to the cluster.
        """
        pending: list[PendingVerdict] = []
        async with self.pool.connection() as conn, conn.transaction():
            held = 0
            for post_id, records in verdicts.items():
                done = await record_verdicts(conn, post_id, records, user, session_id, undo_s, note)
                if done is not None:
                    held += 1
                    pending.extend(done)
            if not held:
                raise ClaimLost(f"this session holds none of cluster {cluster_id}'s posts")
            detail = {"cluster_id": cluster_id, "posts": held, "verdicts": len(pending)}
            await write_audit(conn, user, session_id, "cluster_verdict", None, None, None, note, detail)
        return pending

    async def undo(self, post_ids: Sequence[str], *, user: str, session_id: str) -> int:
        """Withdraw this session's verdicts on ``post_ids`` still in their window, in one transaction."""
        async with self.pool.connection() as conn, conn.transaction():
            return sum([await undo_verdicts(conn, post_id, user, session_id) for post_id in post_ids])

    async def release(self, post_ids: Sequence[str], session_id: str) -> None:
        """Give back the posts of ``post_ids`` this session holds."""
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "UPDATE review_items SET claimed_by = NULL, claim_session = NULL, claimed_until = NULL"
                " WHERE post_id = ANY(%s) AND claim_session = %s RETURNING post_id",
                (list(post_ids), session_id),
            )
            for (post_id,) in await cur.fetchall():
                await conn.execute("SELECT pg_notify(%s, %s)", (REVIEW_CHANNEL, post_id))
