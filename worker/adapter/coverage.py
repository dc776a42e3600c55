"""Partition coverage: lag over every partition of a consumed topic, and partitions that no
member of the group serves.

Why it exists: a worker's own lag covers only the partitions it was assigned, so a partition
that nobody was assigned (a coordinator that kept a stale assignment after the topic gained
partitions, a member that holds partitions but stopped committing) showed no lag anywhere
while its posts waited. Kafka's DescribeGroups would name the owners, but not every
Kafka-protocol broker answers it (tansu 0.6 closes the connection), so coverage is judged from
what every consumer can read: a partition of the topic, not assigned here, with records past
the group's committed offset, whose committed offset has not moved for ``grace_s``, is
*unserved*. Each worker reports the same view (aggregate with ``max``, not ``sum``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from worker.observability import Metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartitionState:
    """One partition as a group member sees it."""

    topic: str
    partition: int
    assigned: bool
    committed: int | None
    end: int | None

    @property
    def lag(self) -> int | None:
        return None if self.end is None else max(0, self.end - (self.committed or 0))


async def partition_states(consumer: Any) -> list[PartitionState]:
    """Every partition of ``consumer``'s subscribed topics: assignment, committed offset, end.

    The end of an assigned partition is the high watermark its fetches report; of any other,
    the broker's answer to ListOffsets (tansu answers it with the last batch's base offset + 1,
    so a lag read there may be low, never invented).
    """
    assigned = set(consumer.assignment())
    states: list[PartitionState] = []
    for topic in sorted(consumer.subscription()):
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        others = [tp for tp in partitions if tp not in assigned]
        ends: dict[Any, int] = dict(await consumer.end_offsets(others)) if others else {}
        for tp in partitions:
            end = consumer.highwater(tp) if tp in assigned else ends.get(tp)
            committed = await consumer.committed(tp)
            states.append(PartitionState(topic, tp.partition, tp in assigned, committed, end))
    return states


@dataclass
class PartitionCoverage:
    """Which partitions nobody serves, from successive :func:`partition_states` readings."""

    grace_s: float
    clock: Callable[[], float] = time.monotonic
    # (topic, partition) -> (committed offset last seen, when it was first seen at that value)
    _waiting: dict[tuple[str, int], tuple[int | None, float]] = field(default_factory=dict)
    unserved: dict[str, list[int]] = field(default_factory=dict)

    def update(self, states: Sequence[PartitionState]) -> dict[str, list[int]]:
        """Record one reading; return ``{topic: [unserved partitions]}``."""
        now = self.clock()
        seen: set[tuple[str, int]] = set()
        for state in states:
            key = (state.topic, state.partition)
            if state.assigned or not state.lag:
                continue
            seen.add(key)
            previous = self._waiting.get(key)
            if previous is None or previous[0] != state.committed:
                self._waiting[key] = (state.committed, now)
        self._waiting = {key: value for key, value in self._waiting.items() if key in seen}
        unserved: dict[str, list[int]] = {}
        for (topic, partition), (_, since) in sorted(self._waiting.items()):
            if now - since >= self.grace_s:
                unserved.setdefault(topic, []).append(partition)
        self._report(unserved)
        self.unserved = unserved
        return unserved

    def _report(self, unserved: dict[str, list[int]]) -> None:
        for topic, partitions in unserved.items():
            if partitions != self.unserved.get(topic):
                log.warning(
                    "partitions with waiting records that no group member has served for %.0fs: %s[%s]; "
                    "this worker is not assigned them (a stale assignment, or a stuck member)",
                    self.grace_s,
                    topic,
                    ",".join(map(str, partitions)),
                    extra={"topic": topic, "partitions": partitions},
                )
        for topic in self.unserved.keys() - unserved.keys():
            log.warning("every partition of %s is served again", topic, extra={"topic": topic})

    def describe(self) -> str | None:
        """A readiness line naming the unserved partitions, or None when every one is served."""
        if not self.unserved:
            return None
        parts = "; ".join(f"{t}[{','.join(map(str, ps))}]" for t, ps in self.unserved.items())
        return f"partitions with waiting records that nobody serves: {parts}"


def record(metrics: Metrics, states: Iterable[PartitionState], unserved: dict[str, list[int]]) -> None:
    by_topic: dict[str, list[PartitionState]] = {}
    for state in states:
        by_topic.setdefault(state.topic, []).append(state)
        if state.lag is not None:
            metrics.consumer_lag.labels(topic=state.topic, partition=str(state.partition)).set(state.lag)
    for topic, topic_states in by_topic.items():
        metrics.topic_partitions.labels(topic=topic).set(len(topic_states))
        metrics.assigned_partitions.labels(topic=topic).set(sum(s.assigned for s in topic_states))
        metrics.unserved_partitions.labels(topic=topic).set(len(unserved.get(topic, ())))


async def watch_partitions(
    metrics: Metrics, consumers: Callable[[], Iterable[Any]], coverage: PartitionCoverage, interval_s: float
) -> None:
    """Every ``interval_s``: lag of every partition, partition counts, and unserved partitions."""
    while True:
        try:
            states = [state for consumer in consumers() for state in await partition_states(consumer)]
            record(metrics, states, coverage.update(states))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("partition coverage update failed: %r", exc)
        await asyncio.sleep(interval_s)
