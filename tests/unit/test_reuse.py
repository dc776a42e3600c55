"""Unit tier: a claim said again is answered once, and only while nothing its answer depends on changed."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tests.fakes import FakeEncoder, FakeModels, FakeSearcher
from tests.unit.test_pipeline import config, post, records
from worker.core.pipeline import MatchPipeline, ServingModel
from worker.core.reuse import Reuse
from worker.retrieval.decision import Decisions
from worker.storage.memory import MemoryStore
from worker.wire import FactCheck, MatchResult

CLAIM = "Bill Gates wants to put microchips in the COVID-19 vaccine"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclasses.dataclass
class Rig:
    store: MemoryStore
    searcher: FakeSearcher
    encoder: FakeEncoder
    models: FakeModels
    pipeline: MatchPipeline
    clock: Clock

    async def answer(self, *bodies: bytes, first_offset: int = 0) -> list[MatchResult]:
        batch = [dataclasses.replace(r, offset=r.offset + first_offset) for r in records(*bodies)]
        return list((await self.pipeline.process(batch)).results)

    def searched(self) -> int:
        return sum(n for _, n in self.searcher.calls)


class CaseBlindEncoder(FakeEncoder):
    """Texts that differ only in case get one vector: a light rewording, as far as vectors go."""

    def _vec(self, text: str) -> np.ndarray:
        return super()._vec(text.casefold())


def rig(
    window_s: float = 3600.0, reuse: bool = True, near: float | None = None, encoder: FakeEncoder | None = None
) -> Rig:
    store, clock = MemoryStore(), Clock()
    store.answers.clock = clock
    searcher, encoder = FakeSearcher(), encoder or FakeEncoder()
    models = FakeModels(ServingModel("v1", encoder.dimension, encoder))
    answers = Reuse(store.answers, window_s, near) if reuse else None
    return Rig(store, searcher, encoder, models, MatchPipeline(models, searcher, config(), reuse=answers), clock)


async def test_a_repeat_in_a_later_batch_takes_the_first_posts_answer_without_encoding_or_searching() -> None:
    r = rig()
    [first] = await r.answer(post("a", CLAIM))
    [copy] = await r.answer(post("b", f"RT @someone: {CLAIM}  https://t.co/xyz \U0001f631"))
    assert copy.duplicate_of == "a" and first.duplicate_of is None
    assert copy.matches == first.matches and copy.model_version == "v1"
    assert r.searched() == 1 and len(r.encoder.calls) == 1


async def test_repeats_inside_one_batch_are_searched_once() -> None:
    r = rig()
    results = await r.answer(post("a", CLAIM), post("b", f"@bob {CLAIM}"), post("c", f"{CLAIM} pic.twitter.com/x"))
    assert [x.duplicate_of for x in results] == [None, None, "a"]
    assert results[2].matches == results[0].matches
    assert r.searched() == 2  # "bob ..." is a claim of its own: who is named stays


async def test_a_redelivered_post_gets_its_own_answer_again_and_is_no_duplicate() -> None:
    r = rig()
    [first] = await r.answer(post("a", CLAIM))
    [again] = await r.answer(post("a", CLAIM))
    assert again.duplicate_of is None and again.matches == first.matches and r.searched() == 1


async def test_a_fact_check_change_a_new_version_a_refit_or_new_settings_each_search_again() -> None:
    r = rig()
    await r.answer(post("a", CLAIM))
    await r.store.corpus.upsert_fact_checks([FactCheck(id="fc9", claim="a new fact-check")])
    [after_change] = await r.answer(post("b", CLAIM))
    assert after_change.duplicate_of is None and r.searched() == 2

    await r.store.embeddings.write_embeddings("v1", ["fc9"], r.encoder.encode_documents(["a new fact-check"]))
    [after_vectors] = await r.answer(post("c", CLAIM))
    assert after_vectors.duplicate_of is None and r.searched() == 3

    r.models.model = ServingModel("v2", r.encoder.dimension, r.encoder)
    [switched] = await r.answer(post("d", CLAIM))
    assert switched.duplicate_of is None and switched.model_version == "v2" and r.searched() == 4

    r.models.model = dataclasses.replace(r.models.model, decisions=Decisions(thresholds={("*", "match"): 0.5}))
    [refit] = await r.answer(post("e", CLAIM))
    assert refit.duplicate_of is None and r.searched() == 5

    r.searcher.settings = "s2"  # another top-k, or a fact-check quarantined
    [resettled] = await r.answer(post("f", CLAIM))
    assert resettled.duplicate_of is None and r.searched() == 6

    [unchanged] = await r.answer(post("g", CLAIM))
    assert unchanged.duplicate_of == "f" and r.searched() == 6


async def test_the_language_is_part_of_the_claim() -> None:
    r = rig()
    await r.answer(b'{"id": "a", "text": "%s", "lang": "en"}' % CLAIM.encode())
    [other] = await r.answer(b'{"id": "b", "text": "%s", "lang": "de"}' % CLAIM.encode())
    assert other.duplicate_of is None and r.searched() == 2


async def test_answers_older_than_the_window_are_not_reused_and_are_forgotten() -> None:
    r = rig(window_s=60)
    await r.answer(post("a", CLAIM))
    r.clock.now = 59
    [inside] = await r.answer(post("b", CLAIM))
    r.clock.now = 61
    [outside] = await r.answer(post("c", CLAIM))
    assert inside.duplicate_of == "a" and outside.duplicate_of is None and r.searched() == 2
    assert r.pipeline.reuse is not None
    r.clock.now = 100
    [later] = await r.answer(post("d", CLAIM))
    assert later.duplicate_of == "c" and r.searched() == 2  # "c"'s fresh answer replaced "a"'s expired one
    r.clock.now = 122
    assert await r.pipeline.reuse.forget() == 1
    assert r.store.answers.answers == {}


async def test_with_reuse_off_every_post_is_searched_and_the_matches_are_the_same() -> None:
    stream = [
        post("a", CLAIM),
        post("b", "Drinking hot water kills the virus"),
        post("c", f"RT @x: {CLAIM}"),
        post("d", "Drinking hot water kills the virus \U0001f525"),
        post("e", "Drinking hot water kills the virus https://t.co/q"),
        post("f", CLAIM),
    ]
    on, off = rig(), rig(reuse=False)
    with_reuse = [m for body in stream for m in await on.answer(body)]
    without = [m for body in stream for m in await off.answer(body)]
    assert [r.matches for r in with_reuse] == [r.matches for r in without]
    assert [r.duplicate_of for r in with_reuse] == [None, None, "a", "b", "b", "a"]
    assert all(r.duplicate_of is None for r in without)
    assert (on.searched(), off.searched()) == (2, 6)


def test_a_window_of_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="window"):
        Reuse(MemoryStore().answers, 0)


async def test_housekeeping_deletes_in_batches_until_less_is_left_and_stops_at_its_bound() -> None:
    from worker.core.reuse import in_batches

    left = [25_000]
    calls: list[int] = []

    async def delete(n: int) -> int:
        calls.append(n)
        gone = min(n, left[0])
        left[0] -= gone
        return gone

    assert await in_batches(delete, batch=10_000) == 25_000 and calls == [10_000] * 3 and left == [0]
    left[0], calls[:] = 1_000_000, []
    assert await in_batches(delete, batch=10_000, rounds=5) == 50_000 and len(calls) == 5  # bounded per pass


async def test_a_light_rewording_takes_its_neighbours_answer_after_encoding_without_a_search() -> None:
    r = rig(near=0.99, encoder=CaseBlindEncoder())
    [first] = await r.answer(post("a", CLAIM))
    # Another claim text (case is kept in the key), the same vector: encoded, not searched.
    [loud] = await r.answer(post("b", CLAIM.upper()))
    assert loud.duplicate_of == "a" and loud.matches == first.matches
    assert r.searched() == 1 and len(r.encoder.calls) == 2
    # Its own exact repeat is found by key, in the first post's name, without encoding.
    [again] = await r.answer(post("c", f"RT @x: {CLAIM.upper()}"))
    assert again.duplicate_of == "a" and r.searched() == 1 and len(r.encoder.calls) == 2
    # An unrelated claim is searched; and without the near cut a rewording is searched too.
    [other] = await r.answer(post("d", "The moon landing was staged"))
    assert other.duplicate_of is None and r.searched() == 2
    plain = rig(encoder=CaseBlindEncoder())
    await plain.answer(post("a", CLAIM))
    [searched] = await plain.answer(post("b", CLAIM.upper()))
    assert searched.duplicate_of is None and plain.searched() == 2


async def test_a_near_duplicate_is_only_found_in_its_own_context() -> None:
    r = rig(near=0.99, encoder=CaseBlindEncoder())
    await r.answer(b'{"id": "a", "text": "%s", "lang": "en"}' % CLAIM.encode())
    [german] = await r.answer(b'{"id": "b", "text": "%s", "lang": "de"}' % CLAIM.upper().encode())
    assert german.duplicate_of is None and r.searched() == 2
    await r.store.corpus.upsert_fact_checks([FactCheck(id="fc9", claim="a new fact-check")])
    [after_change] = await r.answer(b'{"id": "c", "text": "%s", "lang": "en"}' % CLAIM.upper().encode())
    assert after_change.duplicate_of is None and r.searched() == 3
