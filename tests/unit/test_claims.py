"""The claim text and key: what counts as the same claim said again, rule by rule."""

from __future__ import annotations

import pytest

from worker.retrieval.claims import claim_key, claim_text

ORIGINAL = "Bill Gates wants to put microchips in the COVID-19 vaccine"


@pytest.mark.parametrize(
    "copy",
    [
        ORIGINAL,
        f"RT @someone: {ORIGINAL}",
        f"rt @a_b RT @c: {ORIGINAL}",
        f"{ORIGINAL} https://t.co/AbC123xyz",
        f"{ORIGINAL} http://example.com/a?b=c pic.twitter.com/xyz",
        f"{ORIGINAL} www.example.org/page",
        f"  {ORIGINAL}\n\n",
        f"{ORIGINAL} \U0001f631\U0001f631",
        f"\u2757\ufe0f {ORIGINAL} \U0001f44d\U0001f3fd",
        f"{ORIGINAL}\u200b",
        "Ｂｉｌｌ Gates wants to put microchips in the COVID-19 vaccine",  # full-width letters (NFKC)
    ],
)
def test_repeats_of_one_claim_share_its_key(copy: str) -> None:
    assert claim_key(copy) == claim_key(ORIGINAL)
    assert claim_text(copy) == ORIGINAL


def test_a_mention_keeps_its_name_and_case_is_kept() -> None:
    assert claim_text(f"@WHO says {ORIGINAL}") == f"WHO says {ORIGINAL}"
    assert claim_key(f"@alice {ORIGINAL}") != claim_key(f"@bob {ORIGINAL}")
    assert claim_key(ORIGINAL.upper()) != claim_key(ORIGINAL)  # grouped by the clusters, not the key


@pytest.mark.parametrize(
    "other",
    [
        "Bill Gates wants to put microchips in the flu vaccine",
        "Bill Gates does not want to put microchips in the COVID-19 vaccine",
        "Bill Gates wants to put microchip in the COVID-19 vaccine",  # a typo: for the clusters, not the key
    ],
)
def test_a_different_wording_is_a_different_key(other: str) -> None:
    assert claim_key(other) != claim_key(ORIGINAL)


def test_an_email_address_and_a_temperature_are_kept() -> None:
    assert claim_text("write to a@b.org now") == "write to a@b.org now"
    assert claim_text("it was 40°C in Paris") == "it was 40°C in Paris"


def test_a_post_of_only_links_or_emoji_is_never_empty() -> None:
    assert claim_text("https://t.co/x") == "https://t.co/x"
    assert claim_text("\U0001f631 \U0001f631") == "\U0001f631 \U0001f631"
    assert claim_key("https://t.co/x") != claim_key("https://t.co/y")


def test_the_key_is_short_and_stable() -> None:
    key = claim_key(ORIGINAL)
    assert len(key) == 32 and int(key, 16) >= 0
    assert key == claim_key(ORIGINAL)


def test_the_cluster_cut_sits_between_different_claims_and_near_copies_of_one() -> None:
    import random

    import numpy as np

    from worker.retrieval.cluster_cut import REWRITES, fit_cluster_cut, near_copy

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(30, 16))
    posts, claims, copies = [], [], []
    for i in range(90):
        claim = i % 30
        post = centres[claim] + rng.normal(scale=0.05, size=16)
        copy = post + rng.normal(scale=0.03, size=16)
        posts.append(post / np.linalg.norm(post))
        copies.append(copy / np.linalg.norm(copy))
        claims.append(f"fc{claim}" if i < 80 else None)  # the last ten have no fact-check: no pairs
    vectors, copied = np.asarray(posts, dtype=np.float32), np.asarray(copies, dtype=np.float32)
    cut = fit_cluster_cut(vectors, claims, copied)
    assert cut is not None and cut.pairs == 80 * 79 // 2 - sum(
        1 for a in range(80) for b in range(a) if a % 30 == b % 30
    )
    assert cut.different_claims < cut.cut < cut.same_claim
    sims = vectors[:80] @ vectors[:80].T
    names = np.asarray(claims[:80])
    assert (sims[names[:, None] != names[None, :]] < cut.cut).mean() > 0.999
    assert (np.sum(vectors * copied, axis=1) >= cut.cut).mean() >= 0.99
    # A model that cannot tell them apart: the cut keeps the copies together.
    blurred = fit_cluster_cut(vectors, claims, np.asarray(copies[::-1], dtype=np.float32))
    assert blurred is not None and blurred.cut == blurred.same_claim
    assert fit_cluster_cut(vectors, ["fc"] * 90, copied) is None, "one claim: nothing to tell apart"
    text = "Bill Gates wants to microchip everyone through vaccines"
    for kind in REWRITES:
        rewritten = near_copy(text, kind, random.Random(1))
        assert rewritten != text and claim_text(rewritten) != claim_text(text)
    for kind in ("retweet", "link", "emoji", "spacing"):  # the claim text ignores these
        assert claim_text(near_copy(text, kind, random.Random(1))) == claim_text(text)


def test_a_version_clusters_with_its_own_cut_unless_fitted_cuts_are_off() -> None:
    from worker.core.clusters import Clustering
    from worker.domain import StoredDecision
    from worker.retrieval.decision import Decisions

    stored = StoredDecision({}, {}, {"cluster_cut": {"cut": 0.73, "different_claims": 0.6, "same_claim": 0.86}})
    assert Decisions(cluster_cut=0.73).fingerprint != Decisions(cluster_cut=0.8).fingerprint
    assert Decisions.from_stored(None).cluster_cut is None
    clustering = Clustering(store=None, cut=0.92, window_s=60)  # type: ignore[arg-type]
    assert clustering.cut_for(0.73) == 0.73 and clustering.cut_for(None) == 0.92
    assert Clustering(store=None, cut=0.92, window_s=60, fitted=False).cut_for(0.73) == 0.92  # type: ignore[arg-type]
    from worker.retrieval.decision import fitted_cluster_cut

    assert fitted_cluster_cut(stored.report) == 0.73 and fitted_cluster_cut({"cluster_cut": None}) is None
