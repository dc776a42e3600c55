"""Reranking, measured: a cross-encoder from the model's own weights, as a decision feature.

Called by ``benchmarks/decisions.py --rerank``. Trained on CheckThat! 2020 train with hard
negatives mined from the retriever; the decision model is fitted on dev (open-set) with and
without the reranker's score, so both see the same data; test is reported once for each.
Throughput: the encoder alone vs encoder plus the cross-encoder over the top-N, on the
test posts, side by side in one run on this machine.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from trainer.rerank import Pair, train_reranker
from worker.configs import encoder_options
from worker.core.encoder import SentenceTransformerEncoder
from worker.retrieval.calibrate import LabelledPosts, collect_pools
from worker.retrieval.decision import Decisions
from worker.retrieval.evaluation import load_labelled_set, retrieval_metrics
from worker.retrieval.openset import twin_groups, with_twins
from worker.retrieval.rerank import CrossEncoderReranker
from worker.retrieval.retriever import Retriever
from worker.wire import document_text

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "checkthat2020"
TOP_N = 10
NEGATIVES = 4


class CachedReranker:
    """Scores each (post, fact-check) once: fitting and judging reread the same pairs."""

    def __init__(self, inner: CrossEncoderReranker) -> None:
        self.inner = inner
        self.cache: dict[tuple[str, str], float] = {}

    def score(self, pairs: Any) -> Any:
        todo = [p for p in dict.fromkeys(pairs) if p not in self.cache]
        if todo:
            self.cache.update(zip(todo, self.inner.score(todo).tolist(), strict=True))
        return np.asarray([self.cache[p] for p in pairs], dtype=np.float64)


async def mined_pairs(gathered: Any, retriever: Retriever, enc: Any) -> list[Pair]:
    """CheckThat! train's posts, each with its fact-checks and NEGATIVES of the retriever's mistakes."""
    full_train = load_labelled_set(DATA / "corpus.jsonl", DATA / "train_queries.jsonl", DATA / "train_qrels.tsv")
    posts = LabelledPosts(dict(full_train.queries), {}, with_twins(full_train.qrels, twin_groups(full_train.corpus)))
    texts = {fc_id: document_text(fc.title, fc.claim) for fc_id, fc in gathered.corpus.items()}
    pools = await collect_pools(retriever, "m", enc, posts)
    pairs: list[Pair] = []
    for q, pool in pools.items():
        gold = posts.qrels[q]
        pairs += [(posts.queries[q], texts[fc], 1.0) for fc in sorted(gold) if fc in texts]
        wrong = [s.candidate.fact_check_id for s in pool if s.candidate.fact_check_id not in gold][:NEGATIVES]
        pairs += [(posts.queries[q], texts[fc], 0.0) for fc in wrong]
    return pairs


def _kept(
    cache: Path, name: str, key: list[Any], train: Callable[[Path], object]
) -> tuple[CrossEncoderReranker, float | None]:
    """The cross-encoder ``train`` saves into a directory, kept under ``cache`` as ``name`` and a
    digest of ``key`` (what it was trained from), and the seconds training took (None: from the cache)."""
    kept = cache / f"{name}-{hashlib.sha256(json.dumps(key).encode()).hexdigest()[:12]}"
    if (kept / "reranker" / "config.json").is_file():
        return CrossEncoderReranker(str(kept / "reranker")), None
    with tempfile.TemporaryDirectory(prefix="factmatch-rerank-", dir=cache) as tmp:
        started = time.perf_counter()
        train(Path(tmp))
        seconds = round(time.perf_counter() - started, 1)
        shutil.rmtree(kept, ignore_errors=True)
        shutil.copytree(tmp, kept)
    return CrossEncoderReranker(str(kept / "reranker")), seconds


def trained_reranker(
    settings: Any, model: str, pairs: list[Pair], cache: Path, layers: int = 0
) -> tuple[CrossEncoderReranker, float | None]:
    """The cross-encoder trained on ``pairs``' labels (of the model's first ``layers`` layers when
    positive), kept under ``cache`` (full depth: half an hour on 2 cores), and the seconds its
    training took (None: from the cache)."""
    name, key = f"reranker-{Path(model).name}", [model, pairs]
    if layers:
        name, key = f"{name}-{layers}-layers-labels", [*key, layers]
    return _kept(cache, name, key, lambda out: train_reranker(settings, model, pairs, out, layers=layers))


def distilled_reranker(
    settings: Any, model: str, pairs: list[Pair], cache: Path, layers: int, teacher: CrossEncoderReranker
) -> tuple[CrossEncoderReranker, float | None]:
    """A cross-encoder of the model's first ``layers`` layers trained on ``teacher``'s logits over
    ``pairs`` (the trainer's ``train_reranker_layers``), kept under ``cache`` like the teacher."""
    epochs = settings.train_reranker_distil_epochs
    return _kept(
        cache,
        f"reranker-{Path(model).name}-{layers}-layers",
        [model, pairs, layers, teacher.path],
        lambda out: train_reranker(settings, model, pairs, out, epochs=epochs, layers=layers, teacher=teacher),
    )


async def rerank_experiment(
    model: str,
    settings: Any,
    gathered: Any,
    retriever: Any,
    enc: Any,
    train: Any,
    dev: Any,
    test: Any,
    fit: Any,
    judge: Any,
    cache: Path,
) -> dict[str, Any]:
    data = DATA
    texts = {fc_id: document_text(fc.title, fc.claim) for fc_id, fc in gathered.corpus.items()}
    pairs = await mined_pairs(gathered, retriever, enc)
    out: dict[str, Any] = {"train_pairs": len(pairs), "top_n": TOP_N}
    inner, out["train_seconds"] = trained_reranker(settings, model, pairs, cache)
    reranker = CachedReranker(inner)
    reranking = Retriever(retriever.source, replace(retriever.config, rerank_top_n=TOP_N))
    with_r = await fit(reranking, enc, [dev], settings, "dev, open-set, with reranker", Decisions(reranker=reranker))
    without = await fit(retriever, enc, [dev], settings, "dev, open-set")
    d_with = with_r.decisions(reranker)
    d_without = without.decisions()
    out["test"] = {
        "dev fit, no reranker": (await judge(retriever, enc, test, d_without))[0],
        f"dev fit, reranker top-{TOP_N}": (await judge(reranking, enc, test, d_with))[0],
    }
    full_qrels = load_labelled_set(data / "corpus.jsonl", data / "test_queries.jsonl", data / "test_qrels.tsv").qrels
    full = LabelledPosts({q: t for q, t in test.queries.items() if q in full_qrels}, test.langs, full_qrels)
    for name, r, d in (("no reranker", retriever, d_without), ("reranker", reranking, d_with)):
        pools = await collect_pools(r, "m", enc, full, decisions=d)
        ranked = {q: [s.candidate.fact_check_id for s in p] for q, p in pools.items()}
        out[f"test MAP@5 hybrid+decision, {name}"] = retrieval_metrics(ranked, full_qrels)["map@5"]
    out["rerank coefficient"] = dict(zip(with_r.model.features, with_r.model.coef, strict=True)).get("rerank")

    # Throughput, side by side: the encoder alone vs the encoder plus the cross-encoder over the top-N.
    encoder = SentenceTransformerEncoder(model, encoder_options(settings))
    sample = list(full.queries.values())
    test_pools = await collect_pools(retriever, "m", enc, full)
    rerank_pairs = [
        (full.queries[q], texts[s.candidate.fact_check_id]) for q, pool in test_pools.items() for s in pool[:TOP_N]
    ]
    encoder.encode_queries(sample[:16])  # warm-up
    started = time.perf_counter()
    encoder.encode_queries(sample)
    encode_s = time.perf_counter() - started
    started = time.perf_counter()
    inner.score(rerank_pairs)
    rerank_s = time.perf_counter() - started
    out["posts/s encoder only"] = round(len(sample) / encode_s, 1)
    out["posts/s encoder + reranker"] = round(len(sample) / (encode_s + rerank_s), 1)
    return out
