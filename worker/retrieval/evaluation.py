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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.retrieval.modes import FusionConfig
from worker.retrieval.retriever import RetrievalConfig, Retriever
from worker.wire import FactCheck, Match

if TYPE_CHECKING:
    from worker.core.encoder import Encoder
    from worker.retrieval.decision import Decisions
    from worker.retrieval.modes import ModeName
    from worker.settings import Settings

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


def evaluation_config(settings: Settings, top_k: int = 100) -> RetrievalConfig:
    """The serving configuration, ranking deeper (top 100, no cosine floor) so every metric is defined."""
    return RetrievalConfig(
        fusion=FusionConfig.from_settings(settings),
        top_k=top_k,
        min_score=-1.0,
        candidates=max(top_k, settings.retrieval_candidates),
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
            texts = [queries[q] for q in part]
            vectors = np.asarray(encoder.encode_queries(texts))
            found = await retriever.search(
                version, encoder.dimension, vectors, texts, [query_langs.get(q) for q in part]
            )
            ranked.update(zip(part, found, strict=True))
            bar.update(len(part))
    return ranked


@dataclass(frozen=True)
class Evaluation:
    by_mode: dict[str, dict[str, float]]
    # With a decision model: the open-set report and rank-1 precision/recall curve of the first mode.
    open_set: dict[str, Any] | None = None
    curve: list[tuple[float, float, float, float]] | None = None


async def run_evaluation(
    conninfo: str,
    labelled: LabelledSet,
    encoder: Encoder,
    config: RetrievalConfig,
    *,
    version: str,
    modes: Sequence[ModeName],
    ef_search: int = 100,
    progress: bool = True,
    decisions: Decisions | None = None,
) -> Evaluation:
    """Index ``labelled.corpus`` in a private schema, rank every query in each mode, score, drop the schema.

    The schema keeps an evaluation from ever touching the serving corpus, even when it runs
    against the production database. With ``decisions`` (a decision model and its tiers),
    the posts are also judged open-set as the worker would publish them, in the first mode.
    """
    import secrets

    import psycopg
    from psycopg import sql

    from worker.core.indexer import index_version
    from worker.storage import Store, apply_migrations, with_search_path

    schema = f"factmatch_eval_{secrets.token_hex(4)}"
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as admin:
        await admin.execute("CREATE EXTENSION IF NOT EXISTS vector")
        await admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        try:
            scoped = with_search_path(conninfo, schema)
            await apply_migrations(scoped)
            store = Store(scoped, min_size=1, max_size=2, ef_search=max(ef_search, config.top_k))
            await store.open()
            try:
                await store.upsert_fact_checks(labelled.corpus)
                await store.register_version(version, version, encoder.dimension, status="indexing")
                await index_version(store, version, encoder.dimension, encoder, progress=progress)
                ranked: dict[str, dict[str, list[str]]] = {}
                for mode in modes:
                    found = await rank_queries(
                        Retriever(store, config.with_mode(mode)),
                        version,
                        encoder,
                        labelled.queries,
                        labelled.query_langs or {},
                        progress=progress,
                    )
                    ranked[mode] = {q: [m.fact_check_id for m in matches] for q, matches in found.items()}
                report = curve = None
                if decisions is not None and decisions.model is not None:
                    from worker.retrieval.calibrate import LabelledPosts, evaluate_decisions
                    from worker.retrieval.openset import open_set_report, precision_recall_curve

                    posts = LabelledPosts(dict(labelled.queries), dict(labelled.query_langs or {}), labelled.qrels)
                    judged = await evaluate_decisions(
                        Retriever(store, replace(config.with_mode(modes[0]), top_k=5)),
                        version,
                        encoder,
                        posts,
                        decisions,
                        progress=progress,
                    )
                    report = open_set_report(judged, labelled.qrels)
                    curve = precision_recall_curve(judged, labelled.qrels)
            finally:
                await store.close()
        finally:
            await admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    return Evaluation({mode: retrieval_metrics(ranked[mode], labelled.qrels) for mode in modes}, report, curve)
