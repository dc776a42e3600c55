"""Claim clusters' SQL: online clustering of the stream's posts, shared by every worker of the group.

A post joins the nearest cluster of its model version seen within the window whose centroid is at
least ``cut`` similar (cosine), else starts one; a repeat (a post answered with an earlier post's
answer, never encoded) joins its origin's cluster. Each assignment is kept (``post_clusters``), so
a redelivered post keeps its cluster and is not counted twice. A batch is assigned in one
transaction under a per-version advisory lock: workers of a group take turns for the few
milliseconds it takes, and the outcome does not depend on which worker assigns which batch. A
newly clustered post with a tiered match is also counted, once, for its fact-check's hour
(``fact_check_hits``, read by :mod:`worker.storage.trends`).
Centroids are the normalised running mean of their posts' vectors; each version's centroids have
a partial HNSW index, built with the version's fact-check index (:func:`worker.storage.embeddings.centroid_index`).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from worker.domain import ClusterPost, ClusterSummary
from worker.storage.db import Part
from worker.storage.embeddings import vector_type

SUMMARY = "id, size, first_seen, last_seen, langs, platforms, fact_check_id, abstained"


def _lock_id(version: str) -> int:
    return int.from_bytes(hashlib.sha1(f"clusters:{version}".encode()).digest()[:8], "big", signed=True)


def summary(row: dict[str, Any]) -> ClusterSummary:
    return ClusterSummary(
        cluster_id=int(row["id"]),
        size=int(row["size"]),
        first_seen=row["first_seen"],
        last_seen=row["last_seen"],
        langs=dict(row["langs"]),
        platforms=dict(row["platforms"]),
        fact_check_id=row["fact_check_id"],
        abstained=int(row["abstained"]),
    )


class Clusters(Part):
    """``claim_clusters`` and ``post_clusters``."""

    async def assign_clusters(
        self, version: str, dimension: int, posts: Sequence[ClusterPost], *, cut: float, window_s: float
    ) -> list[ClusterSummary]:
        """Each post's cluster after it joined (in order: a post may join one started earlier in the list)."""
        if not posts:
            return []
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_id(version),))
            # The nearest cluster seen within the window, even when the index's first candidates are older.
            await conn.execute("SET LOCAL hnsw.iterative_scan = strict_order")
            cur = await conn.execute(
                "SELECT post_id, cluster_id FROM post_clusters WHERE model_version = %s AND post_id = ANY(%s)",
                (version, sorted({p.post_id for p in posts} | {p.origin for p in posts if p.origin})),
            )
            known: dict[str, int] = {post: cluster for post, cluster in await cur.fetchall()}
            out: dict[str, ClusterSummary] = {}
            hits: dict[tuple[str, datetime, str, str], int] = defaultdict(int)
            for post in posts:
                if post.post_id not in known:
                    known[post.post_id] = await self._join(conn, version, dimension, post, known, cut, window_s)
                    if post.fact_check_id is not None:
                        hour = post.seen_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
                        hits[(post.fact_check_id, hour, post.lang or "und", post.platform or "unknown")] += 1
                out[post.post_id] = await self._summary(conn, known[post.post_id])
            await self._count_hits(conn, hits)
            return [out[p.post_id] for p in posts]

    @staticmethod
    async def _count_hits(conn: AsyncConnection[Any], hits: dict[tuple[str, datetime, str, str], int]) -> None:
        """Add the newly clustered posts to their fact-checks' hourly counts (the trends read them)."""
        if not hits:
            return
        fcs, hours, langs, platforms = (list(column) for column in zip(*hits, strict=True))
        await conn.execute(
            "INSERT INTO fact_check_hits (fact_check_id, hour, lang, platform, posts)"
            " SELECT * FROM unnest(%s::text[], %s::timestamptz[], %s::text[], %s::text[], %s::bigint[])"
            " ON CONFLICT (fact_check_id, hour, lang, platform)"
            " DO UPDATE SET posts = fact_check_hits.posts + excluded.posts",
            (fcs, hours, langs, platforms, list(hits.values())),
        )

    async def _join(
        self,
        conn: AsyncConnection[Any],
        version: str,
        dimension: int,
        post: ClusterPost,
        known: dict[str, int],
        cut: float,
        window_s: float,
    ) -> int:
        cluster = known.get(post.origin) if post.origin else None
        centroid: np.ndarray | None = None
        if cluster is None and post.vector is not None:
            found = await self._nearest(conn, version, dimension, post.vector, window_s)
            if found is not None and found[2] >= cut:
                cluster, size = found[0], found[3]
                mean = found[1] * size + np.asarray(post.vector, dtype=np.float32)
                centroid = (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
        if cluster is None:
            vector = None if post.vector is None else np.asarray(post.vector, dtype=np.float32)
            cur = await conn.execute(
                "INSERT INTO claim_clusters (model_version, centroid, first_seen, last_seen, representative_post_id,"
                " representative_text) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                (version, vector, post.seen_at, post.seen_at, post.post_id, post.text[:2000]),
            )
            row = await cur.fetchone()
            assert row is not None
            cluster = int(row[0])
        await self._count(conn, cluster, post, centroid)
        await conn.execute(
            "INSERT INTO post_clusters (model_version, post_id, cluster_id, seen_at, text, abstained)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (version, post.post_id, cluster, post.seen_at, post.text[:1000], post.fact_check_id is None),
        )
        return cluster

    async def _nearest(
        self, conn: AsyncConnection[Any], version: str, dimension: int, vector: Any, window_s: float
    ) -> tuple[int, np.ndarray, float, int] | None:
        vtype = sql.SQL(vector_type(dimension))
        query = sql.SQL(
            "SELECT id, centroid, 1 - (centroid::{t}({d}) <=> %s::{t}({d})) AS similarity, size FROM claim_clusters"
            " WHERE model_version = %s AND centroid IS NOT NULL AND updated_at > now() - make_interval(secs => %s)"
            " ORDER BY centroid::{t}({d}) <=> %s::{t}({d}) LIMIT 1"
        ).format(t=vtype, d=sql.Literal(dimension))
        v = np.asarray(vector, dtype=np.float32)
        cur = await conn.execute(query, (v, version, window_s, v))
        row = await cur.fetchone()
        if row is None:
            return None
        centroid = row[1].to_numpy() if hasattr(row[1], "to_numpy") else row[1]
        return int(row[0]), np.asarray(centroid, dtype=np.float32), float(row[2]), int(row[3])

    async def _count(
        self, conn: AsyncConnection[Any], cluster: int, post: ClusterPost, centroid: np.ndarray | None
    ) -> None:
        """Add one post to the cluster's counts (and move its centroid when the post brought a vector)."""
        await conn.execute(
            "UPDATE claim_clusters SET size = size + 1, updated_at = now(),"
            " centroid = coalesce(%(centroid)s::vector, centroid),"
            " first_seen = least(first_seen, %(seen)s::timestamptz),"
            " last_seen = greatest(last_seen, %(seen)s::timestamptz),"
            " langs = langs || jsonb_build_object(%(lang)s::text, coalesce((langs->>%(lang)s::text)::bigint, 0) + 1),"
            " platforms = platforms || jsonb_build_object(%(platform)s::text,"
            "     coalesce((platforms->>%(platform)s::text)::bigint, 0) + 1),"
            " abstained = abstained + (%(fc)s::text IS NULL)::int,"
            " fact_check_id = CASE WHEN %(fc)s::text IS NOT NULL AND coalesce(%(p)s::real, 0)"
            "     >= coalesce(best_probability, -1) THEN %(fc)s::text ELSE fact_check_id END,"
            " best_probability = CASE WHEN %(fc)s::text IS NOT NULL AND coalesce(%(p)s::real, 0)"
            "     >= coalesce(best_probability, -1) THEN coalesce(%(p)s::real, 0) ELSE best_probability END"
            " WHERE id = %(id)s",
            {
                "centroid": centroid,
                "seen": post.seen_at,
                "lang": post.lang or "und",
                "platform": post.platform or "unknown",
                "fc": post.fact_check_id,
                "p": post.probability,
                "id": cluster,
            },
        )

    async def _summary(self, conn: AsyncConnection[Any], cluster: int) -> ClusterSummary:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(f"SELECT {SUMMARY} FROM claim_clusters WHERE id = %s", (cluster,))
        row = await cur.fetchone()
        assert row is not None
        return summary(row)

    async def cluster(self, cluster_id: int) -> ClusterSummary | None:
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(f"SELECT {SUMMARY} FROM claim_clusters WHERE id = %s", (cluster_id,))
            row = await cur.fetchone()
        return summary(row) if row else None

    async def forget_clusters(self, older_than_s: float, limit: int = 10_000) -> int:
        """Delete up to ``limit`` clusters no post joined for ``older_than_s`` (their assignments go by cascade)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "DELETE FROM claim_clusters WHERE id IN (SELECT id FROM claim_clusters"
                " WHERE updated_at < now() - make_interval(secs => %s) ORDER BY updated_at LIMIT %s)",
                (older_than_s, limit),
            )
            return cur.rowcount
