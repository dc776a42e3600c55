"""The encoder's arithmetic on CPU, side by side in one run: float32, float32 under bfloat16
autocast (the worker's ``FACTMATCH_AUTOCAST``), and the whole model cast to bfloat16
(``FACTMATCH_DTYPE=bfloat16``).

For each variant of one model (default: the default model):
- posts/s of ``encode_queries`` over CheckThat! train tweets' claim texts (batch 32, best of
  ``--rounds``, variants alternated so each sees the same machine);
- cosine of each post's vector to float32's (min and mean);
- CheckThat! **dev** MAP@5, dense exact cosine against the 10,375 fact-checks: with float32's
  index (what the worker's autocast serves: it encodes posts under autocast and fact-checks in
  float32) and with the fact-checks embedded by the same variant. Document vectors are cached
  under ``--cache``.
- with ``--int8``: also the model's linear layers quantized to int8 by torch's dynamic
  quantization (weights int8, activations quantized per batch: VNNI where the CPU has it), with
  one scale per tensor and per output channel, and per channel with the layers that might lose
  the most agreement kept in float32 (:data:`INT8_VARIANTS`). Their index stays float32's (the
  own-index column is left empty: int8 fact-checks would cost a long re-embed per variant);
- with ``--tiers``: the shipped decision model's tiers on the open-set dev split (half of dev's
  posts lose their fact-checks, as ``benchmarks/decisions.py`` splits it), float32 against bf16
  autocast, through the worker's own SQL (embedded Postgres) and ``Retriever``.

Skips cleanly without ../shared/data. Nothing here reads CheckThat! test.

    .venv/bin/python benchmarks/cpu_precision.py --out benchmarks/results/cpu_precision_2core.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from worker.core.encoder import EncoderOptions, SentenceTransformerEncoder, cpu_has_bf16  # noqa: E402
from worker.local.models import default_model_ref  # noqa: E402
from worker.retrieval.claims import claim_text  # noqa: E402
from worker.retrieval.evaluation import load_labelled_set, read_queries, retrieval_metrics  # noqa: E402
from worker.settings import Settings  # noqa: E402
from worker.wire import document_text  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "checkthat2020"
VARIANTS = {
    "float32": EncoderOptions(device="cpu", dtype="float32", autocast="off"),
    "bf16 autocast": EncoderOptions(device="cpu", dtype="float32", autocast="bfloat16"),
    "bf16 weights": EncoderOptions(device="cpu", dtype="bfloat16", autocast="off"),
}


def _ffn(name: str) -> bool:
    return "intermediate" in name or ("output.dense" in name and "attention" not in name)


# Which of the transformer's linear layers each int8 variant quantizes, and with which scales.
# (``last``: the last transformer layer's number.)
INT8_VARIANTS: dict[str, tuple[str, Callable[[str, int], bool]]] = {
    "int8 per tensor": ("tensor", lambda name, last: True),
    "int8 per channel": ("channel", lambda name, last: True),
    "int8 per channel, attention output kept": ("channel", lambda name, last: "attention.output" not in name),
    "int8 per channel, first and last layer kept": (
        "channel",
        lambda name, last: ".layer.0." not in name and f".layer.{last}." not in name,
    ),
    "int8 per channel, feed-forward only": ("channel", lambda name, last: _ffn(name)),
}


def quantized(ref: str, scales: str, chosen: Callable[[str, int], bool]) -> SentenceTransformerEncoder:
    """A float32 encoder whose chosen linear layers torch's dynamic quantization made int8."""
    import torch
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    encoder = SentenceTransformerEncoder(ref, VARIANTS["float32"])
    qconfig = per_channel_dynamic_qconfig if scales == "channel" else default_dynamic_qconfig
    linear = [name for name, module in encoder.model.named_modules() if isinstance(module, torch.nn.Linear)]
    last = max(int(m.group(1)) for name in linear if (m := re.search(r"\.layer\.(\d+)\.", name)))
    spec = {name: qconfig for name in linear if chosen(name, last)}
    quantize_dynamic(encoder.model, spec, dtype=torch.qint8, inplace=True)  # type: ignore[no-untyped-call]
    return encoder


def documents(encoder: SentenceTransformerEncoder, texts: list[str], path: Path) -> np.ndarray:
    """The fact-checks' vectors as this variant would compute them if it computed the index too
    (the worker's autocast never does: its index stays float32)."""
    if path.is_file():
        loaded: np.ndarray = np.load(path)
        return loaded
    started = time.perf_counter()
    with encoder._arithmetic():
        vectors = np.concatenate([encoder.encode_documents(texts[i : i + 256]) for i in range(0, len(texts), 256)])
    print(f"  {len(texts)} fact-checks embedded in {time.perf_counter() - started:.0f} s", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def _key(name: str) -> str:
    return name.replace(" ", "-").replace(",", "")


def map_at_5(queries: np.ndarray, docs: np.ndarray, ids: list[str], qids: list[str], qrels: Any) -> float:
    top = np.argsort(-(queries @ docs.T), axis=1)[:, :10]
    ranked = {q: [ids[j] for j in row] for q, row in zip(qids, top, strict=True)}
    return float(retrieval_metrics(ranked, qrels)["map@5"])


async def tier_figures(ref: str, cache: Path) -> dict[str, Any]:
    """Open-set dev precision / recall / false alarms per tier with the shipped decision model."""
    import tempfile

    from benchmarks.decisions import CachedSource, NoEncoder, gather, judge, split_posts
    from worker.configs import retrieval_config
    from worker.local.stack import start_database
    from worker.retrieval.decision import Decisions
    from worker.retrieval.retriever import Retriever
    from worker.retrieval.shipped import shipped_decisions
    from worker.retrieval.tiers import cuts_of

    shipped = shipped_decisions(ref)
    if shipped is None:
        return {"skipped": f"no shipped decision model for {ref}"}
    model, thresholds, _, _ = shipped
    decisions = Decisions(model, cuts_of(thresholds))
    dev, _ = split_posts("dev")
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        database = start_database(Path(tmp) / "pg")
        try:
            for name, autocast in (("float32", "off"), ("bf16 autocast", "bfloat16")):
                settings = Settings(_env_file=None, autocast=autocast)  # type: ignore[call-arg]
                gathered = await gather(database.url, ref, settings, [dev], cache / _key(name))
                config = replace(retrieval_config(settings), min_score=-1.0)
                retriever = Retriever(CachedSource(gathered), config)
                report, _ = await judge(retriever, NoEncoder(gathered.dimension), dev, decisions)
                out[name] = {
                    tier: {k: round(float(report[tier][k]), 4) for k in ("precision", "recall", "false_alarm")}
                    for tier in ("match", "match_or_suggestion")
                } | {"auroc": round(float(report["auroc"]), 4)}
                print(name, json.dumps(out[name]), flush=True)
        finally:
            database.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="A sentence-transformers directory (default: the default model).")
    parser.add_argument("--posts", type=int, default=800)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/factmatch-bench/precision"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--tiers", action="store_true", help="Also the shipped decision model's open-set dev tiers.")
    parser.add_argument("--int8", action="store_true", help="Also torch's dynamic int8 quantization of the model.")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"skipped: {DATA} is absent")
        return
    import torch

    ref = args.model or default_model_ref(Settings(_env_file=None).model_store)  # type: ignore[call-arg]
    train, _ = read_queries(DATA / "train_queries.jsonl")
    posts = [claim_text(t) for t in list(train.values())[: args.posts]]
    dev = load_labelled_set(DATA / "corpus.jsonl", DATA / "dev_queries.jsonl", DATA / "dev_qrels.tsv")
    doc_texts = [document_text(fc.title, fc.claim) for fc in dev.corpus]
    doc_ids = [fc.id for fc in dev.corpus]
    qids = list(dev.queries)
    dev_posts = [claim_text(dev.queries[q]) for q in qids]
    encoders = {name: SentenceTransformerEncoder(ref, options) for name, options in VARIANTS.items()}
    if args.int8:
        encoders |= {name: quantized(ref, scales, chosen) for name, (scales, chosen) in INT8_VARIANTS.items()}
    print(f"model {ref}; CPU bf16: {cpu_has_bf16()}; torch threads {torch.get_num_threads()}", flush=True)
    for encoder in encoders.values():
        encoder.encode_queries(posts[:64])  # warm-up
    seconds: dict[str, list[float]] = {name: [] for name in encoders}
    vectors: dict[str, np.ndarray] = {}
    for _ in range(args.rounds):
        for name, encoder in encoders.items():
            started = time.perf_counter()
            vectors[name] = encoder.encode_queries(posts)
            seconds[name].append(time.perf_counter() - started)
    fp32_docs = documents(encoders["float32"], doc_texts, args.cache / "float32.npy")
    rows: dict[str, dict[str, Any]] = {}
    for name, encoder in encoders.items():
        cosine = np.sum(vectors[name] * vectors["float32"], axis=1)
        own_docs = None if name in INT8_VARIANTS else documents(encoder, doc_texts, args.cache / f"{_key(name)}.npy")
        dev_vectors = encoder.encode_queries(dev_posts)
        rows[name] = {
            "precision": encoder.precision,
            "posts_per_s": round(len(posts) / min(seconds[name]), 1),
            "speedup": round(min(seconds["float32"]) / min(seconds[name]), 2),
            "cosine_min": round(float(cosine.min()), 6),
            "cosine_mean": round(float(cosine.mean()), 6),
            "dev_map5_own_index": None
            if own_docs is None
            else round(map_at_5(dev_vectors, own_docs, doc_ids, qids, dev.qrels), 4),
            "dev_map5_float32_index": round(map_at_5(dev_vectors, fp32_docs, doc_ids, qids, dev.qrels), 4),
        }
        print(name, json.dumps(rows[name]), flush=True)
    print("\n| variant | posts/s | x float32 | cosine min / mean | dev MAP@5 (own index) | (float32 index) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        print(
            f"| {name} | {r['posts_per_s']} | {r['speedup']} | {r['cosine_min']:.5f} / {r['cosine_mean']:.6f}"
            f" | {r['dev_map5_own_index'] or '-'} | {r['dev_map5_float32_index']:.4f} |"
        )
    tiers = asyncio.run(tier_figures(ref, args.cache)) if args.tiers else None
    if args.out:
        report = {"model": ref, "posts": len(posts), "rounds": args.rounds, "cpu_bf16": cpu_has_bf16(), "rows": rows}
        report["open_set_dev_tiers"] = tiers
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
