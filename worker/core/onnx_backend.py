"""ONNX Runtime for CPU serving: the torch encoder's vectors, and a restart that needs no torch.

A model is exported once (:mod:`worker.core.onnx_export`, which needs torch) into
``<model_store>/onnx/<key>/`` with its fast tokenizer and a manifest; every later start serves
from that directory with only onnxruntime, tokenizers and numpy imported, which is what makes a
restarted worker answer within seconds. Prompts, truncation, token counts and normalisation follow
the torch encoder's conventions (:mod:`worker.core.encoder`), and the tokenizer was checked
against the model's own preprocessing before it was written.

The key covers the model's resolved path and its weight files' sizes and times, so a changed model
is exported again; a read-only store falls back to a private temporary directory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from worker.core.encoder import EncoderOptions, Vectors, choose_prompt, refuse_past_positions
from worker.core.encoder_parts import split_calls
from worker.core.onnx_manifest import MANIFEST, TextTokenizer, export_key, export_roots, find_export

if TYPE_CHECKING:
    from worker.core.encoder import SentenceTransformerEncoder

log = logging.getLogger(__name__)


class OnnxEncoder:
    """Serves an exported model; torch is loaded only when the export has no verified tokenizer."""

    device = "cpu"

    def __init__(
        self,
        directory: Path,
        options: EncoderOptions | None = None,
        *,
        source: SentenceTransformerEncoder | None = None,
    ) -> None:
        import onnxruntime as ort

        self.options = options or EncoderOptions()
        if self.options.device not in ("auto", "cpu"):
            raise ValueError("the onnx backend runs on CPU; use backend=torch on a GPU")
        self.directory = directory
        self.path = directory / "model.onnx"
        manifest = json.loads((directory / MANIFEST).read_text())
        self.model_ref: str = manifest["model_ref"]
        self._dimension = int(manifest["dimension"])
        wanted = self.options.max_seq_length
        refuse_past_positions(wanted, manifest["positions"], self.model_ref)
        self.max_seq_length = int(wanted or manifest["max_seq_length"])
        self.query_prompt = choose_prompt(
            self.options.query_prompt, manifest["prompts"], self.options.query_prompt_name
        )
        self.document_prompt = choose_prompt(None, manifest["prompts"], self.options.document_prompt_name)
        self.tokenizer: TextTokenizer | None = None
        # The torch model is kept only where tokenising needs it.
        self.source = None if manifest["tokenizer"] is not None else source
        if manifest["tokenizer"] is not None:
            spec = manifest["tokenizer"]
            self.tokenizer = TextTokenizer(directory / spec["file"], spec, self.max_seq_length)
        elif self.source is None:
            from worker.core.encoder import SentenceTransformerEncoder

            self.source = SentenceTransformerEncoder(self.model_ref, self.options)
        session_options = ort.SessionOptions()
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # A call as parts at once, as the torch encoder does (worker.core.encoder_parts): the
        # process's cores shared out among the parts' runs of one session (its runs are thread-safe).
        cores = len(os.sched_getaffinity(0))
        self._parts = split_calls(self.options.cpu_parts, cores, torch_threads=False)
        if self._parts is not None:
            session_options.intra_op_num_threads = max(1, cores // self._parts.parts)
        self.session = ort.InferenceSession(str(self.path), session_options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.precision = "onnx int8" if manifest["int8"] else "onnx float32"
        # One call at a time (its parts at once): two concurrent calls would only split the same cores.
        self._lock = threading.Lock()
        self._tokenizing = threading.Lock()
        log.info(
            "onnx backend ready",
            extra={
                "model": self.model_ref,
                "path": str(self.path),
                "int8": manifest["int8"],
                "torch_free": self.source is None,
                "parts": self._parts.parts if self._parts else 1,
            },
        )

    @property
    def dimension(self) -> int:
        return self._dimension

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if self.tokenizer is None:
            assert self.source is not None
            return self.source.count_tokens(texts)
        return self.tokenizer.counts([self.query_prompt + t for t in texts])

    def _features(self, texts: list[str], prompt: str) -> dict[str, npt.NDArray[np.int64]]:
        if self.tokenizer is not None:
            return self.tokenizer.features([prompt + t for t in texts])
        assert self.source is not None
        batch = self.source.model.preprocess(texts, prompt=prompt or None)
        return {n: batch[n].numpy().astype(np.int64) for n in self.input_names}

    def _encode(self, texts: Sequence[str], prompt: str) -> Vectors:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with self._lock:
            if self._parts is not None:
                out = self._parts.encode(texts, lambda chunk: self._run(chunk, prompt), contextlib.nullcontext)
            else:
                out = self._run(list(texts), prompt)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        normalised: Vectors = (out / np.maximum(norms, 1e-12)).astype(np.float32)
        return normalised

    def _run(self, texts: list[str], prompt: str) -> npt.NDArray[np.float32]:
        # Longest first by characters, as sentence-transformers orders its own batches.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        size = self.options.batch_size
        for start in range(0, len(order), size):
            rows = order[start : start + size]
            with self._tokenizing:
                features = self._features([texts[i] for i in rows], prompt)
            (vectors,) = self.session.run(["embedding"], {n: features[n] for n in self.input_names})
            out[rows] = vectors
        return out

    def encode_queries(self, texts: Sequence[str]) -> Vectors:
        return self._encode(texts, self.query_prompt)

    def encode_documents(self, texts: Sequence[str]) -> Vectors:
        return self._encode(texts, self.document_prompt)


def ensure_export(source: SentenceTransformerEncoder, store: Path, *, int8: bool) -> Path:
    """The directory of ``source``'s export in ``store`` (or the temporary fallback), written if missing."""
    found = find_export(source.model_ref, store, int8=int8)
    if found is not None:
        return found
    from worker.core.onnx_export import export

    key = export_key(source.model_ref, int8)
    for root in export_roots(store):
        log.info("exporting %s to ONNX (%s) at %s", source.model_ref, "int8" if int8 else "fp32", root / key)
        try:
            return export(source, root / key, int8=int8)
        except OSError as exc:
            if exc.errno not in (13, 30):  # EACCES, EROFS
                raise
            log.warning("model store %s is read-only; exporting to a temporary directory", store)
    raise RuntimeError("no writable directory for the ONNX export")


def load_onnx_encoder(model_ref: str, options: EncoderOptions, *, store: Path, int8: bool) -> OnnxEncoder:
    """The model's cached export, made first (with torch, once per model and store) if missing."""
    found = find_export(model_ref, store, int8=int8)
    if found is not None:
        return OnnxEncoder(found, options)
    from worker.core.encoder import SentenceTransformerEncoder

    source = SentenceTransformerEncoder(model_ref, options)
    return OnnxEncoder(ensure_export(source, store, int8=int8), options, source=source)
