"""Fact-check images' SQL: their PDQ hashes as ``bit(256)``, searched by Hamming distance.

A fact-check's images are replaced together with it: one row per image and dihedral variant (the
image as given and its 7 other rotations and mirror images), or one row saying why it has none.
A post's hashes are searched in one round trip: for each, the nearest fact-check images
by Hamming distance (pgvector's ``<~>`` over an HNSW index), kept when within the cut, with what
a published match shows of their fact-checks. Hashes travel as 64 hex digits and become bits in
SQL (``('x' || hex)::bit(256)``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from worker.domain import FactCheckDetails
from worker.domain.images import ImageHit, ImageRead, PointPair
from worker.storage.db import Part


class FactCheckImages(Part):
    """``fact_check_images``."""

    async def replace_images(self, images: Mapping[str, Sequence[tuple[ImageRead, str | None]]]) -> None:
        """Each fact-check's images are now its reads (with each one's link, None when inline); a
        fact-check given no reads has no images. One transaction."""
        rows = [
            (fc_id, r.index, variant, url, r.sha256, pdq, r.quality, r.error, *_extras(r, variant))
            for fc_id, reads in images.items()
            for r, url in reads
            for variant, pdq in enumerate((r.pdq, *r.variants) if r.pdq else (None,))
        ]
        points = [
            (fc_id, r.index, n, descriptor, x, y)
            for fc_id, reads in images.items()
            for r, _ in reads
            if r.keypoints is not None and r.error is None
            for n, (descriptor, (x, y)) in enumerate(zip(r.keypoints.descriptors, r.keypoints.points, strict=True))
        ]
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("DELETE FROM fact_check_images WHERE fact_check_id = ANY(%s)", (sorted(images),))
            await conn.execute("DELETE FROM fact_check_image_points WHERE fact_check_id = ANY(%s)", (sorted(images),))
            # One statement per table (row-by-row inserts were 3x slower; the HNSW insert of each
            # keypoint is most of what is left: docs/measurements.md).
            if rows:
                await conn.execute(
                    "INSERT INTO fact_check_images"
                    " (fact_check_id, idx, variant, url, sha256, hash, quality, error, keypoints, words)"
                    " SELECT f, i, v, u, s, ('x' || h)::bit(256), q, e, k, w FROM unnest(%s::text[], %s::int[],"
                    " %s::int[], %s::text[], %s::text[], %s::text[], %s::int[], %s::text[], %s::int[], %s::text[])"
                    " AS t(f, i, v, u, s, h, q, e, k, w)",
                    [list(column) for column in zip(*rows, strict=True)],
                )
            if points:
                await conn.execute(
                    "INSERT INTO fact_check_image_points (fact_check_id, idx, n, descriptor, x, y)"
                    " SELECT f, i, n, ('x' || d)::bit(256), x, y FROM unnest(%s::text[], %s::int[], %s::int[],"
                    " %s::text[], %s::real[], %s::real[]) AS t(f, i, n, d, x, y)",
                    [list(column) for column in zip(*points, strict=True)],
                )

    async def image_reads(self, fact_check_id: str) -> list[ImageRead]:
        """The fact-check's images as they were read."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT idx, hash::text, quality, sha256, error FROM fact_check_images"
                " WHERE fact_check_id = %s AND variant = 0 ORDER BY idx",
                (fact_check_id,),
            )
            rows = await cur.fetchall()
        return [
            ImageRead(i, format(int(bits, 2), "064x") if bits else None, quality, sha, error)
            for i, bits, quality, sha, error in rows
        ]

    async def image_sources(self, fact_check_ids: Sequence[str]) -> dict[str, list[tuple[str | None, str | None]]]:
        """Each fact-check's images as kept and read without error, keypoints included: (link,
        SHA-256 of the bytes), in order (an image read before keypoints existed is not listed)."""
        if not fact_check_ids:
            return {}
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT fact_check_id, url, sha256 FROM fact_check_images"
                " WHERE fact_check_id = ANY(%s) AND variant = 0 AND error IS NULL AND keypoints IS NOT NULL"
                " ORDER BY fact_check_id, idx",
                (sorted(set(fact_check_ids)),),
            )
            found: dict[str, list[tuple[str | None, str | None]]] = {}
            for fc_id, url, sha in await cur.fetchall():
                found.setdefault(fc_id, []).append((url, sha))
        return found

    async def image_links(self, fact_check_id: str) -> list[str | None]:
        """Each of the fact-check's images' link, in order (None: it came inline)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT url FROM fact_check_images WHERE fact_check_id = %s AND variant = 0 ORDER BY idx",
                (fact_check_id,),
            )
            return [row[0] for row in await cur.fetchall()]

    async def nearest_images(self, hashes: Sequence[str], *, max_distance: int, limit: int = 5) -> list[list[ImageHit]]:
        """For each hash (hex), up to ``limit`` fact-checks with an image within ``max_distance``,
        nearest first (a fact-check once, at its nearest image). ``ImageHit.image`` is the hash's position."""
        if not hashes:
            return []
        async with self.pool.connection() as conn, conn.transaction():
            # Past the index's first candidates when many are over the cut.
            await conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            cur = await conn.execute(
                "SELECT DISTINCT ON (q.i, h.fact_check_id) q.i, h.fact_check_id, h.distance::int, h.idx,"
                " fc.claim, fc.title, fc.url, fc.lang, fc.rating, fc.published_at"
                " FROM unnest(%s::text[]) WITH ORDINALITY AS q(hex, i)"
                " CROSS JOIN LATERAL (SELECT fact_check_id, idx, hash <~> ('x' || q.hex)::bit(256) AS distance"
                "   FROM fact_check_images WHERE hash IS NOT NULL"
                "   ORDER BY hash <~> ('x' || q.hex)::bit(256) LIMIT %s) h"
                " JOIN fact_checks fc ON fc.id = h.fact_check_id WHERE h.distance <= %s"
                " ORDER BY q.i, h.fact_check_id, h.distance, h.idx",
                (list(hashes), 4 * limit, max_distance),
            )
            rows = sorted(await cur.fetchall(), key=lambda row: (row[0], row[2], row[1]))
        found: list[list[ImageHit]] = [[] for _ in hashes]
        for i, fc_id, distance, idx, claim, title, url, lang, rating, published_at in rows:
            hits = found[int(i) - 1]
            if len(hits) < limit:
                details = FactCheckDetails(claim, title, url, lang, rating, published_at)
                hits.append(ImageHit(fc_id, int(i) - 1, int(distance), details, fc_image=int(idx)))
        return found

    async def nearest_points(
        self, images: Sequence[Sequence[str]], *, max_distance: int, per_point: int
    ) -> list[list[PointPair]]:
        """For each post image's keypoint descriptors (hex), up to ``per_point`` fact-check image
        keypoints within ``max_distance`` bits of each, in one round trip."""
        queries = [(i, n, hex_) for i, descriptors in enumerate(images) for n, hex_ in enumerate(descriptors)]
        found: list[list[PointPair]] = [[] for _ in images]
        if not queries:
            return found
        image_of, point_of, hexes = (list(column) for column in zip(*queries, strict=True))
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            cur = await conn.execute(
                "SELECT q.i, q.n, p.fact_check_id, p.idx, p.x, p.y"
                " FROM unnest(%s::int[], %s::int[], %s::text[]) AS q(i, n, hex)"
                " CROSS JOIN LATERAL (SELECT fact_check_id, idx, x, y,"
                "   descriptor <~> ('x' || q.hex)::bit(256) AS distance FROM fact_check_image_points"
                "   ORDER BY descriptor <~> ('x' || q.hex)::bit(256) LIMIT %s) p"
                " WHERE p.distance <= %s",
                (image_of, point_of, hexes, per_point, max_distance),
            )
            for i, n, fc_id, idx, x, y in await cur.fetchall():
                found[i].append(PointPair(n, fc_id, idx, x, y))
        return found

    async def image_words(self, images: Sequence[tuple[str, int]]) -> dict[tuple[str, int], str | None]:
        """The words read in each (fact-check, image index) kept ('' none found, None not read for words)."""
        if not images:
            return {}
        ids, indices = (list(column) for column in zip(*sorted(set(images)), strict=True))
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT i.fact_check_id, i.idx, i.words FROM unnest(%s::text[], %s::int[]) AS q(f, n)"
                " JOIN fact_check_images i ON i.fact_check_id = q.f AND i.idx = q.n AND i.variant = 0",
                (ids, indices),
            )
            return {(fc_id, int(idx)): words for fc_id, idx, words in await cur.fetchall()}

    async def fact_check_details(self, fact_check_ids: Sequence[str]) -> dict[str, FactCheckDetails]:
        """What a published match shows of each fact-check (those that exist)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT id, claim, title, url, lang, rating, published_at FROM fact_checks WHERE id = ANY(%s)",
                (sorted(set(fact_check_ids)),),
            )
            return {row[0]: FactCheckDetails(*row[1:]) for row in await cur.fetchall()}


def _extras(read: ImageRead, variant: int) -> tuple[int | None, str | None]:
    """What an image's first row (variant 0) keeps besides its hash: how many keypoints (0 when it
    has none) and its words ('' when none were found); None for an image not read (or not read for
    words), and on its other variants' rows."""
    if variant or read.error is not None:
        return None, None
    points = len(read.keypoints.descriptors) if read.keypoints is not None else 0
    return points, read.text or ("" if read.words_read else None)
