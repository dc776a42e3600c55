"""Watching the brokers: readiness while they are gone, and positions re-synced after they return.

A consumer keeps its fetch positions through an outage, and aiokafka keeps them across the
rebalance that follows. When the cluster comes back with its logs intact that is right; when
it lost them (topics re-created, a wiped or memory-only broker), those positions point into
the new logs and the first records of every partition would be skipped without an error
(aiokafka has no leader-epoch check to notice). So after an outage, the first assignment of
each consumer goes back to the committed offsets (or ``auto_offset_reset`` where the cluster
no longer has any) before it fetches. At-least-once holds either way: nothing past the last
commit was acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import ConsumerRebalanceListener

from worker.adapter import kafka
from worker.settings import Settings

log = logging.getLogger(__name__)


async def resync(consumer: Any, partitions: Iterable[Any], reset: str) -> None:
    """Seek ``partitions`` to their committed offsets (``reset`` where the cluster has none)."""
    for tp in partitions:
        committed = await consumer.committed(tp)
        if committed is not None:
            consumer.seek(tp, committed)
        elif reset == "earliest":
            await consumer.seek_to_beginning(tp)
        else:
            await consumer.seek_to_end(tp)


class BrokerWatch:
    """Probes the cluster every ``interval_s``; pauses the consumers while it does not answer.

    When it answers again, partitions still paused (the group survived, no rebalance came)
    are re-synced and resumed here; a rebalance instead hands them to :class:`ResyncAfterOutage`.
    """

    def __init__(
        self,
        settings: Settings,
        consumers: Callable[[], Iterable[Any]],
        *,
        interval_s: float = 1.0,
        timeout_s: float = 2.0,
    ) -> None:
        self.settings = settings
        self.consumers = consumers
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.reachable = True
        self.outages = 0

    async def run(self) -> None:
        admin = kafka.admin(self.settings)
        await admin.start()
        try:
            while True:
                await asyncio.sleep(self.interval_s)
                try:
                    await asyncio.wait_for(admin.describe_cluster(), self.timeout_s)
                    reachable = True
                except asyncio.CancelledError:
                    raise
                except Exception:
                    reachable = False
                if reachable != self.reachable:
                    await self.changed(reachable)
                self.reachable = reachable
        finally:
            await admin.close()

    async def changed(self, reachable: bool) -> None:
        if not reachable:
            self.outages += 1
            for consumer in self.consumers():
                consumer.pause(*consumer.assignment())
            log.warning("brokers unreachable: consumption paused")
            return
        for consumer in self.consumers():
            paused = consumer.paused() & consumer.assignment()
            if paused:
                await asyncio.wait_for(resync(consumer, paused, self.settings.auto_offset_reset), 30)
                consumer.resume(*paused)
        log.warning("brokers answer again: consumption resumed from the committed offsets")


class ResyncAfterOutage(ConsumerRebalanceListener):  # type: ignore[misc]
    """On the first assignment after an outage, seek every partition to its committed offset."""

    def __init__(self, watch: BrokerWatch, consumer: Callable[[], Any], reset: str) -> None:
        self.watch = watch
        self.consumer = consumer
        self.reset = reset
        self.synced = 0

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: set[Any]) -> None:
        if self.watch.outages == self.synced:
            return
        self.synced = self.watch.outages
        await resync(self.consumer(), assigned, self.reset)
        log.warning(
            "positions re-synced to the committed offsets after a broker outage", extra={"partitions": len(assigned)}
        )
