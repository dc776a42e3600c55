"""Fitting a version's decision: its match probability and the per-language tier cuts on it.

One function for ``factmatch calibrate`` and for the trainer's promotion. Labelled posts
(posts with no relevant fact-check included: they teach what "nothing to find" looks like)
and the moderators' verdicts are ranked with the serving retriever; every pooled candidate
becomes a row of decision features labelled right or wrong; the decision model is fitted
(:mod:`worker.retrieval.decision`) and its out-of-fold probabilities give the tier cuts at the
target precisions; model, cuts and a cross-validated open-set report are stored with the
version in one transaction, which NOTIFYs the workers to reload them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from worker.domain import Encoder
from worker.retrieval.claims import claim_text
from worker.retrieval.cluster_cut import cluster_cut_of
from worker.retrieval.decision import (
    FEATURES,
    DecisionModel,
    Decisions,
    LabelledRow,
    fit_cascade,
    fit_decision,
    fitted_cluster_cut,
)
from worker.retrieval.openset import Published, open_set_report, precision_recall_curve
from worker.retrieval.rerank import Reranker
from worker.retrieval.retriever import Query, RetrievalConfig, Retriever, Scored, queries_of
from worker.retrieval.tiers import Threshold, Tier, cuts_of, fit_thresholds, tier_for, within_budgets
from worker.storage.interfaces import CandidateSource, DecisionStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelledPosts:
    """Posts with what is known of their fact-checks.

    A post in ``qrels`` has those right answers (every other candidate is wrong); a post in
    neither map has none in the corpus (every candidate is wrong); a post in ``judged`` only
    has verdicts on those candidates (a moderator's rejections): only they are labelled.
    """

    queries: dict[str, str]
    langs: dict[str, str | None]
    qrels: dict[str, set[str]]
    judged: dict[str, set[str]] = field(default_factory=dict)
    exclude: frozenset[str] = frozenset()

    def with_feedback(self, rows: Sequence[Mapping[str, Any]]) -> LabelledPosts:
        """Moderator verdicts as labelled posts: confirmations are right answers, rejections wrong
        ones; a post given "none of these" (and confirmed on nothing) has nothing to find."""
        queries, langs = dict(self.queries), dict(self.langs)
        qrels = {q: set(v) for q, v in self.qrels.items()}
        judged = {q: set(v) for q, v in self.judged.items()}
        nothing: set[str] = set()
        for row in rows:
            key = f"feedback:{row['post_id']}"
            queries[key] = str(row["post_text"])
            langs.setdefault(key, None)
            if row["verdict"] == "confirm":
                qrels.setdefault(key, set()).add(str(row["fact_check_id"]))
            judged.setdefault(key, set()).add(str(row["fact_check_id"]))
            if row.get("none_of_these"):
                nothing.add(key)
        # A post with a confirmation is fully labelled, and so is one given "none of these" (every
        # candidate wrong: the open-set negative); rejections alone label only themselves.
        judged = {q: ids for q, ids in judged.items() if q not in qrels and q not in nothing}
        return replace(self, queries=queries, langs=langs, qrels=qrels, judged=judged)


@dataclass(frozen=True)
class Chunk:
    """A slice of labelled posts, encoded: what one retriever call takes."""

    ids: list[str]
    queries: list[Query]


def encoded_chunks(
    encoder: Encoder, labelled: LabelledPosts, *, chunk: int = 64, desc: str = "ranking posts", progress: bool = False
) -> Iterator[Chunk]:
    """The posts in chunks, each encoded as the worker encodes them, with a progress bar."""
    from tqdm.auto import tqdm

    ids = list(labelled.queries)
    with tqdm(total=len(ids), desc=desc, unit="post", disable=not progress) as bar:
        for start in range(0, len(ids), chunk):
            part = ids[start : start + chunk]
            texts = [claim_text(labelled.queries[q]) for q in part]
            vectors = np.asarray(encoder.encode_queries(texts))
            yield Chunk(part, queries_of(texts, [labelled.langs.get(q) for q in part], vectors))
            bar.update(len(part))


async def collect_pools(
    retriever: Retriever,
    version: str,
    encoder: Encoder,
    labelled: LabelledPosts,
    *,
    decisions: Decisions | None = None,
    featurize: bool = False,
    progress: bool = False,
) -> dict[str, list[Scored]]:
    """Every post's pool as the worker would build it (fact-checks in ``labelled.exclude`` left out)."""
    pools: dict[str, list[Scored]] = {}
    for c in encoded_chunks(encoder, labelled, progress=progress):
        found = await retriever.pools(
            version, encoder.dimension, c.queries, decisions, exclude=labelled.exclude, featurize=featurize
        )
        pools.update(zip(c.ids, found, strict=True))
    return pools


def decision_rows(pools: Mapping[str, Sequence[Scored]], labelled: LabelledPosts) -> list[LabelledRow]:
    rows = []
    for q, pool in pools.items():
        gold = labelled.qrels.get(q, set())
        only = labelled.judged.get(q)
        for s in pool:
            fc = s.candidate.fact_check_id
            if s.features is None or (only is not None and fc not in only):
                continue
            rows.append(LabelledRow(q, labelled.langs.get(q), s.features, fc in gold))
    return rows


@dataclass(frozen=True)
class Calibration:
    model: DecisionModel
    thresholds: list[Threshold]
    report: dict[str, Any]

    def decisions(self, reranker: Reranker | None = None) -> Decisions:
        """What a worker decides with, from this fit."""
        return Decisions(self.model, cuts_of(self.thresholds), reranker, fitted_cluster_cut(self.report))


@dataclass(frozen=True)
class CalibrationConfig:
    """How a version's decision is fitted: the serving retrieval, the tiers' targets, the support."""

    retrieval: RetrievalConfig
    targets: Mapping[Tier, float]
    min_support: int = 20
    # Per tier, the most posts with no fact-check that may see anything in it or above (open-set).
    false_alarm_budgets: Mapping[Tier, float] = field(default_factory=dict)
    # Standard errors a cut's precision (and false alarms) must clear its target by (0: none).
    z: float = 0.0
    # With a reranker: the screened top probabilities whose posts are reranked (a cascade).
    rerank_band: tuple[float, float] = (0.0, 1.0)

    def fit(self, rows: Sequence[LabelledRow], labelled: LabelledPosts, fitted_on: dict[str, Any]) -> Calibration:
        """:func:`fit_calibration` with this config's targets, budgets and support (nothing stored)."""
        return fit_calibration(
            rows,
            labelled,
            self.targets,
            top_k=self.retrieval.top_k,
            min_support=self.min_support,
            fitted_on=fitted_on,
            false_alarm_budgets=self.false_alarm_budgets,
            z=self.z,
            rerank_band=self.rerank_band,
        )

    async def rows(
        self,
        candidates: CandidateSource,
        version: str,
        encoder: Encoder,
        labelled: LabelledPosts,
        *,
        reranker: Reranker | None = None,
        progress: bool = False,
    ) -> list[LabelledRow]:
        """Every labelled post's pool scored as the worker scores it, whatever floor serving applies."""
        retriever = Retriever(candidates, replace(self.retrieval, min_score=-1.0))
        pools = await collect_pools(
            retriever,
            version,
            encoder,
            labelled,
            decisions=Decisions(reranker=reranker),
            featurize=True,
            progress=progress,
        )
        return decision_rows(pools, labelled)


def fit_calibration(
    rows: Sequence[LabelledRow],
    labelled: LabelledPosts,
    targets: Mapping[Tier, float],
    *,
    top_k: int,
    min_support: int,
    fitted_on: dict[str, Any] | None = None,
    false_alarm_budgets: Mapping[Tier, float] | None = None,
    z: float = 0.0,
    rerank_band: tuple[float, float] = (0.0, 1.0),
) -> Calibration:
    """Decision model, tier cuts on its out-of-fold probabilities, and the cross-validated open-set report.

    Each tier's cut keeps its precision target and, where one is given, its false-alarm budget
    over the labelled posts that have no fact-check (the stricter cut wins; the report's
    ``cuts`` says which bound each). Rows that carry the reranker's score fit a cascade
    (:func:`fit_cascade`: only posts within ``rerank_band`` are reranked), cut on what it gives."""
    reranked = bool(rows) and len(rows[0].features) > len(FEATURES)
    if reranked:
        model, oof = fit_cascade(rows, rerank_band, fitted_on=fitted_on)
    else:
        model, oof = fit_decision(rows, fitted_on=fitted_on)
    scored = [(r.lang, float(p), r.correct) for r, p in zip(rows, oof, strict=True)]
    thresholds = fit_thresholds(scored, targets, min_support, z)
    by_post: dict[str, list[tuple[float, LabelledRow]]] = {}
    for r, p in zip(rows, oof, strict=True):
        by_post.setdefault(r.post, []).append((float(p), r))
    nothing_to_find = [
        (labelled.langs.get(q), max((p for p, _ in by_post.get(q, [])), default=0.0))
        for q in labelled.queries
        if not labelled.qrels.get(q) and q not in labelled.judged
    ]
    thresholds, bounds = within_budgets(thresholds, scored, nothing_to_find, false_alarm_budgets or {}, min_support, z)
    cuts = cuts_of(thresholds)
    outcomes = {}
    for q, pool in by_post.items():
        if q in labelled.judged:
            continue  # partly labelled: cannot say what was missed
        pool.sort(key=lambda pr: -pr[0])
        outcomes[q] = [Published(p, tier_for(p, r.lang, cuts), r.correct) for p, r in pool[:top_k]]
    # Posts whose pool was empty still count (as posts nothing was shown for).
    for q in labelled.queries:
        if q not in outcomes and q not in labelled.judged:
            outcomes[q] = []
    report = open_set_report(outcomes, labelled.qrels)
    report["kind"] = "cross-validated on the calibration set"
    report["false_alarm_budgets"] = dict(false_alarm_budgets or {})
    report["cuts"] = bounds
    # The precision/recall curve of the rank-1 probability, thinned: what the console plots.
    curve = precision_recall_curve(outcomes, labelled.qrels)
    report["curve"] = [[round(v, 4) for v in point] for point in curve[:: max(1, len(curve) // 200)]]
    return Calibration(model, thresholds, report)


async def calibrate_version(
    candidates: CandidateSource,
    decisions: DecisionStore,
    config: CalibrationConfig,
    version: str,
    encoder: Encoder,
    labelled: LabelledPosts,
    *,
    source: str,
    reranker: Reranker | None = None,
    read: Mapping[str, str] | None = None,
    progress: bool = False,
) -> Calibration:
    """Fit and store ``version``'s decision model and tier cuts at the target precisions.

    With ``reranker`` (reranking on), the version's cross-encoder score becomes one of the
    decision's features. Moderators' verdicts are the caller's to add (:meth:`LabelledPosts.with_feedback`).
    With ``read`` (post id -> the text OCR read in the post rendered as a meme:
    :func:`worker.images.memes.read_as_memes`), a model for text read in images is fitted on it
    too, with the same labels (``DecisionModel.image_text``; never reranked); a fit that fails
    leaves the version without one (its read text is then decided by the typed model), logged.
    """
    rows = await config.rows(candidates, version, encoder, labelled, reranker=reranker, progress=progress)
    fitted_on = {"source": source, "mode": config.retrieval.fusion.mode, "excluded_fact_checks": len(labelled.exclude)}
    calibration = config.fit(rows, labelled, fitted_on)
    if read is not None:
        calibration = await _with_read_text(
            calibration, config, candidates, version, encoder, labelled, read, fitted_on
        )
    # The version's claim-cluster cut, from the same labelled posts (posts with a fact-check).
    cut = await asyncio.to_thread(cluster_cut_of, encoder, labelled.queries, labelled.qrels)
    calibration.report["cluster_cut"] = cut.as_dict() if cut else None
    await decisions.save_decision(
        version, calibration.model.to_dict(), calibration.thresholds, source=source, report=calibration.report
    )
    return calibration


async def _with_read_text(
    calibration: Calibration,
    config: CalibrationConfig,
    candidates: CandidateSource,
    version: str,
    encoder: Encoder,
    labelled: LabelledPosts,
    read: Mapping[str, str],
    fitted_on: dict[str, Any],
) -> Calibration:
    """``calibration`` with a model for read text fitted on ``read`` (see :func:`calibrate_version`)."""
    as_read = LabelledPosts(
        {q: t for q, t in read.items() if q in labelled.queries and t.strip()},
        {},
        labelled.qrels,
        {q: ids for q, ids in labelled.judged.items() if read.get(q, "").strip()},
        labelled.exclude,
    )
    rows = await config.rows(candidates, version, encoder, as_read)
    try:
        for_read = config.fit(rows, as_read, {**fitted_on, "read_from": "the posts rendered as memes"})
    except ValueError as exc:
        log.warning("no model for text read in images: %s", exc)
        calibration.report["image_text"] = {"fitted": False, "reason": str(exc)}
        return calibration
    calibration.report["image_text"] = {"fitted": True, "posts": len(as_read.queries), "report": for_read.report}
    return replace(calibration, model=replace(calibration.model, image_text=for_read.model))


async def evaluate_decisions(
    retriever: Retriever,
    version: str,
    encoder: Encoder,
    labelled: LabelledPosts,
    decisions: Decisions,
    *,
    progress: bool = False,
) -> dict[str, list[Published]]:
    """What the worker would publish for each post (untiered matches kept, so rankings stay measurable)."""
    config = replace(retriever.config, publish_untiered=True, min_score=-1.0)
    judge = Retriever(retriever.source, config)
    out: dict[str, list[Published]] = {}
    for c in encoded_chunks(encoder, labelled, desc="deciding", progress=progress):
        found = await judge.search(version, encoder.dimension, c.queries, decisions, exclude=labelled.exclude)
        for q, searched in zip(c.ids, found, strict=True):
            gold = labelled.qrels.get(q, set())
            out[q] = [
                Published(m.probability, m.tier, m.fact_check_id in gold, m.fact_check_id) for m in searched.matches
            ]
    return out
