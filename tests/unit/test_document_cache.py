"""Document vectors kept between evaluations: the same vectors back, only new texts encoded."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.fakes import FakeEncoder
from worker.core.document_cache import CachedDocuments, model_identity


def test_a_second_run_encodes_only_what_it_has_not_seen(tmp_path: Path) -> None:
    first_encoder = FakeEncoder()
    first = CachedDocuments(first_encoder, tmp_path / "m")
    texts = ["a claim", "another claim", "a claim"]
    vectors = first.encode_documents(texts)
    assert first_encoder.calls == [["a claim", "another claim"]] and (first.hits, first.misses) == (0, 2)
    second_encoder = FakeEncoder()
    second = CachedDocuments(second_encoder, tmp_path / "m")
    again = second.encode_documents(["another claim", "a claim", "a third claim"])
    assert second_encoder.calls == [["a third claim"]]
    assert np.array_equal(again[:2], vectors[[1, 0]]) and again.dtype == np.float32
    assert second.encode_queries(["q"]).shape == (1, 8) and second_encoder.calls[-1] == ["q"]
    assert second.encode_documents([]).shape == (0, 8)


def test_a_damaged_or_mismatched_cache_is_encoded_again(tmp_path: Path) -> None:
    CachedDocuments(FakeEncoder(), tmp_path / "m").encode_documents(["x", "y"])
    (tmp_path / "m" / "keys.json").write_text('["only-one"]')
    encoder = FakeEncoder()
    assert CachedDocuments(encoder, tmp_path / "m").encode_documents(["x"]).shape == (1, 8)
    assert encoder.calls == [["x"]]
    wider = FakeEncoder(dimension=16)
    assert CachedDocuments(wider, tmp_path / "m").encode_documents(["x"]).shape == (1, 16)
    assert wider.calls == [["x"]]


def test_the_key_follows_the_model_files_and_the_options(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    key = model_identity(str(model), "fp32")
    assert model_identity(str(model), "fp32") == key
    assert model_identity(str(model), "bf16") != key
    (model / "config.json").write_text('{"changed": true}')
    assert model_identity(str(model), "fp32") != key
    assert model_identity("org/hub-model", "fp32") != model_identity("org/other-model", "fp32")
