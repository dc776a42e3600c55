"""The overlapped posts handler's ordering and rewinds, on a fake consumer (pure logic; the real
broker's kills, outages and rebalances run it in tests/integration)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from worker.adapter.overlap import OverlappedHandler, Partition
from worker.wire import RawRecord


class FakeConsumer:
    """Positions move on by fetching, back by seeking; commits are recorded."""

    def __init__(self) -> None:
        self.positions: dict[Partition, int] = {}
        self.commits: list[dict[Partition, int]] = []
        self.seeks: list[tuple[Partition, int]] = []

    def fetch(self, records: Sequence[RawRecord]) -> list[RawRecord]:
        for r in records:
            self.positions[(r.topic, r.partition)] = r.offset + 1
        return list(records)

    async def position(self, partition: Partition) -> int:
        return self.positions[partition]

    def seek(self, partition: Partition, offset: int) -> None:
        self.seeks.append((partition, offset))
        self.positions[partition] = offset

    async def commit(self, offsets: Mapping[Partition, int]) -> None:
        self.commits.append(dict(offsets))


class Prepared:
    def __init__(self, raws: list[RawRecord]) -> None:
        self.fresh = raws


class Steps:
    """A batch handler whose processing and publishing wait on gates the test opens."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.finish: dict[int, asyncio.Event] = {}
        self.fail_delivery: set[int] = set()

    def gate(self, batch: int) -> asyncio.Event:
        return self.finish.setdefault(batch, asyncio.Event())

    async def __call__(self, records: list[Any]) -> None:
        raise AssertionError("the overlapped path never hands a batch back to FastStream")

    def context(self, raws: Sequence[RawRecord]) -> dict[str, Any]:
        return {}

    async def prepare(self, raws: list[RawRecord], released: Callable[[], None] | None = None) -> list[Prepared]:
        batch = raws[0].offset // 100
        self.events.append(f"encode {batch}")
        assert released is not None
        released()
        await self.gate(batch).wait()  # the batch's tail: searching, clustering
        return [Prepared(raws)]

    async def deliver(self, prepared: Any, context: dict[str, Any]) -> None:
        batch = prepared.fresh[0].offset // 100
        if batch in self.fail_delivery:
            raise RuntimeError("sink refused")
        self.events.append(f"publish {batch}")

    async def failed(self, exc: Exception, fresh: Sequence[RawRecord], context: dict[str, Any]) -> None:
        self.events.append(f"failed {fresh[0].offset // 100}")


def records(batch: int, partition: int = 0, n: int = 3) -> list[RawRecord]:
    """Batch ``batch``'s records: offsets batch*100 ... on ``partition``."""
    return [
        RawRecord(topic="posts", partition=partition, offset=batch * 100 + i, key=None, value=b"{}") for i in range(n)
    ]


def handler(steps: Steps, consumer: FakeConsumer) -> OverlappedHandler:
    return OverlappedHandler(steps, lambda: consumer, lambda r: r, grace_s=5)


async def test_the_next_batch_encodes_while_one_finishes_and_commits_follow_in_order() -> None:
    steps, consumer = Steps(), FakeConsumer()
    handle = handler(steps, consumer)
    await asyncio.wait_for(handle(consumer.fetch(records(1))), 1)  # returns once batch 1 no longer encodes
    assert steps.events == ["encode 1"] and consumer.commits == []
    second = asyncio.create_task(handle(consumer.fetch(records(2))))
    await asyncio.sleep(0.01)
    assert steps.events == ["encode 1", "encode 2"]  # batch 2 encodes while batch 1 is unfinished
    assert not second.done()  # at most two in flight: it waits for batch 1
    steps.gate(2).set()
    await asyncio.sleep(0.01)
    assert "publish 2" not in steps.events  # never published before the batch before it
    steps.gate(1).set()
    await asyncio.wait_for(second, 1)
    await handle.close()
    assert steps.events == ["encode 1", "encode 2", "publish 1", "publish 2"]
    assert consumer.commits == [{("posts", 0): 103}, {("posts", 0): 203}]
    assert consumer.seeks == []


async def test_a_failed_batch_is_rewound_and_the_one_fetched_after_it_dropped_unpublished() -> None:
    steps, consumer = Steps(), FakeConsumer()
    steps.fail_delivery.add(1)
    handle = handler(steps, consumer)
    await handle(consumer.fetch(records(1)))
    second = asyncio.create_task(handle(consumer.fetch([*records(2), *records(3, partition=1)])))
    steps.gate(2).set()
    steps.gate(3).set()
    steps.gate(1).set()
    await asyncio.wait_for(second, 1)
    await handle.close()
    assert "publish 2" not in steps.events and "failed 1" in steps.events
    assert consumer.commits == []
    # Partition 0 back at batch 1's first record (not batch 2's); partition 1 at batch 3's.
    assert consumer.positions == {("posts", 0): 100, ("posts", 1): 300}


async def test_a_batch_on_other_partitions_is_published_and_committed_after_a_failure_before_it() -> None:
    steps, consumer = Steps(), FakeConsumer()
    steps.fail_delivery.add(1)
    handle = handler(steps, consumer)
    await handle(consumer.fetch(records(1, partition=0)))
    second = asyncio.create_task(handle(consumer.fetch(records(2, partition=1))))
    steps.gate(1).set()
    steps.gate(2).set()
    await asyncio.wait_for(second, 1)
    await handle.close()
    assert "publish 2" in steps.events
    assert consumer.commits == [{("posts", 1): 203}]
    assert consumer.positions[("posts", 0)] == 100


async def test_a_batch_fetched_before_a_rewind_is_dropped_without_processing() -> None:
    steps, consumer = Steps(), FakeConsumer()
    handle = handler(steps, consumer)
    batch = consumer.fetch([*records(2, partition=0), *records(3, partition=1)])
    consumer.seek(("posts", 0), 150)  # a rewind landed between the fetch and the handler
    await handle(batch)
    assert steps.events == []
    assert consumer.positions == {("posts", 0): 150, ("posts", 1): 300}
    assert consumer.commits == []


async def test_once_closing_each_batch_is_committed_before_the_handler_returns() -> None:
    steps, consumer = Steps(), FakeConsumer()
    handle = handler(steps, consumer)
    await handle.close()
    steps.gate(1).set()
    await asyncio.wait_for(handle(consumer.fetch(records(1))), 1)
    assert steps.events == ["encode 1", "publish 1"]
    assert consumer.commits == [{("posts", 0): 103}]
