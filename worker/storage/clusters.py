"""Claim clusters' SQL: online clustering of the stream's posts, shared by every worker of the group.

A post joins the nearest cluster of its model version seen within the window whose centroid is at
least ``cut`` similar (cosine), else starts one; a repeat (a post answered with an earlier post's
answer, never encoded) joins its origin's cluster. Each assignment is kept (``post_clusters``), so
a redelivered post keeps its cluster and is not counted twice. A batch is assigned in one
transaction under a per-version advisory lock: workers of a group take turns for the few
milliseconds it takes, and the outcome does not depend on which worker assigns which batch. A
batch costs a few round trips whatever its size: every encoded post's nearest stored centroid in
one query, the clusters it starts in one insert, one row written per touched cluster at the end
(:mod:`worker.storage.cluster_placing` places the posts in between), so the posts of one batch see
the stored centroids as the batch found them, and the clusters it started. A
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

from worker.domain import ClusterPost, ClusterSummary, Vectors
from worker.storage.cluster_placing import Anchor, Joins, Placing, Stored
from worker.storage.db import Part
from worker.storage.embeddings import as_floats, vector_type

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


def _far(stored: Stored | None, cut: float) -> bool:
    """Whether a post's nearest stored cluster (None: none) is below the cut."""
    return stored is None or stored[2] < cut


def _merged(column: str, increments: str) -> str:
    """SQL: a jsonb of counts plus another's, key by key."""
    return (
        f"(SELECT coalesce(jsonb_object_agg(k, n), '{{}}'::jsonb) FROM (SELECT k, sum(v::bigint) AS n FROM"
        f" (SELECT key AS k, value AS v FROM jsonb_each_text({column}) UNION ALL"
        f"  SELECT key, value FROM jsonb_each_text({increments})) x GROUP BY k) y)"
    )


# A batch's joins of stored clusters, one statement: sizes and counts added, the centroid replaced
# by the new running mean, the best match kept when the batch's is at least as likely.
_UPDATE = (
    "UPDATE claim_clusters c SET size = c.size + u.n, updated_at = now(), centroid = coalesce(u.centroid, c.centroid),"
    " first_seen = least(c.first_seen, u.first), last_seen = greatest(c.last_seen, u.last),"
    f" langs = {_merged('c.langs', 'u.langs')}, platforms = {_merged('c.platforms', 'u.platforms')},"
    " abstained = c.abstained + u.abstained,"
    " fact_check_id = CASE WHEN u.fc IS NOT NULL AND u.p >= coalesce(c.best_probability, -1)"
    "     THEN u.fc ELSE c.fact_check_id END,"
    " best_probability = CASE WHEN u.fc IS NOT NULL AND u.p >= coalesce(c.best_probability, -1)"
    "     THEN u.p ELSE c.best_probability END"
    " FROM unnest(%(id)s::bigint[], %(n)s::bigint[], %(centroid)b::vector[], %(first)s::timestamptz[],"
    "  %(last)s::timestamptz[], %(langs)s::jsonb[], %(platforms)s::jsonb[], %(abstained)s::bigint[], %(fc)s::text[],"
    "  %(p)s::real[]) AS u(id, n, centroid, first, last, langs, platforms, abstained, fc, p)"
    " WHERE c.id = u.id"
)
# The clusters a batch started, with all their posts: one row each, in the order they were started.
_INSERT = (
    "INSERT INTO claim_clusters (model_version, representative_post_id, representative_text, size, centroid,"
    " first_seen, last_seen, langs, platforms, abstained, fact_check_id, best_probability)"
    " SELECT %(version)s, u.post, u.text, u.n, u.centroid, u.first, u.last, u.langs, u.platforms, u.abstained,"
    "  u.fc, u.p"
    " FROM unnest(%(post)s::text[], %(text)s::text[], %(n)s::bigint[], %(centroid)b::vector[],"
    "  %(first)s::timestamptz[], %(last)s::timestamptz[], %(langs)s::jsonb[], %(platforms)s::jsonb[],"
    "  %(abstained)s::bigint[], %(fc)s::text[], %(p)s::real[])"
    " WITH ORDINALITY AS u(post, text, n, centroid, first, last, langs, platforms, abstained, fc, p, o)"
    " ORDER BY u.o RETURNING id, representative_post_id"
)


def _columns(rows: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """Rows of one shape as one list per key (what ``unnest`` takes)."""
    return {key: [row[key] for row in rows] for key in rows[0]} if rows else {}


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
        self,
        version: str,
        dimension: int,
        posts: Sequence[ClusterPost],
        *,
        cut: float,
        window_s: float,
        across_languages: bool = False,
    ) -> list[ClusterSummary]:
        """Each post's cluster, as it stands once the batch was placed (in order: a post may join a
        cluster started earlier in the list). One round trip finds every encoded post's nearest
        stored cluster, one starts the batch's new clusters, one row is written per cluster touched.
        With ``across_languages``, a post nothing is near joins its fact-check's cluster where its
        language is new there (:mod:`worker.storage.cluster_placing`): one more round trip, for
        batches with such posts."""
        if not posts:
            return []
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_id(version),))
            cur = await conn.execute(
                "SELECT post_id, cluster_id FROM post_clusters WHERE model_version = %s AND post_id = ANY(%s)",
                (version, sorted({p.post_id for p in posts} | {p.origin for p in posts if p.origin})),
            )
            known: dict[str, int] = {post: cluster for post, cluster in await cur.fetchall()}
            probes: dict[str, Vectors] = {}
            for post in posts:
                if post.post_id not in known and post.vector is not None:
                    probes.setdefault(post.post_id, post.vector)
            stored = await self._nearest(conn, version, dimension, list(probes.values()), window_s)
            nearest = dict(zip(probes, stored, strict=True))
            anchors = None
            if across_languages:
                far = {p.fact_check_id for p in posts if p.post_id in probes and _far(nearest[p.post_id], cut)}
                anchors = await self._anchors(conn, version, sorted(fc for fc in far if fc is not None), window_s)
            placing = Placing(known, nearest, cut, anchors)
            for post in posts:
                placing.place(post)
            await self._join(conn, {c: entry for c, entry in placing.joins.items() if c > 0})
            placing.renumber(await self._start(conn, version, placing))
            await self._write(conn, version, placing.placed)
            rows = conn.cursor(row_factory=dict_row)
            await rows.execute(
                f"SELECT {SUMMARY} FROM claim_clusters WHERE id = ANY(%s)", (sorted({known[p.post_id] for p in posts}),)
            )
            found = {int(row["id"]): summary(row) for row in await rows.fetchall()}
            return [found[known[p.post_id]] for p in posts]

    async def _join(self, conn: AsyncConnection[Any], joins: dict[int, Joins]) -> None:
        """Stored clusters' rows grown by what the batch brought them."""
        if joins:
            rows = [entry.row(cluster) for cluster, entry in joins.items()]
            await conn.execute(_UPDATE, _columns(rows), binary=True)

    async def _start(self, conn: AsyncConnection[Any], version: str, placing: Placing) -> list[int]:
        """The clusters the batch started, with all their posts (the founder represents each): their ids."""
        if not placing.started:
            return []
        rows = [
            {"post": p.post_id, "text": p.text[:2000], **placing.joins[-(i + 1)].row(0)}
            for i, p in enumerate(placing.started)
        ]
        cur = await conn.execute(_INSERT, {"version": version, **_columns(rows)}, binary=True)
        ids = {post: int(cluster) for cluster, post in await cur.fetchall()}
        return [ids[p.post_id] for p in placing.started]

    async def _write(self, conn: AsyncConnection[Any], version: str, placed: Sequence[tuple[ClusterPost, int]]) -> None:
        """Each placed post's assignment, and the trends' counts."""
        if not placed:
            return
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
        self, conn: AsyncConnection[Any], version: str, dimension: int, vectors: Sequence[Vectors], window_s: float
    ) -> list[Stored | None]:
        """Each vector's nearest cluster of ``version`` seen within the window (one round trip)."""
        if not vectors:
            return []
        # The nearest within the window, even when the index's first candidates are older.
        await conn.execute("SET LOCAL hnsw.iterative_scan = strict_order")
        query = sql.SQL(
            "SELECT u.o, c.id, c.centroid, c.similarity, c.size FROM unnest(%b::vector[]) WITH ORDINALITY AS u(v, o)"
            " CROSS JOIN LATERAL (SELECT id, centroid, 1 - (centroid::{t}({d}) <=> u.v::{t}({d})) AS similarity, size"
            "  FROM claim_clusters WHERE model_version = {version} AND centroid IS NOT NULL"
            "  AND updated_at > now() - make_interval(secs => %s)"
            "  ORDER BY centroid::{t}({d}) <=> u.v::{t}({d}) LIMIT 1) c"
        ).format(t=sql.SQL(vector_type(dimension)), d=sql.Literal(dimension), version=sql.Literal(version))
        # Binary: 64 vectors each way as text would cost more than the search.
        cur = await conn.execute(query, ([np.asarray(v, dtype=np.float32) for v in vectors], window_s), binary=True)
        found: list[Stored | None] = [None] * len(vectors)
        for o, cluster, centroid, similarity, size in await cur.fetchall():
            found[int(o) - 1] = (int(cluster), as_floats(centroid), float(similarity), int(size))
        return found

    async def _anchors(
        self, conn: AsyncConnection[Any], version: str, fact_checks: Sequence[str], window_s: float
    ) -> dict[str, Anchor]:
        """Each fact-check's largest recent cluster of ``version`` whose best match it is (one round trip)."""
        if not fact_checks:
            return {}
        cur = await conn.execute(
            "SELECT DISTINCT ON (fact_check_id) fact_check_id, id, centroid, size, langs FROM claim_clusters"
            " WHERE model_version = %s AND fact_check_id = ANY(%s) AND centroid IS NOT NULL"
            " AND updated_at > now() - make_interval(secs => %s) ORDER BY fact_check_id, size DESC, id",
            (version, list(fact_checks), window_s),
        )
        return {
            fc: (int(cluster), as_floats(centroid), int(size), frozenset(langs))
            for fc, cluster, centroid, size, langs in await cur.fetchall()
        }

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
