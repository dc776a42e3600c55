"""Low-rank adapters (LoRA, through PEFT) for encoders too large to fine-tune whole.

A full fine-tune with AdamW keeps about 16 bytes per parameter (fp32 weights, gradients and
two optimizer moments): 144 GB for the 9B reference model before any activation. LoRA
freezes the base and trains two small matrices beside each wrapped linear layer, so only
those carry gradients and optimizer state.

The adapters wrap the transformer inside the sentence-transformers model with PEFT's own
``get_peft_model``. sentence-transformers' ``add_adapter`` would do the same through
transformers, but transformers 5.24 refuses PEFT below 0.22 and 0.21.2 is the newest release.

A trained candidate is saved twice: merged into the base weights (the version directory
itself, which the worker and every other tool load like any model, with no PEFT at serving
time) and as base + adapter (``adapter/``, a few MB, which sentence-transformers loads on
top of the base it names) for audit and for re-merging onto an upgraded base.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from worker.settings import Settings

ADAPTER_DIR = "adapter"


def target_modules(settings: Settings) -> str | list[str]:
    spec = settings.lora_target_modules
    return spec if spec == "all-linear" else [name.strip() for name in spec.split(",") if name.strip()]


def describe(settings: Settings) -> dict[str, Any]:
    """What the registry records of a LoRA run."""
    return {
        "rank": settings.lora_rank,
        "alpha": settings.lora_alpha,
        "dropout": settings.lora_dropout,
        "target_modules": target_modules(settings),
    }


def add_lora(model: Any, settings: Settings) -> dict[str, int]:
    """Wrap ``model``'s transformer with fresh adapters; returns trainable and total parameter counts."""
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(
        r=settings.lora_rank,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=target_modules(settings),
        task_type=TaskType.FEATURE_EXTRACTION,
    )
    module = model[0]
    module.model = get_peft_model(module.model, config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable_params": int(trainable), "total_params": int(total)}


def save_lora(model: Any, output_dir: Path) -> None:
    """Save base + adapter to ``output_dir/adapter``, then merge and save the full model to ``output_dir``."""
    model.save(str(output_dir / ADAPTER_DIR))
    module = model[0]
    module.model = module.model.merge_and_unload()
    model.save(str(output_dir))
