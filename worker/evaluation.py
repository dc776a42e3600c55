"""Retrieval metrics and labelled-set loading for ``factmatch eval`` (and the trainer's gate).

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
from typing import TYPE_CHECKING

from worker.wire import FactCheck

if TYPE_CHECKING:
    from worker.encoder import Encoder

K_VALUES = (1, 3, 5, 10)


@dataclass(frozen=True)
class LabelledSet:
    corpus: list[FactCheck]
    queries: dict[str, str]
    qrels: dict[str, set[str]]


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


def load_labelled_set(corpus: Path, queries: Path, qrels: Path) -> LabelledSet:
    fact_checks = corpus_from_rows(load_jsonl(corpus))
    query_texts = {str(r["id"]): str(r["text"]) for r in load_jsonl(queries)}
    relevant: dict[str, set[str]] = {}
    with qrels.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            parts = line.strip().split("\t")
            if not parts or not parts[0]:
                continue
            if len(parts) < 2:
                raise ValueError(f"{qrels}:{number}: expected query_id<TAB>corpus_id")
            if len(parts) >= 3 and parts[-1].strip() in ("0", "0.0"):
                continue
            relevant.setdefault(parts[0], set()).add(parts[1])
    # Queries with no gold pair cannot be scored (e.g. CheckThat test query 1198).
    query_texts = {q: t for q, t in query_texts.items() if q in relevant}
    return LabelledSet(fact_checks, query_texts, relevant)


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


async def run_evaluation(
    conninfo: str,
    labelled: LabelledSet,
    encoder: Encoder,
    *,
    version: str,
    top_k: int = 100,
    ef_search: int = 100,
    progress: bool = True,
) -> dict[str, float]:
    """Index ``labelled.corpus`` in a private schema, rank every query, score, drop the schema.

    The schema keeps an evaluation from ever touching the serving corpus, even when it runs
    against the production database.
    """
    import secrets

    import numpy as np
    import psycopg
    from psycopg import sql
    from tqdm.auto import tqdm

    from worker.indexer import index_version
    from worker.store import Store, apply_migrations, with_search_path

    schema = f"factmatch_eval_{secrets.token_hex(4)}"
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as admin:
        await admin.execute("CREATE EXTENSION IF NOT EXISTS vector")
        await admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        try:
            scoped = with_search_path(conninfo, schema)
            await apply_migrations(scoped)
            store = Store(scoped, min_size=1, max_size=2, ef_search=max(ef_search, top_k))
            await store.open()
            try:
                await store.upsert_fact_checks(labelled.corpus)
                await store.register_version(version, version, encoder.dimension, status="indexing")
                await index_version(store, version, encoder.dimension, encoder, progress=progress)
                ids = list(labelled.queries)
                ranked: dict[str, list[str]] = {}
                chunk = 64
                with tqdm(total=len(ids), desc="ranking queries", unit="query", disable=not progress) as bar:
                    for start in range(0, len(ids), chunk):
                        part = ids[start : start + chunk]
                        vectors = encoder.encode_queries([labelled.queries[q] for q in part])
                        found = await store.search(
                            version, encoder.dimension, np.asarray(vectors), top_k=top_k, min_score=-1.0
                        )
                        for q, matches in zip(part, found, strict=True):
                            ranked[q] = [m.fact_check_id for m in matches]
                        bar.update(len(part))
            finally:
                await store.close()
        finally:
            await admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    return retrieval_metrics(ranked, labelled.qrels)
