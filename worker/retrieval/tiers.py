"""Score thresholds that mean the same in every language: fitting them and applying them.

A cosine of 0.8 is a near-certain match for one model and language and noise for another
(multilingual-e5 scores everything above 0.75). So thresholds are fitted per model version
and per language on labelled (post, fact-check) pairs, at a target precision: the lowest
score whose matches at or above it are correct at least that often. Two tiers, as moderators
use them: "match" (high precision) and "suggestion" (lower precision, more recall). A
language with too few labelled pairs falls back to the version's all-language threshold.

A precision target alone says nothing about the posts that have no fact-check: a cut can keep
95% of its matches right and still show something for one such post in five. So a tier may
also have a false-alarm budget (:func:`within_budgets`): the share of posts with nothing to
find that may see anything in that tier or above. Its cut is fitted on those posts, open-set,
and the stricter of the two cuts wins.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from worker.domain import TIER_RANK, Threshold, Tier

__all__ = ["ALL_LANGUAGES", "Threshold", "Tier", "fit_thresholds", "tier_for", "within_budgets"]

ALL_LANGUAGES = "*"


def wilson_bounds(successes: int, n: int, z: float) -> tuple[float, float]:
    """The Wilson score interval of a share (``z`` standard errors each side; 0: the share itself)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    if z <= 0:
        return p, p
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n), (centre + spread) / (1 + z * z / n)


def fit_threshold(
    scored: Sequence[tuple[float, bool]], target: float, min_support: int = 20, z: float = 0.0
) -> tuple[float, float, float] | None:
    """(threshold, precision, recall) at the lowest score whose cut keeps precision >= target.

    ``scored`` holds (score, is_correct) for every candidate match; recall counts correct
    candidates kept. None when fewer than ``min_support`` candidates would clear the cut. With
    ``z`` > 0 it is the precision's lower Wilson bound that must reach the target, so a cut
    resting on few candidates is held higher: what holds on posts it was not fitted on.
    """
    if not scored:
        return None
    ordered = sorted(scored, key=lambda s: -s[0])
    total_correct = sum(1 for _, ok in ordered if ok)
    best: tuple[float, float, float] | None = None
    correct = 0
    for i, (score, ok) in enumerate(ordered, 1):
        correct += ok
        # Only cut between distinct scores: a threshold keeps every candidate at or above it.
        if i < len(ordered) and ordered[i][0] == score:
            continue
        precision = correct / i
        if wilson_bounds(correct, i, z)[0] >= target and i >= min_support:
            best = (score, precision, correct / total_correct if total_correct else 0.0)
    return best


def fit_thresholds(
    scored: Iterable[tuple[str | None, float, bool]],
    targets: Mapping[Tier, float],
    min_support: int = 20,
    z: float = 0.0,
) -> list[Threshold]:
    """Per-language and all-language thresholds for each tier, from (lang, score, is_correct)
    (``z``: see :func:`fit_threshold`)."""
    by_lang: dict[str, list[tuple[float, bool]]] = {}
    everything: list[tuple[float, bool]] = []
    for lang, score, ok in scored:
        by_lang.setdefault(normalise_lang(lang), []).append((score, ok))
        everything.append((score, ok))
    groups = {ALL_LANGUAGES: everything, **{k: v for k, v in by_lang.items() if k != ALL_LANGUAGES}}
    fitted: list[Threshold] = []
    for lang, items in groups.items():
        for tier, target in targets.items():
            found = fit_threshold(items, target, min_support, z)
            if found is not None:
                fitted.append(Threshold(lang, tier, found[0], target, found[1], found[2], len(items)))
    return fitted


def cuts_of(fitted: Iterable[Threshold]) -> dict[tuple[str, str], float]:
    """(lang, tier) -> cut: what :func:`tier_for` looks thresholds up in."""
    return {(t.lang, t.tier): t.threshold for t in fitted}


def normalise_lang(lang: str | None) -> str:
    return (lang or ALL_LANGUAGES).split("-")[0].lower() or ALL_LANGUAGES


def tier_for(score: float, lang: str | None, thresholds: Mapping[tuple[str, str], float]) -> Tier | None:
    """The tier of one match: its language's thresholds, else the all-language ones."""
    key = normalise_lang(lang)
    for tier in ("match", "suggestion"):
        cut = thresholds.get((key, tier), thresholds.get((ALL_LANGUAGES, tier)))
        if cut is not None and score >= cut:
            return tier  # type: ignore[return-value]
    return None


def precision_at(scored: Sequence[tuple[float, bool]], threshold: float) -> tuple[float, int]:
    kept = [ok for score, ok in scored if score >= threshold]
    return (sum(kept) / len(kept) if kept else 0.0), len(kept)


def false_alarm_cut(tops: Sequence[float], budget: float, z: float = 0.0) -> float | None:
    """The lowest cut at which at most ``budget`` of these posts show anything, from each post's
    best probability (``tops``: posts with nothing to find); None when no cut is needed. With
    ``z`` > 0 the upper Wilson bound of the share shown must stay within the budget."""
    allowed = math.floor(budget * len(tops) + 1e-9)
    while allowed > 0 and wilson_bounds(allowed, len(tops), z)[1] > budget:
        allowed -= 1
    if allowed >= len(tops):
        return None
    ordered = sorted(tops, reverse=True)
    # Strictly above the best of the posts that must not be shown anything (a cut keeps ties).
    return math.nextafter(ordered[allowed], math.inf)


def within_budgets(
    thresholds: Sequence[Threshold],
    scored: Iterable[tuple[str | None, float, bool]],
    unanswerable: Iterable[tuple[str | None, float]],
    budgets: Mapping[Tier, float],
    min_support: int = 20,
    z: float = 0.0,
) -> tuple[list[Threshold], list[dict[str, object]]]:
    """``thresholds`` raised where a false-alarm budget is stricter than the precision target.

    ``unanswerable`` holds (lang, best probability) of every labelled post with no fact-check
    (0 when nothing was found for it); ``scored`` the (lang, probability, correct) candidates
    the thresholds were fitted on, so a raised cut reports its own precision and recall. A
    budget bounds what is shown in its tier *and every tier above it*: the suggestion budget
    also holds the match cut. A language's cut uses that language's posts when it has at least
    ``min_support`` of them, else all posts (``z``: see :func:`false_alarm_cut`). Also returns one
    note per cut: what bound it.
    """
    negatives: dict[str, list[float]] = {ALL_LANGUAGES: []}
    for lang, top in unanswerable:
        negatives[ALL_LANGUAGES].append(top)
        if normalise_lang(lang) != ALL_LANGUAGES:
            negatives.setdefault(normalise_lang(lang), []).append(top)
    by_lang: dict[str, list[tuple[float, bool]]] = {ALL_LANGUAGES: []}
    for lang, score, ok in scored:
        by_lang[ALL_LANGUAGES].append((score, ok))
        if normalise_lang(lang) != ALL_LANGUAGES:
            by_lang.setdefault(normalise_lang(lang), []).append((score, ok))
    out: list[Threshold] = []
    notes: list[dict[str, object]] = []
    for t in thresholds:
        tops = negatives.get(t.lang, [])
        if len(tops) < min_support:
            tops = negatives[ALL_LANGUAGES]
        binding = [b for tier, b in budgets.items() if TIER_RANK[tier] >= TIER_RANK[t.tier]]
        cuts = [c for c in (false_alarm_cut(tops, b, z) for b in binding) if c is not None]
        budget_cut = max(cuts, default=None)
        note: dict[str, object] = {"lang": t.lang, "tier": t.tier, "precision_cut": t.threshold}
        note.update(budget_cut=budget_cut, negatives=len(tops), bound="precision")
        if budget_cut is not None and budget_cut > t.threshold:
            items = by_lang.get(t.lang, by_lang[ALL_LANGUAGES])
            precision, kept = precision_at(items, budget_cut)
            recall = precision * kept / max(1, sum(ok for _, ok in items))
            t = replace(t, threshold=budget_cut, fitted_precision=precision, fitted_recall=recall)
            note["bound"] = "false-alarm budget"
        out.append(t)
        notes.append(note)
    return out, notes
