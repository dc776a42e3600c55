"""Writes a sentence-transformers model as ONNX, with everything needed to serve it without torch.

The whole module chain (transformer, pooling, any dense layer, normalisation) is exported with
``torch.onnx.export`` from the loaded model, so pooling cannot drift from the torch path. Beside
the graph go the model's fast tokenizer and a manifest (prompts, lengths, padding) so a worker
restarting on a cached export imports neither torch, transformers nor sentence-transformers
(those imports were most of a restart's 23 s). The tokenizer is only written after it reproduced
the model's own preprocessing token for token on probe texts; where it does not (a chat
template, a slow tokenizer), the manifest says so and serving tokenises through the torch model.

The ``sentence-transformers[onnx]`` extra is not used: it pulls optimum, which downgrades the
whole stack (../shared/README.md).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from worker.core.encoder import SentenceTransformerEncoder
from worker.core.onnx_manifest import INPUTS, MANIFEST, MANIFEST_FORMAT, OPSET, TextTokenizer

log = logging.getLogger(__name__)

# Texts that exercise what tokenisers disagree on: case, accents, scripts, emoji, whitespace,
# punctuation and a text far past any model's length (truncation).
PROBES = [
    "Drinking hot water with vinegar cures the coronavirus",
    "  Leading and trailing spaces\tand a tab\nand a new line  ",
    "UPPER lower MiXeD ünïcödé Ελληνικά 日本語のテキスト عربى 🙂👍",
    'Le vaccin contient une puce électronique, d\'après "un expert"...',
    "short",
    "a",
    "word " * 700,
]


# Posts that int8 quantisation is calibrated on (what queries look like: short, informal,
# several languages and scripts, hashtags, numbers, emoji).
CALIBRATION_POSTS = [
    "5G towers are spreading the virus!! turn off your phones people #covid",
    "My uncle says drinking a bit of bleach kills corona. is that true??",
    "BREAKING: the election was rigged, 2 million dead people voted 😡",
    "Bill Gates wants to put microchips in all of us through the vaccine",
    "Our team won the championship game last night, what a match!",
    "La vacuna tiene grafeno, por eso los imanes se pegan al brazo",
    "¿Es cierto que el limón caliente cura el cáncer? Mi tía lo comparte en WhatsApp",
    "Le gouvernement va interdire l'argent liquide dès janvier, partagez !",
    "Ce vaccin modifie votre ADN, c'est prouvé par un médecin",
    "Die Regierung plant eine Impfpflicht für Kinder ab nächster Woche",
    "Wer hat Lust auf einen Spieleabend am Freitag?",
    "A vacina contra a covid altera o DNA das pessoas, cuidado",
    "Beber água quente com vinagre mata o vírus em 10 minutos",
    "Il vaccino causa l'autismo nei bambini, lo dice uno studio",
    "Вакцина содержит чипы для слежки за людьми",
    "اللقاح يحتوي على شريحة إلكترونية للتجسس",
    "ワクチンにはマイクロチップが入っていると聞いた",
    "NASA confirms the earth will go dark for 6 days in December",
    "Photo shows a shark swimming on a flooded highway after the hurricane",
    "Drinking hot water every 15 minutes kills the virus in your throat",
    "just had the best coffee of my life ☕️ #mondaymotivation",
    "Climate change is a hoax invented to raise taxes, scientists admit",
    "This politician said he would ban all cars by 2025 (video)",
    "Garlic soup cured 300 patients in a Chinese hospital overnight",
]
# A down-projection is kept in float32 when quantising it costs this much mean cosine on the
# calibration posts (its activations carry outliers that one int8 scale per column cannot hold).
KEEP_FP32_GAIN = 0.0005


class _Chain:
    """The sentence-transformers module chain as a plain ``forward(ids, mask[, types])``."""

    def __new__(cls, model: Any, names: Sequence[str], constants: dict[str, Any]) -> Any:
        import torch

        class Chain(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
                # Non-tensor features (the modality) are the same for every text batch.
                features = {**constants, **dict(zip(names, tensors, strict=True))}
                embedding: torch.Tensor = self.model(features)["sentence_embedding"]
                return embedding

        return Chain()


def export(encoder: SentenceTransformerEncoder, directory: Path, *, int8: bool = False) -> Path:
    """Write ``encoder``'s model at ``directory`` (graph, tokenizer, manifest), all or nothing.

    Built in a scratch directory and renamed into place, so replicas sharing a model store never
    see half an export; if another one finished first, its export is kept.
    """
    import torch

    model = encoder.model
    if any(not m.include_prompt for m in model if hasattr(m, "include_prompt")):
        raise ValueError("the onnx backend does not support pooling that excludes the prompt; use backend=torch")
    # Two texts of different lengths, so the traced graph has seen padding.
    sample = model.preprocess(
        ["an example post, long enough to have a few tokens", "short"], prompt=encoder.query_prompt
    )
    names = [n for n in INPUTS if n in sample]
    constants = {k: v for k, v in sample.items() if not isinstance(v, torch.Tensor)}
    directory.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".export-", dir=directory.parent))
    try:
        _write_graph(encoder, names, constants, sample, scratch, int8)
        tokenizer = _write_tokenizer(encoder, names, scratch)
        manifest = {
            "format": MANIFEST_FORMAT,
            "model_ref": encoder.model_ref,
            "int8": int8,
            "dimension": encoder.dimension,
            "prompts": dict(model.prompts or {}),
            "max_seq_length": encoder.native_max_seq_length,
            "positions": encoder.positions,
            "tokenizer": tokenizer,
        }
        # Written last: a directory with a manifest is a finished export.
        (scratch / MANIFEST).write_text(json.dumps(manifest, indent=1))
        # mkdtemp makes it private; replicas running as other users share the store.
        umask = os.umask(0)
        os.umask(umask)
        scratch.chmod(0o777 & ~umask)
        try:
            os.rename(scratch, directory)
        except OSError:
            if not (directory / MANIFEST).is_file():
                raise
            log.info("another replica finished the export at %s first; using it", directory)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return directory


def _write_graph(
    encoder: SentenceTransformerEncoder,
    names: list[str],
    constants: dict[str, Any],
    sample: Any,
    scratch: Path,
    int8: bool,
) -> None:
    import torch

    model = encoder.model
    # Eager attention exports as the op pattern ONNX Runtime fuses; SDPA's decomposed graph is
    # not fused (measured: docs/measurements.md).
    auto_model: Any = getattr(model[0], "auto_model", None)
    attention = getattr(getattr(auto_model, "config", None), "_attn_implementation", None)
    switch = (
        auto_model is not None and attention not in (None, "eager") and hasattr(auto_model, "set_attn_implementation")
    )
    if switch:
        auto_model.set_attn_implementation("eager")
    fp32 = scratch / "model-fp32.onnx"
    # Exported in float32 on the CPU; the caller's model goes back where it was afterwards.
    weights = next(model.parameters())
    device, dtype = weights.device, weights.dtype
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The tracer warns about branches on shapes that are the same for every batch.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Chain(model.cpu().float(), names, constants),
                tuple(sample[n] for n in names),
                str(fp32),
                input_names=names,
                output_names=["embedding"],
                dynamic_axes={**{n: {0: "batch", 1: "tokens"} for n in names}, "embedding": {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,
            )
    finally:
        model.to(device=device, dtype=dtype)
        if switch:
            auto_model.set_attn_implementation(attention)
    if int8:
        features = {
            k: np.asarray(v) for k, v in model.preprocess(CALIBRATION_POSTS, prompt=encoder.query_prompt).items()
        }
        quantisation = _quantize_calibrated(fp32, scratch / "model.onnx", {n: features[n] for n in names})
        (scratch / "quantization.json").write_text(json.dumps(quantisation, indent=1))
        fp32.unlink()
    else:
        fp32.rename(scratch / "model.onnx")


def _down_projections(graph_path: Path) -> list[str]:
    """MatMul nodes whose weight maps more inputs to fewer outputs (a feed-forward block's
    second layer): where int8 loses most, since they read the activation function's outliers."""
    import onnx

    model = onnx.load(str(graph_path), load_external_data=False)
    shapes = {init.name: list(init.dims) for init in model.graph.initializer}
    return [
        node.name
        for node in model.graph.node
        if node.op_type == "MatMul" and len(dims := shapes.get(node.input[1], [])) == 2 and dims[0] > dims[1]
    ]


def _quantize_calibrated(fp32: Path, out: Path, features: dict[str, Any]) -> dict[str, Any]:
    """Dynamic int8 with one scale per output channel; the down-projections whose int8 costs
    more than ``KEEP_FP32_GAIN`` of agreement on the calibration posts stay float32.

    Measured by quantising everything, then everything but one candidate at a time, against the
    float32 graph's vectors. What was kept and the agreement reached go in ``quantization.json``.
    """
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    def vectors(path: Path) -> Any:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, features)[0]

    def agreement(exclude: list[str], path: Path) -> float:
        quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8, per_channel=True, nodes_to_exclude=exclude)
        return float(np.mean(np.sum(vectors(path) * reference, axis=1)))

    reference = vectors(fp32)
    candidates = _down_projections(fp32)
    trial = out.with_name("trial.onnx")
    everything = agreement([], trial)
    gains = {node: agreement([node], trial) - everything for node in candidates}
    trial.unlink(missing_ok=True)
    ranked = sorted((n for n, g in gains.items() if g >= KEEP_FP32_GAIN), key=lambda n: -gains[n])
    kept = ranked[: max(1, len(candidates) // 4)]
    final = agreement(kept, out)
    log.info(
        "int8 export: %d of %d down-projections kept in float32, agreement %.4f", len(kept), len(candidates), final
    )
    return {
        "scheme": "dynamic int8, per-channel weights",
        "calibration_posts": len(reference),
        "kept_fp32": kept,
        "gains": {n: round(g, 6) for n, g in gains.items()},
        "mean_cosine_all_int8": round(everything, 6),
        "mean_cosine": round(final, 6),
    }


def _write_tokenizer(encoder: SentenceTransformerEncoder, names: list[str], scratch: Path) -> dict[str, Any] | None:
    """The fast tokenizer and its padding, if it reproduces the model's preprocessing exactly."""
    hf: Any = getattr(encoder.model, "tokenizer", None)
    backend = getattr(hf, "backend_tokenizer", None)
    if backend is None or getattr(hf, "pad_token_id", None) is None:
        log.info("no fast tokenizer with padding for %s: serving tokenises through torch", encoder.model_ref)
        return None
    (scratch / "tokenizer.json").write_text(backend.to_str())
    spec = {
        "file": "tokenizer.json",
        "pad_id": int(hf.pad_token_id),
        "pad_token": str(hf.pad_token),
        "pad_type_id": int(getattr(hf, "pad_token_type_id", 0) or 0),
        "padding_side": str(hf.padding_side),
        "truncation_side": str(hf.truncation_side),
    }
    light = TextTokenizer(scratch / "tokenizer.json", spec, encoder.max_seq_length)
    same = light.counts([encoder.query_prompt + t for t in PROBES]) == encoder.count_tokens(PROBES)
    for prompt in dict.fromkeys((encoder.query_prompt, encoder.document_prompt)):
        theirs = encoder.model.preprocess(PROBES, prompt=prompt or None)
        ours = light.features([prompt + t for t in PROBES])
        same = same and all(np.array_equal(np.asarray(theirs[n]), ours[n]) for n in names)
    if not same:
        log.warning(
            "the fast tokenizer of %s differs from its preprocessing: serving tokenises through torch",
            encoder.model_ref,
        )
        (scratch / "tokenizer.json").unlink()
        return None
    return spec
