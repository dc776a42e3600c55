"""An evaluation as the stream would score it: the labelled corpus indexed with the worker's own
encoder and indexer, every query ranked by the worker's retriever, in each fusion mode.

This is the one place an evaluation is run (``factmatch eval``, the benchmarks). The corpus
lives in a scratch store the caller opens (in Postgres, :func:`worker.storage.scratch.scratch_store`:
a private schema), so an evaluation never touches the serving corpus even against the
production database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from worker.core.indexer import index_version
from worker.domain import Encoder, ModeName
from worker.retrieval.calibrate import LabelledPosts, evaluate_decisions
from worker.retrieval.decision import Decisions
from worker.retrieval.evaluation import LabelledSet, rank_queries, retrieval_metrics
from worker.retrieval.openset import open_set_report, precision_recall_curve
from worker.retrieval.retriever import RetrievalConfig, Retriever
from worker.storage.interfaces import ScratchFactory


@dataclass(frozen=True)
class Evaluation:
    by_mode: dict[str, dict[str, float]]
    # With a decision model: the open-set report and rank-1 precision/recall curve of the first mode.
    open_set: dict[str, Any] | None = None
    curve: list[tuple[float, float, float, float]] | None = None


async def run_evaluation(
    scratch: ScratchFactory,
    labelled: LabelledSet,
    encoder: Encoder,
    config: RetrievalConfig,
    *,
    version: str,
    modes: Sequence[ModeName],
    progress: bool = True,
    decisions: Decisions | None = None,
) -> Evaluation:
    """Index ``labelled.corpus`` in a fresh ``scratch()`` store, rank every query in each mode, score.

    With ``decisions`` (a decision model and its tiers), the posts are also judged open-set
    as the worker would publish them, in the first mode.
    """
    async with scratch() as store:
        await store.corpus.upsert_fact_checks(labelled.corpus)
        await store.registry.register_version(version, version, encoder.dimension, status="indexing")
        await index_version(store, version, encoder.dimension, encoder, progress=progress)
        ranked: dict[str, dict[str, list[str]]] = {}
        for mode in modes:
            found = await rank_queries(
                Retriever(store.candidates, config.with_mode(mode)),
                version,
                encoder,
                labelled.queries,
                labelled.query_langs or {},
                progress=progress,
            )
            ranked[mode] = {q: [m.fact_check_id for m in matches] for q, matches in found.items()}
        report = curve = None
        if decisions is not None and decisions.model is not None:
            posts = LabelledPosts(dict(labelled.queries), dict(labelled.query_langs or {}), labelled.qrels)
            judged = await evaluate_decisions(
                Retriever(store.candidates, replace(config.with_mode(modes[0]), top_k=5)),
                version,
                encoder,
                posts,
                decisions,
                progress=progress,
            )
            report = open_set_report(judged, labelled.qrels)
            curve = precision_recall_curve(judged, labelled.qrels)
    return Evaluation({mode: retrieval_metrics(ranked[mode], labelled.qrels) for mode in modes}, report, curve)
