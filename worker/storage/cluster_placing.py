"""How a batch's posts are placed in claim clusters, once the store said which stored cluster is
nearest each post (:mod:`worker.storage.clusters` does the SQL): pure logic, so the order rules are
tested without a database.

A post joins its origin's cluster (the earlier post whose answer it repeats), else the nearest
above the cut of the stored clusters (as the batch found them) and of the clusters started earlier
in the batch (their founding post's vector), else starts one. What each cluster gains is kept in a
:class:`Joins` and written once, after every post was placed.
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

    def __init__(self, known: dict[str, int], nearest: dict[str, Stored | None], cut: float) -> None:
        self.known, self.nearest, self.cut = known, nearest, cut
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
            self.started.append(post)
            cluster = -len(self.started)
            if vector is not None:
                self._founders.append(cluster)
                self._units.append(_unit(vector))
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

    def renumber(self, ids: Sequence[int]) -> None:
        """The started clusters' numbers replaced by their rows' ids (in the order they were started)."""
        real = {-(i + 1): cluster for i, cluster in enumerate(ids)}
        for post, cluster in self.known.items():
            self.known[post] = real.get(cluster, cluster)
        self.joins = {real.get(c, c): entry for c, entry in self.joins.items()}
        self.placed = [(post, real.get(c, c)) for post, c in self.placed]


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-12)
