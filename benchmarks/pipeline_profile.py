"""Where a batch's time and CPU go inside the worker's pipeline, against its encoder stage alone.

The production pipeline (``WorkerRuntime``'s own, default settings) over CheckThat! posts in
fetches of ``--fetch``, in this process, against an embedded Postgres holding the 10,375
fact-checks; no Kafka (``benchmarks/performance.py`` measures the whole worker). Per round, side
by side: the pipeline's posts/s with each step's wall seconds, then the worker's encoder stage
alone over the same posts (``EncodeStage``, what ``performance.py`` calls the encoder stage), and
the CPU milliseconds per post of this process and of Postgres's processes. Every round starts
with no stored answers and no claim clusters, as a stream of new posts would.

``--images`` adds, after the text-only rounds, as many rounds where every post carries one
inline image (a meme of another post's text, ``benchmarks/images.py``): read, PDQ-hashed, its
keypoints taken and its text read by OCR (Tesseract, when installed) within the batch's image
time budget, as the worker does; the images that missed it are counted.

    .venv/bin/python benchmarks/pipeline_profile.py --posts 800 --rounds 2
    .venv/bin/python benchmarks/pipeline_profile.py --posts 200 --rounds 1 --images
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.cpu import cpu_seconds  # noqa: E402
from benchmarks.perf_common import DATA, Model, posts  # noqa: E402
from benchmarks.performance import prepare  # noqa: E402

STEPS = ("_languages", "_repeats", "_match", "_search", "_match_images", "_cluster", "_remember", "_observe")


def postgres_cpu_s() -> float:
    return cpu_seconds(names=("postgres",))


def timed(obj: Any, name: str, spent: Counter[str]) -> None:
    """Wrap ``obj.name`` (a coroutine method) to add its wall seconds to ``spent[name]``."""
    call: Callable[..., Any] = getattr(obj, name)

    @functools.wraps(call)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await call(*args, **kwargs)
        finally:
            spent[name] += time.perf_counter() - started

    setattr(obj, name, wrapper)


def with_images(texts: list[str]) -> list[dict[str, Any]]:
    """Each post with one inline meme carrying the next post's text (so its OCR finds other matches)."""
    import base64

    from benchmarks.images import meme

    return [
        {"text": t, "images": [{"data": base64.b64encode(meme(texts[(i + 1) % len(texts)], i)).decode()}]}
        for i, t in enumerate(texts)
    ]


async def one_round(
    runtime: Any, texts: list[str], fetch: int, spent: Counter[str], images: list[dict[str, Any]] | None = None
) -> dict[str, float]:
    from worker.core.batching import EmbeddingCache, EncodeStage
    from worker.wire import RawRecord

    store, pipeline, settings = runtime.store, runtime.pipeline, runtime.settings
    await store.answers.forget_answers(0, limit=10_000_000)
    async with store.clusters.pool.connection() as conn:
        await conn.execute("DELETE FROM claim_clusters")
    run = f"{time.time():.0f}"
    bodies = images or [{"text": t} for t in texts]
    records = [
        RawRecord("posts", 0, i, None, json.dumps({"id": f"{run}-{i}", **b}).encode()) for i, b in enumerate(bodies)
    ]
    read: Counter[str] = Counter()
    pipeline.stage.cache = EmbeddingCache(settings.embedding_cache_size)  # every round encodes every post
    spent.clear()
    pg, py, started = postgres_cpu_s(), time.process_time(), time.perf_counter()
    for i in range(0, len(records), fetch):
        outcome = await pipeline.process(records[i : i + fetch])
        shown = [image for result in outcome.results for image in result.images]
        read.update(
            image.error or ("text read" if image.text else "OCR late" if image.detail else "no text") for image in shown
        )
    wall = time.perf_counter() - started
    pg, py = postgres_cpu_s() - pg, time.process_time() - py
    model = runtime.models.current()
    stage = EncodeStage(settings.token_budget(model.encoder.device), settings.encode_batch_size)
    alone_py, alone_started = time.process_time(), time.perf_counter()
    for i in range(0, len(texts), fetch):
        stage.encode_all(model.encoder, model.version, texts[i : i + fetch])
    alone = time.perf_counter() - alone_started
    alone_py = time.process_time() - alone_py
    n = len(texts)
    row = {
        "pipeline_posts_s": n / wall,
        "encoder_stage_posts_s": n / alone,
        "ratio": alone / wall,
        "pipeline_cpu_ms_post_python": 1000 * py / n,
        "pipeline_cpu_ms_post_postgres": 1000 * pg / n,
        "encoder_stage_cpu_ms_post": 1000 * alone_py / n,
        **{f"step_s{step}": spent[step] for step in STEPS},
        **{f"images_{outcome}": float(n) for outcome, n in read.items()},
    }
    print(
        f"  pipeline {row['pipeline_posts_s']:.1f} posts/s, encoder stage alone {row['encoder_stage_posts_s']:.1f}"
        f" ({row['ratio']:.2f}x); CPU ms/post: pipeline {row['pipeline_cpu_ms_post_python']:.1f} here +"
        f" {row['pipeline_cpu_ms_post_postgres']:.1f} Postgres, encoder stage {row['encoder_stage_cpu_ms_post']:.1f}"
        f" ({alone_py / alone:.2f} cores)\n  steps (s): "
        + ", ".join(f"{k.strip('_')} {spent[k]:.2f}" for k in STEPS)
        + (f"\n  images: {dict(read)}" if read else ""),
        flush=True,
    )
    return row


async def profile(args: argparse.Namespace) -> list[dict[str, float]]:
    from worker.adapter.runtime import WorkerRuntime
    from worker.local.models import default_model_ref
    from worker.local.stack import start_database
    from worker.retrieval.evaluation import corpus_from_rows, load_jsonl
    from worker.settings import Settings
    from worker.storage import Store, apply_migrations

    database = start_database(Path(tempfile.mkdtemp(prefix="factmatch-profile-")))
    try:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None, database_url=database.url, device="cpu", model_store=args.cache / "models",
            kafka_bootstrap="127.0.0.1:9", metrics_enabled=False,
        )  # fmt: skip
        await apply_migrations(database.url)
        store = Store(database.url)
        await store.open()
        await store.corpus.upsert_fact_checks(corpus_from_rows(load_jsonl(DATA / "corpus.jsonl")))
        await store.close()
        ref = default_model_ref(settings.model_store)
        from worker.configs import encoder_options
        from worker.core.encoder import SentenceTransformerEncoder

        await prepare(
            Model("default", ref, SentenceTransformerEncoder(ref, encoder_options(settings))), settings, args.cache
        )
        runtime = WorkerRuntime(settings)
        await runtime.store.open()
        await runtime.models.load_active()
        spent: Counter[str] = Counter()
        for step in STEPS:
            timed(runtime.pipeline, step, spent)
        texts = posts(args.posts)
        await one_round(runtime, texts[:32], args.fetch, spent)  # warm-up
        rows = []
        for n in range(args.rounds):
            print(f"round {n + 1}, text only:", flush=True)
            rows.append({"images": 0.0, **await one_round(runtime, texts, args.fetch, spent)})
        bodies = with_images(texts) if args.images else None
        for n in range(args.rounds if bodies else 0):
            print(f"round {n + 1}, one image a post:", flush=True)
            rows.append({"images": 1.0, **await one_round(runtime, texts, args.fetch, spent, bodies)})
        await runtime.store.close()
        return rows
    finally:
        database.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=800)
    parser.add_argument("--fetch", type=int, default=64, help="Records per batch (the worker's batch_max_records).")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--images", action="store_true", help="Also rounds with one inline image a post.")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/factmatch-bench"))
    parser.add_argument("--out", type=Path, default=None, help="Also write the rounds as JSON here.")
    args = parser.parse_args()
    if not (DATA / "corpus.jsonl").is_file():
        print(f"skipped: {DATA} not found (CheckThat! 2020 is read from ../shared/data)")
        return
    rows = asyncio.run(profile(args))
    if args.out:
        args.out.write_text(json.dumps({"posts": args.posts, "fetch": args.fetch, "rounds": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
