"""Posts' batches overlapped: the next batch encodes while the one before it finishes.

FastStream hands a subscriber's batches to its handler one at a time and commits when the
handler returns, so each batch's tail (its last search, its claim clusters, publishing, the
commit) left the encoder idle. With ``overlap_batches`` on, the posts' handler commits its
batches itself and returns as soon as its batch no longer needs the encoder: FastStream
fetches the next batch, which encodes while this one finishes. What still holds:

- **Publish before commit, in order.** A batch publishes only after the batch before it finished,
  then commits its own offsets explicitly (never the consumer's positions, which are already past
  the next batch). At most two batches are in flight: one finishing, one encoding.
- **Nothing is skipped.** A batch that fails (a dependency down, a sink refusing) backs off as
  before and is rewound: each of its partitions sought back to its first record, so it comes back.
  A batch fetched before such a rewind is recognised (its partition's position is behind its
  last record) and is dropped unpublished and rewound the same way; a seek only ever moves back.
- **Bounded.** Partitions being revoked and the worker stopping wait for the batches in flight
  to publish and commit (at most ``shutdown_grace_s``); a commit that fails anyway (the
  partition has moved on) costs a repeat of published results, never a lost post.

Which records are retried, isolated or dead-lettered stays the batch handler's
(:class:`worker.adapter.broker.BatchHandler`, the :class:`Steps` this module runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from faststream.exceptions import NackMessage

from worker.wire import RawRecord

log = logging.getLogger(__name__)

Partition = tuple[str, int]


class Offsets(Protocol):
    """The consumer, as far as a handler that commits its own batches needs it."""

    async def position(self, partition: Partition) -> int: ...

    def seek(self, partition: Partition, offset: int) -> None: ...

    async def commit(self, offsets: Mapping[Partition, int]) -> None: ...


class Prepared(Protocol):
    @property
    def fresh(self) -> Sequence[RawRecord]: ...


class Steps(Protocol):
    """A batch handler's steps (:class:`worker.adapter.broker.BatchHandler`)."""

    async def __call__(self, records: list[Any]) -> None:
        """The whole batch, committed by FastStream when it returns."""
        ...

    def context(self, raws: Sequence[RawRecord]) -> dict[str, Any]: ...

    async def prepare(self, raws: list[RawRecord], released: Callable[[], None] | None = None) -> Sequence[Any]: ...

    async def deliver(self, prepared: Any, context: dict[str, Any]) -> None: ...

    async def failed(self, exc: Exception, fresh: Sequence[RawRecord], context: dict[str, Any]) -> None: ...


class ConsumerOffsets:
    """:class:`Offsets` of an aiokafka consumer."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self.consumer = consumer

    async def position(self, partition: Partition) -> int:
        return int(await self.consumer.position(TopicPartition(*partition)))

    def seek(self, partition: Partition, offset: int) -> None:
        self.consumer.seek(TopicPartition(*partition), offset)

    async def commit(self, offsets: Mapping[Partition, int]) -> None:
        await self.consumer.commit({TopicPartition(*tp): offset for tp, offset in offsets.items()})


def consumer_offsets(consumer: Any) -> Offsets | None:
    """The subscriber's consumer as :class:`Offsets`; None where there is none (the in-memory broker)."""
    return ConsumerOffsets(consumer) if isinstance(consumer, AIOKafkaConsumer) else None


@dataclass(frozen=True)
class Span:
    """A batch's first and last offset in each of its partitions."""

    first: dict[Partition, int]
    last: dict[Partition, int]

    @classmethod
    def of(cls, records: Sequence[RawRecord]) -> Span:
        first: dict[Partition, int] = {}
        last: dict[Partition, int] = {}
        for record in records:
            tp = (record.topic, record.partition)
            first[tp] = min(first.get(tp, record.offset), record.offset)
            last[tp] = max(last.get(tp, record.offset), record.offset)
        return cls(first, last)

    def commits(self) -> dict[Partition, int]:
        return {tp: offset + 1 for tp, offset in self.last.items()}


async def stale(offsets: Offsets, span: Span) -> bool:
    """Whether a partition of the batch was sought back over its records since it was fetched
    (a position only moves back by a seek or a reassignment; fetching leaves it past the batch)."""
    for tp, last in span.last.items():
        try:
            if await offsets.position(tp) <= last:
                return True
        except Exception:  # no longer assigned: its new owner starts from the committed offset
            return True
    return False


async def rewind(offsets: Offsets, span: Span) -> None:
    """Seek each of the batch's partitions back to its first record, unless it is already there or before."""
    for tp, first in span.first.items():
        try:
            if await offsets.position(tp) > first:
                offsets.seek(tp, first)
        except Exception as exc:  # no longer assigned: nothing to rewind here
            log.info("partition %s:%d not rewound: %r", tp[0], tp[1], exc)


class OverlappedHandler:
    """The posts' handler with ``overlap_batches`` on (FastStream's ack policy: manual)."""

    def __init__(
        self,
        inner: Steps,
        offsets: Callable[[], Offsets | None],
        raw: Callable[[Any], RawRecord],
        grace_s: float,
    ) -> None:
        self.inner = inner
        self.offsets = offsets
        self.raw = raw
        self.grace_s = grace_s
        self.closing = False
        # The batch last handed over; each batch's task awaits the one before it.
        self.last: asyncio.Task[bool] | None = None

    async def __call__(self, records: list[Any]) -> None:
        offsets = self.offsets()
        if offsets is None:  # no consumer to commit with (the in-memory broker): one batch at a time
            with contextlib.suppress(NackMessage):  # left uncommitted either way
                await self.inner(records)
            return
        raws = [self.raw(r) for r in records]
        span = Span.of(raws)
        if await stale(offsets, span):
            log.info("batch fetched before a rewind dropped; it comes back", extra={"records": len(raws)})
            await rewind(offsets, span)
            return
        released = asyncio.Event()
        previous = self.last
        task = asyncio.create_task(self._run(offsets, raws, span, previous, released))
        self.last = task
        if self.closing:
            await asyncio.wait([task])
            return
        freed = asyncio.create_task(released.wait())
        try:
            await asyncio.wait([task, freed], return_when=asyncio.FIRST_COMPLETED)
            if previous is not None:
                await asyncio.wait([previous])
        finally:
            freed.cancel()

    async def _run(
        self,
        offsets: Offsets,
        raws: list[RawRecord],
        span: Span,
        previous: asyncio.Task[bool] | None,
        released: asyncio.Event,
    ) -> bool:
        """Process, wait for the batch before, publish, commit; True once published."""
        inner = self.inner
        context = inner.context(raws)
        current: Sequence[RawRecord] = raws
        try:
            try:
                prepared = await inner.prepare(raws, released.set)
            finally:
                released.set()
            if previous is not None:
                await asyncio.wait([previous])
            if await stale(offsets, span):
                log.info("batch dropped after a rewind before it; it comes back", extra=context)
                await rewind(offsets, span)
                return False
            for group in prepared:
                current = group.fresh
                await inner.deliver(group, context)
        except Exception as exc:
            await inner.failed(exc, current, context)
            await rewind(offsets, span)
            return False
        try:
            await offsets.commit(span.commits())
        except Exception as exc:
            log.warning("commit failed; the batch's results may be published again: %r", exc, extra=context)
        return True

    async def settle(self) -> None:
        """Wait (at most ``grace_s``) for the batches in flight to publish and commit."""
        if self.last is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait([self.last], timeout=self.grace_s)

    async def close(self) -> None:
        """From now on each batch is finished before the handler returns; the ones in flight settle."""
        self.closing = True
        await self.settle()


class SettleOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """Partitions are handed over only after the batches in flight published and committed."""

    def __init__(self, handler: OverlappedHandler, inner: ConsumerRebalanceListener | None = None) -> None:
        self.handler = handler
        self.inner = inner

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        await self.handler.settle()
        if self.inner is not None:
            await self.inner.on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[Any]) -> None:
        if self.inner is not None:
            await self.inner.on_partitions_assigned(assigned)
