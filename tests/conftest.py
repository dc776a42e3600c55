"""Shared fixtures: tiny models, one tansu broker and one embedded Postgres per session.

Every test that touches a service gets its own topics, consumer groups and a fresh
database (a copy of one migrated template), so tests never see each other's data.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.tiny_models import build_tiny_bert, build_tiny_gemma2
from worker.settings import Settings

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "checkthat2020"
TIERS = ("unit", "lint", "integration", "quality", "deploy")
# A unit test that takes longer than this is not a unit test (it waits on something).
UNIT_TIMEOUT_S = 20


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test with its tier, from its folder (``tests/<tier>/``)."""
    root = Path(__file__).resolve().parent
    for item in items:
        tier = Path(str(item.path)).resolve().relative_to(root).parts[0]
        if tier not in TIERS:
            raise pytest.UsageError(f"{item.nodeid}: tests live in one of tests/{{{','.join(TIERS)}}}/")
        item.add_marker(getattr(pytest.mark, tier))
        if tier == "unit" and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(UNIT_TIMEOUT_S))
    # `make test` runs two processes (`-n 2 --dist loadfile`): the CPU-bound CheckThat! module is
    # collected first, so one process runs it from the start while the other takes the tests that
    # mostly wait on the broker. Alone (no -n) the order changes nothing.
    items.sort(key=lambda item: Path(str(item.path)).name != "test_checkthat.py")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_gemma(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_gemma2(tmp_path_factory.mktemp("tiny-gemma2"))


@pytest.fixture(scope="session")
def kafka() -> Iterator[str]:
    from worker.local.stack import start_broker

    broker = start_broker()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from worker.local.stack import start_database

    database = start_database(tmp_path_factory.mktemp("pg"))
    try:
        yield database
    finally:
        database.stop()


def _database(postgres: Any, name: str) -> str:
    params = conninfo_to_dict(postgres.url)
    params["dbname"] = name
    return make_conninfo(**params)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def migrated_template(postgres: Any) -> str:
    """One database migrated once per session; every test's database is a copy of it.

    ``CREATE DATABASE ... TEMPLATE`` copies files, so a test gets a migrated database in
    milliseconds instead of running every migration again.
    """
    name = f"template_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    from worker.storage import apply_migrations

    asyncio.run(apply_migrations(_database(postgres, name)))
    return name


@pytest.fixture
def database_url(postgres: Any, migrated_template: str) -> Iterator[str]:
    """A fresh, migrated database for one test (a copy of the session's template)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(migrated_template))
        )
    yield _database(postgres, name)
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def make_settings(tiny_model: Path) -> Callable[..., Settings]:
    """Settings with topics and groups of this test's own."""
    suffix = uuid.uuid4().hex[:8]

    def factory(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "topic_posts": f"posts-{suffix}",
            "topic_matches": f"matches-{suffix}",
            "topic_dead_letter": f"dlq-{suffix}",
            "topic_factchecks": f"factchecks-{suffix}",
            "group_id": f"worker-{suffix}",
            "indexer_group_id": f"indexer-{suffix}",
            # Each test's own feedback group too: tansu's coordinator can leave a group that two
            # workers left in a generation that never completes a join for the next member.
            "topic_feedback": f"feedback-{suffix}",
            "feedback_group_id": f"feedback-{suffix}",
            "console_group_id": f"console-{suffix}",
            "topic_trending": f"trending-{suffix}",
            "topic_emerging": f"emerging-{suffix}",
            "model": str(tiny_model),
            "session_timeout_ms": 4000,
            "batch_max_wait_ms": 20,
            "retry_backoff_initial_s": 0.05,
            "retry_backoff_max_s": 0.5,
            "shutdown_grace_s": 10,
            "min_score": -1.0,
            "metrics_port": 0,
            "lag_interval_s": 0.5,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return factory


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment a worker subprocess needs to rebuild ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACTMATCH_")}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"FACTMATCH_{name.upper()}"] = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    return env


async def produce(bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes | None]]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in messages]
        await producer.flush()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def consume_until(
    bootstrap: str, topics: list[str], done: Callable[[list[Any]], bool], timeout_s: float = 120.0
) -> list[Any]:
    """Read ``topics`` from the start until ``done(records)`` or the timeout."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    records: list[Any] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline and not done(records):
            for batch in (await consumer.getmany(timeout_ms=300)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float, every_s: float = 0.25) -> bool:
    """Poll ``check`` until it is true or ``timeout_s`` passed; its last answer. Tests wait on a
    condition this way, never on a fixed sleep."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        if await check():
            return True
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(every_s)


@pytest.fixture
async def stack_settings(
    kafka: str, database_url: str, make_settings: Callable[..., Settings]
) -> AsyncIterator[Settings]:
    """Settings pointing at the real broker (this test's own topics) and a fresh database."""
    from worker.adapter.topics import ensure_topics

    settings = make_settings(kafka_bootstrap=kafka, database_url=database_url)
    await ensure_topics(settings, partitions=3)
    yield settings


def checkthat_subset(distractors: int = 1000, seed: int = 7) -> list[Any]:
    """Every fact-check that a train or dev query points to, plus random distractors: a smaller,
    faster corpus for the quality tests (the benchmarks use all 10,375)."""
    import random

    from worker.retrieval.evaluation import corpus_from_rows, load_jsonl

    corpus = corpus_from_rows(load_jsonl(SHARED_DATA / "corpus.jsonl"))
    gold = {
        line.split("\t")[1].strip()
        for split in ("train", "dev")
        for line in (SHARED_DATA / f"{split}_qrels.tsv").read_text().splitlines()
        if "\t" in line
    }
    rng = random.Random(seed)
    return [fc for fc in corpus if fc.id in gold] + rng.sample([fc for fc in corpus if fc.id not in gold], distractors)
