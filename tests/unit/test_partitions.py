"""Unit tier: the assignor's member metadata changes with a topic's partition count, and the
coverage tracker calls a partition unserved only after its committed offset stood still for
the grace period while records waited."""

from __future__ import annotations

import json
from typing import Any

from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocol

from worker.adapter.assignor import PROTOCOL_NAME, PartitionCountAssignor, assignment_strategy
from worker.adapter.coverage import PartitionCoverage, PartitionState


class FakeConsumer:
    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return set(range(self.counts[topic])) if topic in self.counts else None


def test_member_metadata_changes_when_a_topic_gains_partitions() -> None:
    consumer = FakeConsumer({"posts": 3})
    assignor = PartitionCountAssignor(lambda: consumer)
    before = assignor.metadata(["posts"]).encode()
    assert assignor.metadata({"posts"}).encode() == before, "same counts, same bytes: no needless rebalance"
    consumer.counts["posts"] = 4
    after = assignor.metadata(["posts"]).encode()
    assert after != before
    decoded = ConsumerProtocol.METADATA.decode(after)
    assert decoded.subscription == ["posts"] and json.loads(decoded.user_data) == {"posts": 4}
    # Unknown topics and a consumer not built yet still give valid metadata.
    assert json.loads(PartitionCountAssignor(lambda: None).metadata(["x"]).user_data) == {"x": 0}


def test_the_plain_round_robin_protocol_is_offered_second_for_rolling_upgrades() -> None:
    strategy = assignment_strategy(lambda: None)
    assert [s.name for s in strategy] == [PROTOCOL_NAME, "roundrobin"]
    assert strategy[1] is RoundRobinPartitionAssignor


def state(partition: int, committed: int | None, end: int | None, assigned: bool = False) -> PartitionState:
    return PartitionState("posts", partition, assigned, committed, end)


def test_a_partition_is_unserved_only_after_its_commit_stood_still_for_the_grace_period() -> None:
    now = [0.0]
    coverage = PartitionCoverage(grace_s=10, clock=lambda: now[0])
    readings: list[Any] = [state(0, 5, 9, assigned=True), state(1, None, 4), state(2, 7, 7), state(3, 2, 8)]
    assert coverage.update(readings) == {}
    now[0] = 9.9
    assert coverage.update(readings) == {}
    now[0] = 10.0
    assert coverage.update(readings) == {"posts": [1, 3]}
    assert coverage.describe() == "partitions with waiting records that nobody serves: posts[1,3]"
    # Partition 3's commit moves (someone serves it); partition 1 becomes this worker's.
    now[0] = 11.0
    moved = [state(1, None, 4, assigned=True), state(3, 4, 8)]
    assert coverage.update(moved) == {}
    assert coverage.describe() is None
    now[0] = 25.0
    assert coverage.update(moved) == {"posts": [3]}
    # Caught up: nothing waits, nothing is unserved.
    assert coverage.update([state(3, 8, 8)]) == {}


def test_lag_counts_a_partition_never_committed_from_zero() -> None:
    assert state(0, None, 12).lag == 12
    assert state(0, 15, 12).lag == 0
    assert state(0, 3, None).lag is None
