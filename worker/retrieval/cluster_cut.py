"""A version's claim-cluster cut, fitted on labelled posts rather than set by hand.

A cosine of 0.9 between two posts means "the same claim" for one model and "two tweets about
vaccines" for another (multilingual-e5's cosines are compressed: unrelated tweets sit above 0.8;
MiniLM's best cut is about 0.8, docs/measurements.md). So the cut is fitted per version, at
calibration, from two distributions over the labelled posts:

- **different claims**: the cosine of every pair of posts whose fact-checks differ (posts with no
  fact-check are left out: two of them may well say the same thing);
- **the same claim said again**: the cosine of each post with a near-copy of itself made the ways
  a stream rewrites a post and its claim text keeps (an added mention, a typo, another casing:
  :func:`near_copy`; a retweet prefix, a changed link or an emoji leave the claim text as it was,
  and such exact repeats are clustered by their key without any cosine).

The cut sits midway between the different claims' ``1 - negative_share`` quantile (1 pair in
10,000) and the copies' ``copy_share`` quantile (1 copy in 100); where those overlap (a model
that cannot tell them apart), at the copies' quantile, so that near-copies still join their
claim. On CheckThat! train and dev (997 posts, 496,187 pairs) it fits 0.923 for the default
model (0.92 was chosen by hand on a viral stream) and 0.730 for MiniLM (about 0.8 by hand; the
online clustering's ARI on that stream: 0.9954 at 0.730, 0.9912 at 0.80).
"""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from worker.domain import Encoder
from worker.retrieval.claims import claim_text

# Rewrites that change a post's claim text but not its claim (what the cut must keep together).
REWRITES = ("mention", "typo", "casing")
EMOJI = ("\U0001f631", "\U0001f525", "\u203c\ufe0f", "\U0001f440", "\U0001f4af", "\U0001f621", "\u2757")


def near_copy(text: str, kind: str, rng: random.Random) -> str:
    """``text`` rewritten one way a stream rewrites a post (``kind``: a :data:`REWRITES` one, or
    ``retweet``, ``link``, ``emoji``, ``spacing``, which leave its claim text unchanged)."""
    handle = f"user{rng.randrange(10_000)}"
    if kind == "retweet":
        return f"RT @{handle}: {text}"
    if kind == "link":
        stripped = re.sub(r"(?:https?://|pic\.twitter\.com/)\S*", "", text).strip()
        return f"{stripped} https://t.co/{uuid.UUID(int=rng.getrandbits(128)).hex[:10]}"
    if kind == "emoji":
        return f"{text} {rng.choice(EMOJI)}"
    if kind == "spacing":
        return "  " + text.replace(" ", "  ", 2) + "\n"
    if kind == "mention":
        return f"@{handle} {text}"
    if kind == "typo":
        words = text.split(" ")
        long = [i for i, w in enumerate(words) if len(w) >= 5 and w.isalpha()]
        if long:
            i = rng.choice(long)
            j = rng.randrange(len(words[i]) - 1)
            w = words[i]
            words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
        return " ".join(words)
    if kind != "casing":
        raise ValueError(f"no such rewrite: {kind!r}")
    return text.upper() if rng.random() < 0.5 else text.lower()


@dataclass(frozen=True)
class ClusterCut:
    cut: float
    # The different claims' high quantile and the copies' low quantile it sits between.
    different_claims: float
    same_claim: float
    pairs: int
    copies: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_cluster_cut(
    vectors: npt.NDArray[np.float32],
    claims: list[str | None],
    copies: npt.NDArray[np.float32],
    *,
    negative_share: float = 0.0001,
    copy_share: float = 0.01,
) -> ClusterCut | None:
    """The cut from unit ``vectors`` of labelled posts, each post's claim (its fact-check, None when
    it has none) and one near-copy's vector per post (rows aligned); None with too little to fit
    (fewer than two posts with different claims)."""
    labelled = [i for i, c in enumerate(claims) if c is not None]
    if len({claims[i] for i in labelled}) < 2 or len(copies) == 0:
        return None
    x = np.asarray(vectors, dtype=np.float32)[labelled]
    sims = x @ x.T
    names = np.asarray([claims[i] for i in labelled])
    upper = np.triu(np.ones(sims.shape, dtype=bool), k=1) & (names[:, None] != names[None, :])
    different = sims[upper]
    same = np.sum(np.asarray(vectors, dtype=np.float32) * np.asarray(copies, dtype=np.float32), axis=1)
    high = float(np.quantile(different, 1 - negative_share))
    low = float(np.quantile(same, copy_share))
    cut = (high + low) / 2 if high < low else low
    return ClusterCut(round(cut, 4), round(high, 4), round(low, 4), int(different.size), int(same.size))


def cluster_cut_of(
    encoder: Encoder, texts: Mapping[str, str], golds: Mapping[str, set[str]], *, seed: int = 0
) -> ClusterCut | None:
    """The cut for ``encoder`` from labelled posts (id -> text, id -> gold fact-checks): each post
    and one near-copy of it encoded as the worker encodes posts (their claim text)."""
    ids = list(texts)
    rng = random.Random(seed)
    posts = [claim_text(texts[q]) for q in ids]
    copies = [claim_text(near_copy(texts[q], rng.choice(REWRITES), rng)) for q in ids]
    vectors = np.asarray(encoder.encode_queries(posts), dtype=np.float32)
    copied = np.asarray(encoder.encode_queries(copies), dtype=np.float32)
    claims = [min(golds[q]) if golds.get(q) else None for q in ids]
    return fit_cluster_cut(vectors, claims, copied)
