"""Search and deciding: retrieval, tiers and their fitting, claims, the over-match watch.

One group of the fields of :class:`worker.settings.Settings` (its environment variables keep the
``FACTMATCH_`` prefix and the field's name; the group only says where a setting belongs).
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from worker.domain import ModeName


class SearchSettings(BaseModel):
    """Search and deciding: retrieval, tiers and their fitting, claims, the over-match watch."""

    retrieval_mode: ModeName = Field(
        "hybrid", description="Dense vectors, Postgres full-text, or both fused (reciprocal rank fusion)."
    )
    # Chosen on CheckThat! 2020 dev (benchmarks/fusion_sweep.py) for MiniLM base and fine-tuned.
    rrf_k: int = Field(10, ge=1, le=10_000)
    dense_weight: float = Field(1.0, ge=0, le=100)
    lexical_weight: float = Field(0.5, ge=0, le=100)
    retrieval_candidates: int = Field(50, ge=1, le=1000, description="Candidates each retriever contributes.")
    language_aware_fusion: bool = Field(
        True,
        description="A fact-check in another language than the post is not ranked down for lacking lexical overlap.",
    )
    detect_language: bool = Field(True, description="Identify the language of posts that carry no lang.")
    language_min_confidence: float = Field(0.5, ge=0, le=1)
    decision_pool: int = Field(
        20, ge=1, le=1000, description="Fused candidates the decision model scores; rank 1 is its most probable."
    )
    rerank_top_n: int = Field(
        0,
        ge=0,
        le=200,
        description="Candidates per post the version's cross-encoder rereads (0: off). Costs one"
        " transformer pass per candidate: see README's reranking figures before turning it on.",
    )
    # The uncertain band: a cascade reranks only posts whose top probability without the reranker
    # lies within it (fitted into the decision by `factmatch calibrate`; docs/measurements.md).
    rerank_band_low: float = Field(
        0.0, ge=0, le=1, description="Lowest screened top probability a post is reranked at (a cascade)."
    )
    rerank_band_high: float = Field(
        1.0, ge=0, le=1, description="Highest screened top probability a post is reranked at (a cascade)."
    )
    publish_untiered: bool = Field(
        False,
        description="Also publish matches below every tier (the version has a decision model); off: a post"
        " with nothing above the 'suggestion' cut gets an empty match list.",
    )
    overmatch_window: int = Field(2000, ge=10, le=1_000_000, description="Recent posts the over-match watch sees.")
    overmatch_share: float = Field(
        0.05,
        gt=0,
        le=1,
        description="Share of the window's posts one fact-check may be shown to (any tier) before it is flagged.",
    )
    overmatch_factor: float = Field(
        5.0, ge=1, le=1000, description="...and this many times its own baseline share (over earlier windows)."
    )
    overmatch_min_matches: int = Field(20, ge=1, description="Fewest matches in the window before flagging.")
    overmatch_quarantine: bool = Field(
        True,
        description="Demote a flagged fact-check one tier (never 'match'; a suggestion is withheld)"
        " until `factmatch quarantine clear`.",
    )
    quarantine_refresh_s: float = Field(10.0, gt=0, le=3600, description="How often workers re-read quarantines.")
    tier_match_precision: float = Field(0.95, gt=0, le=1, description="Target precision of the 'match' tier.")
    tier_suggestion_precision: float = Field(0.8, gt=0, le=1, description="Target precision of 'suggestion'.")
    tier_match_false_alarm: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Most posts with no fact-check that may get a 'match' (share, fitted open-set with the"
        " precision target; the stricter cut wins). Unset: precision target only.",
    )
    tier_suggestion_false_alarm: float | None = Field(
        0.1,
        gt=0,
        lt=1,
        description="Most posts with no fact-check that may be shown anything ('suggestion' or 'match'),"
        " fitted open-set like the match budget. Unset: precision target only.",
    )
    tier_min_support: int = Field(20, ge=1, description="Fewest labelled candidates above a cut to fit it.")
    top_k: int = Field(5, ge=1, le=100)
    min_score: float = Field(0.3, ge=-1.0, le=1.0, description="Cosine similarity a match must reach.")
    ef_search: int = Field(100, ge=1, le=1000)
    recall_sample_share: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Share of searches re-run exactly in the background to export the index's recall@10 (0: off).",
    )
    hnsw_m: int = Field(16, ge=2, le=100)
    hnsw_ef_construction: int = Field(
        200,
        ge=4,
        le=1000,
        description="Build-time candidate list: 200 gave more recall per ms of search than 64 at 100k fact-checks"
        " (benchmarks/results/ann_100k_2core.txt), for a build about 3x as long.",
    )
