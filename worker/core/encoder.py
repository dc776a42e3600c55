"""Turns texts into normalised embeddings with any sentence-transformers model.

The worker (queries) and the indexer/trainer (documents) both go through this module, so
serving and indexing can never disagree on prompts, truncation or normalisation. Prompts
and pooling come from the model's own config; settings may override the query prompt.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from worker.core.encoder_parts import locked, split_calls
from worker.domain import Encoder, Vectors

__all__ = ["Encoder", "EncoderOptions", "SentenceTransformerEncoder", "Vectors"]

log = logging.getLogger(__name__)


def resolve_device(requested: str) -> str:
    import torch

    if requested != "auto":
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {requested!r} requested but CUDA is not available")
        return requested
    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def choose_prompt(override: str | None, prompts: dict[str, str | None] | None, name: str) -> str:
    """A setting's prompt wins over the model's own prompt of that name; no prompt is ""."""
    if override is not None:
        return override
    return (prompts or {}).get(name) or ""


def refuse_past_positions(wanted: int | None, positions: int | None, model_ref: str) -> None:
    """A configured max_seq_length never runs past the model's position embeddings."""
    if wanted is not None and positions is not None and wanted > positions:
        raise ValueError(f"max_seq_length {wanted} exceeds {model_ref!r}'s {positions} positions")


def resolve_dtype(requested: str, device: str) -> str:
    if requested != "auto":
        return requested
    if device.startswith("cuda"):
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "float32"


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX), as torch detects it."""
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve_autocast(requested: str, device: str, dtype: str) -> str | None:
    """The autocast dtype to encode posts under, or None (fact-checks are always encoded in the
    weights' dtype).

    Only a CPU model with float32 weights is autocast (a GPU's weights are already bf16/fp16 by
    ``dtype``). ``auto`` and ``bfloat16`` both need a CPU that computes bf16 natively; without
    one the encoder stays in float32 (logged), since emulated bf16 is slower than float32.
    """
    if requested == "off" or not device.startswith("cpu") or dtype != "float32":
        return None
    if cpu_has_bf16():
        return "bfloat16"
    if requested == "bfloat16":
        log.warning("autocast bfloat16 requested but this CPU has no native bf16 (AVX-512 BF16 or AMX): float32")
    return None


def autocast_context(device: str, dtype: str | None) -> contextlib.AbstractContextManager[object]:
    """torch's autocast to ``dtype`` (a :func:`resolve_autocast` result) on ``device``'s kind;
    nothing when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device.split(":")[0], dtype=getattr(torch, dtype))


# The most memory the bf16 copies of a model's linear weights may take (a 9B model's would be
# 18 GB): beyond it, autocast casts them in every call as before.
LOW_PRECISION_COPY_MAX_BYTES = 1 << 30


def keep_low_precision_weights(model: Any, dtype: str, max_bytes: int = LOW_PRECISION_COPY_MAX_BYTES) -> int:
    """Give each float32 ``nn.Linear`` of ``model`` a copy of its weight in ``dtype``, used while
    CPU autocast to ``dtype`` is on; returns the bytes the copies take (0: none made, over ``max_bytes``).

    Autocast casts every weight in every call (its cache lasts one autocast region: one call here);
    the same cast done once at load gives the same products bit for bit without that copying
    (docs/measurements.md). Outside autocast (fact-checks, training, an ONNX export) the float32
    weight serves as before. The copies are of the weights at load: a model whose weights change
    afterwards (training) must not be given them.
    """
    import torch

    low = getattr(torch, dtype)
    linears = [m for m in model.modules() if type(m) is torch.nn.Linear and m.weight.dtype == torch.float32]
    size = int(sum(m.weight.numel() * low.itemsize for m in linears))
    if size > max_bytes:
        log.info("linear weights not copied to %s: %d MiB over the %d MiB cap", dtype, size >> 20, max_bytes >> 20)
        return 0
    for module in linears:
        module.forward = partial(_linear, torch, module, module.weight.detach().to(low), low)  # type: ignore[method-assign]
    return size


def _linear(torch: Any, module: Any, low_weight: Any, low: Any, x: Any) -> Any:
    if torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == low:
        return torch.nn.functional.linear(x, low_weight, module.bias)
    return torch.nn.functional.linear(x, module.weight, module.bias)


@dataclass(frozen=True)
class EncoderOptions:
    """The subset of settings that shapes how a model encodes (built by :mod:`worker.configs`)."""

    device: str = "auto"
    dtype: str = "auto"
    autocast: str = "auto"
    query_prompt: str | None = None
    query_prompt_name: str = "query"
    document_prompt_name: str = "document"
    max_seq_length: int | None = None
    attn_implementation: str | None = None
    batch_size: int = 32
    trust_remote_code: bool = False
    # On CPU, each call as this many parts at once (0: torch's thread count, at most 4; 1: one
    # call on torch's threads): :mod:`worker.core.encoder_parts`.
    cpu_parts: int = 1


class SentenceTransformerEncoder:
    """A loaded sentence-transformers model with the project's encoding conventions."""

    def __init__(self, model_ref: str, options: EncoderOptions | None = None) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        self.options = options or EncoderOptions()
        self.model_ref = model_ref
        self.device = resolve_device(self.options.device)
        dtype = resolve_dtype(self.options.dtype, self.device)
        # A directory loads offline; anything else is treated as a hub name.
        local = Path(model_ref).expanduser().is_dir()
        model_kwargs: dict[str, object] = {"dtype": getattr(torch, dtype)}
        if self.options.attn_implementation is not None:
            model_kwargs["attn_implementation"] = self.options.attn_implementation
        self.model = SentenceTransformer(
            str(Path(model_ref).expanduser()) if local else model_ref,
            device=self.device,
            local_files_only=local,
            trust_remote_code=self.options.trust_remote_code,
            model_kwargs=model_kwargs,
        )
        self.model.eval()
        self.autocast = resolve_autocast(self.options.autocast, self.device, dtype)
        self.low_precision_copies = keep_low_precision_weights(self.model, self.autocast) if self.autocast else 0
        # What the vectors are computed in, for logs, metrics and a version's metadata (no comma: a
        # metric label's value).
        self.precision = f"{dtype} (posts under {self.autocast} autocast)" if self.autocast else dtype
        self._guard_length()
        dimension = self.model.get_embedding_dimension()
        if not dimension:
            raise ValueError(f"model {model_ref!r} does not report an embedding dimension")
        self._dimension = int(dimension)
        self.query_prompt = self._prompt(self.options.query_prompt, self.options.query_prompt_name)
        self.document_prompt = self._prompt(None, self.options.document_prompt_name)
        # One call at a time: the worker and the indexer share one loaded model (a call's parts run
        # at once, their tokenizing one at a time).
        self._lock = threading.Lock()
        self._parts = split_calls(self.options.cpu_parts, torch.get_num_threads()) if self.device == "cpu" else None
        if self._parts is not None:
            self.model.preprocess = locked(self.model.preprocess, threading.Lock())  # type: ignore[method-assign]
        log.info(
            "model loaded",
            extra={
                "model": model_ref,
                "device": self.device,
                "dtype": dtype,
                "precision": self.precision,
                "low_precision_copies_mib": self.low_precision_copies >> 20,
                "attention": getattr(getattr(self.model[0].model, "config", None), "_attn_implementation", None),
                "max_seq_length": self.max_seq_length,
                "dimension": self._dimension,
                "query_prompt": self.query_prompt,
                "parts": self._parts.parts if self._parts else 1,
            },
        )

    def _guard_length(self) -> None:
        """Inputs never run past the model's position embeddings (a 9B model given 8,192 tokens
        where it was trained on 512 is slow and wrong, and past its positions it fails)."""
        config = getattr(getattr(self.model[0], "model", None), "config", None)
        positions = getattr(config, "max_position_embeddings", None)
        self.positions: int | None = int(positions) if positions is not None else None
        native = self.model.max_seq_length
        if positions is not None and (native is None or native > positions):
            native = int(positions)
        # The model's own length (what applies when the setting is unset), kept for the ONNX export.
        self.native_max_seq_length = int(native or 512)
        wanted = self.options.max_seq_length
        refuse_past_positions(wanted, self.positions, self.model_ref)
        if wanted is not None:
            self.model.max_seq_length = wanted
        elif native != self.model.max_seq_length:
            log.warning("model %s has no usable max_seq_length: capped at its %d positions", self.model_ref, positions)
            self.model.max_seq_length = native

    def _prompt(self, override: str | None, name: str) -> str:
        return choose_prompt(override, self.model.prompts, name)

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def max_seq_length(self) -> int:
        return int(self.model.max_seq_length or 512)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token counts as the encoder will see them: query prompt included, truncation applied."""
        tokenizer = self.model.tokenizer
        encoded = tokenizer([self.query_prompt + t for t in texts], add_special_tokens=True, truncation=False)
        limit = self.max_seq_length
        return [min(len(ids), limit) for ids in encoded["input_ids"]]

    def _encode(self, texts: Sequence[str], prompt: str, *, fast: bool = False) -> Vectors:
        if not texts:
            return np.zeros((0, self._dimension), dtype=np.float32)
        arithmetic = self._arithmetic if fast else contextlib.nullcontext
        with self._lock:
            if self._parts is not None:
                vectors = self._parts.encode(texts, lambda chunk: self._call(chunk, prompt), arithmetic)
            else:
                with arithmetic():
                    vectors = self._call(list(texts), prompt)
        # Normalised again in float32: a bf16 model's own normalisation is off by up to 3e-3
        # (measured on an H100), and every score downstream is a cosine.
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        normalised: Vectors = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
        return normalised

    def _call(self, texts: list[str], prompt: str) -> Vectors:
        vectors = self.model.encode(
            texts,
            prompt=prompt,
            batch_size=self.options.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def _arithmetic(self) -> contextlib.AbstractContextManager[object]:
        return autocast_context(self.device, self.autocast)

    def encode_queries(self, texts: Sequence[str]) -> Vectors:
        """Posts, under the autocast dtype when there is one (the hot path)."""
        return self._encode(texts, self.query_prompt, fast=True)

    def encode_documents(self, texts: Sequence[str]) -> Vectors:
        """Fact-checks, always in the weights' own dtype: a version's index is computed once and
        serves every post, so it stays exact (bf16 documents cost 0.003 of dev MAP@5,
        docs/measurements.md)."""
        return self._encode(texts, self.document_prompt)
