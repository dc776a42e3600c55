"""Choose the hybrid fusion's weights on CheckThat! 2020 dev, then report test once.

For each model, every query's dense and lexical candidates are fetched once (the worker's own
search, all candidates kept); reciprocal rank fusion is then recomputed in Python for a grid of
(k, lexical weight), dense weight 1. The grid point with the best mean dev MAP@5 over the models is
chosen; test is evaluated at that point only.

    .venv/bin/python benchmarks/fusion_sweep.py --model BASE_DIR --model FINE_TUNED_DIR
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
from pathlib import Path

import numpy as np

from worker.core.encoder import EncoderOptions, SentenceTransformerEncoder
from worker.core.indexer import index_version
from worker.local.stack import start_database
from worker.retrieval.evaluation import load_labelled_set, retrieval_metrics
from worker.retrieval.modes import Candidate, FusionConfig, fuse
from worker.storage.scratch import scratch_store

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "checkthat2020"
KS = (10, 30, 60, 100)
LEXICAL_WEIGHTS = (0.0, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)


async def candidates_for(url: str, model: str) -> dict[str, dict[str, list[Candidate]]]:
    encoder = SentenceTransformerEncoder(model, EncoderOptions())
    out: dict[str, dict[str, list[Candidate]]] = {}
    async with scratch_store(url, ef_search=200, prefix="sweep") as store:
        splits = {
            s: load_labelled_set(DATA / "corpus.jsonl", DATA / f"{s}_queries.jsonl", DATA / f"{s}_qrels.tsv")
            for s in ("dev", "test")
        }
        await store.corpus.upsert_fact_checks(splits["dev"].corpus)
        await store.registry.register_version("m", model, encoder.dimension, status="indexing")
        await index_version(store, "m", encoder.dimension, encoder, progress=True)
        for split, labelled in splits.items():
            ids = list(labelled.queries)
            out[split] = {}
            for start in range(0, len(ids), 64):
                part = ids[start : start + 64]
                texts = [labelled.queries[q] for q in part]
                vectors = np.asarray(encoder.encode_queries(texts))
                found = await store.candidates.candidates(
                    "m",
                    encoder.dimension,
                    vectors,
                    texts,
                    [(labelled.query_langs or {}).get(q) for q in part],
                    sources=frozenset({"dense", "lexical"}),
                    limit=100,
                )
                out[split].update(zip(part, [f.candidates for f in found], strict=True))
    return out


def score(cands: dict[str, list[Candidate]], qrels: dict[str, set[str]], config: FusionConfig) -> dict[str, float]:
    ranked = {q: [c.fact_check_id for c, _ in fuse(cs, config, top_k=100, min_score=-1.0)] for q, cs in cands.items()}
    return retrieval_metrics(ranked, qrels)


async def main(models: list[str], out: Path) -> None:
    database = start_database()
    try:
        per_model = {m: await candidates_for(database.url, m) for m in models}
    finally:
        database.stop()
    qrels = {
        s: load_labelled_set(DATA / "corpus.jsonl", DATA / f"{s}_queries.jsonl", DATA / f"{s}_qrels.tsv").qrels
        for s in ("dev", "test")
    }
    grid = []
    for k, wl in itertools.product(KS, LEXICAL_WEIGHTS):
        config = FusionConfig("hybrid", rrf_k=k, dense_weight=1.0, lexical_weight=wl)
        dev = [score(per_model[m]["dev"], qrels["dev"], config)["map@5"] for m in models]
        grid.append((float(np.mean(dev)), k, wl, dev))
    grid.sort(reverse=True)
    _, k, wl, _ = grid[0]
    chosen = FusionConfig("hybrid", rrf_k=k, dense_weight=1.0, lexical_weight=wl)
    print(f"chosen on dev: rrf_k={k}, lexical_weight={wl} (dense_weight 1)")
    report = {"chosen": {"rrf_k": k, "lexical_weight": wl}, "models": {}}
    print(f"{'model':60} {'split':5} {'mode':8} {'MAP@5':>7} {'S@10':>6}")
    for m in models:
        rows = {}
        for split in ("dev", "test"):
            for mode, config in (
                ("dense", FusionConfig("dense", 60, 1.0, 1.0)),
                ("lexical", FusionConfig("lexical", 60, 1.0, 1.0)),
                ("hybrid", chosen),
            ):
                metrics = score(per_model[m][split], qrels[split], config)
                rows[f"{split}/{mode}"] = {"map@5": metrics["map@5"], "s@10": metrics["accuracy@10"]}
                print(
                    f"{Path(m).name[-60:]:60} {split:5} {mode:8} {metrics['map@5']:7.4f} {metrics['accuracy@10']:6.4f}"
                )
        report["models"][m] = rows
    report["grid_top5"] = grid[:5]
    out.write_text(json.dumps(report, indent=2))  # noqa: ASYNC240


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--out", default="fusion_sweep.json")
    args = parser.parse_args()
    asyncio.run(main(args.model, Path(args.out)))
