"""The consumer groups' partition assignor: round-robin, with the topics' partition counts in
each member's join metadata, so that partitions added to a live topic are always assigned.

Why it exists: a consumer group's leader notices that a subscribed topic gained partitions
(aiokafka compares its metadata snapshot) and rejoins the group. Apache Kafka rebalances on
any leader rejoin, but some Kafka-protocol brokers (tansu 0.6, the broker of the local stack
and the tests) keep the generation and hand back the stored assignment when the members'
metadata is unchanged, so the new partitions were never consumed until a restart. With the
partition counts in the metadata, a count change is a metadata change, which every
coordinator rebalances on; on Apache Kafka it costs nothing.

The assignment itself is aiokafka's round-robin. The plain ``roundrobin`` protocol is offered
second, so a group in the middle of a rolling upgrade (old members offer only that one) keeps
one protocol in common; once every member offers this one, the group uses it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata

PROTOCOL_NAME = "factmatch-roundrobin"


def partition_counts(consumer: Any, topics: Iterable[str]) -> dict[str, int]:
    """Partitions per topic as ``consumer``'s cluster metadata knows them now (0 when unknown)."""
    if consumer is None:
        return {topic: 0 for topic in topics}
    return {topic: len(consumer.partitions_for_topic(topic) or ()) for topic in topics}


class PartitionCountAssignor(RoundRobinPartitionAssignor):  # type: ignore[misc]
    """Round-robin whose member metadata carries ``{topic: partition count}`` as user data.

    One instance per consumer: ``consumer`` returns the consumer whose metadata it reads
    (FastStream builds the consumer when the subscriber starts, after this is declared).
    """

    name = PROTOCOL_NAME

    def __init__(self, consumer: Callable[[], Any]) -> None:
        self.consumer = consumer

    def metadata(self, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:  # type: ignore[override]
        ordered = sorted(topics)
        counts = partition_counts(self.consumer(), ordered)
        user_data = json.dumps(counts, sort_keys=True, separators=(",", ":")).encode()
        return ConsumerProtocolMemberMetadata(self.version, ordered, user_data)


def assignment_strategy(consumer: Callable[[], Any]) -> tuple[Any, ...]:
    """What a subscriber passes as ``partition_assignment_strategy``: ours first, plain round-robin second."""
    return (PartitionCountAssignor(consumer), RoundRobinPartitionAssignor)
