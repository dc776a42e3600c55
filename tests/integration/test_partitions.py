"""Integration tier: partitions that appear on a live topic, and partitions nobody serves.

Against real tansu, whose group coordinator keeps a group's stored assignment when the leader
rejoins with unchanged member metadata (see ``worker.adapter.assignor``). Each test asserts
that every post gets its result, within a bounded time, read by an independent consumer.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.conftest import consume_until, eventually
from tests.integration.test_observability import http_get, sample
from tests.integration.test_worker import post, running, seed_corpus
from worker.settings import Settings


async def produce_to_every_partition(bootstrap: str, topic: str, ids: range, partitions: int) -> None:
    """Each post to partition ``i % partitions`` explicitly, so every partition gets posts."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for i in ids:
            key, value = post(i)
            deadline = time.monotonic() + 20
            while True:  # the producer may not know the new partitions yet
                try:
                    await producer.send_and_wait(topic, value, key=key, partition=i % partitions)
                    break
                except (AssertionError, ValueError):
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
    finally:
        await producer.stop()


async def recreate(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topic])
        for _ in range(50):
            if topic not in await admin.list_topics():
                break
            await asyncio.sleep(0.1)
        await admin.create_topics([NewTopic(topic, partitions, 1)])
        for _ in range(50):
            if topic in await admin.list_topics():
                break
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


def answered(records: list[Any]) -> Counter[str]:
    return Counter(json.loads(r.value)["post_id"] for r in records)


async def test_a_topic_recreated_with_more_partitions_under_a_running_worker_is_consumed_whole(
    stack_settings: Settings,
) -> None:
    """Nothing is committed on the old topic first: Apache Kafka deletes a deleted topic's
    committed offsets, tansu keeps them (they would point into the new logs), so a test with
    commits before the re-creation would measure tansu's offset keeping, not the assignment."""
    settings = stack_settings  # its topics have 3 partitions
    await seed_corpus(settings)
    async with running(settings) as runtime:
        posts = [c for c in runtime.consumers() if settings.topic_posts in c.subscription()]
        assert {tp.partition for tp in posts[0].assignment()} == {0, 1, 2}
        await recreate(settings.kafka_bootstrap, settings.topic_posts, 4)
        recreated = time.monotonic()
        await produce_to_every_partition(settings.kafka_bootstrap, settings.topic_posts, range(100, 140), 4)
        records = await consume_until(
            settings.kafka_bootstrap, [settings.topic_matches], lambda rs: len(rs) >= 40, timeout_s=90
        )
        took = time.monotonic() - recreated
        ids = answered(records)
        missing = {f"post-{i}" for i in range(100, 140)} - set(ids)
        assert not missing, f"{len(missing)} posts on the new partition got no result: {sorted(missing)[:5]}"
        print(f"all 4 partitions answered {took:.1f}s after the topic was re-created with 4")
        assert {tp.partition for tp in posts[0].assignment()} == {0, 1, 2, 3}


async def test_a_broker_restarted_with_a_different_partition_count_is_consumed_whole(
    database_url: str, make_settings: Any
) -> None:
    """The broker loses everything and the topics come back with 5 partitions instead of 3."""
    from worker.adapter.topics import ensure_topics
    from worker.local.stack import start_broker

    broker = start_broker()
    port = int(broker.bootstrap.rsplit(":", 1)[1])
    try:
        settings = make_settings(kafka_bootstrap=broker.bootstrap, database_url=database_url)
        await ensure_topics(settings, partitions=3)
        await seed_corpus(settings)
        async with running(settings):
            await produce_to_every_partition(settings.kafka_bootstrap, settings.topic_posts, range(6), 3)
            first = await consume_until(settings.kafka_bootstrap, [settings.topic_matches], lambda rs: len(rs) >= 6, 60)
            assert len(first) == 6
            broker.stop()
            await asyncio.sleep(4)
            broker = start_broker(port=port)
            await ensure_topics(settings, partitions=5)
            await produce_to_every_partition(settings.kafka_bootstrap, settings.topic_posts, range(100, 150), 5)
            records = await consume_until(
                settings.kafka_bootstrap, [settings.topic_matches], lambda rs: len(set(answered(rs))) >= 50, 120
            )
            missing = {f"post-{i}" for i in range(100, 150)} - set(answered(records))
            assert not missing, f"{len(missing)} posts got no result: {sorted(missing)[:5]}"
    finally:
        broker.stop()


async def test_partitions_held_by_a_member_that_never_commits_are_reported_unserved(
    stack_settings: Settings, make_settings: Any
) -> None:
    """A second member of the worker's group holds partitions and never consumes them (a stuck
    replica): the worker's lag covers them, its metric and readiness name them, and its log says so."""
    from worker.adapter.assignor import assignment_strategy

    settings = make_settings(
        **{
            k: getattr(stack_settings, k)
            for k in ("kafka_bootstrap", "topic_posts", "topic_matches", "topic_dead_letter", "topic_factchecks")
        },
        database_url=stack_settings.database_url.get_secret_value(),  # type: ignore[union-attr]
        group_id=stack_settings.group_id,
        indexer_group_id=stack_settings.indexer_group_id,
        unserved_partition_after_s=3,
        lag_interval_s=0.5,
    )
    await seed_corpus(settings)
    async with running(settings) as runtime:
        stuck = AIOKafkaConsumer(
            settings.topic_posts,
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=settings.group_id,
            enable_auto_commit=False,
            session_timeout_ms=settings.session_timeout_ms,
            partition_assignment_strategy=assignment_strategy(lambda: stuck),
        )
        await stuck.start()
        try:

            async def joined() -> bool:
                return bool(stuck.assignment())

            await eventually(joined, 60)
            held = sorted(tp.partition for tp in stuck.assignment())
            assert held, "the second member was given no partition"
            await produce_to_every_partition(settings.kafka_bootstrap, settings.topic_posts, range(30), 3)

            wanted = f"{settings.topic_posts}[{','.join(map(str, held))}]"

            async def unready() -> bool:
                # Each held partition is reported once its own waiting time passes: wait for all of them.
                status, body = await http_get(runtime.health.port, "/readyz")
                return status == 503 and wanted in body

            await eventually(unready, 45, every_s=0.5)
            status, body = await http_get(runtime.health.port, "/readyz")
            assert status == 503 and wanted in body, body
            _, scrape = await http_get(runtime.health.port, "/metrics")
            assert sample(scrape, "factmatch_unserved_partitions", topic=settings.topic_posts) == len(held)
            assert sample(scrape, "factmatch_topic_partitions", topic=settings.topic_posts) == 3
            lag = sum(
                sample(scrape, "factmatch_consumer_lag", topic=settings.topic_posts, partition=str(p)) for p in held
            )
            assert lag == 10 * len(held), "lag covers the partitions this worker does not own"
        finally:
            await stuck.stop()
        # The stuck member left: its partitions come back to the worker and are served.
        records = await consume_until(settings.kafka_bootstrap, [settings.topic_matches], lambda rs: len(rs) >= 30, 60)
        assert set(answered(records)) == {f"post-{i}" for i in range(30)}

        async def ready() -> bool:
            return (await http_get(runtime.health.port, "/readyz"))[0] == 200

        assert await eventually(ready, 20, every_s=0.5), "readiness did not come back"
