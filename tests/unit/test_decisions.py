"""Unit tier: the decision model, open-set splits and reports, language-aware fusion, the over-match watch."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from tests.fakes import TableSource, cosine_is_probability, queries
from worker.retrieval.decision import (
    FEATURES,
    RERANK,
    DecisionModel,
    Decisions,
    LabelledRow,
    features,
    fit_cascade,
    fit_decision,
)
from worker.retrieval.modes import Candidate, FusionConfig, fuse
from worker.retrieval.openset import Published, open_set_report, open_set_split, twin_groups, with_twins
from worker.retrieval.overmatch import OverMatchConfig, OverMatchWatch, QuarantineGuard
from worker.retrieval.retriever import RetrievalConfig, Retriever
from worker.wire import FactCheck

HYBRID = FusionConfig("hybrid", 10, 1.0, 0.5)


Source = TableSource


def search(retriever: Retriever, n: int, decisions: Decisions | None, langs: list[str | None] | None = None) -> Any:
    import asyncio

    found = asyncio.run(retriever.search("v1", 4, queries(n, langs), decisions))
    return [f.matches for f in found]


def test_rank_1_is_the_candidate_the_decision_prefers_and_tiers_cut_the_probability() -> None:
    # Fusion puts "lexical-hit" first (both retrievers); its cosine, hence its probability, is lower.
    source = Source(
        [
            [Candidate("lexical-hit", 0.70, 1, 0.9, 1), Candidate("dense-hit", 0.93, 2, None, None)],
            [Candidate("weak", 0.40, 1, None, None)],
        ]
    )
    config = RetrievalConfig(HYBRID, top_k=5, min_score=-1.0, candidates=50)
    cuts = {("*", "match"): 0.9, ("*", "suggestion"): 0.6}
    found = search(Retriever(source, config), 2, Decisions(cosine_is_probability(), cuts))
    assert [m.fact_check_id for m in found[0]] == ["dense-hit", "lexical-hit"]
    assert [(m.rank, m.tier, m.probability) for m in found[0]] == [(1, "match", 0.93), (2, "suggestion", 0.7)]
    # Below every tier: abstain (an empty list), unless untiered matches are asked for.
    assert found[1] == []
    loud = Retriever(source, RetrievalConfig(HYBRID, 5, -1.0, 50, publish_untiered=True))
    found = search(loud, 2, Decisions(cosine_is_probability(), cuts))
    assert [(m.fact_check_id, m.tier) for m in found[1]] == [("weak", None)]
    # A version never calibrated publishes its ranking as before, without probabilities.
    plain = search(Retriever(source, config), 2, None)
    assert [m.fact_check_id for m in plain[0]] == ["lexical-hit", "dense-hit"]
    assert all(m.probability is None and m.tier is None for ms in plain for m in ms)


def test_a_decision_needing_a_missing_reranker_still_decides_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    base = cosine_is_probability()
    model = DecisionModel(
        (*base.features, RERANK),
        (*base.mean, 0.0),
        (*base.scale, 1.0),
        (*base.coef, 0.5),
        0.0,
        base.calib_x,
        base.calib_y,
        0.0,
        {},
    )
    source = Source([[Candidate("a", 0.93, 1, None, None)]])
    retriever = Retriever(source, RetrievalConfig(HYBRID, top_k=5, min_score=-1.0, candidates=50))
    decisions = Decisions(model, {("*", "match"): 0.9})
    with caplog.at_level("ERROR", logger="worker.retrieval.retriever"):
        for _ in range(3):
            found = search(retriever, 1, decisions)
            assert [(m.fact_check_id, m.tier) for m in found[0]] == [("a", "match")]
    assert sum("reranker it does not have" in r.getMessage() for r in caplog.records) == 1


def with_rerank(base: DecisionModel, weight: float) -> DecisionModel:
    """``base`` reading the reranker's logit too, ``weight`` times it added to its raw score."""
    return DecisionModel(
        (*base.features, RERANK),
        (*base.mean, 0.0),
        (*base.scale, 1.0),
        (*base.coef, weight),
        base.intercept,
        base.calib_x,
        base.calib_y,
        0.0,
        {},
    )


class CountingReranker:
    """Every (post, fact-check text) pair it was asked about; each logit 0.6."""

    def __init__(self) -> None:
        self.pairs: list[tuple[str, str]] = []

    def score(self, pairs: Any) -> Any:
        self.pairs += list(pairs)
        return np.full(len(pairs), 0.6)


def test_a_cascade_rereads_only_the_posts_its_screen_is_unsure_of(caplog: pytest.LogCaptureFixture) -> None:
    # Three posts: surely matched (0.95), unsure (0.60), surely nothing (0.10) by the screen.
    source = Source(
        [
            [Candidate("sure", 0.95, 1, None, None), Candidate("sure-2", 0.5, 2, None, None)],
            [Candidate("unsure", 0.60, 1, None, None), Candidate("unsure-2", 0.55, 2, None, None)],
            [Candidate("nothing", 0.10, 1, None, None)],
        ]
    )
    screen = cosine_is_probability()
    cascade = replace(with_rerank(screen, 0.5), screen=screen, rerank_band=(0.3, 0.9))
    reranker = CountingReranker()
    cuts = {("*", "match"): 0.85, ("*", "suggestion"): 0.5}
    config = RetrievalConfig(HYBRID, top_k=5, min_score=-1.0, candidates=50, rerank_top_n=1)
    found = search(Retriever(source, config), 3, Decisions(cascade, cuts, reranker))
    # Only the unsure post's top candidate was reread, and its probability is the reranked model's.
    assert reranker.pairs == [("a post", "claim unsure")]
    assert next((m.fact_check_id, m.tier, m.probability) for m in found[1]) == ("unsure", "match", 0.9)
    assert next((m.fact_check_id, m.tier, m.probability) for m in found[0]) == ("sure", "match", 0.95)
    assert found[2] == []
    # Reranking off: the screen decides every post, as it was calibrated, and nothing is logged.
    off = RetrievalConfig(HYBRID, top_k=5, min_score=-1.0, candidates=50)
    with caplog.at_level("ERROR", logger="worker.retrieval.retriever"):
        found = search(Retriever(source, off), 3, Decisions(cascade, cuts, reranker))
    assert [(m.fact_check_id, m.tier) for m in found[1]] == [("unsure", "suggestion"), ("unsure-2", "suggestion")]
    assert len(reranker.pairs) == 1 and not caplog.records
    # Without a band every post is reread.
    everyone = CountingReranker()
    search(Retriever(source, config), 3, Decisions(replace(cascade, rerank_band=None), cuts, everyone))
    assert len(everyone.pairs) == 3


def test_text_read_in_images_is_decided_by_the_model_for_it_and_typed_text_as_before() -> None:
    import asyncio

    # The same candidates for a typed post and for text read in an image.
    source = Source([[Candidate("fc", 0.70, 1, None, None)], [Candidate("fc", 0.70, 1, None, None)]])
    typed_model = cosine_is_probability()
    surer = replace(typed_model, intercept=0.2)  # read text: the same cosine is surer (0.9)
    model = replace(typed_model, image_text=surer)
    cuts = {("*", "match"): 0.85, ("*", "suggestion"): 0.5}
    retriever = Retriever(source, RetrievalConfig(HYBRID, top_k=5, min_score=-1.0, candidates=50))
    typed, read = queries(2)
    posts = [typed, replace(read, read=True)]
    found = asyncio.run(retriever.search("v1", 4, posts, Decisions(model, cuts)))
    assert [(m.tier, m.probability) for m in found[0].matches] == [("suggestion", 0.7)]
    assert [(m.tier, m.probability) for m in found[1].matches] == [("match", 0.9)]
    # A model without one decides read text as typed text; a model for read text survives JSON.
    found = asyncio.run(retriever.search("v1", 4, posts, Decisions(typed_model, cuts)))
    assert [m.probability for f in found for m in f.matches] == [0.7, 0.7]
    assert DecisionModel.from_json(model.to_json()) == model
    with pytest.raises(ValueError, match="read from images must be a plain one"):
        DecisionModel.from_json(json.loads(model.to_json()) | {"image_text": json.loads(model.to_json())})


def test_language_aware_fusion_does_not_rank_a_cross_lingual_match_below_same_language_term_sharers() -> None:
    right = Candidate("de-right", 0.88, 1, None, None, lang="de")
    sharers = [Candidate(f"en-{i}", 0.80 - i / 100, i + 2, 0.5 - i / 100, i + 1, lang="en") for i in range(3)]
    plain = FusionConfig("hybrid", 10, 1.0, 1.0, language_aware=False)
    aware = FusionConfig("hybrid", 10, 1.0, 1.0, language_aware=True)
    assert fuse([right, *sharers], plain, top_k=4, min_score=-1, post_lang="en")[0][0].fact_check_id == "en-0"
    assert fuse([right, *sharers], aware, top_k=4, min_score=-1, post_lang="en")[0][0].fact_check_id == "de-right"
    # Same language (or unknown): lexical evidence counts as it always did.
    same = Candidate("en-right", 0.88, 1, None, None, lang="en")
    assert fuse([same, *sharers], aware, top_k=4, min_score=-1, post_lang="en")[0][0].fact_check_id == "en-0"
    # The decision features of a cross-lingual candidate carry the neutral lexical evidence.
    x = features([right, *sharers], aware, "a post", "en", neutral_lexical=0.25)
    row = dict(zip(FEATURES, x[0], strict=True))
    assert row["same_language"] == 0.0 and row["lexical_bm25"] == 0.25 and row["inv_lexical_rank"] == 1.0
    assert row["cosine_margin"] == pytest.approx(0.08) and row["cosine_gap"] == 0.0


def synthetic_rows(
    posts: int, per_post: int, *, right_cosine: float, seed: int, rerank: bool = False
) -> list[LabelledRow]:
    """Every other post answerable by its rank 1 (cosine ~``right_cosine``, the rest ~0.78);
    with ``rerank``, a reranker logit ~+2 for the right one and ~-2 for the rest."""
    rng = np.random.default_rng(seed)
    rows = []
    for post in range(posts):
        for rank in range(per_post):
            correct = post % 2 == 0 and rank == 0
            x = [rng.normal(right_cosine if correct else 0.78, 0.03), 0.0, 0.0, 1 / (rank + 1)]
            x += [0.0, 0.0, 0.0, 1.0, 0.1, 2.0, 0.0, 0.0, 0.0]
            if rerank:
                x.append(rng.normal(2.0 if correct else -2.0, 1.0))
            rows.append(LabelledRow(f"p{post}", "en", tuple(x), correct))
    return rows


def test_fitted_decision_is_calibrated_and_survives_json() -> None:
    rows = synthetic_rows(600, 5, right_cosine=0.85, seed=0)
    model, oof = fit_decision(rows)
    labels = np.array([r.correct for r in rows])
    # Calibrated: in each probability band, the share right is near the band's mean probability.
    for lo, hi in ((0.0, 0.2), (0.2, 0.8), (0.8, 1.01)):
        band = (oof >= lo) & (oof < hi)
        if band.sum() > 50:
            assert abs(labels[band].mean() - oof[band].mean()) < 0.08
    again = DecisionModel.from_json(model.to_json())
    x = np.array([r.features for r in rows[:20]])
    assert np.allclose(again.probability(again.raw(x)), model.probability(model.raw(x)))
    assert model.coef[FEATURES.index("cosine")] > 0
    with pytest.raises(ValueError, match="both right and wrong"):
        fit_decision([LabelledRow("p", "en", (0.0,) * len(FEATURES), False)] * 10)


def test_a_fitted_cascade_screens_without_the_reranker_and_cuts_on_what_it_gives() -> None:
    # The reranker's logit knows better than the cosine.
    rows = synthetic_rows(400, 4, right_cosine=0.83, seed=3, rerank=True)
    cascade, oof = fit_cascade(rows, (0.2, 0.8))
    assert cascade.uses_rerank and cascade.screen is not None and not cascade.screen.uses_rerank
    _screen, screened = fit_decision([replace(r, features=r.features[:-1]) for r in rows])
    reranked = fit_decision(rows)[1]
    top: dict[str, float] = {}
    for r, p in zip(rows, screened, strict=True):
        top[r.post] = max(top.get(r.post, 0.0), float(p))
    inside = np.array([0.2 <= top[r.post] <= 0.8 for r in rows])
    assert 0 < inside.mean() < 1
    # Posts outside the band keep the screen's probability, those inside get the reranked model's.
    assert np.allclose(oof[~inside], screened[~inside]) and np.allclose(oof[inside], reranked[inside])
    assert cascade.fitted_on["reranked_posts"] == pytest.approx(inside.reshape(-1, 4)[:, 0].mean(), abs=1e-3)
    again = DecisionModel.from_json(cascade.to_json())
    assert again == cascade and again.rerank_band == (0.2, 0.8)
    broken = json.loads(cascade.to_json())
    broken["screen"] = json.loads(cascade.to_json()) | {"screen": None}
    with pytest.raises(ValueError, match="without the reranker"):
        DecisionModel.from_json(broken)
    with pytest.raises(ValueError, match="reranker's score"):
        fit_cascade([replace(r, features=r.features[:-1]) for r in rows], (0.2, 0.8))


def test_language_agreement_is_learned_only_from_right_answers_across_languages() -> None:
    rng = np.random.default_rng(1)
    lang = FEATURES.index("same_language")

    def rows(cross_lingual_right: bool) -> list[LabelledRow]:
        out = []
        for post in range(400):
            for rank in range(5):
                correct = post % 2 == 0 and rank == 0
                # Some candidates are in another language; without cross-lingual posts, all of them are wrong.
                other = rank == 4 or (cross_lingual_right and correct and post % 8 == 0)
                x = [0.0] * len(FEATURES)
                x[FEATURES.index("cosine")] = rng.normal(0.85 if correct else 0.78, 0.03)
                x[lang] = 0.0 if other else 1.0
                out.append(LabelledRow(f"p{post}", "en", tuple(x), correct))
        return out

    english_only, _ = fit_decision(rows(False))
    assert english_only.coef[lang] == 0.0 and english_only.fitted_on["unlearnable"] == ["same_language"]
    # A cross-lingual candidate as strong as a same-language one gets the same probability.
    same, cross = np.zeros((2, len(FEATURES)))
    same[FEATURES.index("cosine")] = cross[FEATURES.index("cosine")] = 0.86
    same[lang] = 1.0
    p_same, p_cross = english_only.probability(english_only.raw(np.array([same, cross])))
    assert p_same == p_cross
    # With right answers across languages in the labels, the feature is learned.
    mixed, _ = fit_decision(rows(True))
    assert mixed.coef[lang] != 0.0 and mixed.fitted_on["unlearnable"] == []


def test_open_set_split_removes_golds_unless_a_kept_post_needs_them() -> None:
    queries = [f"q{i}" for i in range(10)] + ["none"]
    qrels = {f"q{i}": {f"fc{i}"} for i in range(10)}
    qrels["q9"] = {"fc0"}  # shares q0's fact-check
    split = open_set_split(queries, qrels, 0.5, seed=3)
    assert split == open_set_split(queries, qrels, 0.5, seed=3)
    assert "none" in split.unanswerable
    answerable_kept = [q for q in queries if q in split.qrels]
    assert len(answerable_kept) in (5, 6)  # five held out, one may keep a gold a kept post needs
    for fc in split.removed:
        assert not any(fc in golds for golds in split.qrels.values())
    assert split.unanswerable == frozenset(q for q in queries if q not in split.qrels)


def test_a_gold_leaves_the_corpus_with_its_copies_and_a_copy_counts_as_right() -> None:
    corpus = [
        FactCheck(id="g", title="Did ‘X’ happen?", claim='X said "yes".'),
        FactCheck(id="g-copy", title="Did 'X' happen?", claim="X  said 'yes'."),
        FactCheck(id="other", title="Did X happen?", claim="X said no."),
    ]
    twins = twin_groups(corpus)
    assert twins == {"g": {"g", "g-copy"}, "g-copy": {"g", "g-copy"}}
    assert with_twins({"p": {"g"}, "q": {"other"}}, twins) == {"p": {"g", "g-copy"}, "q": {"other"}}
    queries = ["p", "q"]
    split = open_set_split(queries, {"p": {"g"}, "q": {"other"}}, 0.5, seed=0, twins=twins)
    if "p" in split.unanswerable:  # its gold's copy must not stay behind to be found
        assert split.removed == {"g", "g-copy"}
    else:
        assert split.qrels["p"] == {"g", "g-copy"} and split.removed == {"other"}
    # Whichever post is held out, seeds cover both cases.
    held = {
        next(iter(open_set_split(queries, {"p": {"g"}, "q": {"other"}}, 0.5, s, twins).unanswerable)) for s in range(20)
    }
    assert held == {"p", "q"}


def test_open_set_report_counts_false_alarms_on_posts_without_a_fact_check() -> None:
    outcomes = {
        "a": [Published(0.97, "match", True)],
        "b": [Published(0.95, "match", False), Published(0.7, "suggestion", True)],
        "c": [Published(0.2, None, True)],
        "n1": [Published(0.96, "match", False)],
        "n2": [Published(0.65, "suggestion", False)],
        "n3": [],
    }
    qrels = {"a": {"x"}, "b": {"y"}, "c": {"z"}}
    report = open_set_report(outcomes, qrels)
    assert report["match"]["precision"] == pytest.approx(1 / 3)
    assert report["match"]["recall"] == pytest.approx(1 / 3)
    assert report["match"]["false_alarm"] == pytest.approx(1 / 3)
    assert report["match_or_suggestion"]["recall"] == pytest.approx(2 / 3)
    assert report["match_or_suggestion"]["false_alarm"] == pytest.approx(2 / 3)
    # Rank-1 probabilities: answerable 0.97, 0.95, 0.2 vs unanswerable 0.96, 0.65, 0.
    assert report["auroc"] == pytest.approx(6 / 9)
    assert math.isclose(report["rank1_correct_share"], 2 / 3)


def test_over_match_watch_flags_a_planted_fact_check_that_matches_everything() -> None:
    watch = OverMatchWatch(OverMatchConfig(window=200, share=0.05, factor=5.0, min_matches=20))
    rng = np.random.default_rng(1)
    flags = []
    for post in range(1000):
        ids = {f"fc{rng.integers(0, 400)}"} if rng.random() < 0.5 else set()
        if post >= 600:
            ids.add("planted")  # a bad edit: from now on it matches every post
        flags += watch.observe([(frozenset(ids), None)])
    assert [f.fact_check_id for f in flags] == ["planted"]
    assert flags[0].matches == 20 and "matched 20 of the 200 claims of the last posts" in flags[0].reason()
    # Already flagged: not again. Once a moderator clears it, the rate they accepted is part of
    # its baseline: it is flagged again only if it jumps again.
    assert watch.observe([(frozenset({"planted"}), None)] * 50) == []
    watch.cleared("planted")
    assert watch.observe([(frozenset({"planted"}), None)] * 300) == []


def test_a_viral_fact_check_is_judged_against_its_own_baseline() -> None:
    watch = OverMatchWatch(OverMatchConfig(window=100, share=0.05, factor=5.0, min_matches=5))
    steady = [(frozenset({"viral"}) if i % 10 == 0 else frozenset(), None) for i in range(100)]
    # Its first window looks like an outbreak (no baseline yet)...
    assert [f.fact_check_id for f in watch.observe(steady)] == ["viral"]
    watch.cleared("viral")
    # ...but once its 10% is its baseline, 10% more is no news.
    assert watch.observe(steady * 3) == []


def test_a_viral_claim_is_a_trend_and_many_unrelated_claims_on_one_fact_check_are_an_over_match() -> None:
    config = OverMatchConfig(window=200, share=0.05, factor=5.0, min_matches=20)
    viral, planted = OverMatchWatch(config), OverMatchWatch(config)
    rng = np.random.default_rng(2)
    flags: list[Any] = []
    for post in range(1000):
        background = frozenset({f"fc{rng.integers(0, 400)}"}) if rng.random() < 0.5 else frozenset()
        claim = f"claim-{rng.integers(0, 100_000)}"
        # From post 600 on, six posts in ten repeat one claim, which one fact-check debunks.
        if post >= 600 and rng.random() < 0.6:
            flags += viral.observe([(frozenset({"debunk-1"}), "viral-cluster")])
        else:
            flags += viral.observe([(background, claim)])
        # A planted fact-check shown for every post from 600 on, each post a claim of its own.
        planted_flags = planted.observe([(background | {"planted"} if post >= 600 else background, claim)])
        flags += planted_flags
    assert [f.fact_check_id for f in flags] == ["planted"]
    assert "matched 20 of the" in flags[0].reason() and "claims of the last posts" in flags[0].reason()


def test_without_clusters_every_post_is_a_claim_of_its_own() -> None:
    watch = OverMatchWatch(OverMatchConfig(window=50, share=0.2, factor=2.0, min_matches=10))
    assert [f.fact_check_id for f in watch.observe([(frozenset({"fc"}), None)] * 12)] == ["fc"]
    same_claim = OverMatchWatch(OverMatchConfig(window=50, share=0.2, factor=2.0, min_matches=10))
    assert same_claim.observe([(frozenset({"fc"}), "cluster-1")] * 50) == []


async def test_quarantined_fact_checks_leave_tier_match_and_flags_reach_the_store() -> None:
    class Store:
        def __init__(self) -> None:
            self.ids: frozenset[str] = frozenset()
            self.reasons: dict[str, str] = {}

        async def quarantined(self) -> frozenset[str]:
            return self.ids

        async def quarantine(self, fact_check_id: str, reason: str, flagged_by: str) -> bool:
            self.ids = self.ids | {fact_check_id}
            self.reasons[fact_check_id] = reason
            return True

    store = Store()
    clock = [0.0]
    guard = QuarantineGuard(
        store,
        OverMatchWatch(OverMatchConfig(window=50, share=0.2, factor=2.0, min_matches=10)),
        refresh_s=10,
        enforce=True,
        worker_id="w",
        clock=lambda: clock[0],
    )
    source = Source([[Candidate("generic", 0.99, 1, None, None), Candidate("other", 0.5, 2, None, None)]] * 16)
    retriever = Retriever(source, RetrievalConfig(HYBRID, 5, -1.0, 50), guard)
    cuts = {("*", "match"): 0.9, ("*", "suggestion"): 0.4}
    decisions = Decisions(cosine_is_probability(), cuts)

    async def published() -> list[list[Any]]:
        # As the worker runs it: search, then the guard observes every tiered match shown.
        found = [f.matches for f in await retriever.search("v", 4, queries(16), decisions)]
        await guard.observe((frozenset(m.fact_check_id for m in ms if m.tier is not None), None) for ms in found)
        return found

    first = await published()
    assert all(ms[0].tier == "match" for ms in first)
    assert "generic" in store.ids and "matched 16 of the 16 claims" in store.reasons["generic"]
    later = await published()
    assert all(ms[0].fact_check_id == "generic" and ms[0].tier == "suggestion" for ms in later)
    # Cleared in the store: back in tier "match" after the next refresh.
    store.ids = frozenset()
    clock[0] = 11.0
    again = await published()
    assert again[0][0].tier == "match"


def test_a_false_alarm_budget_raises_the_cut_only_where_it_is_stricter() -> None:
    from worker.retrieval.tiers import Threshold, false_alarm_cut, within_budgets

    tops = [0.9, 0.8, 0.7, 0.6] + [0.1] * 16  # 20 posts with nothing to find
    assert false_alarm_cut(tops, 0.10) == pytest.approx(0.7) and false_alarm_cut(tops, 0.10) > 0.7
    # Ten may be shown, but the eleventh ties with them: all sixteen at 0.1 stay below the cut.
    assert 0.1 < false_alarm_cut(tops, 0.5) < 0.6  # type: ignore[operator]
    assert false_alarm_cut([], 0.1) is None
    scored = [("en", 0.95, True)] * 30 + [("en", 0.75, True)] * 10 + [("en", 0.65, False)] * 10
    fitted = [
        Threshold("*", "match", 0.85, 0.95, 1.0, 0.75, 50),
        Threshold("*", "suggestion", 0.5, 0.8, 0.8, 1.0, 50),
    ]
    negatives = [("en", t) for t in tops]
    # A suggestion budget of 10% bounds both tiers: at most two of the 20 posts see anything.
    raised, notes = within_budgets(fitted, scored, negatives, {"suggestion": 0.10})
    cuts = {t.tier: t for t in raised}
    assert cuts["match"].threshold == 0.85, "the precision cut was already stricter"
    assert 0.7 < cuts["suggestion"].threshold < 0.75
    assert sum(top >= min(t.threshold for t in raised) for top in tops) <= 2
    assert cuts["suggestion"].fitted_precision == 1.0 and cuts["suggestion"].fitted_recall == 1.0
    assert [n["bound"] for n in notes] == ["precision", "false-alarm budget"]
    # A match budget of 5%: one post may see a match.
    raised, _ = within_budgets(fitted, scored, negatives, {"match": 0.05, "suggestion": 0.10})
    assert {t.tier: t.threshold for t in raised}["match"] == pytest.approx(0.85)
    tight, _ = within_budgets(fitted, scored, negatives, {"match": 0.0001})
    assert {t.tier: t.threshold for t in tight}["match"] > 0.9
    assert {t.tier: t.threshold for t in tight}["suggestion"] == 0.5, "a match budget leaves suggestions alone"
    # A language with too few posts of its own is held to the budget over all languages.
    german = [Threshold("de", "suggestion", 0.5, 0.8, 0.8, 1.0, 20)]
    raised, notes = within_budgets(german, scored, [("de", 0.99), *negatives], {"suggestion": 0.10})
    assert notes[0]["negatives"] == 21 and raised[0].threshold > 0.8


def test_calibration_with_a_budget_shows_no_more_than_it_to_posts_without_a_fact_check() -> None:
    from worker.retrieval.calibrate import LabelledPosts, fit_calibration

    rng = np.random.default_rng(4)
    rows = []
    queries, qrels = {}, {}
    for post in range(500):
        q = f"p{post}"
        queries[q] = "a post"
        answerable = post % 2 == 0
        if answerable:
            qrels[q] = {f"{q}-0"}
        for rank in range(5):
            correct = answerable and rank == 0
            x = [0.0] * len(FEATURES)
            x[FEATURES.index("cosine")] = rng.normal(0.84 if correct else 0.79, 0.03)
            x[FEATURES.index("inv_dense_rank")] = 1 / (rank + 1)
            rows.append(LabelledRow(q, "en", tuple(x), correct))
    labelled = LabelledPosts(queries, dict.fromkeys(queries, "en"), qrels)
    targets = {"match": 0.9, "suggestion": 0.6}
    free = fit_calibration(rows, labelled, targets, top_k=5, min_support=10)
    assert free.report["match_or_suggestion"]["false_alarm"] > 0.10, "the data must need the budget"
    held = fit_calibration(
        rows, labelled, targets, top_k=5, min_support=10, false_alarm_budgets={"suggestion": 0.10, "match": 0.02}
    )
    assert held.report["match_or_suggestion"]["false_alarm"] <= 0.10
    assert held.report["match"]["false_alarm"] <= 0.02
    assert held.report["match_or_suggestion"]["recall"] < free.report["match_or_suggestion"]["recall"]
    assert any(c["bound"] == "false-alarm budget" for c in held.report["cuts"])
    assert held.report["false_alarm_budgets"] == {"suggestion": 0.10, "match": 0.02}


def test_a_cut_resting_on_few_candidates_sits_higher_when_it_must_clear_its_target_by_a_margin() -> None:
    from worker.retrieval.tiers import false_alarm_cut, fit_threshold, wilson_bounds

    low, high = wilson_bounds(19, 20, 1.2816)
    assert low < 0.95 < high and wilson_bounds(19, 20, 0) == (0.95, 0.95)
    assert wilson_bounds(950, 1000, 1.2816)[0] > low, "more evidence, a tighter bound"
    # 20 right at the top, then one wrong in every ten.
    scored = [(1.0 - i / 100, True) for i in range(20)] + [(0.7 - i / 1000, i % 10 != 0) for i in range(200)]
    plain = fit_threshold(scored, target=0.9, min_support=10)
    sure = fit_threshold(scored, target=0.9, min_support=10, z=1.2816)
    assert plain is not None and sure is not None and sure[0] > plain[0] and sure[2] < plain[2]
    tops = [0.9 - i / 100 for i in range(20)] + [0.0] * 80
    assert false_alarm_cut(tops, 0.1, z=1.2816) > false_alarm_cut(tops, 0.1)  # type: ignore[operator]


def test_a_post_given_none_of_these_has_nothing_to_find_and_rejections_alone_label_only_themselves() -> None:
    from worker.retrieval.calibrate import LabelledPosts

    rows = [
        {"post_id": "a", "post_text": "x", "fact_check_id": "f1", "verdict": "confirm"},
        {"post_id": "b", "post_text": "y", "fact_check_id": "f2", "verdict": "reject"},
        {"post_id": "c", "post_text": "z", "fact_check_id": "f3", "verdict": "reject", "none_of_these": True},
        {"post_id": "c", "post_text": "z", "fact_check_id": "f4", "verdict": "reject", "none_of_these": True},
    ]
    labelled = LabelledPosts({}, {}, {}).with_feedback(rows)
    assert labelled.qrels == {"feedback:a": {"f1"}}
    assert labelled.judged == {"feedback:b": {"f2"}}, "a lone rejection labels only its own pair"
    assert "feedback:c" in labelled.queries and "feedback:c" not in labelled.judged
