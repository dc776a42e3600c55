"""The reference model's scale on a GPU: random weights in bge-multilingual-gemma2's exact
architecture (Gemma2, 9.2B parameters, 3,584 hidden, 42 layers, last-token pooling), bf16.

Run on a lent GPU machine (CI has none); no download: the weights are random, which is all a
speed and memory check needs.

1. Encode throughput in posts/s with the worker's batch planner (each fetched batch of 64
   posts sorted by length and cut under the padded-token budget) against fixed batches of 32
   in arrival order, at CheckThat!-length posts with the instruct prompt; the forward pass's
   share of the card's bf16 peak (MFU, useful tokens only) and the peak memory.
2. One LoRA training step with CachedMultipleNegativesRankingLoss at batch 1024 (gradient
   checkpointing, bf16 weights, AdamW on the adapter): seconds and peak memory.

Token lengths: words x 1.35 + the prompt's 24 tokens (Gemma's tokenizer on English tweets;
the tokenizer itself is not available offline), capped at 512.

    python benchmarks/gpu_reference_scale.py [--lengths lengths.json] [--out results.json]

``--lengths`` is a JSON list of post word counts (default: the CheckThat! 2020 test tweets in
../shared/data, which a GPU machine may not have: write the list here and carry it).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.plan import KNOWN_CONFIGS
from worker.core.batching import plan_batches

PROMPT_TOKENS = 24
TOKENS_PER_WORD = 1.35
REFERENCE = {k: v for k, v in KNOWN_CONFIGS["BAAI/bge-multilingual-gemma2"].items() if k != "model_type"}
H100_BF16_DENSE_PEAK = 989e12
# A CPU run (tiny sizes, --smoke) only checks that the script works before GPU time is spent.
DEVICE = "cuda"


def token_lengths(words: list[int], cap: int = 512) -> list[int]:
    return [min(cap, PROMPT_TOKENS + round(w * TOKENS_PER_WORD)) for w in words]


def forward_flops(lengths: list[int], params_matmul: float, cfg: dict[str, int]) -> float:
    """Useful forward FLOPs: 2 x matmul parameters per token, plus attention scores and values."""
    attn_width = cfg["num_attention_heads"] * cfg["head_dim"]
    attention = sum(4 * cfg["num_hidden_layers"] * n * n * attn_width for n in lengths)
    return 2 * params_matmul * sum(lengths) + attention


def build(attn: str) -> tuple[Any, Any, float]:
    import torch
    from transformers import Gemma2Config, Gemma2Model

    from tests.tiny_models import build_tiny_gemma2
    from worker.core.encoder import EncoderOptions, SentenceTransformerEncoder

    tiny = build_tiny_gemma2(Path(tempfile.mkdtemp()), hidden_size=REFERENCE["hidden_size"])
    dtype = "bfloat16" if DEVICE == "cuda" else "float32"
    encoder = SentenceTransformerEncoder(str(tiny), EncoderOptions(device=DEVICE, dtype=dtype))
    config = Gemma2Config(**REFERENCE, attn_implementation=attn)
    torch.manual_seed(0)
    with torch.device(DEVICE):
        big = Gemma2Model(config).to(getattr(torch, dtype))
    big.eval()
    encoder.model[0].model = big  # ST 6 keeps the transformers model here (auto_model reads it)
    assert encoder.model[0].auto_model is big
    params = sum(p.numel() for p in big.parameters())
    embedding = big.embed_tokens.weight.numel()
    return encoder, big, float(params - embedding)


def features(lengths: list[int], vocab: int, device: str) -> dict[str, Any]:
    """Left-padded input ids (as the tokenizer pads for last-token pooling)."""
    import torch

    width = max(lengths)
    ids = torch.zeros((len(lengths), width), dtype=torch.long, device=device)
    mask = torch.zeros((len(lengths), width), dtype=torch.long, device=device)
    for row, n in enumerate(lengths):
        ids[row, width - n :] = torch.randint(3, vocab, (n,), device=device)
        mask[row, width - n :] = 1
    return {"input_ids": ids, "attention_mask": mask}


def encode_groups(model: Any, lengths: list[int], groups: list[list[int]], vocab: int) -> None:
    import torch

    with torch.inference_mode():
        for group in groups:
            out = model(features([lengths[i] for i in group], vocab, DEVICE))
            out["sentence_embedding"].float().cpu()


def planner_groups(lengths: list[int], fetch: int, budget: int) -> list[list[int]]:
    groups = []
    for start in range(0, len(lengths), fetch):
        chunk = list(range(start, min(len(lengths), start + fetch)))
        groups += [[chunk[i] for i in g] for g in plan_batches([lengths[i] for i in chunk], budget)]
    return groups


def fixed_groups(lengths: list[int], size: int) -> list[list[int]]:
    return [list(range(s, min(len(lengths), s + size))) for s in range(0, len(lengths), size)]


def bench_encode(encoder: Any, params_matmul: float, lengths: list[int], rounds: int = 3) -> dict[str, Any]:
    import torch

    model = encoder.model
    flops = forward_flops(lengths, params_matmul, REFERENCE)
    plans = {
        "fixed batches of 32, arrival order": fixed_groups(lengths, 32),
        "worker planner, budget 16384": planner_groups(lengths, 64, 16_384),
        "worker planner, budget 65536": planner_groups(lengths, 64, 65_536),
        "planner over the whole set, budget 65536": planner_groups(lengths, len(lengths), 65_536),
    }
    encode_groups(model, lengths, plans["fixed batches of 32, arrival order"][:2], REFERENCE["vocab_size"])
    out: dict[str, Any] = {}
    for name, groups in plans.items():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        for _ in range(rounds):
            encode_groups(model, lengths, groups, REFERENCE["vocab_size"])
        torch.cuda.synchronize()
        seconds = (time.perf_counter() - started) / rounds
        padded = sum(len(g) * max(lengths[i] for i in g) for g in groups)
        out[name] = {
            "posts_per_s": round(len(lengths) / seconds, 1),
            "mfu_useful": round(flops / seconds / H100_BF16_DENSE_PEAK, 3),
            "padding_share": round(1 - sum(lengths) / padded, 3),
            "encoder_calls": len(groups),
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1),
        }
        print(name, out[name], flush=True)
    return out


def lora_step(encoder: Any, big: Any, lengths: list[int], batch: int, mini_batch: int) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, get_peft_model
    from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesRankingLoss

    big.train()
    big.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    peft_model = get_peft_model(
        big,
        LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
    )
    encoder.model[0].model = peft_model
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    loss_fn = CachedMultipleNegativesRankingLoss(encoder.model, scale=20.0, mini_batch_size=mini_batch)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=2e-4)
    queries = [lengths[i % len(lengths)] for i in range(batch)]
    # Fact-checks (title + claim) run a little longer than tweets and carry no prompt.
    documents = [max(8, round(n * 1.2) - PROMPT_TOKENS) for n in queries]
    out: dict[str, Any] = {"trainable_params": trainable, "batch": batch, "mini_batch": mini_batch}
    for step in range(2):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        feats = [
            features(queries, REFERENCE["vocab_size"], DEVICE),
            features(documents, REFERENCE["vocab_size"], DEVICE),
        ]
        loss = loss_fn(feats, torch.empty(0))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        out[f"step{step}_s"] = round(time.perf_counter() - started, 2)
        out[f"step{step}_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
        out["loss"] = float(loss)
        print("lora step", step, out, flush=True)
    return out


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=Path, help="JSON list of post word counts.")
    parser.add_argument("--out", type=Path, default=Path("gpu_reference_scale.json"))
    parser.add_argument("--mini-batch", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--smoke", action="store_true", help="Tiny sizes on the CPU: check the script, no figures.")
    args = parser.parse_args()
    if args.lengths is not None:
        words = json.loads(args.lengths.read_text())
    else:
        shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "checkthat2020" / "test_queries.jsonl"
        words = [len(json.loads(line)["text"].split()) for line in shared.read_text().splitlines() if line.strip()]
    lengths = token_lengths(words)
    if args.smoke:
        global DEVICE
        DEVICE = "cpu"
        REFERENCE.update(vocab_size=5000, hidden_size=64, intermediate_size=128, num_hidden_layers=2)
        REFERENCE.update(num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16)
        for name in ("synchronize", "reset_peak_memory_stats", "empty_cache"):
            setattr(torch.cuda, name, lambda: None)
        torch.cuda.max_memory_allocated = torch.cuda.memory_allocated = lambda: 0  # type: ignore[assignment]
        lengths = lengths[:40]
    card = torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu (smoke)"
    results: dict[str, Any] = {"card": card, "torch": torch.__version__}
    results["posts"] = len(lengths)
    results["mean_tokens"] = sum(lengths) / len(lengths)
    for attn in ("eager", "flex_attention") if DEVICE == "cuda" else ("eager",):
        encoder, big, params_matmul = build(attn)
        results["params_total"] = sum(p.numel() for p in big.parameters())
        results["weights_gib"] = round(torch.cuda.memory_allocated() / 2**30, 1)
        results[f"encode_{attn}"] = bench_encode(encoder, params_matmul, lengths * 2)
        if attn == "eager":
            try:
                results["lora_cmnrl"] = lora_step(encoder, big, lengths, args.batch, args.mini_batch)
            except torch.cuda.OutOfMemoryError as exc:
                results["lora_cmnrl"] = {"error": f"out of memory: {exc}"[:500]}
        del encoder, big
        torch.cuda.empty_cache()
        args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
