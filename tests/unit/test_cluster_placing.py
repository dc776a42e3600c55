"""A batch's posts placed in claim clusters in order (the pure part of :mod:`worker.storage.clusters`)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from worker.domain import ClusterPost
from worker.storage.cluster_placing import Placing

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 7, tzinfo=UTC)


def post(post_id: str, vector: list[float] | None, origin: str | None = None) -> ClusterPost:
    v = None if vector is None else np.asarray(vector, dtype=np.float32)
    return ClusterPost(post_id, v, origin, "en", "x", NOW, post_id)


def test_a_post_joins_a_cluster_started_earlier_in_its_batch_or_its_origins() -> None:
    placing = Placing({}, {}, cut=0.9)
    for p in (
        post("a", [1, 0, 0]),
        post("b", [0.99, 0.05, 0]),  # near a's founding vector
        post("c", [0, 1, 0]),  # far from it: starts its own
        post("d", None, origin="c"),  # a repeat of c, never encoded
        post("a", [1, 0, 0]),  # a redelivery keeps its place
    ):
        placing.place(p)
    assert [p.post_id for p in placing.started] == ["a", "c"]
    assert [(p.post_id, c) for p, c in placing.placed] == [("a", -1), ("b", -1), ("c", -2), ("d", -2)]
    placing.renumber([41, 42])
    assert placing.known == {"a": 41, "b": 41, "c": 42, "d": 42}
    assert [c for _, c in placing.placed] == [41, 41, 42, 42]
    assert sorted(placing.joins) == [41, 42] and len(placing.joins[41].posts) == 2


def test_the_nearer_of_a_stored_cluster_and_a_started_one_wins_and_the_cut_holds() -> None:
    centroid = np.asarray([0, 0, 1], dtype=np.float32)
    nearest = {
        "s": (7, centroid, 0.95, 10),  # a stored cluster above the cut
        "t": (7, centroid, 0.91, 10),  # above the cut, but the batch's own cluster is nearer
        "u": (7, centroid, 0.5, 10),  # below it: starts one
    }
    placing = Placing({"old": 3}, nearest, cut=0.9)
    for p in (post("f", [1, 0, 0]), post("s", [0.1, 0, 1]), post("t", [1, 0.01, 0]), post("u", [0, 1, 0])):
        placing.place(p)
    assert [(p.post_id, c) for p, c in placing.placed] == [("f", -1), ("s", 7), ("t", -1), ("u", -2)]
    # A stored cluster's join keeps the centroid and size it had, for the running mean.
    base = placing.joins[7].base
    assert base is not None and base[1] == 10 and np.array_equal(base[0], centroid)
    assert placing.joins[-1].base is None
    centroid_f = placing.joins[-1].centroid()
    assert centroid_f is not None and abs(float(np.linalg.norm(centroid_f)) - 1) < 1e-6


def said(post_id: str, vector: list[float], lang: str, fact_check: str | None) -> ClusterPost:
    return ClusterPost(post_id, np.asarray(vector, dtype=np.float32), None, lang, "x", NOW, post_id, fact_check, 0.9)


def test_a_post_nothing_is_near_joins_its_fact_checks_cluster_once_per_new_language() -> None:
    centroid = np.asarray([0, 0, 1], dtype=np.float32)
    far = (7, centroid, 0.5, 10)  # the stored cluster nearest each post is below the cut
    anchors = {"fc-1": (7, centroid, 10, frozenset({"en"}))}
    posts = [
        said("de", [1, 0, 0], "de", "fc-1"),  # a translation: German is new to fc-1's cluster
        said("de2", [0, 1, 0], "de", "fc-1"),  # German is in now: another claim starts its own
        said("en", [0, 0.7, 0.7], "en", "fc-1"),  # English was there already
        said("es", [0.7, 0.7, 0], "es", None),  # no tiered match: no fact-check to go by
        said("fr", [0.6, 0, 0.8], "fr", "fc-2"),  # fc-2 has no stored cluster: starts one ...
        said("it", [-1, 0, 0], "it", "fc-2"),  # ... which the next language joins
    ]
    placing = Placing({}, {p.post_id: far for p in posts}, cut=0.9, anchors=anchors)
    for p in posts:
        placing.place(p)
    assert [(p.post_id, c) for p, c in placing.placed] == [
        ("de", 7),
        ("de2", -1),
        ("en", -2),
        ("es", -3),
        ("fr", -4),
        ("it", -4),
    ]
    # The stored cluster's join keeps its centroid and size for the running mean.
    base = placing.joins[7].base
    assert base is not None and base[1] == 10 and np.array_equal(base[0], centroid)


def test_without_anchors_a_translation_starts_its_own_cluster() -> None:
    placing = Placing({}, {}, cut=0.9)
    for p in (said("en", [1, 0, 0], "en", "fc-1"), said("de", [0, 1, 0], "de", "fc-1")):
        placing.place(p)
    assert [c for _, c in placing.placed] == [-1, -2]
