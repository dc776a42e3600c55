"""Open-set evaluation: how a version decides on a stream where most posts have no fact-check.

Ranking metrics only look at posts that have an answer. A moderator also sees the posts
that have none, so the figures here count both: per tier, the precision of the published
matches in it, the recall over posts that have a fact-check, and the false-alarm rate (posts
with no fact-check that still got a match in the tier); the AUROC of the rank-1 probability
at telling the two kinds of post apart; and a precision/recall curve per version.

An open-set split can be made from any labelled set: a share of its posts lose their gold
fact-checks from the corpus (unless a kept post needs them), which turns them into posts
with nothing to find, exactly as on a live stream.

A fact-check published twice (the same title and claim up to quote marks and spacing, as
many CheckThat! 2020 golds are: docs/measurements.md) is one answer: labelled sets name one copy,
so before a split or a fit the gold set is widened to its twins (:func:`with_twins`). Without
that, a post whose gold left the corpus still finds the gold's twin and is counted as a false
alarm, and a post ranking the twin first is counted wrong; fitted on such labels the decision
model never found a "match" cut at 0.95 precision.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.domain import TWIN_QUOTES, TWIN_SPACES

TIERS = ("match", "suggestion")
# The same patterns as the storage layer's SQL (worker/storage/corpus.py).
_QUOTES, _SPACES = re.compile(TWIN_QUOTES), re.compile(TWIN_SPACES)

if TYPE_CHECKING:
    from worker.wire import FactCheck


def fmt(value: float | None, digits: int = 3) -> str:
    """A report figure for people: "-" where it is undefined (nothing shown, one class only)."""
    return "-" if value is None else f"{value:.{digits}f}"


def twin_text(text: str | None) -> str:
    return _SPACES.sub(" ", _QUOTES.sub("", text or "")).strip(" ")


def twin_key(title: str | None, claim: str) -> str:
    """Equal for two copies of one fact-check (quote marks dropped, spacing collapsed)."""
    return f"{twin_text(title)}\n{twin_text(claim)}"


def twin_groups(fact_checks: Iterable[FactCheck]) -> dict[str, set[str]]:
    """Every fact-check that has copies, with its copies (itself included)."""
    groups: dict[str, set[str]] = {}
    for fc in fact_checks:
        groups.setdefault(twin_key(fc.title, fc.claim), set()).add(fc.id)
    return {fc: ids for ids in groups.values() if len(ids) > 1 for fc in ids}


def with_twins(qrels: Mapping[str, set[str]], twins: Mapping[str, set[str]]) -> dict[str, set[str]]:
    """The gold sets widened to every copy of each gold."""
    return {q: set().union(*(twins.get(fc, {fc}) for fc in golds)) for q, golds in qrels.items()}


@dataclass(frozen=True)
class OpenSetSplit:
    qrels: dict[str, set[str]]
    removed: frozenset[str]
    unanswerable: frozenset[str]


def open_set_split(
    queries: Sequence[str],
    qrels: Mapping[str, set[str]],
    share: float,
    seed: int,
    twins: Mapping[str, set[str]] | None = None,
) -> OpenSetSplit:
    """Remove the gold fact-checks of ``share`` of the answerable posts (seeded), unless a kept post needs them.

    With ``twins`` (:func:`twin_groups`, or the store's ``fact_check_twins``), every copy of a
    gold is gold and leaves with it.
    """
    if not 0 <= share < 1:
        raise ValueError("the holdout share must be in [0, 1)")
    if twins:
        qrels = with_twins(qrels, twins)
    answerable = sorted(q for q in queries if qrels.get(q))
    chosen = set(random.Random(seed).sample(answerable, round(share * len(answerable))))
    needed = {fc for q in answerable if q not in chosen for fc in qrels[q]}
    removed = frozenset(fc for q in chosen for fc in qrels[q] if fc not in needed)
    kept = {q: {fc for fc in qrels.get(q, set()) if fc not in removed} for q in queries}
    return OpenSetSplit(
        {q: golds for q, golds in kept.items() if golds},
        removed,
        frozenset(q for q in queries if not kept.get(q)),
    )


@dataclass(frozen=True)
class Published:
    """One published match of one post, judged."""

    probability: float | None
    tier: str | None
    correct: bool
    # Which fact-check (kept where two lists of one post's matches are merged).
    fact_check_id: str | None = None


def auroc(positives: Sequence[float], negatives: Sequence[float]) -> float | None:
    """Probability that a random positive outscores a random negative (ties count half); None when undefined."""
    if not positives or not negatives:
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score([1] * len(positives) + [0] * len(negatives), [*positives, *negatives]))


def open_set_report(outcomes: Mapping[str, Sequence[Published]], qrels: Mapping[str, set[str]]) -> dict[str, Any]:
    """Per-tier precision, recall and false alarms, and the rank-1 AUROC, over every post."""
    answerable = [q for q in outcomes if qrels.get(q)]
    unanswerable = [q for q in outcomes if not qrels.get(q)]
    report: dict[str, Any] = {"posts": len(outcomes), "answerable": len(answerable), "unanswerable": len(unanswerable)}
    for name, tiers in (("match", {"match"}), ("match_or_suggestion", {"match", "suggestion"})):
        shown = [m for ms in outcomes.values() for m in ms if m.tier in tiers]
        report[name] = {
            # None, not NaN, when nothing was shown: the report is stored as JSON.
            "precision": sum(m.correct for m in shown) / len(shown) if shown else None,
            "recall": sum(any(m.correct and m.tier in tiers for m in outcomes[q]) for q in answerable)
            / max(1, len(answerable)),
            "false_alarm": sum(any(m.tier in tiers for m in outcomes[q]) for q in unanswerable)
            / max(1, len(unanswerable)),
            "shown": len(shown),
        }

    def top(q: str) -> float:
        ms = outcomes[q]
        return ms[0].probability if ms and ms[0].probability is not None else 0.0

    report["auroc"] = auroc([top(q) for q in answerable], [top(q) for q in unanswerable])
    report["rank1_correct_share"] = sum(bool(outcomes[q]) and outcomes[q][0].correct for q in answerable) / max(
        1, len(answerable)
    )
    return report


def precision_recall_curve(
    outcomes: Mapping[str, Sequence[Published]], qrels: Mapping[str, set[str]]
) -> list[tuple[float, float, float, float]]:
    """(probability cut, precision of rank-1 matches kept, recall over answerable posts, false alarms)."""
    answerable = sum(1 for q in outcomes if qrels.get(q))
    unanswerable = len(outcomes) - answerable
    firsts = sorted(
        ((ms[0].probability or 0.0, ms[0].correct, bool(qrels.get(q))) for q, ms in outcomes.items() if ms),
        key=lambda t: -t[0],
    )
    points, right, alarms = [], 0, 0
    for i, (prob, ok, has_answer) in enumerate(firsts, 1):
        right += ok
        alarms += not has_answer
        points.append((prob, right / i, right / max(1, answerable), alarms / max(1, unanswerable)))
    return points


def plot_precision_recall(curves: Mapping[str, Sequence[tuple[float, float, float, float]]], path: Path) -> Path:
    """One precision/recall curve per version (rank-1 matches, cut on the probability)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for label, points in curves.items():
        ax.plot([p[2] for p in points], [p[1] for p in points], label=label)
    ax.set_xlabel("recall (posts with a fact-check)")
    ax.set_ylabel("precision (rank-1 match)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    ax.set_title("Open-set precision/recall of the match probability")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
