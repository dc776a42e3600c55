"""Open-set decisions on CheckThat! 2020: fit on train/dev, report test once.

For each model the 10,375 fact-checks (and the cross-lingual check's own) are indexed once in
a private schema and every post's candidates are fetched once through the worker's SQL
(cached under --cache, so reruns take seconds). Everything after that is the worker's own
``Retriever`` over those candidates: fusion, decision features, probabilities, tiers. Every
split is made open-set: half of its posts (seeded) lose their gold fact-checks (and the golds'
copies: 180 fact-checks are in the corpus more than once, quotes aside), which are left out of the
candidates exactly as if they were not in the corpus.

Printed per model: test open-set precision / recall / false alarms per tier, the AUROC of
the rank-1 probability (and of the cosine alone), MAP@5 on the full test set for today's
hybrid and for hybrid reordered by the decision, and the cross-lingual check
(benchmarks/data/crosslingual.jsonl: posts in 11 languages whose fact-check is in another).
With --rerank, a cross-encoder is trained from the model's own weights on train (mined hard
negatives), the decision is fitted on dev with and without its score, and test is reported
for both, with the throughput cost.

    .venv/bin/python benchmarks/decisions.py                        # default model and MiniLM
    .venv/bin/python benchmarks/decisions.py --ship                 # also write the shipped files
    .venv/bin/python benchmarks/decisions.py --model DIR --rerank   # a model, reranked
    .venv/bin/python benchmarks/decisions.py --model FT --fit-on dev --out ...  # a model tuned on train

``--ship`` writes each model's decision model (fitted on train+dev) to
worker/retrieval/shipped_decisions/, which bootstraps it with the model on a fresh install.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from worker.configs import calibration_config, encoder_loader, retrieval_config
from worker.domain import FactCheckDetails, PostCandidates
from worker.local.models import default_model_ref, minilm_model_ref
from worker.retrieval.calibrate import (
    LabelledPosts,
    collect_pools,
    decision_rows,
    evaluate_decisions,
)
from worker.retrieval.claims import claim_text
from worker.retrieval.cluster_cut import cluster_cut_of
from worker.retrieval.decision import Decisions
from worker.retrieval.evaluation import load_labelled_set, retrieval_metrics
from worker.retrieval.modes import Candidate
from worker.retrieval.openset import (
    auroc,
    fmt,
    open_set_report,
    open_set_split,
    plot_precision_recall,
    precision_recall_curve,
    twin_groups,
)
from worker.retrieval.retriever import Retriever
from worker.retrieval.shipped import model_key, shipped_path
from worker.settings import Settings
from worker.wire import FactCheck

ROOT = Path(__file__).resolve().parent
DATA = ROOT.parents[1] / "shared" / "data" / "checkthat2020"
SEEDS = {"train": 11, "dev": 12, "test": 13}


@dataclass
class Gathered:
    """What the worker's SQL returned for every post, and the fact-checks' texts."""

    candidates: dict[str, list[Candidate]]
    corpus: dict[str, FactCheck]
    dimension: int


class CachedSource:
    """The worker's candidate source, replayed: the SQL ran once, in :func:`gather`."""

    def __init__(self, gathered: Gathered) -> None:
        self.g = gathered

    async def candidates(self, version, dimension, queries, texts, langs, *, sources, limit):  # type: ignore[no-untyped-def]
        out: list[PostCandidates] = []
        for text in texts:
            kept = []
            for c in self.g.candidates[text]:
                if "lexical" not in sources:  # what the dense-only SQL would have returned
                    c = replace(c, lexical_rank=None, lexical_score=None)
                if "dense" not in sources:
                    c = replace(c, dense_rank=None)
                if c.dense_rank or c.lexical_rank:
                    kept.append(c)
            out.append(PostCandidates(kept))
        return out

    async def details(self, fact_check_ids: Sequence[str]) -> dict[str, FactCheckDetails]:
        out = {}
        for fc in fact_check_ids:
            f = self.g.corpus[fc]
            out[fc] = FactCheckDetails(f.claim, f.title, f.url, f.lang, f.rating, f.published_at)
        return out


class NoEncoder:
    """Vectors were only needed by the SQL, which already ran."""

    def __init__(self, dimension: int) -> None:
        self.dimension = dimension

    def encode_queries(self, texts: Any) -> Any:
        return np.zeros((len(texts), self.dimension), dtype=np.float32)

    encode_documents = encode_queries

    def count_tokens(self, texts: Any) -> list[int]:
        return [0] * len(texts)


def split_posts(split: str) -> tuple[LabelledPosts, dict[str, set[str]]]:
    labelled = load_labelled_set(DATA / "corpus.jsonl", DATA / f"{split}_queries.jsonl", DATA / f"{split}_qrels.tsv")
    cut = open_set_split(list(labelled.queries), labelled.qrels, 0.5, SEEDS[split], twin_groups(labelled.corpus))
    langs = dict(labelled.query_langs or {})
    return LabelledPosts(dict(labelled.queries), langs, cut.qrels, exclude=cut.removed), labelled.qrels


def crosslingual() -> tuple[list[FactCheck], LabelledPosts, LabelledPosts]:
    rows = [json.loads(line) for line in (ROOT / "data" / "crosslingual.jsonl").read_text().splitlines() if line]
    fcs = [FactCheck(id=r["id"], claim=r["claim"], lang=r["lang"]) for r in rows]

    def posts(prefix: str, text: str, lang: str) -> LabelledPosts:
        return LabelledPosts(
            {f"{prefix}-{r['id']}": r[text] for r in rows},
            {f"{prefix}-{r['id']}": r[lang] for r in rows},
            {f"{prefix}-{r['id']}": {r["id"]} for r in rows},
        )

    return fcs, posts("x", "post", "post_lang"), posts("s", "same_post", "lang")


async def gather(url: str, model: str, settings: Settings, posts: list[LabelledPosts], cache: Path) -> Gathered:
    """Index the corpus in a private schema and fetch every post's candidates once (cached)."""
    from worker.core.indexer import index_version
    from worker.storage.scratch import scratch_store

    # The serving backend (FACTMATCH_BACKEND / _ONNX_INT8) encodes corpus and posts, as in a worker.
    backend = "-int8" if settings.onnx_int8 else ("-onnx" if settings.backend == "onnx" else "")
    path = cache / f"{model_key(model)}{backend}-claims.pkl"
    if path.is_file():
        cached: Gathered = pickle.loads(path.read_bytes())
        return cached
    encoder = encoder_loader(settings)(model)
    fcs, _, _ = crosslingual()
    corpus = load_labelled_set(DATA / "corpus.jsonl", DATA / "test_queries.jsonl", DATA / "test_qrels.tsv").corpus
    corpus = [*corpus, *fcs]
    found: dict[str, list[Candidate]] = {}
    async with scratch_store(url, ef_search=200, prefix="decisions") as store:
        await store.corpus.upsert_fact_checks(corpus)
        await store.registry.register_version("m", model, encoder.dimension, status="indexing")
        await index_version(store, "m", encoder.dimension, encoder, progress=True)
        # Keyed by claim text: what evaluation and calibration encode and search (worker/retrieval/claims.py).
        texts = sorted({claim_text(t) for p in posts for t in p.queries.values()})
        langs = {claim_text(t): lang for p in posts for q, t in p.queries.items() for lang in (p.langs.get(q),)}
        from tqdm.auto import tqdm

        for start in tqdm(range(0, len(texts), 64), desc="candidates", unit="batch"):
            part = texts[start : start + 64]
            vectors = np.asarray(encoder.encode_queries(part))
            rows = await store.candidates.candidates(
                "m",
                encoder.dimension,
                vectors,
                part,
                [langs[t] for t in part],
                sources=frozenset({"dense", "lexical"}),
                limit=settings.retrieval_candidates,
            )
            found.update(zip(part, [r.candidates for r in rows], strict=True))
    gathered = Gathered(found, {fc.id: fc for fc in corpus}, encoder.dimension)
    cache.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - a benchmark, nothing else runs
    path.write_bytes(pickle.dumps(gathered))
    return gathered


async def gathered_splits(model: str, settings: Settings, cache: Path) -> tuple[dict[str, LabelledPosts], Gathered]:
    """train, dev and test (open-set) and every post's candidates, from the cache or a private database."""
    from worker.local.stack import start_database

    splits = {name: split_posts(name)[0] for name in ("train", "dev", "test")}
    _, cross, same = crosslingual()
    database = start_database()
    try:
        gathered = await gather(database.url, model, settings, [*splits.values(), cross, same], cache)
    finally:
        database.stop()
    return splits, gathered


def merged(*parts: LabelledPosts) -> LabelledPosts:
    return LabelledPosts(
        {k: v for p in parts for k, v in p.queries.items()},
        {k: v for p in parts for k, v in p.langs.items()},
        {k: v for p in parts for k, v in p.qrels.items()},
        exclude=frozenset().union(*(p.exclude for p in parts)),
    )


async def fit(
    retriever: Retriever,
    enc: Any,
    parts: list[LabelledPosts],
    settings: Settings,
    note: str,
    decisions: Decisions | None = None,
) -> Any:
    rows = []
    for part in parts:
        pools = await collect_pools(retriever, "m", enc, part, featurize=True, decisions=decisions)
        rows += decision_rows(pools, part)
    return calibration_config(settings).fit(rows, merged(*parts), {"data": note})


async def judge(
    retriever: Retriever, enc: Any, posts: LabelledPosts, decisions: Decisions
) -> tuple[dict[str, Any], Any]:
    judged = await evaluate_decisions(retriever, "m", enc, posts, decisions)
    return open_set_report(judged, posts.qrels), precision_recall_curve(judged, posts.qrels)


async def run_model(
    url: str, model: str, settings: Settings, *, ship: bool, rerank: bool, cache: Path, fit_on: list[str]
) -> dict[str, Any]:
    train, train_golds = split_posts("train")
    dev, dev_golds = split_posts("dev")
    test, test_full_qrels = split_posts("test")
    _, cross, same = crosslingual()
    gathered = await gather(url, model, settings, [train, dev, test, cross, same], cache)
    enc = NoEncoder(gathered.dimension)
    config = replace(retrieval_config(settings), min_score=-1.0)
    retriever = Retriever(CachedSource(gathered), config)
    out: dict[str, Any] = {"model": model, "fit_on": fit_on}

    # 1. The shipped decision: fitted on train + dev (open-set), as `factmatch calibrate` fits it
    # (a model fine-tuned on train is fitted on dev alone: its train posts are not new to it).
    parts = {"train": train, "dev": dev}
    fitted = await fit(
        retriever, enc, [parts[s] for s in fit_on], settings, f"CheckThat! 2020 {'+'.join(fit_on)}, open-set halves"
    )
    # The claim-cluster cut from the same posts, every gold kept (it is about claims, not open-set).
    fitting = merged(*(parts[s] for s in fit_on))
    golds = {**(train_golds if "train" in fit_on else {}), **(dev_golds if "dev" in fit_on else {})}
    cut = cluster_cut_of(encoder_loader(settings)(model), fitting.queries, golds)
    fitted.report["cluster_cut"] = cut.as_dict() if cut else None
    decisions = fitted.decisions()
    out["fit"] = fitted.report
    out["thresholds"] = [t.__dict__ for t in fitted.thresholds]
    out["coefficients"] = dict(zip(fitted.model.features, fitted.model.coef, strict=True))

    # 2. Test, open-set, as the worker publishes (reported once).
    out["test_open_set"], out["curve"] = await judge(retriever, enc, test, decisions)
    plain = await collect_pools(retriever, "m", enc, test)
    answerable = [q for q in test.queries if test.qrels.get(q)]
    unanswerable = [q for q in test.queries if not test.qrels.get(q)]

    def top_cos(q: str) -> float:
        return max((s.candidate.dense_score for s in plain[q]), default=0.0)

    out["test_cosine_auroc"] = auroc([top_cos(q) for q in answerable], [top_cos(q) for q in unanswerable])

    # 3. Ranking on the full test set (every post answerable): today's hybrid vs reordered by the decision.
    full = LabelledPosts({q: t for q, t in test.queries.items() if q in test_full_qrels}, test.langs, test_full_qrels)
    out["test_map5"] = {}
    for name, use in (("hybrid", None), ("hybrid+decision", decisions)):
        pools = await collect_pools(retriever, "m", enc, full, decisions=use)
        ranked = {q: [s.candidate.fact_check_id for s in pool] for q, pool in pools.items()}
        out["test_map5"][name] = retrieval_metrics(ranked, test_full_qrels)["map@5"]

    # 4. Cross-lingual: accuracy@1 dense vs hybrid (plain RRF, language-aware), and abstention.
    xl: dict[str, Any] = {}
    for name, fusion in (
        ("dense", replace(config.fusion, mode="dense")),
        ("hybrid (plain RRF)", replace(config.fusion, mode="hybrid", language_aware=False)),
        ("hybrid (language-aware)", replace(config.fusion, mode="hybrid", language_aware=True)),
    ):
        r = Retriever(retriever.source, replace(config, fusion=fusion))
        pools = await collect_pools(r, "m", enc, cross)
        xl[f"accuracy@1 {name}"] = retrieval_metrics(
            {q: [s.candidate.fact_check_id for s in p] for q, p in pools.items()}, cross.qrels
        )["accuracy@1"]
    for name, posts in (("cross-lingual", cross), ("same-language", same)):
        report, _ = await judge(retriever, enc, posts, decisions)
        xl[f"{name}: match precision"] = report["match"]["precision"]
        xl[f"{name}: match recall"] = report["match"]["recall"]
        xl[f"{name}: match-or-suggestion recall"] = report["match_or_suggestion"]["recall"]
        xl[f"{name}: rank-1 correct"] = report["rank1_correct_share"]
    out["crosslingual"] = xl

    if rerank:
        from rerank_check import rerank_experiment  # benchmarks/rerank_check.py

        out["rerank"] = await rerank_experiment(
            model, settings, gathered, retriever, enc, train, dev, test, fit, judge, cache
        )
    if ship:
        path = shipped_path(model)
        path.parent.mkdir(parents=True, exist_ok=True)
        Decisions.write(path, fitted.model, fitted.thresholds, {"fit": fitted.report, "test": out["test_open_set"]})
        out["shipped"] = str(path)
    return out


def show(result: dict[str, Any]) -> None:
    print(f"\n== {Path(result['model']).name}")
    reports = [(f"{'+'.join(result['fit_on'])} fit", result["test_open_set"])]
    for name, r in result.get("rerank", {}).get("test", {}).items():
        reports.append((name, r))
    for name, t in reports:
        print(f"test open-set [{name}]: {t['answerable']} posts with a fact-check, {t['unanswerable']} without")
        for tier in ("match", "match_or_suggestion"):
            r = t[tier]
            print(
                f"  {tier:20s} precision {fmt(r['precision'])}  recall {fmt(r['recall'])}"
                f"  false alarms {fmt(r['false_alarm'])}  (shown {r['shown']})"
            )
        print(f"  AUROC rank-1 probability {fmt(t['auroc'])}")
    print(f"  AUROC cosine alone {fmt(result['test_cosine_auroc'])}")
    print(f"  MAP@5 full test: {json.dumps(result['test_map5'])}")
    for k, v in result["crosslingual"].items():
        print(f"  {k}: {fmt(v)}")
    if "rerank" in result:
        print(f"  rerank: { {k: v for k, v in result['rerank'].items() if k != 'test'} }")


async def main(models: list[str], ship: bool, rerank: bool, out: Path, cache: Path, fit_on: list[str]) -> None:
    if not (DATA / "corpus.jsonl").is_file():
        print(f"skipped: {DATA} not found")
        return
    from worker.local.stack import start_database

    settings = Settings()
    database = start_database()
    try:
        results = []
        for model in models:
            results.append(
                await run_model(database.url, model, settings, ship=ship, rerank=rerank, cache=cache, fit_on=fit_on)
            )
            show(results[-1])
    finally:
        database.stop()
    out.parent.mkdir(parents=True, exist_ok=True)
    plot = plot_precision_recall({Path(r["model"]).name: r.pop("curve") for r in results}, out.with_suffix(".png"))
    out.write_text(json.dumps(results, indent=1, default=str) + "\n")  # noqa: ASYNC240
    print(f"\nwrote {out} and {plot}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", help="Model directory (repeatable).")
    parser.add_argument("--ship", action="store_true", help="Write each model's decision model for shipping.")
    parser.add_argument("--rerank", action="store_true", help="Also train and measure a reranker per model.")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "decisions.json")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/factmatch-bench"), help="Candidate cache.")
    parser.add_argument(
        "--fit-on", default="train,dev", help="Splits the decision is fitted on (dev alone for a model tuned on train)."
    )
    args = parser.parse_args()
    fit_on = args.fit_on.split(",")
    if not fit_on or set(fit_on) - {"train", "dev"}:
        parser.error("--fit-on takes train, dev or train,dev")
    models = args.model or [default_model_ref(Settings().model_store), minilm_model_ref()]
    asyncio.run(main(models, args.ship, args.rerank, args.out, args.cache, fit_on))
