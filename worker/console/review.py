"""What a moderator's verdict becomes, and how an item is shown: pure logic, no web, no SQL.

Every verdict is one :class:`~worker.wire.Feedback` record, the wire model the trainer already
reads, so a console verdict and a ``factmatch feedback`` command teach the trainer alike.
"None of these" is a rejection of every match the item showed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from worker.domain import ReviewItem, VerdictKind
from worker.wire import Feedback

_WORD = re.compile(r"\w+", re.UNICODE)


class BadVerdict(ValueError):
    """The request named a verdict or a fact-check the item does not have."""


@dataclass(frozen=True)
class Segment:
    """A piece of a post's text; ``shared`` when it is a term the post shares with a fact-check."""

    text: str
    shared: bool = False


def feedback_records(
    item: ReviewItem, choice: str, fact_check_id: str | None, *, moderator: str, note: str | None
) -> list[tuple[str, VerdictKind, dict[str, Any]]]:
    """``(fact_check_id, verdict, Feedback as JSON)`` for a moderator's choice on ``item``.

    ``choice`` is ``confirm`` or ``reject`` (of ``fact_check_id``) or ``none`` (every match rejected).
    """
    shown = [str(m["fact_check_id"]) for m in item.matches]
    if choice == "none":
        targets: list[tuple[str, VerdictKind]] = [(fc, "reject") for fc in shown]
    elif choice in ("confirm", "reject"):
        if fact_check_id not in shown:
            raise BadVerdict(f"post {item.post_id} showed no fact-check {fact_check_id!r}")
        targets = [(str(fact_check_id), "confirm" if choice == "confirm" else "reject")]
    else:
        raise BadVerdict(f"unknown verdict {choice!r}: confirm, reject or none")
    if not targets:
        raise BadVerdict(f"post {item.post_id} showed no fact-check")
    # A post of images alone is learned from by the text read in its images.
    text = item.text or " ".join(str(i.get("text") or "") for i in item.result.get("images") or []).strip()
    if not text.strip():
        raise BadVerdict(
            f"post {item.post_id} has no text to learn from: none came with it (the worker's"
            " result_text_max_chars is 0) and none was read in its images"
        )
    note = (note or "").strip()[:2000] or None
    return [
        (
            fc,
            verdict,
            Feedback(
                post_id=item.post_id,
                post_text=text,
                fact_check_id=fc,
                verdict=verdict,
                moderator=moderator,
                model_version=item.model_version,
                note=note,
                none_of_these=choice == "none",
            ).model_dump(mode="json"),
        )
        for fc, verdict in targets
    ]


def cluster_feedback(
    items: list[ReviewItem], choice: str, fact_check_id: str | None, *, moderator: str, note: str | None
) -> dict[str, list[tuple[str, VerdictKind, dict[str, Any]]]]:
    """Each post's records for a choice given to a cluster's posts (as :func:`feedback_records` for one).

    ``confirm``/``reject`` of a fact-check applies to the posts that showed it (the others keep
    their items); ``none`` rejects what each post showed. :class:`BadVerdict` when no post showed it.
    """
    chosen = [i for i in items if choice == "none" or fact_check_id in {str(m["fact_check_id"]) for m in i.matches}]
    if not chosen:
        raise BadVerdict(f"none of these posts showed fact-check {fact_check_id!r}")
    return {i.post_id: feedback_records(i, choice, fact_check_id, moderator=moderator, note=note) for i in chosen}


@dataclass(frozen=True)
class ClusterMatch:
    """A fact-check shown for some of a cluster's posts: its best showing, and for how many posts."""

    match: dict[str, Any]
    posts: int


def cluster_matches(items: list[ReviewItem]) -> list[ClusterMatch]:
    """Every fact-check the posts showed, the one shown for most posts first (then the surer)."""
    best: dict[str, dict[str, Any]] = {}
    posts: dict[str, int] = {}
    for item in items:
        for m in item.matches:
            fc = str(m["fact_check_id"])
            posts[fc] = posts.get(fc, 0) + 1
            if fc not in best or (m.get("probability") or 0.0) > (best[fc].get("probability") or 0.0):
                best[fc] = m
    order = sorted(best, key=lambda fc: (-posts[fc], -(best[fc].get("probability") or 0.0), fc))
    return [ClusterMatch(best[fc], posts[fc]) for fc in order]


def highlight(text: str, terms: set[str]) -> list[Segment]:
    """``text`` cut into segments, the words among ``terms`` (lower-cased) marked shared.

    Segments are plain text: the template escapes them, so a post's markup is shown, never run.
    """
    if not terms:
        return [Segment(text)] if text else []
    segments: list[Segment] = []
    last = 0
    for word in _WORD.finditer(text):
        if _is_shared(word.group().lower(), terms):
            if word.start() > last:
                segments.append(Segment(text[last : word.start()]))
            segments.append(Segment(word.group(), shared=True))
            last = word.end()
    if last < len(text):
        segments.append(Segment(text[last:]))
    return segments


def _is_shared(word: str, terms: set[str]) -> bool:
    # The worker's terms are Postgres lexemes (stems: "vaccin" for "vaccines"): a stem of four
    # letters or more marks the words it starts.
    return word in terms or any(len(t) >= 4 and word.startswith(t) for t in terms)


def shared_terms(item: ReviewItem) -> set[str]:
    """Every term the worker said the post shares with one of its matches."""
    return {str(t).lower() for m in item.matches for t in (m.get("shared_terms") or [])}


def pr_polyline(curve: list[list[float]], width: int = 240, height: int = 160) -> str:
    """An SVG polyline's points for a decision report's precision/recall curve (recall across,
    precision up; rows are ``[cut, precision, recall, false alarms]``); empty without a curve."""
    points = []
    for row in curve:
        if len(row) >= 3:
            x, y = float(row[2]), float(row[1])
            points.append(f"{x * width:.1f},{(1 - y) * height:.1f}")
    return " ".join(points)
