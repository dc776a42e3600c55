"""The encoder's CPU arithmetic: bfloat16 autocast is used only where the CPU computes bf16 natively,
only for float32 weights on CPU and only for posts; with the default model it gives float32's vectors."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from worker.core import encoder as encoder_module
from worker.core.encoder import EncoderOptions, SentenceTransformerEncoder, cpu_has_bf16, resolve_autocast
from worker.local.models import default_model_ref

POSTS = [
    "RT Drinking hot water with vinegar cures the coronavirus",
    "5G towers spread the virus, my neighbour says",
    "Le vaccin contient une puce électronique",
    "Bill Gates wants to microchip everyone through the vaccine",
    "short",
    "A much longer post that goes on and on about a claim it read somewhere on the internet " * 3,
] * 6


@pytest.mark.parametrize(
    ("requested", "device", "dtype", "native", "expected"),
    [
        ("auto", "cpu", "float32", True, "bfloat16"),
        ("auto", "cpu", "float32", False, None),
        ("bfloat16", "cpu", "float32", False, None),
        ("bfloat16", "cpu", "float32", True, "bfloat16"),
        ("off", "cpu", "float32", True, None),
        ("auto", "cuda", "bfloat16", True, None),
        ("auto", "cpu", "bfloat16", True, None),
    ],
)
def test_autocast_only_for_float32_weights_on_a_cpu_that_computes_bf16(
    monkeypatch: pytest.MonkeyPatch, requested: str, device: str, dtype: str, native: bool, expected: str | None
) -> None:
    monkeypatch.setattr(encoder_module, "cpu_has_bf16", lambda: native)
    assert resolve_autocast(requested, device, dtype) == expected


def test_an_explicit_request_on_a_cpu_without_bf16_is_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(encoder_module, "cpu_has_bf16", lambda: False)
    with caplog.at_level(logging.WARNING):
        assert resolve_autocast("bfloat16", "cpu", "float32") is None
    assert "no native bf16" in caplog.text


def test_bf16_autocast_gives_the_default_models_float32_vectors(tmp_path: Path) -> None:
    if not cpu_has_bf16():
        pytest.skip("this CPU has no native bf16: the encoder stays in float32 (the test above covers it)")
    ref = default_model_ref(tmp_path)
    fp32 = SentenceTransformerEncoder(ref, EncoderOptions(device="cpu", dtype="float32", autocast="off"))
    fast = SentenceTransformerEncoder(ref, EncoderOptions(device="cpu", dtype="float32", autocast="bfloat16"))
    assert fp32.precision == "float32" and fast.precision == "float32 (posts under bfloat16 autocast)"
    assert fp32.low_precision_copies == 0 and fast.low_precision_copies > 0
    a, b = fp32.encode_queries(POSTS), fast.encode_queries(POSTS)
    assert b.dtype == np.float32 and b.shape == a.shape
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert float(np.min(np.sum(a * b, axis=1))) >= 0.9999
    assert not np.array_equal(a, b)  # computed in bf16 indeed
    # Fact-checks are encoded in float32 whatever the setting: the index stays exact.
    np.testing.assert_array_equal(fp32.encode_documents(POSTS), fast.encode_documents(POSTS))


def test_bf16_copies_of_the_linear_weights_give_autocasts_vectors_bit_for_bit(tmp_path: Path) -> None:
    """Kept once at load, the bf16 copies give exactly what autocast's per-call casts gave; outside
    autocast (fact-checks) the float32 weights serve; over the memory cap, no copies are made."""
    import torch

    from tests.tiny_models import build_tiny_bert
    from worker.core.encoder import keep_low_precision_weights

    ref = str(build_tiny_bert(tmp_path))
    encoder = SentenceTransformerEncoder(ref, EncoderOptions(device="cpu", dtype="float32", autocast="off"))
    assert encoder.low_precision_copies == 0  # no autocast, no copies
    with torch.autocast("cpu", dtype=torch.bfloat16):  # emulated where the CPU has no bf16: the same arithmetic
        casts = encoder.encode_queries(POSTS)
    fp32 = encoder.encode_documents(POSTS)
    assert keep_low_precision_weights(encoder.model, "bfloat16", max_bytes=0) == 0
    assert all("forward" not in vars(m) for m in encoder.model.modules())
    size = keep_low_precision_weights(encoder.model, "bfloat16")
    linears = [m for m in encoder.model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and size == sum(m.weight.numel() * 2 for m in linears)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        np.testing.assert_array_equal(encoder.encode_queries(POSTS), casts)
    np.testing.assert_array_equal(encoder.encode_documents(POSTS), fp32)
    assert not np.array_equal(casts, fp32)  # the autocast path did compute in bf16
