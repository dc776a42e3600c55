"""One post on its way through the pipeline, and the pure steps over a batch of them.

:class:`PostItem` is filled in step by step (language, claim text, vector, search, cluster) and
published as its ``result``. The steps here know no store and no model: which posts repeat an
earlier one (given their answer keys and the stored answers), what each post brings to its claim
cluster, and the cluster as the wire shows it. :class:`worker.core.pipeline.MatchPipeline` runs them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from worker.core.clusters import cluster_post
from worker.core.images import outcome
from worker.core.reuse import Answered, Reused
from worker.domain import ClusterPost, ClusterSummary, Vectors
from worker.domain.images import ImageRead
from worker.retrieval.retriever import Query, Searched
from worker.wire import ClaimCluster, Match, MatchResult, Post, RawRecord


@dataclass
class PostItem:
    """One post on its way through the pipeline: filled in step by step, published as ``result``.

    ``claim`` is the text it is encoded and searched as (:func:`worker.retrieval.claims.claim_text`).
    A repeat of a claim is never searched: ``reused`` holds the stored answer of an earlier batch's
    post (found by its key before encoding, or by its vector, a near-duplicate, after), ``copy_of``
    the earlier post of its own batch."""

    record: RawRecord
    post: Post
    lang: str | None = None
    lang_detected: bool = False
    claim: str = ""
    # Its answer key and context, when answers are reused (:mod:`worker.core.reuse`).
    key: str | None = None
    context: str | None = None
    vector: Vectors | None = None
    searched: Searched | None = None
    reused: Reused | None = None
    copy_of: PostItem | None = None
    cluster: ClusterSummary | None = None
    # Its images as read (fetched or inline, hashed), one per image it carried.
    images: list[ImageRead] = field(default_factory=list)
    result: MatchResult | None = None

    def query(self) -> Query:
        assert self.vector is not None
        return Query(self.claim, self.lang, self.vector)

    def answer(self) -> tuple[list[Match], str | None]:
        """Its matches, and whose they were when it repeats another post (never itself: a redelivery)."""
        if self.reused is not None:
            matches, origin = list(self.reused.matches), self.reused.post_id
        elif self.copy_of is not None:
            matches, origin = self.copy_of.answer()[0], self.copy_of.post.id
        else:
            matches, origin = (self.searched.matches if self.searched else []), None
        return matches, (origin if origin != self.post.id else None)

    def stored_answer(self) -> Answered | None:
        """What it leaves for the repeats to come: its matches under its key and context, in the name
        of the post they are from (a near-duplicate's origin), with its vector; None without a key."""
        if self.key is None:
            return None
        matches, origin = self.answer()
        return Answered(self.key, origin or self.post.id, matches, self.context, self.vector)

    def to_result(self, version: str, text_max_chars: int) -> MatchResult:
        """What is published for it under model ``version``, with at most ``text_max_chars`` of its text."""
        cut = text_max_chars
        text = self.post.text
        matches, duplicate_of = self.answer()
        return MatchResult(
            post_id=self.post.id,
            lang=self.lang,
            lang_detected=self.lang_detected,
            platform=self.post.platform,
            matches=matches,
            duplicate_of=duplicate_of,
            cluster_id=self.cluster.cluster_id if self.cluster else None,
            cluster=wire_cluster(self.cluster),
            model_version=version,
            source=self.record.source(),
            text=text[:cut] if cut else None,
            text_truncated=bool(cut) and len(text) > cut,
            url=self.post.url,
            posted_at=self.post.created_at,
            images=[outcome(read, ref.url) for read, ref in zip(self.images, self.post.images, strict=False)],
        )


def mark_repeats(
    items: Sequence[PostItem], keys: Sequence[tuple[str, str]], found: dict[str, Reused]
) -> list[PostItem]:
    """Give each post its answer key and context and mark the repeats: a stored answer (``reused``)
    or an earlier post of the batch (``copy_of``); the posts left to encode and search, in order. A
    post with images is never a repeat and never repeated: its answer depends on more than its claim."""
    first: dict[str, PostItem] = {}
    todo: list[PostItem] = []
    for item, (key, context) in zip(items, keys, strict=True):
        if item.post.images:
            todo.append(item)
            continue
        item.key, item.context = key, context
        if key in found:
            item.reused = found[key]
        elif key in first:
            item.copy_of = first[key]
        else:
            first[key] = item
            todo.append(item)
    return todo


def cluster_posts(items: Sequence[PostItem]) -> list[ClusterPost]:
    """What each post brings to its claim cluster: its vector, or (a repeat) its origin's cluster."""
    posts = []
    for item in items:
        origin = item.reused.post_id if item.reused else (item.copy_of.post.id if item.copy_of else None)
        posts.append(
            cluster_post(
                item.post.id,
                vector=item.vector if origin is None else None,
                origin=origin,
                lang=item.lang,
                platform=item.post.platform,
                posted_at=item.post.created_at,
                text=item.claim,
                matches=item.answer()[0],
                url=item.post.url,
            )
        )
    return posts


def wire_cluster(summary: ClusterSummary | None) -> ClaimCluster | None:
    """The cluster as a result carries it."""
    if summary is None:
        return None
    return ClaimCluster(
        id=summary.cluster_id,
        size=summary.size,
        first_seen=summary.first_seen,
        last_seen=summary.last_seen,
        langs=summary.langs,
        platforms=summary.platforms,
        fact_check_id=summary.fact_check_id,
    )
