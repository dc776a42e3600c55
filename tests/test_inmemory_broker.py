"""In-memory tier: the FastStream wiring (subscribers, publishers, keys, acks) on TestKafkaBroker."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from faststream.kafka import KafkaBroker, TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage

from tests.fakes import FakeEncoder, FakeModels, FakeSearcher
from worker.app import WorkerDeps, build_broker
from worker.indexer import CorpusChange
from worker.pipeline import BatchOutcome, MatchPipeline, PipelineConfig, RetryPolicy, ServingModel
from worker.settings import Settings
from worker.wire import FactCheckEvent, RawRecord

pytestmark = pytest.mark.inmemory


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
        from worker.pipeline import DependencyUnavailable

        self.calls += 1
        raise DependencyUnavailable("postgres down")


async def no_sleep(_: float) -> None:
    return None


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
    pipeline = MatchPipeline(FakeModels(ServingModel("v7", 8, encoder)), FakeSearcher(), PipelineConfig(retry=retry))
    return WorkerDeps(pipeline=pipeline, corpus=corpus or RecordingCorpus(), feedback=RecordingFeedback())


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
    broker, seen = wire(WorkerDeps(pipeline=pipeline, corpus=RecordingCorpus(), feedback=RecordingFeedback()))
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
