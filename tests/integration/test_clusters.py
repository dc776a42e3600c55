"""Integration tier: claim clusters in Postgres and in the running worker (real tansu)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg

from tests.conftest import consume_until, produce
from tests.integration.test_worker import bodies, seed_corpus
from worker.adapter.runtime import running
from worker.domain import ClusterPost
from worker.settings import Settings
from worker.storage import Store
from worker.wire import FactCheck

DIM = 8
T0 = datetime(2026, 12, 1, tzinfo=UTC)


def unit(*values: float) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[: len(values)] = values
    return v / np.linalg.norm(v)


def post(pid: str, vector: np.ndarray | None, *, origin: str | None = None, **kw: Any) -> ClusterPost:
    fields: dict[str, Any] = {"lang": "en", "platform": "x", "seen_at": T0, "text": pid} | kw
    return ClusterPost(pid, vector, origin, **fields)


async def opened_store(database_url: str) -> Store:
    store = Store(database_url)
    await store.open()
    await store.corpus.upsert_fact_checks([FactCheck(id="fc1", claim="c")])
    await store.registry.register_version("v1", "/m", DIM, status="indexing")
    await store.embeddings.build_index("v1", DIM)
    return store


async def test_posts_join_the_nearest_cluster_above_the_cut_repeats_join_their_origin_and_redelivery_counts_once(
    database_url: str,
) -> None:
    store = await opened_store(database_url)
    try:
        assign = store.clusters.assign_clusters
        first = await assign(
            "v1",
            DIM,
            [
                post("a", unit(1, 0.05), fact_check_id="fc1", probability=0.9),
                post("b", unit(1, 0.1), lang="de", platform="y", seen_at=T0 + timedelta(hours=2)),
                post("c", unit(0, 1)),
                post("d", None, origin="a", seen_at=T0 - timedelta(hours=1)),
            ],
            cut=0.9,
            window_s=3600,
        )
        a, b, c, d = first
        assert a.cluster_id == b.cluster_id == d.cluster_id != c.cluster_id
        assert d.size == 3 and d.langs == {"en": 2, "de": 1} and d.platforms == {"x": 2, "y": 1}
        assert d.first_seen == T0 - timedelta(hours=1) and d.last_seen == T0 + timedelta(hours=2)
        assert d.fact_check_id == "fc1" and d.abstained == 2
        assert c.size == 1 and c.fact_check_id is None

        # Redelivered: the same clusters, nothing counted twice.
        again = await assign("v1", DIM, [post("b", unit(1, 0.1)), post("c", unit(0, 1))], cut=0.9, window_s=3600)
        assert [s.cluster_id for s in again] == [b.cluster_id, c.cluster_id] and again[0].size == 3

        # A cluster no post joined within the window is not joined again; forgotten later.
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            stale = "UPDATE claim_clusters SET updated_at = now() - interval '2 hours' WHERE id = %s"
            await conn.execute(stale, (c.cluster_id,))
        [late] = await assign("v1", DIM, [post("e", unit(0, 1))], cut=0.9, window_s=3600)
        assert late.cluster_id != c.cluster_id
        assert await store.clusters.forget_clusters(3600) == 1
        assert await store.clusters.cluster(c.cluster_id) is None
    finally:
        await store.close()


async def test_a_translation_joins_its_fact_checks_cluster_once_per_language_and_only_when_asked(
    database_url: str,
) -> None:
    store = await opened_store(database_url)
    try:
        assign = store.clusters.assign_clusters
        kw: dict[str, Any] = {"cut": 0.9, "window_s": 3600, "across_languages": True}
        [en] = await assign("v1", DIM, [post("en", unit(1, 0.05), fact_check_id="fc1", probability=0.9)], **kw)
        # Far from it by vector (a translation under a small model), the same fact-check reached.
        de, de2, es = await assign(
            "v1",
            DIM,
            [
                post("de", unit(0, 1), lang="de", fact_check_id="fc1", probability=0.8),
                post("de2", unit(0, 0, 1), lang="de", fact_check_id="fc1", probability=0.8),
                post("es", unit(0, 0, 0, 1), lang="es", fact_check_id="fc1", probability=0.7),
            ],
            **kw,
        )
        assert de.cluster_id == es.cluster_id == en.cluster_id != de2.cluster_id
        assert es.size == 3 and es.langs == {"en": 1, "de": 1, "es": 1} and es.fact_check_id == "fc1"
        # The joined centroid is the running mean of its three posts.
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            row = await (
                await conn.execute("SELECT centroid::text FROM claim_clusters WHERE id = %s", (en.cluster_id,))
            ).fetchone()
        assert row is not None
        centroid = np.asarray(json.loads(row[0]), dtype=np.float32)
        mean = unit(1, 0.05) + unit(0, 1) + unit(0, 0, 0, 1)
        assert np.allclose(centroid, mean / np.linalg.norm(mean), atol=1e-5)
        # Off (the store's default), a far post starts its own cluster whatever its fact-check.
        [fr] = await assign(
            "v1", DIM, [post("fr", unit(0, 0, 0, 0, 1), lang="fr", fact_check_id="fc1")], cut=0.9, window_s=3600
        )
        assert fr.cluster_id != en.cluster_id
    finally:
        await store.close()


async def test_two_workers_assigning_at_once_agree_on_one_cluster(database_url: str) -> None:
    stores = [await opened_store(database_url), Store(database_url)]
    await stores[1].open()
    try:
        rng = np.random.default_rng(0)
        base = unit(1, 1, 1)

        async def worker(store: Store, name: str) -> list[int]:
            out = []
            for i in range(10):
                noise = base + 0.02 * rng.normal(size=DIM).astype(np.float32)
                [s] = await store.clusters.assign_clusters(
                    "v1", DIM, [post(f"{name}-{i}", noise / np.linalg.norm(noise))], cut=0.9, window_s=3600
                )
                out.append(s.cluster_id)
            return out

        left, right = await asyncio.gather(worker(stores[0], "l"), worker(stores[1], "r"))
        assert len(set(left) | set(right)) == 1
        assert (await stores[0].clusters.cluster(left[0])).size == 20  # type: ignore[union-attr]
    finally:
        for store in stores:
            await store.close()


async def test_results_carry_their_claim_cluster_and_repeats_join_their_origins(stack_settings: Settings) -> None:
    # The tests' tiny random model cannot tell claims apart by meaning: a cut this close to 1 joins
    # only what repeats a post. Near-copies by meaning are measured with real models by
    # benchmarks/viral_stream.py.
    settings = stack_settings.model_copy(update={"cluster_similarity": 0.9999})
    await seed_corpus(settings)
    claim = "5G towers spread the coronavirus across Europe"
    texts = {
        "orig": claim,
        "retweet": f"RT @x: {claim}",
        "other": "The moon landing was filmed in a Hollywood studio by Stanley Kubrick",
        "link": f"{claim} https://t.co/abc",
    }
    async with running(settings):
        for pid, text in texts.items():  # one at a time: each joins what the ones before it made
            body = json.dumps({"id": pid, "text": text, "platform": "x"}).encode()
            await produce(settings.kafka_bootstrap, settings.topic_posts, [(pid.encode(), body)])
            await consume_until(
                settings.kafka_bootstrap,
                [settings.topic_matches],
                lambda rs, pid=pid: any(json.loads(r.value)["post_id"] == pid for r in rs),
            )
        records = await consume_until(settings.kafka_bootstrap, [settings.topic_matches], lambda rs: len(rs) >= 4)
    results = {r["post_id"]: r for r in bodies(records, settings.topic_matches)}
    cluster = results["orig"]["cluster_id"]
    assert cluster is not None and results["orig"]["cluster"]["size"] == 1
    assert results["retweet"]["cluster_id"] == cluster and results["retweet"]["duplicate_of"] == "orig"
    assert results["other"]["cluster_id"] != cluster and results["other"]["cluster"]["size"] == 1
    last = results["link"]["cluster"]
    assert results["link"]["cluster_id"] == cluster and last["size"] == 3 and last["platforms"] == {"x": 3}
    assert last["fact_check_id"] == (
        results["orig"]["matches"][0]["fact_check_id"]
        if results["orig"]["matches"] and results["orig"]["matches"][0]["tier"]
        else None
    )


async def test_calibration_fits_the_versions_cluster_cut_and_clustering_uses_it(
    database_url: str, make_settings: Any
) -> None:
    from tests.integration.test_worker import DEMO_FACT_CHECKS
    from worker.configs import bootstrap_active_version, calibration_config, encoder_loader, model_manager
    from worker.core.clusters import Clustering
    from worker.retrieval.calibrate import LabelledPosts, calibrate_version
    from worker.retrieval.decision import Decisions
    from worker.retrieval.evaluation import corpus_from_rows, load_jsonl
    from worker.wire import document_text

    settings = make_settings(database_url=database_url, tier_min_support=5)
    store = Store(database_url)
    await store.open()
    try:
        docs = corpus_from_rows(load_jsonl(DEMO_FACT_CHECKS))
        await store.corpus.upsert_fact_checks(docs)
        mv = await bootstrap_active_version(store, settings, model_manager(store, settings))
        texts = {f"q{i}": document_text(d.title, d.claim) for i, d in enumerate(docs)}
        golds = {f"q{i}": {d.id} for i, d in enumerate(docs)}
        encoder = encoder_loader(settings)(mv.path)
        calibration = await calibrate_version(
            store.candidates, store.decisions, calibration_config(settings), mv.version, encoder,
            LabelledPosts(texts, {}, golds), source="test",
        )  # fmt: skip
        fitted = calibration.report["cluster_cut"]
        assert fitted["pairs"] == len(docs) * (len(docs) - 1) // 2 and fitted["copies"] == len(docs)
        assert fitted["different_claims"] <= fitted["cut"] <= fitted["same_claim"]
        served = Decisions.from_stored(await store.decisions.stored_decision(mv.version), mv.version)
        assert served.cluster_cut == fitted["cut"] == calibration.decisions().cluster_cut
        # Two posts far apart: the setting's cut (-1) would put them together, the version's keeps them apart.
        posts = [post("x", unit(1, 0)), post("y", unit(-1, 0.01))]
        dim = DIM
        await store.registry.register_version("v-dim8", "/m", dim, status="indexing")
        await store.embeddings.build_index("v-dim8", dim)
        together = Clustering(store.clusters, -1.0, 3600, fitted=False)
        apart = Clustering(store.clusters, -1.0, 3600)
        a, b = await apart.assign("v-dim8", dim, posts, fitted_cut=max(fitted["cut"], 0.0))
        assert a.cluster_id != b.cluster_id
        await store.registry.register_version("v-other", "/m", dim, status="indexing")
        await store.embeddings.build_index("v-other", dim)
        c, d = await together.assign("v-other", dim, [post("z", unit(1, 0)), post("w", unit(-1, 0.01))], 0.99)
        assert c.cluster_id == d.cluster_id, "with fitted cuts off, the setting's cut holds"
    finally:
        await store.close()
