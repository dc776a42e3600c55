"""Unit tier: the recalibration's held-out split, judged precision and gate (pure logic)."""

from __future__ import annotations

from trainer.recalibrate import held_out, judged, latest_verdicts, refit_gate
from worker.wire import Match


def shown(*pairs: tuple[str, str | None]) -> list[Match]:
    return [Match(fact_check_id=fc, score=0.9, rank=i + 1, claim="c", tier=tier) for i, (fc, tier) in enumerate(pairs)]  # type: ignore[arg-type]


def test_held_out_posts_are_the_same_every_run_and_about_the_share() -> None:
    posts = [f"post-{i}" for i in range(2000)]
    chosen = [p for p in posts if held_out(p, 0.3)]
    assert chosen == [p for p in posts if held_out(p, 0.3)]
    assert 0.26 < len(chosen) / len(posts) < 0.34
    assert set(chosen) <= {p for p in posts if held_out(p, 0.5)}, "a larger share holds out a superset"


def test_the_latest_verdict_wins_and_precision_counts_what_each_tier_shows() -> None:
    rows = [
        {"post_id": "a", "fact_check_id": "f1", "verdict": "reject"},
        {"post_id": "a", "fact_check_id": "f1", "verdict": "confirm"},  # changed their mind
        {"post_id": "b", "fact_check_id": "f2", "verdict": "reject"},
        {"post_id": "c", "fact_check_id": "f3", "verdict": "confirm"},
    ]
    verdicts = latest_verdicts(rows)
    assert verdicts == {("a", "f1"): True, ("b", "f2"): False, ("c", "f3"): True}
    figures = judged(
        {"a": shown(("f1", "match")), "b": shown(("f2", "suggestion")), "c": shown(("f3", None))}, verdicts
    )
    assert figures["match"] == {"judged": 1, "precision": 1.0}
    assert figures["match_or_suggestion"] == {"judged": 2, "precision": 0.5}
    assert judged({}, verdicts)["match"] == {"judged": 0, "precision": None}


def test_a_refit_is_refused_when_it_loses_held_out_precision_or_shows_too_little() -> None:
    def fig(match: tuple[int, float | None], shown_any: tuple[int, float | None]) -> dict[str, object]:
        return {
            "match": {"judged": match[0], "precision": match[1]},
            "match_or_suggestion": {"judged": shown_any[0], "precision": shown_any[1]},
        }

    in_use = fig((40, 0.90), (80, 0.80))
    assert refit_gate(in_use, fig((45, 0.93), (90, 0.82)), min_judged=20, margin=0.0)[0]
    worse, reason = refit_gate(in_use, fig((45, 0.85), (90, 0.82)), min_judged=20, margin=0.0)
    assert not worse and "match precision" in reason and "0.850" in reason
    assert refit_gate(in_use, fig((45, 0.85), (90, 0.82)), min_judged=20, margin=0.06)[0], "within the margin"
    thin, reason = refit_gate(in_use, fig((5, 1.0), (10, 1.0)), min_judged=20, margin=0.0)
    assert not thin and "fewer than 20" in reason
    # A decision in use that showed too little to be judged is no bar: the refit is judged on its own.
    assert refit_gate(fig((0, None), (3, 0.3)), fig((30, 0.7), (60, 0.6)), min_judged=20, margin=0.0)[0]
