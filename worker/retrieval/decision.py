"""The match probability: a small learned decision over what retrieval already knows.

Ranking is not deciding. A cosine of 0.8 is noise for multilingual-e5 and a near-certain match
for another model; a post with no fact-check still has a rank 1. So each model version carries
a decision model: for every candidate of a post it turns the retrievers' evidence (cosine, its
gap to the best and to the next candidate, both ranks, the lexical score, whether both
retrievers found it and whether both rank it first or lexical ranks it first, language
agreement, fused score, post length, its cosine's z-score among the post's candidates) into the
probability that this fact-check is right for this post, calibrated so that 0.9 is right nine
times in ten.

Why logistic regression with isotonic calibration (scikit-learn) and not gradient boosting:
the labelled sets are small (hundreds to a few thousand posts), the features are few and
mostly monotone in the right direction, and a linear model is stored as a dozen numbers in
JSON, applied with numpy alone in the worker, and read by a person; gradient boosting did not
rank better on CheckThat! 2020 dev, and where boosted trees separated posts with a fact-check
from posts without slightly better they lost more of it when the corpus grew after fitting
(docs/measurements.md, "Other decisions tried"), so there is no reason for an opaque model in
the registry. Isotonic regression on out-of-fold scores (grouped by post) gives the calibration
without a parametric assumption; scikit-learn is needed only to fit, never to serve.

Language agreement is a feature, but only where the fitting data has right answers across
languages; an English-only labelled set (every cross-lingual candidate in it wrong) would
otherwise teach the model to hold back every cross-lingual match.

Lexical evidence only exists between texts in the same language: for a candidate in another
language than the post (both known), its lexical features take the values its dense rank
implies (as in language-aware fusion, :mod:`worker.retrieval.modes`), so a cross-lingual fact-check
is neither helped nor punished by a lexical side that cannot see it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from worker.domain import StoredDecision
from worker.retrieval.modes import Candidate, FusionConfig, cross_lingual, effective_lexical_rank, hybrid_rrf
from worker.retrieval.rerank import Reranker
from worker.retrieval.tiers import Threshold, cuts_of

log = logging.getLogger(__name__)

FEATURES = (
    "cosine",
    "cosine_gap",
    "cosine_margin",
    "inv_dense_rank",
    "inv_lexical_rank",
    "lexical_bm25",
    "both_found",
    "same_language",
    "fused",
    "post_words",
    "cosine_z",
    "top_of_both",
    "top_lexical",
)
# The cross-encoder's logit, for versions trained with a reranker (worker/retrieval/rerank.py).
RERANK = "rerank"
Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class DecisionModel:
    """Standardise, weigh, squash, calibrate: everything a worker needs to apply the decision."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    # Isotonic calibration of the raw score: piecewise-linear through these points.
    calib_x: tuple[float, ...]
    calib_y: tuple[float, ...]
    # Stands in for a cross-lingual candidate's lexical score (the median where lexical found one).
    neutral_lexical: float
    fitted_on: dict[str, Any]
    # A cascade (a model that reads the reranker's score): ``screen`` decides every post without
    # it, and only a post whose most probable candidate's screened probability lies within
    # ``rerank_band`` is reranked and decided by this model. The screen also serves every post
    # where the reranker is off or missing. None: every post is reranked (fitted before cascades).
    screen: DecisionModel | None = None
    rerank_band: tuple[float, float] | None = None
    # Decides the text read in a post's images (OCR: its features sit lower than a typed post's
    # for the same right answer, docs/measurements.md), fitted on labelled posts read from
    # images, on the same features and probability scale. None: this model decides read text too.
    image_text: DecisionModel | None = None

    def raw(self, x: Array) -> Array:
        z = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        return np.asarray(z @ np.asarray(self.coef) + self.intercept, dtype=np.float64)

    def probability(self, raw: Array) -> Array:
        return np.asarray(np.interp(raw, self.calib_x, self.calib_y), dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | dict[str, Any]) -> DecisionModel:
        data = json.loads(text) if isinstance(text, str) else dict(text)
        for key in ("features", "mean", "scale", "coef", "calib_x", "calib_y"):
            data[key] = tuple(data[key])
        if data.get("screen") is not None:
            data["screen"] = cls.from_json(data["screen"])
            if data["screen"].uses_rerank or data["screen"].screen is not None:
                raise ValueError("a decision model's screen must decide without the reranker")
        if data.get("rerank_band") is not None:
            data["rerank_band"] = _band(data["rerank_band"])
        if data.get("image_text") is not None:
            data["image_text"] = cls.from_json(data["image_text"])
            if data["image_text"].uses_rerank or data["image_text"].screen or data["image_text"].image_text:
                raise ValueError("a decision model's model for text read from images must be a plain one")
        model = cls(**data)
        if model.features not in (FEATURES, (*FEATURES, RERANK)):
            raise ValueError(
                f"decision model has features {model.features}, this worker computes {FEATURES}:"
                " refit it for this release with `factmatch calibrate`"
            )
        return model

    @property
    def uses_rerank(self) -> bool:
        return RERANK in self.features

    def reranks(self, screened_top: float) -> bool:
        """Whether a post whose screened top probability is ``screened_top`` is reranked (a cascade)."""
        if self.rerank_band is None:
            return True
        low, high = self.rerank_band
        return low <= screened_top <= high


def _band(value: Sequence[float]) -> tuple[float, float]:
    low, high = (float(v) for v in value)
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"rerank band {value!r} is not a probability interval")
    return low, high


@dataclass(frozen=True)
class Decisions:
    """What a version decides with: its decision model and the per-language probability cuts of its tiers."""

    model: DecisionModel | None = None
    # (lang or "*", tier) -> probability cut; empty when the version was never calibrated.
    thresholds: Mapping[tuple[str, str], float] = field(default_factory=dict)
    # The version's cross-encoder, when it has one and reranking is on.
    reranker: Reranker | None = field(default=None, compare=False)
    # Its claim-cluster cut, fitted with the decision (worker/retrieval/cluster_cut.py); None: not fitted.
    cluster_cut: float | None = None

    @cached_property
    def fingerprint(self) -> str:
        """A digest of what it decides with (its model, cuts and whether it reranks): the share of a
        reused answer's key that a refit changes."""
        data = {
            "model": self.model.to_dict() if self.model else None,
            "cuts": sorted([lang, tier, cut] for (lang, tier), cut in self.thresholds.items()),
            "rerank": self.reranker is not None,
            "cluster_cut": self.cluster_cut,
        }
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @classmethod
    def from_stored(cls, stored: StoredDecision | None, version: str = "") -> Decisions:
        """What a worker decides with, from what the store keeps (empty when never calibrated).

        A model fitted by an earlier release on features this one no longer computes would be
        miscalibrated: the version then serves ranked matches without tiers (as if never
        calibrated) until `factmatch calibrate` refits it.
        """
        if stored is None:
            return cls()
        try:
            model = DecisionModel.from_json(stored.model)
        except ValueError as exc:
            log.error("decision model of version %s cannot be used: %s; serving it without tiers", version, exc)
            return cls()
        return cls(model, dict(stored.cuts), cluster_cut=fitted_cluster_cut(stored.report))

    @classmethod
    def read(cls, path: Path) -> Decisions:
        """From a file written by :meth:`write` (how the default model's decision model ships)."""
        model, thresholds, report = read_decision_file(path)
        return cls(model, cuts_of(thresholds), cluster_cut=fitted_cluster_cut(report.get("fit", {})))

    @staticmethod
    def write(path: Path, model: DecisionModel, thresholds: Sequence[Threshold], report: dict[str, Any]) -> Path:
        data = {"model": asdict(model), "thresholds": [asdict(t) for t in thresholds], "report": report}
        path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        return path


def fitted_cluster_cut(report: Mapping[str, Any]) -> float | None:
    """The claim-cluster cut a calibration report carries (None when it fitted none)."""
    found = report.get("cluster_cut")
    return float(found["cut"]) if isinstance(found, Mapping) and found.get("cut") is not None else None


def read_decision_file(path: Path) -> tuple[DecisionModel, list[Threshold], dict[str, Any]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    thresholds = [Threshold(**t) for t in data.get("thresholds", [])]
    return DecisionModel.from_json(data["model"]), thresholds, dict(data.get("report", {}))


def features(
    candidates: Sequence[Candidate],
    fusion: FusionConfig,
    post_text: str,
    post_lang: str | None,
    neutral_lexical: float = 0.0,
    rerank: Sequence[float] | None = None,
) -> Array:
    """One row of :data:`FEATURES` (and the rerank logit, when given) per candidate of one post
    (the whole candidate list is context)."""
    if not candidates:
        return np.zeros((0, len(FEATURES) + (rerank is not None)))
    cos = np.array([c.dense_score for c in candidates], dtype=np.float64)
    best = float(cos.max())
    order = np.sort(cos)[::-1]
    second = float(order[1]) if len(order) > 1 else best - 1.0
    words = math.log1p(len(post_text.split()))
    spread = float(cos.std()) or 1.0
    mean = float(cos.mean())
    rows = []
    for c, score in zip(candidates, cos, strict=True):
        crossed = cross_lingual(post_lang, c.lang)
        lexical_rank = effective_lexical_rank(c, post_lang)
        lexical_score = neutral_lexical if crossed and c.dense_rank else (c.lexical_score or 0.0)
        other_best = second if score == best else best
        rows.append(
            (
                score,
                score - best,
                score - other_best,
                1.0 / c.dense_rank if c.dense_rank else 0.0,
                1.0 / lexical_rank if lexical_rank else 0.0,
                lexical_score,
                float(bool(c.dense_rank) and bool(lexical_rank)),
                _same_language(post_lang, c.lang),
                hybrid_rrf(c, fusion, post_lang) * (fusion.rrf_k + 1),
                words,
                (score - mean) / spread,
                float(c.dense_rank == 1 and lexical_rank == 1),
                float(lexical_rank == 1),
            )
        )
    x = np.asarray(rows, dtype=np.float64)
    if rerank is not None:
        x = np.column_stack([x, np.asarray(rerank, dtype=np.float64)])
    return x


def _same_language(a: str | None, b: str | None) -> float:
    if not a or not b:
        return 0.5
    return 0.0 if cross_lingual(a, b) else 1.0


@dataclass(frozen=True)
class LabelledRow:
    post: str
    lang: str | None
    features: tuple[float, ...]
    correct: bool


def _learnable(x: Array, y: npt.NDArray[np.int64]) -> tuple[Array, list[str]]:
    """The features with what the rows cannot teach made constant (a constant weighs 0), and their names."""
    lang = FEATURES.index("same_language")
    if (x[y == 1, lang] < 1).any():
        return x, []
    # No right answer across languages: every cross-lingual candidate seen was wrong only
    # because the set has no cross-lingual posts, and fitting that would hold every
    # cross-lingual match back. Language agreement is learned from labelled cross-lingual
    # pairs (moderator verdicts, a multilingual set) or not at all.
    x = x.copy()
    x[:, lang] = 1.0
    return x, ["same_language"]


def fit_decision(
    rows: Sequence[LabelledRow], *, folds: int = 5, seed: int = 0, fitted_on: dict[str, Any] | None = None
) -> tuple[DecisionModel, Array]:
    """A calibrated decision model and the out-of-fold probability of every row (for fitting tiers).

    Folds are grouped by post, so a post's candidates never calibrate their own score.
    """
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold

    x = np.asarray([r.features for r in rows], dtype=np.float64)
    names = FEATURES if x.shape[1] == len(FEATURES) else (*FEATURES, RERANK)
    y = np.asarray([r.correct for r in rows], dtype=np.int64)
    groups = np.asarray([r.post for r in rows])
    if y.sum() < 2 or y.sum() == len(y):
        raise ValueError("the decision model needs both right and wrong candidates (label some posts)")
    x, unlearnable = _learnable(x, y)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0  # a constant feature (one language only, say) gets weight 0, not NaN
    z = (x - mean) / scale

    def model() -> LogisticRegression:
        return LogisticRegression(C=1.0, max_iter=1000)

    oof_raw = np.zeros(len(y))
    n_folds = min(folds, len(set(groups)))
    for train, held in GroupKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(z, y, groups):
        part = model().fit(z[train], y[train])
        oof_raw[held] = part.decision_function(z[held])
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(oof_raw, y)
    final = model().fit(z, y)
    lexical_found = x[:, FEATURES.index("inv_lexical_rank")] > 0
    neutral = float(np.median(x[lexical_found, FEATURES.index("lexical_bm25")])) if lexical_found.any() else 0.0
    decision = DecisionModel(
        features=names,
        mean=tuple(float(v) for v in mean),
        scale=tuple(float(v) for v in scale),
        coef=tuple(float(v) for v in final.coef_[0]),
        intercept=float(final.intercept_[0]),
        calib_x=tuple(float(v) for v in iso.X_thresholds_),
        calib_y=tuple(float(v) for v in iso.y_thresholds_),
        neutral_lexical=neutral,
        fitted_on={
            "rows": len(y),
            "posts": len(set(groups)),
            "positives": int(y.sum()),
            "unlearnable": unlearnable,
            **(fitted_on or {}),
        },
    )
    return decision, decision.probability(oof_raw)


def fit_cascade(
    rows: Sequence[LabelledRow], band: tuple[float, float], *, seed: int = 0, fitted_on: dict[str, Any] | None = None
) -> tuple[DecisionModel, Array]:
    """A cascade fitted on rows that carry the reranker's score: the screen (the same fit without
    it), this model over it, and the out-of-fold probability the cascade gives each row: the
    reranked model's for posts whose screened top probability lies within ``band``, the
    screen's for the rest (what the tier cuts are fitted on)."""
    if not rows or len(rows[0].features) != len(FEATURES) + 1:
        raise ValueError("a cascade is fitted on rows with the reranker's score")
    band = _band(band)
    plain = [replace(r, features=r.features[: len(FEATURES)]) for r in rows]
    screen, screened = fit_decision(plain, folds=5, seed=seed, fitted_on=fitted_on)
    model, reranked = fit_decision(rows, folds=5, seed=seed, fitted_on=fitted_on)
    top: dict[str, float] = {}
    for r, p in zip(rows, screened, strict=True):
        top[r.post] = max(top.get(r.post, 0.0), float(p))
    cascade = replace(model, screen=screen, rerank_band=band)
    chosen = np.asarray([cascade.reranks(top[r.post]) for r in rows])
    share = sum(cascade.reranks(p) for p in top.values()) / max(1, len(top))
    cascade = replace(cascade, fitted_on={**cascade.fitted_on, "reranked_posts": round(share, 4)})
    return cascade, np.where(chosen, reranked, screened)
