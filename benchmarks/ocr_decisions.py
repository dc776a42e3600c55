"""Decisions on text read from images (issue 27, step 5): does the decision model, fitted on
typed posts, hold on the same posts read by OCR?

A post whose claim is only in its image is matched by the text Tesseract reads there, searched as
a query of its own and decided by the same decision model as typed text (worker/core/images.py).
This measures whether that is safe. Each post of CheckThat! 2020 train, dev and test (the open-set splits
of ``benchmarks/decisions.py``: half the posts lose their fact-checks) is rendered as a meme
(``benchmarks/images.meme``: fonts, sizes, backgrounds, JPEG quality and scale varied by seed),
read by the worker's Tesseract with the five demo languages, and its candidates fetched through the
worker's SQL in a private schema (cached under --cache). The shipped decision model of the model
(fitted on typed train and dev posts) then decides typed and read posts alike; printed per split:
each tier's precision, recall and false alarms, the rank-1 AUROC, and the read posts' figures by
OCR confidence (a feature the decision model would need if read text behaved otherwise).

A model for read text is then fitted as the shipped one was (open-set train and dev, read from
their memes) and judged on read test posts under the shipped model's tier cuts, as the worker
applies it (``DecisionModel.image_text``); ``--ship`` adds it to the shipped decision file.

**Joined or searched on its own** (step 4 of the issue: measure both): a post often says little
itself and carries its claim in its image ("Is this true?" over a meme). Each post is then a
comment drawn from its id (:data:`COMMENTS`) with its meme, and is searched two ways: the text read
in the meme joined to the comment as one query, decided by the typed model (and, for comparison,
by the model for read text); or, as the worker does (``worker.core.images.with_text_in_images``),
the comment and the read text each as a query of their own, decided by their own models, a
fact-check found both ways keeping the surer of the two.

The shipped model was fitted on dev's typed posts, so dev is in-sample for it: test is the split
to read. Posts keep their data's language (none for CheckThat!), as in ``benchmarks/decisions.py``.
Each post's meme is drawn from its id, so reruns read the same images (cached under --cache).

    .venv/bin/python benchmarks/ocr_decisions.py --ship --out benchmarks/results/ocr_decisions_2core.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pickle
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from decisions import DATA, ROOT, CachedSource, NoEncoder, fit, gather, split_posts  # benchmarks/decisions.py
from images import meme  # benchmarks/images.py

from worker.configs import retrieval_config
from worker.domain import TIER_RANK
from worker.images.decode import decode
from worker.images.ocr import Tesseract
from worker.local.models import default_model_ref
from worker.retrieval.calibrate import LabelledPosts, evaluate_decisions
from worker.retrieval.decision import Decisions, read_decision_file
from worker.retrieval.openset import Published, open_set_report
from worker.retrieval.retriever import Retriever
from worker.retrieval.shipped import shipped_path
from worker.settings import Settings


def read_memes(posts: dict[str, str], settings: Settings, cache: Path) -> dict[str, tuple[str, float]]:
    """Each post rendered as a meme and read back: (text, mean word confidence), cached."""
    path = cache / "ocr-decisions-memes.pkl"
    kept: dict[str, tuple[str, float]] = pickle.loads(path.read_bytes()) if path.is_file() else {}
    todo = [q for q in posts if q not in kept]
    ocr = Tesseract(settings.image_ocr_langs, timeout_s=60, min_word_confidence=settings.image_ocr_min_confidence)

    def one(q: str) -> tuple[str, tuple[str, float]]:
        # The post's own seed picks its font, size, background and JPEG quality (whatever else is read).
        found = ocr.read(decode(meme(posts[q], zlib.crc32(q.encode())), settings.image_max_pixels))
        return q, (found.text, found.confidence) if found else ("", 0.0)

    started = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:  # one Tesseract process a core, as the worker runs it
        for done, (q, read) in enumerate(pool.map(one, todo), 1):
            kept[q] = read
            if done % 50 == 0:
                print(f"  read {done}/{len(todo)} memes, {done / (time.perf_counter() - started):.1f}/s", flush=True)
    if todo:
        cache.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(kept))
    return kept


# What a post says over a meme that carries its claim (one drawn per post from its id).
COMMENTS = (
    "Is this true?",
    "Share before they delete it!",
    "Wow. Just wow.",
    "They don't want you to see this",
    "Can someone check this?",
    "Unbelievable",
    "Read this.",
    "This is what the media won't tell you",
    "I knew it!!",
    "Spread the word",
)


def comment(q: str) -> str:
    return COMMENTS[zlib.crc32(f"comment:{q}".encode()) % len(COMMENTS)]


def fused(*lists: list[Published]) -> list[Published]:
    """One post's matches from several queries, as the worker merges them (``with_text_in_images``):
    a fact-check found twice keeps the surer of the two; ordered by tier, then probability."""
    best: dict[str, Published] = {}
    for found in lists:
        for m in found:
            key = m.fact_check_id or ""
            if key not in best or (m.probability or 0.0) > (best[key].probability or 0.0):
                best[key] = m
    return sorted(best.values(), key=lambda m: (TIER_RANK.get(m.tier or "", len(TIER_RANK)), -(m.probability or 0.0)))


async def joined_part(
    url: str,
    model: str,
    settings: Settings,
    splits: dict[str, LabelledPosts],
    read: dict[str, tuple[str, float]],
    decisions: tuple[Decisions, Decisions],
    cache: Path,
) -> dict[str, Any]:
    """Test posts as a comment over their meme: the read text joined to the comment, or each searched
    on its own and fused (``decisions``: the shipped model, the model for read text)."""
    test = splits["test"]
    typed_model, read_model = decisions
    joined = LabelledPosts(
        {q: f"{comment(q)} {read[q][0]}".strip() for q in test.queries}, {}, test.qrels, exclude=test.exclude
    )
    comments = LabelledPosts({q: comment(q) for q in test.queries}, {}, test.qrels, exclude=test.exclude)
    as_read = LabelledPosts(
        {q: read[q][0] for q in test.queries if read[q][0].strip()}, {}, test.qrels, exclude=test.exclude
    )
    gathered = await gather(url, model, settings, [joined, comments, as_read], cache / "ocr-joined")
    said = await judged(gathered, comments, typed_model, settings)
    in_image = await judged(gathered, as_read, read_model, settings)
    outcomes = {
        "comment only (typed model)": said,
        "joined, typed model": await judged(gathered, joined, typed_model, settings),
        "joined, model for read text": await judged(gathered, joined, read_model, settings),
        "each on its own, fused (the worker)": {q: fused(said[q], in_image.get(q, [])) for q in test.queries},
    }
    return {k: summary(open_set_report(v, test.qrels)) for k, v in outcomes.items()}


def word_recall(typed: str, read: str) -> float:
    """The share of the typed post's words found in what was read (case and punctuation aside)."""
    words = [w.strip(".,!?:;\"'()").lower() for w in typed.split()]
    seen = {w.strip(".,!?:;\"'()").lower() for w in read.split()}
    words = [w for w in words if w]
    return sum(w in seen for w in words) / max(1, len(words))


def summary(report: dict[str, Any]) -> dict[str, Any]:
    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 3)

    out: dict[str, Any] = {
        "posts": report["posts"],
        "auroc": r(report["auroc"]),
        "rank-1 right (answerable)": r(report["rank1_correct_share"]),
    }
    for tier in ("match", "match_or_suggestion"):
        t = report[tier]
        out[tier] = {"P": r(t["precision"]), "R": r(t["recall"]), "FA": r(t["false_alarm"]), "shown": t["shown"]}
    return out


async def judged(gathered: Any, posts: LabelledPosts, decisions: Decisions, settings: Settings) -> dict[str, Any]:
    retriever = Retriever(CachedSource(gathered), retrieval_config(settings))
    return await evaluate_decisions(retriever, "m", NoEncoder(gathered.dimension), posts, decisions)


async def run(model: str, settings: Settings, cache: Path, ship: bool) -> dict[str, Any]:
    from worker.local.stack import start_database

    path = shipped_path(model)
    shipped = Decisions.read(path)
    splits = {name: split_posts(name)[0] for name in ("train", "dev", "test")}
    read = read_memes({q: t for s in splits.values() for q, t in s.queries.items()}, settings, cache)
    as_read = {
        name: LabelledPosts({q: read[q][0] for q in s.queries if read[q][0].strip()}, {}, s.qrels, exclude=s.exclude)
        for name, s in splits.items()
    }
    database = start_database()
    try:
        typed = await gather(database.url, model, settings, list(splits.values()), cache)
        ocr = await gather(database.url, model, settings, list(as_read.values()), cache / "ocr-decisions")
        # The model for read text, fitted as the shipped model was (open-set train and dev) on what
        # was read; the worker decides read text with it under the version's own tier cuts.
        retriever = Retriever(CachedSource(ocr), retrieval_config(settings))
        parts = [as_read["train"], as_read["dev"]]
        fitting = "train+dev, open-set, read from memes"
        for_read = await fit(retriever, NoEncoder(ocr.dimension), parts, settings, fitting)
        own = Decisions(for_read.model, shipped.thresholds)
        joined = await joined_part(database.url, model, settings, splits, read, (shipped, own), cache)
    finally:
        database.stop()
    print(f"test, a comment over the meme: {json.dumps(joined)}", flush=True)
    out: dict[str, Any] = {"model": model, "decision": path.name}
    for name in ("dev", "test"):
        s = splits[name]
        outcomes = {
            "typed": await judged(typed, s, shipped, settings),
            "read from the meme": await judged(ocr, as_read[name], shipped, settings),
            "read, decided by the model for read text": await judged(ocr, as_read[name], own, settings),
        }
        for found in outcomes.values():  # a meme with no text read is a post answered with nothing
            found.update({q: [] for q in s.queries if q not in found})
        confidence = {q: read[q][1] for q in s.queries}
        median = float(np.median(list(confidence.values())))
        part: dict[str, Any] = {
            "posts": len(s.queries),
            "words read (mean share)": round(
                float(np.mean([word_recall(t, read[q][0]) for q, t in s.queries.items()])), 3
            ),
            "memes with no text read": sum(not read[q][0].strip() for q in s.queries),
            **{k: summary(open_set_report(v, s.qrels)) for k, v in outcomes.items()},
            "OCR confidence median": round(median, 1),
        }
        for half, high in (("low", False), ("high", True)):
            qs = [q for q in s.queries if (confidence[q] >= median) == high]
            part[f"read, OCR confidence {half}"] = summary(
                open_set_report(
                    {q: outcomes["read from the meme"][q] for q in qs}, {q: s.qrels[q] for q in qs if q in s.qrels}
                )
            )
        out[name] = part
        print(f"{name}: {json.dumps(part)}", flush=True)
    out["test, a comment over the meme"] = joined
    if ship:
        model_file, thresholds, report = read_decision_file(path)
        report["image_text"] = {
            "fit": {"data": "CheckThat! 2020 train+dev, open-set, posts read from memes"},
            "test": out["test"],
        }
        Decisions.write(path, replace(model_file, image_text=for_read.model), thresholds, report)
        print(f"wrote {path}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="A model directory (default: the default model).")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/factmatch-bench"))
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "ocr_decisions.json")
    parser.add_argument("--ship", action="store_true", help="Add the model for read text to the shipped decision file.")
    args = parser.parse_args()
    if not (DATA / "corpus.jsonl").is_file():
        print(f"skipped: {DATA} not found")
        return
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    model = args.model or default_model_ref(settings.model_store)
    result = asyncio.run(run(model, settings, args.cache, args.ship))
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
