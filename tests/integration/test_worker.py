"""Integration tier: the worker in-process against a real tansu broker and embedded Postgres."""

from __future__ import annotations

import asyncio
import base64
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from tests.conftest import consume_until, produce
from worker.adapter.runtime import running
from worker.retrieval.evaluation import corpus_from_rows, load_jsonl
from worker.settings import Settings
from worker.storage import Store, index_name

DEMO_FACT_CHECKS = Path(__file__).resolve().parents[2] / "worker" / "local" / "demo_data" / "factchecks.jsonl"


async def seed_corpus(settings: Settings) -> None:
    store = Store(settings.require_database_url())
    await store.open()
    try:
        await store.corpus.upsert_fact_checks(corpus_from_rows(load_jsonl(DEMO_FACT_CHECKS)))
    finally:
        await store.close()


def post(i: int, text: str | None = None) -> tuple[bytes, bytes]:
    pid = f"post-{i}"
    return pid.encode(), json.dumps({"id": pid, "text": text or f"5G towers spread the virus, says post {i}"}).encode()


def bodies(records: list[Any], topic: str) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in records if r.topic == topic]


async def test_thousand_posts_give_thousand_results_each_exactly_once(stack_settings: Settings) -> None:
    await seed_corpus(stack_settings)
    async with running(stack_settings) as runtime:
        version = runtime.models.current().version
        await produce(stack_settings.kafka_bootstrap, stack_settings.topic_posts, [post(i) for i in range(1000)])
        records = await consume_until(
            stack_settings.kafka_bootstrap,
            [stack_settings.topic_matches],
            lambda rs: len(rs) >= 1000,
            timeout_s=180,
        )
        # Linger a moment so that a duplicate published late would be seen.
        await asyncio.sleep(1.5)
        records = await consume_until(
            stack_settings.kafka_bootstrap, [stack_settings.topic_matches], lambda rs: len(rs) >= 1000, timeout_s=10
        )
    results = bodies(records, stack_settings.topic_matches)
    counts = Counter(r["post_id"] for r in results)
    assert set(counts) == {f"post-{i}" for i in range(1000)}
    assert max(counts.values()) == 1, "a post got more than one result in the happy path"
    assert {r["model_version"] for r in results} == {version}
    # Keyed by post id, and every result is a full MatchResult.
    assert all(rec.key == json.loads(rec.value)["post_id"].encode() for rec in records)
    top = results[0]["matches"][0]
    assert {"fact_check_id", "score", "rank", "claim", "title", "url", "lang"} <= set(top)
    assert [m["rank"] for m in results[0]["matches"]] == list(range(1, len(results[0]["matches"]) + 1))


async def test_malformed_messages_go_to_the_dead_letter_topic_and_valid_posts_still_match(
    stack_settings: Settings,
) -> None:
    bad_kinds = [
        b"{oops",
        b"\xff\xfe\xfd",
        b'"a string"',
        b'{"id": "x"}',
        b'{"id": "x", "text": ""}',
        b'{"id": "x", "text": "' + b"y" * (stack_settings.max_post_chars + 1) + b'"}',
        b'{"id": [1], "text": "t"}',
        b"",
        b'{"id": "x", "text": 12}',
        b"null",
    ]
    messages: list[tuple[bytes | None, bytes | None]] = []
    bad_sent: list[bytes] = []
    for i in range(400):
        messages.append(post(i))
        if i % 4 == 0:
            payload = bad_kinds[(i // 4) % len(bad_kinds)]
            messages.append((f"bad-{i}".encode(), payload))
            bad_sent.append(payload)
    assert len(bad_sent) == 100
    async with running(stack_settings):
        await produce(stack_settings.kafka_bootstrap, stack_settings.topic_posts, messages)
        records = await consume_until(
            stack_settings.kafka_bootstrap,
            [stack_settings.topic_matches, stack_settings.topic_dead_letter],
            lambda rs: (
                sum(r.topic == stack_settings.topic_matches for r in rs) >= 400
                and sum(r.topic == stack_settings.topic_dead_letter for r in rs) >= 100
            ),
            timeout_s=180,
        )
    results = bodies(records, stack_settings.topic_matches)
    letters = bodies(records, stack_settings.topic_dead_letter)
    assert {r["post_id"] for r in results} == {f"post-{i}" for i in range(400)}
    assert len(letters) == 100
    assert Counter(base64.b64decode(d["value_b64"]) for d in letters) == Counter(bad_sent)
    assert all(d["topic"] == stack_settings.topic_posts and d["error"] and d["offset"] >= 0 for d in letters)
    assert {d["reason"] for d in letters} == {
        "invalid_json",
        "invalid_utf8",
        "invalid_schema",
        "empty_text",
        "text_too_long",
    }


async def test_a_fact_check_published_to_the_topic_is_matchable_by_the_next_post(stack_settings: Settings) -> None:
    await seed_corpus(stack_settings)
    claim = "Purple elephants secretly run the national weather service"
    async with running(stack_settings) as runtime:
        version = runtime.models.current().version
        fc = {"id": "fc-new-1", "claim": claim, "title": claim, "url": "https://x.example/1", "lang": "en"}
        await produce(
            stack_settings.kafka_bootstrap,
            stack_settings.topic_factchecks,
            [(b"fc-new-1", json.dumps(fc).encode()), (b"bad", b"not json")],
        )
        store = runtime.store
        for _ in range(200):
            if await store.corpus.fact_checks_missing(version) == [] and await store.corpus.count_fact_checks() == 61:
                break
            await asyncio.sleep(0.1)
        await produce(stack_settings.kafka_bootstrap, stack_settings.topic_posts, [post(1, claim)])
        records = await consume_until(
            stack_settings.kafka_bootstrap, [stack_settings.topic_matches], lambda rs: len(rs) >= 1, timeout_s=60
        )
        best = bodies(records, stack_settings.topic_matches)[0]["matches"][0]
        assert best["fact_check_id"] == "fc-new-1" and best["score"] > 0.99
        assert best["url"] == "https://x.example/1"

        # A tombstone deletes it: the next post no longer sees it.
        await produce(stack_settings.kafka_bootstrap, stack_settings.topic_factchecks, [(b"fc-new-1", None)])
        for _ in range(200):
            if await store.corpus.count_fact_checks() == 60:
                break
            await asyncio.sleep(0.1)
        await produce(stack_settings.kafka_bootstrap, stack_settings.topic_posts, [post(2, claim)])
        records = await consume_until(
            stack_settings.kafka_bootstrap, [stack_settings.topic_matches], lambda rs: len(rs) >= 2, timeout_s=60
        )
        second = next(r for r in bodies(records, stack_settings.topic_matches) if r["post_id"] == "post-2")
        assert all(m["fact_check_id"] != "fc-new-1" for m in second["matches"])
        letters = await consume_until(
            stack_settings.kafka_bootstrap, [stack_settings.topic_dead_letter], lambda rs: len(rs) >= 1, timeout_s=30
        )
        assert json.loads(letters[0].value)["reason"] == "invalid_json"


async def test_seed_format_gemma2_model_runs_end_to_end_with_halfvec_index(
    kafka: str, database_url: str, make_settings: Any, tiny_gemma: Path
) -> None:
    from worker.adapter.topics import ensure_topics

    settings = make_settings(
        kafka_bootstrap=kafka, database_url=database_url, model=str(tiny_gemma), model_version="tiny-gemma2-seed"
    )
    await ensure_topics(settings)
    await seed_corpus(settings)
    text = "5G towers spread the coronavirus"
    async with running(settings) as runtime:
        encoder = runtime.models.current().encoder
        assert encoder.dimension == 2304
        await produce(kafka, settings.topic_posts, [post(1, text)])
        records = await consume_until(kafka, [settings.topic_matches], lambda rs: len(rs) >= 1, timeout_s=60)
        result = bodies(records, settings.topic_matches)[0]
        assert result["model_version"] == "tiny-gemma2-seed"
        best = result["matches"][0]
        # The score the worker published is the cosine of the *prompted* query with the document.
        docs = corpus_from_rows(load_jsonl(DEMO_FACT_CHECKS))
        doc = next(d for d in docs if d.id == best["fact_check_id"])
        from worker.wire import document_text

        q = encoder.encode_queries([text])[0]
        d = encoder.encode_documents([document_text(doc.title, doc.claim)])[0]
        unprompted = encoder._encode([text], "")[0]  # type: ignore[attr-defined]
        assert abs(float(q @ d) - best["score"]) < 5e-3
        assert not np.allclose(q, unprompted, atol=1e-3), "the seed's query prompt must change the embedding"
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = %s", (index_name("tiny-gemma2-seed"),)
        ).fetchone()
    assert row is not None and "halfvec(2304)" in row[0] and "halfvec_cosine_ops" in row[0]
