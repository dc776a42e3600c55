"""Postgres + pgvector: the fact-check corpus, the model registry and nearest-neighbour search.

All SQL lives here. Vectors travel as binary parameters and bulk loads use binary COPY;
each model version's HNSW index is a partial index over a cast of the embedding column to
that version's dimension, built after its rows are loaded (``halfvec`` above 2,000
dimensions, the limit of pgvector's ``vector`` HNSW index).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import psycopg
from pgvector.psycopg import register_vector_async
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from worker.calibration import Threshold
from worker.encoder import Vectors
from worker.fusion import Candidate, FusionConfig, fuse
from worker.wire import FactCheck, Feedback, Match

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
HNSW_VECTOR_MAX_DIMS = 2000
MIGRATION_LOCK_ID = 0x66616374  # "fact": serialises concurrent migrators (helm hook, replicas)

VersionStatus = Literal["candidate", "indexing", "ready", "active", "retired", "rejected"]
# Versions a changed fact-check must be (re-)embedded under so that no index goes stale.
SERVING_STATUSES: tuple[VersionStatus, ...] = ("active", "ready", "indexing")


@dataclass(frozen=True)
class ModelVersion:
    version: str
    path: str
    dimension: int
    status: VersionStatus
    base: str | None
    metrics: dict[str, Any]
    created_at: datetime
    indexed_at: datetime | None
    activated_at: datetime | None
    notes: str | None = None
    data_snapshot: dict[str, Any] | None = None
    retired_at: datetime | None = None


def vector_type(dimension: int) -> str:
    """The type the index (and the query) casts to: HNSW takes ``vector`` up to 2,000 dims."""
    return "vector" if dimension <= HNSW_VECTOR_MAX_DIMS else "halfvec"


def with_search_path(conninfo: str, schema: str) -> str:
    """A connection string whose sessions resolve factmatch's tables in ``schema`` (pgvector stays in public)."""
    from psycopg.conninfo import make_conninfo

    return make_conninfo(conninfo, options=f"-c search_path={schema},public")


def index_name(version: str) -> str:
    return "fce_hnsw_" + hashlib.sha1(version.encode()).hexdigest()[:16]


async def apply_migrations(conninfo: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply every ``*.sql`` file not applied yet, in name order; safe to run concurrently and repeatedly."""
    applied: list[str] = []
    # A handful of small files: read them before the transaction, not inside the event loop's hot path.
    scripts = [(p.name, p.read_text(encoding="utf-8")) for p in sorted(directory.glob("*.sql"))]  # noqa: ASYNC240
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_ID,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur = await conn.execute("SELECT name FROM schema_migrations")
        done = {row[0] for row in await cur.fetchall()}
        for name, script in scripts:
            if name in done:
                continue
            await conn.execute(script.encode())
            await conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (name,))
            applied.append(name)
    return applied


class Store:
    """An async connection pool and every query factmatch runs."""

    def __init__(
        self,
        conninfo: str,
        *,
        min_size: int = 1,
        max_size: int = 4,
        ef_search: int = 100,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.conninfo = conninfo
        self.ef_search = ef_search
        self.pool = AsyncConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            open=False,
            timeout=connect_timeout_s,
            kwargs={"autocommit": True, "connect_timeout": max(1, int(connect_timeout_s))},
            configure=self._configure,
            check=AsyncConnectionPool.check_connection,
            name="factmatch",
        )

    async def _configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await register_vector_async(conn)
        await conn.execute(sql.SQL("SET hnsw.ef_search = {}").format(sql.Literal(self.ef_search)))

    async def open(self, wait: bool = True) -> None:
        await self.pool.open(wait=wait)

    async def close(self) -> None:
        await self.pool.close()

    async def ping(self) -> bool:
        try:
            async with self.pool.connection(timeout=2.0) as conn:
                await conn.execute("SELECT 1")
            return True
        except Exception:
            return False

    # --- model registry ---------------------------------------------------------------

    @staticmethod
    def _version(row: dict[str, Any]) -> ModelVersion:
        return ModelVersion(**{k: row[k] for k in ModelVersion.__dataclass_fields__})

    async def get_version(self, version: str) -> ModelVersion | None:
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute("SELECT * FROM model_versions WHERE version = %s", (version,))
            row = await cur.fetchone()
        return self._version(row) if row else None

    async def active_version(self) -> ModelVersion | None:
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute("SELECT * FROM model_versions WHERE status = 'active'")
            row = await cur.fetchone()
        return self._version(row) if row else None

    async def list_versions(self) -> list[ModelVersion]:
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute("SELECT * FROM model_versions ORDER BY created_at, version")
            rows = await cur.fetchall()
        return [self._version(r) for r in rows]

    async def versions_with_status(self, statuses: Sequence[VersionStatus]) -> list[ModelVersion]:
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "SELECT * FROM model_versions WHERE status = ANY(%s) ORDER BY created_at", (list(statuses),)
            )
            rows = await cur.fetchall()
        return [self._version(r) for r in rows]

    async def register_version(
        self,
        version: str,
        path: str,
        dimension: int,
        *,
        status: VersionStatus = "candidate",
        base: str | None = None,
        metrics: dict[str, Any] | None = None,
        data_snapshot: dict[str, Any] | None = None,
    ) -> ModelVersion:
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "INSERT INTO model_versions (version, path, dimension, status, base, metrics, data_snapshot)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING *",
                (version, path, dimension, status, base, json.dumps(metrics or {}), json.dumps(data_snapshot or {})),
            )
            row = await cur.fetchone()
        assert row is not None
        return self._version(row)

    async def set_status(self, version: str, status: VersionStatus, *, notes: str | None = None) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE model_versions SET status = %s, notes = COALESCE(%s, notes) WHERE version = %s",
                (status, notes, version),
            )

    async def activate(self, version: str) -> None:
        """Make ``version`` the one active version in one transaction; its index must be complete."""
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute("SELECT indexed_at FROM model_versions WHERE version = %s FOR UPDATE", (version,))
            row = await cur.fetchone()
            if row is None:
                raise LookupError(f"unknown model version {version!r}")
            if row[0] is None:
                raise RuntimeError(f"model version {version!r} has no complete index yet")
            await conn.execute(
                "UPDATE model_versions SET status = 'retired', retired_at = now()"
                " WHERE status = 'active' AND version <> %s",
                (version,),
            )
            await conn.execute(
                "UPDATE model_versions SET status = 'active', activated_at = now() WHERE version = %s",
                (version,),
            )
            await conn.execute("SELECT pg_notify('factmatch_model', %s)", (version,))

    async def set_metrics(self, version: str, metrics: dict[str, Any]) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE model_versions SET metrics = metrics || %s::jsonb WHERE version = %s",
                (json.dumps(metrics), version),
            )

    async def drop_version_index(self, version: str) -> None:
        """Free a retired version's embeddings and index; it can no longer be rolled back to."""
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(index_name(version))))
            await conn.execute("DELETE FROM fact_check_embeddings WHERE model_version = %s", (version,))
            await conn.execute(
                "UPDATE model_versions SET indexed_at = NULL,"
                " notes = concat_ws('; ', notes, 'embeddings dropped by retention') WHERE version = %s",
                (version,),
            )

    # --- calibrated thresholds --------------------------------------------------------

    async def save_thresholds(self, version: str, fitted: Sequence[Threshold], source: str) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("DELETE FROM score_thresholds WHERE model_version = %s", (version,))
            cur = conn.cursor()
            await cur.executemany(
                "INSERT INTO score_thresholds (model_version, lang, tier, threshold, target_precision,"
                " fitted_precision, fitted_recall, support, source) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        version,
                        t.lang,
                        t.tier,
                        t.threshold,
                        t.target_precision,
                        t.fitted_precision,
                        t.fitted_recall,
                        t.support,
                        source,
                    )
                    for t in fitted
                ],
            )
            # Workers reload thresholds when the registry notifies them.
            await conn.execute("SELECT pg_notify('factmatch_model', %s)", (version,))

    async def thresholds(self, version: str) -> dict[tuple[str, str], float]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT lang, tier, threshold FROM score_thresholds WHERE model_version = %s", (version,)
            )
            return {(lang, tier): float(t) for lang, tier, t in await cur.fetchall()}

    # --- moderator feedback -----------------------------------------------------------

    async def insert_feedback(self, items: Sequence[Feedback]) -> int:
        if not items:
            return 0
        async with self.pool.connection() as conn:
            cur = conn.cursor()
            await cur.executemany(
                "INSERT INTO match_feedback (post_id, post_text, fact_check_id, verdict, moderator, model_version,"
                " note, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        f.post_id,
                        f.post_text,
                        f.fact_check_id,
                        f.verdict,
                        f.moderator,
                        f.model_version,
                        f.note,
                        f.created_at,
                    )
                    for f in items
                ],
            )
        return len(items)

    async def feedback(self) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute("SELECT * FROM match_feedback ORDER BY id")
            return list(await cur.fetchall())

    async def fact_checks_by_id(self, ids: Sequence[str]) -> dict[str, FactCheck]:
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "SELECT id, claim, title, url, lang, rating, published_at, source, meta FROM fact_checks"
                " WHERE id = ANY(%s)",
                (list(ids),),
            )
            return {r["id"]: FactCheck.model_validate(r) for r in await cur.fetchall()}

    # --- fact-checks ------------------------------------------------------------------

    async def upsert_fact_checks(self, fact_checks: Sequence[FactCheck]) -> None:
        if not fact_checks:
            return
        # Staged through binary COPY so a large load is one round trip, not one per row.
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("CREATE TEMP TABLE fc_stage (LIKE fact_checks INCLUDING DEFAULTS) ON COMMIT DROP")
            async with conn.cursor().copy(
                "COPY fc_stage (id, claim, title, url, lang, rating, published_at, source, meta)"
                " FROM STDIN WITH (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["text", "text", "text", "text", "text", "text", "timestamptz", "text", "jsonb"])
                for fc in _dedupe(fact_checks):
                    await copy.write_row(
                        (
                            fc.id,
                            fc.claim,
                            fc.title,
                            fc.url,
                            fc.lang,
                            fc.rating,
                            fc.published_at,
                            fc.source,
                            Jsonb(fc.meta),
                        )
                    )
            await conn.execute(
                "INSERT INTO fact_checks (id, claim, title, url, lang, rating, published_at, source, meta)"
                " SELECT id, claim, title, url, lang, rating, published_at, source, meta FROM fc_stage"
                " ON CONFLICT (id) DO UPDATE SET claim = EXCLUDED.claim, title = EXCLUDED.title,"
                " url = EXCLUDED.url, lang = EXCLUDED.lang, rating = EXCLUDED.rating,"
                " published_at = EXCLUDED.published_at, source = EXCLUDED.source, meta = EXCLUDED.meta,"
                " updated_at = now()"
            )

    async def delete_fact_checks(self, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        async with self.pool.connection() as conn:
            cur = await conn.execute("DELETE FROM fact_checks WHERE id = ANY(%s)", (list(ids),))
            return cur.rowcount

    async def count_fact_checks(self) -> int:
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT count(*) FROM fact_checks")
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def iter_fact_checks(self, batch_size: int = 1000) -> list[FactCheck]:
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "SELECT id, claim, title, url, lang, rating, published_at, source, meta FROM fact_checks ORDER BY id"
            )
            return [FactCheck.model_validate(r) for r in await cur.fetchall()]

    async def fact_checks_missing(self, version: str) -> list[FactCheck]:
        """Fact-checks with no embedding under ``version`` (new, or changed since it was embedded)."""
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "SELECT fc.id, fc.claim, fc.title, fc.url, fc.lang, fc.rating, fc.published_at, fc.source, fc.meta"
                " FROM fact_checks fc LEFT JOIN fact_check_embeddings e"
                "   ON e.fact_check_id = fc.id AND e.model_version = %s"
                " WHERE e.fact_check_id IS NULL OR e.embedded_at < fc.updated_at ORDER BY fc.id",
                (version,),
            )
            return [FactCheck.model_validate(r) for r in await cur.fetchall()]

    # --- embeddings -------------------------------------------------------------------

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
            finally:
                await conn.execute("RESET maintenance_work_mem")
            # Fresh statistics, or the planner prefers the primary key for a version it thinks is tiny.
            await conn.execute("ANALYZE fact_check_embeddings")
            await conn.execute("UPDATE model_versions SET indexed_at = now() WHERE version = %s", (version,))

    async def drop_index(self, version: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(index_name(version))))

    async def search(
        self,
        version: str,
        dimension: int,
        queries: Vectors,
        texts: Sequence[str] | None = None,
        langs: Sequence[str | None] | None = None,
        *,
        top_k: int,
        min_score: float,
        fusion: FusionConfig | None = None,
        candidates: int = 50,
    ) -> list[list[Match]]:
        """Top-k fact-checks for each query under ``version``, in one round trip.

        Dense (HNSW over the version's embeddings) and lexical (full-text over title and claim,
        in the post's language) candidates come back together and are fused in Python; every
        candidate carries its cosine, both ranks and the terms it shares with the post.
        """
        fusion = fusion or FusionConfig(mode="dense")
        if len(queries) == 0:
            return []
        if queries.shape[1] != dimension:
            raise ValueError(f"query vectors have {queries.shape[1]} dimensions, version {version} has {dimension}")
        texts = list(texts) if texts is not None else [""] * len(queries)
        langs = list(langs) if langs is not None else [None] * len(queries)
        if fusion.mode != "dense" and len(texts) != len(queries):
            raise ValueError("lexical and hybrid search need the query texts")
        pool = max(candidates, top_k)
        vtype = sql.SQL(vector_type(dimension))
        params = {
            "vtype": vtype,
            "dim": sql.Literal(dimension),
            # A literal, not a parameter: the planner can only use a partial index whose
            # predicate it can prove, which a generic plan's $n never allows.
            "version": sql.Literal(version),
            "pool": sql.Literal(pool),
        }
        dense = (
            sql.SQL(
                "SELECT qt.ord, d.fact_check_id, row_number() OVER (PARTITION BY qt.ord ORDER BY d.dist) AS rnk"
                " FROM qt CROSS JOIN LATERAL ("
                "   SELECT e.fact_check_id, e.embedding::{vtype}({dim}) <=> qt.v::{vtype}({dim}) AS dist"
                "   FROM fact_check_embeddings e WHERE e.model_version = {version}"
                "   ORDER BY e.embedding::{vtype}({dim}) <=> qt.v::{vtype}({dim}) LIMIT {pool}) d"
            ).format(**params)
            if fusion.mode != "lexical"
            else sql.SQL("SELECT NULL::bigint AS ord, NULL::text AS fact_check_id, NULL::bigint AS rnk WHERE false")
        )
        lexical = (
            sql.SQL(
                "SELECT qt.ord, l.id AS fact_check_id, l.score,"
                " row_number() OVER (PARTITION BY qt.ord ORDER BY l.score DESC, l.id) AS rnk"
                " FROM qt CROSS JOIN LATERAL ("
                # ts_rank, not ts_rank_cd: cover density costs 5x the time per matching fact-check
                # (measured on CheckThat!), and a post's OR query matches hundreds of them.
                "   SELECT fc.id, ts_rank(fc.search_vector, qt.tq, 1) AS score FROM fact_checks fc"
                "   WHERE qt.tq IS NOT NULL AND fc.search_vector @@ qt.tq ORDER BY score DESC LIMIT {pool}) l"
            ).format(**params)
            if fusion.mode != "dense"
            else sql.SQL(
                "SELECT NULL::bigint AS ord, NULL::text AS fact_check_id, NULL::real AS score, NULL::bigint AS rnk"
                " WHERE false"
            )
        )
        query = sql.SQL(
            "WITH q AS ("
            "  SELECT u.ord, u.v, u.txt, factmatch_ts_config(u.lang) AS cfg"
            "  FROM unnest(%s::vector[], %s::text[], %s::text[]) WITH ORDINALITY AS u(v, txt, lang, ord)"
            "), qt AS ("
            "  SELECT q.ord, q.v, to_tsvector(q.cfg, q.txt) AS tv,"
            # OR of the post's lexemes: a post is long and informal; an AND query would match nothing.
            "   (SELECT to_tsquery('simple', string_agg(quote_literal(lexeme), ' | '))"
            "    FROM unnest(to_tsvector(q.cfg, q.txt))) AS tq"
            "  FROM q"
            "), dense AS ({dense}), lex AS ({lexical}), cand AS ("
            "  SELECT coalesce(d.ord, l.ord) AS ord, coalesce(d.fact_check_id, l.fact_check_id) AS fact_check_id,"
            "   d.rnk AS dense_rank, l.rnk AS lexical_rank, l.score AS lexical_score"
            "  FROM dense d FULL OUTER JOIN lex l ON d.ord = l.ord AND d.fact_check_id = l.fact_check_id"
            ")"
            " SELECT c.ord, c.fact_check_id, 1 - (e.embedding::{vtype}({dim}) <=> qt.v::{vtype}({dim})) AS dense_score,"
            "  c.dense_rank, c.lexical_score, c.lexical_rank, fc.claim, fc.title, fc.url, fc.lang, fc.rating,"
            "  fc.published_at,"
            "  ARRAY(SELECT unnest(tsvector_to_array(fc.search_vector))"
            "        INTERSECT SELECT unnest(tsvector_to_array(qt.tv))) AS shared"
            " FROM cand c JOIN qt ON qt.ord = c.ord JOIN fact_checks fc ON fc.id = c.fact_check_id"
            " JOIN fact_check_embeddings e ON e.model_version = {version} AND e.fact_check_id = c.fact_check_id"
        ).format(dense=dense, lexical=lexical, **params)
        vectors = [np.asarray(v, dtype=np.float32) for v in queries]
        async with self.pool.connection() as conn:
            cur = conn.cursor(binary=True)
            await cur.execute(query, (vectors, texts, langs), prepare=False)
            rows = await cur.fetchall()
        per_query: list[list[tuple[Candidate, tuple[Any, ...]]]] = [[] for _ in range(len(queries))]
        for ord_, fc_id, dense_score, dense_rank, lexical_score, lexical_rank, *meta in rows:
            candidate = Candidate(
                fact_check_id=fc_id,
                dense_score=float(dense_score),
                dense_rank=int(dense_rank) if dense_rank is not None else None,
                lexical_score=float(lexical_score) if lexical_score is not None else None,
                lexical_rank=int(lexical_rank) if lexical_rank is not None else None,
            )
            per_query[int(ord_) - 1].append((candidate, tuple(meta)))
        results: list[list[Match]] = []
        for found in per_query:
            meta_by_id = {c.fact_check_id: m for c, m in found}
            ranked = fuse([c for c, _ in found], fusion, top_k=top_k, min_score=min_score)
            matches = []
            for rank, (c, fused) in enumerate(ranked, 1):
                claim, title, url, lang, rating, published_at, shared = meta_by_id[c.fact_check_id]
                matches.append(
                    Match(
                        fact_check_id=c.fact_check_id,
                        score=round(c.dense_score, 6),
                        rank=rank,
                        claim=claim,
                        title=title,
                        url=url,
                        lang=lang,
                        rating=rating,
                        published_at=published_at,
                        dense_score=round(c.dense_score, 6),
                        dense_rank=c.dense_rank,
                        lexical_score=round(c.lexical_score, 6) if c.lexical_score is not None else None,
                        lexical_rank=c.lexical_rank,
                        fused_score=round(fused, 6),
                        shared_terms=sorted(shared or []),
                    )
                )
            results.append(matches)
        return results

    async def explain_search(self, version: str, dimension: int, query: Vectors) -> str:
        """The plan of one search with sequential scans and sorts disabled.

        Proves the version's HNSW index matches the query (expression, operator class and
        partial predicate); on a small table the planner may still rightly prefer an exact sort.
        """
        vtype = sql.SQL(vector_type(dimension))
        dim = sql.Literal(dimension)
        statement = sql.SQL(
            "EXPLAIN SELECT fact_check_id FROM fact_check_embeddings WHERE model_version = {version}"
            " ORDER BY embedding::{vtype}({dim}) <=> %s::vector::{vtype}({dim}) LIMIT 5"
        ).format(vtype=vtype, dim=dim, version=sql.Literal(version))
        async with self.pool.connection() as conn:
            await conn.execute("SET enable_seqscan = off")
            await conn.execute("SET enable_bitmapscan = off")
            await conn.execute("SET enable_sort = off")
            try:
                cur = await conn.execute(statement, (np.asarray(query, dtype=np.float32),))
                rows = await cur.fetchall()
            finally:
                await conn.execute("RESET enable_seqscan")
                await conn.execute("RESET enable_bitmapscan")
                await conn.execute("RESET enable_sort")
        # The plan quotes the query vector; keep only the node lines.
        return "\n".join(r[0] for r in rows if "Sort Key" not in r[0] and "Order By" not in r[0])


def _dedupe(fact_checks: Iterable[FactCheck]) -> list[FactCheck]:
    """The last write wins when one load names an id twice (ON CONFLICT cannot touch a row twice)."""
    latest: dict[str, FactCheck] = {}
    for fc in fact_checks:
        latest[fc.id] = fc
    return list(latest.values())


ProgressFn = Callable[[int], None]
