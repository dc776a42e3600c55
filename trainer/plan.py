"""A training run's GPU memory, estimated before anything is loaded, and refused when it cannot fit.

A 9B encoder that runs out of memory an hour into a CronJob wastes a GPU night; the same
arithmetic done at start-up names the setting to change instead. The model is built on
PyTorch's meta device (shapes, no storage), so parameter and adapter counts are exact for
any architecture transformers knows; activations are an estimate:

* per token and layer, the tensors autograd keeps for the backward pass, in the compute dtype:
  about 6 x hidden (attention inputs/outputs, norms, residuals) + 3 x intermediate (the
  gated MLP). This is Korthikanti et al. (2022)'s count without the attention-score term,
  which SDPA/flash attention never stores; it gives 34.7 x hidden for Gemma2-9B against
  their 34 x hidden for a GPT block.
* with gradient checkpointing, only each layer's input (hidden) is kept, plus one layer
  recomputed at a time.
* CachedMultipleNegativesRankingLoss runs the graph one mini-batch at a time, so activations
  scale with ``train_mini_batch_size`` x ``max_seq_length``, never with the batch of 1024.

Weights: full fine-tunes keep fp32 master weights (4 bytes), gradients (4) and AdamW's two
moments (8): 16 bytes per parameter, divided by the GPUs under FSDP. LoRA keeps the frozen base
in bf16 (2 bytes) on every GPU and 16 bytes per adapter parameter. A fixed 1.5 GiB covers the
CUDA context and allocator slack.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.settings import Settings

GIB = 1024**3
CUDA_OVERHEAD = int(1.5 * GIB)
HEADROOM = 0.95  # of the device's memory: fragmentation

# Published architectures that may be planned for without their weights or a hub download.
KNOWN_CONFIGS: dict[str, dict[str, Any]] = {
    "BAAI/bge-multilingual-gemma2": {
        "model_type": "gemma2",
        "hidden_size": 3584,
        "intermediate_size": 14336,
        "num_hidden_layers": 42,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "head_dim": 256,
        "vocab_size": 256000,
        "max_position_embeddings": 8192,
        "sliding_window": 4096,
        "query_pre_attn_scalar": 256,
    },
}


@dataclass
class MemoryPlan:
    model: str
    method: str
    world_size: int
    parallel: str
    params: int
    trainable: int
    tokens_per_step: int
    parts: dict[str, int] = field(default_factory=dict)  # bytes per device
    activations_without_checkpointing: int = 0
    activations_with_checkpointing: int = 0
    checkpointing: bool = False
    device_memory: int | None = None  # bytes; None: not known (no GPU, no setting)

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    @property
    def fits(self) -> bool:
        return self.device_memory is None or self.total <= self.device_memory * HEADROOM

    def suggestions(self) -> list[str]:
        """Settings that would shrink this plan, most effective first."""
        found = []
        if not self.checkpointing and self.activations_without_checkpointing > self.activations_with_checkpointing:
            found.append("FACTMATCH_TRAIN_GRADIENT_CHECKPOINTING=true")
        found.append("a smaller FACTMATCH_TRAIN_MINI_BATCH_SIZE (activations scale with it; the batch does not)")
        if self.method == "full":
            found.append("FACTMATCH_TRAIN_METHOD=lora")
            found.append("more GPUs with FACTMATCH_TRAIN_FSDP=true (trainer.gpu.count in the chart)")
        found.append("a shorter FACTMATCH_MAX_SEQ_LENGTH")
        return found

    def refusal(self) -> str:
        assert self.device_memory is not None
        return (
            f"training {self.model} ({self.method}, {self.world_size} device(s)) needs about "
            f"{self.total / GIB:.1f} GiB per device; {self.device_memory / GIB:.1f} GiB available. "
            f"Try: {'; '.join(self.suggestions())}. `factmatch train --plan` shows the parts; the plan is an"
            " estimate, and FACTMATCH_TRAIN_GPU_MEMORY_GIB sets the memory it is checked against."
        )

    def rows(self) -> list[tuple[str, float]]:
        return [(name, value / GIB) for name, value in self.parts.items()]


def _config(model_ref: str) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model_ref, local_files_only=not Path(model_ref).exists())
    except OSError:
        known = KNOWN_CONFIGS.get(model_ref)
        if known is None:
            raise ValueError(
                f"cannot read {model_ref!r}'s config.json (not a local model, not in the hub cache)"
            ) from None
        values = dict(known)
        return AutoConfig.for_model(values.pop("model_type"), **values)


def _shapes(config: Any) -> tuple[int, list[tuple[str, int, int]]]:
    """Parameter count and every linear layer's (name, in, out), from a storage-less model."""
    import torch
    from transformers import AutoModel

    with torch.device("meta"):
        model = AutoModel.from_config(config)  # type: ignore[no-untyped-call]
    params = sum(p.numel() for p in model.parameters())
    linears = [(n, m.in_features, m.out_features) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    return int(params), linears


def _lora_params(settings: Settings, linears: list[tuple[str, int, int]]) -> int:
    from trainer.lora import target_modules

    targets = target_modules(settings)

    def wrapped(name: str) -> bool:
        if targets == "all-linear":
            return True
        leaf = name.rsplit(".", 1)[-1]
        return any(leaf == t or fnmatch.fnmatch(name, t) for t in targets)

    return sum(settings.lora_rank * (i + o) for name, i, o in linears if wrapped(name))


def device_memory(settings: Settings) -> int | None:
    if settings.train_gpu_memory_gib is not None:
        return int(settings.train_gpu_memory_gib * GIB)
    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(0).total_memory)
    return None


def plan_memory(settings: Settings, model_ref: str, world_size: int = 1) -> MemoryPlan:
    config = _config(model_ref)
    params, linears = _shapes(config)
    hidden = int(config.hidden_size)
    intermediate = int(getattr(config, "intermediate_size", 4 * hidden))
    layers = int(config.num_hidden_layers)
    seq = settings.max_seq_length or min(512, int(getattr(config, "max_position_embeddings", 512)))
    tokens = settings.train_mini_batch_size * seq
    lora = settings.train_method == "lora"
    fsdp = settings.train_fsdp and world_size > 1
    trainable = _lora_params(settings, linears) if lora else params
    shards = world_size if fsdp else 1
    act_bytes = 2  # bf16 autocast on GPUs (fp32 would double the activations)
    per_token_layer = act_bytes * (6 * hidden + 3 * intermediate)
    without = tokens * layers * per_token_layer
    with_ = tokens * layers * act_bytes * hidden + tokens * per_token_layer
    plan = MemoryPlan(
        model=model_ref,
        method=settings.train_method,
        world_size=world_size,
        parallel="fsdp" if fsdp else ("ddp" if world_size > 1 else "single"),
        params=params,
        trainable=trainable,
        tokens_per_step=tokens,
        activations_without_checkpointing=without,
        activations_with_checkpointing=with_,
        checkpointing=settings.train_gradient_checkpointing,
        device_memory=device_memory(settings),
    )
    base_weights = params * (2 if lora else 4)
    plan.parts = {
        "weights": (base_weights + (trainable * 4 if lora else 0)) // (1 if lora else shards),
        "gradients": trainable * 4 // shards,
        "optimizer (AdamW)": trainable * 8 // shards,
        "activations": with_ if settings.train_gradient_checkpointing else without,
        # CachedMNRL keeps every batch embedding and its gradient (query, document, negative).
        "embedding cache": settings.train_batch_size * 3 * hidden * 4 * 2,
        "CUDA context and slack": CUDA_OVERHEAD,
    }
    return plan
