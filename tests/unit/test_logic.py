"""Unit tier: pure logic (batching, wire decoding, settings, metrics), no services."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from pydantic import ValidationError

from worker.core.batching import plan_batches
from worker.core.decoding import Limits, decode_fact_check_event, decode_post
from worker.retrieval.evaluation import retrieval_metrics
from worker.settings import Settings
from worker.wire import DeadLetter, FactCheckEvent, Post, RawRecord, document_text


def limits(max_text_chars: int = 20_000) -> Limits:
    return Limits(max_record_bytes=1_048_576, max_depth=32, max_text_chars=max_text_chars)


def record(value: bytes | None, key: bytes | None = b"k", offset: int = 7) -> RawRecord:
    return RawRecord(topic="posts", partition=2, offset=offset, key=key, value=value, timestamp_ms=1)


# --- batching ------------------------------------------------------------------------


def test_plan_batches_respects_budget_and_covers_every_index() -> None:
    counts = [5, 300, 12, 40, 7, 512, 9, 33]
    groups = plan_batches(counts, token_budget=600)
    assert sorted(i for g in groups for i in g) == list(range(len(counts)))
    for group in groups:
        longest = max(counts[i] for i in group)
        assert len(group) * longest <= 600 or len(group) == 1
        # Sorted by length inside a group.
        assert [counts[i] for i in group] == sorted(counts[i] for i in group)


def test_long_posts_make_smaller_batches() -> None:
    short = plan_batches([10] * 64, token_budget=640)
    long = plan_batches([320] * 64, token_budget=640)
    assert len(short) == 1
    assert len(long) == 32 and all(len(g) == 2 for g in long)


def test_a_text_over_budget_gets_its_own_batch() -> None:
    assert plan_batches([5000, 3], token_budget=100) == [[1], [0]]


def test_plan_batches_rejects_bad_budget() -> None:
    with pytest.raises(ValueError):
        plan_batches([1], 0)


# --- wire ----------------------------------------------------------------------------


def test_valid_post_decodes_and_numeric_id_becomes_text() -> None:
    post = decode_post(record(json.dumps({"id": 42, "text": " hi ", "lang": "en"}).encode()), limits(100))
    assert isinstance(post, Post)
    assert post.id == "42" and post.text == "hi" and post.lang == "en"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"\xff\xfe\x00", "invalid_utf8"),
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "invalid_schema"),
        (b'{"id": "a"}', "invalid_schema"),
        (b'{"id": "a", "text": 5}', "invalid_schema"),
        (b'{"id": true, "text": "x"}', "invalid_schema"),
        (b'{"id": "a", "text": "   "}', "empty_text"),
        (b'{"id": "a", "text": "' + b"x" * 101 + b'"}', "text_too_long"),
        (b'{"id": "a", "text": "x", "created_at": "yesterday"}', "invalid_schema"),
        (b"", "invalid_json"),
    ],
)
def test_bad_posts_become_dead_letters_with_original_bytes(value: bytes, reason: str) -> None:
    letter = decode_post(record(value), limits(100))
    assert isinstance(letter, DeadLetter)
    assert letter.reason == reason
    assert letter.original_value() == value
    assert (letter.topic, letter.partition, letter.offset) == ("posts", 2, 7)
    assert base64.b64decode(letter.key_b64 or "") == b"k"
    assert letter.error


def test_fact_check_events() -> None:
    upsert = decode_fact_check_event(record(b'{"id": "f1", "claim": "c", "title": "t"}'), limits())
    assert isinstance(upsert, FactCheckEvent) and upsert.op == "upsert"
    delete = decode_fact_check_event(record(b'{"id": "f1", "op": "delete"}'), limits())
    assert isinstance(delete, FactCheckEvent) and delete.op == "delete"
    tombstone = decode_fact_check_event(record(None, key=b"f2"), limits())
    assert isinstance(tombstone, FactCheckEvent) and tombstone.id == "f2" and tombstone.op == "delete"
    assert isinstance(decode_fact_check_event(record(b'{"id": "f1"}'), limits()), DeadLetter)
    assert isinstance(decode_fact_check_event(record(None, key=None), limits()), DeadLetter)


def test_document_text_joins_title_and_claim() -> None:
    assert document_text("Title", "Claim") == "Title\nClaim"
    assert document_text(None, "Claim") == "Claim"
    assert document_text("Claim", "Claim") == "Claim"


# --- settings ------------------------------------------------------------------------


def test_settings_refuse_bad_values() -> None:
    for bad in (
        {"top_k": 0},
        {"min_score": 2},
        {"kafka_bootstrap": "no-port"},
        {"database_url": "mysql://x"},
        {"db_pool_min": 5, "db_pool_max": 2},
        {"topic_posts": "same", "topic_matches": "same"},
        {"device": "tpu"},
        {"kafka_security_protocol": "SASL_SSL"},
        {"retry_attempts": 50, "retry_backoff_max_s": 300},
        {"tier_match_precision": 0.6, "tier_suggestion_precision": 0.9},
        {"tier_match_false_alarm": 0.1, "tier_suggestion_false_alarm": 0.05},
        {"tier_suggestion_false_alarm": 1.5},
        {"retrieval_mode": "psychic"},
        {"reuse_window_s": 86_400, "cluster_window_s": 3_600},
        {"cluster_similarity": 1.5},
    ):
        with pytest.raises(ValidationError):
            Settings(_env_file=None, **bad)  # type: ignore[arg-type]


def test_settings_read_the_environment_and_hide_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACTMATCH_TOP_K", "7")
    monkeypatch.setenv("FACTMATCH_DATABASE_URL", "postgresql://u:hunter2@db/x")
    monkeypatch.setenv("FACTMATCH_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("FACTMATCH_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("FACTMATCH_KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("FACTMATCH_KAFKA_SASL_PASSWORD", "s3cret-pw")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.top_k == 7
    assert settings.require_database_url() == "postgresql://u:hunter2@db/x"
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert "hunter2" not in text and "s3cret-pw" not in text


def test_bad_database_url_error_does_not_echo_it() -> None:
    with pytest.raises(ValidationError) as info:
        Settings(_env_file=None, database_url="mysql://u:hunter2@db/x")  # type: ignore[call-arg]
    assert "hunter2" not in str(info.value)


# --- metrics -------------------------------------------------------------------------


def test_retrieval_metrics_on_a_hand_computed_example() -> None:
    ranked = {"q1": ["a", "b", "c"], "q2": ["x", "y", "z"], "q3": ["m", "n"]}
    qrels = {"q1": {"a"}, "q2": {"y"}, "q3": {"p"}}
    m = retrieval_metrics(ranked, qrels)
    assert m["accuracy@1"] == pytest.approx(1 / 3)
    assert m["accuracy@3"] == pytest.approx(2 / 3)
    assert m["mrr@10"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert m["map@5"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert m["precision@3"] == pytest.approx((1 / 3 + 1 / 3) / 3)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / 1.5849625007211562) / 3)
    assert m["queries"] == 3


# --- fusion --------------------------------------------------------------------------


def fc(mode: str = "hybrid", k: int = 60, dense: float = 1.0, lexical: float = 1.0) -> Any:
    from worker.retrieval.modes import FusionConfig

    return FusionConfig(mode, k, dense, lexical)  # type: ignore[arg-type]


def test_reciprocal_rank_fusion_rewards_agreement_and_keeps_modes_apart() -> None:
    from worker.retrieval.modes import Candidate, fuse

    cands = [
        Candidate("both", dense_score=0.70, dense_rank=2, lexical_score=0.3, lexical_rank=2),
        Candidate("dense-top", dense_score=0.80, dense_rank=1, lexical_score=None, lexical_rank=None),
        Candidate("lex-top", dense_score=0.40, dense_rank=None, lexical_score=0.9, lexical_rank=1),
        Candidate("weak", dense_score=0.10, dense_rank=3, lexical_score=None, lexical_rank=None),
    ]
    hybrid = fuse(cands, fc("hybrid"), top_k=10, min_score=0.0)
    assert next(c.fact_check_id for c, _ in hybrid) == "both"
    assert hybrid[0][1] == pytest.approx(2 / 62)
    assert [c.fact_check_id for c, _ in fuse(cands, fc("dense"), top_k=10, min_score=0.0)] == [
        "dense-top",
        "both",
        "weak",
    ]
    assert [c.fact_check_id for c, _ in fuse(cands, fc("lexical"), top_k=10, min_score=0.0)] == [
        "lex-top",
        "both",
    ]
    # min_score is a cosine floor in every mode; weights move the balance.
    assert "weak" not in [c.fact_check_id for c, _ in fuse(cands, fc("hybrid"), top_k=10, min_score=0.2)]
    lexical_heavy = fuse(cands, fc("hybrid", dense=0.0, lexical=1.0), top_k=1, min_score=0)
    assert lexical_heavy[0][0].fact_check_id == "lex-top"


def test_every_mode_name_has_one_class_and_settings_take_exactly_those_names() -> None:
    from typing import get_args

    from worker.configs import fusion_config
    from worker.retrieval.modes import MODE_NAMES, MODES

    assert set(MODES) == set(MODE_NAMES)
    assert set(get_args(Settings.model_fields["retrieval_mode"].annotation)) == set(MODE_NAMES)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    # One source of defaults: the fusion config is the settings' own.
    config = fusion_config(settings)
    assert (config.mode, config.rrf_k, config.dense_weight, config.lexical_weight) == (
        settings.retrieval_mode,
        settings.rrf_k,
        settings.dense_weight,
        settings.lexical_weight,
    )
    with pytest.raises(ValidationError):
        Settings(_env_file=None, retrieval_mode="bm25")  # type: ignore[call-arg]


async def test_retriever_cuts_to_top_k_fetches_details_for_those_only_and_tiers_rank_by_post_language() -> None:
    from tests.fakes import TableSource, queries
    from worker.retrieval.modes import Candidate
    from worker.retrieval.retriever import RetrievalConfig, Retriever

    def Source() -> TableSource:
        return TableSource(
            [
                [
                    Candidate(f"q{qi}-a", 0.91, 1, 0.5, 2),
                    Candidate(f"q{qi}-b", 0.70, 2, 0.9, 1),
                    Candidate(f"q{qi}-c", 0.20, 3, None, None),
                ]
                for qi in range(2)
            ],
            frozenset({"x"}),
        )

    source = Source()
    retriever = Retriever(source, RetrievalConfig(fc("hybrid"), top_k=2, min_score=0.3, candidates=50))
    from tests.unit.test_decisions import cosine_is_probability
    from worker.retrieval.decision import Decisions

    thresholds = {("*", "match"): 0.9, ("*", "suggestion"): 0.6, ("de", "match"): 0.95}
    decisions = Decisions(cosine_is_probability(), thresholds)
    found = [f.matches for f in await retriever.search("v1", 4, queries(2, ["en", "de"]), decisions)]
    assert source.sources == {"dense", "lexical"}
    assert [[m.fact_check_id for m in ms] for ms in found] == [["q0-a", "q0-b"], ["q1-a", "q1-b"]]
    # Details only for what is published; "c" is below the cosine floor anyway.
    assert sorted(source.asked) == ["q0-a", "q0-b", "q1-a", "q1-b"]
    assert [m.tier for m in found[0]] == ["match", "suggestion"]
    assert [m.tier for m in found[1]] == ["suggestion", "suggestion"]  # German has its own, higher match cut
    assert found[0][0].claim == "claim q0-a" and found[0][0].rank == 1 and found[0][1].rank == 2
    dense_only = Retriever(source, RetrievalConfig(fc("dense"), top_k=5, min_score=-1, candidates=50))
    await dense_only.search("v1", 4, queries(2, ["en", "de"]))
    assert source.sources == {"dense"}


# --- calibration ---------------------------------------------------------------------


def test_fit_threshold_takes_the_lowest_cut_that_keeps_precision() -> None:
    from worker.retrieval.tiers import fit_threshold, precision_at

    scored = [(0.9, True)] * 30 + [(0.8, True)] * 20 + [(0.8, False)] * 5 + [(0.7, True)] * 5 + [(0.7, False)] * 40
    threshold, precision, recall = fit_threshold(scored, target=0.9, min_support=10)  # type: ignore[misc]
    assert threshold == 0.8 and precision == pytest.approx(50 / 55) and recall == pytest.approx(50 / 55)
    assert precision_at(scored, threshold) == (pytest.approx(50 / 55), 55)
    assert fit_threshold(scored, target=0.99, min_support=10) == (0.9, 1.0, pytest.approx(30 / 55))
    assert fit_threshold(scored, target=0.99, min_support=31) is None
    assert fit_threshold([], target=0.5) is None


def test_thresholds_per_language_with_fallback_and_tiers() -> None:
    from worker.retrieval.tiers import cuts_of, fit_thresholds, tier_for

    scored = [("en", 0.9, True)] * 30 + [("en", 0.6, False)] * 30 + [("de", 0.95, True)] * 5
    fitted = fit_thresholds(scored, {"match": 0.9, "suggestion": 0.5}, min_support=10)
    langs = {(t.lang, t.tier) for t in fitted}
    assert ("en", "match") in langs and ("*", "match") in langs
    assert not any(t.lang == "de" for t in fitted), "5 German pairs are too few for their own cut"
    cuts = cuts_of(fitted)
    assert tier_for(0.92, "en", cuts) == "match"
    assert tier_for(0.61, "en", cuts) == "suggestion"
    assert tier_for(0.1, "en", cuts) is None
    assert tier_for(0.92, "de-AT", cuts) == "match"  # falls back to the all-language cut


def test_encoder_calls_are_small_on_cpu_and_large_on_a_gpu_unless_set() -> None:
    from worker.settings import Settings

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.token_budget("cpu") == 2048 and settings.token_budget("cuda") == 16_384
    assert Settings(_env_file=None, batch_token_budget=4096).token_budget("cpu") == 4096  # type: ignore[call-arg]
