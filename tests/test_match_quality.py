"""Match quality on real data: calibrated thresholds hold their precision on a split they were not fitted on."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import SHARED_DATA, checkthat_subset
from worker.core.encoder import EncoderOptions, SentenceTransformerEncoder, minilm_model_ref
from worker.retrieval.calibrate import score_labelled
from worker.retrieval.evaluation import load_labelled_set
from worker.retrieval.modes import FusionConfig
from worker.retrieval.retriever import RetrievalConfig, Retriever
from worker.retrieval.tiers import fit_thresholds, precision_at
from worker.storage import Store

pytestmark = [
    pytest.mark.quality,
    pytest.mark.skipif(not (SHARED_DATA / "corpus.jsonl").is_file(), reason="../shared/data/checkthat2020 is absent"),
]

TARGETS = {"match": 0.9, "suggestion": 0.6}
# A threshold fitted on 800 queries is an estimate: allow its held-out precision this much slack.
TOLERANCE = 0.05


async def test_thresholds_fitted_on_train_hold_their_precision_on_dev(database_url: str, make_settings: Any) -> None:
    from worker.core.models import ModelManager, bootstrap_active_version, encoder_loader

    settings = make_settings(database_url=database_url, model=minilm_model_ref())
    store = Store(database_url)
    await store.open()
    try:
        await store.upsert_fact_checks(checkthat_subset())
        mv = await bootstrap_active_version(store, settings, ModelManager(store, encoder_loader(settings)))
        encoder = SentenceTransformerEncoder(mv.path, EncoderOptions(device="cpu"))
        retriever = Retriever(store, RetrievalConfig(FusionConfig("hybrid", 60, 1.0, 1.0), 5, -1.0, 50))
        splits = {}
        for split in ("train", "dev"):
            labelled = load_labelled_set(
                SHARED_DATA / "corpus.jsonl", SHARED_DATA / f"{split}_queries.jsonl", SHARED_DATA / f"{split}_qrels.tsv"
            )
            splits[split] = await score_labelled(
                retriever, mv.version, encoder, labelled.queries, labelled.query_langs or {}, labelled.qrels
            )
        fitted = fit_thresholds(splits["train"], TARGETS)
        await store.save_thresholds(mv.version, fitted, source="checkthat2020 train")
        assert await store.thresholds(mv.version)
    finally:
        await store.close()
    dev = [(score, ok) for _, score, ok in splits["dev"]]
    for t in (t for t in fitted if t.lang == "*"):
        precision, kept = precision_at(dev, t.threshold)
        print(
            f"{t.tier}: threshold {t.threshold:.4f} fitted on train at precision {t.fitted_precision:.3f} "
            f"(target {t.target_precision}); dev precision {precision:.3f} over {kept} matches"
        )
        assert kept >= 20
        assert precision >= t.target_precision - TOLERANCE
    assert {(t.lang, t.tier) for t in fitted} >= {("*", "match"), ("*", "suggestion"), ("en", "match")}
