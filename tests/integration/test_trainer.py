"""Trainer tier: data collection, gate, registry, rollout under a live stream, rollback, feedback."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from tests.conftest import consume_until, produce
from tests.integration.test_worker import DEMO_FACT_CHECKS, running, seed_corpus
from trainer.job import gate, run_training
from trainer.train import collect_data
from worker.adapter.topics import ensure_topics
from worker.configs import rollout_config
from worker.core.encoder import EncoderOptions, SentenceTransformerEncoder
from worker.core.rollout import rollback, rollback_target
from worker.retrieval.evaluation import corpus_from_rows, load_jsonl
from worker.settings import Settings
from worker.storage import Store
from worker.wire import Feedback, document_text


def write_labelled(directory: Path) -> tuple[Path, Path]:
    """Queries that repeat their fact-check's text: any sane encoder ranks the right one first."""
    docs = corpus_from_rows(load_jsonl(DEMO_FACT_CHECKS))
    queries, qrels = directory / "queries.jsonl", directory / "qrels.tsv"
    queries.write_text(
        "".join(json.dumps({"id": f"q{i}", "text": document_text(d.title, d.claim)}) + "\n" for i, d in enumerate(docs))
    )
    qrels.write_text("".join(f"q{i}\t{d.id}\n" for i, d in enumerate(docs)))
    return queries, qrels


def broken_copy(model_dir: Path, target: Path) -> Path:
    """The same architecture with every input embedding zeroed: it maps all texts to one vector."""
    from sentence_transformers import SentenceTransformer

    shutil.copytree(model_dir, target)
    model = SentenceTransformer(str(target), device="cpu")
    bert = model[0].model
    with torch.no_grad():
        for emb in (
            bert.embeddings.word_embeddings,
            bert.embeddings.position_embeddings,
            bert.embeddings.token_type_embeddings,
        ):
            emb.weight.zero_()
    model.save(str(target))
    return target


def test_gate_needs_the_margin() -> None:
    settings = Settings(_env_file=None, gate_margin=0.01)  # type: ignore[call-arg]
    assert gate(settings, {"ndcg@10": 0.80}, None)[0]
    assert gate(settings, {"ndcg@10": 0.80}, {"ndcg@10": 0.78})[0]
    assert not gate(settings, {"ndcg@10": 0.785}, {"ndcg@10": 0.78})[0]
    assert not gate(settings, {"ndcg@10": 0.70}, {"ndcg@10": 0.78})[0]


async def test_collect_data_uses_files_and_feedback_and_holds_out_queries(
    database_url: str, make_settings: Any, tmp_path: Path
) -> None:
    settings = make_settings(database_url=database_url, train_eval_fraction=0.25)
    await seed_corpus(settings)
    queries, qrels = write_labelled(tmp_path)
    store = Store(database_url)
    await store.open()
    try:
        await store.feedback.insert_feedback(
            [
                Feedback(
                    post_id="m1",
                    post_text="5g spreads covid",
                    fact_check_id="fc-en-001",
                    verdict="confirm",
                    moderator="ana",
                ),
                Feedback(
                    post_id="m1",
                    post_text="5g spreads covid",
                    fact_check_id="fc-es-003",
                    verdict="reject",
                    moderator="ana",
                ),
                Feedback(
                    post_id="m2", post_text="unknown", fact_check_id="fc-missing", verdict="confirm", moderator="bo"
                ),
            ]
        )
        data = await collect_data(store, settings, train_files=[(queries, qrels)])
    finally:
        await store.close()
    total = len(data.pairs) + len(data.triplets) + len(data.eval_queries)
    assert total == 61  # 60 file pairs + 1 confirmed feedback (the unknown fact-check is skipped)
    assert 5 <= len(data.eval_queries) <= 30
    assert data.snapshot["skipped_unknown_fact_checks"] == 1 and data.snapshot["feedback_rows"] == 3
    if "feedback:m1" not in data.eval_queries:
        assert data.triplets == [("5g spreads covid", data.corpus["fc-en-001"], data.corpus["fc-es-003"])]


async def test_worse_candidate_is_rejected_and_the_active_version_stays(
    kafka: str, database_url: str, make_settings: Any, tiny_model: Path, tmp_path: Path
) -> None:
    settings = make_settings(
        kafka_bootstrap=kafka,
        database_url=database_url,
        model_store=tmp_path / "store",
        train_max_steps=1,
        train_learning_rate=1e-9,
        train_batch_size=8,
    )
    await ensure_topics(settings)
    await seed_corpus(settings)
    queries, qrels = write_labelled(tmp_path)
    broken = broken_copy(tiny_model, tmp_path / "broken")
    async with running(settings) as runtime:
        before = (await runtime.store.registry.active_version()).version  # type: ignore[union-attr]
        outcome = await run_training(
            runtime.store,
            settings,
            base=str(broken),
            train_files=[(queries, qrels)],
            use_feedback=False,
            promote_if_better=True,
        )
        assert outcome.status == "rejected"
        assert outcome.candidate["ndcg@10"] < outcome.active["ndcg@10"]  # type: ignore[index]
        mv = await runtime.store.registry.get_version(outcome.version)
        assert mv is not None and mv.status == "rejected" and "does not beat" in (mv.notes or "")
        assert (await runtime.store.registry.active_version()).version == before  # type: ignore[union-attr]
        assert (outcome.path / "factmatch_eval.json").is_file()
        assert outcome.plot is not None and outcome.plot.stat().st_size > 1000


async def test_promotion_under_a_live_stream_then_rollback(stack_settings: Settings, tmp_path: Path) -> None:
    settings = stack_settings.model_copy(
        update={
            "model_store": tmp_path / "store",
            "train_max_steps": 4,
            "train_batch_size": 16,
            "gate_margin": -1.0,
            "train_learning_rate": 5e-5,
            "model_poll_interval_s": 1.0,
        }
    )
    await seed_corpus(settings)
    queries, qrels = write_labelled(tmp_path)
    sent: list[str] = []
    stop = asyncio.Event()

    async def stream() -> None:
        i = 0
        while not stop.is_set():
            batch = [
                (f"s-{i + j}".encode(), json.dumps({"id": f"s-{i + j}", "text": f"5G spreads covid {i + j}"}).encode())
                for j in range(5)
            ]
            await produce(settings.kafka_bootstrap, settings.topic_posts, batch)
            sent.extend(f"s-{i + j}" for j in range(5))
            i += 5
            await asyncio.sleep(0.2)

    async with running(settings) as runtime:
        old = runtime.models.current().version
        producer = asyncio.create_task(stream())
        await asyncio.sleep(2)
        # Fact-checks arriving during the rollout must end up under both versions.
        late = [
            (f"late-{i}".encode(), json.dumps({"id": f"late-{i}", "claim": f"late claim {i}"}).encode())
            for i in range(5)
        ]
        training = asyncio.create_task(
            run_training(
                runtime.store, settings, train_files=[(queries, qrels)], use_feedback=False, promote_if_better=True
            )
        )
        await produce(settings.kafka_bootstrap, settings.topic_factchecks, late)
        outcome = await training
        assert outcome.status == "active"
        new = outcome.version
        for _ in range(100):
            if runtime.models.current().version == new:
                break
            await asyncio.sleep(0.1)
        assert runtime.models.current().version == new
        await asyncio.sleep(2)
        switched_at = datetime.now().astimezone()

        target = await rollback_target(runtime.store, None)
        assert target.version == old
        await rollback(
            runtime.store,
            rollout_config(settings),
            target,
            lambda: SentenceTransformerEncoder(target.path, EncoderOptions(device="cpu")),
        )
        for _ in range(100):
            if runtime.models.current().version == old:
                break
            await asyncio.sleep(0.1)
        rolled_back_at = datetime.now().astimezone()
        await asyncio.sleep(2)
        stop.set()
        await producer
        records = await consume_until(
            settings.kafka_bootstrap,
            [settings.topic_matches],
            lambda rs: set(sent) <= {json.loads(r.value)["post_id"] for r in rs},
            timeout_s=120,
        )
        new_mv = await runtime.store.registry.get_version(new)
        embedded = {v: await runtime.store.embeddings.count_embeddings(v) for v in (old, new)}
        late_missing = {v: [f.id for f in await runtime.store.corpus.fact_checks_missing(v)] for v in (old, new)}

    results = [json.loads(r.value) for r in records]
    ids = Counter(r["post_id"] for r in results)
    assert set(sent) <= set(ids), "a post was lost during the rollout"
    versions = Counter(r["model_version"] for r in results)
    assert set(versions) == {old, new}, versions
    assert new_mv is not None and new_mv.indexed_at is not None
    for r in results:
        if r["model_version"] == new:
            assert datetime.fromisoformat(r["processed_at"]) >= new_mv.indexed_at
    after_rollback = [r for r in results if datetime.fromisoformat(r["processed_at"]) > rolled_back_at]
    assert after_rollback and all(r["model_version"] == old for r in after_rollback)
    assert any(r["model_version"] == new and datetime.fromisoformat(r["processed_at"]) <= switched_at for r in results)
    assert embedded[old] == embedded[new] == 65
    assert late_missing == {old: [], new: []}


async def test_feedback_topic_stores_verdicts_and_dead_letters_bad_ones(stack_settings: Settings) -> None:
    good = (
        Feedback(
            post_id="p1", post_text="5g spreads covid", fact_check_id="fc-en-001", verdict="confirm", moderator="ana"
        )
        .model_dump_json()
        .encode()
    )
    bad = json.dumps(
        {"post_id": "p2", "post_text": "x", "fact_check_id": "f", "verdict": "maybe", "moderator": "bo"}
    ).encode()
    async with running(stack_settings) as runtime:
        await produce(stack_settings.kafka_bootstrap, stack_settings.topic_feedback, [(b"p1", good), (b"p2", bad)])
        letters = await consume_until(
            stack_settings.kafka_bootstrap, [stack_settings.topic_dead_letter], lambda rs: len(rs) >= 1, timeout_s=60
        )
        for _ in range(100):
            rows = await runtime.store.feedback.feedback()
            if rows:
                break
            await asyncio.sleep(0.1)
    assert [(r["post_id"], r["verdict"], r["moderator"]) for r in rows] == [("p1", "confirm", "ana")]
    letter = json.loads(letters[0].value)
    assert letter["reason"] == "invalid_schema" and "verdict" in letter["error"]
