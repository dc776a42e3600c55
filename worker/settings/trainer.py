"""The trainer (defaults: the reference model's recipe) and its gate.

One group of the fields of :class:`worker.settings.Settings` (its environment variables keep the
``FACTMATCH_`` prefix and the field's name; the group only says where a setting belongs).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class TrainerSettings(BaseModel):
    """The trainer (defaults: the reference model's recipe) and its gate."""

    train_learning_rate: float = Field(2e-4, gt=0, lt=1)
    train_epochs: float = Field(1.0, gt=0, le=100)
    train_max_steps: int = Field(-1, ge=-1, description="Overrides epochs when positive.")
    train_batch_size: int = Field(64, ge=2, le=65_536, description="Per-device batch (in-batch negatives).")
    train_mini_batch_size: int = Field(16, ge=1, le=4096, description="GradCache mini-batch that fits memory.")
    train_warmup_ratio: float = Field(0.1, ge=0, lt=1)
    train_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    train_eval_fraction: float = Field(0.1, gt=0, lt=1, description="Held-out share when no eval split is given.")
    train_seed: int = 42
    train_method: Literal["full", "lora"] = Field(
        "full",
        description="lora: train low-rank adapters (PEFT) on a frozen base, merged into the saved version;"
        " what a 9B encoder needs (see `factmatch train --plan`).",
    )
    lora_rank: int = Field(16, ge=1, le=1024)
    lora_alpha: int = Field(32, ge=1, le=4096)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    lora_target_modules: str = Field(
        "all-linear",
        pattern=r"^(all-linear|[A-Za-z_][A-Za-z0-9_.]*(,[A-Za-z_][A-Za-z0-9_.]*)*)$",
        description="Comma-separated module names the adapters wrap (q_proj,v_proj), or all-linear.",
    )
    train_gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: far less memory for about a third more time."
    )
    train_gather_across_devices: bool = Field(
        True,
        description="Under torchrun, every rank's documents are in-batch negatives for every rank's queries"
        " (CachedMultipleNegativesRankingLoss gather_across_devices).",
    )
    train_fsdp: bool = Field(
        False,
        description="Under torchrun, a full fine-tune shards weights, gradients and optimizer state (FSDP)"
        " instead of copying them to every GPU (DDP).",
    )
    train_gpu_memory_gib: float | None = Field(
        None, gt=0, le=100_000, description="Memory per training device the plan must fit (default: the GPU's own)."
    )
    train_reranker_layers: int = Field(
        0,
        ge=0,
        le=128,
        description="Layers of the version's reranker (when reranking is on): 0 keeps its encoder's full depth;"
        " fewer are distilled from a full-depth one trained first, costing that share of the arithmetic a pair.",
    )
    train_reranker_distil_epochs: int = Field(
        3, ge=1, le=100, description="Epochs a shallower reranker learns its teacher's logits over the mined pairs."
    )
    shadow_share: float = Field(
        0.1, ge=0, le=1, description="Share of posts the shadow version (if any) also answers, unpublished."
    )
    gate_shadow_min_posts: int = Field(
        0, ge=0, description="Shadow posts a version needs before promotion (0: no shadow evidence required)."
    )
    gate_shadow_min_agreement: float = Field(
        0.0, ge=0, le=1, description="Least rank-1 agreement with the active version in shadow for promotion."
    )
    gate_metric: Literal["ndcg@10", "map@100", "mrr@10", "accuracy@1", "accuracy@5", "recall@10"] = "ndcg@10"
    gate_margin: float = Field(0.0, ge=-1, le=1, description="A candidate must beat the active version by this.")
    recalibrate_min_verdicts: int = Field(
        200,
        ge=1,
        description="New verdicts since the active version's decision was fitted before `factmatch recalibrate`"
        " refits it.",
    )
    recalibrate_heldout_share: float = Field(
        0.3, gt=0, lt=1, description="Share of the verdicts' posts held out to judge a refit (by post id)."
    )
    recalibrate_min_judged: int = Field(
        20, ge=1, description="Held-out verdicts on what a decision shows in a tier group before it is judged there."
    )
    recalibrate_margin: float = Field(
        0.0, ge=0, le=1, description="Held-out precision a refit may lose against the decision in use."
    )
