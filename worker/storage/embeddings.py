"""Embeddings and their per-version HNSW indexes.

One ``fact_check_embeddings`` table carries every model version. Each version's index is a
partial HNSW index over a cast of the column to that version's dimension, built after its
rows are loaded (``halfvec`` above 2,000 dimensions, the limit of pgvector's ``vector`` HNSW).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from psycopg import sql

from worker.domain import Vectors
from worker.storage.db import Part

HNSW_VECTOR_MAX_DIMS = 2000


def vector_type(dimension: int) -> str:
    """The type the index (and the query) casts to: HNSW takes ``vector`` up to 2,000 dims."""
    return "vector" if dimension <= HNSW_VECTOR_MAX_DIMS else "halfvec"


def as_floats(value: object) -> npt.NDArray[np.float32]:
    """A vector read back from Postgres as float32: pgvector returns ``halfvec`` columns as
    objects with ``to_numpy`` and ``vector`` columns as arrays."""
    to_numpy = getattr(value, "to_numpy", None)
    return np.asarray(to_numpy() if to_numpy else value, dtype=np.float32)


def index_name(version: str) -> str:
    return "fce_hnsw_" + hashlib.sha1(version.encode()).hexdigest()[:16]


def centroid_index_name(version: str) -> str:
    return "ccl_hnsw_" + hashlib.sha1(version.encode()).hexdigest()[:16]


def centroid_index(version: str, dimension: int) -> sql.Composed:
    """The statement that builds ``version``'s partial HNSW index over its cluster centroids."""
    vtype = vector_type(dimension)
    return sql.SQL(
        "CREATE INDEX IF NOT EXISTS {name} ON claim_clusters USING hnsw ((centroid::{vtype}({dim})) {ops})"
        " WHERE model_version = {version}"
    ).format(
        name=sql.Identifier(centroid_index_name(version)),
        vtype=sql.SQL(vtype),
        dim=sql.Literal(dimension),
        ops=sql.SQL(f"{vtype}_cosine_ops"),
        version=sql.Literal(version),
    )


class Embeddings(Part):
    """``fact_check_embeddings`` and each version's HNSW index."""

    async def write_embeddings(self, version: str, ids: Sequence[str], vectors: Vectors) -> None:
        """Insert or replace the embeddings of ``ids`` under ``version`` (binary COPY through a stage)."""
        if len(ids) != len(vectors):
            raise ValueError("ids and vectors differ in length")
        if not ids:
            return
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("CREATE TEMP TABLE fce_stage (fact_check_id text, embedding vector) ON COMMIT DROP")
            async with conn.cursor().copy(
                "COPY fce_stage (fact_check_id, embedding) FROM STDIN WITH (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["text", "vector"])
                for fc_id, vector in zip(ids, vectors, strict=True):
                    await copy.write_row((fc_id, np.asarray(vector, dtype=np.float32)))
            # clock_timestamp(), not now(): a fact-check updated earlier in this same
            # transaction must not look newer than its embedding.
            await conn.execute(
                "INSERT INTO fact_check_embeddings (model_version, fact_check_id, embedding, embedded_at)"
                " SELECT %s, s.fact_check_id, s.embedding, clock_timestamp() FROM fce_stage s"
                " JOIN fact_checks fc ON fc.id = s.fact_check_id"
                " ON CONFLICT (model_version, fact_check_id) DO UPDATE"
                " SET embedding = EXCLUDED.embedding, embedded_at = EXCLUDED.embedded_at",
                (version,),
            )

    async def exact_neighbours(self, version: str, dimension: int, query: np.ndarray, k: int) -> list[str]:
        """The true top ``k`` by cosine under ``version``: a sequential scan, the index switched off."""
        vtype = sql.SQL(vector_type(dimension))
        statement = sql.SQL(
            "SELECT fact_check_id FROM fact_check_embeddings WHERE model_version = %s"
            " ORDER BY embedding::{vtype}({dim}) <=> %b::vector::{vtype}({dim}), fact_check_id LIMIT %s"
        ).format(vtype=vtype, dim=sql.Literal(dimension))
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("SET LOCAL enable_indexscan = off")
            cur = conn.cursor(binary=True)
            await cur.execute(statement, (version, np.asarray(query, dtype=np.float32), k), prepare=False)
            rows = await cur.fetchall()
        return [str(r[0]) for r in rows]

    async def count_embeddings(self, version: str) -> int:
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT count(*) FROM fact_check_embeddings WHERE model_version = %s", (version,))
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def build_index(self, version: str, dimension: int, *, m: int = 16, ef_construction: int = 64) -> None:
        """Build ``version``'s HNSW index (after its rows are loaded) and mark the version indexed."""
        vtype = vector_type(dimension)
        statement = sql.SQL(
            "CREATE INDEX IF NOT EXISTS {name} ON fact_check_embeddings USING hnsw"
            " ((embedding::{vtype}({dim})) {ops}) WITH (m = {m}, ef_construction = {efc})"
            " WHERE model_version = {version}"
        ).format(
            name=sql.Identifier(index_name(version)),
            vtype=sql.SQL(vtype),
            dim=sql.Literal(dimension),
            ops=sql.SQL(f"{vtype}_cosine_ops"),
            m=sql.Literal(m),
            efc=sql.Literal(ef_construction),
            version=sql.Literal(version),
        )
        async with self.pool.connection() as conn:
            await conn.execute("SET maintenance_work_mem = '512MB'")
            try:
                await conn.execute(statement)
                # The version's claim-cluster centroids get theirs at the same time (an empty table: instant).
                await conn.execute(centroid_index(version, dimension))
            finally:
                await conn.execute("RESET maintenance_work_mem")
            # Fresh statistics, or the planner prefers the primary key for a version it thinks is tiny.
            await conn.execute("ANALYZE fact_check_embeddings")
            await conn.execute("UPDATE model_versions SET indexed_at = now() WHERE version = %s", (version,))

    async def drop_version_index(self, version: str) -> None:
        """Free a retired version's embeddings and index; it can no longer be rolled back to."""
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(index_name(version))))
            await conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(centroid_index_name(version))))
            await conn.execute("DELETE FROM fact_check_embeddings WHERE model_version = %s", (version,))
            await conn.execute(
                "UPDATE model_versions SET indexed_at = NULL,"
                " notes = concat_ws('; ', notes, 'embeddings dropped by retention') WHERE version = %s",
                (version,),
            )

    async def explain_search(self, version: str, dimension: int, query: Vectors) -> str:
        """The plan of one search with sequential scans and sorts disabled.

        Proves the version's HNSW index matches the query (expression, operator class and
        partial predicate); on a small table the planner may still rightly prefer an exact sort.
        """
        vtype = sql.SQL(vector_type(dimension))
        dim = sql.Literal(dimension)
        statement = sql.SQL(
            "EXPLAIN SELECT fact_check_id FROM fact_check_embeddings WHERE model_version = {version}"
            " ORDER BY embedding::{vtype}({dim}) <=> %b::vector::{vtype}({dim}) LIMIT 5"
        ).format(vtype=vtype, dim=dim, version=sql.Literal(version))
        switches = ("enable_seqscan", "enable_bitmapscan", "enable_sort")
        async with self.pool.connection() as conn:
            for name in switches:
                await conn.execute(sql.SQL("SET {} = off").format(sql.Identifier(name)))
            try:
                cur = await conn.execute(statement, (np.asarray(query, dtype=np.float32),))
                rows = await cur.fetchall()
            finally:
                for name in switches:
                    await conn.execute(sql.SQL("RESET {}").format(sql.Identifier(name)))
        # The plan quotes the query vector; keep only the node lines.
        return "\n".join(r[0] for r in rows if "Sort Key" not in r[0] and "Order By" not in r[0])
