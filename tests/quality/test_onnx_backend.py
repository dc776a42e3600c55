"""The ONNX Runtime backend gives the torch encoder's vectors, is exported once, restarts without
torch, falls back to torch's tokenising where its own tokenizer would differ, and is refused on GPUs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from worker.configs import encoder_loader, rollout_config
from worker.core import onnx_export
from worker.core.encoder import EncoderOptions, SentenceTransformerEncoder
from worker.core.onnx_backend import MANIFEST, OnnxEncoder, load_onnx_encoder
from worker.local.models import minilm_model_ref
from worker.settings import Settings

TEXTS = [
    "Drinking hot water with vinegar cures the coronavirus",
    "5G towers spread the virus",
    "short",
    "A much longer post that goes on and on about a claim it read somewhere on the internet " * 3,
    "Le vaccin contient une puce électronique",
    "  Ünïcödé 日本語 🙂\tand a tab  ",
    "truncated " * 400,
]


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.min(np.sum(a * b, axis=1)))


@pytest.mark.parametrize("model", ["tiny", "minilm"])
def test_onnx_fp32_agrees_with_torch(model: str, tiny_model: Path, tmp_path: Path) -> None:
    ref = str(tiny_model) if model == "tiny" else minilm_model_ref()
    options = EncoderOptions(device="cpu", batch_size=2)
    torch_encoder = SentenceTransformerEncoder(ref, options)
    onnx_encoder = load_onnx_encoder(ref, options, store=tmp_path, int8=False)
    assert onnx_encoder.source is None, "the fast tokenizer should reproduce the model's preprocessing"
    for encode in ("encode_queries", "encode_documents"):
        a = getattr(torch_encoder, encode)(TEXTS)
        b = getattr(onnx_encoder, encode)(TEXTS)
        assert b.shape == a.shape and b.dtype == np.float32
        assert agreement(a, b) >= 0.999
        np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert onnx_encoder.count_tokens(TEXTS) == torch_encoder.count_tokens(TEXTS)


def test_a_call_in_parts_gives_the_same_vectors_in_order(tiny_model: Path, tmp_path: Path) -> None:
    whole = load_onnx_encoder(
        str(tiny_model), EncoderOptions(device="cpu", batch_size=2, cpu_parts=1), store=tmp_path, int8=False
    )
    split = load_onnx_encoder(
        str(tiny_model), EncoderOptions(device="cpu", batch_size=2, cpu_parts=3), store=tmp_path, int8=False
    )
    assert whole._parts is None and split._parts is not None
    for texts in (TEXTS, TEXTS[:2], TEXTS[:1]):
        np.testing.assert_allclose(split.encode_queries(texts), whole.encode_queries(texts), atol=1e-6)


def test_export_is_cached_per_model_and_int8_is_separate(tiny_model: Path, tmp_path: Path) -> None:
    options = EncoderOptions(device="cpu")
    first = load_onnx_encoder(str(tiny_model), options, store=tmp_path, int8=False)
    stamp = first.path.stat().st_mtime_ns
    again = load_onnx_encoder(str(tiny_model), options, store=tmp_path, int8=False)
    assert again.path == first.path and again.path.stat().st_mtime_ns == stamp
    quantised = load_onnx_encoder(str(tiny_model), options, store=tmp_path, int8=True)
    assert quantised.path != first.path and quantised.path.parent.parent == tmp_path / "onnx"
    assert not [p for p in (tmp_path / "onnx").iterdir() if p.name.startswith(".export-")], "no scratch left"
    vectors = quantised.encode_queries(TEXTS)
    assert vectors.shape == (len(TEXTS), first.dimension) and np.isfinite(vectors).all()
    # Calibrated: every feed-forward down-projection was tried in float32, the ones worth it kept.
    report = json.loads((quantised.directory / "quantization.json").read_text())
    assert len(report["gains"]) == 2, "the tiny BERT has two layers, one down-projection each"
    assert set(report["kept_fp32"]) <= set(report["gains"])
    assert report["mean_cosine"] >= report["mean_cosine_all_int8"] - 1e-6
    cosines = np.sum(vectors * first.encode_queries(TEXTS), axis=1)
    assert cosines.min() > 0.9


def test_settings_choose_the_backend_and_refuse_onnx_on_a_gpu(tiny_model: Path, tmp_path: Path) -> None:
    settings = Settings(_env_file=None, backend="onnx", device="cpu", model_store=tmp_path)  # type: ignore[call-arg]
    assert isinstance(encoder_loader(settings)(str(tiny_model)), OnnxEncoder)
    with pytest.raises(ValueError, match="backend onnx runs on CPU"):
        Settings(_env_file=None, backend="onnx", device="cuda")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="onnx_int8 needs backend=onnx"):
        Settings(_env_file=None, onnx_int8=True)  # type: ignore[call-arg]


RESTART = """
import json, sys
from worker.configs import encoder_loader, pipeline_config
from worker.settings import Settings
settings = Settings(_env_file=None, backend="onnx", model_store=sys.argv[2])
pipeline_config(settings)
encoder = encoder_loader(settings)(sys.argv[1])
texts = json.loads(sys.argv[3])
vectors = encoder.encode_queries(texts)
heavy = [m for m in ("torch", "transformers", "sentence_transformers", "sklearn") if m in sys.modules]
print(json.dumps({"heavy": heavy, "vectors": vectors.tolist(), "counts": encoder.count_tokens(texts)}))
"""


def test_a_restart_on_a_cached_export_imports_no_torch(tiny_model: Path, tmp_path: Path) -> None:
    options = EncoderOptions(device="cpu")
    load_onnx_encoder(str(tiny_model), options, store=tmp_path, int8=False)
    torch_encoder = SentenceTransformerEncoder(str(tiny_model), options)
    # A fresh process, as after a restart: the worker's loader and pipeline set-up on the cached export.
    run = subprocess.run(
        [sys.executable, "-c", RESTART, str(tiny_model), str(tmp_path), json.dumps(TEXTS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert agreement(np.asarray(result["vectors"], dtype=np.float32), torch_encoder.encode_queries(TEXTS)) >= 0.999
    assert result["counts"] == torch_encoder.count_tokens(TEXTS)


class _Disagreeing(onnx_export.TextTokenizer):
    def counts(self, texts: list[str]) -> list[int]:  # type: ignore[override]
        return [n + 1 for n in super().counts(texts)]


def test_a_tokenizer_that_differs_is_not_trusted(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = EncoderOptions(device="cpu")
    monkeypatch.setattr(onnx_export, "TextTokenizer", _Disagreeing)
    exported = load_onnx_encoder(str(tiny_model), options, store=tmp_path, int8=False)
    monkeypatch.undo()
    manifest = json.loads((exported.directory / MANIFEST).read_text())
    assert manifest["tokenizer"] is None and not (exported.directory / "tokenizer.json").exists()
    # Served through the model's own preprocessing, now and after a restart.
    restarted = load_onnx_encoder(str(tiny_model), options, store=tmp_path, int8=False)
    torch_encoder = SentenceTransformerEncoder(str(tiny_model), options)
    for encoder in (exported, restarted):
        assert encoder.source is not None and encoder.tokenizer is None
        assert agreement(encoder.encode_queries(TEXTS), torch_encoder.encode_queries(TEXTS)) >= 0.999
        assert encoder.count_tokens(TEXTS) == torch_encoder.count_tokens(TEXTS)


async def test_a_prepared_version_has_its_export_before_onnx_workers_use_it(
    tiny_model: Path, tmp_path: Path, database_url: str
) -> None:
    from worker.core.rollout import prepare
    from worker.storage import Store

    settings = Settings(_env_file=None, backend="onnx", model_store=tmp_path, database_url=database_url)  # type: ignore[call-arg]
    store = Store(database_url)
    await store.open()
    try:
        torch_encoder = SentenceTransformerEncoder(str(tiny_model), EncoderOptions(device="cpu"))
        await store.registry.register_version("v-onnx", str(tiny_model), torch_encoder.dimension, status="candidate")
        await prepare(store, rollout_config(settings), "v-onnx", torch_encoder, progress=False)
        assert (await store.registry.get_version("v-onnx")).status == "ready"  # type: ignore[union-attr]
    finally:
        await store.close()
    assert len(list((tmp_path / "onnx").glob(f"*/{MANIFEST}"))) == 1
    # A worker finds the export ready: no torch model loaded to serve it.
    served = encoder_loader(settings)(str(tiny_model))
    assert isinstance(served, OnnxEncoder) and served.source is None
    assert agreement(served.encode_queries(TEXTS), torch_encoder.encode_queries(TEXTS)) >= 0.999
