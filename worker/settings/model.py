"""The model: which encoder serves, where its versions live and how it runs.

One group of the fields of :class:`worker.settings.Settings` (its environment variables keep the
``FACTMATCH_`` prefix and the field's name; the group only says where a setting belongs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field


class ModelSettings(BaseModel):
    """The model: which encoder serves, where its versions live and how it runs."""

    model: str | None = Field(None, description="Bootstrap model: a local directory or a hub name.")
    model_version: str | None = Field(
        None, pattern=r"^[A-Za-z0-9._:-]{1,100}$", description="Version name for the bootstrap model."
    )
    model_store: Path = Field(Path("models"), description="Directory where trained model versions live.")
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    autocast: Literal["auto", "off", "bfloat16"] = Field(
        "auto",
        description="Encode posts with a float32 model on CPU under bfloat16 autocast (matrix products in bf16)"
        " where the CPU computes bf16 natively (AVX-512 BF16 or AMX); fact-checks stay float32, so the index is"
        " exact. auto and bfloat16: the same (bfloat16 logs when the CPU lacks it); off: float32. Its speed"
        " and agreement with float32: docs/measurements.md.",
    )
    backend: Literal["torch", "onnx"] = Field(
        "torch",
        description="onnx: ONNX Runtime on CPU, exported once per model into model_store/onnx; a restart then"
        " imports no torch and answers in seconds. torch on GPUs.",
    )
    onnx_int8: bool = Field(
        False, description="Quantise the ONNX export's weights to int8 (faster; see README for its agreement)."
    )
    query_prompt: str | None = Field(None, description="Overrides the model's own query prompt.")
    query_prompt_name: str = "query"
    document_prompt_name: str = "document"
    max_seq_length: int | None = Field(
        None, ge=8, le=32_768, description="Longest input in tokens (default: the model's; never past its positions)."
    )
    attn_implementation: Literal["eager", "sdpa", "flex_attention", "flash_attention_2"] | None = Field(
        None,
        description="Attention kernel (default: the model's choice). Gemma2 takes eager (exact soft-capping),"
        " flex_attention or flash_attention_2 (the flash-attn package), not sdpa.",
    )
    encode_batch_size: int = Field(
        32, ge=1, le=4096, description="Most posts per encoder call; the next call encodes while this one is searched."
    )
    cpu_encoder_parts: int = Field(
        0,
        ge=0,
        le=256,
        description="On CPU, each encoder call runs as this many single-threaded parts at once, so a core"
        " taken by Postgres or the worker delays one part, not every matrix product (0: torch's thread count, at"
        " most 4, the threads shared out among them; 1: one call on torch's threads).",
    )
    embedding_cache_size: int = Field(
        10_000, ge=0, le=10_000_000, description="Recent post texts whose vectors are reused (0: off)."
    )
    trust_remote_code: bool = False
    model_poll_interval_s: float = Field(
        5.0, gt=0, le=600, description="Longest a worker lags a model switch when NOTIFY is lost."
    )
    retain_versions: int = Field(2, ge=0, le=50, description="Retired versions kept indexed for rollback.")
