"""Fine-tune MiniLM on CheckThat! 2020 train, gate on dev, report test once.

The full quality run of the trainer (too slow for the default test suite; a few-step
version of it runs in tests/test_trainer.py). On an embedded Postgres it:
1. loads the 10,375 fact-checks and bootstraps the base model (MiniLM) as the active version;
2. runs `factmatch train`'s job: train split for fitting, dev split for the gate, promotion on pass;
3. evaluates base and fine-tuned on dev and on test with the eval CLI's code (worker encoder +
   pgvector), prints a side-by-side table and writes the figures as JSON.

    .venv/bin/python benchmarks/finetune_checkthat.py [--epochs 1] [--lr 2e-4] [--out bench-out]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from trainer.job import run_training
from worker.configs import bootstrap_active_version, evaluation_config, model_manager
from worker.core.encoder import EncoderOptions, SentenceTransformerEncoder
from worker.core.evaluate import run_evaluation
from worker.local.models import minilm_model_ref
from worker.local.stack import start_database
from worker.retrieval.evaluation import corpus_from_rows, load_jsonl, load_labelled_set
from worker.retrieval.modes import MODE_NAMES
from worker.settings import Settings
from worker.storage import Store, apply_migrations
from worker.storage.scratch import scratch_store

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "checkthat2020"


async def main(args: argparse.Namespace) -> None:
    out = Path(args.out).resolve()  # noqa: ASYNC240
    out.mkdir(parents=True, exist_ok=True)
    database = start_database()
    try:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            model=minilm_model_ref(),
            database_url=database.url,
            model_store=out / "models",
            train_epochs=args.epochs,
            train_learning_rate=args.lr,
            train_batch_size=args.batch_size,
            train_mini_batch_size=16,
        )
        await apply_migrations(database.url)
        store = Store(database.url)
        await store.open()
        await store.corpus.upsert_fact_checks(corpus_from_rows(load_jsonl(DATA / "corpus.jsonl")))
        base = await bootstrap_active_version(store, settings, model_manager(store, settings))

        started = time.perf_counter()
        outcome = await run_training(
            store,
            settings,
            train_files=[(DATA / "train_queries.jsonl", DATA / "train_qrels.tsv")],
            eval_files=(DATA / "dev_queries.jsonl", DATA / "dev_qrels.tsv"),
            use_feedback=False,
            promote_if_better=True,
        )
        train_seconds = time.perf_counter() - started
        await store.close()

        figures: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
        for split in ("dev", "test"):
            labelled = load_labelled_set(
                DATA / "corpus.jsonl", DATA / f"{split}_queries.jsonl", DATA / f"{split}_qrels.tsv"
            )
            for name, ref in (("base", minilm_model_ref()), ("fine-tuned", str(outcome.path))):
                encoder = SentenceTransformerEncoder(ref, EncoderOptions())
                evaluation = await run_evaluation(
                    lambda: scratch_store(database.url, ef_search=100),
                    labelled,
                    encoder,
                    evaluation_config(settings),
                    version=f"bench-{name}-{split}",
                    modes=MODE_NAMES,
                )
                figures.setdefault(split, {})[name] = evaluation.by_mode
    finally:
        database.stop()

    print(f"\nbase {base.version} -> {outcome.version}: {outcome.status} ({outcome.reason})")
    print(f"training job (data, eval of both, {args.epochs} epoch(s), gate, promotion): {train_seconds:.0f}s")
    print(f"{'split':6} {'model':11} {'mode':8} {'MAP@5':>7} {'nDCG@10':>8} {'MRR@10':>7} {'S@1':>6} {'S@10':>6}")
    for split, by_model in figures.items():
        for name, by_mode in by_model.items():
            for mode, m in by_mode.items():
                print(
                    f"{split:6} {name:11} {mode:8} {m['map@5']:7.4f} {m['ndcg@10']:8.4f} {m['mrr@10']:7.4f} "
                    f"{m['accuracy@1']:6.4f} {m['accuracy@10']:6.4f}"
                )
    (out / "finetune_checkthat.json").write_text(
        json.dumps(
            {
                "train_seconds": train_seconds,
                "outcome": outcome.status,
                "version": outcome.version,
                "gate": outcome.reason,
                "figures": figures,
                "epochs": args.epochs,
                "lr": args.lr,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", default="bench-out")
    asyncio.run(main(parser.parse_args()))
