"""Recalibration from moderators' verdicts (issue 26, step 3): the refit brings precision back; poison is refused.

1. **The decision in use** was fitted where it no longer serves: on train's posts with a random
   ``--share`` (70%) of the corpus loaded (as benchmarks/decision_shift.py, ``--drop any``); since
   then the corpus grew to all of it and new posts arrive.
2. **Moderators judge what the worker shows** for the posts streamed since (train's posts again
   and half of dev's, seeded, under the grown corpus; ``--judge test``: train and all of dev):
   each shown fact-check (match or suggestion) is confirmed when it is the post's answer and
   rejected otherwise, and a post shown only wrong ones is given "none of these". A post shown
   nothing gets no verdict: nobody saw it. Verdicts are rows as ``match_feedback`` holds them.
3. **The scheduled refit** is :func:`trainer.recalibrate.refit_from_verdicts`, the code
   ``factmatch recalibrate`` runs (minus reading and storing in Postgres, which
   tests/integration/test_recalibrate.py covers): fitted on the verdicts of posts outside the
   hashed held-out share, gated on the held-out ones against the decision in use.
4. **Poisoned verdicts**: the same stream with every verdict flipped (confirm <-> reject, no
   "none of these"); the gate must refuse the refit.

Every decision is judged open-set (as benchmarks/decisions.py) on the other half of dev
(``--judge test``: on test, reported once), with the whole corpus loaded; beside them a
calibration with the labels (train + the streamed dev posts, whole corpus): what a person
re-running ``factmatch calibrate`` with a labelled set would get. Candidates come from
benchmarks/decisions.py's cache; the open-set halves' removed fact-checks are left out of
every pool, as if never published.

    .venv/bin/python benchmarks/recalibration.py [--model DIR] [--judge dev|test] [--seed 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from decision_shift import without
from decisions import DATA, ROOT, CachedSource, NoEncoder, gathered_splits, judge, merged

from trainer.recalibrate import held_out, refit_from_verdicts, shown
from worker.configs import calibration_config
from worker.local.models import default_model_ref
from worker.retrieval.calibrate import LabelledPosts
from worker.retrieval.decision import Decisions
from worker.retrieval.openset import fmt
from worker.retrieval.retriever import Retriever
from worker.settings import Settings

GROUPS = ("match", "match_or_suggestion")
FIGURES = ("precision", "recall", "false_alarm", "shown")


class Without:
    """A candidate source whose corpus lacks ``removed`` (the open-set halves' answers)."""

    def __init__(self, source: CachedSource, removed: frozenset[str]) -> None:
        self.source, self.removed = source, removed

    async def candidates(self, *args: Any, **kwargs: Any) -> Any:
        found = await self.source.candidates(*args, **kwargs)
        return [replace(p, candidates=[c for c in p.candidates if c.fact_check_id not in self.removed]) for p in found]

    async def details(self, fact_check_ids: Sequence[str]) -> Any:
        return await self.source.details(fact_check_ids)


def halves(posts: LabelledPosts, seed: int) -> tuple[LabelledPosts, LabelledPosts]:
    """``posts`` split in two seeded halves (each keeps the split's removed answers out)."""
    ids = sorted(posts.queries)
    first = set(random.Random(seed).sample(ids, len(ids) // 2))

    def part(keep: set[str]) -> LabelledPosts:
        return replace(
            posts,
            queries={q: t for q, t in posts.queries.items() if q in keep},
            langs={q: lang for q, lang in posts.langs.items() if q in keep},
            qrels={q: g for q, g in posts.qrels.items() if q in keep},
        )

    return part(first), part(set(ids) - first)


def verdicts(showing: dict[str, list[Any]], posts: LabelledPosts, *, flipped: bool = False) -> list[dict[str, Any]]:
    """What a moderator says about each shown fact-check, as ``match_feedback`` rows (oldest first)."""
    rows: list[dict[str, Any]] = []
    at = datetime(2026, 12, 1, tzinfo=UTC)
    for post, matches in showing.items():
        tiered = [m for m in matches if m.tier is not None]
        right = {m.fact_check_id for m in tiered if m.fact_check_id in posts.qrels.get(post, set())}
        for m in tiered:
            ok = (m.fact_check_id in right) != flipped
            rows.append(
                {
                    "post_id": post,
                    "post_text": posts.queries[post],
                    "fact_check_id": m.fact_check_id,
                    "verdict": "confirm" if ok else "reject",
                    "none_of_these": not right and not flipped,
                    "created_at": at,
                }
            )
    return rows


def figures(report: dict[str, Any]) -> dict[str, float | None]:
    return {f"{group} {name}": report[group][name] for group in GROUPS for name in FIGURES}


async def run(model: str, settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    splits, gathered = await gathered_splits(model, settings, args.cache)
    enc = NoEncoder(gathered.dimension)
    config = calibration_config(settings)
    config = replace(config, retrieval=replace(config.retrieval, min_score=-1.0))
    train, dev, test = splits["train"], splits["dev"], splits["test"]
    if args.judge == "dev":
        streamed_dev, judged = halves(dev, args.seed)
    else:
        streamed_dev, judged = dev, test
    stream = merged(train, streamed_dev)
    source = Without(CachedSource(gathered), stream.exclude | judged.exclude)
    retriever = Retriever(source, config.retrieval)

    async def fitted(posts: LabelledPosts, note: str) -> Decisions:
        rows = await config.rows(source, "m", enc, posts)
        return config.fit(rows, posts, {"data": note}).decisions()

    corpus = sorted(gathered.corpus)
    missing = frozenset(random.Random(args.seed).sample(corpus, round((1 - args.share) * len(corpus))))
    in_use = await fitted(without(train, missing), f"train, {args.share:.0%} of the corpus")
    labelled = await fitted(stream, "train + streamed dev, labels, whole corpus")
    showing = await shown(retriever, "m", enc, stream.queries, in_use)
    out: dict[str, Any] = {"model": model, "judge": args.judge, "share": args.share, "seed": args.seed}
    out["decision in use (fitted on 70% of the corpus)"] = figures((await judge(retriever, enc, judged, in_use))[0])
    out["calibrated again with labels"] = figures((await judge(retriever, enc, judged, labelled))[0])
    share = settings.recalibrate_heldout_share
    for name, flipped in (("honest", False), ("poisoned (every verdict flipped)", True)):
        rows = verdicts(showing, stream, flipped=flipped)
        refit = await refit_from_verdicts(
            source,
            "m",
            enc,
            in_use,
            [r for r in rows if not held_out(r["post_id"], share)],
            [r for r in rows if held_out(r["post_id"], share)],
            config=config,
            min_judged=settings.recalibrate_min_judged,
            margin=settings.recalibrate_margin,
        )
        entry: dict[str, Any] = {"verdicts": len(rows), "posts": len({r["post_id"] for r in rows})}
        entry |= {"passed": refit.passed, "reason": refit.reason, "heldout": refit.figures}
        if refit.calibration is not None:
            entry["judged"] = figures((await judge(retriever, enc, judged, refit.calibration.decisions()))[0])
        out[f"refit from {name} verdicts"] = entry
        print(f"{name}: {'passed' if refit.passed else 'refused'}: {refit.reason}")
    return out


def show(result: dict[str, Any], targets: dict[str, float]) -> None:
    judged = "the other half of dev" if result["judge"] == "dev" else "test"
    print(f"\n== {Path(result['model']).name}: judged open-set on {judged}, whole corpus")
    rows = [(k, v) for k, v in result.items() if k.startswith(("decision", "calibrated"))]
    rows += [(k, v["judged"]) for k, v in result.items() if k.startswith("refit") and "judged" in v]
    keys = list(rows[0][1])
    print(f"{'decision':52s} " + " ".join(f"{k:>27s}" for k in keys))
    for name, figs in rows:
        print(f"{name:52s} " + " ".join(f"{fmt(figs[k]) if 'shown' not in k else str(figs[k]):>27s}" for k in keys))
    print(f"targets: {targets}")
    for k, v in result.items():
        if k.startswith("refit"):
            print(f"{k}: {v['verdicts']} verdicts on {v['posts']} posts; gate {'passed' if v['passed'] else 'refused'}")
            print(f"   {v['reason']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="Model directory (default: the default model).")
    parser.add_argument("--share", type=float, default=0.7, help="Corpus share when the decision in use was fitted.")
    parser.add_argument("--judge", choices=("dev", "test"), default="dev")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/factmatch-bench"), help="Candidate cache.")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not (DATA / "corpus.jsonl").is_file():
        print(f"skipped: {DATA} not found")
        return
    settings = Settings()
    result = asyncio.run(run(args.model or default_model_ref(settings.model_store), settings, args))
    show(result, {"match": settings.tier_match_precision, "suggestion": settings.tier_suggestion_precision})
    out = args.out or ROOT / "results" / f"recalibration_{args.judge}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
