"""Retrieval metrics, labelled-set loading and ranking for ``factmatch eval``, calibration and the trainer.

The metric set is sentence-transformers' InformationRetrievalEvaluator's (accuracy,
precision and recall at 1/3/5/10, nDCG@10, MRR@10, MAP@100) plus MAP@5, the CheckThat!
claim-retrieval task's official measure. Ranked lists come from the worker's own encoder
and pgvector search, so a figure here is what the stream would do.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from worker.domain import Encoder
from worker.retrieval.claims import claim_text
from worker.retrieval.retriever import Retriever, queries_of
from worker.wire import FactCheck, Match

K_VALUES = (1, 3, 5, 10)


@dataclass(frozen=True)
class LabelledSet:
    corpus: list[FactCheck]
    queries: dict[str, str]
    qrels: dict[str, set[str]]
    query_langs: dict[str, str | None] | None = None


def load_jsonl(path: Path) -> list[dict[str, object]]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number}: not JSON: {exc}") from exc
    return rows


def corpus_from_rows(rows: Sequence[Mapping[str, object]]) -> list[FactCheck]:
    """Accepts the project's fact-check JSONL and the BEIR-style ``{"id", "text", "title"}`` layout."""
    out = []
    for row in rows:
        data = dict(row)
        if "claim" not in data and "text" in data:
            data["claim"] = data.pop("text")
        out.append(FactCheck.model_validate(data))
    return out


def read_queries(path: Path) -> tuple[dict[str, str], dict[str, str | None]]:
    """Query texts and languages by id, from ``{"id", "text", "lang"?}`` JSONL."""
    rows = load_jsonl(path)
    texts = {str(r["id"]): str(r["text"]) for r in rows}
    langs = {str(r["id"]): (str(r["lang"]) if r.get("lang") else None) for r in rows}
    return texts, langs


def read_qrels(path: Path) -> dict[str, set[str]]:
    """The relevant fact-checks of each query, from ``query_id<TAB>corpus_id[<TAB>relevance]`` lines.

    The one parser of labelled pairs: a relevance of 0 means not relevant, everywhere.
    """
    relevant: dict[str, set[str]] = {}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            parts = [p.strip() for p in line.rstrip("\n").split("\t")]
            if not parts or not parts[0]:
                continue
            if len(parts) < 2 or not parts[1]:
                raise ValueError(f"{path}:{number}: expected query_id<TAB>corpus_id")
            if len(parts) >= 3 and parts[-1] in ("0", "0.0"):
                continue
            relevant.setdefault(parts[0], set()).add(parts[1])
    return relevant


def load_labelled_set(corpus: Path, queries: Path, qrels: Path, *, open_set: bool = False) -> LabelledSet:
    """The labelled set; with ``open_set``, queries with no qrels line stay in as posts with nothing to find."""
    fact_checks = corpus_from_rows(load_jsonl(corpus))
    query_texts, query_langs = read_queries(queries)
    relevant = read_qrels(qrels)
    if not open_set:
        # Queries with no gold pair cannot be ranked (e.g. CheckThat test query 1198).
        query_texts = {q: t for q, t in query_texts.items() if q in relevant}
    return LabelledSet(fact_checks, query_texts, relevant, query_langs)


def with_open_set(labelled: LabelledSet, share: float, seed: int) -> LabelledSet:
    """``labelled`` with ``share`` of its answerable posts made unanswerable: their golds (and the
    golds' copies) leave the corpus."""
    from worker.retrieval.openset import open_set_split, twin_groups

    split = open_set_split(list(labelled.queries), labelled.qrels, share, seed, twin_groups(labelled.corpus))
    corpus = [fc for fc in labelled.corpus if fc.id not in split.removed]
    return LabelledSet(corpus, labelled.queries, split.qrels, labelled.query_langs)


def retrieval_metrics(ranked: Mapping[str, Sequence[str]], qrels: Mapping[str, set[str]]) -> dict[str, float]:
    """IR metrics over queries that have at least one relevant document."""
    queries = [q for q in ranked if qrels.get(q)]
    if not queries:
        raise ValueError("no query has a relevant document")
    sums: dict[str, float] = {}

    def add(name: str, value: float) -> None:
        sums[name] = sums.get(name, 0.0) + value

    for q in queries:
        hits = list(ranked[q])
        relevant = qrels[q]
        flags = [doc in relevant for doc in hits]
        for k in K_VALUES:
            top = flags[:k]
            add(f"accuracy@{k}", float(any(top)))
            add(f"precision@{k}", sum(top) / k)
            add(f"recall@{k}", sum(top) / len(relevant))
        first = next((i for i, f in enumerate(flags[:10]) if f), None)
        add("mrr@10", 0.0 if first is None else 1.0 / (first + 1))
        dcg = sum(1.0 / math.log2(i + 2) for i, f in enumerate(flags[:10]) if f)
        idcg = sum(1.0 / math.log2(i + 2) for i in range(min(len(relevant), 10)))
        add("ndcg@10", dcg / idcg)
        for k in (5, 100):
            found, precision_sum = 0, 0.0
            for i, f in enumerate(flags[:k]):
                if f:
                    found += 1
                    precision_sum += found / (i + 1)
            add(f"map@{k}", precision_sum / min(k, len(relevant)))
    metrics = {name: value / len(queries) for name, value in sums.items()}
    metrics["queries"] = float(len(queries))
    return metrics


METRIC_ORDER = (
    [f"accuracy@{k}" for k in K_VALUES]
    + [f"precision@{k}" for k in K_VALUES]
    + [f"recall@{k}" for k in K_VALUES]
    + ["ndcg@10", "mrr@10", "map@100", "map@5", "queries"]
)


async def rank_queries(
    retriever: Retriever,
    version: str,
    encoder: Encoder,
    queries: Mapping[str, str],
    query_langs: Mapping[str, str | None],
    *,
    progress: bool = False,
    chunk: int = 64,
) -> dict[str, list[Match]]:
    """Every query's published matches, as the worker would rank them (encoder, retriever, tiers off)."""
    import numpy as np
    from tqdm.auto import tqdm

    ids = list(queries)
    ranked: dict[str, list[Match]] = {}
    with tqdm(total=len(ids), desc="ranking queries", unit="query", disable=not progress) as bar:
        for start in range(0, len(ids), chunk):
            part = ids[start : start + chunk]
            texts = [claim_text(queries[q]) for q in part]
            vectors = np.asarray(encoder.encode_queries(texts))
            found = await retriever.search(
                version, encoder.dimension, queries_of(texts, [query_langs.get(q) for q in part], vectors)
            )
            ranked.update((q, searched.matches) for q, searched in zip(part, found, strict=True))
            bar.update(len(part))
    return ranked
