"""Refitting the active version's decision from the moderators' verdicts, gated on verdicts it never saw.

``factmatch recalibrate`` (the chart runs it on a schedule) does nothing until at least
``recalibrate_min_verdicts`` verdicts arrived since the active version's decision was fitted.
Then:

1. The verdicts' posts are split by a hash of the post id: ``recalibrate_heldout_share`` of them
   are held out (the same posts every run, so a post's verdicts are never on both sides).
2. The decision model and tier cuts are refitted on the others, as ``factmatch calibrate`` fits
   (a confirmation labels its post fully, rejections alone label only themselves).
3. Both decisions, the one in use and the refit, decide the held-out posts as a worker would; the
   verdicts on what each shows give its precision per tier group (match; match or suggestion).
   The refit is refused when it shows fewer than ``recalibrate_min_judged`` judged pairs in both
   groups, or when in a group it lowers the precision of the decision in use (both judged on at
   least that many) by more than ``recalibrate_margin``.
4. A refit that passes is stored like a calibration (the workers reload it); every refit and
   every refusal is recorded with its reason and held-out figures (``factmatch models refits``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from trainer.job import version_reranker
from worker.configs import calibration_config, encoder_loader
from worker.domain import Encoder, ModelVersion
from worker.retrieval.calibrate import Calibration, CalibrationConfig, LabelledPosts, encoded_chunks
from worker.retrieval.decision import Decisions
from worker.retrieval.rerank import Reranker
from worker.retrieval.retriever import Retriever
from worker.settings import Settings
from worker.storage import Store
from worker.storage.interfaces import CandidateSource
from worker.wire import Match

log = logging.getLogger(__name__)

GROUPS = (("match", frozenset({"match"})), ("match_or_suggestion", frozenset({"match", "suggestion"})))
SOURCE = "moderators' verdicts"


@dataclass(frozen=True)
class RefitOutcome:
    version: str | None
    outcome: Literal["refitted", "refused", "skipped"]
    reason: str
    verdicts: int = 0
    heldout: dict[str, Any] = field(default_factory=dict)


def held_out(post_id: str, share: float) -> bool:
    """Whether ``post_id``'s verdicts are held out: a stable hash, so every run agrees."""
    return int(hashlib.sha256(post_id.encode()).hexdigest()[:8], 16) / 2**32 < share


def latest_verdicts(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], bool]:
    """(post, fact-check) -> confirmed, the latest verdict winning (``rows`` oldest first)."""
    return {(str(r["post_id"]), str(r["fact_check_id"])): r["verdict"] == "confirm" for r in rows}


def judged(shown: Mapping[str, Sequence[Match]], verdicts: Mapping[tuple[str, str], bool]) -> dict[str, Any]:
    """Per tier group, the verdicts on what a decision shows: how many, and the share confirmed."""
    out: dict[str, Any] = {}
    for group, tiers in GROUPS:
        hits = [
            ok
            for (post, fc), ok in verdicts.items()
            if any(m.fact_check_id == fc and m.tier in tiers for m in shown.get(post, ()))
        ]
        out[group] = {"judged": len(hits), "precision": sum(hits) / len(hits) if hits else None}
    return out


def refit_gate(
    in_use: Mapping[str, Any], refit: Mapping[str, Any], *, min_judged: int, margin: float
) -> tuple[bool, str]:
    """Whether the refit may replace the decision in use, and why (figures from :func:`judged`)."""
    compared = []
    for group, _ in GROUPS:
        new, old = refit[group], in_use[group]
        if new["judged"] < min_judged:
            continue
        compared.append(f"{group} {new['precision']:.3f} on {new['judged']}")
        if old["judged"] >= min_judged and new["precision"] < old["precision"] - margin:
            return False, (
                f"{group} precision on held-out verdicts {new['precision']:.3f} ({new['judged']} judged) is below"
                f" the decision in use: {old['precision']:.3f} ({old['judged']} judged), margin {margin}"
            )
    if not compared:
        return False, f"the refit shows fewer than {min_judged} held-out judged pairs in every tier group"
    return True, "held-out verdicts: " + "; ".join(compared)


async def shown(
    retriever: Retriever, version: str, encoder: Encoder, posts: dict[str, str], decisions: Decisions
) -> dict[str, list[Match]]:
    """What a worker would publish for each post under ``decisions``."""
    out: dict[str, list[Match]] = {}
    for c in encoded_chunks(encoder, LabelledPosts(posts, {}, {}), desc="deciding held-out posts"):
        found = await retriever.search(version, encoder.dimension, c.queries, decisions)
        out.update((q, s.matches) for q, s in zip(c.ids, found, strict=True))
    return out


@dataclass(frozen=True)
class Refit:
    """A decision refitted from verdicts and judged against the one in use on held-out verdicts."""

    passed: bool
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)
    calibration: Calibration | None = None


async def refit_from_verdicts(
    candidates: CandidateSource,
    version: str,
    encoder: Encoder,
    in_use: Decisions,
    fitting: Sequence[Mapping[str, Any]],
    heldout: Sequence[Mapping[str, Any]],
    *,
    config: CalibrationConfig,
    min_judged: int,
    margin: float,
) -> Refit:
    """Steps 2 and 3: fit on ``fitting``'s verdicts, decide ``heldout``'s posts with both decisions
    (the refit keeps ``in_use``'s reranker), and gate. Stores nothing."""
    labelled = LabelledPosts({}, {}, {}).with_feedback(fitting)
    rows = await config.rows(candidates, version, encoder, labelled, reranker=in_use.reranker)
    try:
        calibration = config.fit(rows, labelled, {"source": SOURCE, "verdicts": len(fitting)})
    except ValueError as exc:
        return Refit(False, f"cannot refit: {exc}")
    serving = Retriever(candidates, config.retrieval)
    posts = {str(r["post_id"]): str(r["post_text"]) for r in heldout}
    verdicts = latest_verdicts(heldout)
    old = judged(await shown(serving, version, encoder, posts, in_use), verdicts)
    new = judged(await shown(serving, version, encoder, posts, calibration.decisions(in_use.reranker)), verdicts)
    figures = {"in_use": old, "refit": new, "posts": len(posts)}
    passed, reason = refit_gate(old, new, min_judged=min_judged, margin=margin)
    return Refit(passed, reason, figures, calibration)


async def recalibrate(store: Store, settings: Settings, *, force: bool = False) -> RefitOutcome:
    """Refit the active version's decision from the verdicts if enough arrived, gated; recorded."""
    active = await store.registry.active_version()
    if active is None:
        return RefitOutcome(None, "skipped", "no active version")
    rows = await store.feedback.feedback()
    since = await store.decisions.decision_fitted_at(active.version)
    fresh = sum(1 for r in rows if since is None or r["created_at"] > since)
    if fresh < settings.recalibrate_min_verdicts and not force:
        reason = f"{fresh} new verdicts since the decision was fitted, fewer than {settings.recalibrate_min_verdicts}"
        return RefitOutcome(active.version, "skipped", reason, fresh)
    share = settings.recalibrate_heldout_share
    fitting = [r for r in rows if not held_out(str(r["post_id"]), share)]
    heldout = [r for r in rows if held_out(str(r["post_id"]), share)]
    encoder = await asyncio.to_thread(encoder_loader(settings), active.path)
    reranker = await version_reranker(store, settings, active.version)
    outcome = await _refit(store, settings, active, encoder, reranker, fitting, heldout)
    await store.decisions.record_refit(active.version, outcome.outcome, outcome.reason, len(rows), outcome.heldout)
    log.info("recalibration of %s: %s (%s)", active.version, outcome.outcome, outcome.reason)
    return replace(outcome, verdicts=len(rows))


async def _refit(
    store: Store,
    settings: Settings,
    active: ModelVersion,
    encoder: Encoder,
    reranker: Reranker | None,
    fitting: Sequence[Mapping[str, Any]],
    heldout: Sequence[Mapping[str, Any]],
) -> RefitOutcome:
    stored = Decisions.from_stored(await store.decisions.stored_decision(active.version), active.version)
    refit = await refit_from_verdicts(
        store.candidates,
        active.version,
        encoder,
        replace(stored, reranker=reranker),
        fitting,
        heldout,
        config=calibration_config(settings),
        min_judged=settings.recalibrate_min_judged,
        margin=settings.recalibrate_margin,
    )
    if not refit.passed or refit.calibration is None:
        return RefitOutcome(active.version, "refused", refit.reason, heldout=refit.figures)
    calibration = refit.calibration
    # The verdicts label no claims: the version keeps the claim-cluster cut it was fitted with.
    previous = await store.decisions.decision_report(active.version) or {}
    report = {**calibration.report, "heldout_verdicts": refit.figures, "cluster_cut": previous.get("cluster_cut")}
    model = calibration.model
    if model.image_text is None and stored.model is not None and stored.model.image_text is not None:
        # Nor do they fit a model for text read in images: the version keeps the one it had (same
        # encoder, same features and probability scale), else read text would fall back to this one.
        model = replace(model, image_text=stored.model.image_text)
    await store.decisions.save_decision(
        active.version, model.to_dict(), calibration.thresholds, source=SOURCE, report=report
    )
    return RefitOutcome(active.version, "refitted", refit.reason, heldout=refit.figures)
