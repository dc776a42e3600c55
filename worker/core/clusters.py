"""Claim clusters: every answered post joins the cluster of the claim it makes, in the stream.

The pipeline's step after matching. A post that was encoded joins the nearest recent cluster of
its model version whose centroid is at least ``cut`` similar (else, with ``across_languages``, its
fact-check's cluster where its language is new: a translation; else it starts one); a repeat
(answered with an earlier post's answer, never encoded) joins that post's cluster. The store does
the joining, shared by every worker of the group (:class:`worker.storage.clusters.Clusters`); this
module says what each post brings: its vector or its origin, language, platform, when it was
posted, and its rank-1 tiered match (None: the worker abstained, which is what the emerging
claims are made of). The result then carries the cluster's id and summary.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from worker.core.reuse import in_batches
from worker.domain import ClusterPost, ClusterSummary, Vectors
from worker.storage.interfaces import ClusterStore
from worker.wire import Match


def cluster_post(
    post_id: str,
    *,
    vector: Vectors | None,
    origin: str | None,
    lang: str | None,
    platform: str | None,
    posted_at: datetime | None,
    text: str,
    matches: Sequence[Match],
    url: str | None = None,
) -> ClusterPost:
    """What one post brings to its cluster; its rank-1 match counts only when it reached a tier."""
    top = matches[0] if matches and matches[0].tier is not None else None
    return ClusterPost(
        post_id=post_id,
        vector=vector,
        origin=origin,
        lang=lang,
        platform=platform,
        seen_at=posted_at or datetime.now(UTC),
        text=text,
        fact_check_id=top.fact_check_id if top else None,
        probability=top.probability if top else None,
        url=url,
    )


class Clustering:
    """Assigns a batch's posts to claim clusters under one model version."""

    def __init__(
        self, store: ClusterStore, cut: float, window_s: float, *, fitted: bool = True, across_languages: bool = True
    ) -> None:
        if not -1.0 <= cut <= 1.0:
            raise ValueError("the cluster cut is a cosine similarity, between -1 and 1")
        if window_s <= 0:
            raise ValueError("the cluster window must be positive")
        self.store = store
        self.cut = cut
        self.window_s = window_s
        self.fitted = fitted
        self.across_languages = across_languages

    def cut_for(self, fitted_cut: float | None) -> float:
        """The cut a version clusters with: its own fitted one where it has one (and fitted cuts are on)."""
        return fitted_cut if self.fitted and fitted_cut is not None else self.cut

    async def assign(
        self, version: str, dimension: int, posts: Sequence[ClusterPost], fitted_cut: float | None = None
    ) -> list[ClusterSummary]:
        """Each post's cluster under ``version`` (``fitted_cut``: the version's own cut, if any)."""
        cut = self.cut_for(fitted_cut)
        return await self.store.assign_clusters(
            version, dimension, posts, cut=cut, window_s=self.window_s, across_languages=self.across_languages
        )

    async def forget(self) -> int:
        """Delete the clusters no post joined for twice the window (the worker calls it now and then), in batches."""
        return await in_batches(lambda n: self.store.forget_clusters(2 * self.window_s, n))
