"""Posts per second through the real worker: tansu + embedded Postgres + MiniLM, on this machine.

Runs the same stream twice, side by side in one process: micro-batches of up to 64 posts
(the default) and batches of one post, and prints both rates and their ratio. Posts are the
CheckThat! 2020 train tweets and the corpus its 10,375 fact-checks when ../shared/data is
present, the demo sample otherwise.

    .venv/bin/python benchmarks/throughput.py [--posts 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

from worker.adapter.runtime import WorkerRuntime
from worker.adapter.topics import ensure_topics
from worker.local.models import minilm_model_ref
from worker.local.stack import local_stack
from worker.retrieval.evaluation import corpus_from_rows, load_jsonl
from worker.settings import Settings
from worker.storage import Store, apply_migrations

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "checkthat2020"
DEMO = ROOT / "worker" / "local" / "demo_data"


def inputs() -> tuple[list[dict[str, Any]], list[str], str]:
    if (SHARED / "corpus.jsonl").is_file():
        return (
            load_jsonl(SHARED / "corpus.jsonl"),
            [str(q["text"]) for q in load_jsonl(SHARED / "train_queries.jsonl")],
            "CheckThat! 2020",
        )
    return (
        load_jsonl(DEMO / "factchecks.jsonl"),
        [str(p["text"]) for p in load_jsonl(DEMO / "posts.jsonl")],
        "demo sample",
    )


async def run_stream(settings: Settings, texts: list[str], count: int) -> float:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    await ensure_topics(settings)
    runtime = WorkerRuntime(settings)
    await runtime.start()
    consumer = AIOKafkaConsumer(
        settings.topic_matches,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5)
    await consumer.start()
    await producer.start()
    try:

        async def send(prefix: str, n: int) -> None:
            for i in range(n):
                body = {"id": f"{prefix}-{i}", "text": texts[i % len(texts)]}
                await producer.send(settings.topic_posts, json.dumps(body).encode(), key=body["id"].encode())
            await producer.flush()

        async def wait_for(prefix: str, n: int) -> None:
            seen: set[str] = set()
            while len(seen) < n:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    seen.update(
                        json.loads(r.value)["post_id"]
                        for r in records
                        if json.loads(r.value)["post_id"].startswith(prefix)
                    )

        # Warm-up: group joined, model warm, connections open.
        await send("warm", 20)
        await wait_for("warm", 20)
        started = time.perf_counter()
        await send("run", count)
        await wait_for("run", count)
        return count / (time.perf_counter() - started)
    finally:
        await producer.stop()
        await consumer.stop()
        await runtime.stop()


async def main(count: int, args_model: str) -> None:
    corpus_rows, texts, source = inputs()
    with local_stack() as (broker, database):
        await apply_migrations(database.url)
        store = Store(database.url)
        await store.open()
        await store.corpus.upsert_fact_checks(corpus_from_rows(corpus_rows))
        await store.close()
        rates: dict[int, float] = {}
        for batch in (64, 1):
            suffix = uuid.uuid4().hex[:6]
            settings = Settings(  # type: ignore[call-arg]
                _env_file=None,
                model=args_model,
                kafka_bootstrap=broker.bootstrap,
                database_url=database.url,
                batch_max_records=batch,
                topic_posts=f"posts-{suffix}",
                topic_matches=f"matches-{suffix}",
                topic_dead_letter=f"dlq-{suffix}",
                topic_factchecks=f"fc-{suffix}",
                group_id=f"g-{suffix}",
                indexer_group_id=f"i-{suffix}",
                session_timeout_ms=6000,
            )
            n = count if batch > 1 else max(50, count // 4)
            rates[batch] = await run_stream(settings, texts, n)
            print(f"batch_max_records={batch:>3}: {rates[batch]:7.1f} posts/s ({n} posts)", flush=True)
    print(f"\ncorpus: {len(corpus_rows)} fact-checks ({source}); model: MiniLM-L6 (default), CPU")
    print(f"micro-batching speed-up (64 vs 1): {rates[64] / rates[1]:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=1000)
    parser.add_argument("--model", default=None, help="Model directory (default: MiniLM from its wheel).")
    args = parser.parse_args()
    asyncio.run(main(args.posts, args.model or minilm_model_ref()))
