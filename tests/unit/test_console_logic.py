"""The console's pure logic: what a verdict becomes, highlighting, the sign-in rate limit."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from worker.console.auth import RateLimiter, hash_password
from worker.console.review import (
    BadVerdict,
    cluster_feedback,
    cluster_matches,
    feedback_records,
    highlight,
    shared_terms,
)
from worker.domain import ReviewItem
from worker.wire import Feedback


def item(text: str | None = "Vaccines contain microchips, they say") -> ReviewItem:
    matches = [
        {"fact_check_id": "fc-1", "shared_terms": ["vaccin", "microchip"]},
        {"fact_check_id": "fc-2", "shared_terms": []},
    ]
    return ReviewItem(
        "p1", {"matches": matches}, text, "en", "x", "v7", "match", 0.93, datetime(2026, 12, 1, tzinfo=UTC)
    )


def test_a_verdict_is_one_feedback_record_the_trainer_reads_unchanged() -> None:
    ((fc, verdict, record),) = feedback_records(item(), "confirm", "fc-2", moderator="ana", note="  the chip one ")
    parsed = Feedback.model_validate(record)
    assert (fc, verdict) == ("fc-2", "confirm")
    assert parsed.post_id == "p1" and parsed.fact_check_id == "fc-2" and parsed.verdict == "confirm"
    assert parsed.moderator == "ana" and parsed.model_version == "v7" and parsed.note == "the chip one"
    assert parsed.post_text == "Vaccines contain microchips, they say"


def test_a_cluster_verdict_judges_each_post_on_what_it_showed_and_lists_the_shared_fact_checks_first() -> None:
    def post(post_id: str, shown: dict[str, float]) -> ReviewItem:
        matches = [{"fact_check_id": fc, "probability": p} for fc, p in shown.items()]
        when = datetime(2026, 12, 1, tzinfo=UTC)
        return ReviewItem(post_id, {"matches": matches}, f"text {post_id}", "en", "x", "v7", "match", 0.9, when)

    posts = [post("a", {"fc-1": 0.9, "fc-2": 0.4}), post("b", {"fc-1": 0.95}), post("c", {"fc-3": 0.99})]
    confirmed = cluster_feedback(posts, "confirm", "fc-1", moderator="ana", note=None)
    assert {p: [(fc, v) for fc, v, _ in rs] for p, rs in confirmed.items()} == {
        "a": [("fc-1", "confirm")],
        "b": [("fc-1", "confirm")],
    }
    assert [Feedback.model_validate(r[2]).post_text for rs in confirmed.values() for r in rs] == ["text a", "text b"]
    assert set(cluster_feedback(posts, "none", None, moderator="ana", note=None)) == {"a", "b", "c"}
    with pytest.raises(BadVerdict):
        cluster_feedback(posts, "reject", "fc-9", moderator="ana", note=None)
    shown = cluster_matches(posts)
    assert [(m.match["fact_check_id"], m.posts, m.match["probability"]) for m in shown] == [
        ("fc-1", 2, 0.95),
        ("fc-3", 1, 0.99),
        ("fc-2", 1, 0.4),
    ]


def test_none_of_these_rejects_every_match_shown() -> None:
    records = feedback_records(item(), "none", None, moderator="ana", note=None)
    assert [(fc, v) for fc, v, _ in records] == [("fc-1", "reject"), ("fc-2", "reject")]
    assert all(record["none_of_these"] for _, _, record in records), "calibration reads it as nothing to find"
    [(_, _, single)] = feedback_records(item(), "reject", "fc-1", moderator="ana", note=None)
    assert single["none_of_these"] is False


@pytest.mark.parametrize(
    ("choice", "fact_check_id", "text"),
    [("confirm", "fc-9", "t"), ("maybe", "fc-1", "t"), ("reject", None, "t"), ("confirm", "fc-1", None)],
)
def test_a_verdict_on_something_the_item_did_not_show_is_refused(
    choice: str, fact_check_id: str | None, text: str | None
) -> None:
    with pytest.raises(BadVerdict):
        feedback_records(item(text), choice, fact_check_id, moderator="ana", note=None)


def test_shared_terms_are_highlighted_by_their_stems_and_the_rest_stays_text() -> None:
    segments = highlight("Vaccines contain <b>microchips</b>!", shared_terms(item()))
    assert [s.text for s in segments if s.shared] == ["Vaccines", "microchips"]
    assert "".join(s.text for s in segments) == "Vaccines contain <b>microchips</b>!"
    assert highlight("", {"x"}) == [] and [s.text for s in highlight("plain", set())] == ["plain"]


def test_failed_sign_ins_are_limited_per_name_and_per_address() -> None:
    limiter = RateLimiter(limit=3, window_s=60)
    for _ in range(3):
        assert not limiter.blocked("name:ana", "addr:1.2.3.4")
        limiter.record("name:ana", "addr:1.2.3.4")
    assert limiter.blocked("name:ana", "addr:9.9.9.9") and limiter.blocked("name:bob", "addr:1.2.3.4")
    assert not limiter.blocked("name:bob", "addr:9.9.9.9")


def test_a_short_password_is_refused_and_a_hash_never_holds_the_password() -> None:
    with pytest.raises(ValueError, match="8 characters"):
        hash_password("short")
    hashed = hash_password("a long enough secret")
    assert hashed.startswith("$argon2id$") and "secret" not in hashed


def test_the_precision_recall_plot_puts_recall_across_and_precision_up() -> None:
    from worker.console.review import pr_polyline

    assert pr_polyline([[0.9, 1.0, 0.5, 0.0], [0.5, 0.8, 1.0, 0.1]]) == "120.0,0.0 240.0,32.0"
    assert pr_polyline([]) == ""


async def test_live_precision_per_tier_and_language_keeps_only_what_the_window_holds() -> None:
    from prometheus_client import CollectorRegistry

    from worker.console.precision import LivePrecision, live_precision
    from worker.domain import VerdictTally

    tallies = [
        VerdictTally("match", "en", 18, 2),
        VerdictTally("match", "fr", 1, 3),
        VerdictTally("suggestion", "en", 3, 1),
    ]
    figures = live_precision(tallies)
    assert figures[("match", "en")] == (0.9, 20) and figures[("match", "fr")] == (0.25, 4)
    assert figures[("match", "*")] == (19 / 24, 24) and figures[("suggestion", "*")] == (0.75, 4)

    class Tallies:
        def __init__(self) -> None:
            self.rows: list[VerdictTally] | Exception = tallies

        async def tallies(self, since: datetime) -> list[VerdictTally]:
            assert since < datetime.now(UTC)
            if isinstance(self.rows, Exception):
                raise self.rows
            return self.rows

    source, registry = Tallies(), CollectorRegistry()
    live = LivePrecision(source, registry, {"match": 0.95, "suggestion": 0.8}, window_s=3600, ttl_s=0)
    await live.refresh()
    value = registry.get_sample_value
    assert value("factmatch_live_precision", {"tier": "match", "lang": "fr"}) == 0.25
    assert value("factmatch_live_verdicts", {"tier": "match", "lang": "*"}) == 24
    assert value("factmatch_tier_target_precision", {"tier": "match"}) == 0.95
    source.rows = [VerdictTally("match", "en", 5, 0)]
    await live.refresh()
    assert value("factmatch_live_precision", {"tier": "match", "lang": "fr"}) is None, "French left the window"
    assert value("factmatch_live_precision", {"tier": "match", "lang": "*"}) == 1.0
    source.rows = OSError("database down")
    await live.refresh()  # logged; the gauges keep their last values
    assert value("factmatch_live_verdicts", {"tier": "match", "lang": "en"}) == 5
