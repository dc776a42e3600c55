"""Re-matching's SQL: the claim clusters nobody had a fact-check for, searched again when the
fact-checks change.

A version's vectors carry a corpus generation (``corpus_generations``, bumped by trigger in the
transaction that embeds, changes or deletes a fact-check for it); ``rematch_state`` keeps the
generation its unmatched clusters were last searched against. A pass reads the generation
*before* it searches, so a fact-check embedded while it runs moves the generation past the one it
records and the next pass searches again. What a pass found is written in one transaction: each
re-matched post leaves its cluster's abstained count and is counted for its fact-check's hour
(as :mod:`worker.storage.clusters` counts a post matched on arrival), the cluster takes its best
fact-check (so it leaves the emerging claims), and the generation moves on.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import datetime

from worker.domain import ClusteredPost, UnmatchedCluster
from worker.storage.clusters import count_hits, hit_hour
from worker.storage.db import Part
from worker.storage.embeddings import as_floats


def _main_language(langs: dict[str, int]) -> str | None:
    known = Counter({k: int(v) for k, v in langs.items() if k != "und"})
    return known.most_common(1)[0][0] if known else None


class Rematches(Part):
    """``rematch_state``, and the ``claim_clusters`` / ``post_clusters`` rows a re-match changes."""

    async def rematch_generation(self, version: str) -> int | None:
        """The corpus generation of ``version``'s vectors when its unmatched clusters were not yet
        searched against it; None when they were (or the version's vectors never changed)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT g.generation, r.generation FROM corpus_generations g"
                " LEFT JOIN rematch_state r ON r.model_version = g.scope WHERE g.scope = %s",
                (version,),
            )
            row = await cur.fetchone()
        if row is None or (row[1] is not None and int(row[1]) >= int(row[0])):
            return None
        return int(row[0])

    async def unmatched_clusters(self, version: str, window_s: float, limit: int) -> list[UnmatchedCluster]:
        """``version``'s clusters no post matched a fact-check in, joined within ``window_s``, most
        recently joined first: each with its centroid, its first post's claim and main language."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT id, centroid, representative_text, langs FROM claim_clusters"
                " WHERE model_version = %s AND fact_check_id IS NULL AND abstained > 0 AND centroid IS NOT NULL"
                " AND updated_at > now() - make_interval(secs => %s) ORDER BY updated_at DESC, id LIMIT %s",
                (version, window_s, limit),
            )
            rows = await cur.fetchall()
        return [
            UnmatchedCluster(
                cluster_id=int(cid),
                centroid=as_floats(c),
                text=text or "",
                lang=_main_language(dict(langs or {})),
            )
            for cid, c, text, langs in rows
        ]

    async def abstained_posts(self, version: str, cluster_ids: Sequence[int], limit: int) -> list[ClusteredPost]:
        """Up to ``limit`` posts of these clusters the worker abstained on, newest first."""
        if not cluster_ids:
            return []
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT post_id, cluster_id, text, lang, platform, url, seen_at FROM post_clusters"
                " WHERE model_version = %s AND cluster_id = ANY(%s) AND abstained"
                " ORDER BY seen_at DESC, post_id LIMIT %s",
                (version, list(cluster_ids), limit),
            )
            rows = await cur.fetchall()
        return [
            ClusteredPost(p, int(c), t or "", lang, platform, url, seen) for p, c, t, lang, platform, url, seen in rows
        ]

    async def record_rematches(
        self, version: str, generation: int, matched: Sequence[tuple[ClusteredPost, str, float]]
    ) -> int:
        """Record a pass against ``generation``: each (post, fact-check, probability) re-matched.
        Returns how many posts changed (a post already re-matched by another pass is left as it is)."""
        async with self.pool.connection() as conn, conn.transaction():
            changed: list[tuple[ClusteredPost, str, float]] = []
            if matched:
                cur = await conn.execute(
                    "UPDATE post_clusters SET abstained = false WHERE model_version = %s AND post_id = ANY(%s)"
                    " AND abstained RETURNING post_id",
                    (version, [p.post_id for p, _, _ in matched]),
                )
                updated = {row[0] for row in await cur.fetchall()}
                changed = [m for m in matched if m[0].post_id in updated]
            best: dict[int, tuple[str, float]] = {}
            counts: dict[int, int] = defaultdict(int)
            hits: dict[tuple[str, datetime, str, str], int] = defaultdict(int)
            for post, fc, probability in changed:
                counts[post.cluster_id] += 1
                if post.cluster_id not in best or probability > best[post.cluster_id][1]:
                    best[post.cluster_id] = (fc, probability)
                hits[(fc, hit_hour(post.seen_at), post.lang or "und", post.platform or "unknown")] += 1
            async with conn.cursor() as cur:
                await cur.executemany(
                    "UPDATE claim_clusters SET abstained = greatest(abstained - %(n)s, 0),"
                    " fact_check_id = CASE WHEN %(p)s::real >= coalesce(best_probability, -1)"
                    "     THEN %(fc)s::text ELSE fact_check_id END,"
                    " best_probability = greatest(best_probability, %(p)s::real) WHERE id = %(id)s",
                    [{"id": c, "n": counts[c], "fc": fc, "p": p} for c, (fc, p) in best.items()],
                )
            await count_hits(conn, hits)
            await conn.execute(
                "INSERT INTO rematch_state AS r (model_version, generation) VALUES (%s, %s)"
                " ON CONFLICT (model_version) DO UPDATE SET generation = greatest(r.generation, excluded.generation),"
                " checked_at = now()",
                (version, generation),
            )
            return len(changed)
