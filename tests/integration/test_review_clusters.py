"""The queue by claim cluster against real Postgres: a cluster's open posts are one entry, claimed
together without taking what another moderator holds, and one verdict becomes one verdict (and
one Feedback record) per post that showed the fact-check, undone and released together."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.integration.test_reviews import result
from worker.console.review import cluster_feedback
from worker.domain import QueueFilter
from worker.storage import ClaimLost, Store
from worker.wire import MatchResult


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    s = Store(database_url)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def in_cluster(r: MatchResult, cluster_id: int | None) -> MatchResult:
    return r.model_copy(update={"cluster_id": cluster_id})


async def entries(
    store: Store, filters: QueueFilter | None = None, session: str | None = None, **kw: Any
) -> list[tuple[str, int | None, int]]:
    groups = await store.review_groups.queue(filters or QueueFilter(), session, **kw)
    return [(g.item.post_id, g.cluster_id, g.posts) for g in groups]


async def test_the_queue_lists_a_cluster_once_at_its_first_post_with_its_open_posts_counted(
    store: Store,
) -> None:
    await store.reviews.add_results(
        [
            in_cluster(result("viral-1", [("fc1", "match", 0.95)], minutes=1), 7),
            in_cluster(result("viral-2", [("fc1", "match", 0.97)], minutes=2), 7),
            in_cluster(result("viral-3", [("fc1", "suggestion", 0.6)], minutes=3, lang="fr"), 7),
            in_cluster(result("alone", [("fc2", "match", 0.96)], minutes=0), 8),
            in_cluster(result("old-result", [("fc3", "match", 0.5)], minutes=4), None),
            in_cluster(result("other-claim", [("fc4", "suggestion", 0.7)], minutes=5), 9),
        ]
    )
    assert await entries(store) == [
        ("viral-2", 7, 3),
        ("alone", 8, 1),
        ("old-result", None, 1),
        ("other-claim", 9, 1),
    ], "the cluster at its surest post, counted once; results without a cluster stand alone"
    assert await entries(store, QueueFilter(lang="fr")) == [("viral-3", 7, 1)], "counts follow the filters"
    assert (await store.review_groups.queue(QueueFilter(), None))[0].item.cluster_id == 7
    # A queue that is one huge cluster still lists what comes after it (read in chunks).
    assert await entries(store, chunk=2) == await entries(store)
    assert await entries(store, limit=2) == [("viral-2", 7, 3), ("alone", 8, 1)]

    # Ana opens the cluster: its three posts are hers; Bob's queue no longer offers them.
    held = await store.review_groups.claim(7, "ana", "s-ana", 60)
    assert [i.post_id for i in held] == ["viral-2", "viral-1", "viral-3"]
    assert [e[0] for e in await entries(store, session="s-bob")] == ["alone", "old-result", "other-claim"]
    assert await store.review_groups.claim(7, "bob", "s-bob", 60) == [], "two moderators never work one post"
    # Bob holds one post of a cluster: Ana's claim of the cluster takes the others only.
    await store.reviews.add_results([in_cluster(result("viral-4", [("fc1", "match", 0.9)], minutes=6), 7)])
    assert await store.reviews.claim("viral-4", "bob", "s-bob", 60) is not None
    again = await store.review_groups.claim(7, "ana", "s-ana", 60)
    assert [i.post_id for i in again] == ["viral-2", "viral-1", "viral-3"]
    # Renewing names the page's posts and takes no other.
    await store.reviews.release("viral-4", "s-bob")
    renewed = await store.review_groups.claim(7, "ana", "s-ana", 60, post_ids=["viral-1", "viral-2"])
    assert sorted(i.post_id for i in renewed) == ["viral-1", "viral-2"]
    assert (await store.reviews.item("viral-4")).claimed_by is None  # type: ignore[union-attr]
    await store.review_groups.release(["viral-1", "viral-2", "viral-3"], "s-ana")
    assert await store.review_groups.claim(7, "bob", "s-bob", 60, filters=QueueFilter(lang="fr")) != []


async def test_one_verdict_for_a_cluster_is_one_verdict_per_post_that_showed_the_fact_check(
    store: Store,
) -> None:
    await store.reviews.add_results(
        [
            in_cluster(result("a", [("fc1", "match", 0.95), ("fc2", "suggestion", 0.5)], minutes=1), 3),
            in_cluster(result("b", [("fc1", "match", 0.9)], minutes=2), 3),
            in_cluster(result("c", [("fc2", "suggestion", 0.6)], minutes=3), 3),
        ]
    )
    items = await store.review_groups.claim(3, "ana", "s-ana", 60)
    records = cluster_feedback(items, "confirm", "fc1", moderator="ana", note="same photo")
    assert sorted(records) == ["a", "b"], "a post that never showed fc1 is not judged on it"
    pending = await store.review_groups.add_verdicts(
        3, records, user="ana", session_id="s-ana", undo_s=30, note="same photo"
    )
    assert sorted((p.post_id, p.fact_check_id, p.verdict) for p in pending) == [
        ("a", "fc1", "confirm"),
        ("b", "fc1", "confirm"),
    ]
    status = {p: (await store.reviews.item(p)).status for p in "abc"}  # type: ignore[union-attr]
    assert status == {"a": "done", "b": "done", "c": "open"}
    feedback = [v for p in "ab" for v in await store.reviews.verdicts(p)]
    assert len(feedback) == 2
    audit = await store.reviews.audit_log()
    (summary,) = [a for a in audit if a["action"] == "cluster_verdict"]
    assert summary["detail"] == {"cluster_id": 3, "posts": 2, "verdicts": 2} and summary["note"] == "same photo"
    assert {a["post_id"] for a in audit if a["action"] == "verdict"} == {"a", "b"}

    # Undo takes back every post's verdict in the window; the posts are open again and still hers.
    assert await store.review_groups.undo(["a", "b", "c"], user="ana", session_id="s-ana") == 2
    status = {p: (await store.reviews.item(p)).status for p in "abc"}  # type: ignore[union-attr]
    assert status == {"a": "open", "b": "open", "c": "open"}
    # "None of these" rejects what each post showed.
    records = cluster_feedback(items, "none", None, moderator="ana", note=None)
    assert {p: [r[:2] for r in rs] for p, rs in records.items()} == {
        "a": [("fc1", "reject"), ("fc2", "reject")],
        "b": [("fc1", "reject")],
        "c": [("fc2", "reject")],
    }
    assert all(r[2]["post_id"] == p for p, rs in records.items() for r in rs), "one Feedback record per post"
    # A post another session took meanwhile is left out; none held at all is refused.
    await store.reviews.release("c", "s-ana")
    assert await store.reviews.claim("c", "bob", "s-bob", 60) is not None
    await store.review_groups.add_verdicts(3, records, user="ana", session_id="s-ana", undo_s=0)
    assert [v.verdict for v in await store.reviews.verdicts("c")] == []
    assert (await store.reviews.item("a")).status == "done"  # type: ignore[union-attr]
    with pytest.raises(ClaimLost):
        await store.review_groups.add_verdicts(3, {"c": records["c"]}, user="ana", session_id="s-ana", undo_s=0)
