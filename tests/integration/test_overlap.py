"""Overlapped posts' batches on the real broker: a batch that fails between two others loses nothing,
and what the worker committed when it stopped is exactly what it published."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition

from tests.conftest import consume_until, produce
from tests.integration.test_worker import post, seed_corpus
from worker.adapter.runtime import WorkerRuntime
from worker.settings import Settings
from worker.wire import DeadLetter, MatchResult


class FailsOnce:
    """A sink after the Kafka topics that refuses its third batch, once (the batch is then redelivered)."""

    def __init__(self) -> None:
        self.calls = 0
        self.seen: list[str] = []

    async def publish(self, results: Sequence[MatchResult], dead_letters: Sequence[DeadLetter]) -> None:
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("refused once")
        self.seen.extend(r.post_id for r in results)


async def committed(settings: Settings, partitions: Sequence[int]) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=settings.group_id)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(settings.topic_posts, p)) for p in partitions}
    finally:
        await consumer.stop()


async def test_a_failed_batch_among_overlapped_ones_loses_nothing_and_the_commits_end_where_publishing_did(
    stack_settings: Settings,
) -> None:
    settings = stack_settings.model_copy(update={"batch_max_records": 16, "retry_backoff_max_s": 0.5})
    assert settings.overlap_batches
    await seed_corpus(settings)
    total = 300
    sink = FailsOnce()
    runtime = WorkerRuntime(settings, extra_sinks=[sink])
    await runtime.start()
    try:
        await produce(settings.kafka_bootstrap, settings.topic_posts, [post(i) for i in range(total)])
        records = await consume_until(
            settings.kafka_bootstrap,
            [settings.topic_matches],
            lambda rs: len({json.loads(r.value)["post_id"] for r in rs}) >= total,
            timeout_s=180,
        )
        await asyncio.sleep(1.5)  # a batch still coming back would be published meanwhile
    finally:
        await runtime.stop()
    counts = Counter(json.loads(r.value)["post_id"] for r in records)
    wanted = {f"post-{i}" for i in range(total)}
    assert set(counts) == wanted, "a post was lost"
    assert set(sink.seen) == wanted, "the sink that refused a batch never got some of its posts"
    # Only the refused batch was published twice (to Kafka, before the sink refused it).
    assert sum(counts.values()) - total <= 16
    assert sink.calls > 3
    # Each partition's end, from the results' sources (tansu's end_offsets answers a batch's base offset).
    end: dict[int, int] = {}
    for r in records:
        source = json.loads(r.value)["source"]
        end[source["partition"]] = max(end.get(source["partition"], 0), source["offset"] + 1)
    assert sum(end.values()) == total
    assert await committed(settings, sorted(end)) == end, "what was published is what was committed"
