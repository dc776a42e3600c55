"""A short GPU check of the encoder and trainer paths (run on a lent GPU machine; CI has none).

1. device="auto" resolves to CUDA with bf16 (or fp16) and gives the same unit vectors as CPU
   float32, for a tiny BERT and for a tiny Gemma2 in the reference model's format (last-token
   pooling, the <instruct>...<query> prompt, 2,304 dimensions);
2. encode throughput of a BERT-base-sized random model, GPU bf16 against CPU float32, side by side;
3. the trainer's CachedMultipleNegativesRankingLoss step runs in bf16 on the GPU and saves a model
   that loads and encodes.

    python benchmarks/gpu_check.py [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.tiny_models import build_tiny_bert, build_tiny_gemma2
from worker.core.encoder import EncoderOptions, SentenceTransformerEncoder

TEXTS = [f"post {i}: 5G towers spread the coronavirus, says thread number {i}" * (1 + i % 4) for i in range(64)]


def agreement(model_dir: Path) -> dict[str, object]:
    cpu = SentenceTransformerEncoder(str(model_dir), EncoderOptions(device="cpu", dtype="float32"))
    gpu = SentenceTransformerEncoder(str(model_dir), EncoderOptions(device="auto", dtype="auto"))
    a, b = cpu.encode_queries(TEXTS), gpu.encode_queries(TEXTS)
    cos = (a * b).sum(1)
    return {
        "device": gpu.device,
        "dtype": str(next(gpu.model.parameters()).dtype),
        "dimension": gpu.dimension,
        "query_prompt": gpu.query_prompt[:40],
        "cosine_mean": float(cos.mean()),
        "cosine_min": float(cos.min()),
        "norm_max_error": float(np.abs(np.linalg.norm(b, axis=1) - 1).max()),
    }


def throughput(model_dir: Path, device: str, dtype: str, rounds: int = 3) -> float:
    encoder = SentenceTransformerEncoder(str(model_dir), EncoderOptions(device=device, dtype=dtype, batch_size=64))
    texts = TEXTS * 8
    encoder.encode_queries(texts[:64])
    started = time.perf_counter()
    for _ in range(rounds):
        encoder.encode_queries(texts)
    return len(texts) * rounds / (time.perf_counter() - started)


def base_sized_bert(directory: Path) -> Path:
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import BertConfig, BertModel

    tiny = build_tiny_bert(directory / "tok")
    hf = directory / "base-hf"
    torch.manual_seed(0)
    BertModel(
        BertConfig(
            vocab_size=600,
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            intermediate_size=3072,
            max_position_embeddings=512,
        )
    ).save_pretrained(hf)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        src = tiny / name if (tiny / name).exists() else directory / "tok" / "hf" / name
        if src.exists():
            (hf / name).write_bytes(src.read_bytes())
    model = SentenceTransformer(modules=[Transformer(str(hf), max_seq_length=256), Pooling(768, "mean"), Normalize()])
    model.save(str(directory / "base"))
    return directory / "base"


def train_step(model_dir: Path, out: Path) -> dict[str, object]:
    from trainer.train import TrainingData, train_candidate
    from worker.settings import Settings

    data = TrainingData(
        pairs=[(f"claim {i} is false", f"fact-check {i}: claim {i} is false") for i in range(32)],
        eval_queries={f"q{i}": f"claim {i} is false" for i in range(8)},
        eval_relevant={f"q{i}": {f"d{i}"} for i in range(8)},
        corpus={f"d{i}": f"fact-check {i}: claim {i} is false" for i in range(16)},
    )
    settings = Settings(
        _env_file=None,
        train_max_steps=3,
        train_batch_size=16,
        train_mini_batch_size=8,  # type: ignore[call-arg]
        train_learning_rate=1e-4,
    )
    started = time.perf_counter()
    metrics = train_candidate(settings, str(model_dir), data, out)
    reloaded = SentenceTransformerEncoder(str(out), EncoderOptions(device="auto"))
    vector = reloaded.encode_queries(["claim 3 is false"])
    return {
        "seconds": time.perf_counter() - started,
        "ndcg@10": metrics.get("ndcg@10"),
        "reloaded_dimension": reloaded.dimension,
        "finite": bool(np.isfinite(vector).all()),
    }


def main() -> None:
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="gpu_check.json")
    args = parser.parse_args()
    report: dict[str, object] = {
        "cuda": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        report["tiny_bert"] = agreement(build_tiny_bert(root / "bert"))
        gemma = build_tiny_gemma2(root / "gemma")
        report["tiny_gemma2"] = agreement(gemma)
        base = base_sized_bert(root / "base")
        gpu_rate = throughput(base, "auto", "auto")
        cpu_rate = throughput(base, "cpu", "float32", rounds=1)
        report["bert_base_texts_per_s"] = {"gpu_bf16": gpu_rate, "cpu_fp32": cpu_rate, "ratio": gpu_rate / cpu_rate}
        report["train_tiny_gemma2_bf16"] = train_step(gemma, root / "ft")
    print(json.dumps(report, indent=2))
    Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
