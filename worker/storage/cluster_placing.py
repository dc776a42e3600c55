"""How a batch's posts are placed in claim clusters, once the store said which stored cluster is
nearest each post (:mod:`worker.storage.clusters` does the SQL): pure logic, so the order rules are
tested without a database.

A post joins its origin's cluster (the earlier post whose answer it repeats), else the nearest
above the cut of the stored clusters (as the batch found them) and of the clusters started earlier
in the batch (their founding post's vector), else (with ``anchors``) the cluster of its fact-check
in a language that cluster has not seen yet, else starts one. What each cluster gains is kept in a
:class:`Joins` and written once, after every post was placed.

**Across languages.** A translation sits farther from its original than the cut under a small
multilingual model, so by its vector alone it starts a cluster of its own. A post that reached a
tier with fact-check F, in a language the recent cluster whose best match is F has no post in yet,
joins that cluster instead (``anchors``: those clusters as stored, by fact-check; a cluster the
batch started counts too). Once a language is in, the cluster takes no more posts of it this way,
so an over-matching fact-check gathers at most one unrelated post per language into a cluster and
the over-match watch, which counts a fact-check's clusters, still sees the rest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from psycopg.types.json import Jsonb

from worker.domain import ClusterPost

# A stored cluster near a post: its id, centroid, similarity and size as the batch found them.
Stored = tuple[int, np.ndarray, float, int]
# A stored cluster a post may join by its fact-check: its id, centroid, size and languages.
Anchor = tuple[int, np.ndarray, int, frozenset[str]]


@dataclass
class Joins:
    """What one cluster gains from a batch: written to its row once, after every post was placed."""

    # The centroid and size the batch started from (None: a cluster this batch started).
    base: tuple[np.ndarray, int] | None
    vectors: list[np.ndarray] = field(default_factory=list)
    posts: list[ClusterPost] = field(default_factory=list)

    def centroid(self) -> np.ndarray | None:
        if not self.vectors:
            return None
        total: np.ndarray = np.sum(np.stack(self.vectors), axis=0)
        if self.base is not None:
            total = total + self.base[0] * self.base[1]
        return (total / max(float(np.linalg.norm(total)), 1e-12)).astype(np.float32)

    def row(self, cluster: int) -> dict[str, Any]:
        matched = [p for p in self.posts if p.fact_check_id is not None]
        best = max(matched, key=lambda p: p.probability or 0.0, default=None)
        return {
            "id": cluster,
            "n": len(self.posts),
            "centroid": self.centroid(),
            "first": min(p.seen_at for p in self.posts),
            "last": max(p.seen_at for p in self.posts),
            "langs": Jsonb(Counter(p.lang or "und" for p in self.posts)),
            "platforms": Jsonb(Counter(p.platform or "unknown" for p in self.posts)),
            "abstained": len(self.posts) - len(matched),
            "fc": best.fact_check_id if best else None,
            "p": (best.probability or 0.0) if best else None,
        }


class Placing:
    """A batch's posts placed in order (see the module). A started cluster is numbered -1, -2, ...
    until :meth:`renumber` gives it its row's id."""

    def __init__(
        self,
        known: dict[str, int],
        nearest: dict[str, Stored | None],
        cut: float,
        anchors: dict[str, Anchor] | None = None,
    ) -> None:
        self.known, self.nearest, self.cut = known, nearest, cut
        # Across languages (None: off): each fact-check's cluster, the stored ones' centroid and
        # size, and every touched cluster's languages.
        self._by_fact_check = None if anchors is None else {fc: a[0] for fc, a in anchors.items()}
        self._bases = {a[0]: (a[1], a[2]) for a in (anchors or {}).values()}
        self._langs: dict[int, set[str]] = {a[0]: set(a[3]) for a in (anchors or {}).values()}
        self.joins: dict[int, Joins] = {}
        self.placed: list[tuple[ClusterPost, int]] = []
        self.started: list[ClusterPost] = []
        # The started clusters with a vector: their numbers and unit founding vectors.
        self._founders: list[int] = []
        self._units: list[np.ndarray] = []

    def place(self, post: ClusterPost) -> None:
        """Put ``post`` in its cluster (nothing when it already has one)."""
        if post.post_id in self.known:
            return
        cluster = self.known.get(post.origin) if post.origin else None
        vector = None if post.vector is None else np.asarray(post.vector, dtype=np.float32)
        if cluster is None and vector is not None:
            cluster = self._near(post.post_id, vector)
            if cluster is None:
                cluster = self._anchored(post)
        if cluster is None:
            self.started.append(post)
            cluster = -len(self.started)
            if vector is not None:
                self._founders.append(cluster)
                self._units.append(_unit(vector))
            if self._by_fact_check is not None and post.fact_check_id is not None:
                self._by_fact_check.setdefault(post.fact_check_id, cluster)
        if post.lang:
            self._langs.setdefault(cluster, set()).add(post.lang)
        entry = self.joins.setdefault(cluster, Joins(base=None))
        entry.posts.append(post)
        if vector is not None:
            entry.vectors.append(vector)
        self.known[post.post_id] = cluster
        self.placed.append((post, cluster))

    def _near(self, post_id: str, vector: np.ndarray) -> int | None:
        stored = self.nearest.get(post_id)
        best, similarity = (stored[0], stored[2]) if stored is not None else (None, -2.0)
        if self._units:
            sims = np.stack(self._units) @ _unit(vector)
            i = int(np.argmax(sims))
            if float(sims[i]) > similarity:
                best, similarity = self._founders[i], float(sims[i])
        if best is None or similarity < self.cut:
            return None
        if stored is not None and best == stored[0]:
            self.joins.setdefault(best, Joins(base=(stored[1], stored[3])))
        return best

    def _anchored(self, post: ClusterPost) -> int | None:
        """The cluster of ``post``'s fact-check, where the post's language is new to it (see the module)."""
        if self._by_fact_check is None or post.fact_check_id is None or not post.lang or post.lang == "und":
            return None
        cluster = self._by_fact_check.get(post.fact_check_id)
        if cluster is None or post.lang in self._langs.get(cluster, set()):
            return None
        if cluster in self._bases:
            self.joins.setdefault(cluster, Joins(base=self._bases[cluster]))
        return cluster

    def renumber(self, ids: Sequence[int]) -> None:
        """The started clusters' numbers replaced by their rows' ids (in the order they were started)."""
        real = {-(i + 1): cluster for i, cluster in enumerate(ids)}
        for post, cluster in self.known.items():
            self.known[post] = real.get(cluster, cluster)
        self.joins = {real.get(c, c): entry for c, entry in self.joins.items()}
        self.placed = [(post, real.get(c, c)) for post, c in self.placed]


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-12)
