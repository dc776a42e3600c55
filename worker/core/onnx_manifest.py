"""Where a model's ONNX export lives and what it holds: its key, its manifest, its tokenizer.

Why it exists apart: the export (:mod:`worker.core.onnx_export`, torch) writes what the backend
(:mod:`worker.core.onnx_backend`, no torch) reads; both import this module and neither imports
the other at module level, so serving never pulls in the exporter's imports.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

OPSET = 17
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
MANIFEST = "encoder.json"
MANIFEST_FORMAT = 1
# How int8 exports are quantised (onnx_export._quantize_calibrated); a new scheme, a new export.
INT8_SCHEME = "dynamic-per-channel-calibrated-1"


def export_key(model_ref: str, int8: bool) -> str:
    path = Path(model_ref).expanduser().resolve()
    scheme = f"|{INT8_SCHEME}" if int8 else ""
    digest = hashlib.sha1(f"{path}|opset{OPSET}|eager|int8={int8}{scheme}|manifest{MANIFEST_FORMAT}".encode())
    for file in sorted(path.rglob("*")) if path.is_dir() else []:
        if file.suffix in (".safetensors", ".bin", ".json"):
            stat = file.stat()
            digest.update(f"{file.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return f"{path.name}-{digest.hexdigest()[:12]}"


def export_roots(store: Path) -> tuple[Path, Path]:
    return store / "onnx", Path(tempfile.gettempdir()) / "factmatch-onnx"


def find_export(model_ref: str, store: Path, *, int8: bool) -> Path | None:
    """The finished export of ``model_ref`` (a directory with a manifest), if one was written."""
    key = export_key(model_ref, int8)
    return next((root / key for root in export_roots(store) if (root / key / MANIFEST).is_file()), None)


class TextTokenizer:
    """A model's fast tokenizer with the truncation and padding its preprocessing applies."""

    def __init__(self, path: Path, spec: dict[str, Any], max_length: int) -> None:
        from tokenizers import Tokenizer

        # Loaded once: a 250k-piece vocabulary takes about a second to load.
        self.tokenizer = Tokenizer.from_file(str(path))
        self.tokenizer.enable_truncation(max_length, strategy="longest_first", direction=spec["truncation_side"])
        self.tokenizer.enable_padding(
            direction=spec["padding_side"],
            pad_id=spec["pad_id"],
            pad_type_id=spec["pad_type_id"],
            pad_token=spec["pad_token"],
        )

    def counts(self, texts: Sequence[str]) -> list[int]:
        return [sum(e.attention_mask) for e in self.tokenizer.encode_batch(list(texts))]

    def features(self, texts: Sequence[str]) -> dict[str, npt.NDArray[np.int64]]:
        encodings = self.tokenizer.encode_batch(list(texts))
        return {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
