"""Integration tier: the store against a real embedded Postgres + pgvector."""

from __future__ import annotations

import itertools

import numpy as np
import psycopg
import pytest

from worker.retrieval.modes import FusionConfig, ModeName
from worker.retrieval.retriever import RetrievalConfig, Retriever
from worker.storage import Store, apply_migrations, index_name
from worker.wire import FactCheck, Match

pytestmark = pytest.mark.integration


def unit(rows: int, dim: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


async def search(
    store: Store,
    version: str,
    dim: int,
    queries: np.ndarray,
    texts: list[str] | None = None,
    langs: list[str | None] | None = None,
    *,
    mode: ModeName = "dense",
    top_k: int = 5,
    min_score: float = -1.0,
) -> list[list[Match]]:
    """The worker's retriever over the store, textbook RRF (k=60, equal weights)."""
    retriever = Retriever(store, RetrievalConfig(FusionConfig(mode, 60, 1.0, 1.0), top_k, min_score, 50))
    n = len(queries)
    return await retriever.search(version, dim, queries, texts or [""] * n, langs or [None] * n)


async def test_migrations_are_idempotent(database_url: str) -> None:
    assert await apply_migrations(database_url) == []
    with psycopg.connect(database_url) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"fact_checks", "model_versions", "fact_check_embeddings", "schema_migrations"} <= tables


async def test_only_one_version_can_be_active(database_url: str) -> None:
    store = Store(database_url)
    await store.open()
    try:
        for v in ("a", "b"):
            await store.register_version(v, "/m", 4, status="indexing")
            await store.build_index(v, 4)
        await store.activate("a")
        await store.activate("b")
        assert (await store.active_version()).version == "b"  # type: ignore[union-attr]
        assert (await store.get_version("a")).status == "retired"  # type: ignore[union-attr]
        with psycopg.connect(database_url) as conn, pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("UPDATE model_versions SET status = 'active' WHERE version = 'a'")
        await store.register_version("c", "/m", 4, status="candidate")
        with pytest.raises(RuntimeError, match="no complete index"):
            await store.activate("c")
    finally:
        await store.close()


@pytest.mark.parametrize("dim", [16, 2304])
async def test_search_matches_exact_neighbours_and_uses_the_version_index(database_url: str, dim: int) -> None:
    rows = 3000 if dim < 2000 else 600
    store = Store(database_url, ef_search=100)
    await store.open()
    try:
        docs = unit(rows, dim, seed=1)
        fcs = [FactCheck(id=f"f{i}", claim=f"claim {i}", title=f"title {i}", lang="en") for i in range(rows)]
        await store.upsert_fact_checks(fcs)
        await store.register_version("v1", "/m", dim, status="indexing")
        await store.write_embeddings("v1", [f.id for f in fcs], docs)
        await store.build_index("v1", dim)
        # A second version with other vectors: search must never cross versions.
        await store.register_version("v2", "/m", dim, status="indexing")
        await store.write_embeddings("v2", [f.id for f in fcs[:10]], unit(10, dim, seed=9))
        await store.build_index("v2", dim)

        queries = docs[:20] + 0.05 * unit(20, dim, seed=2)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        found = await search(store, "v1", dim, queries, top_k=5, min_score=-1)
        exact = np.argsort(-(queries @ docs.T), axis=1)[:, :5]
        recall = np.mean(
            [len({m.fact_check_id for m in f} & {f"f{j}" for j in e}) / 5 for f, e in zip(found, exact, strict=False)]
        )
        assert recall >= 0.9
        assert all(f[0].fact_check_id == f"f{i}" and f[0].rank == 1 for i, f in enumerate(found))
        assert all(f[0].claim == f"claim {i}" and f[0].title == f"title {i}" for i, f in enumerate(found))
        assert all(m.score >= n.score for f in found for m, n in itertools.pairwise(f))

        plan = await store.explain_search("v1", dim, queries[0])
        assert index_name("v1") in plan, plan
        with psycopg.connect(database_url) as conn:
            (definition,) = conn.execute(
                "SELECT indexdef FROM pg_indexes WHERE indexname = %s", (index_name("v1"),)
            ).fetchone()  # type: ignore[misc]
        assert ("halfvec(2304)" if dim > 2000 else "vector(16)") in definition

        high = await search(store, "v1", dim, queries[:3], top_k=5, min_score=0.9)
        assert all(all(m.score >= 0.9 for m in f) for f in high) and all(len(f) >= 1 for f in high)
    finally:
        await store.close()


async def test_upsert_delete_and_staleness(database_url: str) -> None:
    store = Store(database_url)
    await store.open()
    try:
        await store.register_version("v1", "/m", 4, status="active")
        await store.upsert_fact_checks([FactCheck(id="a", claim="x"), FactCheck(id="b", claim="y")])
        assert [f.id for f in await store.fact_checks_missing("v1")] == ["a", "b"]
        await store.write_embeddings("v1", ["a", "b"], unit(2, 4))
        assert await store.fact_checks_missing("v1") == []
        # An edited fact-check must be re-embedded.
        await store.upsert_fact_checks([FactCheck(id="a", claim="x, corrected")])
        assert [f.id for f in await store.fact_checks_missing("v1")] == ["a"]
        assert await store.delete_fact_checks(["b", "nope"]) == 1
        assert await store.count_embeddings("v1") == 1
        assert await store.count_fact_checks() == 1
    finally:
        await store.close()


async def test_hybrid_search_fuses_both_retrievers_and_explains_each_match(database_url: str) -> None:
    store = Store(database_url)
    await store.open()
    try:
        fcs = [
            FactCheck(id="es-5g", claim="Las antenas 5G no propagan el coronavirus", title="Antenas 5G", lang="es"),
            FactCheck(id="en-5g", claim="5G masts do not spread the virus", title="5G and COVID", lang="en"),
            FactCheck(id="en-moon", claim="The moon landing was not faked", lang="en"),
        ]
        await store.upsert_fact_checks(fcs)
        await store.register_version("v1", "/m", 4, status="indexing")
        # Dense favours the moon fact-check; lexical the 5G ones.
        await store.write_embeddings(
            "v1",
            ["es-5g", "en-5g", "en-moon"],
            np.array([[0, 1, 0, 0], [0.6, 0.8, 0, 0], [1, 0, 0, 0]], dtype=np.float32),
        )
        await store.build_index("v1", 4)
        query = np.array([[1, 0, 0, 0]], dtype=np.float32)
        text, lang = ["Are 5G masts spreading the virus?"], ["en"]
        dense = (await search(store, "v1", 4, query, text, lang, mode="dense", top_k=3))[0]
        lexical = (await search(store, "v1", 4, query, text, lang, mode="lexical", top_k=3))[0]
        hybrid = (await search(store, "v1", 4, query, text, lang, mode="hybrid", top_k=3))[0]
    finally:
        await store.close()
    assert [m.fact_check_id for m in dense] == ["en-moon", "en-5g", "es-5g"]
    assert lexical[0].fact_check_id == "en-5g" and lexical[0].lexical_rank == 1
    assert {m.fact_check_id for m in lexical} <= {"en-5g", "es-5g"}  # only lexical hits
    assert hybrid[0].fact_check_id == "en-5g"  # second by dense, first by lexical: fused first
    best = hybrid[0]
    assert (
        best.dense_rank == 2 and best.lexical_rank == 1 and best.fused_score == pytest.approx(1 / 62 + 1 / 61, abs=1e-6)
    )
    assert best.score == pytest.approx(0.6) and best.dense_score == best.score
    # English stemming on both sides: "masts"/"spreading" meet "masts"/"spread".
    assert {"5g", "mast", "spread", "virus"} <= set(best.shared_terms)
    assert [m.rank for m in hybrid] == [1, 2, 3]
