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
from collections.abc import Sequence
from typing import Any, Protocol

from faststream.kafka.publisher.usecase import DefaultPublisher

from worker.wire import DeadLetter, MatchResult


class ResultSink(Protocol):
    async def publish(self, results: Sequence[MatchResult], dead_letters: Sequence[DeadLetter]) -> None:
        """Deliver everything, or raise: the batch is committed only after every sink returned."""
        ...


class KafkaTopicsSink:
    """Results to the matches topic keyed by post id, dead letters to the dead-letter topic."""

    def __init__(self, matches: DefaultPublisher, dead: DefaultPublisher) -> None:
        self.matches = matches
        self.dead = dead

    async def publish(self, results: Sequence[MatchResult], dead_letters: Sequence[DeadLetter]) -> None:
        # Sent without waiting, then every ack awaited: one round trip's latency for the batch.
        futures: list[Any] = []
        for result in results:
            futures.append(await self.matches.publish(result, key=result.post_id.encode(), no_confirm=True))
        for letter in dead_letters:
            key = None if letter.key_b64 is None else base64.b64decode(letter.key_b64)
            futures.append(
                await self.dead.publish(letter, key=key, headers={"factmatch-reason": letter.reason}, no_confirm=True)
            )
        # The in-memory test broker confirms at once and hands back no future.
        pending = [f for f in futures if inspect.isawaitable(f)]
        if pending:
            await asyncio.gather(*pending)
