"""Quality tier: a short MiniLM fine-tune on CheckThat! 2020 train beats its base on dev,
through the trainer's own path (collect, train, gate, promote, open-set calibration)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SHARED_DATA
from trainer.job import run_training
from worker.retrieval.decision import Decisions
from worker.retrieval.evaluation import corpus_from_rows, load_jsonl
from worker.storage import Store


@pytest.mark.xdist_group("checkthat")
@pytest.mark.skipif(not (SHARED_DATA / "corpus.jsonl").is_file(), reason="../shared/data/checkthat2020 is absent")
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
