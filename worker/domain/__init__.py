"""The value types every layer shares, and nothing else: the leaf of the import graph.

Why it exists: storage returns these, retrieval and core compute with them, the adapter and the
CLI print them. Kept here, each layer imports only downward (``tests/unit/test_layers.py``
enforces it): storage knows no retrieval or core, retrieval and core know no storage beyond its
protocols (:mod:`worker.storage.interfaces`). Only the standard library and numpy are imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, get_args

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]
"""Unit-length embeddings, one row per text."""


class Encoder(Protocol):
    """What serving, indexing and evaluation need from a model: token counts and unit-length
    vectors (torch in :mod:`worker.core.encoder`, ONNX Runtime in :mod:`worker.core.onnx_backend`)."""

    @property
    def dimension(self) -> int: ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]: ...

    def encode_queries(self, texts: Sequence[str]) -> Vectors: ...

    def encode_documents(self, texts: Sequence[str]) -> Vectors: ...


# --- Retrieval ----------------------------------------------------------------------------
ModeName = Literal["dense", "lexical", "hybrid"]
MODE_NAMES: tuple[ModeName, ...] = get_args(ModeName)
Source = Literal["dense", "lexical"]
Tier = Literal["match", "suggestion"]


@dataclass(frozen=True)
class Candidate:
    """One fact-check a source returned for a post, with both sources' evidence."""

    fact_check_id: str
    dense_score: float
    dense_rank: int | None
    lexical_score: float | None
    lexical_rank: int | None
    lang: str | None = None


@dataclass(frozen=True)
class PostCandidates:
    """What the sources found for one post: its candidates and the post's own lexemes (the
    text-search terms its text was searched with, from which shared terms are explained)."""

    candidates: list[Candidate]
    lexemes: frozenset[str] = frozenset()


@dataclass(frozen=True)
class FactCheckDetails:
    """What a published match shows besides its scores; ``lexemes`` explain the shared terms."""

    claim: str
    title: str | None
    url: str | None
    lang: str | None
    rating: str | None
    published_at: datetime | None
    lexemes: frozenset[str] = frozenset()

    def shown(self) -> dict[str, Any]:
        """The fields a published match copies: claim, title, link, language, rating, date."""
        return {
            "claim": self.claim,
            "title": self.title,
            "url": self.url,
            "lang": self.lang,
            "rating": self.rating,
            "published_at": self.published_at,
        }


@dataclass(frozen=True)
class Threshold:
    """One fitted tier cut on the match probability, for one language (``*``: all)."""

    lang: str
    tier: Tier
    threshold: float
    target_precision: float
    fitted_precision: float
    fitted_recall: float
    support: int


@dataclass(frozen=True)
class StoredDecision:
    """A version's decision model as stored: its JSON, the cuts fitted on it, the fit's report."""

    model: dict[str, Any]
    cuts: dict[tuple[str, str], float]
    report: dict[str, Any] = field(default_factory=dict)


# --- Model versions -----------------------------------------------------------------------
VersionStatus = Literal["candidate", "indexing", "ready", "active", "retired", "rejected"]

# Versions a changed fact-check must be (re-)embedded under so that no index goes stale.
SERVING_STATUSES: tuple[VersionStatus, ...] = ("active", "ready", "indexing")

# Postgres NOTIFY channel: a version was activated, put in shadow, or its decision refitted.
NOTIFY_CHANNEL = "factmatch_model"


@dataclass(frozen=True)
class ModelVersion:
    version: str
    path: str
    dimension: int
    status: VersionStatus
    base: str | None
    metrics: dict[str, Any]
    created_at: datetime
    indexed_at: datetime | None
    activated_at: datetime | None
    notes: str | None = None
    data_snapshot: dict[str, Any] | None = None
    retired_at: datetime | None = None
    shadow: bool = False


# --- Shadow evaluation --------------------------------------------------------------------
@dataclass(frozen=True)
class ShadowRow:
    """One post's rank 1 under the active version and under the shadow one (None: no match)."""

    model_version: str
    active_version: str
    post_id: str
    lang: str | None
    active_fact_check_id: str | None
    shadow_fact_check_id: str | None
    active_score: float | None
    shadow_score: float | None


@dataclass(frozen=True)
class ShadowReport:
    version: str
    posts: int = 0
    agreement: float | None = None  # share of posts whose rank 1 (or "no match") is the same
    score_shift: dict[str, float] = field(default_factory=dict)  # mean shadow - active rank-1 score, per language
    judged: int = 0  # posts whose shadow rank 1 a moderator confirmed or rejected
    precision: float | None = None  # of the shadow's rank 1, where judged
    active_precision: float | None = None  # of the active version's rank 1 on the same sampled posts

    def as_dict(self) -> dict[str, object]:
        return {
            "posts": self.posts,
            "agreement": self.agreement,
            "score_shift": self.score_shift,
            "judged": self.judged,
            "precision": self.precision,
            "active_precision": self.active_precision,
        }


# --- Claim clusters -----------------------------------------------------------------------
@dataclass(frozen=True)
class ClusterPost:
    """One answered post to put in a claim cluster: by its vector, or into the cluster of ``origin``
    (the earlier post whose answer it repeats, so it was never encoded)."""

    post_id: str
    vector: Vectors | None
    origin: str | None
    lang: str | None
    platform: str | None
    seen_at: datetime
    text: str
    # Its rank-1 tiered match, if any (None: the worker abstained on it).
    fact_check_id: str | None = None
    probability: float | None = None
    # Its link on its platform (kept for an update of its result when it is re-matched).
    url: str | None = None


@dataclass(frozen=True)
class UnmatchedCluster:
    """A recent claim cluster no fact-check matched: what a re-match searches with (its centroid,
    its first post's claim text, its most frequent language)."""

    cluster_id: int
    centroid: Vectors
    text: str
    lang: str | None


@dataclass(frozen=True)
class ClusteredPost:
    """A post the worker abstained on, as its cluster keeps it: enough to re-match it and publish
    an update of its result."""

    post_id: str
    cluster_id: int
    text: str
    lang: str | None
    platform: str | None
    url: str | None
    seen_at: datetime


@dataclass(frozen=True)
class ClusterSummary:
    """A claim cluster as a post's result shows it (and the trends read it)."""

    cluster_id: int
    size: int
    first_seen: datetime
    last_seen: datetime
    langs: dict[str, int]
    platforms: dict[str, int]
    # The best-matching fact-check of its posts (highest match probability seen), None while none matched.
    fact_check_id: str | None
    # Its posts that no fact-check reached a tier for.
    abstained: int


@dataclass(frozen=True)
class TrendingFactCheck:
    """A fact-check's posts over the last hour, day and week (by their created_at), and how fast it rises."""

    fact_check_id: str
    last_hour: int
    last_day: int
    last_week: int
    # (last hour + 1) / (the week's mean other hour + 1): 1 is its usual pace.
    spike: float
    # The last day's posts per language and platform, and hour by hour (oldest first; the last is this hour).
    langs: dict[str, int]
    platforms: dict[str, int]
    hourly: list[int]


@dataclass(frozen=True)
class EmergingClaim:
    """A claim cluster no fact-check matched yet, growing: what a fact-checker should look at next."""

    cluster_id: int
    size: int
    last_day: int  # its posts in the day before the moment asked about
    day_before: int  # and in the day before that
    growth: float  # (last day + 1) / (day before + 1)
    first_seen: datetime
    last_seen: datetime
    langs: dict[str, int]
    platforms: dict[str, int]
    representative: str  # its first post's claim text
    examples: list[str]  # its latest distinct claim texts


# --- Fact-check copies --------------------------------------------------------------------
# What two copies of one fact-check may differ in. Plain character classes, so the storage
# layer's SQL applies the very same patterns as :func:`worker.retrieval.openset.twin_key`.
TWIN_QUOTES = "[\"'`\u2018\u2019\u201a\u201b\u201c\u201d\u201e\u00ab\u00bb]"
TWIN_SPACES = "[ \t\n\r\f\v]+"


# --- The moderators' console --------------------------------------------------------------
Role = Literal["moderator", "admin"]
ROLES: tuple[Role, ...] = get_args(Role)
VerdictKind = Literal["confirm", "reject"]
TIER_RANK: dict[str, int] = {"match": 0, "suggestion": 1}


class ClaimLost(RuntimeError):
    """The session no longer holds the item's claim (it expired and another session took it, or it is decided)."""


@dataclass(frozen=True)
class QueueFilter:
    """What a moderator narrowed the queue to (None: any)."""

    lang: str | None = None
    tier: Tier | None = None
    platform: str | None = None
    fact_check_id: str | None = None
    model_version: str | None = None


@dataclass(frozen=True)
class ReviewItem:
    """One post waiting for (or given) a moderator's verdicts: the result as the worker published it."""

    post_id: str
    result: dict[str, Any]
    text: str | None
    lang: str | None
    platform: str | None
    model_version: str
    tier: Tier
    probability: float | None
    published_at: datetime
    status: Literal["open", "done"] = "open"
    claimed_by: str | None = None
    claimed_until: datetime | None = None
    cluster_id: int | None = None

    @property
    def matches(self) -> list[dict[str, Any]]:
        return list(self.result.get("matches") or [])


@dataclass(frozen=True)
class ReviewGroup:
    """One entry of the queue: a claim cluster's open posts shown as one (``item`` first in the
    queue's order), or a single post (``cluster_id`` None, or the only open post of its cluster).

    ``posts`` counts the cluster's open posts within the queue's filters that this session may take.
    """

    item: ReviewItem
    posts: int = 1

    @property
    def cluster_id(self) -> int | None:
        return self.item.cluster_id


@dataclass(frozen=True)
class ConsoleUser:
    name: str
    role: Role
    password_hash: str | None
    disabled: bool = False


@dataclass(frozen=True)
class ConsoleSession:
    """A signed-in browser: who, with which role, the CSRF token its forms carry, and a short id for the audit."""

    session_id: str
    user: str
    role: Role
    csrf: str


@dataclass(frozen=True)
class PendingVerdict:
    """A verdict inside its undo window, or sent: one Feedback record once the window closes."""

    id: int
    post_id: str
    fact_check_id: str
    verdict: VerdictKind
    state: Literal["pending", "sent", "undone"]
    send_after: datetime


@dataclass(frozen=True)
class VerdictTally:
    """Moderators' verdicts on the matches shown in one tier for posts in one language."""

    tier: Tier
    lang: str
    confirmed: int
    rejected: int
