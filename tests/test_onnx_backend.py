"""The ONNX Runtime backend gives the torch encoder's vectors, is exported once, and is refused on GPUs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from worker.core.encoder import EncoderOptions, SentenceTransformerEncoder, minilm_model_ref
from worker.core.models import encoder_loader
from worker.core.onnx_backend import OnnxEncoder
from worker.settings import Settings

pytestmark = pytest.mark.unit

TEXTS = [
    "Drinking hot water with vinegar cures the coronavirus",
    "5G towers spread the virus",
    "short",
    "A much longer post that goes on and on about a claim it read somewhere on the internet " * 3,
    "Le vaccin contient une puce électronique",
]


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.min(np.sum(a * b, axis=1)))


@pytest.mark.parametrize("model", ["tiny", "minilm"])
def test_onnx_fp32_agrees_with_torch(model: str, tiny_model: Path, tmp_path: Path) -> None:
    ref = str(tiny_model) if model == "tiny" else minilm_model_ref()
    options = EncoderOptions(device="cpu", batch_size=2)
    torch_encoder = SentenceTransformerEncoder(ref, options)
    onnx_encoder = OnnxEncoder(ref, options, store=tmp_path, int8=False)
    for encode in ("encode_queries", "encode_documents"):
        a = getattr(torch_encoder, encode)(TEXTS)
        b = getattr(onnx_encoder, encode)(TEXTS)
        assert b.shape == a.shape and b.dtype == np.float32
        assert agreement(a, b) >= 0.999
        np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert onnx_encoder.count_tokens(TEXTS) == torch_encoder.count_tokens(TEXTS)


def test_export_is_cached_per_model_and_int8_is_separate(tiny_model: Path, tmp_path: Path) -> None:
    options = EncoderOptions(device="cpu")
    first = OnnxEncoder(str(tiny_model), options, store=tmp_path, int8=False)
    stamp = first.path.stat().st_mtime_ns
    again = OnnxEncoder(str(tiny_model), options, store=tmp_path, int8=False)
    assert again.path == first.path and again.path.stat().st_mtime_ns == stamp
    quantised = OnnxEncoder(str(tiny_model), options, store=tmp_path, int8=True)
    assert quantised.path != first.path and quantised.path.parent.parent == tmp_path / "onnx"
    vectors = quantised.encode_queries(TEXTS)
    assert vectors.shape == (len(TEXTS), first.dimension) and np.isfinite(vectors).all()


def test_settings_choose_the_backend_and_refuse_onnx_on_a_gpu(tiny_model: Path, tmp_path: Path) -> None:
    settings = Settings(_env_file=None, backend="onnx", device="cpu", model_store=tmp_path)  # type: ignore[call-arg]
    assert isinstance(encoder_loader(settings)(str(tiny_model)), OnnxEncoder)
    with pytest.raises(ValueError, match="backend onnx runs on CPU"):
        Settings(_env_file=None, backend="onnx", device="cuda")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="onnx_int8 needs backend=onnx"):
        Settings(_env_file=None, onnx_int8=True)  # type: ignore[call-arg]
