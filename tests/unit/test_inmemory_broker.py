"""In-memory tier: the FastStream wiring (subscribers, publishers, keys, acks) on TestKafkaBroker."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from faststream.kafka import KafkaBroker, TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage

from tests.fakes import FakeEncoder, FakeModels, FakeSearcher
from worker.adapter.broker import WorkerDeps, build_broker
from worker.core.decoding import Limits
from worker.core.indexer import CorpusChange
from worker.core.pipeline import BatchOutcome, MatchPipeline, PipelineConfig, ServingModel
from worker.core.retry import RetryPolicy
from worker.core.side_topics import FactCheckEvents, FeedbackEvents
from worker.settings import Settings
from worker.wire import FactCheckEvent, RawRecord


class RecordingCorpus:
    def __init__(self) -> None:
        self.events: list[FactCheckEvent] = []

    async def apply(self, events: Sequence[FactCheckEvent]) -> CorpusChange:
        self.events.extend(events)
        return CorpusChange(upserted=len(events))


class RecordingFeedback:
    def __init__(self) -> None:
        self.items: list[Any] = []

    async def insert_feedback(self, items: Sequence[Any]) -> int:
        self.items.extend(items)
        return len(items)


class BrokenPipeline:
    def __init__(self) -> None:
        self.calls = 0

    async def process(self, records: Sequence[RawRecord]) -> BatchOutcome:
        from worker.core.retry import DependencyUnavailable

        self.calls += 1
        raise DependencyUnavailable("postgres down")


LIMITS = Limits(max_record_bytes=1_048_576, max_depth=32, max_text_chars=20_000)


async def no_sleep(_: float) -> None:
    return None


pytestmark = pytest.mark.inmemory


def settings() -> Settings:
    return Settings(_env_file=None, retry_backoff_initial_s=0.01, retry_backoff_max_s=0.01)  # type: ignore[call-arg]


def wire(deps: WorkerDeps) -> tuple[KafkaBroker, dict[str, list[tuple[bytes | None, Any]]]]:
    s = settings()
    broker = build_broker(s, deps, KafkaBroker())
    seen: dict[str, list[tuple[bytes | None, Any]]] = {"matches": [], "dlq": []}

    @broker.subscriber(s.topic_matches)
    async def matches(body: dict[str, Any], msg: KafkaMessage) -> None:
        seen["matches"].append((msg.raw_message.key, body))

    @broker.subscriber(s.topic_dead_letter)
    async def dlq(body: dict[str, Any], msg: KafkaMessage) -> None:
        seen["dlq"].append((msg.raw_message.key, body))

    return broker, seen


def fake_deps(corpus: RecordingCorpus | None = None) -> WorkerDeps:
    encoder = FakeEncoder()
    retry = RetryPolicy(attempts=2, initial_s=0.01, max_s=0.01, sleep=no_sleep)
    config = PipelineConfig(token_budget=16_384, limits=LIMITS, retry=retry)
    pipeline = MatchPipeline(FakeModels(ServingModel("v7", 8, encoder)), FakeSearcher(), config)
    return deps_with(pipeline, corpus)


def deps_with(pipeline: Any, corpus: RecordingCorpus | None = None, sinks: list[Any] | None = None) -> WorkerDeps:
    return WorkerDeps(
        pipeline=pipeline,
        factchecks=FactCheckEvents(corpus or RecordingCorpus(), LIMITS),
        feedback=FeedbackEvents(RecordingFeedback(), LIMITS),
        sinks=sinks or [],
    )


class RecordingSink:
    def __init__(self) -> None:
        self.results: list[Any] = []
        self.dead_letters: list[Any] = []

    async def publish(self, results: Sequence[Any], dead_letters: Sequence[Any]) -> None:
        self.results.extend(results)
        self.dead_letters.extend(dead_letters)


async def test_an_extra_sink_gets_every_result_and_dead_letter_beside_the_topics() -> None:
    sink = RecordingSink()
    deps = fake_deps()
    broker, seen = wire(deps_with(deps.pipeline, sinks=[sink]))
    async with TestKafkaBroker(broker) as br:
        await br.publish_batch(json.dumps({"id": "p1", "text": "hello"}).encode(), b"{not json", topic="posts")
    assert [r.post_id for r in sink.results] == ["p1"] and [b["post_id"] for _, b in seen["matches"]] == ["p1"]
    assert [d.reason for d in sink.dead_letters] == ["invalid_json"] and len(seen["dlq"]) == 1


async def test_posts_become_keyed_results_and_bad_ones_dead_letters() -> None:
    broker, seen = wire(fake_deps())
    async with TestKafkaBroker(broker) as br:
        await br.publish_batch(
            json.dumps({"id": "p1", "text": "hello"}).encode(),
            b"\xff not utf8",
            json.dumps({"id": "p2", "text": "world", "lang": "en"}).encode(),
            topic="posts",
        )
    assert sorted((k, b["post_id"], b["model_version"]) for k, b in seen["matches"]) == [
        (b"p1", "p1", "v7"),
        (b"p2", "p2", "v7"),
    ]
    assert len(seen["dlq"]) == 1
    letter = seen["dlq"][0][1]
    assert letter["reason"] == "invalid_utf8" and letter["topic"] == "posts"


async def test_dependency_failure_publishes_nothing() -> None:
    pipeline = BrokenPipeline()
    broker, seen = wire(deps_with(pipeline))
    async with TestKafkaBroker(broker) as br:
        await br.publish(json.dumps({"id": "p1", "text": "x"}).encode(), topic="posts")
    assert pipeline.calls == 1
    assert seen["matches"] == [] and seen["dlq"] == []


async def test_fact_check_events_reach_the_corpus_and_bad_ones_the_dead_letters() -> None:
    corpus = RecordingCorpus()
    broker, seen = wire(fake_deps(corpus))
    async with TestKafkaBroker(broker) as br:
        await br.publish_batch(
            json.dumps({"id": "f1", "claim": "c1", "title": "t"}).encode(),
            json.dumps({"id": "f2", "op": "delete"}).encode(),
            b"nope",
            topic="factchecks",
        )
    assert [(e.id, e.op) for e in corpus.events] == [("f1", "upsert"), ("f2", "delete")]
    assert [b["reason"] for _, b in seen["dlq"]] == ["invalid_json"]
