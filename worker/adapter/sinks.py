"""Where a batch's outcome goes: the ``ResultSink`` seam.

The worker hands every sink the batch's results and dead letters and commits the batch only
after every sink returned, so a sink must raise rather than drop. A new destination (a
webhook, a second topic for high-confidence matches) is a new class here, added to
``WorkerDeps.sinks`` in :mod:`worker.adapter.runtime`.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
from collections import OrderedDict
from collections.abc import Awaitable, Sequence
from typing import Any, Protocol

from faststream.kafka.publisher.usecase import DefaultPublisher

from worker.wire import DeadLetter, MatchResult

# (kind, topic, partition, offset) of a record whose output a sink already delivered.
Delivered = tuple[str, str, int, int]


class ResultSink(Protocol):
    async def publish(self, results: Sequence[MatchResult], dead_letters: Sequence[DeadLetter]) -> None:
        """Deliver everything, or raise: the batch is committed only after every sink returned."""
        ...


class DeliveredLog:
    """The records of a failed batch whose output was nevertheless acknowledged, so the batch's
    redelivery never publishes it twice. Entries leave once their batch went out whole; bounded."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[Delivered, None] = OrderedDict()

    def __contains__(self, key: Delivered) -> bool:
        return key in self._seen

    def discard(self, key: Delivered) -> None:
        self._seen.pop(key, None)

    def add(self, key: Delivered) -> None:
        self._seen[key] = None
        self._seen.move_to_end(key)
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)


class KafkaTopicsSink:
    """Results to the matches topic keyed by post id, dead letters to the dead-letter topic.

    Every dead letter is fitted to ``max_dead_letter_value_bytes`` first, so it always fits a
    Kafka message. What a failed try delivered is remembered: when the batch is redelivered,
    only what was not acknowledged goes out again.
    """

    def __init__(self, matches: DefaultPublisher, dead: DefaultPublisher, max_dead_letter_value_bytes: int) -> None:
        self.matches = matches
        self.dead = dead
        self.max_value_bytes = max_dead_letter_value_bytes
        self.delivered = DeliveredLog()

    async def publish(self, results: Sequence[MatchResult], dead_letters: Sequence[DeadLetter]) -> None:
        # Sent without waiting, then every ack awaited: one round trip's latency for the batch.
        pending: list[tuple[Delivered, Any]] = []
        failures: list[BaseException] = []

        async def send(key: Delivered, publishing: Awaitable[Any]) -> None:
            try:
                pending.append((key, await publishing))
            except Exception as exc:  # refused before sending (too large, not connected): the rest still go
                failures.append(exc)

        for result in results:
            source = result.source
            key = ("result", source.topic, source.partition, source.offset) if source else ("result", "", 0, id(result))
            if key not in self.delivered:
                await send(key, self.matches.publish(result, key=result.post_id.encode(), no_confirm=True))
        for letter in dead_letters:
            key = ("dead", letter.topic, letter.partition, letter.offset)
            if key not in self.delivered:
                record_key = None if letter.key_b64 is None else base64.b64decode(letter.key_b64)
                fitted = letter.fitted(self.max_value_bytes)
                headers = {"factmatch-reason": str(letter.reason)}
                await send(key, self.dead.publish(fitted, key=record_key, headers=headers, no_confirm=True))
        # The in-memory test broker confirms at once and hands back no future.
        waiting = [(key, f) for key, f in pending if inspect.isawaitable(f)]
        acks = await asyncio.gather(*(f for _, f in waiting), return_exceptions=True)
        failures += [a for a in acks if isinstance(a, BaseException)]
        if not failures:
            # The batch will be committed: its positions may come back only in a re-created log.
            for key, _ in pending:
                self.delivered.discard(key)
            return
        for key, future in pending:
            if not inspect.isawaitable(future):
                self.delivered.add(key)
        for (key, _), ack in zip(waiting, acks, strict=True):
            if not isinstance(ack, BaseException):
                self.delivered.add(key)
        raise failures[0]


class DeadLetterArchive:
    """Keeps the full original of every dead letter too large for the dead-letter topic, in
    Postgres (``dead_letter_payloads``, by SHA-256), so nothing is lost when it is truncated."""

    def __init__(self, store: PayloadStore, max_value_bytes: int) -> None:
        self.store = store
        self.max_value_bytes = max_value_bytes

    async def publish(self, results: Sequence[MatchResult], dead_letters: Sequence[DeadLetter]) -> None:
        large = [letter for letter in dead_letters if (letter.value_size or 0) > self.max_value_bytes]
        if large:
            await self.store.archive_payloads(
                [(letter.value_sha256 or "", letter.original_value()) for letter in large]
            )


class PayloadStore(Protocol):
    async def archive_payloads(self, payloads: Sequence[tuple[str, bytes]]) -> None: ...
