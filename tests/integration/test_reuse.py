"""Integration tier: a claim said again is answered once by the whole group, against real tansu and Postgres.

The corpus generations that make a stored answer stale are bumped by trigger (also by SQL written
by hand), once per transaction; two workers share the answers; a fact-check change and a version
switch each make the next repeat search again; a redelivered post gets its own answer again.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict
from typing import Any

import numpy as np
import psycopg

from tests.conftest import consume_until, produce
from tests.integration.test_worker import bodies, seed_corpus
from worker.adapter.runtime import running
from worker.configs import rollout_config
from worker.core.rollout import promote
from worker.settings import Settings
from worker.storage import Store
from worker.storage.interfaces import ClaimAnswer
from worker.wire import FactCheck, Match

CLAIMS = [
    "5G towers spread the coronavirus across Europe",
    "Drinking bleach cures the flu in two days",
    "The moon landing was filmed in a Hollywood studio",
    "Vaccines contain microchips that track your location",
]


def copies(claim: str, n: int) -> list[str]:
    forms = [
        claim,
        f"RT @news_{n}: {claim}",
        f"{claim} https://t.co/{n}abc",
        f"{claim} \U0001f631\U0001f631",
        f"  {claim}   pic.twitter.com/x{n}",
    ]
    return [forms[i % len(forms)] for i in range(n)]


async def test_generations_are_bumped_once_per_transaction_by_any_writer(database_url: str) -> None:
    store = Store(database_url)
    await store.open()
    try:
        assert await store.answers.generations("v1") == (0, 0)
        await store.corpus.upsert_fact_checks([FactCheck(id=f"fc{i}", claim=f"claim {i}") for i in range(3)])
        assert await store.answers.generations("v1") == (1, 0)
        await store.registry.register_version("v1", "/models/v1", 4)
        await store.embeddings.write_embeddings("v1", ["fc0", "fc1"], np.eye(2, 4, dtype=np.float32))
        assert await store.answers.generations("v1") == (1, 1)
        assert await store.answers.generations("v2") == (1, 0)  # another version's vectors are not stale
        # By hand, in one transaction of several statements: one bump, visible only at commit.
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            await conn.execute("UPDATE fact_checks SET claim = 'changed' WHERE id = 'fc0'")
            await conn.execute("DELETE FROM fact_checks WHERE id = 'fc2'")
            assert await store.answers.generations("v1") == (1, 1)
            await conn.commit()
        assert await store.answers.generations("v1") == (2, 1)
        await store.corpus.delete_fact_checks(["fc1"])  # its vector goes by cascade: both scopes move
        assert await store.answers.generations("v1") == (3, 2)
    finally:
        await store.close()


async def test_answers_are_found_inside_the_window_and_the_first_one_is_kept(database_url: str) -> None:
    store = Store(database_url)
    await store.open()
    try:
        match = Match(fact_check_id="fc1", score=0.9, rank=1, claim="c", tier="match", probability=0.97)
        await store.answers.remember_answers([("k1", ClaimAnswer("p1", "v1", [match]))], 60)
        await store.answers.remember_answers([("k1", ClaimAnswer("p2", "v1", []))], 60)
        found = await store.answers.find_answers(["k1", "k2"], 60)
        assert list(found) == ["k1"] and found["k1"].post_id == "p1" and list(found["k1"].matches) == [match]
        await asyncio.sleep(1.1)
        assert await store.answers.find_answers(["k1"], 1) == {}
        # Past the window, a new answer replaces the old one, and the old ones are deleted.
        await store.answers.remember_answers([("k1", ClaimAnswer("p3", "v1", []))], 1)
        assert (await store.answers.find_answers(["k1"], 60))["k1"].post_id == "p3"
        await store.answers.remember_answers([("k2", ClaimAnswer("p4", "v1", []))], 60)
        await asyncio.sleep(1.1)
        assert await store.answers.forget_answers(1) == 2
    finally:
        await store.close()


async def test_a_near_answer_is_found_by_its_vector_in_its_own_context_above_the_cut(database_url: str) -> None:
    store = Store(database_url)
    await store.open()
    try:
        match = Match(fact_check_id="fc1", score=0.9, rank=1, claim="c", tier="match", probability=0.97)
        a = np.asarray([1.0, 0.0, 0.0, 0.0], dtype=np.float32)
        b = np.asarray([0.0, 1.0, 0.0, 0.0], dtype=np.float32)
        near_a = np.asarray([0.995, 0.0999, 0.0, 0.0], dtype=np.float32)  # cosine 0.995 to a
        await store.answers.remember_answers(
            [
                ("k1", ClaimAnswer("p1", "v1", [match], "ctx", a)),
                ("k2", ClaimAnswer("p2", "v1", [], "ctx", b)),
                ("k3", ClaimAnswer("p3", "v1", [], "other", near_a)),  # another context: never found from ctx
                ("k4", ClaimAnswer("p4", "v1", [], None, None)),  # stored by key only
                ("k5", ClaimAnswer("p5", "v2", [], "ctx8", np.ones(8, dtype=np.float32) / np.sqrt(8))),
            ],
            60,
        )
        found = await store.answers.find_near([("ctx", near_a), ("ctx", near_a), ("other", b), ("none", a)], 60, 0.99)
        assert [f.post_id if f else None for f in found] == ["p1", "p1", None, None]
        assert found[0] is not None and list(found[0].matches) == [match] and found[0].context == "ctx"
        assert [f.post_id if f else None for f in await store.answers.find_near([("ctx", near_a)], 60, 0.999)] == [None]
        # A vector of another dimension in the same context is skipped, not an error.
        assert await store.answers.find_near([("ctx8", a)], 60, 0.1) == [None]
        await asyncio.sleep(1.1)
        assert await store.answers.find_near([("ctx", a)], 1, 0.5) == [None]  # past the window
    finally:
        await store.close()


async def test_two_workers_answer_each_claim_once_and_every_repeat_says_whose_answer_it_took(
    stack_settings: Settings,
) -> None:
    await seed_corpus(stack_settings)
    texts = {f"p-{c}-{i}": text for c, claim in enumerate(CLAIMS) for i, text in enumerate(copies(claim, 15))}
    messages = [(pid.encode(), json.dumps({"id": pid, "text": t}).encode()) for pid, t in texts.items()]
    async with running(stack_settings), running(stack_settings):
        # Each claim's first post alone, then the repeats, so the answers are there to be found.
        firsts = [m for m in messages if m[0].decode().endswith("-0")]
        await produce(stack_settings.kafka_bootstrap, stack_settings.topic_posts, firsts)
        await consume_until(stack_settings.kafka_bootstrap, [stack_settings.topic_matches], lambda rs: len(rs) >= 4)
        repeats = [m for m in messages if m not in firsts]
        await produce(stack_settings.kafka_bootstrap, stack_settings.topic_posts, repeats)
        records = await consume_until(
            stack_settings.kafka_bootstrap, [stack_settings.topic_matches], lambda rs: len(rs) >= len(texts)
        )
    results = bodies(records, stack_settings.topic_matches)
    assert Counter(r["post_id"] for r in results) == Counter(list(texts))
    by_claim: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        by_claim[r["post_id"].split("-")[1]].append(r)
    for claim, answered in by_claim.items():
        first = next(r for r in answered if r["post_id"] == f"p-{claim}-0")
        assert first["duplicate_of"] is None and first["matches"]
        repeats = [r for r in answered if r is not first]
        assert all(r["duplicate_of"] == first["post_id"] for r in repeats), "a repeat was searched again"
        assert all(r["matches"] == first["matches"] for r in repeats)


async def test_a_fact_check_change_and_a_version_switch_invalidate_and_a_redelivery_is_its_own_answer(
    stack_settings: Settings, tiny_model: Any
) -> None:
    settings = stack_settings.model_copy(update={"model_poll_interval_s": 0.5})
    await seed_corpus(settings)
    claim = CLAIMS[0]

    async def answer(pid: str, text: str) -> dict[str, Any]:
        body = json.dumps({"id": pid, "text": text}).encode()
        await produce(settings.kafka_bootstrap, settings.topic_posts, [(pid.encode(), body)])
        records = await consume_until(
            settings.kafka_bootstrap,
            [settings.topic_matches],
            lambda rs: sum(json.loads(r.value)["post_id"] == pid for r in rs) >= seen[pid] + 1,
        )
        seen[pid] += 1
        return [json.loads(r.value) for r in records if json.loads(r.value)["post_id"] == pid][-1]

    seen: Counter[str] = Counter()
    async with running(settings) as runtime:
        first = await answer("a", claim)
        assert first["duplicate_of"] is None
        assert (await answer("b", f"RT @x: {claim}"))["duplicate_of"] == "a"
        again = await answer("a", claim)  # redelivered (or sent twice): its own answer, not a duplicate
        assert again["duplicate_of"] is None and again["matches"] == first["matches"]

        fc = {"id": "fc-exact", "claim": claim, "title": claim, "lang": "en"}
        await produce(settings.kafka_bootstrap, settings.topic_factchecks, [(b"fc-exact", json.dumps(fc).encode())])
        version, corpus = runtime.models.current().version, runtime.store.corpus
        for _ in range(300):
            if not await corpus.fact_checks_missing(version) and await corpus.count_fact_checks() == 61:
                break
            await asyncio.sleep(0.1)
        changed = await answer("c", claim)
        assert changed["duplicate_of"] is None and changed["matches"][0]["fact_check_id"] == "fc-exact"
        assert (await answer("d", f"{claim} https://t.co/1"))["duplicate_of"] == "c"

        serving = runtime.models.current()
        await runtime.store.registry.register_version("tiny-b", str(tiny_model), serving.dimension)
        await promote(runtime.store, rollout_config(settings), "tiny-b", serving.encoder, progress=False)
        for _ in range(100):
            if runtime.models.current().version == "tiny-b":
                break
            await asyncio.sleep(0.1)
        switched = await answer("e", claim)
        assert switched["model_version"] == "tiny-b" and switched["duplicate_of"] is None
        assert (await answer("f", f"RT @y: {claim}"))["duplicate_of"] == "e"


async def test_a_light_rewording_takes_the_near_answer_through_the_worker_until_the_corpus_changes(
    stack_settings: Settings,
) -> None:
    """With the near-duplicate cut set: a post in other letters (another claim text; the tiny
    model lowercases, so the same vector) is answered from the first post's answer, in its name;
    after a fact-check change the same rewording is searched again."""
    settings = stack_settings.model_copy(update={"reuse_near_similarity": 0.999})
    await seed_corpus(settings)
    claim = CLAIMS[1]

    async def answer(pid: str, text: str) -> dict[str, Any]:
        await produce(
            settings.kafka_bootstrap,
            settings.topic_posts,
            [(pid.encode(), json.dumps({"id": pid, "text": text}).encode())],
        )
        records = await consume_until(
            settings.kafka_bootstrap,
            [settings.topic_matches],
            lambda rs: any(json.loads(r.value)["post_id"] == pid for r in rs),
        )
        return next(json.loads(r.value) for r in records if json.loads(r.value)["post_id"] == pid)

    async with running(settings) as runtime:
        first = await answer("a", claim)
        loud = await answer("b", claim.upper())
        assert first["duplicate_of"] is None and loud["duplicate_of"] == "a" and loud["matches"] == first["matches"]
        assert (await answer("c", f"RT @z: {claim.upper()}"))["duplicate_of"] == "a"  # by key, in a's name
        other = await answer("d", CLAIMS[2])
        assert other["duplicate_of"] is None

        fc = {"id": "fc-near", "claim": claim, "title": claim, "lang": "en"}
        await produce(settings.kafka_bootstrap, settings.topic_factchecks, [(b"fc-near", json.dumps(fc).encode())])
        version, corpus = runtime.models.current().version, runtime.store.corpus
        for _ in range(300):
            if not await corpus.fact_checks_missing(version) and await corpus.count_fact_checks() == 61:
                break
            await asyncio.sleep(0.1)
        changed = await answer("e", claim.upper())
        assert changed["duplicate_of"] is None and changed["matches"][0]["fact_check_id"] == "fc-near"
