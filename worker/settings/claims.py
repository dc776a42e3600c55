"""Claims said again: answers reused, claim clusters, re-matching, what a result carries.

One group of the fields of :class:`worker.settings.Settings` (its environment variables keep the
``FACTMATCH_`` prefix and the field's name; the group only says where a setting belongs).
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class ClaimSettings(BaseModel):
    """Claims said again: answers reused, claim clusters, re-matching, what a result carries."""

    reuse_window_s: float = Field(
        3_600.0,
        ge=0,
        le=30 * 86_400,
        description="How long a claim's answer is reused, by every worker of the group, for posts repeating it"
        " (same claim text, language, model version and corpus); 0: every post is searched.",
    )
    reuse_near_similarity: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Also reuse the answer of a post whose vector is at least this cosine-similar (same language,"
        " model version, decision and corpus; within reuse_window_s): a light rewording is not searched again and"
        " takes its neighbour's matches. Unset: only exact repeats of a claim are reused.",
    )
    claim_clusters: bool = Field(
        True, description="Put every answered post in a claim cluster (results carry cluster_id and its summary)."
    )
    cluster_similarity: float = Field(
        0.92,
        ge=0,
        le=1,
        description="Cosine similarity to a cluster's centroid at or above which a post joins it (else it starts"
        " one), for a version whose calibration fitted no cut of its own (or every version, with"
        " cluster_cut_fitted off). Model-specific: 0.92 suits the default model (docs/measurements.md).",
    )
    cluster_cut_fitted: bool = Field(
        True,
        description="Cluster with each version's own cut, fitted at calibration on its labelled posts"
        " (worker/retrieval/cluster_cut.py), where it has one.",
    )
    cluster_across_languages: bool = Field(
        True,
        description="A post no cluster is near, whose rank-1 match reached a tier, joins the recent cluster whose"
        " best match is that fact-check when none of that cluster's posts is in the post's language yet (a"
        " translation: farther from its original than the cut under a small multilingual model). One such join"
        " per language and cluster, so the over-match watch still counts unrelated posts' clusters.",
    )
    cluster_window_s: float = Field(
        7 * 86_400,
        gt=0,
        le=365 * 86_400,
        description="A cluster no post joined for this long is not joined again (and is deleted after twice as long).",
    )
    rematch_interval_s: float = Field(
        60.0,
        ge=0,
        le=86_400,
        description="How often one worker of the group checks whether the fact-checks changed and, if they did,"
        " searches the recent claim clusters nobody had a fact-check for again: their posts a new fact-check"
        " now matches get an updated result (rematched) on the matches topic. 0: never.",
    )
    rematch_max_clusters: int = Field(
        500, ge=1, le=100_000, description="Most unmatched clusters one re-match pass searches (most recent first)."
    )
    rematch_max_posts: int = Field(
        2_000, ge=1, le=1_000_000, description="Most posts one re-match pass encodes and searches again."
    )
    result_text_max_chars: int = Field(
        2_000,
        ge=0,
        le=100_000,
        description="Characters of the post's text each result carries for whoever shows it (0: none).",
    )
