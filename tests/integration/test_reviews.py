"""The moderators' queue against real Postgres: order, filters and counts, leases, idempotence,
verdicts in their undo window, and the outbox that publishes them once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from worker.domain import QueueFilter
from worker.storage import ClaimLost, Store
from worker.wire import Match, MatchResult

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def result(
    post_id: str,
    tiers: list[tuple[str, str | None, float | None]],
    *,
    minutes: int = 0,
    lang: str = "en",
    platform: str = "x",
    version: str = "v1",
) -> MatchResult:
    matches = [
        Match(fact_check_id=fc, score=0.8, rank=i + 1, claim=f"claim {fc}", tier=tier, probability=p)  # type: ignore[arg-type]
        for i, (fc, tier, p) in enumerate(tiers)
    ]
    return MatchResult(
        post_id=post_id,
        lang=lang,
        platform=platform,
        matches=matches,
        model_version=version,
        processed_at=T0 + timedelta(minutes=minutes),
        text=f"text of {post_id}",
    )


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    s = Store(database_url)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def ids(store: Store, filters: QueueFilter | None = None, session: str | None = None) -> list[str]:
    return [i.post_id for i in await store.reviews.queue(filters or QueueFilter(), session)]


async def judge(store: Store, post_id: str, fc: str, verdict: str, undo_s: float, session: str = "s-ana") -> None:
    await store.reviews.add_verdicts(
        post_id, [(fc, verdict, {"fc": fc})], user="ana", session_id=session, undo_s=undo_s
    )  # type: ignore[list-item]


async def test_the_queue_puts_what_needs_a_human_first_and_filters_with_counts(store: Store) -> None:
    added = await store.reviews.add_results(
        [
            result("old-suggestion", [("fc1", "suggestion", 0.6)], minutes=0),
            result("sure-match", [("fc2", "match", 0.99)], minutes=5),
            result("less-sure-match", [("fc1", "match", 0.9), ("fc3", "suggestion", 0.5)], minutes=1, lang="fr"),
            result("new-suggestion", [("fc3", "suggestion", 0.6)], minutes=9, platform="tiktok"),
            result("untiered", [("fc1", None, None)]),
            result("nothing", []),
        ]
    )
    assert added == 4, "only results with a tiered match are reviewed"
    assert await ids(store) == ["sure-match", "less-sure-match", "old-suggestion", "new-suggestion"]
    assert await ids(store, QueueFilter(tier="suggestion")) == ["old-suggestion", "new-suggestion"]
    assert await ids(store, QueueFilter(fact_check_id="fc1")) == ["less-sure-match", "old-suggestion"]
    assert await ids(store, QueueFilter(lang="fr")) == ["less-sure-match"]
    assert await ids(store, QueueFilter(platform="tiktok")) == ["new-suggestion"]
    counts = await store.reviews.counts(QueueFilter(), None)
    assert counts["tier"] == {"match": 2, "suggestion": 2} and counts["total"] == {"": 4}
    assert counts["lang"] == {"en": 3, "fr": 1} and counts["fact_check"]["fc1"] == 2
    narrowed = await store.reviews.counts(QueueFilter(tier="match"), None)
    assert narrowed["lang"] == {"en": 1, "fr": 1} and narrowed["total"] == {"": 2}
    item = await store.reviews.item("less-sure-match")
    assert item is not None and item.tier == "match" and item.probability == pytest.approx(0.9)
    assert [m["fact_check_id"] for m in item.matches] == ["fc1", "fc3"] and item.text == "text of less-sure-match"


async def test_the_queues_changes_start_with_a_resync_once_listening_then_name_each_post(store: Store) -> None:
    """A change made before the LISTEN is in place cannot be heard: the first ``""`` tells the
    console to refresh (open pages re-read the queue), then each added item is named."""
    await store.reviews.add_results([result("before", [("fc1", "match", 0.9)])])
    changes = store.reviews.changes()
    try:
        assert await asyncio.wait_for(anext(changes), 10) == ""
        await store.reviews.add_results([result("after", [("fc1", "match", 0.9)])])
        assert await asyncio.wait_for(anext(changes), 10) == "after"
    finally:
        await changes.aclose()  # type: ignore[attr-defined]


async def test_a_redelivered_result_changes_nothing_and_a_decided_post_stays_decided(store: Store) -> None:
    first = result("p1", [("fc1", "match", 0.9)])
    assert await store.reviews.add_results([first]) == 1
    assert await store.reviews.add_results([first, first]) == 0
    assert await ids(store) == ["p1"]
    assert await store.reviews.claim("p1", "ana", "s-ana", 60) is not None
    await store.reviews.add_verdicts("p1", [("fc1", "confirm", {"k": 1})], user="ana", session_id="s-ana", undo_s=0)
    assert await ids(store) == []
    # The same post answered again (say, by a new model version): it is not put back in the queue.
    assert await store.reviews.add_results([result("p1", [("fc9", "match", 0.95)], version="v2")]) == 0
    done = await store.reviews.item("p1")
    assert done is not None and done.status == "done" and done.model_version == "v1"


async def test_a_claim_hides_the_item_from_other_sessions_until_its_lease_ends(store: Store) -> None:
    await store.reviews.add_results([result("p1", [("fc1", "match", 0.9)]), result("p2", [("fc2", "match", 0.8)])])
    assert await store.reviews.depth() == 2
    held = await store.reviews.claim("p1", "ana", "s-ana", 0.5)
    assert held is not None and held.claimed_by == "ana"
    assert await store.reviews.claim("p1", "bob", "s-bob", 60) is None, "two moderators never work one post"
    assert await ids(store, session="s-bob") == ["p2"]
    assert await ids(store, session="s-ana") == ["p1", "p2"]
    assert await store.reviews.depth() == 1
    with pytest.raises(ClaimLost):
        await store.reviews.add_verdicts("p1", [("fc1", "reject", {})], user="bob", session_id="s-bob", undo_s=0)
    await asyncio.sleep(0.7)  # the lease ends on its own
    assert await ids(store, session="s-bob") == ["p1", "p2"]
    assert await store.reviews.claim("p1", "bob", "s-bob", 60) is not None
    with pytest.raises(ClaimLost):
        await store.reviews.add_verdicts("p1", [("fc1", "reject", {})], user="ana", session_id="s-ana", undo_s=0)
    await store.reviews.release("p1", "s-bob")
    assert await store.reviews.claim("p1", "ana", "s-ana", 60) is not None


async def test_verdicts_wait_out_the_undo_window_then_are_sent_once(store: Store) -> None:
    await store.reviews.add_results([result("p1", [("fc1", "match", 0.9), ("fc2", "suggestion", 0.4)])])
    await store.reviews.claim("p1", "ana", "s-ana", 60)
    await store.reviews.add_verdicts(
        "p1", [("fc2", "reject", {"fc": "fc2"})], user="ana", session_id="s-ana", undo_s=30, note="off topic"
    )
    item = await store.reviews.item("p1")
    assert item is not None and item.status == "open", "one of two matches judged, none confirmed: still open"
    await store.reviews.add_verdicts(
        "p1", [("fc1", "confirm", {"fc": "fc1"})], user="ana", session_id="s-ana", undo_s=30
    )
    assert (await store.reviews.item("p1")).status == "done"  # type: ignore[union-attr]
    sent: list[list[dict[str, Any]]] = []

    async def send(batch: list[dict[str, Any]]) -> None:
        sent.append(batch)

    assert await store.reviews.send_due(send) == 0, "nothing leaves inside the undo window"
    assert await store.reviews.undo("p1", user="ana", session_id="s-ana") == 2
    reopened = await store.reviews.item("p1")
    assert reopened is not None and reopened.status == "open" and reopened.claimed_by == "ana"
    await store.reviews.add_verdicts(
        "p1", [("fc1", "confirm", {"fc": "fc1"})], user="ana", session_id="s-ana", undo_s=0
    )

    async def broken(_: list[dict[str, Any]]) -> None:
        raise ConnectionError("broker down")

    with pytest.raises(ConnectionError):
        await store.reviews.send_due(broken)
    assert await store.reviews.send_due(send) == 1 and sent == [[{"fc": "fc1"}]]
    assert await store.reviews.send_due(send) == 0
    assert await store.reviews.undo("p1", user="ana", session_id="s-ana") == 0, "a sent verdict cannot be undone"
    states = [(v.fact_check_id, v.state) for v in await store.reviews.verdicts("p1")]
    assert states == [("fc2", "undone"), ("fc1", "undone"), ("fc1", "sent")]
    audit = await store.reviews.audit_log("p1")
    actions = [(a["action"], a["fact_check_id"], a["verdict"], a["user_name"]) for a in reversed(audit)]
    assert actions == [
        ("verdict", "fc2", "reject", "ana"),
        ("verdict", "fc1", "confirm", "ana"),
        ("undo", "fc2", "reject", "ana"),
        ("undo", "fc1", "confirm", "ana"),
        ("verdict", "fc1", "confirm", "ana"),
    ]
    assert all(a["session_id"] == "s-ana" for a in audit) and audit[-1]["note"] == "off topic"


async def test_two_senders_never_publish_one_verdict_twice(store: Store) -> None:
    await store.reviews.add_results([result(f"p{i}", [("fc1", "match", 0.9)]) for i in range(30)])
    for i in range(30):
        await store.reviews.claim(f"p{i}", "ana", "s-ana", 60)
        await store.reviews.add_verdicts(
            f"p{i}", [("fc1", "confirm", {"p": i})], user="ana", session_id="s-ana", undo_s=0
        )
    sent: list[int] = []

    async def send(batch: list[dict[str, Any]]) -> None:
        await asyncio.sleep(0.05)
        sent.extend(f["p"] for f in batch)

    other = Store(store.conninfo)
    await other.open()
    try:
        await asyncio.gather(*(s.reviews.send_due(send, limit=7) for s in (store, other, store, other, store, other)))
        while await store.reviews.send_due(send, limit=7):
            pass
    finally:
        await other.close()
    assert sorted(sent) == list(range(30))


async def test_verdicts_are_tallied_by_the_tier_their_match_was_shown_in(store: Store) -> None:
    from worker.domain import VerdictTally

    await store.reviews.add_results(
        [
            result("p1", [("fc1", "match", 0.9), ("fc2", "suggestion", 0.6)]),
            result("p2", [("fc1", "match", 0.95)], lang="fr"),
            result("p3", [("fc3", "suggestion", 0.5)]),
            result("p4", [("fc4", "match", 0.97)]),
        ]
    )
    for post_id in ("p1", "p2", "p3", "p4"):
        assert await store.reviews.claim(post_id, "ana", "s-ana", 60) is not None
    await store.reviews.add_verdicts(
        "p1", [("fc1", "confirm", {}), ("fc2", "reject", {})], user="ana", session_id="s-ana", undo_s=0
    )
    await judge(store, "p2", "fc1", "reject", 0)
    await judge(store, "p3", "fc3", "confirm", 0)
    await judge(store, "p4", "fc4", "reject", 60)
    assert await store.reviews.undo("p4", user="ana", session_id="s-ana") == 1  # an undone verdict never counts
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    assert await store.verdict_stats.tallies(hour_ago) == [
        VerdictTally("match", "en", 1, 0),
        VerdictTally("match", "fr", 0, 1),
        VerdictTally("suggestion", "en", 1, 1),
    ]
    assert await store.verdict_stats.tallies(datetime.now(UTC) + timedelta(minutes=1)) == []
