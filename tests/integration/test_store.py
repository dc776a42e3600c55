"""Integration tier: the store against a real embedded Postgres + pgvector."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import psycopg
import pytest

from worker.retrieval.decision import Decisions
from worker.retrieval.modes import FusionConfig, ModeName
from worker.retrieval.openset import twin_groups
from worker.retrieval.retriever import RetrievalConfig, Retriever, queries_of
from worker.storage import Store, apply_migrations, index_name
from worker.wire import FactCheck, Match


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
    retriever = Retriever(store.candidates, RetrievalConfig(FusionConfig(mode, 60, 1.0, 1.0), top_k, min_score, 50))
    n = len(queries)
    found = await retriever.search(version, dim, queries_of(texts or [""] * n, langs or [None] * n, queries))
    return [f.matches for f in found]


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
            await store.registry.register_version(v, "/m", 4, status="indexing")
            await store.embeddings.build_index(v, 4)
        await store.registry.activate("a")
        await store.registry.activate("b")
        assert (await store.registry.active_version()).version == "b"  # type: ignore[union-attr]
        assert (await store.registry.get_version("a")).status == "retired"  # type: ignore[union-attr]
        with psycopg.connect(database_url) as conn, pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("UPDATE model_versions SET status = 'active' WHERE version = 'a'")
        await store.registry.register_version("c", "/m", 4, status="candidate")
        with pytest.raises(RuntimeError, match="no complete index"):
            await store.registry.activate("c")
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
        await store.corpus.upsert_fact_checks(fcs)
        await store.registry.register_version("v1", "/m", dim, status="indexing")
        await store.embeddings.write_embeddings("v1", [f.id for f in fcs], docs)
        await store.embeddings.build_index("v1", dim)
        # A second version with other vectors: search must never cross versions.
        await store.registry.register_version("v2", "/m", dim, status="indexing")
        await store.embeddings.write_embeddings("v2", [f.id for f in fcs[:10]], unit(10, dim, seed=9))
        await store.embeddings.build_index("v2", dim)

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

        plan = await store.embeddings.explain_search("v1", dim, queries[0])
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
        await store.registry.register_version("v1", "/m", 4, status="active")
        await store.corpus.upsert_fact_checks([FactCheck(id="a", claim="x"), FactCheck(id="b", claim="y")])
        assert [f.id for f in await store.corpus.fact_checks_missing("v1")] == ["a", "b"]
        await store.embeddings.write_embeddings("v1", ["a", "b"], unit(2, 4))
        assert await store.corpus.fact_checks_missing("v1") == []
        # An edited fact-check must be re-embedded.
        await store.corpus.upsert_fact_checks([FactCheck(id="a", claim="x, corrected")])
        assert [f.id for f in await store.corpus.fact_checks_missing("v1")] == ["a"]
        assert await store.corpus.delete_fact_checks(["b", "nope"]) == 1
        assert await store.embeddings.count_embeddings("v1") == 1
        assert await store.corpus.count_fact_checks() == 1
    finally:
        await store.close()


async def test_a_large_corpus_load_is_vacuumed_and_analysed_and_a_small_one_does_not_pay_for_it(
    database_url: str,
) -> None:
    from worker.storage.corpus import ANALYZE_AFTER_ROWS

    async def analyzed() -> dict[str, tuple[int, int]]:
        with psycopg.connect(database_url) as conn:
            rows = conn.execute(
                "SELECT relname, analyze_count, vacuum_count FROM pg_stat_user_tables"
                " WHERE schemaname = current_schema() AND relname IN ('fact_checks', 'fact_check_terms')"
            ).fetchall()
        return {name: (int(analyses), int(vacuums)) for name, analyses, vacuums in rows}

    store = Store(database_url)
    await store.open()
    try:
        before = await analyzed()
        await store.corpus.upsert_fact_checks([FactCheck(id="one", claim="a small change")])
        assert await analyzed() == before
        words = ["vaccine", "border", "election", "flood", "tax", "moon", "virus", "bridge"]
        load = [FactCheck(id=f"fc{i}", claim=f"{words[i % 8]} {words[i % 7]} {i}") for i in range(ANALYZE_AFTER_ROWS)]
        await store.corpus.upsert_fact_checks(load)
        after = await analyzed()  # both count commands only, never autovacuum's
        for table in ("fact_checks", "fact_check_terms"):
            analyses, vacuums = before.get(table, (0, 0))
            assert after[table] == (analyses + 1, vacuums + 1), table
        # The postings are all visible: a lexeme's are read from the covering index alone.
        with psycopg.connect(database_url) as conn:
            conn.execute("SET enable_seqscan = off; SET enable_bitmapscan = off")
            postings = "SELECT fact_check_id, tf, dl FROM fact_check_terms WHERE lexeme = 'vaccin'"
            plan = "\n".join(row[0] for row in conn.execute(f"EXPLAIN (ANALYZE, COSTS OFF) {postings}").fetchall())
        assert "Index Only Scan" in plan and "Heap Fetches: 0" in plan, plan
        # A connection that ran the VACUUM goes back to the pool in a transaction as usual.
        await store.corpus.upsert_fact_checks([FactCheck(id="two", claim="another small change")])
        assert await store.corpus.count_fact_checks() == ANALYZE_AFTER_ROWS + 2
    finally:
        await store.close()


async def test_bm25_reads_the_planners_counts_of_a_large_corpus_and_counts_a_small_or_uncounted_one(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.storage import candidates

    words = ["vaccine", "border", "election", "flood", "tax", "moon", "virus", "bridge", "river", "storm"]
    corpus = [FactCheck(id=f"fc{i}", claim=f"{words[i % 10]} {words[i % 7]} {words[i % 3]} {i}") for i in range(40)]
    store = Store(database_url)
    await store.open()

    async def scores() -> list[float]:
        found = await search(
            store, "bm", 4, unit(2, 4, seed=3), ["vaccine flood tax", "moon storm"], ["en", "en"], mode="lexical"
        )
        return [m.lexical_score for post in found for m in post if m.lexical_score is not None]

    try:
        await store.corpus.upsert_fact_checks(corpus)
        await store.registry.register_version("bm", "/m", 4, status="indexing")
        ids = [f"fc{i}" for i in range(60)]
        await store.embeddings.write_embeddings("bm", ids[:40], unit(40, 4))
        counted = await scores()
        monkeypatch.setattr(candidates, "EXACT_STATS_BELOW", 1)
        assert await scores() == counted  # never vacuumed or analysed since the load: counted
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE) fact_checks, fact_check_terms")
        assert await scores() == pytest.approx(counted, rel=1e-5)  # the planner's counts, exact after a vacuum
        # More fact-checks, not yet counted by a vacuum: the planner's counts lag, a count does not.
        await store.corpus.upsert_fact_checks(
            [FactCheck(id=f"fc{i}", claim=f"{words[i % 10]} {i}") for i in range(40, 60)]
        )
        await store.embeddings.write_embeddings("bm", ids[40:], unit(20, 4, seed=1))
        estimated = await scores()
        monkeypatch.setattr(candidates, "EXACT_STATS_BELOW", 10**9)
        grown = await scores()
        assert estimated != pytest.approx(grown, rel=1e-5)
    finally:
        await store.close()


async def test_fact_check_twins_in_sql_agree_with_the_python_definition(database_url: str) -> None:
    """Copies of one fact-check (quotes and spacing aside) are found alike in a corpus file and in Postgres."""
    fcs = [
        FactCheck(id="a", title="Is ‘X’ real?", claim='A video shows "X" at the  beach.'),
        FactCheck(id="a2", title="Is 'X' real?", claim="A video shows 'X' at the beach."),
        FactCheck(id="a3", title=" Is «X» real? ", claim="A video shows “X” at the\tbeach.\n"),
        FactCheck(id="case", title="Is 'x' real?", claim="A video shows 'X' at the beach."),  # case differs
        FactCheck(id="word", title="Is X real?", claim="A photo shows X at the beach."),
        FactCheck(id="u1", claim="Le café coûte 2 € à Zürich"),
        FactCheck(id="u2", title="", claim="Le café coûte 2 € à   Zürich"),
        FactCheck(id="alone", claim="Nothing like it"),
    ]
    store = Store(database_url)
    await store.open()
    try:
        await store.corpus.upsert_fact_checks(fcs)
        in_sql = await store.corpus.fact_check_twins([fc.id for fc in fcs])
        assert await store.corpus.fact_check_twins(["alone"]) == {}
    finally:
        await store.close()
    assert in_sql == twin_groups(fcs)
    assert in_sql["a"] == {"a", "a2", "a3"} and in_sql["u1"] == {"u1", "u2"}
    assert "case" not in in_sql and "word" not in in_sql


async def test_lexical_postings_follow_every_corpus_change_and_rank_by_bm25(database_url: str) -> None:
    def postings() -> dict[str, set[str]]:
        with psycopg.connect(database_url) as conn:
            rows = conn.execute("SELECT fact_check_id, lexeme FROM fact_check_terms").fetchall()
        found: dict[str, set[str]] = {}
        for fc_id, lexeme in rows:
            found.setdefault(fc_id, set()).add(lexeme)
        return found

    store = Store(database_url)
    await store.open()
    try:
        await store.corpus.upsert_fact_checks(
            [
                FactCheck(id="common", claim="The president said the election was stolen", lang="en"),
                FactCheck(id="rare", claim="The president did not say vinegar cures anything", lang="en"),
                FactCheck(id="other", claim="The president visited the election office", lang="en"),
            ]
        )
        assert postings()["rare"] >= {"vinegar", "cure", "presid"}
        await store.corpus.upsert_fact_checks([FactCheck(id="rare", claim="Vinegar does not cure the flu", lang="en")])
        assert "presid" not in postings()["rare"] and "flu" in postings()["rare"]
        await store.corpus.delete_fact_checks(["other"])
        assert "other" not in postings()
        await store.registry.register_version("lx", "/m", 4, status="indexing")
        await store.embeddings.write_embeddings("lx", ["common", "rare"], unit(2, 4))
        # "vinegar" is in one fact-check, "president" in the other: the rarer shared term wins.
        found = await search(
            store, "lx", 4, unit(1, 4, seed=5), ["The president and vinegar"], ["en"], mode="lexical", top_k=2
        )
        assert [m.fact_check_id for m in found[0]] == ["rare", "common"]
        assert found[0][0].lexical_score is not None and found[0][0].lexical_score > found[0][1].lexical_score  # type: ignore[operator]
    finally:
        await store.close()


async def test_a_decision_model_of_an_earlier_release_is_served_without_tiers(database_url: str) -> None:
    from tests.unit.test_decisions import cosine_is_probability

    store = Store(database_url)
    await store.open()
    try:
        await store.registry.register_version("old", "/m", 4, status="indexing")
        await store.decisions.save_decision("old", cosine_is_probability().to_dict(), [], source="test")
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                "UPDATE decision_models SET model = jsonb_set(model::jsonb, '{features,5}', '\"lexical_score\"')"
                " WHERE model_version = 'old'"
            )
        assert (Decisions.from_stored(await store.decisions.stored_decision("old"))).model is None
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
            # A lexical hit with no embedding under v1 (added after the version was indexed).
            FactCheck(id="en-5g-new", claim="This 5G tower photo is from 2015", lang="en"),
        ]
        await store.corpus.upsert_fact_checks(fcs)
        await store.registry.register_version("v1", "/m", 4, status="indexing")
        # Dense favours the moon fact-check; lexical the 5G ones.
        await store.embeddings.write_embeddings(
            "v1",
            ["es-5g", "en-5g", "en-moon"],
            np.array([[0, 1, 0, 0], [0.6, 0.8, 0, 0], [1, 0, 0, 0]], dtype=np.float32),
        )
        await store.embeddings.build_index("v1", 4)
        query = np.array([[1, 0, 0, 0]], dtype=np.float32)
        text, lang = ["Are 5G masts spreading the virus?"], ["en"]
        dense = (await search(store, "v1", 4, query, text, lang, mode="dense", top_k=3))[0]
        lexical = (await search(store, "v1", 4, query, text, lang, mode="lexical", top_k=3))[0]
        hybrid = (await search(store, "v1", 4, query, text, lang, mode="hybrid", top_k=3))[0]
    finally:
        await store.close()
    assert [m.fact_check_id for m in dense] == ["en-moon", "en-5g", "es-5g"]
    assert lexical[0].fact_check_id == "en-5g" and lexical[0].lexical_rank == 1
    assert {m.fact_check_id for m in lexical} <= {"en-5g", "es-5g"}  # only lexical hits, each embedded
    # A candidate only the lexical side found still carries its cosine (read from its embedding).
    assert lexical[0].dense_rank is None and lexical[0].dense_score == pytest.approx(0.6)
    assert hybrid[0].fact_check_id == "en-5g"  # second by dense, first by lexical: fused first
    best = hybrid[0]
    assert (
        best.dense_rank == 2 and best.lexical_rank == 1 and best.fused_score == pytest.approx(1 / 62 + 1 / 61, abs=1e-6)
    )
    assert best.score == pytest.approx(0.6) and best.dense_score == best.score
    # English stemming on both sides: "masts"/"spreading" meet "masts"/"spread".
    assert {"5g", "mast", "spread", "virus"} <= set(best.shared_terms)
    assert [m.rank for m in hybrid] == [1, 2, 3]


async def test_a_decision_model_and_its_cuts_are_stored_together_and_quarantines_are_shared(database_url: str) -> None:
    from tests.unit.test_decisions import cosine_is_probability
    from worker.retrieval.tiers import Threshold

    store = Store(database_url)
    await store.open()
    try:
        await store.registry.register_version("dv", "/m", 4, status="indexing")
        assert (Decisions.from_stored(await store.decisions.stored_decision("dv"))).model is None
        cuts = [
            Threshold("*", "match", 0.9, 0.95, 0.96, 0.7, 100),
            Threshold("de", "suggestion", 0.5, 0.6, 0.6, 0.9, 30),
        ]
        await store.decisions.save_decision(
            "dv", cosine_is_probability().to_dict(), cuts, source="test", report={"auroc": 0.9}
        )
        decisions = Decisions.from_stored(await store.decisions.stored_decision("dv"))
        assert decisions.model == cosine_is_probability()
        assert decisions.thresholds == {("*", "match"): 0.9, ("de", "suggestion"): 0.5}
        assert (await store.decisions.decision_report("dv")) == {"auroc": 0.9}
        # A refit replaces both at once.
        await store.decisions.save_decision("dv", cosine_is_probability().to_dict(), cuts[:1], source="again")
        assert (Decisions.from_stored(await store.decisions.stored_decision("dv"))).thresholds == {("*", "match"): 0.9}

        assert await store.quarantine.quarantine("fc-generic", "matched everything", "worker@a")
        assert not await store.quarantine.quarantine(
            "fc-generic", "again", "worker@b"
        )  # one open quarantine per fact-check
        assert await store.quarantine.quarantined() == {"fc-generic"}
        assert await store.quarantine.clear_quarantine("fc-generic", "moderator")
        assert not await store.quarantine.clear_quarantine("fc-generic", "moderator")
        assert await store.quarantine.quarantined() == frozenset()
        assert await store.quarantine.quarantine("fc-generic", "matched everything again", "worker@a")
        log = await store.quarantine.quarantine_log()
        assert [r["cleared_by"] for r in log if r["fact_check_id"] == "fc-generic"] == [None, "moderator"]
    finally:
        await store.close()


async def test_a_planted_fact_check_that_matches_everything_is_quarantined_for_every_worker(database_url: str) -> None:
    """A bad edit makes one fact-check the nearest neighbour of every post: the first worker's
    watch flags it, records it in Postgres, and a second worker withholds it from tier "match" too."""
    from tests.unit.test_decisions import cosine_is_probability
    from worker.retrieval.decision import Decisions
    from worker.retrieval.overmatch import OverMatchConfig, OverMatchWatch, QuarantineGuard

    dim = 16
    store = Store(database_url)
    await store.open()
    try:
        docs = unit(50, dim, seed=3)
        fcs = [FactCheck(id=f"f{i}", claim=f"claim {i}", lang="en") for i in range(50)]
        center = docs.mean(axis=0) / np.linalg.norm(docs.mean(axis=0))
        fcs.append(FactCheck(id="planted", claim="this is false", lang="en"))
        await store.corpus.upsert_fact_checks(fcs)
        await store.registry.register_version("v1", "/m", dim, status="indexing")
        await store.embeddings.write_embeddings("v1", [f.id for f in fcs], np.vstack([docs, center[None, :]]))
        await store.embeddings.build_index("v1", dim)
        decisions = Decisions(cosine_is_probability(), {("*", "match"): 0.0, ("*", "suggestion"): -1.0})

        @dataclass
        class Worker:
            """A worker's search as the runtime runs it: the guard observes what was published."""

            retriever: Retriever
            guard: QuarantineGuard

            async def search(self, vectors: np.ndarray, decisions: Decisions) -> list[list[Match]]:
                queries = queries_of([""] * len(vectors), ["en"] * len(vectors), vectors)
                found = [f.matches for f in await self.retriever.search("v1", dim, queries, decisions)]
                tiered = (frozenset(m.fact_check_id for m in ms if m.tier is not None) for ms in found)
                await self.guard.observe((ids, None) for ids in tiered)
                return found

        def worker(name: str) -> Worker:
            watch = OverMatchWatch(OverMatchConfig(window=100, share=0.3, factor=5.0, min_matches=20))
            guard = QuarantineGuard(store.quarantine, watch, refresh_s=0.0, enforce=True, worker_id=name)
            retriever = Retriever(
                store.candidates, RetrievalConfig(FusionConfig("dense", 60, 1.0, 1.0), 3, -1.0, 50), guard
            )
            return Worker(retriever, guard)

        # Posts near the centre of everything: the planted fact-check is everyone's rank 1.
        posts = center[None, :] + 0.6 * unit(40, dim, seed=4)
        posts /= np.linalg.norm(posts, axis=1, keepdims=True)
        first = worker("worker-a")
        found = await first.search(posts[:20], decisions)
        assert all(ms[0].fact_check_id == "planted" and ms[0].tier == "match" for ms in found)
        assert await store.quarantine.quarantined() == {"planted"}
        log = await store.quarantine.quarantine_log()
        assert log[0]["flagged_by"] == "worker-a" and "of the 20 claims" in log[0]["reason"]
        # Another worker reads the quarantine from Postgres: "planted" is at most a suggestion there.
        second = worker("worker-b")
        found = await second.search(posts[20:], decisions)
        assert all(m.tier == "suggestion" for ms in found for m in ms if m.fact_check_id == "planted")
        assert any(m.tier == "match" for ms in found for m in ms if m.fact_check_id != "planted")
        # Cleared by a moderator: back in tier "match" on the next refresh.
        assert await store.quarantine.clear_quarantine("planted", "moderator")
        found = await second.search(posts[20:21], decisions)
        assert found[0][0].fact_check_id == "planted" and found[0][0].tier == "match"
    finally:
        await store.close()
