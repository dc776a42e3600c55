"""A claim said again is answered once: the pipeline's reuse step.

Before a batch is encoded, each post's answer key is looked up in the store shared by every
worker of the group (:class:`worker.storage.interfaces.AnswerStore`); a post whose key is found
takes the stored matches and says whose they were (``duplicate_of``), and a post repeating an
earlier post of its own batch takes that post's matches. Only the first post of each key is
encoded and searched, and its answer is stored for the repeats to come.

The key digests everything the published matches depend on, so reuse never changes a result:
the claim's key (:func:`worker.retrieval.claims.claim_key`: the text every post is encoded and
searched as), the post's language, the model version, its decision model, the searcher's
settings and quarantine list, and the corpus generations of the fact-checks and of the
version's vectors. A fact-check change, a version switch, a refit decision model, a changed
quarantine list or changed search settings each give new keys; older answers are never read
after ``window_s`` and are deleted by :meth:`Reuse.forget`.

A light rewording (a typo, another casing, a word changed) has another key. With
``near_similarity`` set, a post that was encoded is looked up once more before it is searched:
among the answers of its *context* (the key's parts besides the claim: language, version, state,
generations), the one whose post's vector is nearest, if its cosine reaches ``near_similarity``,
is taken as above (``duplicate_of`` names the post whose matches they are). This one is not exact
by construction: a near-duplicate gets its neighbour's matches (ids, tiers, scores), so the cut
is set high and measured (benchmarks/viral_stream.py counts the posts whose matches differ with
reuse on and off).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from worker.domain import Vectors
from worker.storage.interfaces import AnswerStore, ClaimAnswer
from worker.wire import Match

# Rows one housekeeping statement deletes; a pass repeats it until less is left, at most
# FORGET_ROUNDS times (a fast stream expires more than one batch between passes).
FORGET_BATCH = 10_000
FORGET_ROUNDS = 20


async def in_batches(
    delete: Callable[[int], Awaitable[int]], batch: int = FORGET_BATCH, rounds: int = FORGET_ROUNDS
) -> int:
    """Call ``delete(batch)`` until it deletes fewer than ``batch`` rows (at most ``rounds`` times); the total."""
    total = 0
    for _ in range(rounds):
        deleted = await delete(batch)
        total += deleted
        if deleted < batch:
            break
    return total


def answer_key(claim: str, lang: str | None, version: str, state: str, generations: tuple[int, int]) -> str:
    """The key an answer is stored and found under (``state``: decision model, search settings, quarantine)."""
    parts = (claim, lang or "", version, state, str(generations[0]), str(generations[1]))
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def context_key(lang: str | None, version: str, state: str, generations: tuple[int, int]) -> str:
    """What an answer depends on besides its claim: near-duplicates are only looked for within one context."""
    parts = (lang or "", version, state, str(generations[0]), str(generations[1]))
    return hashlib.sha256("\x1f".join(("context", *parts)).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Answered:
    """A post's answer to store: under its key and context, whose matches they are, its vector."""

    key: str
    post_id: str
    matches: Sequence[Match]
    context: str | None = None
    vector: Vectors | None = None


@dataclass(frozen=True)
class Reused:
    """A post's answer taken from an earlier post: whose it was and its matches."""

    post_id: str
    matches: Sequence[Match]


class Reuse:
    """The pipeline's view of the shared answers: find before encoding, remember after deciding."""

    def __init__(self, store: AnswerStore, window_s: float, near_similarity: float | None = None) -> None:
        if window_s <= 0:
            raise ValueError("the reuse window must be positive")
        if near_similarity is not None and not 0 < near_similarity <= 1:
            raise ValueError("the near-duplicate cut is a cosine similarity in (0, 1]")
        self.store = store
        self.window_s = window_s
        self.near_similarity = near_similarity

    async def keys(self, version: str, state: str, posts: Sequence[tuple[str, str | None]]) -> list[tuple[str, str]]:
        """Each (claim key, language)'s answer key and context, under one read of the corpus generations."""
        g = await self.store.generations(version)
        keys = [answer_key(claim, lang, version, state, g) for claim, lang in posts]
        return list(zip(keys, [context_key(lang, version, state, g) for _, lang in posts], strict=True))

    async def find_near(self, probes: Sequence[tuple[str, Vectors]]) -> list[Reused | None]:
        """Per (context, vector): the nearest answer of that context at ``near_similarity`` or above."""
        if self.near_similarity is None or not probes:
            return [None] * len(probes)
        found = await self.store.find_near(probes, self.window_s, self.near_similarity)
        return [Reused(a.post_id, a.matches) if a is not None else None for a in found]

    async def find(self, keys: Sequence[str]) -> dict[str, Reused]:
        found = await self.store.find_answers(sorted(set(keys)), self.window_s)
        return {key: Reused(a.post_id, a.matches) for key, a in found.items()}

    async def remember(self, version: str, answers: Sequence[Answered]) -> None:
        """Store each answer for the repeats to come (with its context and vector only when
        near-duplicates are looked for); a key stored earlier keeps its answer."""
        near = self.near_similarity is not None
        rows = [
            (
                a.key,
                ClaimAnswer(a.post_id, version, a.matches, a.context if near else None, a.vector if near else None),
            )
            for a in answers
        ]
        await self.store.remember_answers(rows, self.window_s)

    async def forget(self) -> int:
        """Delete answers older than the window (the worker calls it now and then), in batches."""
        return await in_batches(lambda n: self.store.forget_answers(self.window_s, n))
