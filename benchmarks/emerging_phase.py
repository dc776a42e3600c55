"""The viral stream's emerging-claims phase (run by benchmarks/viral_stream.py after its paths).

The fact-checks of the stream's spiking claims are withheld from the corpus, the stream goes
through the worker again, and the emerging list is read at the stream's end: the spiking claims
should be among its top 10 (precision and recall at 10, a cluster counting as the claim most of
its posts make). The fact-checks are then loaded again (and embedded under the serving version),
each spiking claim is posted once more, and those posts should match their gold fact-check in a
tier and their clusters leave the list.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks.perf_common import Model
from benchmarks.viral_stream import ROOT, ResultReader, path_settings, produce_posts
from tests.conftest import settings_env
from worker.settings import Settings
from worker.wire import FactCheck, document_text


async def _store(settings: Settings) -> Any:
    from worker.storage import Store

    store = Store(settings.require_database_url())
    await store.open()
    return store


async def withhold(settings: Settings, ids: set[str]) -> list[FactCheck]:
    """Delete the fact-checks ``ids`` (their vectors go by cascade) and every stored answer and cluster."""
    store = await _store(settings)
    try:
        kept = [fc for fc in await store.corpus.all_fact_checks() if fc.id in ids]
        await store.corpus.delete_fact_checks(sorted(ids))
        await store.answers.forget_answers(0, limit=1_000_000)
        await store.clusters.forget_clusters(0, limit=1_000_000)
        return kept
    finally:
        await store.close()


async def restore(settings: Settings, model: Model, fact_checks: list[FactCheck]) -> None:
    store = await _store(settings)
    try:
        await store.corpus.upsert_fact_checks(fact_checks)
        vectors = model.encoder.encode_documents([document_text(fc.title, fc.claim) for fc in fact_checks])
        await store.embeddings.write_embeddings(model.version, [fc.id for fc in fact_checks], vectors)
    finally:
        await store.close()


async def emerging(settings: Settings, version: str, now: datetime) -> list[Any]:
    store = await _store(settings)
    try:
        return list(await store.trends.emerging(version, now, limit=10))
    finally:
        await store.close()


def majority_claims(stream: list[dict[str, Any]], results: dict[str, dict[str, Any]]) -> dict[int, Any]:
    """Each cluster's claim: the one most of its posts make."""
    members: dict[int, Counter[Any]] = defaultdict(Counter)
    for post in stream:
        members[results[post["id"]]["cluster_id"]][post["claim"]] += 1
    return {cluster: claims.most_common(1)[0][0] for cluster, claims in members.items()}


def emerging_phase(model: Model, base: Settings, stream: list[dict[str, Any]]) -> dict[str, Any]:
    from worker.adapter.topics import ensure_topics

    spiking = {p["claim"] for p in stream if p["spike"]}
    gold = {p["claim"]: p["fact_check"] for p in stream}
    withheld = asyncio.run(withhold(base, {gold[c] for c in spiking}))
    settings = path_settings(base, model)
    asyncio.run(ensure_topics(settings))
    reader = ResultReader(settings.kafka_bootstrap, settings.topic_matches)
    log = (Path(base.model_store) / f"worker-{settings.group_id}.log").open("ab")
    env = settings_env(settings)
    process = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "worker"], cwd=ROOT, env=env, stdout=log, stderr=log
    )
    try:
        produce_posts(settings.kafka_bootstrap, settings.topic_posts, "emg", stream)
        reader.until("emg", len(stream), 1800)
        results = {k.removeprefix("emg-"): v for k, v in reader.results.items() if k.startswith("emg-")}
        end = max(datetime.fromisoformat(p["created_at"]) for p in stream) + timedelta(minutes=1)
        top = asyncio.run(emerging(settings, model.version, end))
        claim_of = majority_claims(stream, results)
        found = [claim_of.get(c.cluster_id) for c in top]
        precision = sum(c in spiking for c in found) / max(len(found), 1)
        recall = len(spiking & set(found)) / len(spiking)
        asyncio.run(restore(settings, model, withheld))
        again = [
            {
                "id": f"again-{c}",
                "text": next(p["text"] for p in stream if p["claim"] == c),
                "created_at": end.isoformat(),
            }
            for c in sorted(spiking)
        ]
        produce_posts(settings.kafka_bootstrap, settings.topic_posts, "back", again)
        reader.until("back", len(again), 600)
        back = [reader.results[f"back-again-{c}"] for c in sorted(spiking)]
        matched = sum(
            bool(r["matches"]) and r["matches"][0]["fact_check_id"] == gold[c] and r["matches"][0]["tier"] is not None
            for r, c in zip(back, sorted(spiking), strict=True)
        )
        after = asyncio.run(emerging(settings, model.version, end + timedelta(minutes=1)))
        still = [c for c in (claim_of.get(x.cluster_id) for x in after) if c in spiking]
        # A cluster the re-posted post did not join leaves the list when a worker's re-match pass
        # (every FACTMATCH_REMATCH_INTERVAL_S) searches it again: wait for one pass at most.
        waited, deadline = 0.0, time.monotonic() + settings.rematch_interval_s + 30
        later = still
        while later and time.monotonic() < deadline:
            time.sleep(2)
            listed = asyncio.run(emerging(settings, model.version, end + timedelta(minutes=1)))
            later = [c for c in (claim_of.get(x.cluster_id) for x in listed) if c in spiking]
        waited = settings.rematch_interval_s + 30 - max(0.0, deadline - time.monotonic()) if still else 0.0
    finally:
        process.terminate()
        process.wait(60)
        reader.close()
    figures = {
        "spiking_claims": len(spiking),
        "withheld_fact_checks": len(withheld),
        "precision_at_10": precision,
        "recall_at_10": recall,
        "matched_again": matched / len(spiking),
        "still_emerging_after": len(still),
        "still_emerging_after_rematch": len(later),
        "waited_s": round(waited, 1),
    }
    print(f"  emerging claims, the {len(spiking)} spiking claims' fact-checks withheld: P@10 {precision:.2f},"
          f" recall@10 {recall:.2f} (goal: the spiking claims in the top 10); loaded again, {matched}/{len(spiking)}"
          f" re-posted claims match their fact-check in a tier; {len(still)} of their clusters listed,"
          f" {len(later)} after waiting {waited:.0f} s for a re-match pass")  # fmt: skip
    return figures
