"""Candidate retrieval's SQL: dense (HNSW) and lexical (full-text) candidates, and the details
of the few that will be shown.

Two round trips per chunk of posts. The first fetches, for every post at once, each source's
candidates with their ranks and the dense cosine, and the post's own lexemes; the retriever
fuses, decides and cuts. The second fetches the metadata and lexemes of the fact-checks it
needs (the reranked and the published ones, once), so shared terms are the intersection of two
lexeme sets, never a second ``to_tsvector`` of the posts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from psycopg import sql

from worker.domain import Candidate, FactCheckDetails, PostCandidates, Source, Vectors
from worker.storage.db import Part
from worker.storage.embeddings import vector_type

_NO_DENSE = sql.SQL("SELECT NULL::bigint AS ord, NULL::text AS fact_check_id, NULL::bigint AS rnk WHERE false")
_NO_LEXICAL = sql.SQL(
    "SELECT NULL::bigint AS ord, NULL::text AS fact_check_id, NULL::real AS score, NULL::bigint AS rnk WHERE false"
)
_DENSE = (
    "SELECT qt.ord, d.fact_check_id, row_number() OVER (PARTITION BY qt.ord ORDER BY d.dist) AS rnk"
    " FROM qt CROSS JOIN LATERAL ("
    "   SELECT e.fact_check_id, e.embedding::{vtype}({dim}) <=> qt.v::{vtype}({dim}) AS dist"
    "   FROM fact_check_embeddings e WHERE e.model_version = {version}"
    "   ORDER BY e.embedding::{vtype}({dim}) <=> qt.v::{vtype}({dim}) LIMIT {pool}) d"
)
# BM25 (k1 1.2, b 0.75) over the postings of the post's lexemes (migration 0008): the cost
# follows the postings read, not the number of fact-checks that share any word with the post.
# Each lexeme's idf is computed once (OFFSET 0 keeps the planner from folding it into the sum,
# where it was recomputed for every posting, in numeric), and the corpus statistics are
# materialised once a statement: the same scores, 1.86 -> 1.29 ms a post for a chunk's search
# (docs/measurements.md).
_LEXICAL = (
    "SELECT qt.ord, l.id AS fact_check_id, l.score,"
    " row_number() OVER (PARTITION BY qt.ord ORDER BY l.score DESC, l.id) AS rnk"
    " FROM qt CROSS JOIN st CROSS JOIN LATERAL ("
    "   SELECT t.fact_check_id AS id,"
    "    sum(q.idf * t.tf * 2.2 / (t.tf + 1.2 * (0.25 + 0.75 * t.dl / st.avgdl)))::real AS score"
    "   FROM (SELECT pl.lexeme, ln(1 + (st.n - df.c + 0.5) / (df.c + 0.5)) AS idf"
    "         FROM unnest(qt.lx) AS pl(lexeme)"
    "         CROSS JOIN LATERAL (SELECT count(*)::float8 AS c FROM fact_check_terms f WHERE f.lexeme = pl.lexeme) df"
    "         WHERE df.c > 0 OFFSET 0) q"
    "   JOIN fact_check_terms t ON t.lexeme = q.lexeme"
    "   GROUP BY t.fact_check_id ORDER BY score DESC, t.fact_check_id LIMIT {pool}) l"
)
# BM25's corpus size and mean length in lexemes. Counted, they are a scan of every fact-check for
# each chunk (~1.7 ms for 10,375, linear in the corpus); from EXACT_STATS_BELOW fact-checks on, the
# planner's own counts are read instead (``pg_class.reltuples`` of the fact-checks and of their
# postings, one posting per distinct lexeme, so postings / fact-checks is the mean length): as
# fresh as the last VACUUM or ANALYZE, which a large load runs (worker.storage.corpus) and
# autovacuum repeats after a tenth of the rows changed. Where either was never counted, counted.
EXACT_STATS_BELOW = 50_000
_CORPUS_STATS = (
    "SELECT CASE WHEN e.estimated THEN e.n ELSE (SELECT count(*) FROM fact_checks)::real END AS n,"
    " CASE WHEN e.estimated THEN greatest(e.postings / e.n, 1)::real"
    "  ELSE (SELECT greatest(coalesce(avg(length(search_vector)), 1), 1) FROM fact_checks)::real END AS avgdl"
    " FROM (SELECT s.n, s.postings, s.n >= {below} AND s.postings >= 0 AS estimated FROM ("
    "  SELECT (SELECT reltuples FROM pg_class WHERE oid = 'fact_checks'::regclass)::real AS n,"
    "   (SELECT reltuples FROM pg_class WHERE oid = 'fact_check_terms'::regclass)::real AS postings) s) e"
)
_LEXEMES = "tsvector_to_array(to_tsvector(factmatch_ts_config(u.lang), u.txt))"


def _candidates_query(version: str, dimension: int, sources: frozenset[Source], limit: int) -> sql.Composed:
    """One statement for a chunk: each source's candidates per post, their cosines, the posts' lexemes."""
    params = {
        "vtype": sql.SQL(vector_type(dimension)),
        "dim": sql.Literal(dimension),
        # A literal, not a parameter: the planner can only use a partial index whose
        # predicate it can prove, which a generic plan's $n never allows.
        "version": sql.Literal(version),
        "pool": sql.Literal(limit),
    }
    lexical = "lexical" in sources
    return sql.SQL(
        "WITH qt AS ("
        "  SELECT u.ord, u.v, {lexemes} AS lx"
        "  FROM unnest(%b::vector[], %s::text[], %s::text[]) WITH ORDINALITY AS u(v, txt, lang, ord)"
        "), st AS MATERIALIZED ({stats}), dense AS ({dense}), lex AS ({lexical}), cand AS ("
        "  SELECT coalesce(d.ord, l.ord) AS ord, coalesce(d.fact_check_id, l.fact_check_id) AS fact_check_id,"
        "   d.rnk AS dense_rank, l.rnk AS lexical_rank, l.score AS lexical_score"
        "  FROM dense d FULL OUTER JOIN lex l ON d.ord = l.ord AND d.fact_check_id = l.fact_check_id"
        ")"
        " SELECT c.ord, c.fact_check_id, 1 - (e.embedding::{vtype}({dim}) <=> qt.v::{vtype}({dim})),"
        "  c.dense_rank, c.lexical_score, c.lexical_rank, fc.lang, NULL::text[]"
        " FROM cand c JOIN qt ON qt.ord = c.ord"
        " JOIN fact_check_embeddings e ON e.model_version = {version} AND e.fact_check_id = c.fact_check_id"
        # The fact-check's language: fusion and the decision know cross-lingual candidates.
        " JOIN fact_checks fc ON fc.id = c.fact_check_id"
        # One row per post with its lexemes (what shared terms are explained from).
        " UNION ALL SELECT qt.ord, NULL, NULL, NULL, NULL, NULL, NULL, qt.lx FROM qt"
    ).format(
        # Always: the shared terms that explain a match are computed from them in every mode.
        lexemes=sql.SQL(_LEXEMES),
        stats=sql.SQL(_CORPUS_STATS).format(below=sql.Literal(EXACT_STATS_BELOW))
        if lexical
        else sql.SQL("SELECT 0::real AS n, 1::real AS avgdl"),
        dense=sql.SQL(_DENSE).format(**params) if "dense" in sources else _NO_DENSE,
        lexical=sql.SQL(_LEXICAL).format(**params) if lexical else _NO_LEXICAL,
        **params,
    )


def _per_post(rows: Sequence[tuple[Any, ...]], posts: int) -> list[PostCandidates]:
    """The statement's rows grouped by post (``ord`` counts from 1): candidates, and the lexemes row."""
    per_query: list[list[Candidate]] = [[] for _ in range(posts)]
    lexemes: list[frozenset[str]] = [frozenset() for _ in range(posts)]
    for ord_, fc_id, dense_score, dense_rank, lexical_score, lexical_rank, lang, lx in rows:
        if fc_id is None:
            lexemes[int(ord_) - 1] = frozenset(lx or ())
            continue
        per_query[int(ord_) - 1].append(
            Candidate(
                fact_check_id=fc_id,
                dense_score=float(dense_score),
                dense_rank=int(dense_rank) if dense_rank is not None else None,
                lexical_score=float(lexical_score) if lexical_score is not None else None,
                lexical_rank=int(lexical_rank) if lexical_rank is not None else None,
                lang=lang,
            )
        )
    return [PostCandidates(found, lx) for found, lx in zip(per_query, lexemes, strict=True)]


class Candidates(Part):
    """Search: the candidates of a chunk of posts, and the details of fact-checks."""

    async def candidates(
        self,
        version: str,
        dimension: int,
        queries: Vectors,
        texts: Sequence[str],
        langs: Sequence[str | None],
        *,
        sources: frozenset[Source],
        limit: int,
    ) -> list[PostCandidates]:
        """Each source's top ``limit`` candidates for every query under ``version``, with the dense
        cosine, and each query's lexemes."""
        if len(queries) == 0:
            return []
        if queries.shape[1] != dimension:
            raise ValueError(f"query vectors have {queries.shape[1]} dimensions, version {version} has {dimension}")
        query = _candidates_query(version, dimension, sources, limit)
        vectors = [np.asarray(v, dtype=np.float32) for v in queries]
        async with self.pool.connection() as conn:
            cur = conn.cursor(binary=True)
            await cur.execute(query, (vectors, list(texts), list(langs)), prepare=False)
            rows = await cur.fetchall()
        return _per_post(rows, len(queries))

    async def details(self, fact_check_ids: Sequence[str]) -> dict[str, FactCheckDetails]:
        """Metadata and lexemes of fact-checks: what a shown match displays and explains."""
        if not fact_check_ids:
            return {}
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT id, claim, title, url, lang, rating, published_at, tsvector_to_array(search_vector)"
                " FROM fact_checks WHERE id = ANY(%s)",
                (sorted(set(fact_check_ids)),),
                prepare=False,
            )
            rows = await cur.fetchall()
        return {
            fc_id: FactCheckDetails(claim, title, url, lang, rating, published_at, frozenset(lexemes or ()))
            for fc_id, claim, title, url, lang, rating, published_at, lexemes in rows
        }
