"""Integration tier: when a fact-check arrives for a claim nobody had one for, the posts the worker
abstained on get an updated result, and their cluster leaves the emerging claims (real tansu,
Postgres and worker)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from tests.conftest import consume_until, eventually, produce
from tests.fakes import cosine_is_probability
from tests.integration.test_clusters import DIM, opened_store, post, unit
from tests.integration.test_worker import seed_corpus
from worker.adapter.runtime import running
from worker.domain import ClusteredPost, Threshold
from worker.settings import Settings
from worker.wire import document_text

CLAIM = "Purple elephants secretly run the national weather service"
OTHER = "The price of bread doubled in one week in every shop"
NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


async def decide_at(runtime: Any, cut: float) -> None:
    """A decision model whose probability is the cosine; "match" from ``cut``."""
    version = runtime.models.current().version
    cuts = [Threshold("*", "match", cut, 0.9, 0.9, 0.9, 10)]
    await runtime.store.decisions.save_decision(version, cosine_is_probability().to_dict(), cuts, source="test")

    async def loaded() -> bool:
        return bool(runtime.models.current().decisions.thresholds == {("*", "match"): cut})

    assert await eventually(loaded, 15)


async def test_a_new_fact_check_re_matches_an_emerging_claims_posts_once_and_the_claim_leaves_the_list(
    stack_settings: Settings,
) -> None:
    # The tiny model's vectors are random and near one another: only a copy joins a cluster.
    update = {"rematch_interval_s": 0.5, "claims_report_interval_s": 0.0, "cluster_similarity": 0.9999}
    settings = stack_settings.model_copy(update=update)
    await seed_corpus(settings)
    copies = [CLAIM, f"RT @a: {CLAIM}", f"{CLAIM} https://t.co/y", f"{CLAIM} \U0001f418", CLAIM]
    posts = [
        {"id": f"e-{i}", "text": t, "platform": "x", "url": f"https://x.example/{i}"} for i, t in enumerate(copies)
    ]
    posts.append({"id": "other", "text": OTHER})
    async with running(settings) as runtime:
        await decide_at(runtime, 2.0)  # nothing reaches a tier: the worker abstains on every post
        await produce(
            settings.kafka_bootstrap, settings.topic_posts, [(p["id"].encode(), json.dumps(p).encode()) for p in posts]
        )
        first = await consume_until(settings.kafka_bootstrap, [settings.topic_matches], lambda rs: len(rs) >= 6)
        results = {json.loads(r.value)["post_id"]: json.loads(r.value) for r in first}
        assert all(not any(m["tier"] for m in r["matches"]) for r in results.values())
        cluster = results["e-0"]["cluster_id"]
        assert {results[f"e-{i}"]["cluster_id"] for i in range(5)} == {cluster} != {results["other"]["cluster_id"]}
        version = runtime.models.current().version
        [emerging] = await runtime.store.trends.emerging(version, datetime.now(UTC), min_posts=3)
        assert emerging.cluster_id == cluster

        # A cut only the new fact-check's cosine reaches (the tiny model's vectors are random, but
        # a fact-check that states the claim is nearer to it than any of the demo corpus).
        encoder = runtime.models.current().encoder
        demo = [document_text(fc.title, fc.claim) for fc in await runtime.store.corpus.all_fact_checks()]
        query = encoder.encode_queries([CLAIM, OTHER])
        new = float(query[0] @ encoder.encode_documents([CLAIM])[0])
        others = float(np.max(query @ encoder.encode_documents(demo).T))
        other_to_new = float(query[1] @ encoder.encode_documents([CLAIM])[0])
        assert new > max(others, other_to_new) + 0.01
        await decide_at(runtime, (new + max(others, other_to_new)) / 2)

        fc = {"id": "fc-elephants", "claim": CLAIM, "title": CLAIM, "lang": "en"}
        await produce(settings.kafka_bootstrap, settings.topic_factchecks, [(b"fc-elephants", json.dumps(fc).encode())])
        records = await consume_until(
            settings.kafka_bootstrap,
            [settings.topic_matches],
            lambda rs: sum(json.loads(r.value).get("rematched", False) for r in rs) >= 5,
            timeout_s=60,
        )
        await asyncio.sleep(2.0)  # a few more intervals: the corpus did not change again, nothing more is sent
        after = await consume_until(
            settings.kafka_bootstrap, [settings.topic_matches], lambda rs: len(rs) >= len(records)
        )
        updates = [json.loads(r.value) for r in after if json.loads(r.value).get("rematched")]
        assert sorted(u["post_id"] for u in updates) == [f"e-{i}" for i in range(5)]
        for update in updates:
            assert update["cluster_id"] == cluster and update["model_version"] == version
            assert update["matches"][0]["fact_check_id"] == "fc-elephants" and update["matches"][0]["tier"] == "match"
            assert update["url"] == f"https://x.example/{update['post_id'][2:]}" and update["platform"] == "x"
        assert {r.key for r in after if json.loads(r.value).get("rematched")} == {f"e-{i}".encode() for i in range(5)}

        assert await runtime.store.trends.emerging(version, datetime.now(UTC), min_posts=3) == []
        summary = await runtime.store.clusters.cluster(cluster)
        assert summary is not None and summary.fact_check_id == "fc-elephants" and summary.abstained == 0
        trending = await runtime.store.trends.trending(datetime.now(UTC), min_posts=1)
        assert [(t.fact_check_id, t.last_day) for t in trending] == [("fc-elephants", 5)]
        assert runtime.metrics.rematched._value.get() == 5


async def test_a_pass_runs_once_per_corpus_generation_and_counts_each_post_once(database_url: str) -> None:
    store = await opened_store(database_url)
    try:
        rematch = store.rematches
        posts = [post(f"u{i}", unit(1, 0.01 * i), seen_at=NOW - timedelta(hours=i), text="claim") for i in range(4)]
        posts.append(post("m", unit(0, 1), fact_check_id="fc1", probability=0.9))
        summaries = await store.clusters.assign_clusters("v1", DIM, posts, cut=0.9, window_s=86_400 * 30)
        cluster = summaries[0].cluster_id
        assert await rematch.rematch_generation("v1") is None  # the version has no vectors yet
        await store.embeddings.write_embeddings("v1", ["fc1"], unit(0, 1)[None, :])
        generation = await rematch.rematch_generation("v1")
        assert generation is not None  # its vectors changed, never re-matched
        [unmatched] = await rematch.unmatched_clusters("v1", 86_400 * 30, 10)
        assert unmatched.cluster_id == cluster and unmatched.lang == "en" and unmatched.text == "claim"
        found = await rematch.abstained_posts("v1", [cluster], 3)
        assert [p.post_id for p in found] == ["u0", "u1", "u2"]  # newest first, bounded
        assert isinstance(found[0], ClusteredPost) and found[0].platform == "x"

        assert await rematch.record_rematches("v1", generation, [(p, "fc1", 0.8) for p in found]) == 3
        assert await rematch.rematch_generation("v1") is None
        # Recorded again (a pass whose updates were published twice): nothing counted twice.
        assert await rematch.record_rematches("v1", generation, [(p, "fc1", 0.8) for p in found]) == 0
        summary = await store.clusters.cluster(cluster)
        assert summary is not None and summary.fact_check_id == "fc1" and summary.abstained == 1
        assert await rematch.unmatched_clusters("v1", 86_400 * 30, 10) == []
        [hits] = await store.trends.trending(NOW + timedelta(hours=1), min_posts=1)
        assert hits.last_day == 4  # "m" on arrival, three re-matched

        # The next change of the version's vectors: due again.
        await store.embeddings.write_embeddings("v1", ["fc1"], unit(0, 1, 0.1)[None, :])
        assert (await rematch.rematch_generation("v1") or 0) > generation
    finally:
        await store.close()
