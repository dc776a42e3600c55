"""The fact-check corpus's SQL: bulk upserts through binary COPY, deletes, and what needs embedding."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from worker.domain import TWIN_QUOTES, TWIN_SPACES
from worker.storage.db import Part
from worker.wire import FactCheck

# A load this large is vacuumed and analysed at once: until autovacuum gets to it, a fresh
# corpus's postings have no planner statistics (the lexical search plans badly) and no visibility
# map (every posting read visits the table as well as the covering index: 2.2x the CPU a post).
# docs/measurements.md.
ANALYZE_AFTER_ROWS = 1000
_FIELDS = ("id", "claim", "title", "url", "lang", "rating", "published_at", "source", "meta")
_COLUMNS = ", ".join(_FIELDS)
# worker.retrieval.openset.twin_key in SQL, with its own patterns passed as parameters.
_TWIN_PART = "btrim(regexp_replace(regexp_replace(coalesce({}, ''), %(quotes)s, '', 'g'), %(spaces)s, ' ', 'g'), ' ')"
_TWIN_KEY = f"{_TWIN_PART.format('title')} || E'\\n' || {_TWIN_PART.format('claim')}"


def _dedupe(fact_checks: Iterable[FactCheck]) -> list[FactCheck]:
    """The last write wins when one load names an id twice (ON CONFLICT cannot touch a row twice)."""
    latest: dict[str, FactCheck] = {}
    for fc in fact_checks:
        latest[fc.id] = fc
    return list(latest.values())


class Corpus(Part):
    """``fact_checks``: the corpus posts are matched against."""

    async def upsert_fact_checks(self, fact_checks: Sequence[FactCheck]) -> None:
        if not fact_checks:
            return
        # Staged through binary COPY so a large load is one round trip, not one per row.
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("CREATE TEMP TABLE fc_stage (LIKE fact_checks INCLUDING DEFAULTS) ON COMMIT DROP")
            async with conn.cursor().copy(f"COPY fc_stage ({_COLUMNS}) FROM STDIN WITH (FORMAT BINARY)") as copy:
                copy.set_types(["text", "text", "text", "text", "text", "text", "timestamptz", "text", "jsonb"])
                for fc in _dedupe(fact_checks):
                    await copy.write_row([*(getattr(fc, c) for c in _FIELDS[:-1]), Jsonb(fc.meta)])
            await conn.execute(
                f"INSERT INTO fact_checks ({_COLUMNS}) SELECT {_COLUMNS} FROM fc_stage"
                " ON CONFLICT (id) DO UPDATE SET claim = EXCLUDED.claim, title = EXCLUDED.title,"
                " url = EXCLUDED.url, lang = EXCLUDED.lang, rating = EXCLUDED.rating,"
                " published_at = EXCLUDED.published_at, source = EXCLUDED.source, meta = EXCLUDED.meta,"
                " updated_at = now()"
            )
        if len(fact_checks) >= ANALYZE_AFTER_ROWS:
            await self._vacuum("fact_checks, fact_check_terms")

    async def _vacuum(self, tables: str) -> None:
        """VACUUM (ANALYZE), which runs outside a transaction only."""
        async with self.pool.connection() as conn:
            await conn.set_autocommit(True)
            try:
                await conn.execute(f"VACUUM (ANALYZE) {tables}")
            finally:
                await conn.set_autocommit(False)

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

    async def all_fact_checks(self) -> list[FactCheck]:
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(f"SELECT {_COLUMNS} FROM fact_checks ORDER BY id")
            return [FactCheck.model_validate(r) for r in await cur.fetchall()]

    async def fact_check_twins(self, ids: Sequence[str]) -> dict[str, set[str]]:
        """The copies of these fact-checks (same title and claim up to quotes and spacing), each with itself."""
        if not ids:
            return {}
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                f"WITH keyed AS (SELECT id, {_TWIN_KEY} AS twin_key FROM fact_checks)"
                " SELECT a.id, b.id FROM keyed a JOIN keyed b USING (twin_key)"
                " WHERE a.id = ANY(%(ids)s) AND a.id <> b.id",
                {"ids": list(ids), "quotes": TWIN_QUOTES, "spaces": TWIN_SPACES},
            )
            twins: dict[str, set[str]] = {}
            for a, b in await cur.fetchall():
                twins.setdefault(a, {a}).add(b)
        return twins

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
