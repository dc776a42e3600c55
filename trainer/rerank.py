"""Train a version's reranker: a cross-encoder made from its own encoder, on mined hard negatives.

In numbered steps like the encoder's training script:
1. model, 2. data, 3. loss, 4. evaluator, 5. train, 6. evaluate, 7. save.

The negatives are the retriever's own mistakes: for each labelled post, the fused candidates
of the serving version that are not its fact-check. A reranker that learns to push those
down is learning exactly what the first stage gets wrong. The result is saved as
``reranker/`` inside the version's directory (:mod:`worker.retrieval.rerank`).

A pair costs a full transformer pass, so ``train_reranker_layers`` makes it cheaper: the
full-depth cross-encoder is trained first and its logits over the same pairs are what a
cross-encoder of the encoder's first few layers learns (distillation, :func:`fit_reranker`).
"""

from __future__ import annotations

import logging
import random
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.configs import retrieval_config
from worker.retrieval.calibrate import LabelledPosts, collect_pools
from worker.retrieval.openset import twin_groups, with_twins
from worker.retrieval.rerank import RERANKER_DIR, CrossEncoderReranker, Reranker
from worker.retrieval.retriever import Retriever
from worker.wire import document_text

if TYPE_CHECKING:
    from worker.domain import Encoder
    from worker.settings import Settings
    from worker.storage import Store

log = logging.getLogger(__name__)

Pair = tuple[str, str, float]  # (post, fact-check text, 1 right / 0 wrong)


async def mine_pairs(
    store: Store,
    settings: Settings,
    version: str,
    encoder: Encoder,
    labelled: LabelledPosts,
    *,
    negatives: int = 7,
    progress: bool = False,
) -> list[Pair]:
    """Each labelled post with its fact-checks and ``negatives`` wrong candidates of the retriever."""
    corpus = await store.corpus.all_fact_checks()
    texts = {fc.id: document_text(fc.title, fc.claim) for fc in corpus}
    # A copy of a gold (the corpus may hold one fact-check twice) is no negative.
    qrels = with_twins(labelled.qrels, twin_groups(corpus))
    retriever = Retriever(store.candidates, replace(retrieval_config(settings), min_score=-1.0))
    pools = await collect_pools(retriever, version, encoder, labelled, progress=progress)
    pairs: list[Pair] = []
    for q, pool in pools.items():
        gold = qrels.get(q, set())
        post = labelled.queries[q]
        pairs += [(post, texts[fc], 1.0) for fc in sorted(gold) if fc in texts]
        wrong = [s.candidate.fact_check_id for s in pool if s.candidate.fact_check_id not in gold]
        pairs += [(post, texts[fc], 0.0) for fc in wrong[:negatives] if fc in texts]
    return pairs


def cross_encoder(encoder_path: str, max_length: int, layers: int = 0) -> Any:
    """Step 1, the model: the version's own encoder turned into a cross-encoder with a fresh one-logit
    head; with ``layers``, only its first ``layers`` transformer layers (a student to distil into)."""
    import torch
    from sentence_transformers import CrossEncoder

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if layers > 0:
        from transformers import AutoConfig

        depth = getattr(AutoConfig.from_pretrained(encoder_path), "num_hidden_layers", None)
        if depth is not None and layers >= depth:
            # More layers than the checkpoint has would be left randomly initialised.
            raise ValueError(f"train_reranker_layers={layers}: the encoder has {depth} layers, a student needs fewer")
    # Hugging Face builds the shallower model from the same checkpoint: the first layers' weights
    # load, the rest are left out (a student that starts from what the encoder's bottom learned).
    config = {"num_hidden_layers": layers} if layers > 0 else None
    model = CrossEncoder(encoder_path, num_labels=1, max_length=max_length, device=device, config_kwargs=config)
    # The word embeddings stay as the encoder learned them: a multilingual vocabulary is most of
    # the weights (96M of e5-small's 118M), updating it costs most of each step, and the few
    # thousand English pairs here would only pull rows of it away from the other languages.
    for name, parameter in model.named_parameters():
        if "word_embeddings" in name:
            parameter.requires_grad_(False)
    return model


def pair_dataset(pairs: Sequence[Pair], seed: int) -> Any:
    """Step 2, the data: (post, fact-check, label) with the retriever's hard negatives, shuffled."""
    from datasets import Dataset

    rows = list(pairs)
    random.Random(seed).shuffle(rows)
    return Dataset.from_dict(
        {"post": [p for p, _, _ in rows], "fact_check": [d for _, d, _ in rows], "label": [y for _, _, y in rows]}
    )


def pair_loss(model: Any, train: Sequence[Pair], *, distilled: bool) -> Any:
    """Step 3, the loss: the teacher's logits (mean squared error), or binary cross-entropy with
    the positives weighted up to balance the mined negatives."""
    import torch
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss, MSELoss

    if distilled:
        return MSELoss(model)
    positives = max(1.0, sum(y for _, _, y in train))
    return BinaryCrossEntropyLoss(model, pos_weight=torch.tensor((len(train) - positives) / positives))


def train_reranker(
    settings: Settings,
    encoder_path: str,
    train: Sequence[Pair],
    output_dir: Path,
    *,
    heldout: Sequence[Pair] = (),
    epochs: int = 1,
    batch_size: int = 16,
    learning_rate: float = 3e-5,
    max_length: int = 256,
    layers: int = 0,
    teacher: Reranker | None = None,
) -> dict[str, float]:
    """Fine-tune a cross-encoder from ``encoder_path``'s weights (its first ``layers`` only when
    positive); saves it to ``output_dir/reranker``. With a ``teacher``, the pairs' targets are the
    teacher's logits (distillation, mean squared error) instead of their right/wrong labels."""
    import torch
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderClassificationEvaluator

    torch.manual_seed(settings.train_seed)  # the fresh head's weights too, so a run repeats
    model = cross_encoder(encoder_path, max_length, layers)
    if teacher is not None:
        logits = teacher.score([(p, d) for p, d, _ in train]).tolist()
        train = [(p, d, y) for (p, d, _), y in zip(train, logits, strict=True)]
    dataset = pair_dataset(train, settings.train_seed)
    loss = pair_loss(model, train, distilled=teacher is not None)

    # 4. Evaluator: held-out pairs, right vs wrong.
    pairs, labels = [[p, d] for p, d, _ in heldout], [int(y) for _, _, y in heldout]
    evaluator = CrossEncoderClassificationEvaluator(pairs, labels, name="heldout") if heldout else None

    # 5. Train.
    with tempfile.TemporaryDirectory(prefix="factmatch-rerank-") as checkpoints:
        args = CrossEncoderTrainingArguments(
            output_dir=checkpoints,
            num_train_epochs=epochs,
            per_device_train_batch_size=batch_size,
            learning_rate=learning_rate,
            warmup_steps=0.1,
            save_strategy="no",
            # Pinned memory only speeds copies to a GPU (on a CPU, torch warns that it is ignored).
            dataloader_pin_memory=torch.cuda.is_available(),
            logging_steps=20,
            seed=settings.train_seed,
            report_to=[],
            disable_tqdm=False,
        )
        CrossEncoderTrainer(model=model, args=args, train_dataset=dataset, loss=loss).train()

    # 6. Evaluate.
    metrics: dict[str, float] = {}
    if evaluator is not None:
        metrics = {k: float(v) for k, v in _as_dict(evaluator(model)).items()}
        log.info("reranker held-out: %s", metrics)

    # 7. Save inside the version, so it ships, rolls out and rolls back with the encoder.
    model.save_pretrained(str(output_dir / RERANKER_DIR))
    return metrics


def fit_reranker(
    settings: Settings,
    encoder_path: str,
    train: Sequence[Pair],
    output_dir: Path,
    *,
    heldout: Sequence[Pair] = (),
) -> dict[str, float]:
    """The version's reranker: its encoder's full depth trained on the pairs, or, with
    ``train_reranker_layers``, a cross-encoder of that many layers distilled from that full-depth one
    (trained first, then thrown away): a few layers cost that share of the pairs' arithmetic."""
    layers = settings.train_reranker_layers
    if layers <= 0:
        return train_reranker(settings, encoder_path, train, output_dir, heldout=heldout)
    with tempfile.TemporaryDirectory(prefix="factmatch-teacher-") as tmp:
        train_reranker(settings, encoder_path, train, Path(tmp), heldout=heldout)
        teacher = CrossEncoderReranker(str(Path(tmp) / RERANKER_DIR))
        return train_reranker(
            settings,
            encoder_path,
            train,
            output_dir,
            heldout=heldout,
            epochs=settings.train_reranker_distil_epochs,
            layers=layers,
            teacher=teacher,
        )


def _as_dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
