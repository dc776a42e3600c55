"""Unit tier: a re-match pass searches the unmatched clusters, decides each abstained post of a
cluster that now reaches a tier on its own text, and is recorded only after it was published."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import pytest

from tests.fakes import FakeEncoder, FakeModels
from worker.adapter.rematching import RematchLoop
from worker.core.pipeline import ServingModel
from worker.core.rematch import RematchConfig, Rematcher
from worker.domain import ClusteredPost, PostCandidates, UnmatchedCluster
from worker.retrieval.decision import Decisions
from worker.retrieval.retriever import Query, Searched
from worker.wire import Match, MatchResult

AT = datetime(2026, 12, 1, tzinfo=UTC)


class TierSearcher:
    """A tiered match on "fc-new" for every query whose text contains "elephants"; untiered otherwise."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    async def search(
        self, version: str, dimension: int, queries: Sequence[Query], decisions: Decisions | None = None
    ) -> list[Searched]:
        self.queries += [q.text for q in queries]
        out = []
        for q in queries:
            hit = "elephants" in q.text
            match = Match(fact_check_id="fc-new" if hit else "fc-old", score=0.9, rank=1, claim="c",
                          tier="match" if hit else None, probability=0.97 if hit else 0.2)  # fmt: skip
            out.append(Searched(PostCandidates([]), [match]))
        return out

    async def state(self) -> str:
        return "s"


class Store:
    def __init__(self, generation: int | None) -> None:
        self.generation = generation
        self.recorded: list[tuple[str, int, list[tuple[str, str, float]]]] = []
        self.posts = {
            1: [ClusteredPost("a", 1, "elephants run the weather", "en", "x", "https://x/a", AT),
                ClusteredPost("b", 1, "something else", "en", "x", None, AT)],
            2: [ClusteredPost("c", 2, "elephants again", "de", "y", None, AT)],
        }  # fmt: skip

    async def rematch_generation(self, version: str) -> int | None:
        return self.generation

    async def unmatched_clusters(self, version: str, window_s: float, limit: int) -> list[UnmatchedCluster]:
        v = np.ones(8, dtype=np.float32) / np.sqrt(8)
        return [UnmatchedCluster(1, v, "purple elephants", "en"), UnmatchedCluster(2, v, "bread prices", None)][:limit]

    async def abstained_posts(self, version: str, cluster_ids: Sequence[int], limit: int) -> list[ClusteredPost]:
        return [p for c in cluster_ids for p in self.posts[c]][:limit]

    async def record_rematches(
        self, version: str, generation: int, matched: Sequence[tuple[ClusteredPost, str, float]]
    ) -> int:
        self.recorded.append((version, generation, [(p.post_id, fc, prob) for p, fc, prob in matched]))
        return len(matched)


def rematcher(store: Store, searcher: TierSearcher) -> Rematcher:
    models = FakeModels(ServingModel("v1", 8, FakeEncoder()))
    return Rematcher(models, searcher, store, RematchConfig(3600, 10, 10, encode_batch_size=1, result_text_max_chars=8))


async def test_only_the_posts_of_clusters_that_now_reach_a_tier_are_searched_and_each_is_decided_on_its_own() -> None:
    store, searcher = Store(generation=7), TierSearcher()
    found = await rematcher(store, searcher).find()
    assert found is not None and (found.version, found.generation, found.clusters) == ("v1", 7, 2)
    # Cluster 2's search reached no tier: its post "c" is never searched, though its text would match.
    assert searcher.queries == ["purple elephants", "bread prices", "elephants run the weather", "something else"]
    [result] = found.results
    assert isinstance(result, MatchResult) and result.rematched and result.post_id == "a"
    assert (result.cluster_id, result.url, result.platform) == (1, "https://x/a", "x")
    assert (result.text, result.text_truncated, result.lang) == ("elephant", True, "en")
    assert [(p.post_id, fc, prob) for p, fc, prob in found.matched] == [("a", "fc-new", 0.97)]


async def test_nothing_is_searched_while_the_corpus_did_not_change() -> None:
    store, searcher = Store(generation=None), TierSearcher()
    assert await rematcher(store, searcher).find() is None
    assert searcher.queries == []


@pytest.mark.parametrize("fail_publish", [False, True])
async def test_a_pass_is_recorded_only_after_its_updates_were_published(fail_publish: bool) -> None:
    store, published = Store(generation=3), list[str]()

    async def publish(results: Sequence[MatchResult]) -> None:
        if fail_publish:
            raise ConnectionError("broker down")
        published.extend(r.post_id for r in results)

    async def turn(name: str, interval_s: float) -> bool:
        return name == "rematch"

    counted: list[int] = []
    loop = RematchLoop(rematcher(store, TierSearcher()), turn, publish, 1.0, counted.append)
    if fail_publish:
        with pytest.raises(ConnectionError):
            await loop.once()
        assert store.recorded == [] and counted == []
    else:
        assert await loop.once() == 1
        assert published == ["a"] and store.recorded == [("v1", 3, [("a", "fc-new", 0.97)])] and counted == [1]


async def test_another_workers_turn_runs_nothing() -> None:
    store = Store(generation=3)

    async def turn(name: str, interval_s: float) -> bool:
        return False

    async def publish(results: Sequence[MatchResult]) -> None:
        raise AssertionError("not this worker's turn")

    assert await RematchLoop(rematcher(store, TierSearcher()), turn, publish, 1.0).once() is None
    assert store.recorded == []
