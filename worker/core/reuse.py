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
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Reused:
    """A post's answer taken from an earlier post: whose it was and its matches."""

    post_id: str
    matches: Sequence[Match]


class Reuse:
    """The pipeline's view of the shared answers: find before encoding, remember after deciding."""

    def __init__(self, store: AnswerStore, window_s: float) -> None:
        if window_s <= 0:
            raise ValueError("the reuse window must be positive")
        self.store = store
        self.window_s = window_s

    async def keys(self, version: str, state: str, posts: Sequence[tuple[str, str | None]]) -> list[str]:
        """Each (claim key, language)'s answer key under the corpus as it is now."""
        generations = await self.store.generations(version)
        return [answer_key(claim, lang, version, state, generations) for claim, lang in posts]

    async def find(self, keys: Sequence[str]) -> dict[str, Reused]:
        found = await self.store.find_answers(sorted(set(keys)), self.window_s)
        return {key: Reused(a.post_id, a.matches) for key, a in found.items()}

    async def remember(self, version: str, answers: Sequence[tuple[str, str, Sequence[Match]]]) -> None:
        """Store (key, post id, matches) for the repeats to come; a key stored earlier keeps its answer."""
        rows = [(key, ClaimAnswer(post, version, matches)) for key, post, matches in answers]
        await self.store.remember_answers(rows, self.window_s)

    async def forget(self) -> int:
        """Delete answers older than the window (the worker calls it now and then), in batches."""
        return await in_batches(lambda n: self.store.forget_answers(self.window_s, n))
