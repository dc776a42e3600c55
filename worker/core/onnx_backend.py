"""ONNX Runtime for CPU serving: the same sentence-transformers model, about twice the texts/s.

The whole module chain (transformer, pooling, any dense layer, normalisation) is exported
with ``torch.onnx.export`` from the loaded model, so pooling and prompts cannot drift from the
torch path: tokenisation, prompts, truncation and token counts stay the torch encoder's.
The ``sentence-transformers[onnx]`` extra is not used: it pulls optimum, which downgrades the
whole stack (../shared/README.md).

Exports are cached per model (its resolved path and weight files' sizes and times) under
``<model_store>/onnx/``, written to a temporary name and renamed, so replicas sharing a store
never read half a file; a read-only store falls back to a private temporary directory.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from worker.core.encoder import EncoderOptions, SentenceTransformerEncoder, Vectors

log = logging.getLogger(__name__)

OPSET = 17
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def export_key(model_ref: str, int8: bool) -> str:
    path = Path(model_ref).expanduser().resolve()
    digest = hashlib.sha1(f"{path}|opset{OPSET}|eager|int8={int8}".encode())
    for file in sorted(path.rglob("*")) if path.is_dir() else []:
        if file.suffix in (".safetensors", ".bin", ".json"):
            stat = file.stat()
            digest.update(f"{file.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return f"{path.name}-{digest.hexdigest()[:12]}"


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


def export(encoder: SentenceTransformerEncoder, destination: Path, *, int8: bool = False) -> Path:
    """Write ``encoder``'s model as ONNX (fp32, or dynamically quantised to int8) at ``destination``."""
    import torch

    model = encoder.model
    pooling = [m for m in model if hasattr(m, "include_prompt")]
    if any(not m.include_prompt for m in pooling):
        raise ValueError("the onnx backend does not support pooling that excludes the prompt; use backend=torch")
    # Two texts of different lengths, so the traced graph has seen padding.
    texts = ["an example post, long enough to have a few tokens", "short"]
    sample = model.preprocess(texts, prompt=encoder.query_prompt)
    names = [n for n in _INPUTS if n in sample]
    constants = {k: v for k, v in sample.items() if not isinstance(v, torch.Tensor)}
    destination.parent.mkdir(parents=True, exist_ok=True)
    # Eager attention exports as the op pattern ONNX Runtime fuses; SDPA's decomposed graph is
    # not fused (MiniLM, 2 cores: 1.27x torch's texts/s eager vs 1.16x SDPA).
    auto_model = getattr(model[0], "auto_model", None)
    attention = getattr(getattr(auto_model, "config", None), "_attn_implementation", None)
    if auto_model is not None and attention not in (None, "eager") and hasattr(auto_model, "set_attn_implementation"):
        auto_model.set_attn_implementation("eager")
    try:
        return _export(model, names, constants, sample, destination, int8)
    finally:
        if auto_model is not None and attention not in (None, "eager"):
            auto_model.set_attn_implementation(attention)


def _export(
    model: Any, names: list[str], constants: dict[str, Any], sample: Any, destination: Path, int8: bool
) -> Path:
    import torch

    with tempfile.TemporaryDirectory(dir=destination.parent) as scratch:
        fp32 = Path(scratch) / "model.onnx"
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
        result = fp32
        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            result = Path(scratch) / "model-int8.onnx"
            quantize_dynamic(str(fp32), str(result), weight_type=QuantType.QInt8)
        os.replace(result, destination)
    return destination


def cached_export(encoder: SentenceTransformerEncoder, store: Path, *, int8: bool) -> Path:
    key = export_key(encoder.model_ref, int8)
    for root in (store / "onnx", Path(tempfile.gettempdir()) / "factmatch-onnx"):
        path = root / key / "model.onnx"
        if path.is_file():
            return path
        try:
            log.info("exporting %s to ONNX (%s) at %s", encoder.model_ref, "int8" if int8 else "fp32", path)
            return export(encoder, path, int8=int8)
        except PermissionError:
            log.warning("model store %s is read-only; exporting to a temporary directory", store)
        except OSError as exc:
            if exc.errno not in (13, 30):  # EACCES, EROFS
                raise
            log.warning("model store %s is read-only; exporting to a temporary directory", store)
    raise RuntimeError("no writable directory for the ONNX export")


class OnnxEncoder(SentenceTransformerEncoder):
    """The torch encoder's tokenizer, prompts and conventions; inference in ONNX Runtime."""

    def __init__(self, model_ref: str, options: EncoderOptions | None = None, *, store: Path, int8: bool) -> None:
        import onnxruntime as ort

        super().__init__(model_ref, options)
        if self.device != "cpu":
            raise ValueError("the onnx backend runs on CPU; use backend=torch on a GPU")
        self.path = cached_export(self, store, int8=int8)
        session_options = ort.SessionOptions()
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(self.path), session_options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        log.info("onnx backend ready", extra={"model": model_ref, "path": str(self.path), "int8": int8})

    def _encode(self, texts: Sequence[str], prompt: str) -> Vectors:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        # Longest first by characters, as sentence-transformers orders its own batches.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        size = self.options.batch_size
        for start in range(0, len(order), size):
            rows = order[start : start + size]
            # The model's own preprocessing: prompt, truncation and padding exactly as with torch.
            batch = self.model.preprocess([texts[i] for i in rows], prompt=prompt or None)
            feeds = {n: batch[n].numpy().astype(np.int64) for n in self.input_names}
            with self._lock:
                (vectors,) = self.session.run(["embedding"], feeds)
            out[rows] = vectors
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        normalised: Vectors = (out / np.maximum(norms, 1e-12)).astype(np.float32)
        return normalised
