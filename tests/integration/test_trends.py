"""Integration tier: trending fact-checks are counted once per post, as posts join their clusters."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from tests.conftest import consume_until, produce, settings_env
from tests.integration.test_clusters import DIM, opened_store, post, unit
from tests.integration.test_worker import seed_corpus
from worker.adapter.claim_reports import trending_report
from worker.adapter.runtime import running
from worker.settings import Settings
from worker.storage.trends import spike_score
from worker.wire import EmergingClaims, TrendingFactChecks

NOW = datetime(2026, 12, 1, 12, 30, tzinfo=UTC)


async def test_a_spiking_fact_check_ranks_first_counted_once_per_post_by_language_and_platform(
    database_url: str, make_settings: object
) -> None:
    store = await opened_store(database_url)
    try:
        rng = np.random.default_rng(1)
        posts = []
        # "steady": two posts an hour all week; "spike": quiet, then 30 posts in this hour.
        for hour in range(1, 7 * 24):
            at = NOW - timedelta(hours=hour)
            posts += [post(f"s{hour}-{i}", unit(1, 0.01 * i), seen_at=at, fact_check_id="steady") for i in range(2)]
        posts += [post(f"q{d}", unit(0, 1), seen_at=NOW - timedelta(days=d), fact_check_id="spike") for d in (2, 4)]
        posts += [
            post(f"p{i}", unit(0, 1, 0.01 * i), seen_at=NOW - timedelta(minutes=i), fact_check_id="spike",
                 lang="de" if i % 3 == 0 else "en", platform="tiktok" if i % 2 else "x")
            for i in range(30)
        ]  # fmt: skip
        posts.append(post("abstained", unit(0, 0, 1), seen_at=NOW))
        rng.shuffle(posts)  # type: ignore[arg-type]
        for start in range(0, len(posts), 50):
            await store.clusters.assign_clusters("v1", DIM, posts[start : start + 50], cut=0.9, window_s=86_400 * 30)
        # Redelivered: counted once.
        await store.clusters.assign_clusters("v1", DIM, posts[:100], cut=0.9, window_s=86_400 * 30)

        spike, steady = await store.trends.trending(NOW, limit=5)
        assert (spike.fact_check_id, steady.fact_check_id) == ("spike", "steady")
        assert (spike.last_hour, spike.last_day, spike.last_week) == (30, 30, 32)
        assert spike.langs == {"en": 20, "de": 10} and spike.platforms == {"x": 15, "tiktok": 15}
        assert spike.hourly[-1] == 30 and sum(spike.hourly) == 30
        assert spike.spike == round(spike_score(30, 32), 3) > 20
        assert (steady.last_hour, steady.last_day) == (0, 46) and steady.spike < 1
        assert steady.hourly == [2] * 23 + [0]
        # As the trending topic carries them (no such fact-check in the corpus: no claim to show).
        report = await trending_report(store, NOW)  # type: ignore[arg-type]
        assert [(t.fact_check_id, t.last_hour, t.hourly[-1], t.claim) for t in report.fact_checks] == [
            ("spike", 30, 30, None),
            ("steady", 0, 0, None),
        ]

        settings = make_settings(database_url=database_url)  # type: ignore[operator]
        assert isinstance(settings, Settings)
        out = subprocess.run(  # noqa: ASYNC221 (the CLI in its own process, as a user runs it)
            [sys.executable, "-m", "worker.cli", "claims", "trending", "--at", NOW.isoformat(), "--json"],
            env=settings_env(settings),
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        listed = json.loads(out.stdout)
        assert [r["fact_check_id"] for r in listed] == ["spike", "steady"] and listed[0]["last_hour"] == 30
    finally:
        await store.close()


async def test_emerging_claims_are_unmatched_clusters_growing_fastest_first_with_examples(database_url: str) -> None:
    store = await opened_store(database_url)
    try:
        posts = [
            # Growing: 2 posts the day before, 8 in the last day, none matched.
            *(
                post(f"g{i}", unit(1, 0.01 * i), seen_at=NOW - timedelta(hours=30 + i), text=f"grow {i}")
                for i in range(2)
            ),
            *(
                post(f"h{i}", unit(1, 0.01 * i), seen_at=NOW - timedelta(hours=i), text=f"grow {i % 4}")
                for i in range(8)
            ),
            # Steady and larger: one post every 4.5 hours (6 in the last day, 5 in the day before).
            *(post(f"s{i}", unit(0, 1), seen_at=NOW - timedelta(hours=1 + i * 4.5), text="steady") for i in range(20)),
            # Matched: not emerging, however it grows.
            *(post(f"m{i}", unit(0, 0, 1), seen_at=NOW - timedelta(hours=i), fact_check_id="fc1") for i in range(9)),
            # Too few.
            *(post(f"f{i}", unit(0, 0, 0, 1), seen_at=NOW - timedelta(hours=i)) for i in range(2)),
        ]
        await store.clusters.assign_clusters("v1", DIM, posts, cut=0.9, window_s=86_400 * 30)
        grow, steady = await store.trends.emerging("v1", NOW)
        assert (grow.last_day, grow.day_before, grow.size, grow.growth) == (8, 2, 10, 3.0)
        assert grow.representative == "grow 0" and grow.examples == ["grow 0", "grow 1", "grow 2"]
        assert (steady.last_day, steady.day_before, steady.growth) == (6, 5, round(7 / 6, 3))
        assert await store.trends.emerging("v2", NOW) == []
    finally:
        await store.close()


async def test_one_worker_of_the_group_publishes_each_report_per_interval(database_url: str) -> None:
    store = await opened_store(database_url)
    try:
        turns = await asyncio.gather(*(store.trends.report_turn("trending", 60) for _ in range(8)))
        assert sorted(turns) == [False] * 7 + [True]
        assert not await store.trends.report_turn("trending", 60)
        assert await store.trends.report_turn("emerging", 60)  # each report has its own turn
        assert await store.trends.report_turn("trending", 0)  # the interval has passed
    finally:
        await store.close()


async def test_the_worker_publishes_trending_fact_checks_and_emerging_claims_to_their_topics(
    stack_settings: Settings,
) -> None:
    settings = stack_settings.model_copy(update={"claims_report_interval_s": 1.0})
    await seed_corpus(settings)
    claim = "Purple elephants secretly run the national weather service"
    copies = [claim, f"RT @a: {claim}", f"{claim} https://t.co/y", f"{claim} \U0001f418"]
    posts = [(f"e-{i}".encode(), json.dumps({"id": f"e-{i}", "text": t}).encode()) for i, t in enumerate(copies)]
    async with running(settings):  # never calibrated: it abstains on every post, so nothing trends
        await produce(settings.kafka_bootstrap, settings.topic_posts, posts)
        records = await consume_until(
            settings.kafka_bootstrap,
            [settings.topic_emerging],
            lambda rs: any(json.loads(r.value)["claims"] for r in rs),
            timeout_s=60,
        )
        trending = await consume_until(settings.kafka_bootstrap, [settings.topic_trending], lambda rs: len(rs) >= 1)
    report = EmergingClaims.model_validate_json(next(r.value for r in records if json.loads(r.value)["claims"]))
    [emerging] = report.claims
    assert emerging.size == 4 and emerging.representative == claim and emerging.last_day == 4
    assert records[0].key == b"emerging"
    assert TrendingFactChecks.model_validate_json(trending[0].value).fact_checks == []


async def test_a_worker_upgraded_before_the_report_topics_exist_still_matches(
    kafka: str, database_url: str, make_settings: Any
) -> None:
    from worker.adapter.topics import ensure_topics

    settings = make_settings(kafka_bootstrap=kafka, database_url=database_url, claims_report_interval_s=1.0)
    # The topics of a release without claim reports: no trending or emerging topic.
    created = await ensure_topics(settings.model_copy(update={"claims_report_interval_s": 0.0}), partitions=1)
    assert settings.topic_trending not in created and settings.topic_emerging not in created
    await seed_corpus(settings)
    async with running(settings):
        await produce(settings.kafka_bootstrap, settings.topic_posts, [(b"u-1", b'{"id": "u-1", "text": "5G"}')])
        records = await consume_until(settings.kafka_bootstrap, [settings.topic_matches], lambda rs: len(rs) >= 1)
        await asyncio.sleep(2.5)  # a report interval or two pass: the missing topics cost nothing but a log line
    assert json.loads(records[0].value)["post_id"] == "u-1"
