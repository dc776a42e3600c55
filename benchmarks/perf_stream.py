"""The stream section of benchmarks/performance.py: the same unique posts drained from a backlog
through real tansu and Postgres by each path (the hand-written loop, or the worker under a
variant of its settings), read back by an independent confluent-kafka client, with each
system's CPU a post and, for the worker's default path, latency at half its maximum."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import re
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.cpu import cpu_seconds
from benchmarks.hand_loop import hand_loop
from benchmarks.perf_common import ROOT, Model, free_port
from benchmarks.perf_rerank import TOP_N as RERANK_TOP_N
from tests.conftest import settings_env
from worker.configs import encoder_options
from worker.settings import Settings


class Reader:
    """An independent client (confluent-kafka) that counts results per id prefix."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from confluent_kafka import Consumer

        self.raw = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:8]}",
             "auto.offset.reset": "earliest", "enable.auto.commit": False}
        )  # fmt: skip
        self.raw.subscribe([topic])
        self.seen: dict[str, float] = {}
        # When the worker produced each result (the record's CreateTime): this reader's own group
        # join with the broker takes seconds and must not count as the worker's start.
        self.published: dict[str, float] = {}

    def drain(self, timeout_s: float) -> None:
        for message in self.raw.consume(num_messages=500, timeout=max(0.001, timeout_s)):
            if message.error() is None:
                post_id = json.loads(message.value())["post_id"]
                self.seen.setdefault(post_id, time.monotonic())
                self.published.setdefault(post_id, message.timestamp()[1] / 1000)

    def until(self, prefix: str, count: int, timeout_s: float) -> float:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.drain(0.2)
            done = [t for k, t in self.seen.items() if k.startswith(prefix)]
            if len(done) >= count:
                return max(done)
        raise TimeoutError(
            f"{prefix}: {len([k for k in self.seen if k.startswith(prefix)])}/{count} after {timeout_s}s"
        )

    def close(self) -> None:
        self.raw.close()


def produce(bootstrap: str, topic: str, prefix: str, texts: Sequence[str]) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i, text in enumerate(texts):
        key = f"{prefix}-{i}"
        producer.produce(topic, value=json.dumps({"id": key, "text": text}).encode(), key=key.encode())
        producer.poll(0)
    producer.flush(60)


def stage_shares(port: int) -> str:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    sums = {m[0]: float(m[1]) for m in re.findall(r'factmatch_stage_seconds_sum\{stage="(\w+)"\} ([0-9.e+-]+)', body)}
    total = sum(sums.values()) or 1.0
    return ", ".join(f"{k} {v / total:.0%}" for k, v in sums.items())


def latency(model: Model, settings: Settings, reader: Reader, texts: list[str], rate: float, seconds: float) -> None:
    """End-to-end latency (produced -> read back) at ``rate`` posts/s, paced, for ``seconds``."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 1})
    sent: dict[str, float] = {}
    started = time.monotonic()
    i = 0
    while time.monotonic() - started < seconds:
        due = started + i / rate
        while time.monotonic() < due:
            reader.drain(min(0.05, due - time.monotonic()))
        key = f"lat-{i}"
        producer.produce(settings.topic_posts, json.dumps({"id": key, "text": texts[i % len(texts)]}).encode(), key=key)
        producer.poll(0)
        sent[key] = time.monotonic()
        i += 1
    producer.flush(30)
    reader.until("lat", len(sent), 600)
    waits = np.array([reader.seen[k] - t for k, t in sent.items()])
    p50, p95, p99 = (float(np.percentile(waits, q)) for q in (50, 95, 99))
    stage = next((v for k, v in model.rows.items() if k.startswith("encoder stage")), None)
    goal = settings.batch_max_wait_ms / 1000 + 2 * settings.batch_max_records / stage if stage else float("nan")
    model.latency = {"rate": rate, "posts": len(sent), "p50": p50, "p95": p95, "p99": p99, "goal_p99": goal}
    print(f"  latency at {rate:.1f} posts/s (half the hybrid maximum), {len(sent)} posts: p50 {p50 * 1000:.0f} ms,"
          f" p95 {p95 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms (goal p99 <= {goal * 1000:.0f} ms:"
          f" batch wait + 2 x one full batch's encode)", flush=True)  # fmt: skip


STREAM_PATHS = (
    "hand-written loop", "worker dense", "worker hybrid", "worker hybrid, not overlapped",
    "worker hybrid, one encoder part", "worker hybrid onnx", "worker hybrid onnx, one encoder part",
    "worker hybrid, calls of 4096 tokens", "worker hybrid, bf16 weights", "worker hybrid, twice the parts",
)  # fmt: skip
# The worker with each batch finished before the next is fetched (FastStream's own commit), as before issue 35's step 4.
NOT_OVERLAPPED = "worker hybrid, not overlapped"
# The worker with each encoder call on torch's own threads instead of single-threaded parts at once.
ONE_PART = "worker hybrid, one encoder part"
ONNX_ONE_PART = "worker hybrid onnx, one encoder part"
# The worker with encoder calls twice the CPU default (tokens and rows), each still split into parts.
BIG_CALLS = "worker hybrid, calls of 4096 tokens"
# The worker with its model cast to bfloat16 (``FACTMATCH_DTYPE``) instead of posts autocast; it
# meets the float32 index (its speed is what is measured; its quality: benchmarks/cpu_precision.py).
BF16_WEIGHTS = "worker hybrid, bf16 weights"
# The worker with twice as many encoder parts as torch has threads (each still one thread).
TWICE_PARTS = "worker hybrid, twice the parts"
# The same version with a cross-encoder and a cascade decision (benchmarks/perf_rerank.py), its
# reranking off (the cascade's screen decides alone) and on; not among the default paths: the
# cross-encoder is trained first when it is not cached.
RERANK_OFF = "worker hybrid, cascade, reranking off"
RERANK_ON = "worker hybrid, cascade, reranking on"
RERANK_PATHS = (RERANK_OFF, RERANK_ON)
# What each variant of the worker sets beside the defaults.
VARIANTS: dict[str, dict[str, Any]] = {
    ONE_PART: {"cpu_encoder_parts": 1},
    ONNX_ONE_PART: {"cpu_encoder_parts": 1},
    BIG_CALLS: {"batch_token_budget": 4096, "encode_batch_size": 64},
    BF16_WEIGHTS: {"dtype": "bfloat16"},
    TWICE_PARTS: {"cpu_encoder_parts": 2 * torch.get_num_threads()},
    RERANK_ON: {"rerank_top_n": RERANK_TOP_N},
}


async def forget_answers(settings: Settings) -> None:
    """No path reuses an earlier path's answers (same model, decision and corpus: same answer keys)
    or finds its claim clusters made (joining a cluster is cheaper than starting one)."""
    from worker.storage import Store

    store = Store(settings.require_database_url())
    await store.open()
    try:
        await store.answers.forget_answers(0, limit=10_000_000)
        await store.clusters.forget_clusters(0, limit=10_000_000)
    finally:
        await store.close()


@contextmanager
def running_system(path: str, settings: Settings, model: Model, log: Path) -> Iterator[int]:
    """The system a stream path measures, running until the block ends: the hand-written loop
    (``path`` "hand-written loop", a spawned process) or the worker (``factmatch worker`` under
    ``settings``, its output appended to ``log``). Yields its process id."""
    import subprocess

    if path == "hand-written loop":
        ctx = multiprocessing.get_context("spawn")
        stop = ctx.Event()
        loop = ctx.Process(
            target=hand_loop,
            args=(settings.kafka_bootstrap, settings.topic_posts, settings.topic_matches,
                  settings.database_url.get_secret_value(), model.ref, model.version,  # type: ignore[union-attr]
                  model.encoder.dimension, settings.ef_search, stop),
        )  # fmt: skip
        loop.start()
        try:
            yield int(loop.pid or 0)
        finally:
            stop.set()
            loop.join(30)
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "worker"], cwd=ROOT, env=settings_env(settings), stdout=out, stderr=out
        )
        try:
            yield worker.pid
        finally:
            worker.terminate()
            worker.wait(60)


def section_stream(model: Model, texts: list[str], base: Settings, latency_s: float, paths: Sequence[str]) -> None:

    from worker.adapter.topics import ensure_topics
    from worker.core.onnx_backend import load_onnx_encoder

    for path in paths:
        if "onnx" in path:
            # The start measured is a restart's: the model's export is already in the store (the
            # first start on a new model exports it once, with torch).
            load_onnx_encoder(model.ref, encoder_options(base), store=base.model_store, int8=False)
        suffix = uuid.uuid4().hex[:6]
        port = free_port()
        settings = base.model_copy(
            update={
                "topic_posts": f"posts-{suffix}", "topic_matches": f"matches-{suffix}",
                "topic_dead_letter": f"dlq-{suffix}", "topic_factchecks": f"fc-{suffix}",
                "topic_feedback": f"fb-{suffix}", "group_id": f"g-{suffix}", "indexer_group_id": f"i-{suffix}",
                "feedback_group_id": f"f-{suffix}", "model": model.ref, "metrics_port": port,
                "retrieval_mode": "dense" if path == "worker dense" else "hybrid",
                "backend": "onnx" if "onnx" in path else "torch",
                "overlap_batches": path != NOT_OVERLAPPED,
                **VARIANTS.get(path, {}),
            }
        )  # fmt: skip
        asyncio.run(ensure_topics(settings))
        asyncio.run(forget_answers(settings))
        reader = Reader(settings.kafka_bootstrap, settings.topic_matches)
        with running_system(path, settings, model, Path(base.model_store) / f"worker-{suffix}.log") as pid:
            launched = time.time()
            # Warm-up posts of their own claim texts: the run's posts are not answered from them.
            produce(settings.kafka_bootstrap, settings.topic_posts, "warm", [f"(warm-up) {t}" for t in texts[:32]])
            reader.until("warm", 32, 600)
            first = min(t for k, t in reader.published.items() if k.startswith("warm")) - launched
            started, cpu = time.monotonic(), _cpu(pid)
            produce(settings.kafka_bootstrap, settings.topic_posts, "run", texts)
            finished = reader.until("run", len(texts), 1800)
            rate = len(texts) / (finished - started)
            used = {k: 1000 * (v - cpu[k]) / len(texts) for k, v in _cpu(pid).items()}
            shares = stage_shares(port) if path != "hand-written loop" else ""
            if path == "worker hybrid" and latency_s > 0:
                latency(model, settings, reader, texts, rate / 2, latency_s)
        reader.close()
        model.rows[path] = rate
        model.starts[path] = first
        model.cpu[path] = used
        print(f"  {path}: {rate:.1f} posts/s, first result {first:.1f} s after process start"
              f" {('(' + shares + ')') if shares else ''}", flush=True)  # fmt: skip
        print("    CPU ms a post: " + ", ".join(f"{k} {v:.1f}" for k, v in used.items()), flush=True)


def _cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of each system in a stream run: the path's own process, Postgres, the
    broker, and this process (the producer and the reader that counts results)."""
    return {
        "its process": cpu_seconds(pids=[pid]),
        "Postgres": cpu_seconds(names=["postgres"]),
        "broker (tansu)": cpu_seconds(names=["tansu"]),
        "producer and reader": cpu_seconds(pids=[os.getpid()]),
    }
