"""Bounded redelivery: no record can hold its partition for more than a few tries.

A batch that fails for a reason that is not a known outage is redelivered; from then on the
handler takes its records one at a time, so the one that keeps failing is found, and once a
record has failed ``max_attempts`` times it goes to the dead-letter topic with its last error
instead of coming back again. Records of a batch that succeeded are forgotten. (Outages are
not counted: a dependency that is down is not the record's fault.)
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from worker.wire import DeadLetter, RawRecord

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
