"""Fine-tune the encoder on post/fact-check pairs, evaluate it against the active version, save it.

Reads as sentence-transformers' own training scripts do, in numbered steps:
1. model, 2. data, 3. loss, 4. evaluator, 5. train, 6. evaluate, 7. save.
The recipe defaults to the reference model's (CachedMultipleNegativesRankingLoss, scale 20,
cosine; learning rate 2e-4, cosine schedule, warmup 0.1, no-duplicates batches, bf16 on
GPU, evaluation every epoch, best model kept); every knob is a setting.

Queries and documents are built exactly as the worker builds them: the query prompt of the
model (or the settings' override) and the fact-check's title and claim from Postgres.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from trainer.distributed import Ranks, barrier
from trainer.lora import add_lora, save_lora
from worker.configs import encoder_options, torch_encoder_loader
from worker.core.encoder import SentenceTransformerEncoder
from worker.retrieval.claims import claim_text
from worker.retrieval.evaluation import read_qrels, read_queries
from worker.settings import Settings
from worker.storage import Store
from worker.wire import document_text

log = logging.getLogger(__name__)

EVALUATOR_NAME = "heldout"


@dataclass
class TrainingData:
    """Everything training and evaluation need, resolved against the corpus in Postgres."""

    pairs: list[tuple[str, str]] = field(default_factory=list)  # (query text, positive document)
    triplets: list[tuple[str, str, str]] = field(default_factory=list)  # + a rejected match as hard negative
    eval_queries: dict[str, str] = field(default_factory=dict)
    eval_relevant: dict[str, set[str]] = field(default_factory=dict)
    corpus: dict[str, str] = field(default_factory=dict)
    # The training posts by id with their fact-check ids: what the reranker mines negatives for.
    train_queries: dict[str, str] = field(default_factory=dict)
    train_relevant: dict[str, set[str]] = field(default_factory=dict)
    snapshot: dict[str, Any] = field(default_factory=dict)


def _file_digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()[:12]


def _read_labelled(queries: Path, qrels: Path) -> list[tuple[str, str, str]]:
    """(query id, query text, fact-check id) triples from the shared/data layout."""
    texts, _ = read_queries(queries)
    return [(q, texts[q], fc) for q, relevant in read_qrels(qrels).items() if q in texts for fc in sorted(relevant)]


def _held_out(query_id: str, fraction: float, seed: int) -> bool:
    digest = hashlib.sha1(f"{seed}:{query_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < fraction


def _verdicts(feedback: Sequence[Mapping[str, Any]]) -> tuple[list[tuple[str, str, str]], dict[str, set[str]]]:
    """Moderator verdicts as training data: confirmed (post, text, fact-check) triples, and each
    post's rejected fact-checks (its hard negatives)."""
    confirmed: list[tuple[str, str, str]] = []
    negatives: dict[str, set[str]] = {}
    for row in tqdm(feedback, desc="feedback", unit="verdict", disable=not feedback):
        key = f"feedback:{row['post_id']}"
        if row["verdict"] == "confirm":
            confirmed.append((key, row["post_text"], row["fact_check_id"]))
        else:
            negatives.setdefault(key, set()).add(row["fact_check_id"])
    return confirmed, negatives


def _snapshot(
    data: TrainingData,
    train_files: Sequence[tuple[Path, Path]],
    eval_files: tuple[Path, Path] | None,
    feedback: Sequence[Mapping[str, Any]],
    missing: int,
) -> dict[str, Any]:
    """What a version was trained on, recorded with it: files and digests, verdicts, counts."""
    return {
        "files": [
            {"queries": str(q), "qrels": str(r), "sha1": [_file_digest(q), _file_digest(r)]} for q, r in train_files
        ],
        "eval_files": [str(p) for p in eval_files] if eval_files else None,
        "feedback_rows": len(feedback),
        "feedback_max_id": max((int(r["id"]) for r in feedback), default=None),
        "pairs": len(data.pairs),
        "triplets": len(data.triplets),
        "skipped_unknown_fact_checks": missing,
        "eval_queries": len(data.eval_queries),
        "corpus_size": len(data.corpus),
        "taken_at": datetime.now(UTC).isoformat(),
    }


async def collect_data(
    store: Store,
    settings: Settings,
    *,
    train_files: Sequence[tuple[Path, Path]] = (),
    eval_files: tuple[Path, Path] | None = None,
    use_feedback: bool = True,
) -> TrainingData:
    """Step 2's inputs: labelled files and moderator feedback, fact-check texts from Postgres."""
    data = TrainingData()
    fact_checks = await store.corpus.all_fact_checks()
    data.corpus = {fc.id: document_text(fc.title, fc.claim) for fc in tqdm(fact_checks, desc="corpus", unit="doc")}
    labelled: list[tuple[str, str, str]] = []
    for queries, qrels in train_files:
        labelled.extend(_read_labelled(queries, qrels))
    feedback = await store.feedback.feedback() if use_feedback else []
    confirmed, negatives = _verdicts(feedback)
    labelled.extend(confirmed)

    missing = sum(1 for _, _, fc in labelled if fc not in data.corpus)
    if eval_files is not None:
        for qid, text, fc in _read_labelled(*eval_files):
            if fc in data.corpus:
                data.eval_queries[qid] = claim_text(text)
                data.eval_relevant.setdefault(qid, set()).add(fc)
    for qid, post_text, fc in labelled:
        if fc not in data.corpus:
            continue
        # Trained on what the worker encodes (:mod:`worker.retrieval.claims`).
        text = claim_text(post_text)
        if eval_files is None and _held_out(qid, settings.train_eval_fraction, settings.train_seed):
            data.eval_queries[qid] = text
            data.eval_relevant.setdefault(qid, set()).add(fc)
            continue
        positive = data.corpus[fc]
        data.train_queries[qid] = text
        data.train_relevant.setdefault(qid, set()).add(fc)
        hard = sorted(n for n in negatives.get(qid, ()) if n in data.corpus and n != fc)
        if hard:
            data.triplets.extend((text, positive, data.corpus[n]) for n in hard)
        else:
            data.pairs.append((text, positive))
    data.snapshot = _snapshot(data, train_files, eval_files, feedback, missing)
    if not data.pairs and not data.triplets:
        raise ValueError("no training pair whose fact-check is in the corpus (load fact-checks first)")
    if not data.eval_queries:
        raise ValueError("no held-out query to evaluate on; give --eval-queries/--eval-qrels or more data")
    return data


def _plain_metrics(raw: Mapping[str, float]) -> dict[str, float]:
    """``heldout_cosine_ndcg@10`` -> ``ndcg@10``."""
    prefix = f"{EVALUATOR_NAME}_cosine_"
    return {k.removeprefix(prefix): float(v) for k, v in raw.items() if k.startswith(prefix)}


def make_evaluator(data: TrainingData, query_prompt: str, document_prompt: str) -> Any:
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    return InformationRetrievalEvaluator(
        queries=dict[str, Any](data.eval_queries),
        corpus=dict[str, Any](data.corpus),
        relevant_docs=data.eval_relevant,
        map_at_k=[5, 100],
        name=EVALUATOR_NAME,
        query_prompt=query_prompt or None,
        corpus_prompt=document_prompt or None,
        batch_size=64,
        show_progress_bar=True,
        write_csv=False,
    )


def evaluate_model(model_ref: str, settings: Settings, data: TrainingData) -> dict[str, float]:
    """The held-out metrics of any model, with the same evaluator the candidate gets."""
    encoder = torch_encoder_loader(settings)(model_ref)
    evaluator = make_evaluator(data, encoder.query_prompt, encoder.document_prompt)
    return _plain_metrics(evaluator(encoder.model))


def train_candidate(
    settings: Settings, base: str, data: TrainingData, output_dir: Path, ranks: Ranks | None = None
) -> dict[str, float]:
    """Fine-tune ``base`` on ``data`` and save the best model to ``output_dir``; returns held-out metrics.

    Under torchrun every rank calls this; rank 0 evaluates and saves (the others return ``{}``).
    """
    import torch
    from sentence_transformers import SentenceTransformerTrainer

    ranks = ranks or Ranks()
    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    lora = settings.train_method == "lora"

    # 1. Model, with the prompts as the worker resolves them.
    encoder = training_encoder(settings, base, ranks, bf16=bf16)
    model = encoder.model
    query_prompt, document_prompt = encoder.query_prompt, encoder.document_prompt
    if lora:
        counts = add_lora(model, settings)
        log.info("LoRA adapters: %d of %d parameters train", counts["trainable_params"], counts["total_params"])

    # 2. Data, 3. loss (in-batch negatives at a large batch, computed in mini-batches that fit
    #    memory; under torchrun every rank's documents are negatives for every rank's queries),
    #    4. evaluator (held-out queries against the whole corpus).
    train_dataset, smallest = training_datasets(data)
    loss = make_loss(model, settings, ranks)
    evaluator = make_evaluator(data, query_prompt, document_prompt)

    # 5. Train. Checkpoints live in the version's directory, which every rank (and node) shares.
    prompts = {
        k: v for k, v in {"query": query_prompt, "document": document_prompt, "negative": document_prompt}.items() if v
    }
    checkpoints = output_dir / ".checkpoints"
    args = training_arguments(settings, model, ranks, checkpoints, smallest=smallest, bf16=bf16, prompts=prompts)
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=train_dataset, loss=loss, evaluator=evaluator
    )
    if ranks.distributed and args.world_size != ranks.world_size:
        raise RuntimeError(f"the Trainer sees {args.world_size} process(es), torchrun started {ranks.world_size}")
    trainer.train()
    barrier(ranks)
    if not ranks.main:
        return {}
    shutil.rmtree(checkpoints, ignore_errors=True)

    # 6. Evaluate the model training kept.
    metrics = _plain_metrics(evaluator(model))

    # 7. Save, with the prompts it was trained with, so the worker encodes exactly as trained;
    #    LoRA adapters are merged into the saved weights (and kept beside them).
    if query_prompt:
        model.prompts["query"] = query_prompt
    if lora:
        save_lora(model, output_dir)
    else:
        model.save(str(output_dir))
    return metrics


def training_encoder(settings: Settings, base: str, ranks: Ranks, *, bf16: bool) -> SentenceTransformerEncoder:
    """``base`` loaded to train: full fine-tunes keep float32 master weights; LoRA's frozen base can
    stay in bf16 (half the memory) since only the adapters are updated; each rank on its own GPU;
    never autocast for posts (its weights change as it trains: no ``keep_low_precision_weights``)."""
    import torch

    lora = settings.train_method == "lora"
    options = dataclasses.replace(
        encoder_options(settings), dtype="bfloat16" if lora and bf16 else "float32", autocast="off"
    )
    if ranks.distributed and torch.cuda.is_available():
        options = dataclasses.replace(options, device=f"cuda:{ranks.local_rank}")
    return SentenceTransformerEncoder(base, options)


def training_datasets(data: TrainingData) -> tuple[Any, int]:
    """(query, document) pairs, and (query, document, negative) where a moderator rejected a match;
    one dataset or a dict of both, and the smallest one's size."""
    from datasets import Dataset

    datasets: dict[str, Dataset] = {}
    if data.pairs:
        datasets["pairs"] = Dataset.from_dict(
            {"query": [q for q, _ in data.pairs], "document": [d for _, d in data.pairs]}
        )
    if data.triplets:
        datasets["hard_negatives"] = Dataset.from_dict(
            {
                "query": [q for q, _, _ in data.triplets],
                "document": [d for _, d, _ in data.triplets],
                "negative": [n for _, _, n in data.triplets],
            }
        )
    train_dataset: Any = datasets if len(datasets) > 1 else next(iter(datasets.values()))
    return train_dataset, min(len(d) for d in datasets.values())


def training_arguments(
    settings: Settings,
    model: Any,
    ranks: Ranks,
    checkpoints: Path,
    *,
    smallest: int,
    bf16: bool,
    prompts: dict[str, str],
) -> Any:
    """The Trainer's arguments: the recipe's settings, DDP or FSDP under torchrun, best epoch kept."""
    import torch
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers

    lora = settings.train_method == "lora"
    fsdp = settings.train_fsdp and ranks.distributed
    per_epoch = settings.train_max_steps <= 0
    return SentenceTransformerTrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=settings.train_epochs,
        max_steps=settings.train_max_steps,
        per_device_train_batch_size=max(2, min(settings.train_batch_size, smallest)),
        learning_rate=settings.train_learning_rate,
        lr_scheduler_type=settings.train_scheduler,
        # Transformers 5 takes the warmup ratio as a float number of "steps" below 1.
        warmup_steps=settings.train_warmup_ratio,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        bf16=bf16,
        # Without this, accelerate sees no GPU under torchrun and trains each rank on its own
        # (no DDP); with it, CPU ranks form a gloo DDP group (what the suite runs).
        use_cpu=not torch.cuda.is_available(),
        # (Transformers 5's names for gradient checkpointing.)
        activation_checkpointing=settings.train_gradient_checkpointing,
        # Non-reentrant: works with a frozen base (LoRA) and with DDP.
        activation_checkpointing_kwargs={"use_reentrant": False} if settings.train_gradient_checkpointing else None,
        ddp_find_unused_parameters=False,
        fsdp="full_shard auto_wrap" if fsdp else "",
        # Shard at the transformer's own block class (Gemma2DecoderLayer, BertLayer, ...).
        fsdp_config={"transformer_layer_cls_to_wrap": block_classes(model)} if fsdp else None,
        eval_strategy="epoch" if per_epoch else "no",
        save_strategy="epoch" if per_epoch else "no",
        # LoRA checkpoints hold the adapters only; the run's last state is kept instead of reloading them.
        load_best_model_at_end=per_epoch and not lora,
        metric_for_best_model=f"eval_{EVALUATOR_NAME}_cosine_{settings.gate_metric}",
        greater_is_better=True,
        save_total_limit=2,
        logging_steps=5,
        seed=settings.train_seed,
        report_to=[],
        prompts=prompts or None,
        disable_tqdm=not ranks.main,
    )


def make_loss(model: Any, settings: Settings, ranks: Ranks) -> Any:
    """CachedMultipleNegativesRankingLoss as the reference recipe has it (scale 20, cosine).

    ``train_mini_batch_size`` is its memory knob; under torchrun, ``train_gather_across_devices``
    makes every rank's documents negatives for every rank's queries, so 8 GPUs at a per-device
    batch of 128 train against 1,024 candidates per query, as one GPU at 1,024 would.
    """
    from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesRankingLoss
    from sentence_transformers.util import cos_sim

    return CachedMultipleNegativesRankingLoss(
        model,
        scale=20.0,
        similarity_fct=cos_sim,
        mini_batch_size=settings.train_mini_batch_size,
        gather_across_devices=ranks.distributed and settings.train_gather_across_devices,
    )


def block_classes(model: Any) -> list[str]:
    """The transformer's repeated block classes (what FSDP shards and wraps one at a time)."""
    return list(getattr(model[0].model, "_no_split_modules", None) or [])


def new_version_name(base_version: str | None) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    stem = (base_version or "model").split("-ft-")[0][:40]
    return f"{stem}-ft-{stamp}"


def write_report(output_dir: Path, report: Mapping[str, Any]) -> Path:
    path = output_dir / "factmatch_eval.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    return path
