"""Where the worker stands against what a user would write by hand, side by side in one run.

For each model (default: multilingual-e5-small, the default, and MiniLM) on this machine:

1. encode: ``SentenceTransformer.encode(all posts, batch_size=32)`` (sorts every post at once)
   vs the worker's own encoder stage over the same posts in the stream's fetches
   (``batch_max_records`` at a time, its planner, its calls);
2. stream: the same unique posts through real tansu + embedded Postgres, drained from a
   backlog and read back by an independent client (confluent-kafka):
   - a hand-written loop in its own process: confluent-kafka poll of up to 32, ``encode``,
     one pgvector ``ORDER BY <=> LIMIT 5`` per post, produce, commit;
   - the worker (``factmatch worker``, its own process), dense and hybrid (the default),
     with its stage shares scraped from its /metrics, and its variants (benchmarks/perf_stream.py);
   - only when asked for by ``--paths``: the worker on a version given a 2-layer cross-encoder
     and a cascade decision, reranking off and on (benchmarks/perf_rerank.py, issue 26);
3. reindex: fact-checks embedded and stored per second (the worker's indexer) vs raw encode;
4. backends (torch, ONNX fp32 and int8) and dense search at a larger corpus (benchmarks/perf_index.py).

Posts are CheckThat! 2020 tweets (train, dev, test: 1,197 unique texts; a duplicate would
flatter the worker's cache), the corpus its 10,375 fact-checks; both skip cleanly when
../shared/data is absent. Corpus vectors are cached under --cache so reruns skip embedding.

    .venv/bin/python benchmarks/performance.py                    # both models, every section
    .venv/bin/python benchmarks/performance.py --models minilm --posts 400 --only encode stream
    .venv/bin/python benchmarks/performance.py --models default --posts 800 --only stream --latency-s 0 \
        --paths "worker hybrid, cascade, reranking off" "worker hybrid, cascade, reranking on"
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.perf_common import DATA, Model, corpus_vectors, posts, store_shipped_decision  # noqa: E402
from benchmarks.perf_index import section_ann, section_reindex  # noqa: E402
from benchmarks.perf_rerank import cascade_version  # noqa: E402
from benchmarks.perf_stream import (  # noqa: E402
    BF16_WEIGHTS,
    BIG_CALLS,
    NOT_OVERLAPPED,
    ONE_PART,
    ONNX_ONE_PART,
    RERANK_OFF,
    RERANK_ON,
    RERANK_PATHS,
    STREAM_PATHS,
    TWICE_PARTS,
    section_stream,
)
from worker.configs import encoder_options, rollout_config  # noqa: E402
from worker.core.batching import EncodeStage  # noqa: E402
from worker.core.encoder import SentenceTransformerEncoder  # noqa: E402
from worker.local.models import default_model_ref, minilm_model_ref  # noqa: E402
from worker.settings import Settings  # noqa: E402


def section_encode(
    model: Model, texts: list[str], settings: Settings, rounds: int, budgets: Sequence[int] = ()
) -> None:
    """Naive encode vs the worker's encoder stage, alternated so both see the same machine; naive
    twice, as a user writes it (float32) and at the stage's own precision (inside its autocast,
    when it has one): the stage's planning is judged against the latter. ``budgets``: the stage
    again with these padded-token budgets per call, in the same rounds."""
    encoder = model.encoder
    stage = EncodeStage(settings.token_budget(encoder.device), settings.encode_batch_size)
    others = {b: EncodeStage(b, settings.encode_batch_size) for b in budgets}
    fetch = settings.batch_max_records
    naive_s: list[float] = []
    same_s: list[float] = []
    stage_s: list[float] = []
    other_s: dict[int, list[float]] = {b: [] for b in budgets}
    encoder.encode_queries(texts[:32])  # warm-up

    def naive() -> Any:
        return encoder.model.encode(
            texts, prompt=encoder.query_prompt, batch_size=32, normalize_embeddings=True, show_progress_bar=False
        )

    for _ in range(rounds):
        started = time.perf_counter()
        plain = naive()
        naive_s.append(time.perf_counter() - started)
        if encoder.autocast is not None:
            started = time.perf_counter()
            with encoder._arithmetic():
                naive()
            same_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        ours = np.concatenate(
            [
                stage.encode_all(encoder, model.version, texts[i : i + fetch]).vectors
                for i in range(0, len(texts), fetch)
            ]
        )
        stage_s.append(time.perf_counter() - started)
        for budget, other in others.items():
            started = time.perf_counter()
            for i in range(0, len(texts), fetch):
                other.encode_all(encoder, model.version, texts[i : i + fetch])
            other_s[budget].append(time.perf_counter() - started)
    agreement = float(np.min(np.sum(np.asarray(plain) * ours, axis=1)))
    model.rows["naive encode"] = len(texts) / min(naive_s)
    if same_s:
        model.rows[f"naive encode ({encoder.autocast} autocast)"] = len(texts) / min(same_s)
    model.rows[f"encoder stage (fetch {fetch})"] = len(texts) / min(stage_s)
    for budget, seconds in other_s.items():
        model.rows[f"encoder stage (fetch {fetch}, {budget} tokens a call)"] = len(texts) / min(seconds)
    same = f", at the stage's precision {len(texts) / min(same_s):.1f}/s" if same_s else ""
    print(f"  encode: naive {len(texts) / min(naive_s):.1f}/s{same}, stage {len(texts) / min(stage_s):.1f}/s "
          f"(min cosine between them {agreement:.5f})", flush=True)  # fmt: skip


async def prepare(model: Model, settings: Settings, cache: Path) -> None:
    """The corpus indexed under ``model``'s version and that version active (the worker's lifecycle code)."""
    from worker.core.rollout import promote
    from worker.core.serving import version_name_for
    from worker.storage import Store

    store = Store(settings.database_url.get_secret_value())  # type: ignore[union-attr]
    await store.open()
    try:
        model.version = version_name_for(model.ref)
        if await store.registry.get_version(model.version) is None:
            await store.registry.register_version(model.version, model.ref, model.encoder.dimension, status="candidate")
        await store_shipped_decision(store, model)
        docs = corpus_vectors(cache, model)
        await promote(store, rollout_config(settings), model.version, docs, progress=True)  # type: ignore[arg-type]
    finally:
        await store.close()


def section_backends(model: Model, texts: list[str], base: Settings, cache: Path, rounds: int) -> None:
    """torch vs ONNX Runtime fp32 vs int8: texts/s, agreement with torch, MAP@5 on CheckThat! test.

    The index stays torch's (what a worker switching backend meets); queries go through each backend.
    """
    from worker.core.onnx_backend import load_onnx_encoder
    from worker.retrieval.evaluation import load_labelled_set, retrieval_metrics
    from worker.wire import document_text

    labelled = load_labelled_set(DATA / "corpus.jsonl", DATA / "test_queries.jsonl", DATA / "test_qrels.tsv")
    ids = [fc.id for fc in labelled.corpus]
    corpus = corpus_vectors(cache, model).encode_documents(
        [document_text(fc.title, fc.claim) for fc in labelled.corpus]
    )
    qids = list(labelled.queries)
    options = encoder_options(base)
    backends: dict[str, Any] = {
        "torch": model.encoder,
        "onnx fp32": load_onnx_encoder(model.ref, options, store=base.model_store, int8=False),
        "onnx int8": load_onnx_encoder(model.ref, options, store=base.model_store, int8=True),
    }
    reference = model.encoder.encode_queries(texts)
    for name, encoder in backends.items():
        encoder.encode_queries(texts[:32])
        best = min(_timed(encoder.encode_queries, texts) for _ in range(rounds))
        vectors = encoder.encode_queries(texts)
        cosines = np.sum(vectors * reference, axis=1)
        queries = encoder.encode_queries([labelled.queries[q] for q in qids])
        top = np.argsort(-(queries @ corpus.T), axis=1)[:, :5]
        map5 = retrieval_metrics({q: [ids[j] for j in row] for q, row in zip(qids, top, strict=True)}, labelled.qrels)
        model.rows[f"{name} texts/s"] = len(texts) / best
        model.backends[name] = {
            "texts_per_s": len(texts) / best, "min_cosine": float(cosines.min()), "mean_cosine": float(cosines.mean()),
            "map@5": map5["map@5"],
        }  # fmt: skip
        print(f"  backend {name}: {len(texts) / best:.1f} texts/s, cosine to torch min {cosines.min():.5f}"
              f" mean {cosines.mean():.5f}, dense MAP@5 (test) {map5['map@5']:.4f}", flush=True)  # fmt: skip


def _timed(call: Any, *args: Any) -> float:
    started = time.perf_counter()
    call(*args)
    return time.perf_counter() - started


def report(models: list[Model]) -> None:
    print("\n| path | " + " | ".join(m.name for m in models) + " |")
    print("|---|" + "---|" * len(models))
    for key in dict.fromkeys(k for m in models for k in m.rows):
        print(f"| {key} | " + " | ".join(f"{m.rows[key]:.1f}" if key in m.rows else "" for m in models) + " |")
    print("\nGoals (ratios measured above, per model):")
    for m in models:
        r = m.rows
        stage = next((v for k, v in r.items() if k.startswith("encoder stage")), None)
        # Issue 35: the stage against plain encode at its own precision (autocast, where it has one).
        same = next((v for k, v in r.items() if k.startswith("naive encode (")), r.get("naive encode"))
        pairs = [
            ("encoder stage / naive encode, same precision", stage, same, 0.95),
            # Issue 35: the worker (hybrid, default settings) at 2.5x the hand-written loop.
            ("worker hybrid / hand-written loop", r.get("worker hybrid"), r.get("hand-written loop"), 2.5),
            ("worker hybrid onnx / hand-written loop", r.get("worker hybrid onnx"), r.get("hand-written loop"), 2.0),
            ("onnx fp32 / torch texts/s", r.get("onnx fp32 texts/s"), r.get("torch texts/s"), 1.8),
            ("worker hybrid / encoder stage", r.get("worker hybrid"), stage, 0.9),
            ("worker hybrid / worker dense", r.get("worker hybrid"), r.get("worker dense"), 0.9),
            ("worker hybrid / its batches not overlapped", r.get("worker hybrid"), r.get(NOT_OVERLAPPED), None),
            ("worker hybrid / its encoder calls in one part", r.get("worker hybrid"), r.get(ONE_PART), None),
            ("worker hybrid onnx / its calls in one part", r.get("worker hybrid onnx"), r.get(ONNX_ONE_PART), None),
            ("worker hybrid / with calls of 4096 tokens", r.get("worker hybrid"), r.get(BIG_CALLS), None),
            ("worker hybrid with bf16 weights / posts autocast", r.get(BF16_WEIGHTS), r.get("worker hybrid"), None),
            ("worker hybrid with twice the parts / the default", r.get(TWICE_PARTS), r.get("worker hybrid"), None),
            ("worker, cascade: reranking on / off", r.get(RERANK_ON), r.get(RERANK_OFF), None),
            ("reindex / raw encode", r.get("reindex (embed + store)"), r.get("raw document encode"), 0.9),
        ]
        for label, a, b, goal in pairs:
            if a and b:
                verdict = f"(goal >= {goal}) {'met' if a / b >= goal else 'missed'}" if goal else "(measured)"
                print(f"  {m.name}: {label} = {a / b:.2f} {verdict}")
        if RERANK_ON in m.cpu and RERANK_OFF in m.cpu:
            # Issue 26: reranking on by default only if the whole worker's CPU a post rises <= 30%.
            on, off = sum(m.cpu[RERANK_ON].values()), sum(m.cpu[RERANK_OFF].values())
            verdict = "met" if on / off - 1 <= 0.3 else "missed"
            print(f"  {m.name}: CPU a post (all systems), reranking on / off = {on:.1f} / {off:.1f} ms:"
                  f" {on / off - 1:+.0%} (goal <= +30%) {verdict}")  # fmt: skip
    ceilings(models)


def ceilings(models: list[Model]) -> None:
    """What this machine's cores allow each stream path: its cores over all the CPU a post took
    (its process, Postgres, the broker), so a ratio goal can be read against what is possible."""
    cores = len(os.sched_getaffinity(0))
    print(f"\nWhat {cores} cores allow (cores x 1000 / all CPU-ms a post), and each path's share of it:")
    for m in models:
        stage = next((v for k, v in m.rows.items() if k.startswith("encoder stage")), None)
        for path, used in m.cpu.items():
            if path not in m.rows or not sum(used.values()):
                continue
            most = cores * 1000 / sum(used.values())
            against = f"; {most / stage:.2f}x the encoder stage at most" if stage else ""
            print(f"  {m.name}: {path}: at most {most:.1f} posts/s, ran at {m.rows[path] / most:.0%} of it{against}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["default", "minilm"])
    parser.add_argument("--posts", type=int, default=1197)
    parser.add_argument("--rounds", type=int, default=2, help="Encode rounds (the best counts).")
    parser.add_argument("--budgets", type=int, nargs="*", default=[], help="The stage again at these token budgets.")
    parser.add_argument("--reindex", type=int, default=2000, help="Fact-checks re-embedded in the reindex section.")
    parser.add_argument("--only", nargs="+", default=["encode", "backends", "stream", "reindex", "ann"])
    parser.add_argument(
        "--paths", nargs="+", default=list(STREAM_PATHS), choices=STREAM_PATHS + RERANK_PATHS, help="Stream paths."
    )
    parser.add_argument("--ann-size", type=int, default=100_000, help="Fact-checks in the ANN section.")
    parser.add_argument(
        "--ann-builds", nargs="+", default=["16:64", "16:200", "32:200"], metavar="M:EF_CONSTRUCTION",
        help="HNSW builds in the ANN section.",
    )  # fmt: skip
    parser.add_argument("--ef-search", type=int, nargs="+", default=[40, 64, 100, 200])
    parser.add_argument("--set", nargs="*", default=[], metavar="SETTING=VALUE", help="Worker settings to change.")
    parser.add_argument("--latency-s", type=float, default=60, help="Paced latency run (0: skip).")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/factmatch-bench"))
    parser.add_argument("--out", type=Path, default=None, help="Also write the table as JSON here.")
    args = parser.parse_args()
    if not (DATA / "corpus.jsonl").is_file():
        print(f"skipped: {DATA} not found (CheckThat! 2020 is read from ../shared/data)")
        return

    from worker.local.stack import local_stack
    from worker.retrieval.evaluation import corpus_from_rows, load_jsonl
    from worker.storage import Store, apply_migrations

    texts = posts(args.posts)
    args.cache.mkdir(parents=True, exist_ok=True)
    models: list[Model] = []
    with local_stack() as (broker, database):
        base = Settings(  # type: ignore[call-arg]
            _env_file=None, kafka_bootstrap=broker.bootstrap, database_url=database.url, device="cpu",
            model_store=args.cache / "models",
            **dict(kv.split("=", 1) for kv in args.set), session_timeout_ms=6000,
        )  # fmt: skip

        async def load_corpus() -> None:
            await apply_migrations(database.url)
            store = Store(database.url)
            await store.open()
            await store.corpus.upsert_fact_checks(corpus_from_rows(load_jsonl(DATA / "corpus.jsonl")))
            await store.close()

        asyncio.run(load_corpus())
        for name in args.models:
            if name == "default":
                ref = default_model_ref(base.model_store)
            else:
                ref = minilm_model_ref() if name == "minilm" else name
            model = Model(name, ref, SentenceTransformerEncoder(ref, encoder_options(base)))
            print(f"{name}: {ref}", flush=True)
            asyncio.run(prepare(model, base, args.cache))
            if "encode" in args.only:
                section_encode(model, texts, base, args.rounds, args.budgets)
            if "backends" in args.only:
                section_backends(model, texts, base, args.cache, args.rounds)
            if "stream" in args.only:
                section_stream(model, texts, base, args.latency_s, [p for p in args.paths if p not in RERANK_PATHS])
                if reranked := [p for p in args.paths if p in RERANK_PATHS]:
                    with cascade_version(base, model, args.cache):
                        section_stream(model, texts, base, 0, reranked)
            if "reindex" in args.only:
                asyncio.run(section_reindex(model, base, args.reindex))
            if "ann" in args.only:
                asyncio.run(section_ann(model, texts, args.cache, args.ann_size, args.ef_search, args.ann_builds))
            models.append(model)
            del model.encoder
    print(f"\n{len(texts)} unique CheckThat! posts, 10,375 fact-checks, CPU ({multiprocessing.cpu_count()} cores)")
    report(models)
    if args.out:
        table = {
            m.name: {
                "rows": m.rows,
                "first_result_s": m.starts,
                "backends": m.backends,
                "latency": m.latency,
                "ann": m.ann,
                "cpu_ms_per_post": m.cpu,
            }
            for m in models
        }
        args.out.write_text(json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    main()
