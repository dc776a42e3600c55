"""Decisions where they were not fitted: the corpus grows after calibration (issue 26, step 1).

A version's decision (its model and tier cuts) is fitted open-set with only a random share of
the corpus loaded (``--share`` 0.7: the fact-checks published since then are not there yet),
then judged with the whole corpus, over several seeds; beside it, the same fit with the whole
corpus loaded, judged the same way. The difference is what a growing corpus costs a decision
that nobody refitted. Each variant is measured so:

- ``defaults``: the tiers as a worker fits them out of the box (precision targets and the
  default false-alarm budgets); issue 26's goals are printed beside it;
- ``precision targets``: the tiers cut at their target precisions only (today's default);
- ``+ false-alarm budgets``: also held to a share of posts with no fact-check that may see a
  match (``--match-budget``) or anything (``--suggestion-budget``), the stricter cut winning;
- each also ``at z``: a cut's precision (and false alarms) must clear its target by ``--z``
  standard errors (Wilson bounds), so a cut resting on few labelled candidates sits higher.

``--drop any`` leaves out any fact-checks (so some fitting posts lose their answer and are
labelled as having none, as they were when the decision was fitted); ``--drop distractors``
leaves out only fact-checks no fitting post has as its answer (the labels unchanged, the pools
meet more near misses once the corpus is whole: the drift of a corpus that grows around old
claims). Fitted on train and judged on dev by default (where choices are made); ``--judge test`` fits on
train + dev and reports test (once). Every split is open-set as in benchmarks/decisions.py (half
its posts lose their gold fact-checks).

Candidates come from benchmarks/decisions.py's cache (the worker's SQL, run once over the full
corpus): leaving fact-checks out of every pool is what a smaller corpus does to ranking and to
the decision features over each pool, except that the lexical scores keep the full corpus's
statistics.

    .venv/bin/python benchmarks/decision_shift.py [--model DIR] [--seeds 5] [--judge dev|test]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

from decisions import DATA, ROOT, CachedSource, NoEncoder, gathered_splits, judge, merged

from worker.configs import retrieval_config, tier_targets
from worker.local.models import default_model_ref
from worker.retrieval.calibrate import Calibration, LabelledPosts, collect_pools, decision_rows, fit_calibration
from worker.retrieval.openset import fmt
from worker.retrieval.retriever import Retriever
from worker.retrieval.tiers import Tier
from worker.settings import Settings

FIGURES = (("match", "precision"), ("match", "recall"), ("match", "false_alarm"))
FIGURES += (("match_or_suggestion", "precision"), ("match_or_suggestion", "recall"))
FIGURES += (("match_or_suggestion", "false_alarm"),)
DEFAULTS = "defaults"
# Issue 26's goals for the default decision fitted on the smaller corpus and judged on the whole
# one: (figure, at least / at most, value); and the most match precision the growth may cost.
GOALS = (("match precision", ">=", 0.95), ("match recall", ">=", 0.75), ("match false_alarm", "<=", 0.02))
GOALS += (("auroc", ">=", 0.95),)
MAX_PRECISION_DROP = 0.02


def without(posts: LabelledPosts, missing: frozenset[str]) -> LabelledPosts:
    """``posts`` as labelled while ``missing`` fact-checks were not in the corpus (a post whose
    every gold is missing has nothing to find)."""
    qrels = {q: golds - missing for q, golds in posts.qrels.items() if golds - missing}
    return replace(posts, qrels=qrels, exclude=posts.exclude | missing)


async def fit(
    retriever: Retriever, enc: Any, posts: LabelledPosts, settings: Settings, budgets: dict[Tier, float], z: float
) -> Calibration:
    pools = await collect_pools(retriever, "m", enc, posts, featurize=True)
    return fit_calibration(
        decision_rows(pools, posts),
        posts,
        tier_targets(settings),
        top_k=settings.top_k,
        min_support=settings.tier_min_support,
        false_alarm_budgets=budgets,
        z=z,
    )


def figures(report: dict[str, Any]) -> dict[str, float]:
    return {f"{tier} {name}": report[tier][name] or 0.0 for tier, name in FIGURES} | {"auroc": report["auroc"]}


async def run(model: str, settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    splits, gathered = await gathered_splits(model, settings, args.cache)
    enc = NoEncoder(gathered.dimension)
    retriever = Retriever(CachedSource(gathered), replace(retrieval_config(settings), min_score=-1.0))
    fit_on = splits["train"] if args.judge == "dev" else merged(splits["train"], splits["dev"])
    judged = splits[args.judge]
    corpus = sorted(gathered.corpus)
    if args.drop == "distractors":
        # Only fact-checks that no fitting post has as its answer: the labels stay as they were,
        # the pools meet more near misses once the corpus is whole.
        golds = {fc for golds in fit_on.qrels.values() for fc in golds}
        corpus = [fc for fc in corpus if fc not in golds]
    budgets: dict[Tier, float] = {"match": args.match_budget, "suggestion": args.suggestion_budget}
    defaults = {t: b for t, b in zip(("match", "suggestion"), settings_budgets(settings), strict=True) if b}
    variants: dict[str, tuple[dict[Tier, float], float]] = {
        DEFAULTS: (defaults, 0.0),
        "precision targets": ({}, 0.0),
        f"targets at z={args.z}": ({}, args.z),
        "+ false-alarm budgets": (budgets, 0.0),
        f"+ budgets at z={args.z}": (budgets, args.z),
    }
    out: dict[str, Any] = {"model": model, "judge": args.judge, "share": args.share, "seeds": args.seeds}
    out["drop"] = args.drop
    for name, (budget, z) in variants.items():
        whole = await fit(retriever, enc, fit_on, settings, budget, z)
        full = figures((await judge(retriever, enc, judged, whole.decisions()))[0])
        grown: list[dict[str, float]] = []
        for seed in range(args.seeds):
            dropped = round((1 - args.share) * len(gathered.corpus))
            missing = frozenset(random.Random(seed).sample(corpus, dropped))
            partial = await fit(retriever, enc, without(fit_on, missing), settings, budget, z)
            grown.append(figures((await judge(retriever, enc, judged, partial.decisions()))[0]))
            print(f"  {name}, seed {seed}: {json.dumps({k: round(v, 3) for k, v in grown[-1].items()})}")
        mean = {k: statistics.fmean(g[k] for g in grown) for k in full}
        spread = {k: statistics.pstdev(g[k] for g in grown) for k in full}
        out[name] = {"budgets": budget, "z": z, "fitted_on_whole_corpus": full, "fitted_on_share": mean, "sd": spread}
    return out


def settings_budgets(settings: Settings) -> tuple[float | None, float | None]:
    """The false-alarm budgets a worker fits with out of the box (match, suggestion)."""
    return settings.tier_match_false_alarm, settings.tier_suggestion_false_alarm


def show_goals(result: dict[str, Any]) -> None:
    """The default decision, fitted on the smaller corpus and judged on the whole one, beside the goals."""
    r = result.get(DEFAULTS)
    if not r:
        return
    share = round(100 * result["share"])
    judged = result["judge"]
    print(f"\nGoals (default settings, fitted with {share}% of the corpus, judged on {judged} with all of it):")
    for key, way, goal in GOALS:
        value = r["fitted_on_share"][key]
        met = value >= goal if way == ">=" else value <= goal
        print(f"  {key:22s} {value:6.3f} (goal {way} {goal}) {'met' if met else 'missed'}")
    drop = r["fitted_on_whole_corpus"]["match precision"] - r["fitted_on_share"]["match precision"]
    met = drop <= MAX_PRECISION_DROP
    print(f"  {'match precision drop':22s} {drop:+6.3f} (goal <= {MAX_PRECISION_DROP}) {'met' if met else 'missed'}")


def show(result: dict[str, Any]) -> None:
    share = round(100 * result["share"])
    name, judged, drop = Path(result["model"]).name, result["judge"], result["drop"]
    print(f"\n== {name}: judged on {judged} with the whole corpus; left out when fitting: {drop}")
    print(f"{'variant':24s} {'figure':34s} {'fit on 100%':>11s} {f'fit on {share}%':>14s} {'change':>8s}")
    for name, r in result.items():
        if not isinstance(r, dict):
            continue
        for key, full in r["fitted_on_whole_corpus"].items():
            grown, sd = r["fitted_on_share"][key], r["sd"][key]
            print(f"{name:24s} {key:34s} {fmt(full):>11s} {fmt(grown)} ±{fmt(sd)} {grown - full:+8.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="Model directory (default: the default model).")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--share", type=float, default=0.7, help="Share of the corpus loaded when fitting.")
    parser.add_argument("--judge", choices=("dev", "test"), default="dev")
    parser.add_argument(
        "--drop",
        choices=("any", "distractors"),
        default="any",
        help="Which fact-checks are missing when fitting: any (some posts' answers too) or only ones no fitting"
        " post has as its answer (the labels unchanged).",
    )
    parser.add_argument("--match-budget", type=float, default=0.02)
    parser.add_argument("--suggestion-budget", type=float, default=0.10)
    parser.add_argument("--z", type=float, default=1.2816, help="Standard errors of the confident variants.")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/factmatch-bench"), help="Candidate cache.")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "decision_shift.json")
    args = parser.parse_args()
    if not (DATA / "corpus.jsonl").is_file():
        print(f"skipped: {DATA} not found")
        return
    settings = Settings()
    result = asyncio.run(run(args.model or default_model_ref(settings.model_store), settings, args))
    show(result)
    show_goals(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
