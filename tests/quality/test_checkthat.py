"""Quality tier on CheckThat! 2020 (read from ../shared/data; skipped when absent): the eval CLI
with MiniLM beats its floor and judges an open-set split; decisions fitted on open-set train hold
on open-set dev; a short fine-tune beats its base.

One module on purpose: `make test` runs two processes with ``--dist loadfile``, and this module is
collected first (tests/conftest.py), so these CPU-bound runs go one after another on one process,
beside the tests that wait on the broker, and the second evaluation reuses the first one's vectors.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SHARED_DATA, checkthat_subset
from tests.quality.test_quality_and_demo import clean_env
from trainer.job import run_training
from worker.core.encoder import EncoderOptions, SentenceTransformerEncoder
from worker.local.models import minilm_model_ref
from worker.retrieval.calibrate import LabelledPosts, calibrate_version, collect_pools, evaluate_decisions
from worker.retrieval.decision import Decisions
from worker.retrieval.evaluation import corpus_from_rows, load_jsonl, load_labelled_set
from worker.retrieval.openset import auroc, open_set_report, open_set_split, twin_groups
from worker.retrieval.retriever import Retriever
from worker.storage import Store

pytestmark = [  # every test here reads CheckThat! 2020
    pytest.mark.skipif(not (SHARED_DATA / "corpus.jsonl").is_file(), reason="../shared/data/checkthat2020 is absent"),
]

# Measured here: MiniLM (all-MiniLM-L6-v2, no fine-tuning) gives MAP@5 0.779 on CheckThat! 2020 dev
# through the eval CLI. The floor leaves room for HNSW's approximate search, not for a regression.
DEV_MAP5_FLOOR = 0.75


@pytest.fixture(scope="session")
def eval_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model store for the evaluations of a session: the second reuses the corpus's vectors."""
    return tmp_path_factory.mktemp("eval-store")


def eval_minilm_on_dev(cwd: Path, store: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """`factmatch eval --json` with MiniLM on CheckThat! 2020 dev, as a user runs it."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "worker.cli",
            "eval",
            "--model",
            minilm_model_ref(),
            "--corpus",
            str(SHARED_DATA / "corpus.jsonl"),
            "--queries",
            str(SHARED_DATA / "dev_queries.jsonl"),
            "--qrels",
            str(SHARED_DATA / "dev_qrels.tsv"),
            *options,
            "--json",
        ],
        cwd=cwd,
        env={**clean_env(), "FACTMATCH_MODEL_STORE": str(store)},
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_eval_cli_minilm_on_checkthat_dev_beats_the_floor(tmp_path: Path, eval_store: Path) -> None:
    completed = eval_minilm_on_dev(tmp_path, eval_store)
    assert completed.returncode == 0, completed.stderr[-3000:]
    printed = json.loads(completed.stdout.strip().splitlines()[-1])
    assert printed.pop("open_set") is None  # no decision model named: ranking only
    by_mode = printed
    metrics = by_mode["dense"]
    for mode, m in by_mode.items():
        print(
            f"MiniLM CheckThat! 2020 dev, {mode}: MAP@5 {m['map@5']:.4f}, S@10 {m['accuracy@10']:.4f}, "
            f"nDCG@10 {m['ndcg@10']:.4f}"
        )
    assert metrics["queries"] == 197
    assert metrics["map@5"] >= DEV_MAP5_FLOOR
    # Dense and lexical rankings miss different posts: their fusion beats either.
    assert by_mode["hybrid"]["map@5"] > max(by_mode["dense"]["map@5"], by_mode["lexical"]["map@5"])


def test_eval_cli_judges_an_open_set_split_with_the_shipped_decision_model(tmp_path: Path, eval_store: Path) -> None:
    from worker.retrieval.shipped import shipped_path

    decisions = shipped_path(minilm_model_ref())
    assert decisions.is_file(), "MiniLM ships a decision model (benchmarks/decisions.py --ship)"
    plot = tmp_path / "pr.png"
    completed = eval_minilm_on_dev(
        tmp_path,
        eval_store,
        "--mode",
        "hybrid",
        "--holdout-share",
        "0.5",
        "--seed",
        "3",
        "--decisions",
        str(decisions),
        "--plot",
        str(plot),
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])["open_set"]
    print(f"MiniLM, CheckThat! 2020 dev, open-set half, shipped decision model: {report}")
    # Half of the posts lost their fact-checks (fewer where a kept post shares one).
    assert report["unanswerable"] >= 60 and report["answerable"] >= 90
    # Measured: AUROC 0.84; match tier precision 0.89, recall 0.61, false alarms 7.6%; match or
    # suggestion recall 0.70 at 14% false alarms (the shipped model was fitted on train and dev, so
    # this checks the CLI's open-set path, not generalisation: benchmarks/decisions.py reports test).
    # Floors that a decision that does not abstain (false alarms near 1) or does not rank (AUROC
    # near 0.5) fails.
    assert report["auroc"] >= 0.75
    shown = report["match_or_suggestion"]
    assert shown["false_alarm"] <= 0.25 and shown["recall"] >= 0.5
    assert report["match"]["shown"] > 0, "the shipped decision has a match tier"
    assert plot.is_file() and plot.stat().st_size > 10_000
    assert "false alarms" in completed.stderr


# A cut fitted on 400 answerable posts is an estimate: allow its held-out precision this much slack.
TOLERANCE = 0.07


def open_set(split: str, seed: int) -> LabelledPosts:
    labelled = load_labelled_set(
        SHARED_DATA / "corpus.jsonl", SHARED_DATA / f"{split}_queries.jsonl", SHARED_DATA / f"{split}_qrels.tsv"
    )
    cut = open_set_split(list(labelled.queries), labelled.qrels, 0.5, seed, twin_groups(labelled.corpus))
    return LabelledPosts(dict(labelled.queries), dict(labelled.query_langs or {}), cut.qrels, exclude=cut.removed)


async def test_decisions_fitted_on_open_set_train_hold_on_open_set_dev(database_url: str, make_settings: Any) -> None:
    from worker.configs import bootstrap_active_version, calibration_config, model_manager, retrieval_config

    settings = make_settings(database_url=database_url, model=minilm_model_ref(), tier_min_support=10)
    store = Store(database_url)
    await store.open()
    try:
        await store.corpus.upsert_fact_checks(checkthat_subset())
        mv = await bootstrap_active_version(store, settings, model_manager(store, settings))
        encoder = SentenceTransformerEncoder(mv.path, EncoderOptions(device="cpu"))
        train, dev = open_set("train", 1), open_set("dev", 2)
        calibration = await calibrate_version(
            store.candidates, store.decisions, calibration_config(settings), mv.version, encoder, train, source="train"
        )
        decisions = Decisions.from_stored(await store.decisions.stored_decision(mv.version))
        assert decisions.model is not None and decisions.model == calibration.model
        retriever = Retriever(store.candidates, retrieval_config(settings))
        judged = await evaluate_decisions(retriever, mv.version, encoder, dev, decisions)
        plain = await collect_pools(retriever, mv.version, encoder, dev)
    finally:
        await store.close()
    report = open_set_report(judged, dev.qrels)
    answerable = [q for q in dev.queries if dev.qrels.get(q)]
    unanswerable = [q for q in dev.queries if not dev.qrels.get(q)]

    def cos(q: str) -> float:
        return max((s.candidate.dense_score for s in plain[q]), default=0.0)

    cosine_auroc = auroc([cos(q) for q in answerable], [cos(q) for q in unanswerable])
    print(f"fitted (cross-validated): {calibration.report}\ndev: {report}\ncosine-only AUROC {cosine_auroc:.3f}")
    match = report["match"]
    assert match["shown"] >= 15
    assert match["precision"] >= settings.tier_match_precision - TOLERANCE
    assert match["false_alarm"] <= 0.05
    # The decision separates posts that have a fact-check from those that have none better than the cosine.
    assert report["auroc"] > cosine_auroc
    # It abstains: most posts with nothing to find get no match at all.
    assert report["match_or_suggestion"]["false_alarm"] < 0.35


async def test_minilm_fine_tune_few_steps_beats_base_on_checkthat_dev(
    database_url: str, make_settings: Any, tmp_path: Path
) -> None:
    """The fast version of benchmarks/finetune_checkthat.py: a few dozen steps, a reduced corpus."""
    import random

    from worker.configs import bootstrap_active_version, model_manager
    from worker.local.models import minilm_model_ref

    corpus = corpus_from_rows(load_jsonl(SHARED_DATA / "corpus.jsonl"))
    gold = {
        line.split("\t")[1].strip()
        for split in ("train", "dev")
        for line in (SHARED_DATA / f"{split}_qrels.tsv").read_text().splitlines()
        if "\t" in line
    }
    rng = random.Random(7)
    distractors = rng.sample([fc for fc in corpus if fc.id not in gold], 1000)
    subset = [fc for fc in corpus if fc.id in gold] + distractors
    settings = make_settings(
        database_url=database_url,
        model=minilm_model_ref(),
        model_store=tmp_path / "store",
        train_max_steps=24,
        train_batch_size=32,
        train_mini_batch_size=16,
    )
    store = Store(database_url)
    await store.open()
    try:
        await store.corpus.upsert_fact_checks(subset)
        await bootstrap_active_version(store, settings, model_manager(store, settings))
        outcome = await run_training(
            store,
            settings,
            train_files=[(SHARED_DATA / "train_queries.jsonl", SHARED_DATA / "train_qrels.tsv")],
            eval_files=(SHARED_DATA / "dev_queries.jsonl", SHARED_DATA / "dev_qrels.tsv"),
            use_feedback=False,
            promote_if_better=True,
        )
        # Promotion also fitted the new version's decision model and tiers on an open-set half of
        # the held-out (dev) split: half its posts lost their fact-checks.
        decisions = Decisions.from_stored(await store.decisions.stored_decision(outcome.version))
        report = await store.decisions.decision_report(outcome.version)
    finally:
        await store.close()
    assert decisions.model is not None and ("*", "suggestion") in decisions.thresholds
    assert report is not None and report["answerable"] > 0 and report["unanswerable"] > 0
    print(f"trainer's open-set report: {report}")
    assert outcome.active is not None
    print(
        f"dev ({len(subset)} fact-checks): base nDCG@10 {outcome.active['ndcg@10']:.4f} MAP@5 "
        f"{outcome.active['map@5']:.4f}; fine-tuned {outcome.candidate['ndcg@10']:.4f} / "
        f"{outcome.candidate['map@5']:.4f}"
    )
    assert outcome.candidate["ndcg@10"] > outcome.active["ndcg@10"]
    assert outcome.candidate["map@5"] > outcome.active["map@5"]
    assert outcome.status == "active"
