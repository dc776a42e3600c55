"""The one owner of what a failing batch costs: which records are retried, isolated or dead-lettered.

Two kinds of failure, two answers:

- **The processor raises** (something in one record breaks encoding or matching, not a known
  outage): the batch's records are processed again at once, one at a time, and each record
  that still fails alone becomes a ``processing_error`` dead letter. The rest are published,
  so one poison record never costs its neighbours and never comes back.
- **Publishing raises** (a sink refused the outcome): nothing is committed, the batch is
  redelivered after a backoff, and the attempts are counted per record across redeliveries
  (:class:`AttemptLog`); from then on the handler takes the records one at a time, and once
  a record has failed ``max_attempts`` times it goes to the dead-letter topic with its last
  error instead of coming back again.

A dependency that is down (:class:`~worker.core.retry.DependencyUnavailable`, or any
exception of the ``outages`` kinds the composition root names, such as Postgres refusing
connections, that escaped a processor's own retries) is neither: it is not the record's fault,
so it is never counted and never a dead letter, and the batch is left uncommitted.
Processors return outcomes and never see these rules; the adapter never edits an outcome
(it asks for a new one with :meth:`with_dead_letters`).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

from worker.core.retry import DependencyUnavailable
from worker.wire import DeadLetter, MatchResult, RawRecord

log = logging.getLogger(__name__)

Position = tuple[str, int, int]


def position(record: RawRecord) -> Position:
    return (record.topic, record.partition, record.offset)


class AttemptLog:
    def __init__(self, max_attempts: int, capacity: int = 10_000) -> None:
        self.max_attempts = max_attempts
        self.capacity = capacity
        self._failures: OrderedDict[Position, tuple[int, str]] = OrderedDict()

    def suspect(self, records: Sequence[RawRecord]) -> bool:
        """Whether any of these records already failed once (then take them one at a time)."""
        return any(position(r) in self._failures for r in records)

    def split(self, records: Sequence[RawRecord]) -> tuple[list[RawRecord], list[DeadLetter]]:
        """The records to try, and a dead letter for each that has used up its attempts."""
        fresh: list[RawRecord] = []
        exhausted: list[DeadLetter] = []
        for record in records:
            count, error = self._failures.get(position(record), (0, ""))
            if count >= self.max_attempts:
                exhausted.append(record.dead_letter("processing_error", f"failed {count} times; last: {error}"))
            else:
                fresh.append(record)
        return fresh, exhausted

    def failed(self, records: Sequence[RawRecord], error: BaseException) -> None:
        for record in records:
            key = position(record)
            count, _ = self._failures.get(key, (0, ""))
            self._failures[key] = (count + 1, f"{type(error).__name__}: {error}"[:500])
            self._failures.move_to_end(key)
        while len(self._failures) > self.capacity:
            self._failures.popitem(last=False)

    def forget(self, records: Sequence[RawRecord]) -> None:
        for record in records:
            self._failures.pop(position(record), None)


OutcomeT = TypeVar("OutcomeT", bound="Outcome")


class Outcome(Protocol):
    @property
    def results(self) -> Sequence[MatchResult]: ...
    @property
    def dead_letters(self) -> Sequence[DeadLetter]: ...
    def with_dead_letters(self: OutcomeT, letters: Sequence[DeadLetter]) -> OutcomeT: ...
    def plus(self: OutcomeT, other: OutcomeT) -> OutcomeT: ...


def error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:500]


Outages = tuple[type[BaseException], ...]


async def process_isolating(
    records: Sequence[RawRecord],
    process: Callable[[Sequence[RawRecord]], Awaitable[OutcomeT]],
    empty: Callable[[], OutcomeT],
    outages: Outages = (),
) -> OutcomeT:
    """``process(records)``; if it raises (not an outage), each record again alone, the ones
    that still fail becoming ``processing_error`` dead letters. An outage raises
    :class:`DependencyUnavailable`, however deep in the splitting it shows."""
    if not records:
        return empty()
    try:
        return await process(records)
    except DependencyUnavailable:
        raise
    except outages as exc:
        raise DependencyUnavailable(f"a dependency is down: {error_text(exc)}") from exc
    except Exception as exc:
        if len(records) == 1:
            log.warning("record failed: %s", error_text(exc))
            return empty().with_dead_letters([records[0].dead_letter("processing_error", error_text(exc))])
        log.warning("batch of %d failed (%s); retrying its records one at a time", len(records), error_text(exc))
    outcome = empty()
    for record in records:
        outcome = outcome.plus(await process_isolating([record], process, empty, outages))
    return outcome
