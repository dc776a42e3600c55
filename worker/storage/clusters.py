"""Claim clusters' SQL: online clustering of the stream's posts, shared by every worker of the group.

A post joins the nearest cluster of its model version seen within the window whose centroid is at
least ``cut`` similar (cosine), else starts one; a repeat (a post answered with an earlier post's
answer, never encoded) joins its origin's cluster. Each assignment is kept (``post_clusters``), so
a redelivered post keeps its cluster and is not counted twice. A batch is assigned in one
transaction under a per-version advisory lock: workers of a group take turns for the few
milliseconds it takes, and the outcome does not depend on which worker assigns which batch. Each
encoded post new to the store costs one nearest-centroid query (a new cluster one insert); the
batch's joins are written once per touched cluster at the end, so the posts of one batch see the
centroids as the batch found them (and the clusters it started). A
newly clustered post with a tiered match is also counted, once, for its fact-check's hour
(``fact_check_hits``, read by :mod:`worker.storage.trends`).
Centroids are the normalised running mean of their posts' vectors; each version's centroids have
a partial HNSW index, built with the version's fact-check index (:func:`worker.storage.embeddings.centroid_index`).
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

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


@dataclass
class _Joins:
    """What one cluster gains from a batch: written to its row once, after every post was placed."""

    # The centroid and size the batch started from (None: a cluster this batch started).
    base: tuple[np.ndarray, int] | None
    vectors: list[np.ndarray] = field(default_factory=list)
    posts: list[ClusterPost] = field(default_factory=list)

    def centroid(self) -> np.ndarray | None:
        if not self.vectors:
            return None
        total: np.ndarray = np.sum(np.stack(self.vectors), axis=0)
        if self.base is not None:
            total = total + self.base[0] * self.base[1]
        return (total / max(float(np.linalg.norm(total)), 1e-12)).astype(np.float32)

    def row(self, cluster: int) -> dict[str, Any]:
        matched = [p for p in self.posts if p.fact_check_id is not None]
        best = max(matched, key=lambda p: p.probability or 0.0, default=None)
        return {
            "id": cluster,
            "n": len(self.posts),
            "centroid": self.centroid(),
            "first": min(p.seen_at for p in self.posts),
            "last": max(p.seen_at for p in self.posts),
            "langs": Jsonb(Counter(p.lang or "und" for p in self.posts)),
            "platforms": Jsonb(Counter(p.platform or "unknown" for p in self.posts)),
            "abstained": len(self.posts) - len(matched),
            "fc": best.fact_check_id if best else None,
            "p": (best.probability or 0.0) if best else None,
        }


def _merged(column: str, increments: str) -> str:
    """SQL: a jsonb of counts plus another's, key by key."""
    return (
        f"(SELECT coalesce(jsonb_object_agg(k, n), '{{}}'::jsonb) FROM (SELECT k, sum(v::bigint) AS n FROM"
        f" (SELECT key AS k, value AS v FROM jsonb_each_text({column}) UNION ALL"
        f"  SELECT key, value FROM jsonb_each_text({increments})) x GROUP BY k) y)"
    )


_UPDATE = (
    "UPDATE claim_clusters SET size = size + %(n)s, updated_at = now(),"
    " centroid = coalesce(%(centroid)s::vector, centroid),"
    " first_seen = least(first_seen, %(first)s::timestamptz), last_seen = greatest(last_seen, %(last)s::timestamptz),"
    f" langs = {_merged('langs', '%(langs)s::jsonb')}, platforms = {_merged('platforms', '%(platforms)s::jsonb')},"
    " abstained = abstained + %(abstained)s,"
    " fact_check_id = CASE WHEN %(fc)s::text IS NOT NULL AND %(p)s::real >= coalesce(best_probability, -1)"
    "     THEN %(fc)s::text ELSE fact_check_id END,"
    " best_probability = CASE WHEN %(fc)s::text IS NOT NULL AND %(p)s::real >= coalesce(best_probability, -1)"
    "     THEN %(p)s::real ELSE best_probability END"
    " WHERE id = %(id)s"
)


async def count_hits(conn: AsyncConnection[Any], hits: dict[tuple[str, datetime, str, str], int]) -> None:
    """Add posts to their fact-checks' hourly counts, keyed (fact-check, hour, language, platform)
    (the trends read them)."""
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


def hit_hour(seen_at: datetime) -> datetime:
    """The hour a post counts in."""
    return seen_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


class Clusters(Part):
    """``claim_clusters`` and ``post_clusters``."""

    async def assign_clusters(
        self, version: str, dimension: int, posts: Sequence[ClusterPost], *, cut: float, window_s: float
    ) -> list[ClusterSummary]:
        """Each post's cluster, as it stands once the batch was placed (in order: a post may join a
        cluster started earlier in the list). One nearest-centroid query per encoded post new to the
        store, one row written per cluster the batch touched."""
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
            joins: dict[int, _Joins] = {}
            placed: list[tuple[ClusterPost, int]] = []
            for post in posts:
                if post.post_id not in known:
                    cluster = await self._place(conn, version, dimension, post, known, joins, cut, window_s)
                    known[post.post_id] = cluster
                    placed.append((post, cluster))
            await self._write(conn, version, joins, placed)
            rows = conn.cursor(row_factory=dict_row)
            await rows.execute(
                f"SELECT {SUMMARY} FROM claim_clusters WHERE id = ANY(%s)", (sorted({known[p.post_id] for p in posts}),)
            )
            found = {int(row["id"]): summary(row) for row in await rows.fetchall()}
            return [found[known[p.post_id]] for p in posts]

    async def _place(
        self,
        conn: AsyncConnection[Any],
        version: str,
        dimension: int,
        post: ClusterPost,
        known: dict[str, int],
        joins: dict[int, _Joins],
        cut: float,
        window_s: float,
    ) -> int:
        """The cluster ``post`` joins: its origin's, the nearest above the cut, or a new one."""
        cluster = known.get(post.origin) if post.origin else None
        vector = None if post.vector is None else np.asarray(post.vector, dtype=np.float32)
        if cluster is None and vector is not None:
            found = await self._nearest(conn, version, dimension, vector, window_s)
            if found is not None and found[2] >= cut:
                cluster = found[0]
                joins.setdefault(cluster, _Joins(base=(found[1], found[3])))
        if cluster is None:
            cur = await conn.execute(
                "INSERT INTO claim_clusters (model_version, centroid, first_seen, last_seen, representative_post_id,"
                " representative_text) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                (version, vector, post.seen_at, post.seen_at, post.post_id, post.text[:2000]),
            )
            row = await cur.fetchone()
            assert row is not None
            cluster = int(row[0])
            joins[cluster] = _Joins(base=None)
        entry = joins.setdefault(cluster, _Joins(base=None))
        entry.posts.append(post)
        if vector is not None:
            entry.vectors.append(vector)
        return cluster

    async def _write(
        self,
        conn: AsyncConnection[Any],
        version: str,
        joins: dict[int, _Joins],
        placed: Sequence[tuple[ClusterPost, int]],
    ) -> None:
        """The batch's joins: each touched cluster's row, each post's assignment, the trends' counts."""
        if not placed:
            return
        async with conn.cursor() as cur:
            await cur.executemany(_UPDATE, [entry.row(cluster) for cluster, entry in joins.items()])
        await conn.execute(
            "INSERT INTO post_clusters"
            " (model_version, post_id, cluster_id, seen_at, text, abstained, lang, platform, url)"
            " SELECT %s, * FROM unnest(%s::text[], %s::bigint[], %s::timestamptz[], %s::text[], %s::boolean[],"
            " %s::text[], %s::text[], %s::text[])",
            (
                version,
                [p.post_id for p, _ in placed],
                [c for _, c in placed],
                [p.seen_at for p, _ in placed],
                [p.text[:1000] for p, _ in placed],
                [p.fact_check_id is None for p, _ in placed],
                [p.lang for p, _ in placed],
                [p.platform for p, _ in placed],
                [(p.url or "")[:2000] or None for p, _ in placed],
            ),
        )
        hits: dict[tuple[str, datetime, str, str], int] = defaultdict(int)
        for post, _ in placed:
            if post.fact_check_id is not None:
                hits[(post.fact_check_id, hit_hour(post.seen_at), post.lang or "und", post.platform or "unknown")] += 1
        await count_hits(conn, hits)

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
