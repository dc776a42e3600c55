"""The index recall monitor: sampled live searches re-run exactly, recall@10 per version."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from tests.conftest import consume_until, produce
from tests.integration.test_worker import post, seed_corpus
from worker.adapter.runtime import running
from worker.retrieval.modes import Candidate
from worker.retrieval.recall import RecallMonitor, recall_at_k


def _recall(runtime: Any, version: str) -> tuple[float | None, float]:
    gauge = runtime.metrics.registry.get_sample_value("factmatch_ann_recall_at_10", {"model_version": version})
    probes = runtime.metrics.registry.get_sample_value("factmatch_ann_recall_probes_total", {"model_version": version})
    return gauge, probes or 0.0


# A healthy index searches wide enough (ef 400 over ~3,000 rows): its recall must not hang on how
# one HNSW build placed these near-duplicate fillers (ef 100 gave 0.63 once in a loaded full run).
@pytest.mark.parametrize(("ef_search", "expected"), [(400, (0.9, 1.0)), (1, (0.0, 0.5))], ids=["ef400", "ef1"])
async def test_live_searches_are_re_run_exactly_and_a_starved_index_shows_low_recall(
    stack_settings: Any, ef_search: int, expected: tuple[float, float]
) -> None:
    settings = stack_settings.model_copy(
        update={"recall_sample_share": 1.0, "ef_search": ef_search, "retrieval_mode": "dense"}
    )
    await seed_corpus(settings)
    await _add_filler(settings, 3000)  # enough rows that the planner takes the HNSW index
    texts = ["5G towers spread the coronavirus", "vaccines cause autism", "drinking bleach cures covid"]
    async with running(settings) as runtime:
        version = runtime.models.current().version
        # Twelve different claims: a repeated one is answered from the first search, never searched again.
        posts = [post(i, f"{texts[i % 3]}, report {i}") for i in range(12)]
        await produce(settings.kafka_bootstrap, settings.topic_posts, posts)
        await consume_until(settings.kafka_bootstrap, [settings.topic_matches], lambda rs: len(rs) >= 12)
        for _ in range(100):
            if _recall(runtime, version)[1] >= 12:
                break
            await asyncio.sleep(0.1)
        recall, probes = _recall(runtime, version)
    assert probes >= 12
    low, high = expected
    assert recall is not None and low <= recall <= high, recall


async def _add_filler(settings: Any, n: int) -> None:
    from worker.storage import Store
    from worker.wire import FactCheck

    words = [
        "virus",
        "vaccine",
        "election",
        "tower",
        "water",
        "bleach",
        "moon",
        "flat",
        "climate",
        "garlic",
        "mask",
        "ballot",
        "shark",
    ]
    rng = np.random.default_rng(0)
    store = Store(settings.require_database_url())
    await store.open()
    try:
        await store.corpus.upsert_fact_checks(
            [FactCheck(id=f"filler-{i}", claim=" ".join(rng.choice(words, size=8))) for i in range(n)]
        )
    finally:
        await store.close()


class _Exact:
    def __init__(self, answer: list[str]) -> None:
        self.answer = answer

    async def exact_neighbours(self, version: str, dimension: int, query: np.ndarray, k: int) -> list[str]:
        return self.answer[:k]


async def test_monitor_samples_bounds_its_queue_and_keeps_a_window_per_version() -> None:
    seen: list[tuple[str, float, float]] = []
    monitor = RecallMonitor(
        _Exact([f"fc{i}" for i in range(10)]),
        share=1.0,
        k=10,
        window=2,
        queue_size=2,
        on_recall=lambda *a: seen.append(a),
    )
    cands = [Candidate(f"fc{i}", 0.9, i + 1, None, None) for i in (0, 1, 2, 3, 4, 11, 12, 13, 14, 15)]
    vectors = np.zeros((3, 4), dtype=np.float32)
    monitor.offer("v1", 4, vectors, [cands, cands, []])
    monitor.offer("v1", 4, vectors, [cands])
    assert monitor.dropped == 1  # the queue holds two; a probe is dropped, never waited for
    task = asyncio.create_task(monitor.run())
    for _ in range(50):
        if len(seen) == 2:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    assert [round(r, 2) for _, r, _ in seen] == [0.5, 0.5]
    assert monitor.recall("v1") == 0.5 and monitor.recall("v2") is None
    assert recall_at_k(["a"], ["a", "b"]) == 0.5 and recall_at_k([], []) == 1.0
    sampled = RecallMonitor(_Exact([]), share=0.0)
    sampled.offer("v1", 4, vectors, [cands, cands, cands])
    assert sampled._queue.qsize() == 0
