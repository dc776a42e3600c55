"""Recalibration from the moderators' verdicts, on Postgres: skipped, refitted, refused, recorded."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import psycopg

from tests.integration.test_worker import DEMO_FACT_CHECKS
from trainer.recalibrate import held_out, recalibrate
from worker.configs import bootstrap_active_version, model_manager
from worker.retrieval.decision import Decisions
from worker.retrieval.evaluation import corpus_from_rows, load_jsonl
from worker.storage import Store
from worker.wire import Feedback, document_text


def verdicts() -> list[Feedback]:
    """Posts that repeat a fact-check: each confirmed on it, and rejected on a neighbour."""
    docs = corpus_from_rows(load_jsonl(DEMO_FACT_CHECKS))
    out = []
    for i, doc in enumerate(docs):
        text = document_text(doc.title, doc.claim)
        out.append(Feedback(post_id=f"p{i}", post_text=text, fact_check_id=doc.id, verdict="confirm", moderator="ana"))
        wrong = docs[(i + 1) % len(docs)].id
        out.append(Feedback(post_id=f"p{i}", post_text=text, fact_check_id=wrong, verdict="reject", moderator="ana"))
    return out


async def test_the_decision_is_refitted_from_verdicts_only_when_enough_came_and_the_held_out_ones_agree(
    database_url: str, make_settings: Any
) -> None:
    settings = make_settings(database_url=database_url, tier_min_support=5, recalibrate_min_judged=3)
    store = Store(database_url)
    await store.open()
    try:
        await store.corpus.upsert_fact_checks(corpus_from_rows(load_jsonl(DEMO_FACT_CHECKS)))
        mv = await bootstrap_active_version(store, settings, model_manager(store, settings))
        assert await store.decisions.stored_decision(mv.version) is None, "the tiny model ships no decision"
        given = verdicts()
        await store.feedback.insert_feedback(given[:10])
        skipped = await recalibrate(store, settings)
        assert skipped.outcome == "skipped" and "10 new verdicts" in skipped.reason
        assert await store.decisions.refits() == [], "a skipped run records nothing"

        await store.feedback.insert_feedback(given[10:])
        strict = settings.model_copy(update={"recalibrate_min_verdicts": 50, "recalibrate_min_judged": 1000})
        refused = await recalibrate(store, strict)
        assert refused.outcome == "refused" and "fewer than 1000" in refused.reason
        assert await store.decisions.stored_decision(mv.version) is None, "a refused refit changes nothing"

        refitted = await recalibrate(store, settings.model_copy(update={"recalibrate_min_verdicts": 50}))
        assert refitted.outcome == "refitted", refitted.reason
        stored = await store.decisions.stored_decision(mv.version)
        assert stored is not None and stored.cuts and Decisions.from_stored(stored, mv.version).model is not None
        held = refitted.heldout
        posts = {f.post_id for f in given}
        assert held["posts"] == sum(held_out(p, settings.recalibrate_heldout_share) for p in posts) > 0
        assert held["refit"]["match_or_suggestion"]["judged"] >= 3 and held["in_use"]["match"]["judged"] == 0
        assert held["refit"]["match_or_suggestion"]["precision"] > 0.5
        history = await store.decisions.refits(mv.version)
        assert [(h["outcome"], h["verdicts"]) for h in history] == [("refitted", 120), ("refused", 120)]
        # The verdicts that made it are older than the fit now: nothing new, nothing to do.
        again = await recalibrate(store, settings.model_copy(update={"recalibrate_min_verdicts": 1}))
        assert again.outcome == "skipped" and again.reason.startswith("0 new verdicts")

        # A version with a model for text read in images keeps it through a refit (verdicts fit none).
        fitted = Decisions.from_stored(stored, mv.version).model
        assert fitted is not None and fitted.image_text is None
        for_read = replace(fitted, fitted_on={"data": "read from memes"})
        with_read = json.dumps(replace(fitted, image_text=for_read).to_dict())
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            await conn.execute(
                "UPDATE decision_models SET model = %s WHERE model_version = %s", (with_read, mv.version)
            )
        kept = await recalibrate(store, settings, force=True)
        assert kept.outcome == "refitted", kept.reason
        after = Decisions.from_stored(await store.decisions.stored_decision(mv.version), mv.version).model
        assert after is not None and after.image_text == for_read and after.fitted_on != for_read.fitted_on
    finally:
        await store.close()


async def test_a_none_of_these_verdict_is_stored_as_one(database_url: str) -> None:
    store = Store(database_url)
    await store.open()
    try:
        none = Feedback(
            post_id="p", post_text="t", fact_check_id="f", verdict="reject", moderator="a", none_of_these=True
        )
        plain = Feedback(post_id="q", post_text="t", fact_check_id="f", verdict="reject", moderator="a")
        await store.feedback.insert_feedback([none, plain])
        assert [(r["post_id"], r["none_of_these"]) for r in await store.feedback.feedback()] == [
            ("p", True),
            ("q", False),
        ]
    finally:
        await store.close()
