"""The side topics' processors: fact-check changes and moderator verdicts.

They sit at the pipeline's layer and take the same raw records, so every topic is decoded
one record at a time in one place: a bad record becomes a dead letter, the good ones are
applied, and the adapter publishes and commits the same way for every topic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar

from worker.core.decoding import Limits, decode_fact_check_event, decode_feedback
from worker.core.indexer import CorpusChange
from worker.wire import DeadLetter, FactCheckEvent, Feedback, MatchResult, RawRecord

T = TypeVar("T")


@dataclass(frozen=True)
class SideOutcome:
    """What a side-topic batch did: counts for the metrics, and a dead letter per bad record.

    Returned, never edited, like :class:`~worker.core.pipeline.BatchOutcome`."""

    counts: dict[str, int] = field(default_factory=dict)
    dead_letters: tuple[DeadLetter, ...] = ()
    # Side topics publish no results; the field keeps every outcome publishable the same way.
    results: tuple[MatchResult, ...] = ()

    def with_dead_letters(self, letters: Sequence[DeadLetter]) -> SideOutcome:
        return replace(self, dead_letters=(*self.dead_letters, *letters))

    def plus(self, other: SideOutcome) -> SideOutcome:
        counts = {k: self.counts.get(k, 0) + other.counts.get(k, 0) for k in {*self.counts, *other.counts}}
        return SideOutcome(counts, (*self.dead_letters, *other.dead_letters), (*self.results, *other.results))


def split_decoded(
    records: Sequence[RawRecord], decode: Callable[[RawRecord, Limits], T | DeadLetter], limits: Limits
) -> tuple[list[T], list[DeadLetter]]:
    """Decode each record alone: the good ones, and a dead letter for each bad one."""
    items: list[T] = []
    letters: list[DeadLetter] = []
    for record in records:
        decoded = decode(record, limits)
        if isinstance(decoded, DeadLetter):
            letters.append(decoded)
        else:
            items.append(decoded)
    return items, letters


class CorpusUpdater(Protocol):
    async def apply(self, events: Sequence[FactCheckEvent]) -> CorpusChange: ...


class FeedbackSink(Protocol):
    async def insert_feedback(self, items: Sequence[Feedback]) -> int: ...


class FactCheckEvents:
    """The factchecks topic: upserts and deletes, embedded under every serving version."""

    def __init__(self, corpus: CorpusUpdater, limits: Limits) -> None:
        self.corpus = corpus
        self.limits = limits

    async def process(self, records: Sequence[RawRecord]) -> SideOutcome:
        events, letters = split_decoded(records, decode_fact_check_event, self.limits)
        change = await self.corpus.apply(events)
        counts = {"upserted": change.upserted, "deleted": change.deleted, "embedded": change.embedded}
        return SideOutcome(counts=counts, dead_letters=tuple(letters))


class FeedbackEvents:
    """The match-feedback topic: moderator verdicts stored for the trainer."""

    def __init__(self, sink: FeedbackSink, limits: Limits) -> None:
        self.sink = sink
        self.limits = limits

    async def process(self, records: Sequence[RawRecord]) -> SideOutcome:
        items, letters = split_decoded(records, decode_feedback, self.limits)
        stored = await self.sink.insert_feedback(items)
        return SideOutcome(counts={"stored": stored}, dead_letters=tuple(letters))
